//! The token authority through the real binary: hostile numbers in a
//! `private_key_jwt` assertion get a 4xx and an audit record, never a
//! panic; deleting a client stops its live tokens at once; a bad client
//! declaration is a 400, not a token error.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod common;

use common::{
    access_token, client, create_client, dev_server, json_of, path_str, post_as, records_of,
    service, status_and_json, status_of, temp, token_endpoint, write_secret, Server,
};
use serde_json::{json, Value};
use vern_authority::jws::{ed25519_public, sign_ed25519};
use vern_authority::JWT_BEARER_ASSERTION;

/// Registers a `private_key_jwt` service client for `key` with the root
/// token; returns its id.
async fn keyed_client(s: &Server, name: &str, key: &ed25519_dalek::SigningKey) -> String {
    let (status, created) = post_as(
        s,
        "root",
        "/v1/auth/clients",
        &json!({"tenant": "acme", "project": "web", "environment": "prod",
                "name": name, "jwks": [ed25519_public(key).to_json(None)]}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(created["data"]["client_secret"].is_null());
    created["data"]["client_id"].as_str().unwrap().to_owned()
}

/// A client assertion with `claims`, signed with `key`.
fn assertion(claims: &Value, key: &ed25519_dalek::SigningKey) -> String {
    sign_ed25519(&json!({"alg": "EdDSA", "typ": "JWT"}), claims, key)
}

/// A token request authenticated by the client assertion `assertion`.
fn asserted(s: &Server, assertion: &str) -> reqwest::RequestBuilder {
    client().post(s.url("/oauth2/token")).form(&[
        ("grant_type", "client_credentials"),
        ("client_assertion_type", JWT_BEARER_ASSERTION),
        ("client_assertion", assertion),
    ])
}

#[tokio::test]
async fn hostile_assertion_numbers_are_refused_and_audited() {
    let dir = temp();
    let s = dev_server(&path_str(dir.path()), &[]);
    let key = ed25519_dalek::SigningKey::from_bytes(&[21; 32]);
    let id = keyed_client(&s, "signer", &key).await;
    let endpoint = token_endpoint(&s).await;
    let now = common::unix_now();
    // `exp = u64::MAX` used to overflow `exp + leeway` and panic the
    // handler (500, no record); `nbf` and a negative `iat` likewise hostile.
    let cases = [
        ("exp-max", json!({"exp": u64::MAX})),
        ("nbf-max", json!({"exp": now + 60, "nbf": u64::MAX})),
        ("iat-negative", json!({"exp": now + 60, "iat": -1})),
    ];
    for (name, times) in cases {
        let mut claims = json!({"iss": id, "sub": id, "aud": endpoint, "jti": name});
        for (k, v) in times.as_object().unwrap() {
            claims[k] = v.clone();
        }
        let request_id = format!("hostile-{name}");
        let (status, body) = status_and_json(
            asserted(&s, &assertion(&claims, &key)).header("x-request-id", &request_id),
        )
        .await;
        assert_eq!(status, 401, "{name}: {body}");
        assert_eq!(body["error"], "invalid_client", "{name}: {body}");
        let records = records_of(&s, &request_id).await;
        assert_eq!(records.len(), 1, "{name}: one record");
        let event = &records[0]["event"];
        assert_eq!(event["status"], 401, "{name}: {event}");
        assert_eq!(event["action"], "token.issue", "{name}: {event}");
    }
    // The server is still well: the same client with sane numbers works.
    let claims = json!({"iss": id, "sub": id, "aud": endpoint, "jti": "sane", "exp": now + 60});
    assert_eq!(
        status_of(asserted(&s, &assertion(&claims, &key))).await,
        200
    );
}

/// Creates a service client of `acme/web/prod` with the root token;
/// returns its id and secret.
async fn secret_client(s: &Server, name: &str) -> (String, String) {
    create_client(s, service("acme", name, &["secrets:read", "secrets:write"])).await
}

#[tokio::test]
async fn deleting_a_client_stops_its_tokens_at_once() {
    let dir = temp();
    let s = dev_server(&path_str(dir.path()), &[]);
    let c = client();
    assert_eq!(
        write_secret(&s, "root", "acme/web/prod/db", json!({"password": "p"})).await,
        200
    );
    let (id, secret) = secret_client(&s, "doomed").await;
    let token = access_token(&s, &id, &secret).await;
    let (checker, checker_secret) = secret_client(&s, "checker").await;
    let read = || {
        c.get(s.url("/v1/secret/data/acme/web/prod/db"))
            .bearer_auth(&token)
            .send()
    };
    let introspect = || async {
        let v = json_of(
            c.post(s.url("/oauth2/introspect"))
                .basic_auth(&checker, Some(&checker_secret))
                .form(&[("token", token.as_str())]),
        )
        .await;
        v["active"].as_bool().unwrap()
    };
    assert_eq!(read().await.unwrap().status(), 200);
    assert!(introspect().await);

    let deleted = c
        .delete(s.url(&format!("/v1/auth/clients/{id}")))
        .header("x-vault-token", "root")
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success(), "{}", deleted.status());

    // Refused like a revoked token: 401 with an invalid_token challenge,
    // so the caller knows to stop using it.
    let refused = read().await.unwrap();
    assert_eq!(refused.status(), 401);
    let challenge = refused.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("invalid_token"), "{challenge}");
    assert!(!introspect().await);
}

#[tokio::test]
async fn a_bad_client_declaration_is_a_400() {
    let dir = temp();
    let s = dev_server(&path_str(dir.path()), &[]);
    for spec in [
        json!({"tenant": "acme", "project": "web", "environment": "prod", "name": "k",
               "jwks": [{"kty": "OKP", "crv": "Ed25519", "x": "short"}]}),
        json!({"tenant": "acme", "project": "web", "environment": "prod", "name": "Bad Name"}),
    ] {
        let r = client()
            .post(s.url("/v1/auth/clients"))
            .header("x-vault-token", "root")
            .json(&spec)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{spec}");
        assert!(r.headers().get("www-authenticate").is_none());
    }
}
