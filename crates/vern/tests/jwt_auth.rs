//! The JWT auth method through the real binary: a test issuer (a P-256 key
//! made here, its JWKS served by a tiny HTTP server on loopback) signs
//! service-account-like JWTs; a valid one logs in as the role's service
//! and its token reads that environment's secrets only; every wrong JWT is
//! refused with Vault's error shape; every attempt is on the audit record;
//! a rotated issuer key is fetched; roles are managed within a tenant
//! operator's tenant only, through the API, `vern auth jwt role` and
//! `vern apply`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use common::*;
use p256::ecdsa::SigningKey;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use vern_authority::jws::{p256_public, sign_es256};

const ISSUER: &str = "https://kubernetes.default.svc";
const SUBJECT: &str = "system:serviceaccount:web:api";

/// An issuer's JWKS endpoint: answers every request with the current set
/// and counts the requests.
struct Jwks {
    url: String,
    set: Arc<Mutex<Value>>,
    hits: Arc<AtomicUsize>,
}

impl Jwks {
    async fn serve(keys: &[(&str, &SigningKey)]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/openid/v1/jwks", listener.local_addr().unwrap());
        let set = Arc::new(Mutex::new(key_set(keys)));
        let hits = Arc::new(AtomicUsize::new(0));
        let (set2, hits2) = (Arc::clone(&set), Arc::clone(&hits));
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                hits2.fetch_add(1, Ordering::SeqCst);
                let body = set2.lock().unwrap().to_string();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(answer.as_bytes()).await;
                    let _ = conn.shutdown().await;
                });
            }
        });
        Self { url, set, hits }
    }

    fn publish(&self, keys: &[(&str, &SigningKey)]) {
        *self.set.lock().unwrap() = key_set(keys);
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn key_set(keys: &[(&str, &SigningKey)]) -> Value {
    let keys: Vec<Value> = keys
        .iter()
        .map(|(kid, k)| p256_public(k).to_json(Some(kid)))
        .collect();
    json!({ "keys": keys })
}

fn new_key() -> SigningKey {
    SigningKey::random(&mut rand::rngs::OsRng)
}

/// The claims of a Kubernetes service-account token for audience `vern`.
fn claims() -> Value {
    let now = unix_now();
    json!({
        "iss": ISSUER,
        "sub": SUBJECT,
        "aud": ["vern"],
        "exp": now + 600,
        "iat": now,
        "nbf": now,
        "kubernetes.io": {"namespace": "web", "serviceaccount": {"name": "api"}},
    })
}

fn with(mut claims: Value, name: &str, value: Value) -> Value {
    claims[name] = value;
    claims
}

fn signed(claims: &Value, kid: &str, key: &SigningKey) -> String {
    sign_es256(
        &json!({"alg": "ES256", "kid": kid, "typ": "JWT"}),
        claims,
        key,
    )
}

/// The declaration of role `name` for `client_id` trusting `jwks`.
fn role(client_id: &str, jwks: &Jwks) -> Value {
    json!({
        "client_id": client_id,
        "bound_issuer": ISSUER,
        "jwks_url": jwks.url,
        "bound_audiences": "vern",
        "bound_subject": SUBJECT,
        "bound_claims": {"/kubernetes.io/namespace": "web"},
        "token_ttl": "10m",
    })
}

/// `POST /v1/auth/jwt/login`, with `rid` as the request id: status and
/// body.
async fn login(s: &Server, role: &str, jwt: &str, rid: &str) -> (u16, Value) {
    status_and_json(
        client()
            .post(s.url("/v1/auth/jwt/login"))
            .header("x-request-id", rid)
            .json(&json!({ "role": role, "jwt": jwt })),
    )
    .await
}

/// A dev server with a service of acme and one of globex, each with a
/// secret; returns the server and the two client ids.
async fn platform(dir: &str, extra: &[&str]) -> (Server, String, String) {
    let s = dev_server(dir, extra);
    let (acme, _) = create_client(&s, service("acme", "api", &SECRET_SCOPES)).await;
    let (globex, _) = create_client(&s, service("globex", "api", &SECRET_SCOPES)).await;
    for tenant in ["acme", "globex"] {
        let path = format!("{tenant}/web/prod/db");
        assert_eq!(
            write_secret(&s, "root", &path, json!({"pw": tenant})).await,
            200
        );
    }
    (s, acme, globex)
}

#[tokio::test]
async fn a_valid_jwt_logs_in_as_the_roles_service_and_reads_only_its_secrets() {
    let dir = temp();
    let (s, acme, _) = platform(&path_str(dir.path()), &[]).await;
    let key = new_key();
    let jwks = Jwks::serve(&[("k1", &key)]).await;
    let (status, written) =
        post_as(&s, "root", "/v1/auth/jwt/role/k8s-web", &role(&acme, &jwks)).await;
    assert_eq!(status, 200, "{written}");
    assert_eq!(written["data"]["token_ttl"], 600);
    assert_eq!(written["data"]["bound_audiences"], json!(["vern"]));

    let (status, body) = login(&s, "k8s-web", &signed(&claims(), "k1", &key), "jwt-ok").await;
    assert_eq!(status, 200, "{body}");
    let auth = &body["auth"];
    let token = auth["client_token"].as_str().unwrap();
    assert!(auth["accessor"].as_str().is_some_and(|a| !a.is_empty()));
    assert_eq!(auth["lease_duration"], 600);
    assert_eq!(auth["renewable"], false);
    assert_eq!(auth["metadata"]["tenant"], "acme");
    assert_eq!(auth["metadata"]["environment"], "prod");
    assert_eq!(auth["token_policies"], auth["policies"]);

    let read = |path: &str| {
        status_of(
            client()
                .get(s.url(&format!("/v1/secret/data/{path}")))
                .header("x-vault-token", token),
        )
    };
    assert_eq!(read("acme/web/prod/db").await, 200);
    // Another tenant's secret is not even shown to exist, nor writable.
    assert_eq!(read("globex/web/prod/db").await, 404);
    assert_eq!(
        write_secret(&s, token, "globex/web/prod/db", json!({"pw": "x"})).await,
        403
    );
    // The token is the client's own, and says how it was obtained.
    let me = get_as(&s, token, "/v1/auth/token/lookup-self").await;
    assert_eq!(me["data"]["entity_id"], acme.as_str(), "{me}");
    assert_eq!(me["data"]["display_name"], "jwt", "{me}");
    assert_eq!(jwks.hits(), 1, "the key set is cached");
}

#[tokio::test]
async fn every_wrong_jwt_is_refused_and_every_attempt_is_recorded() {
    let dir = temp();
    // Lockout would start refusing this one source after five failures;
    // the cases here are about the checks, so it is off.
    let (s, acme, _) = platform(&path_str(dir.path()), &["--lockout-after", "0"]).await;
    let key = new_key();
    let other = new_key();
    let jwks = Jwks::serve(&[("k1", &key)]).await;
    let (status, _) = post_as(&s, "root", "/v1/auth/jwt/role/k8s-web", &role(&acme, &jwks)).await;
    assert_eq!(status, 200);

    let header_and_claims = |header: &Value, claims: &Value| {
        format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        )
    };
    let alg_none = format!(
        "{}.",
        header_and_claims(&json!({"alg": "none", "kid": "k1"}), &claims())
    ) + "AA";
    // HS256 keyed with the issuer's public key: the algorithm confusion
    // attack on verifiers that take the algorithm from the token.
    let hs256 = {
        use hmac::Mac as _;
        let input = header_and_claims(&json!({"alg": "HS256", "kid": "k1"}), &claims());
        let public = jwks.set.lock().unwrap()["keys"][0].to_string();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(public.as_bytes()).unwrap();
        mac.update(input.as_bytes());
        format!("{input}.{}", B64.encode(mac.finalize().into_bytes()))
    };
    let n = unix_now();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "issuer",
            signed(
                &with(claims(), "iss", json!("https://evil.example")),
                "k1",
                &key,
            ),
            "issuer",
        ),
        (
            "audience",
            signed(&with(claims(), "aud", json!("vault")), "k1", &key),
            "audience",
        ),
        (
            "subject",
            signed(
                &with(claims(), "sub", json!("system:serviceaccount:web:db")),
                "k1",
                &key,
            ),
            "subject",
        ),
        (
            "bound-claim",
            signed(
                &with(claims(), "kubernetes.io", json!({"namespace": "db"})),
                "k1",
                &key,
            ),
            "`/kubernetes.io/namespace`",
        ),
        (
            "signature",
            signed(&claims(), "k1", &other),
            "signature does not verify",
        ),
        (
            "expired",
            signed(&with(claims(), "exp", json!(n - 3600)), "k1", &key),
            "expired",
        ),
        (
            "not-yet-valid",
            signed(&with(claims(), "nbf", json!(n + 3600)), "k1", &key),
            "not valid yet",
        ),
        ("alg-none", alg_none, "`none` is not accepted"),
        ("hs256", hs256, "`HS256` is not accepted"),
        (
            "unknown-kid",
            signed(&claims(), "k2", &other),
            "no key `k2`",
        ),
        ("garbage", "not.a.jwt".to_owned(), "malformed"),
    ];
    for (name, jwt, want) in &cases {
        let (status, body) = login(&s, "k8s-web", jwt, &format!("jwt-{name}")).await;
        assert_eq!(status, 400, "{name}: {body}");
        let message = body["errors"][0].as_str().unwrap_or_default();
        assert!(message.contains(want), "{name}: {body}");
        assert!(
            !message.contains("evil") && !message.contains(SUBJECT),
            "{name}: {body}"
        );
        assert!(body.get("auth").is_none(), "{name}");
    }
    let (status, body) = login(
        &s,
        "no-such-role",
        &signed(&claims(), "k1", &key),
        "jwt-role",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["errors"][0].as_str().unwrap().contains("no-such-role"),
        "{body}"
    );
    let (status, body) = status_and_json(
        client()
            .post(s.url("/v1/auth/jwt/login"))
            .header("x-request-id", "jwt-missing")
            .json(&json!({ "role": "k8s-web" })),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = login(&s, "k8s-web", &signed(&claims(), "k1", &key), "jwt-good").await;
    assert_eq!(status, 200);

    // One record per attempt, with the status the caller got, the JWT
    // and the issued token only as HMACs.
    let good_jwt = signed(&claims(), "k1", &key);
    for (name, jwt, _) in &cases {
        let records = records_of(&s, &format!("jwt-{name}")).await;
        assert_eq!(records.len(), 1, "{name}");
        let event = &records[0]["event"];
        assert_eq!(event["status"], 400, "{name}");
        assert_eq!(event["operation"], "POST /v1/auth/jwt/login");
        assert_eq!(event["resource"], "jwt_role:k8s-web", "{name}");
        assert!(event["hmacs"]["jwt"].is_string(), "{name}");
        assert!(!records[0].to_string().contains(jwt.as_str()), "{name}");
    }
    let records = records_of(&s, "jwt-role").await;
    assert_eq!(records[0]["event"]["status"], 400);
    let records = records_of(&s, "jwt-good").await;
    let event = &records[0]["event"];
    assert_eq!(event["status"], 200);
    assert_eq!(event["resource_tenant"], "acme");
    assert!(event["hmacs"]["issued_token"].is_string());
    assert!(!records[0].to_string().contains(&good_jwt));
    // The tenant's own auditors see the logins to its services.
    let (auditor, secret) = create_client(&s, service("acme", "auditor", &["audit:read"])).await;
    let token = access_token(&s, &auditor, &secret).await;
    let mine = get_as(&s, &token, "/v1/audit/records?tenant=acme&limit=1000").await;
    let seen = mine["data"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["event"]["client_request_id"] == "jwt-good");
    assert!(seen, "{mine}");
}

