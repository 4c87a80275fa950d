//! Vault's auth methods and token endpoints through the real binary: an
//! AppRole login gives a service a Vern access token in Vault's `auth`
//! block, under the token endpoint's lockouts; the token reads its own
//! environment and nothing else; every login and refusal is on record.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use common::*;
use serde_json::{json, Value};

/// `POST /v1/auth/approle/login` with `role_id` and `secret_id`: the status
/// and the JSON answer.
async fn approle(s: &Server, role_id: &str, secret_id: &str) -> (u16, Value) {
    status_and_json(
        client()
            .post(s.url("/v1/auth/approle/login"))
            .json(&json!({"role_id": role_id, "secret_id": secret_id})),
    )
    .await
}

#[tokio::test]
async fn approle_login_gives_a_service_its_own_environment() {
    let dir = temp();
    let s = dev_server(&path_str(dir.path()), &[]);
    let (id, secret) = create_client(&s, service("acme", "app", &SECRET_SCOPES)).await;
    let (status, login) = approle(&s, &id, &secret).await;
    assert_eq!(status, 200, "{login}");
    let auth = &login["auth"];
    let token = auth["client_token"].as_str().unwrap();
    assert_eq!(token.matches('.').count(), 2, "a Vern access token (JWT)");
    assert_eq!(auth["policies"], json!(SECRET_SCOPES));
    assert_eq!(auth["token_policies"], auth["policies"]);
    assert_eq!(
        auth["metadata"],
        json!({"client_id": id, "tenant": "acme", "project": "web", "environment": "prod"})
    );
    assert_eq!(auth["lease_duration"], 300);
    assert_eq!(auth["renewable"], false);
    assert_eq!(auth["token_type"], "service");
    assert_eq!(auth["entity_id"], id);
    // The accessor names the token (its `jti`) without being it.
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&B64.decode(payload).unwrap()).unwrap();
    assert_eq!(auth["accessor"], claims["jti"]);
    assert_eq!(claims["auth_method"], "approle");
    assert_eq!(login["mount_type"], "approle");

    // The token works in its own environment and nowhere else.
    assert_eq!(
        write_secret(&s, token, "acme/web/prod/db", json!({"p": "1"})).await,
        200
    );
    let read = get_as(&s, token, "/v1/secret/data/acme/web/prod/db").await;
    assert_eq!(read["data"]["data"]["p"], "1");
    assert_eq!(
        write_secret(&s, token, "globex/web/prod/db", json!({"p": "1"})).await,
        403
    );
    assert_eq!(
        status_of(
            client()
                .get(s.url("/v1/secret/data/globex/web/prod/db"))
                .header("x-vault-token", token)
        )
        .await,
        404
    );
}

#[tokio::test]
async fn approle_refusals_are_vaults_and_a_deleted_client_is_refused() {
    let dir = temp();
    let s = dev_server(&path_str(dir.path()), &[]);
    let (id, secret) = create_client(&s, service("acme", "app", &SECRET_SCOPES)).await;
    for (role, secret_id) in [
        (id.as_str(), "vern.cs.wrong"),
        ("svc.acme.web.prod.nobody", secret.as_str()),
    ] {
        let (status, body) = approle(&s, role, secret_id).await;
        assert_eq!(
            (status, body),
            (400, json!({"errors": ["invalid role or secret ID"]}))
        );
    }
    let (status, body) = status_and_json(
        client()
            .post(s.url("/v1/auth/approle/login"))
            .json(&json!({"role_id": id})),
    )
    .await;
    assert_eq!(
        (status, body),
        (400, json!({"errors": ["missing secret_id"]}))
    );

    // A DPoP-bound client gets no token through a login: it would be weaker
    // than the one the token endpoint gives it.
    let mut bound = service("acme", "bound", &["secrets:read"]);
    bound["dpop_bound"] = json!(true);
    let (bound_id, bound_secret) = create_client(&s, bound).await;
    let (status, body) = approle(&s, &bound_id, &bound_secret).await;
    assert_eq!(status, 400);
    assert!(
        body["errors"][0].as_str().unwrap().contains("DPoP"),
        "{body}"
    );

    // A deleted client's secret_id no longer logs in, and its token is
    // refused at once.
    let (_, login) = approle(&s, &id, &secret).await;
    let token = login["auth"]["client_token"].as_str().unwrap().to_owned();
    let deleted = client()
        .delete(s.url(&format!("/v1/auth/clients/{id}")))
        .header("x-vault-token", "root")
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success());
    assert_eq!(approle(&s, &id, &secret).await.0, 400);
    assert_eq!(
        write_secret(&s, &token, "acme/web/prod/db", json!({"p": "1"})).await,
        401
    );

    // Every login and every refusal is on record, under the client it
    // named, with the secret only as its HMAC.
    let records: Vec<Value> = audit_records(&s)
        .await
        .into_iter()
        .filter(|r| r["event"]["operation"] == "POST /v1/auth/approle/login")
        .collect();
    let statuses: Vec<u64> = records
        .iter()
        .map(|r| r["event"]["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [400, 400, 400, 400, 200, 400], "{records:#?}");
    for r in &records {
        let text = r.to_string();
        assert!(!text.contains(&secret), "the secret is never in a record");
    }
    let named = |r: &Value| r["event"]["resource"].as_str().map(str::to_owned);
    assert_eq!(named(&records[0]), Some(format!("client:{id}")));
    assert_eq!(records[0]["event"]["action"], "token.issue");
    assert!(records[0]["event"]["hmacs"]["secret_id"].is_string());
    assert!(records[4]["event"]["hmacs"]["issued_token"].is_string());
}

#[tokio::test]
async fn approle_failures_lock_out_the_pair_as_the_token_endpoint_does() {
    let dir = temp();
    let s = dev_server(&path_str(dir.path()), &["--lockout-after", "3"]);
    let (id, secret) = create_client(&s, service("acme", "app", &SECRET_SCOPES)).await;
    for _ in 0..3 {
        assert_eq!(approle(&s, &id, "vern.cs.guess").await.0, 400);
    }
    let r = client()
        .post(s.url("/v1/auth/approle/login"))
        .json(&json!({"role_id": id, "secret_id": secret}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        429,
        "the pair is locked, even for the right secret"
    );
    assert!(r.headers().contains_key("retry-after"));
    // The same lockout as the token endpoint's: the pair is one.
    let t = client()
        .post(s.url("/oauth2/token"))
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(t.status(), 429);
}
