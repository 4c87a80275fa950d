//! DESIGN.md's security invariants, checked through the real binary where
//! other suites check them in-process: tenant isolation for a service's
//! token (reads, LIST, writes), nothing secret in logs, sealed means
//! useless for every data endpoint, and acknowledged writes surviving a
//! SIGKILL of the server.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod common;

use common::*;
use serde_json::{json, Value};

async fn service_token(s: &Server, tenant: &str) -> String {
    client_token(s, service(tenant, "app", &SECRET_SCOPES)).await
}

/// Sends each request and checks the status it gets.
async fn expect_statuses(cases: Vec<(reqwest::RequestBuilder, u16)>) {
    for (request, status) in cases {
        let resp = request.send().await.unwrap();
        let url = resp.url().path().to_owned();
        assert_eq!(resp.status(), status, "{url}");
    }
}

#[tokio::test]
async fn a_tenant_cannot_see_or_touch_another_tenants_secrets() {
    let dir = temp();
    let d = path_str(dir.path());
    let s = dev_server(&d, &[]);
    let c = client();
    let root = |r: reqwest::RequestBuilder| r.header("x-vault-token", "root");
    for path in [
        "globex/web/prod/db",
        "globex/mail/dev/smtp",
        "acme/web/prod/db",
    ] {
        assert_eq!(
            write_secret(&s, "root", path, json!({"v": path})).await,
            200
        );
    }
    let acme = service_token(&s, "acme").await;
    let as_acme = |r: reqwest::RequestBuilder| r.bearer_auth(&acme);

    // Another tenant's existing secret answers exactly like a missing one.
    let existing = as_acme(c.get(s.url("/v1/secret/data/globex/web/prod/db")))
        .send()
        .await
        .unwrap();
    let missing = as_acme(c.get(s.url("/v1/secret/data/globex/web/prod/nothing")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (existing.status(), missing.status()),
        (
            reqwest::StatusCode::NOT_FOUND,
            reqwest::StatusCode::NOT_FOUND
        )
    );
    assert_eq!(
        existing.text().await.unwrap(),
        missing.text().await.unwrap()
    );
    for path in ["metadata/globex/web/prod/db", "subkeys/globex/web/prod/db"] {
        assert_eq!(
            as_acme(c.get(s.url(&format!("/v1/secret/{path}"))))
                .send()
                .await
                .unwrap()
                .status(),
            404,
            "{path}"
        );
    }
    // LIST shows only the caller's tenant, at every level.
    let list = |path: &'static str| {
        let r = as_acme(c.request(
            reqwest::Method::from_bytes(b"LIST").unwrap(),
            s.url(&format!("/v1/secret/metadata/{path}")),
        ));
        async move {
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            (
                status,
                r.json::<Value>().await.unwrap_or(Value::Null)["data"]["keys"].clone(),
            )
        }
    };
    assert_eq!(list("").await, (200, json!(["acme/"])));
    assert_eq!(list("globex/").await.0, 404);
    assert_eq!(list("acme/web/prod/").await, (200, json!(["db"])));
    // Writes, deletes and destroys to another tenant are refused and change nothing.
    expect_statuses(vec![
        (
            as_acme(c.post(s.url("/v1/secret/data/globex/web/prod/db")))
                .json(&json!({"data": {"v": "overwritten"}})),
            403,
        ),
        (
            as_acme(c.delete(s.url("/v1/secret/metadata/globex/web/prod/db"))),
            403,
        ),
        (
            as_acme(c.post(s.url("/v1/secret/destroy/globex/web/prod/db")))
                .json(&json!({"versions": [1]})),
            403,
        ),
    ])
    .await;
    let still = json_of(root(c.get(s.url("/v1/secret/data/globex/web/prod/db")))).await;
    assert_eq!(
        (
            still["data"]["data"]["v"].as_str(),
            still["data"]["metadata"]["version"].as_u64()
        ),
        (Some("globex/web/prod/db"), Some(1))
    );
    // Its own environment works; a service cannot manage clients or the seal.
    expect_statuses(vec![
        (
            as_acme(c.get(s.url("/v1/secret/data/acme/web/prod/db"))),
            200,
        ),
        (as_acme(c.get(s.url("/v1/auth/clients"))), 403),
        (as_acme(c.put(s.url("/v1/sys/seal"))), 403),
    ])
    .await;
}

