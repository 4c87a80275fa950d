//! Clients through the CLI: `vern client create` and `vern apply -f` with
//! a platform file, then tokens for what was created.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod common;

use common::*;
use serde_json::Value;

fn ok_json(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "command failed: {}",
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn client_create_and_apply_from_a_platform_file() {
    let dir = temp();
    let d = path_str(dir.path());
    let s = dev_server(&d, &[]);
    let addr = s.http();
    let env = [("VERN_ADDR", addr.as_str()), ("VERN_TOKEN", "root")];

    let created = ok_json(&vern(
        &[
            "client",
            "create",
            "--tenant",
            "acme",
            "--project",
            "web",
            "--env",
            "dev",
            "--name",
            "cli",
            "--scope",
            "a",
            "--scope",
            "b",
            "-o",
            "json",
        ],
        &env,
    ));
    assert_eq!(created["client_id"], "svc.acme.web.dev.cli");
    let secret = created["client_secret"].as_str().unwrap();
    assert!(secret.starts_with("vern.cs.") && secret.len() >= 8 + 43);
    let r = client()
        .post(s.url("/oauth2/token"))
        .basic_auth("svc.acme.web.dev.cli", Some(secret))
        .form(&[("grant_type", "client_credentials"), ("scope", "b")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let out = vern(
        &["client", "create", "--tenant", "acme", "--name", "half"],
        &env,
    );
    assert!(
        text(&out.stderr).contains("needs all of tenant, project and environment"),
        "{}",
        text(&out.stderr)
    );
    let out = vern(
        &[
            "client",
            "create",
            "--tenant",
            "acme",
            "--project",
            "web",
            "--env",
            "dev",
            "--name",
            "cli",
        ],
        &env,
    );
    assert!(
        text(&out.stderr).contains("already exists"),
        "{}",
        text(&out.stderr)
    );

    let platform =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/platform.yaml");
    let file = path_str(&platform);
    let dry = ok_json(&vern(
        &["apply", "-f", &file, "--dry-run", "-o", "json"],
        &env,
    ));
    assert_eq!(dry["create"].as_array().unwrap().len(), 4);
    assert_eq!(
        ok_json(&vern(&["client", "list", "-o", "json"], &env))["keys"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let applied = text(&vern(&["apply", "-f", &file], &env).stdout);
    assert!(
        applied.contains("+ svc.acme.payments.prod.worker"),
        "{applied}"
    );
    assert!(
        applied.contains("svc.acme.web.dev.cli (not declared; kept"),
        "{applied}"
    );
    assert!(applied.contains("Secrets of the new clients"), "{applied}");
    assert!(
        applied.contains("+ promotion gate acme/web/prod"),
        "{applied}"
    );
    for line in [
        "+ NATS this site dc1",
        "+ NATS site dc2",
        "+ NATS mappings of acme",
    ] {
        assert!(applied.contains(line), "{applied}");
    }
    let again = ok_json(&vern(&["apply", "-f", &file, "-o", "json"], &env));
    assert_eq!(
        (
            again["create"].as_array().unwrap().len(),
            again["unchanged"].as_array().unwrap().len()
        ),
        (0, 4)
    );
    let worker = ok_json(&vern(
        &[
            "client",
            "get",
            "svc.acme.payments.prod.worker",
            "-o",
            "json",
        ],
        &env,
    ));
    assert_eq!(
        (worker["dpop_bound"].as_bool(), worker["token_ttl"].as_u64()),
        (Some(true), Some(120))
    );
    assert!(
        worker.get("secret_hmac").is_none(),
        "the secret's HMAC is never returned"
    );

    // Edit the file: a changed scope is an update; --prune deletes the stray client.
    let edited = dir.path().join("platform.yaml");
    std::fs::write(
        &edited,
        std::fs::read_to_string(&platform).unwrap().replace(
            "scopes: [secrets:read]\n",
            "scopes: [secrets:read, secrets:list]\n",
        ),
    )
    .unwrap();
    let e = path_str(&edited);
    let plan = ok_json(&vern(&["apply", "-f", &e, "--prune", "-o", "json"], &env));
    assert_eq!(plan["update"][0]["client_id"], "svc.acme.web.prod.api");
    assert_eq!(plan["update"][0]["changes"][0], "scopes");
    assert_eq!(plan["delete"][0], "svc.acme.web.dev.cli");

    // --prune reaches only the sections the file has: a file of gates
    // alone deletes no client, `clients: []` deletes every one.
    let gates_only = dir.path().join("gates.yaml");
    std::fs::write(
        &gates_only,
        "promotion:\n  - environment: acme/web/prod\n    require: [{predicate_type: https://slsa.dev/provenance/v1}]\n",
    )
    .unwrap();
    let g = path_str(&gates_only);
    let plan = ok_json(&vern(&["apply", "-f", &g, "--prune", "-o", "json"], &env));
    assert_eq!(
        (
            plan["delete"].as_array().map(Vec::len),
            plan["kept"].as_array().map(Vec::len)
        ),
        (Some(0), Some(0)),
        "{plan}"
    );
    let kept = ok_json(&vern(&["client", "list", "-o", "json"], &env));
    assert!(kept.to_string().contains("svc.acme.web.prod.api"), "{kept}");
    std::fs::write(&gates_only, "clients: []\n").unwrap();
    let dry = ok_json(&vern(
        &["apply", "-f", &g, "--prune", "--dry-run", "-o", "json"],
        &env,
    ));
    assert!(
        dry["delete"]
            .as_array()
            .is_some_and(|d| d.iter().any(|c| c == "svc.acme.web.prod.api")),
        "{dry}"
    );

    std::fs::write(&edited, "clients: []\nteams: []\n").unwrap();
    let out = vern(&["apply", "-f", &e], &env);
    assert!(
        text(&out.stderr).contains("unknown field `teams`"),
        "{}",
        text(&out.stderr)
    );
}
