//! Abuse protection through the real binary: bursts past the token and API
//! limits get 429 with `Retry-After` while other clients are unaffected,
//! and repeated authentication failures lock out with backoff.
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

async fn create(s: &Server, name: &str) -> (String, String) {
    let r: Value = client()
        .post(s.url("/v1/auth/clients"))
        .header("x-vault-token", "root")
        .json(&json!({"tenant": "acme", "project": "web", "environment": "prod", "name": name, "scopes": ["secrets:read", "secrets:write", "secrets:delete"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        r["data"]["client_id"].as_str().unwrap().to_owned(),
        r["data"]["client_secret"].as_str().unwrap().to_owned(),
    )
}

async fn token_status(s: &Server, id: &str, secret: &str) -> (u16, Option<String>, Value) {
    let r = client()
        .post(s.url("/oauth2/token"))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn bursts_are_limited_per_client_and_per_principal() {
    let dir = temp();
    let d = path_str(dir.path());
    let s = dev_server(
        &d,
        &[
            "--limit-token-client",
            "0.2:3",
            "--limit-api-principal",
            "0.2:4",
        ],
    );
    let (a, a_secret) = create(&s, "a").await;
    let (b, b_secret) = create(&s, "b").await;

    let mut statuses = Vec::new();
    let mut a_token = None;
    for _ in 0..6 {
        let (status, retry, body) = token_status(&s, &a, &a_secret).await;
        if status == 200 && a_token.is_none() {
            a_token = body["access_token"].as_str().map(str::to_owned);
        }
        if status == 429 {
            let secs: u64 = retry.expect("429 carries Retry-After").parse().unwrap();
            assert!((1..=5).contains(&secs), "{secs}");
            assert_eq!(body["error"], "temporarily_unavailable");
        }
        statuses.push(status);
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 429, 429, 429],
        "a burst of three, then refused"
    );
    let (status, _, body) = token_status(&s, &b, &b_secret).await;
    assert_eq!(status, 200, "another client is unaffected");
    let b_token = body["access_token"].as_str().unwrap().to_owned();

    let get = |token: String| {
        let url = s.url("/v1/secret/data/acme/web/prod/x");
        async move { client().get(url).bearer_auth(token).send().await.unwrap() }
    };
    let mut api = Vec::new();
    for _ in 0..6 {
        let r = get(a_token.clone().unwrap()).await;
        if r.status() == 429 {
            assert!(r.headers().contains_key("retry-after"));
        }
        api.push(r.status().as_u16());
    }
    assert_eq!(api, [404, 404, 404, 404, 429, 429]);
    assert_eq!(
        get(b_token).await.status(),
        404,
        "another principal is unaffected"
    );

    let metrics = client()
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"vern_rate_limited_total{scope="token_client"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"vern_rate_limited_total{scope="api_principal"} 2"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn repeated_authentication_failures_lock_out_with_backoff() {
    let dir = temp();
    let d = path_str(dir.path());
    let s = dev_server(&d, &["--lockout-after", "3"]);
    let (id, secret) = create(&s, "victim").await;
    for _ in 0..3 {
        let (status, _, body) = token_status(&s, &id, "vern.cs.guess").await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client"))
        );
    }
    // Locked: even the right secret waits now.
    let (status, retry, _) = token_status(&s, &id, &secret).await;
    assert_eq!(status, 429);
    assert_eq!(retry.as_deref(), Some("1"));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, _, _) = token_status(&s, &id, &secret).await;
    assert_eq!(
        status, 200,
        "the lock expires and a success clears the record"
    );

    let metrics = client()
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"vern_auth_failures_total{scope="token_endpoint"} 3"#),
        "{metrics}"
    );
    drop(s);

    // Bad tokens on the API count against the source address (a fresh
    // server: the failures above were counted against this address too,
    // and a success does not clear an address's record).
    let dir = temp();
    let d = path_str(dir.path());
    let s = dev_server(&d, &["--lockout-after", "3"]);
    for _ in 0..3 {
        let r = client()
            .get(s.url("/v1/secret/data/acme/web/prod/x"))
            .bearer_auth("a.b.c")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let r = client()
        .get(s.url("/v1/secret/data/acme/web/prod/x"))
        .header("x-vault-token", "root")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let metrics = client()
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"vern_auth_failures_total{scope="api"} 3"#),
        "{metrics}"
    );
}