#[tokio::test]
async fn secret_values_and_credentials_never_reach_the_logs() {
    let dir = temp();
    let d = path_str(dir.path());
    let s = Server::start(&dev_args(&d, "root-in-no-log"), &[]);
    let c = client();
    let value = "s3cret-value-that-must-not-be-logged";
    write_secret(
        &s,
        "root-in-no-log",
        "acme/web/prod/db",
        json!({"password": value}),
    )
    .await;
    c.get(s.url("/v1/secret/data/acme/web/prod/db"))
        .header("x-vault-token", "root-in-no-log")
        .send()
        .await
        .unwrap();
    c.get(s.url("/v1/secret/data/acme/web/prod/db"))
        .header("x-vault-token", "wrong-token-guess")
        .send()
        .await
        .unwrap();
    let (_, created) = post_as(
        &s,
        "root-in-no-log",
        "/v1/auth/clients",
        &service("acme", "app", &SECRET_SCOPES),
    )
    .await;
    let secret = created["data"]["client_secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let access = access_token(&s, "svc.acme.web.prod.app", &secret).await;
    c.get(s.url("/v1/secret/data/acme/web/prod/db"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    // The log is read from a pipe: wait until all six requests are in it.
    eventually(
        std::time::Duration::from_secs(10),
        "the access log of every request",
        async || s.stderr_text().matches("Request handled.").count() >= 6,
    )
    .await;
    let logs = s.stderr_text();
    for needle in [
        value,
        "root-in-no-log",
        "wrong-token-guess",
        secret.as_str(),
        access.as_str(),
    ] {
        assert!(!logs.contains(needle), "a secret reached the logs");
    }
}

#[tokio::test]
async fn sealed_means_every_data_endpoint_answers_503() {
    let dir = temp();
    let d = path_str(dir.path());
    let s = dev_server(&d, &[]);
    let c = client();
    write_secret(&s, "root", "acme/web/prod/db", json!({"a": "b"})).await;
    assert_eq!(
        status_of(c.put(s.url("/v1/sys/seal")).header("x-vault-token", "root")).await,
        204
    );
    let requests = vec![
        c.get(s.url("/v1/secret/data/acme/web/prod/db"))
            .header("x-vault-token", "root"),
        c.post(s.url("/v1/secret/data/acme/web/prod/db"))
            .header("x-vault-token", "root")
            .json(&json!({"data": {}})),
        c.request(
            reqwest::Method::from_bytes(b"LIST").unwrap(),
            s.url("/v1/secret/metadata/"),
        )
        .header("x-vault-token", "root"),
        c.get(s.url("/v1/secret/config"))
            .header("x-vault-token", "root"),
        c.get(s.url("/v1/auth/clients"))
            .header("x-vault-token", "root"),
        c.get(s.url("/v1/sys/key-status"))
            .header("x-vault-token", "root"),
        c.get(s.url("/v1/sys/policies"))
            .header("x-vault-token", "root"),
        c.post(s.url("/v1/authz/check"))
            .header("x-vault-token", "root")
            .json(&json!({"principal": "root", "action": "sys.seal", "resource": "platform"})),
        c.post(s.url("/v1/auth/apply"))
            .header("x-vault-token", "root")
            .json(&json!({"clients": [], "dry_run": true})),
        c.get(s.url("/oauth2/jwks")),
        c.get(s.url("/v1/audit/records"))
            .header("x-vault-token", "root"),
        c.post(s.url("/v1/audit/hash"))
            .header("x-vault-token", "root")
            .json(&json!({"input": "x"})),
        c.get(s.url("/v1/audit/public-key")),
        c.post(s.url("/oauth2/token"))
            .basic_auth("svc.a.b.c.d", Some("x"))
            .form(&[("grant_type", "client_credentials")]),
    ];
    expect_statuses(requests.into_iter().map(|r| (r, 503)).collect()).await;
}

#[tokio::test]
async fn acknowledged_secret_writes_survive_a_sigkill_of_the_server() {
    let dir = temp();
    let d = path_str(dir.path());
    let args = dev_args(&d, "root");
    let s = Server::start(&args, &[]);
    let c = client();
    let acks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writer = {
        let (c, base) = (c.clone(), s.http());
        let acks = std::sync::Arc::clone(&acks);
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..100_000u32 {
                let r = c
                    .post(format!("{base}/v1/secret/data/acme/web/prod/k{i}"))
                    .header("x-vault-token", "root")
                    .json(&json!({"data": {"i": i}}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        acked.push(i);
                        acks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    _ => break,
                }
            }
            acked
        })
    };
    // Kill it mid-stream, once the writer has a few acknowledgements.
    eventually(
        std::time::Duration::from_secs(30),
        "the writer to get going",
        async || acks.load(std::sync::atomic::Ordering::SeqCst) > 20,
    )
    .await;
    s.kill();
    let acked = writer.await.unwrap();
    assert!(
        acked.len() > 10,
        "the writer got going ({} acks)",
        acked.len()
    );

    let s = Server::start(&args, &[]);
    for i in &acked {
        let r = get_as(&s, "root", &format!("/v1/secret/data/acme/web/prod/k{i}")).await;
        assert_eq!(
            r["data"]["data"]["i"], *i,
            "acknowledged write {i} was lost"
        );
    }
    // The audit log came through the kill too: every acknowledged write
    // has its record, and the chain (cut at most by a write never
    // acknowledged) verifies.
    let key = get_as(&s, "root", "/v1/audit/public-key").await["data"]["public_key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(s.terminate().success());
    let report = verify_audit_storage(&dir.path().join("vern.db"), &key);
    assert_eq!(report["intact"], true, "{report}");
    let log = audit_segments(dir.path());
    for i in &acked {
        assert!(
            log.contains(&format!("acme/web/prod/k{i}\"")),
            "acknowledged write {i} has no audit record"
        );
    }
}