#[tokio::test]
async fn a_deleted_client_and_an_unreachable_issuer_refuse_logins() {
    let dir = temp();
    let (s, acme, _) = platform(&path_str(dir.path()), &[]).await;
    let key = new_key();
    let jwks = Jwks::serve(&[("k1", &key)]).await;
    post_as(&s, "root", "/v1/auth/jwt/role/k8s-web", &role(&acme, &jwks)).await;
    let jwt = signed(&claims(), "k1", &key);
    let (status, body) = login(&s, "k8s-web", &jwt, "before").await;
    assert_eq!(status, 200, "{body}");
    let token = body["auth"]["client_token"].as_str().unwrap().to_owned();

    let deleted = status_of(
        client()
            .delete(s.url(&format!("/v1/auth/clients/{acme}")))
            .header("x-vault-token", "root"),
    )
    .await;
    assert_eq!(deleted, 204);
    let (status, body) = login(&s, "k8s-web", &jwt, "after").await;
    assert_eq!(status, 400, "{body}");
    assert!(body["errors"][0]
        .as_str()
        .unwrap()
        .contains("client no longer exists"));
    // The token of the earlier login died with its client.
    let read = status_of(
        client()
            .get(s.url("/v1/secret/data/acme/web/prod/db"))
            .header("x-vault-token", &token),
    )
    .await;
    assert_eq!(read, 401);

    // An issuer whose JWKS cannot be fetched: fail closed, and say so.
    let (acme2, _) = create_client(&s, service("acme", "api2", &SECRET_SCOPES)).await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut unreachable = role(&acme2, &jwks);
    unreachable["jwks_url"] = json!(format!("http://{closed}/jwks"));
    let (status, _) = post_as(&s, "root", "/v1/auth/jwt/role/gone", &unreachable).await;
    assert_eq!(status, 200);
    let (status, body) = login(&s, "gone", &jwt, "gone").await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["errors"][0]
            .as_str()
            .unwrap()
            .contains("could not be fetched"),
        "{body}"
    );
}

