//! Cedar deciding every request of the real server: operator policies,
//! cross-tenant grants, the decision API, and hot reloads (API and SIGHUP)
//! that refuse a broken set and keep the old one serving.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

/// `GET` of the secret at `path` with `token` as a bearer token.
fn read(s: &Server, path: &str, token: &str) -> reqwest::RequestBuilder {
    client()
        .get(s.url(&format!("/v1/secret/data/{path}")))
        .bearer_auth(token)
}

#[tokio::test]
async fn policies_decide_the_api_and_reload_atomically() {
    let dir = temp();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    for f in ["operators.cedar", "grants.cedar"] {
        std::fs::copy(shipped.join(f), policies.join(f)).unwrap();
    }
    let (d, p) = (path_str(&dir.path().join("data")), path_str(&policies));
    let s = dev_server(&d, &["--policy-dir", &p]);
    let c = client();
    for path in [
        "acme/web/prod/db",
        "globex/web/prod/db",
        "globex/shared/prod/flags",
    ] {
        write_secret(&s, "root", path, json!({"v": path})).await;
    }

    // An operator needs an explicit policy to read secret values.
    let reader = client_token(&s, json!({"name": "alice", "roles": ["secrets-reader"]})).await;
    let plain = client_token(
        &s,
        json!({"name": "bob", "roles": ["oncall", "platform-admin"]}),
    )
    .await;
    assert_eq!(status_of(read(&s, "acme/web/prod/db", &reader)).await, 200);
    assert_eq!(
        status_of(read(&s, "globex/web/prod/db", &reader)).await,
        404
    );
    assert_eq!(status_of(read(&s, "acme/web/prod/db", &plain)).await, 404);
    assert_eq!(
        status_of(
            c.get(s.url("/v1/secret/metadata/acme/web/prod/db"))
                .bearer_auth(&plain)
        )
        .await,
        200,
        "metadata is platform-visible"
    );
    // Platform administrators administer the platform: this one may seal.
    assert_eq!(
        status_of(c.put(s.url("/v1/sys/seal")).bearer_auth(&plain)).await,
        204
    );
    assert_eq!(status_of(c.get(s.url("/v1/sys/health"))).await, 503);
    // A restarted dev server unseals itself.
    drop(s);
    let s = dev_server(&d, &["--policy-dir", &p]);
    let reader = client_token(&s, json!({"name": "alice2", "roles": ["secrets-reader"]})).await;

    // The shipped cross-tenant grant opens exactly one thing.
    let svc = client_token(&s, service("acme", "api", &SECRET_SCOPES)).await;
    assert_eq!(
        status_of(read(&s, "globex/shared/prod/flags", &svc)).await,
        200
    );
    assert_eq!(status_of(read(&s, "globex/web/prod/db", &svc)).await, 404);
    assert_eq!(
        status_of(
            c.post(s.url("/v1/secret/data/globex/shared/prod/flags"))
                .bearer_auth(&svc)
                .json(&json!({"data": {}}))
        )
        .await,
        403
    );

    // The decision API, one request and a batch.
    let one = json_of(c.post(s.url("/v1/authz/check")).bearer_auth(&svc)
        .json(&json!({"principal": "service:svc.acme.web.prod.api@acme/web/prod", "action": "secret.read", "resource": "secret:globex/web/prod/db"})))
        .await;
    assert_eq!(one["decision"], "deny");
    assert_eq!(one["policies"], json!(["vern.tenant-isolation"]));
    assert!(one["request_id"].is_string());
    // Asking about others takes a principal allowed to: here root.
    let batch = json_of(c.post(s.url("/v1/authz/check")).header("x-vault-token", "root")
        .json(&json!({"requests": [
            {"principal": "operator:op.x#secrets-reader", "action": "secret.read", "resource": "secret:acme/web/prod/db"},
            {"principal": "nonsense", "action": "secret.read", "resource": "platform"},
        ]})))
        .await;
    assert_eq!(batch["results"][0]["decision"], "allow");
    assert_eq!(
        batch["results"][0]["policies"],
        json!(["oncall-reads-acme"])
    );
    assert_eq!(batch["results"][1]["decision"], "deny");
    assert!(batch["results"][1]["errors"][0]
        .as_str()
        .unwrap()
        .contains("nonsense"));

    // A broken file is refused by the API and by SIGHUP; the old set serves.
    std::fs::write(
        policies.join("broken.cedar"),
        "permit (principal is Vern::Nobody, action, resource);",
    )
    .unwrap();
    let r = c
        .post(s.url("/v1/sys/policies/reload"))
        .header("x-vault-token", "root")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("Nobody"));
    signal(s.pid(), "HUP");
    eventually(
        Duration::from_secs(10),
        "the SIGHUP refusal is logged",
        async || s.stderr_text().contains("Policy reload refused"),
    )
    .await;
    assert_eq!(
        status_of(read(&s, "acme/web/prod/db", &reader)).await,
        200,
        "the old policies still serve"
    );

    // A good change takes effect on SIGHUP: without operators.cedar the
    // reader loses access.
    std::fs::remove_file(policies.join("broken.cedar")).unwrap();
    std::fs::remove_file(policies.join("operators.cedar")).unwrap();
    signal(s.pid(), "HUP");
    eventually(
        Duration::from_secs(10),
        "the reload takes effect",
        async || status_of(read(&s, "acme/web/prod/db", &reader)).await == 404,
    )
    .await;
    let r = json_of(
        c.post(s.url("/v1/sys/policies/reload"))
            .header("x-vault-token", "root"),
    )
    .await;
    assert_eq!(
        r["data"]["policies"], 2,
        "the grant and the listing policy of grants.cedar"
    );
    assert_eq!(
        status_of(c.post(s.url("/v1/sys/policies/reload")).bearer_auth(&svc)).await,
        403,
        "services cannot reload"
    );
}

