//! Abuse protection through the real binary: bursts past the token and API
//! limits get 429 with `Retry-After` while other clients are unaffected;
//! repeated authentication failures lock out the (credential, source) pair
//! with backoff and nothing else; traffic without valid credentials is
//! throttled per source without ever refusing valid credentials from it;
//! the source is read from `X-Forwarded-For` only behind a trusted proxy.
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

/// Creates a service `name` of `acme/web/prod` with the root token;
/// returns its id and secret.
async fn create(s: &Server, name: &str) -> (String, String) {
    create_client(s, service("acme", name, &SECRET_SCOPES)).await
}

async fn token_status(s: &Server, id: &str, secret: &str) -> (u16, Option<String>, Value) {
    token_from(s, id, secret, None).await
}

/// A token request, sent as if through a proxy that reports `forwarded`
/// as the client in `X-Forwarded-For`.
async fn token_from(
    s: &Server,
    id: &str,
    secret: &str,
    forwarded: Option<&str>,
) -> (u16, Option<String>, Value) {
    let mut req = client()
        .post(s.url("/oauth2/token"))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials")]);
    if let Some(f) = forwarded {
        req = req.header("x-forwarded-for", f);
    }
    let r = req.send().await.unwrap();
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

    expect_metrics(
        &s,
        &[
            r#"vern_rate_limited_total{scope="token_client"} 3"#,
            r#"vern_rate_limited_total{scope="api_principal"} 2"#,
        ],
    )
    .await;
}

/// Checks that `/metrics` has each of `lines`.
async fn expect_metrics(s: &Server, lines: &[&str]) {
    let m = metrics(s).await;
    for line in lines {
        assert!(m.contains(line), "{m}");
    }
}