#[tokio::test]
async fn repeated_refusals_lock_out_that_source_for_the_roles_client() {
    let dir = temp();
    let (s, acme, _) = platform(&path_str(dir.path()), &[]).await;
    let key = new_key();
    let jwks = Jwks::serve(&[("k1", &key)]).await;
    post_as(&s, "root", "/v1/auth/jwt/role/k8s-web", &role(&acme, &jwks)).await;
    // As at the token endpoint: five failures in a row lock the pair
    // (the role's client, this source), valid credentials included, with
    // Retry-After; a made-up role is limited under its own name.
    let expired = signed(&with(claims(), "exp", json!(unix_now() - 3600)), "k1", &key);
    for i in 0..5 {
        let (status, _) = login(&s, "k8s-web", &expired, &format!("lock-{i}")).await;
        assert_eq!(status, 400);
    }
    let r = client()
        .post(s.url("/v1/auth/jwt/login"))
        .json(&json!({"role": "k8s-web", "jwt": signed(&claims(), "k1", &key)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let (status, _) = login(&s, "other-role", &expired, "lock-other").await;
    assert_eq!(status, 400, "another name is another pair");
}

#[tokio::test]
async fn a_rotated_issuer_key_is_fetched_when_a_jwt_names_it() {
    let dir = temp();
    // The polling below fails several times in a row from one source, which
    // the lockout would (rightly) start refusing; it is not what is tested.
    let (s, acme, _) = platform(&path_str(dir.path()), &["--lockout-after", "0"]).await;
    let (old, new) = (new_key(), new_key());
    let jwks = Jwks::serve(&[("k1", &old)]).await;
    post_as(&s, "root", "/v1/auth/jwt/role/k8s-web", &role(&acme, &jwks)).await;
    let (status, _) = login(&s, "k8s-web", &signed(&claims(), "k1", &old), "r1").await;
    assert_eq!(status, 200);
    assert_eq!(jwks.hits(), 1);

    // The issuer rotates: a new key with a new kid, the old one kept.
    jwks.publish(&[("k1", &old), ("k2", &new)]);
    // Vern refetches at most every few seconds per URL, so the first
    // attempts may still be refused; poll until the new key is known.
    let mut attempt = 0;
    eventually(
        Duration::from_secs(30),
        "the rotated key to be fetched",
        async || {
            attempt += 1;
            let rid = format!("rotate-{attempt}");
            let (status, body) = login(&s, "k8s-web", &signed(&claims(), "k2", &new), &rid).await;
            if status != 200 {
                assert!(
                    body["errors"][0].as_str().unwrap().contains("no key `k2`"),
                    "{body}"
                );
            }
            status == 200
        },
    )
    .await;
    assert_eq!(jwks.hits(), 2, "one refetch, however many attempts");
    let (status, _) = login(&s, "k8s-web", &signed(&claims(), "k1", &old), "r-old").await;
    assert_eq!(
        status, 200,
        "the old key still verifies while it is published"
    );
}

#[tokio::test]
async fn tenant_operators_manage_roles_of_their_own_tenants_services_only() {
    let dir = temp();
    let (s, acme, globex) = platform(&path_str(dir.path()), &[]).await;
    let key = new_key();
    let jwks = Jwks::serve(&[("k1", &key)]).await;
    let admin = client_token(
        &s,
        json!({"tenant": "acme", "name": "admin", "roles": ["tenant-admin"]}),
    )
    .await;
    let (status, body) = post_as(
        &s,
        &admin,
        "/v1/auth/jwt/role/acme-web",
        &role(&acme, &jwks),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The escalation: a role that would hand out another tenant's tokens.
    let (status, body) = post_as(&s, &admin, "/v1/auth/jwt/role/grab", &role(&globex, &jwks)).await;
    assert_eq!(status, 403, "{body}");
    // A client of another tenant that does not exist gets the same answer.
    let mut ghost = role("svc.globex.web.prod.ghost", &jwks);
    let (status, ghost_body) = post_as(&s, &admin, "/v1/auth/jwt/role/grab", &ghost).await;
    assert_eq!(status, 403);
    assert_eq!(
        body["errors"][0].as_str().unwrap().replace(&globex, "ID"),
        ghost_body["errors"][0]
            .as_str()
            .unwrap()
            .replace("svc.globex.web.prod.ghost", "ID")
    );
    ghost["client_id"] = json!("svc.acme.web.prod.ghost");
    let (status, body) = post_as(&s, &admin, "/v1/auth/jwt/role/grab", &ghost).await;
    assert_eq!(status, 400);
    assert!(
        body["errors"][0]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{body}"
    );

    let (status, _) = post_as(
        &s,
        "root",
        "/v1/auth/jwt/role/globex-web",
        &role(&globex, &jwks),
    )
    .await;
    assert_eq!(status, 200);
    // Another tenant's role is invisible, cannot be taken over or deleted.
    let read = |who: &str, name: &str| {
        status_of(
            client()
                .get(s.url(&format!("/v1/auth/jwt/role/{name}")))
                .header("x-vault-token", who),
        )
    };
    assert_eq!(read(&admin, "acme-web").await, 200);
    assert_eq!(read(&admin, "globex-web").await, 404);
    assert_eq!(read(&admin, "nothing").await, 404);
    let (status, _) = post_as(
        &s,
        &admin,
        "/v1/auth/jwt/role/globex-web",
        &role(&acme, &jwks),
    )
    .await;
    assert_eq!(status, 403);
    let delete = status_of(
        client()
            .delete(s.url("/v1/auth/jwt/role/globex-web"))
            .header("x-vault-token", &admin),
    )
    .await;
    assert_eq!(delete, 404);
    let list = |who: &str| {
        json_of(
            client()
                .request(
                    reqwest::Method::from_bytes(b"LIST").unwrap(),
                    s.url("/v1/auth/jwt/role"),
                )
                .header("x-vault-token", who),
        )
    };
    assert_eq!(list(&admin).await["data"]["keys"], json!(["acme-web"]));
    assert_eq!(
        list("root").await["data"]["keys"],
        json!(["acme-web", "globex-web"])
    );
    let listed = json_of(
        client()
            .get(s.url("/v1/auth/jwt/role?list=true"))
            .header("x-vault-token", &admin),
    )
    .await;
    assert_eq!(listed["data"]["keys"], json!(["acme-web"]));
    // A service's token manages nothing.
    let (svc, secret) = create_client(&s, service("acme", "plain", &["secrets:read"])).await;
    let svc = access_token(&s, &svc, &secret).await;
    let (status, _) = post_as(&s, &svc, "/v1/auth/jwt/role/x", &role(&acme, &jwks)).await;
    assert_eq!(status, 403);

    // Bad declarations are refused with their reason, whoever asks.
    for (field, value, want) in [
        ("bound_audiences", json!([]), "bound_audiences is required"),
        (
            "jwks_url",
            json!("http://issuer.example/jwks"),
            "must use https",
        ),
        (
            "jwt_supported_algs",
            json!("RS256,HS256"),
            "`HS256` is not supported",
        ),
        (
            "token_policies",
            json!(["default"]),
            "unknown field `token_policies`",
        ),
    ] {
        let mut bad = role(&acme, &jwks);
        bad[field] = value;
        let (status, body) = post_as(&s, "root", "/v1/auth/jwt/role/bad", &bad).await;
        assert_eq!(status, 400, "{field}: {body}");
        assert!(
            body["errors"][0].as_str().unwrap().contains(want),
            "{field}: {body}"
        );
    }
    assert_eq!(read("root", "bad").await, 404);
    let delete = status_of(
        client()
            .delete(s.url("/v1/auth/jwt/role/acme-web"))
            .header("x-vault-token", &admin),
    )
    .await;
    assert_eq!(delete, 204);
    assert_eq!(read("root", "acme-web").await, 404);
}

#[tokio::test]
async fn the_cli_and_apply_files_declare_roles() {
    let dir = temp();
    let d = path_str(dir.path());
    let (s, acme, _) = platform(&d, &[]).await;
    let key = new_key();
    let jwks = Jwks::serve(&[("k1", &key)]).await;
    let addr = s.http();
    let env = [("VERN_ADDR", addr.as_str()), ("VERN_TOKEN", "root")];

    let written = ok_json(&vern(
        &[
            "auth",
            "jwt",
            "role",
            "write",
            "k8s-web",
            "--client-id",
            &acme,
            "--bound-issuer",
            ISSUER,
            "--jwks-url",
            &jwks.url,
            "--bound-audience",
            "vern",
            "--bound-subject",
            SUBJECT,
            "--bound-claim",
            "/kubernetes.io/namespace=web",
            "--alg",
            "ES256",
            "--token-ttl",
            "5m",
            "--expiration-leeway",
            "-1",
            "-o",
            "json",
        ],
        &env,
    ));
    assert_eq!(written["token_ttl"], 300);
    assert_eq!(written["expiration_leeway"], 0);
    assert_eq!(written["jwt_supported_algs"], json!(["ES256"]));
    let (status, body) = login(&s, "k8s-web", &signed(&claims(), "k1", &key), "cli").await;
    assert_eq!(status, 200, "{body}");
    let read = ok_json(&vern(
        &["auth", "jwt", "role", "read", "k8s-web", "-o", "json"],
        &env,
    ));
    assert_eq!(read["client_id"], acme.as_str());
    let table = vern(&["auth", "jwt", "role", "read", "k8s-web"], &env);
    assert!(text(&table.stdout).contains(SUBJECT));
    let listed = ok_json(&vern(&["auth", "jwt", "role", "list", "-o", "json"], &env));
    assert_eq!(listed["keys"], json!(["k8s-web"]));
    let refused = vern(
        &[
            "auth",
            "jwt",
            "role",
            "write",
            "bad",
            "--client-id",
            &acme,
            "--bound-issuer",
            ISSUER,
            "--jwks-url",
            "http://issuer.example/jwks",
            "--bound-audience",
            "vern",
        ],
        &env,
    );
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("must use https"),
        "{}",
        text(&refused.stderr)
    );
    let deleted = vern(&["auth", "jwt", "role", "delete", "k8s-web"], &env);
    assert!(deleted.status.success(), "{}", text(&deleted.stderr));
    let empty = ok_json(&vern(&["auth", "jwt", "role", "list", "-o", "json"], &env));
    assert_eq!(empty["keys"], json!([]));

    // An apply file declares a new service and its role together.
    let file = dir.path().join("platform.yaml");
    let platform = |audiences: &str| {
        format!(
            "clients:\n  - {{tenant: acme, project: web, environment: prod, name: worker, scopes: [secrets:read]}}\n\
             auth:\n  jwt:\n    roles:\n      - name: k8s-worker\n        client_id: svc.acme.web.prod.worker\n        bound_issuer: {ISSUER}\n        jwks_url: {}\n        bound_audiences: {audiences}\n        bound_subject: {SUBJECT}\n",
            jwks.url
        )
    };
    // A bad role: a clear error and nothing written, the client neither.
    std::fs::write(&file, platform("[]")).unwrap();
    let out = vern(&["apply", "-f", &path_str(&file)], &env);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("k8s-worker") && err.contains("bound_audiences"),
        "{err}"
    );
    let missing = status_of(
        client()
            .get(s.url("/v1/auth/clients/svc.acme.web.prod.worker"))
            .header("x-vault-token", "root"),
    )
    .await;
    assert_eq!(missing, 404);

    std::fs::write(&file, platform("[vern]")).unwrap();
    let out = vern(&["apply", "-f", &path_str(&file)], &env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("+ svc.acme.web.prod.worker") && shown.contains("+ JWT role k8s-worker"),
        "{shown}"
    );
    let (status, body) = login(&s, "k8s-worker", &signed(&claims(), "k1", &key), "apply").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["auth"]["metadata"]["client_id"],
        "svc.acme.web.prod.worker"
    );
    let again = ok_json(&vern(
        &["apply", "-f", &path_str(&file), "-o", "json"],
        &env,
    ));
    assert_eq!(again["jwt_roles"]["unchanged"], json!(["k8s-worker"]));
}