/// The caches of the request path (verified tokens, decisions) never
/// outlive what they were computed from: a reload and a revocation take
/// effect on the very next request, with no waiting.
#[tokio::test]
async fn a_reload_and_a_revocation_take_effect_on_the_next_request() {
    let dir = temp();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    let grants =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/grants.cedar");
    std::fs::copy(&grants, policies.join("grants.cedar")).unwrap();
    let (d, p) = (path_str(&dir.path().join("data")), path_str(&policies));
    let s = dev_server(&d, &["--policy-dir", &p]);
    let c = client();
    write_secret(&s, "root", "globex/shared/prod/flags", json!({"v": 1})).await;
    let (id, secret) = create_client(&s, service("acme", "api", &SECRET_SCOPES)).await;
    let token = access_token(&s, &id, &secret).await;
    let reload = async || {
        status_of(
            c.post(s.url("/v1/sys/policies/reload"))
                .header("x-vault-token", "root"),
        )
        .await
    };
    // Asked often enough to be served from the caches.
    for _ in 0..20 {
        assert_eq!(
            status_of(read(&s, "globex/shared/prod/flags", &token)).await,
            200
        );
    }
    std::fs::remove_file(policies.join("grants.cedar")).unwrap();
    assert_eq!(reload().await, 200);
    assert_eq!(
        status_of(read(&s, "globex/shared/prod/flags", &token)).await,
        404,
        "the grant is gone at once"
    );
    std::fs::copy(&grants, policies.join("grants.cedar")).unwrap();
    assert_eq!(reload().await, 200);
    assert_eq!(
        status_of(read(&s, "globex/shared/prod/flags", &token)).await,
        200,
        "and back at once"
    );
    let revoked = c
        .post(s.url("/oauth2/revoke"))
        .basic_auth(&id, Some(&secret))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    assert_eq!(
        status_of(read(&s, "globex/shared/prod/flags", &token)).await,
        401,
        "a revoked token is refused on the next request"
    );
}