/// `GET` of a secret with `token` (if any), from `forwarded` (if any).
async fn read(s: &Server, path: &str, token: Option<&str>, forwarded: Option<&str>) -> u16 {
    let mut req = client().get(s.url(&format!("/v1/secret/data/{path}")));
    if let Some(t) = token {
        req = req.header("x-vault-token", t);
    }
    if let Some(f) = forwarded {
        req = req.header("x-forwarded-for", f);
    }
    req.send().await.unwrap().status().as_u16()
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
    // The pair (client, this address) is locked: even the right secret
    // from here waits now.
    let (status, retry, _) = token_status(&s, &id, &secret).await;
    assert_eq!(status, 429);
    assert_eq!(retry.as_deref(), Some("1"));
    // Refused attempts are not checked, so polling does not extend the lock.
    eventually(
        std::time::Duration::from_secs(10),
        "the lock to expire",
        async || token_status(&s, &id, &secret).await.0 == 200,
    )
    .await;
    let (status, _, _) = token_status(&s, &id, "vern.cs.guess").await;
    assert_eq!(status, 401, "the success cleared the record: no lock");

    expect_metrics(
        &s,
        &[r#"vern_auth_failures_total{scope="token_endpoint"} 4"#],
    )
    .await;

    // On the API, a refused token is locked out from its source after as
    // many failures; other credentials from that source are not.
    let path = "acme/web/prod/x";
    for _ in 0..3 {
        assert_eq!(read(&s, path, Some("a.b.c"), None).await, 401);
    }
    assert_eq!(read(&s, path, Some("a.b.c"), None).await, 429);
    assert_eq!(read(&s, path, Some("root"), None).await, 404);
    expect_metrics(
        &s,
        &[
            r#"vern_auth_failures_total{scope="api"} 3"#,
            r#"vern_rate_limited_total{scope="lockout"}"#,
        ],
    )
    .await;
}

#[tokio::test]
async fn failures_lock_out_only_their_client_and_source_pair() {
    let dir = temp();
    let d = path_str(dir.path());
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    // Cedar sees the resolved address too: one forwarded address may not
    // read secrets.
    std::fs::write(
        policies.join("address.cedar"),
        r#"@id("test.no-reads-from-one-address")
forbid (principal, action == Vern::Action::"secret.read", resource)
when { context.source_ip == "203.0.113.66" };
"#,
    )
    .unwrap();
    let s = dev_server(
        &d,
        &[
            "--lockout-after",
            "3",
            "--trusted-proxy",
            "127.0.0.1/32",
            "--policy-dir",
            &path_str(&policies),
        ],
    );
    let (x, x_secret) = create(&s, "x").await;
    let (y, y_secret) = create(&s, "y").await;
    let a = Some("203.0.113.7");
    let b = Some("198.51.100.9");

    for _ in 0..3 {
        assert_eq!(token_from(&s, &x, "vern.cs.guess", a).await.0, 401);
    }
    let (status, retry, _) = token_from(&s, &x, &x_secret, a).await;
    assert_eq!(
        (status, retry.as_deref()),
        (429, Some("1")),
        "(X, A) is locked"
    );
    for (id, secret, from, status, what) in [
        (
            &x,
            &x_secret,
            b,
            200,
            "X from another address still gets tokens",
        ),
        (
            &y,
            &y_secret,
            a,
            200,
            "another client from the guessing address still gets tokens",
        ),
        (
            &x,
            &x_secret,
            None,
            200,
            "X from the proxy itself is yet another source",
        ),
        // The proxy may be a chain: hops it trusts are skipped, and
        // whatever the client wrote to the left of the last untrusted hop
        // is ignored.
        (
            &x,
            &x_secret,
            Some("198.51.100.9, 203.0.113.7, 127.0.0.1"),
            429,
            "the last untrusted hop is A",
        ),
        (
            &x,
            &x_secret,
            Some("203.0.113.7, 198.51.100.9"),
            200,
            "a forged entry left of B does not make it A",
        ),
    ] {
        assert_eq!(token_from(&s, id, secret, from).await.0, status, "{what}");
    }

    // Audit records name the forwarded address.
    let sources: Vec<(String, u64)> = audit_records(&s)
        .await
        .iter()
        .filter(|r| r["event"]["action"] == "token.issue")
        .map(|r| {
            (
                r["event"]["source"].as_str().unwrap().to_owned(),
                r["event"]["status"].as_u64().unwrap(),
            )
        })
        .collect();
    for expected in [
        ("203.0.113.7".to_owned(), 401),
        ("203.0.113.7".to_owned(), 429),
        ("198.51.100.9".to_owned(), 200),
        ("127.0.0.1".to_owned(), 200),
    ] {
        assert!(sources.contains(&expected), "{expected:?} in {sources:?}");
    }

    // And so does Cedar's context.source_ip.
    assert_eq!(
        write_secret(&s, "root", "acme/web/prod/db", json!({"k": "v"})).await,
        200
    );
    let token = token_from(&s, &y, &y_secret, None).await.2["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = "acme/web/prod/db";
    assert_eq!(
        read(&s, path, Some(&token), Some("203.0.113.67")).await,
        200
    );
    assert_eq!(
        read(&s, path, Some(&token), Some("203.0.113.66")).await,
        403,
        "denied by the policy on the forwarded address"
    );
}

#[tokio::test]
async fn forwarded_for_is_ignored_without_a_trusted_proxy() {
    let dir = temp();
    let d = path_str(dir.path());
    let s = dev_server(&d, &["--lockout-after", "3"]);
    let (x, x_secret) = create(&s, "x").await;
    for _ in 0..3 {
        let (status, _, _) = token_from(&s, &x, "vern.cs.guess", Some("203.0.113.7")).await;
        assert_eq!(status, 401);
    }
    assert_eq!(
        token_from(&s, &x, &x_secret, Some("198.51.100.9")).await.0,
        429,
        "a claimed address changes nothing: the source is the TCP peer"
    );
    let r = json_of(
        client()
            .get(s.url("/v1/audit/records?limit=1000"))
            .header("x-vault-token", "root")
            .header("x-forwarded-for", "198.51.100.9"),
    )
    .await;
    let records = r["data"]["records"].as_array().unwrap();
    assert!(!records.is_empty());
    assert!(
        records.iter().all(|r| r["event"]["source"] == "127.0.0.1"),
        "{records:?}"
    );
}

#[tokio::test]
async fn anonymous_floods_from_a_shared_address_never_block_valid_credentials() {
    let dir = temp();
    let d = path_str(dir.path());
    // Defaults, behind a proxy given by the environment (comma-separated).
    let s = Server::start(
        &dev_args(&d, "root"),
        &[("VERN_TRUSTED_PROXY", "10.0.0.0/8,127.0.0.1/32")],
    );
    let token = client_token(&s, service("acme", "app", &["secrets:read"])).await;
    let nat = Some("198.51.100.20");
    let path = "acme/web/prod/x";
    for i in 0..50 {
        let garbage = format!("garbage-{i}");
        let token = match i % 3 {
            0 => None,
            1 => Some(garbage.as_str()),
            _ => Some("a.b.c"),
        };
        let status = read(&s, path, token, nat).await;
        assert!([401, 403, 429].contains(&status), "{status}");
    }
    assert_eq!(
        read(&s, path, Some(&token), nat).await,
        404,
        "a valid token from the flooded address"
    );
    assert_eq!(read(&s, path, Some("root"), nat).await, 404);
    let (id, secret) = create(&s, "fresh").await;
    assert_eq!(
        token_from(&s, &id, &secret, nat).await.0,
        200,
        "a valid client secret from the flooded address"
    );
    drop(s);

    // With a small budget the flood itself is throttled (429), and valid
    // credentials from the same address still pass.
    let dir = temp();
    let d = path_str(dir.path());
    let s = dev_server(
        &d,
        &[
            "--limit-api-address",
            "1:10",
            "--limit-token-address",
            "1:5",
        ],
    );
    let token = client_token(&s, service("acme", "app", &["secrets:read"])).await;
    let (id, secret) = create(&s, "other").await;
    let mut statuses = Vec::new();
    for i in 0..30 {
        let garbage = format!("garbage-{i}");
        let t = (i % 2 == 0).then_some(garbage.as_str());
        statuses.push(read(&s, path, t, None).await);
    }
    assert!(statuses.iter().take(10).all(|s| *s == 403), "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(read(&s, path, Some(&token), None).await, 404);
    for i in 0..10 {
        token_status(&s, &format!("nobody-{i}"), "guess").await;
    }
    let (status, retry, _) = token_status(&s, "nobody-x", "guess").await;
    assert_eq!(status, 429, "failed client authentications are throttled");
    assert!(retry.is_some());
    assert_eq!(token_status(&s, &id, &secret).await.0, 200);
    let m = metrics(&s).await;
    for scope in ["api_address", "token_address"] {
        assert!(
            m.contains(&format!(r#"vern_rate_limited_total{{scope="{scope}"}}"#)),
            "{scope}: {m}"
        );
    }
}

#[tokio::test]
async fn bad_trusted_proxies_and_connection_limits_fail_start_up() {
    let dir = temp();
    let d = path_str(dir.path());
    let base = ["--dev", "--listen", "127.0.0.1:0", "--data-dir", &d];
    let fails = |extra: &[&str], envs: &[(&str, &str)], needle: &str| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let err = Server::try_start(&args, envs)
            .err()
            .unwrap_or_else(|| panic!("{extra:?} started"));
        assert!(err.contains(needle), "{extra:?}: {err}");
    };
    fails(
        &["--trusted-proxy", "10.0.0.1/8"],
        &[],
        "did you mean 10.0.0.0/8",
    );
    fails(
        &[],
        &[("VERN_TRUSTED_PROXY", "10.0.0.0/8,fd00::/200")],
        "invalid prefix length",
    );
    let file = dir.path().join("vern.toml");
    std::fs::write(&file, "trusted_proxies = [\"proxy.example\"]\n").unwrap();
    fails(
        &["--config", &path_str(&file)],
        &[],
        "not a network in CIDR notation",
    );
    fails(&["--max-connections", "0"], &[], "at least one");
    fails(&["--header-timeout", "0"], &[], "at least one second");
}
