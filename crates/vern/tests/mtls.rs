//! OAuth mutual-TLS (RFC 8705) through the real binary: a client
//! authenticates with its certificate, gets a certificate-bound token
//! (`cnf.x5t#S256`), and that token works only on a connection presenting
//! the same certificate.
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
use rcgen::{ExtendedKeyUsagePurpose, SanType};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

#[tokio::test]
async fn certificate_bound_tokens_need_their_certificate() {
    let dir = temp();
    let authority = ca();
    let server = issue(
        &authority,
        SanType::IpAddress("127.0.0.1".parse().unwrap()),
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let worker = issue(
        &authority,
        SanType::DnsName("worker.acme".try_into().unwrap()),
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let other = issue(
        &authority,
        SanType::DnsName("other.acme".try_into().unwrap()),
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let ca_pem = authority.0.pem();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        path_str(&p)
    };
    let (ca_file, crt, key) = (
        write("ca.pem", &ca_pem),
        write("s.crt", &server.cert_pem),
        write("s.key", &server.key_pem),
    );
    let data = path_str(&dir.path().join("data"));
    let s = Server::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            &crt,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &ca_file,
            "--data-dir",
            &data,
        ],
        &[],
    );
    let base = format!("https://{}", s.addr);
    let anonymous = https(&ca_pem, None);

    // Client certificates are optional: init and unseal without one.
    let root = init_and_unseal_at(&anonymous, &base).await;
    let created = anonymous
        .post(format!("{base}/v1/auth/clients"))
        .header("x-vault-token", &root)
        .json(&json!({"tenant": "acme", "project": "pay", "environment": "prod", "name": "worker", "tls_client_auth_san": "worker.acme", "scopes": ["secrets:read", "secrets:write", "secrets:delete"]}))
        .send().await.unwrap();
    assert_eq!(created.status(), 200);
    let created: Value = created.json().await.unwrap();
    assert!(
        created["data"].get("client_secret").is_none(),
        "a certificate client has no secret"
    );

    let token_with = |client: reqwest::Client| {
        let base = base.clone();
        async move {
            client
                .post(format!("{base}/oauth2/token"))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", "svc.acme.pay.prod.worker"),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        token_with(https(&ca_pem, Some(&other))).await.status(),
        401,
        "a certificate naming someone else"
    );
    assert_eq!(
        token_with(anonymous.clone()).await.status(),
        401,
        "no certificate, no secret"
    );
    let issued: Value = token_with(https(&ca_pem, Some(&worker)))
        .await
        .json()
        .await
        .unwrap();
    let token = issued["access_token"].as_str().unwrap().to_owned();
    let claims: Value =
        serde_json::from_slice(&B64.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
    assert_eq!(
        claims["cnf"]["x5t#S256"],
        B64.encode(Sha256::digest(&worker.der))
    );

    let get = |client: reqwest::Client| {
        let (base, token) = (base.clone(), token.clone());
        async move {
            client
                .get(format!("{base}/v1/secret/data/acme/pay/prod/key"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        get(https(&ca_pem, Some(&worker))).await,
        404,
        "authorized: nothing stored yet"
    );
    assert_eq!(
        get(https(&ca_pem, Some(&other))).await,
        401,
        "another certificate"
    );
    assert_eq!(get(anonymous.clone()).await, 401, "no certificate");
    let meta: Value = anonymous
        .get(format!("{base}/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["tls_client_certificate_bound_access_tokens"], true);
}
