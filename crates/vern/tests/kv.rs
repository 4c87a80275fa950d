//! Secrets through the real binary: the `vern kv` CLI end to end, and
//! check-and-set across two Vern processes sharing one PostgreSQL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};

use common::*;
use serde_json::{json, Value};

fn ok_json(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "command failed: {}",
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn the_kv_cli_covers_the_whole_flow() {
    let dir = temp();
    let d = path_str(dir.path());
    let s = dev_server(&d, &[]);
    let addr = s.http();
    let env = [("VERN_ADDR", addr.as_str()), ("VERN_TOKEN", "root")];
    let kv = |args: &[&str]| {
        let mut full = vec!["kv"];
        full.extend_from_slice(args);
        vern(&full, &env)
    };

    let cert = dir.path().join("cert.pem");
    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let from_file = format!("cert=@{}", cert.display());
    let v = ok_json(&kv(&[
        "put",
        "-o",
        "json",
        "acme/web/prod/tls",
        "user=web",
        &from_file,
    ]));
    assert_eq!(v["data"]["version"], 1);
    let got = ok_json(&kv(&["get", "-o", "json", "acme/web/prod/tls"]));
    assert_eq!(got["data"]["data"]["user"], "web");
    assert!(got["data"]["data"]["cert"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));

    // JSON on stdin.
    let mut child = Command::new(BIN)
        .args(["kv", "put", "-o", "json", "acme/web/prod/tls", "-"])
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"user": "web", "port": 8443}"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(ok_json(&out)["data"]["version"], 2);

    let out = kv(&["put", "--cas", "1", "acme/web/prod/tls", "user=late"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("check-and-set"),
        "{}",
        text(&out.stderr)
    );
    ok_json(&kv(&[
        "patch",
        "-o",
        "json",
        "--cas",
        "2",
        "acme/web/prod/tls",
        "user=patched",
    ]));
    let got = ok_json(&kv(&["get", "-o", "json", "acme/web/prod/tls"]));
    assert_eq!(
        got["data"]["data"],
        json!({"user": "patched", "port": 8443})
    );
    let v1 = ok_json(&kv(&[
        "get",
        "-o",
        "json",
        "--version",
        "1",
        "acme/web/prod/tls",
    ]));
    assert_eq!(v1["data"]["metadata"]["version"], 1);
    let table = text(&kv(&["get", "acme/web/prod/tls"]).stdout);
    assert!(
        table.contains("====== Data ======") && table.contains("patched"),
        "{table}"
    );

    assert_eq!(
        ok_json(&kv(&["list", "-o", "json", "acme/web/prod"]))["data"]["keys"],
        json!(["tls"])
    );
    let out = kv(&["list", "nobody"]);
    assert!(text(&out.stderr).contains("no secrets under nobody"));

    ok_json(&kv(&["delete", "-o", "json", "acme/web/prod/tls"]));
    let out = kv(&["get", "acme/web/prod/tls"]);
    assert!(
        text(&out.stderr).contains("version 3 of acme/web/prod/tls was deleted at"),
        "{}",
        text(&out.stderr)
    );
    ok_json(&kv(&[
        "undelete",
        "-o",
        "json",
        "--versions",
        "3",
        "acme/web/prod/tls",
    ]));
    ok_json(&kv(&[
        "destroy",
        "-o",
        "json",
        "--versions",
        "1,2",
        "acme/web/prod/tls",
    ]));
    ok_json(&kv(&[
        "metadata",
        "put",
        "-o",
        "json",
        "--max-versions",
        "4",
        "--delete-version-after",
        "2h",
        "--custom-metadata",
        "owner=web",
        "acme/web/prod/tls",
    ]));
    let meta = ok_json(&kv(&["metadata", "get", "-o", "json", "acme/web/prod/tls"]));
    assert_eq!(meta["data"]["max_versions"], 4);
    assert_eq!(meta["data"]["delete_version_after"], "2h0m0s");
    assert_eq!(meta["data"]["custom_metadata"], json!({"owner": "web"}));
    assert_eq!(meta["data"]["versions"]["1"]["destroyed"], true);
    ok_json(&kv(&[
        "metadata",
        "delete",
        "-o",
        "json",
        "acme/web/prod/tls",
    ]));
    assert!(!kv(&["get", "acme/web/prod/tls"]).status.success());

    let out = kv(&["put", "acme/web/prod/x", "novalue"]);
    assert!(
        text(&out.stderr).contains("is not key=value"),
        "{}",
        text(&out.stderr)
    );
    let out = kv(&["put", "acme/web/x", "a=b"]);
    assert!(
        text(&out.stderr).contains("<tenant>/<project>/<environment>/<name>"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn check_and_set_holds_across_two_processes_on_one_postgresql() {
    let Some(url) = vern_store::testing::fresh_postgres_url().await else {
        return;
    };
    let (a, b, root) = common::two_servers_on_postgres(&url).await;
    let root = root.as_str();
    let c = client();
    let path = "/v1/secret/data/acme/web/prod/contended";
    let r = c
        .post(a.url(path))
        .header("x-vault-token", root)
        .json(&json!({"data": {"n": 0}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    for round in 0..3u64 {
        let mut tasks = Vec::new();
        for i in 0..10 {
            let target = if i % 2 == 0 { a.url(path) } else { b.url(path) };
            let c = c.clone();
            let root = root.to_owned();
            tasks.push(tokio::spawn(async move {
                c.post(target)
                    .header("x-vault-token", root)
                    .json(&json!({"data": {"writer": i}, "options": {"cas": round + 1}}))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }));
        }
        let mut statuses = Vec::new();
        for t in tasks {
            statuses.push(t.await.unwrap());
        }
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            1,
            "round {round}: {statuses:?}"
        );
        assert!(
            statuses.iter().all(|s| *s == 200 || *s == 400),
            "{statuses:?}"
        );
    }
    // Both processes see the same, final version at once.
    for s in [&a, &b] {
        let v: Value = c
            .get(s.url(path))
            .header("x-vault-token", root)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["data"]["metadata"]["version"], 4);
    }
}
