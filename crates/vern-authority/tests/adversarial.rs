//! The token authority under attack: every token and proof check has a
//! case that must be refused, next to the case that must pass.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use common::{
    acme_service, authority, clock_at, create_with_secret, request, secret_credentials as creds,
    sqlite, unsealed, verify_bearer, without_nonce, Env, START,
};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use vern_authority::jws::{ed25519_public, p256_public, sign_ed25519, sign_es256};
use vern_authority::{
    AuthError, Authority, AuthorityConfig, ClientCredentials, ClientSpec, DpopCheck, NonceRule,
    Presented, TokenRequest, JWT_BEARER_ASSERTION,
};
use vern_crypto::SecretBytes;

const ISSUER: &str = "https://vern.test:8200";

async fn env() -> Env {
    authority(without_nonce(ISSUER)).await
}

fn service(name: &str) -> ClientSpec {
    acme_service(name, &["secrets:read", "secrets:write"])
}

async fn secret_client(e: &Env, name: &str) -> (String, SecretBytes) {
    create_with_secret(e, &service(name)).await
}

/// Authentication with the client assertion `assertion`.
fn asserted(client_id: Option<String>, assertion: String) -> ClientCredentials {
    ClientCredentials::Assertion {
        client_id,
        assertion,
    }
}

/// Registers a `private_key_jwt` service `name` for the Ed25519 key made
/// from `seed`; returns its id and the key.
async fn keyed_client(e: &Env, name: &str, seed: u8) -> (String, ed25519_dalek::SigningKey) {
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let mut spec = service(name);
    spec.jwks = vec![ed25519_public(&key).to_json(None)];
    let created = e.auth.create_client(&e.barrier, &spec).await.unwrap();
    assert!(created.secret.is_none(), "a keyed client gets no secret");
    (created.record.client_id, key)
}

async fn bearer_token(e: &Env) -> String {
    let (id, secret) = secret_client(e, "api").await;
    let req = TokenRequest {
        scope: Some("secrets:read"),
        ..request(creds(&id, &secret))
    };
    e.auth.issue(&e.barrier, &req).await.unwrap().access_token
}

fn parts(token: &str) -> (Value, Value, String) {
    let p: Vec<&str> = token.split('.').collect();
    let h = serde_json::from_slice(&B64.decode(p[0]).unwrap()).unwrap();
    let c = serde_json::from_slice(&B64.decode(p[1]).unwrap()).unwrap();
    (h, c, p[2].to_owned())
}

fn assemble(h: &Value, c: &Value, sig: &str) -> String {
    format!(
        "{}.{}.{sig}",
        B64.encode(h.to_string()),
        B64.encode(c.to_string())
    )
}

#[tokio::test]
async fn a_valid_token_carries_rfc_9068_claims_and_verifies() {
    let e = env().await;
    let token = bearer_token(&e).await;
    let (h, c, _) = parts(&token);
    assert_eq!(
        (h["alg"].as_str(), h["typ"].as_str()),
        (Some("EdDSA"), Some("at+jwt"))
    );
    for claim in [
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "jti",
        "client_id",
        "scope",
        "tenant",
        "project",
        "environment",
    ] {
        assert!(!c[claim].is_null(), "missing {claim}");
    }
    assert_eq!(
        c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(),
        300,
        "5 minutes by default"
    );
    let claims = verify_bearer(&e, &token).await.unwrap();
    assert_eq!(claims.scopes, ["secrets:read"]);
    // The JWKS holds the signing key.
    let jwks = e.auth.jwks(&e.barrier).await.unwrap();
    assert_eq!(jwks["keys"][0]["kid"], h["kid"]);
    assert!(jwks["keys"][0].get("d").is_none());
}

#[tokio::test]
async fn forged_and_altered_tokens_are_refused() {
    let e = env().await;
    let token = bearer_token(&e).await;
    let (h, c, sig) = parts(&token);

    // alg: none, with and without a signature.
    let mut none = h.clone();
    none["alg"] = json!("none");
    assert!(verify_bearer(&e, &assemble(&none, &c, "")).await.is_err());
    assert!(matches!(
        verify_bearer(&e, &assemble(&none, &c, &sig)).await,
        Err(AuthError::Algorithm(_))
    ));

    // HS256 keyed with the public key (the classic key-confusion attack).
    let jwks = e.auth.jwks(&e.barrier).await.unwrap();
    let public = B64.decode(jwks["keys"][0]["x"].as_str().unwrap()).unwrap();
    let mut hs = h.clone();
    hs["alg"] = json!("HS256");
    let input = format!(
        "{}.{}",
        B64.encode(hs.to_string()),
        B64.encode(c.to_string())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(&public).unwrap();
    mac.update(input.as_bytes());
    let forged = format!("{input}.{}", B64.encode(mac.finalize().into_bytes()));
    assert!(matches!(
        verify_bearer(&e, &forged).await,
        Err(AuthError::Algorithm(_))
    ));

    // A tampered payload.
    let mut more = c.clone();
    more["scope"] = json!("secrets:read secrets:write admin");
    assert!(matches!(
        verify_bearer(&e, &assemble(&h, &more, &sig)).await,
        Err(AuthError::Signature)
    ));
    let mut other_tenant = c.clone();
    other_tenant["tenant"] = json!("globex");
    assert!(matches!(
        verify_bearer(&e, &assemble(&h, &other_tenant, &sig)).await,
        Err(AuthError::Signature)
    ));

    // Wrong typ, unknown kid, missing kid.
    let mut typ = h.clone();
    typ["typ"] = json!("JWT");
    assert!(
        matches!(verify_bearer(&e, &assemble(&typ, &c, &sig)).await, Err(AuthError::Claim(m)) if m.contains("typ"))
    );
    let mut kid = h.clone();
    kid["kid"] = json!("not-a-key");
    assert!(matches!(
        verify_bearer(&e, &assemble(&kid, &c, &sig)).await,
        Err(AuthError::UnknownKey(_))
    ));
    let mut no_kid = h.clone();
    no_kid.as_object_mut().unwrap().remove("kid");
    assert!(verify_bearer(&e, &assemble(&no_kid, &c, &sig))
        .await
        .is_err());

    // Garbage never panics.
    for junk in ["", "x", "a.b.c", "....", &"A".repeat(10_000)] {
        assert!(verify_bearer(&e, junk).await.is_err());
    }
}

#[tokio::test]
async fn time_issuer_and_audience_are_always_checked() {
    let e = env().await;
    let token = bearer_token(&e).await;

    // Another issuer or audience sharing the same keys refuses it.
    let mut other = AuthorityConfig::new("https://elsewhere.test");
    other.audience = ISSUER.to_owned();
    let foreign = Authority::new(other, e.clock.clone());
    assert!(
        matches!(foreign.verify_access(&e.barrier, &token, Presented::Bearer).await, Err(AuthError::Claim(m)) if m.contains("iss"))
    );
    let mut aud = AuthorityConfig::new(ISSUER);
    aud.audience = "https://another-service.test".to_owned();
    let other_aud = Authority::new(aud, e.clock.clone());
    assert!(
        matches!(other_aud.verify_access(&e.barrier, &token, Presented::Bearer).await, Err(AuthError::Claim(m)) if m.contains("aud"))
    );

    // Not yet valid: issued by an authority whose clock runs ahead.
    let future_auth = Authority::new(without_nonce(ISSUER), clock_at(START + 600));
    let (id, secret) = secret_client(&e, "future").await;
    let req = request(creds(&id, &secret));
    let future = future_auth
        .issue(&e.barrier, &req)
        .await
        .unwrap()
        .access_token;
    assert!(matches!(
        verify_bearer(&e, &future).await,
        Err(AuthError::NotYetValid)
    ));

    // Expired, after the leeway.
    e.clock.advance(Duration::from_secs(300 + 29));
    verify_bearer(&e, &token).await.unwrap();
    e.clock.advance(Duration::from_secs(2));
    assert!(matches!(
        verify_bearer(&e, &token).await,
        Err(AuthError::Expired)
    ));
}

#[tokio::test]
async fn client_authentication_and_scopes() {
    let e = env().await;
    let (id, secret) = secret_client(&e, "svc").await;
    assert!(secret.expose().len() >= 43, "at least 256 bits");
    let wrong = SecretBytes::new(b"vern.cs.wrong".to_vec());
    let req = |c: ClientCredentials, scope: Option<&'static str>| TokenRequest {
        credentials: c,
        scope,
        dpop: None,
    };
    assert!(matches!(
        e.auth
            .issue(&e.barrier, &req(creds(&id, &wrong), None))
            .await,
        Err(AuthError::InvalidClient)
    ));
    assert!(matches!(
        e.auth
            .issue(
                &e.barrier,
                &req(creds("svc.acme.web.prod.nobody", &secret), None)
            )
            .await,
        Err(AuthError::InvalidClient)
    ));
    assert!(
        matches!(e.auth.issue(&e.barrier, &req(creds(&id, &secret), Some("secrets:read admin"))).await, Err(AuthError::InvalidScope(s)) if s == "admin")
    );
    let t = e
        .auth
        .issue(&e.barrier, &req(creds(&id, &secret), None))
        .await
        .unwrap();
    assert_eq!(t.scope, "secrets:read secrets:write");
    assert!(matches!(
        e.auth.create_client(&e.barrier, &service("svc")).await,
        Err(AuthError::Exists(_))
    ));
    // The secret is stored only as an HMAC.
    let raw = e
        .store
        .get(&vern_store::Key::new(format!("authority/clients/{id}")).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(!raw
        .value
        .windows(secret.len())
        .any(|w| w == secret.expose()));
}

fn assertion(
    client_id: &str,
    key: &ed25519_dalek::SigningKey,
    aud: &str,
    exp: u64,
    jti: &str,
) -> String {
    sign_ed25519(
        &json!({"alg": "EdDSA", "typ": "JWT"}),
        &json!({"iss": client_id, "sub": client_id, "aud": aud, "exp": exp, "iat": START, "jti": jti}),
        key,
    )
}

#[tokio::test]
async fn private_key_jwt_assertions_are_checked_and_never_replayed() {
    let e = env().await;
    let (id, key) = keyed_client(&e, "signer", 3).await;
    let endpoint = format!("{ISSUER}/oauth2/token");
    let e = &e;
    let issue = |a: String| {
        let req = request(asserted(None, a));
        async move { e.auth.issue(&e.barrier, &req).await }
    };
    issue(assertion(&id, &key, &endpoint, START + 60, "j1"))
        .await
        .unwrap();
    assert!(
        matches!(
            issue(assertion(&id, &key, &endpoint, START + 60, "j1")).await,
            Err(AuthError::InvalidClient)
        ),
        "replayed jti"
    );
    assert!(
        matches!(
            issue(assertion(
                &id,
                &key,
                "https://other/token",
                START + 60,
                "j2"
            ))
            .await,
            Err(AuthError::InvalidClient)
        ),
        "wrong aud"
    );
    assert!(
        matches!(
            issue(assertion(&id, &key, &endpoint, START - 100, "j3")).await,
            Err(AuthError::InvalidClient)
        ),
        "expired"
    );
    let other = ed25519_dalek::SigningKey::from_bytes(&[4; 32]);
    assert!(
        matches!(
            issue(assertion(&id, &other, &endpoint, START + 60, "j4")).await,
            Err(AuthError::InvalidClient)
        ),
        "wrong key"
    );
    let _ = JWT_BEARER_ASSERTION;
}

struct Prover {
    key: p256::ecdsa::SigningKey,
}

impl Prover {
    fn new(seed: u8) -> Self {
        Self {
            key: p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap(),
        }
    }

    fn jkt(&self) -> String {
        p256_public(&self.key).thumbprint()
    }

    fn proof(
        &self,
        htm: &str,
        htu: &str,
        iat: u64,
        jti: &str,
        token: Option<&str>,
        extra: &[(&str, Value)],
    ) -> String {
        let mut claims = json!({"htm": htm, "htu": htu, "iat": iat, "jti": jti});
        if let Some(t) = token {
            claims["ath"] = json!(B64.encode(Sha256::digest(t.as_bytes())));
        }
        for (k, v) in extra {
            claims[*k] = v.clone();
        }
        let header =
            json!({"alg": "ES256", "typ": "dpop+jwt", "jwk": p256_public(&self.key).to_json(None)});
        sign_es256(&header, &claims, &self.key)
    }
}

fn check<'a>(proofs: &'a [&'a str], method: &'a str, url: &'a str) -> DpopCheck<'a> {
    DpopCheck {
        proofs,
        method,
        url,
        access_token: None,
        expected_jkt: None,
        nonce: NonceRule::NotRequired,
    }
}

#[tokio::test]
async fn dpop_binding_and_every_proof_check() {
    let e = env().await;
    let (id, secret) = secret_client(&e, "bound").await;
    let prover = Prover::new(5);
    let token_url = format!("{ISSUER}/oauth2/token");
    let api = format!("{ISSUER}/v1/secret/data/acme/web/prod/db");

    let p = prover.proof("POST", &token_url, START, "t1", None, &[]);
    let proofs = [p.as_str()];
    let req = TokenRequest {
        dpop: Some(check(&proofs, "POST", &token_url)),
        ..request(creds(&id, &secret))
    };
    let issued = e.auth.issue(&e.barrier, &req).await.unwrap();
    assert_eq!(issued.token_type, "DPoP");
    let token = issued.access_token;
    assert_eq!(parts(&token).1["cnf"]["jkt"], prover.jkt());

    let e = &e;
    let use_api = |proofs: Vec<String>, method: &'static str, url: String| {
        let token = token.clone();
        async move {
            let refs: Vec<&str> = proofs.iter().map(String::as_str).collect();
            let c = check(&refs, method, &url);
            e.auth
                .verify_access(&e.barrier, &token, Presented::Dpop(c))
                .await
                .map(|_| ())
        }
    };
    let good = |jti: &str| prover.proof("GET", &api, START, jti, Some(&token), &[]);

    use_api(vec![good("a1")], "GET", api.clone()).await.unwrap();
    // A bound token as a bearer token.
    assert!(matches!(
        e.auth
            .verify_access(&e.barrier, &token, Presented::Bearer)
            .await,
        Err(AuthError::Dpop(_))
    ));
    let expect_dpop = |r: Result<(), AuthError>, needle: &str| match r {
        Err(AuthError::Dpop(m)) => assert!(m.contains(needle), "{m} should mention {needle}"),
        other => panic!("expected a DPoP failure about {needle}, got {other:?}"),
    };
    expect_dpop(use_api(vec![], "GET", api.clone()).await, "missing");
    expect_dpop(
        use_api(vec![good("a2"), good("a3")], "GET", api.clone()).await,
        "more than one",
    );
    expect_dpop(
        use_api(vec![good("a1")], "GET", api.clone()).await,
        "replay",
    );
    expect_dpop(use_api(vec![good("a4")], "POST", api.clone()).await, "htm");
    expect_dpop(
        use_api(
            vec![good("a5")],
            "GET",
            format!("{ISSUER}/v1/secret/data/globex/x/y/z"),
        )
        .await,
        "htu",
    );
    use_api(
        vec![prover.proof(
            "GET",
            &format!("{api}?version=2#frag"),
            START,
            "a6",
            Some(&token),
            &[],
        )],
        "GET",
        api.clone(),
    )
    .await
    .unwrap();
    expect_dpop(
        use_api(
            vec![prover.proof("GET", &api, START - 120, "a7", Some(&token), &[])],
            "GET",
            api.clone(),
        )
        .await,
        "iat",
    );
    expect_dpop(
        use_api(
            vec![prover.proof("GET", &api, START + 120, "a8", Some(&token), &[])],
            "GET",
            api.clone(),
        )
        .await,
        "iat",
    );
    expect_dpop(
        use_api(
            vec![prover.proof("GET", &api, START, "a9", Some("another-token"), &[])],
            "GET",
            api.clone(),
        )
        .await,
        "ath",
    );
    expect_dpop(
        use_api(
            vec![prover.proof("GET", &api, START, "a10", None, &[])],
            "GET",
            api.clone(),
        )
        .await,
        "ath",
    );
    expect_dpop(
        use_api(
            vec![Prover::new(6).proof("GET", &api, START, "a11", Some(&token), &[])],
            "GET",
            api.clone(),
        )
        .await,
        "cnf.jkt",
    );

    // A private key in the jwk header.
    let mut header =
        json!({"alg": "ES256", "typ": "dpop+jwt", "jwk": p256_public(&prover.key).to_json(None)});
    header["jwk"]["d"] = json!(B64.encode(prover.key.to_bytes()));
    let claims = json!({"htm": "GET", "htu": api, "iat": START, "jti": "a12", "ath": B64.encode(Sha256::digest(token.as_bytes()))});
    expect_dpop(
        use_api(
            vec![sign_es256(&header, &claims, &prover.key)],
            "GET",
            api.clone(),
        )
        .await,
        "private member",
    );
    // Wrong typ, and an alg that is not the key's.
    let mut typ = header.clone();
    typ["jwk"].as_object_mut().unwrap().remove("d");
    typ["typ"] = json!("JWT");
    expect_dpop(
        use_api(
            vec![sign_es256(&typ, &claims, &prover.key)],
            "GET",
            api.clone(),
        )
        .await,
        "typ",
    );
    let mut alg = typ.clone();
    alg["typ"] = json!("dpop+jwt");
    alg["alg"] = json!("HS256");
    expect_dpop(
        use_api(
            vec![sign_es256(&alg, &claims, &prover.key)],
            "GET",
            api.clone(),
        )
        .await,
        "algorithm",
    );

    // A client marked dpop_bound cannot get a bearer token.
    let mut spec = service("must-bind");
    spec.dpop_bound = true;
    let created = e.auth.create_client(&e.barrier, &spec).await.unwrap();
    let req = request(creds(
        &created.record.client_id,
        created.secret.as_ref().unwrap(),
    ));
    assert!(matches!(
        e.auth.issue(&e.barrier, &req).await,
        Err(AuthError::UnauthorizedClient(_))
    ));
}

#[tokio::test]
async fn server_nonces_are_demanded_when_configured() {
    let e = env().await;
    let mut cfg = AuthorityConfig::new(ISSUER);
    cfg.token_nonce = NonceRule::Required;
    let auth = Authority::new(cfg, e.clock.clone());
    let (id, secret) = secret_client(&e, "nonce").await;
    let prover = Prover::new(8);
    let url = format!("{ISSUER}/oauth2/token");
    let try_with = |extra: Vec<(&'static str, Value)>, jti: &'static str| {
        let now = vern_core::Clock::unix_seconds(&*e.clock);
        let proof = prover.proof("POST", &url, now, jti, None, &extra);
        let (id, secret, url) = (id.clone(), secret.clone(), url.clone());
        let auth = &auth;
        let barrier = &e.barrier;
        async move {
            let proofs = [proof.as_str()];
            let mut c = check(&proofs, "POST", &url);
            c.nonce = NonceRule::Required;
            let req = TokenRequest {
                dpop: Some(c),
                ..request(creds(&id, &secret))
            };
            auth.issue(barrier, &req).await.map(|_| ())
        }
    };
    assert!(matches!(
        try_with(vec![], "n1").await,
        Err(AuthError::UseDpopNonce)
    ));
    assert!(matches!(
        try_with(vec![("nonce", json!("forged"))], "n2").await,
        Err(AuthError::UseDpopNonce)
    ));
    let nonce = auth.dpop_nonce(&e.barrier).await.unwrap();
    try_with(vec![("nonce", json!(nonce))], "n3").await.unwrap();
    e.clock.advance(Duration::from_secs(301));
    assert!(
        matches!(
            try_with(vec![("nonce", json!(nonce))], "n4").await,
            Err(AuthError::UseDpopNonce)
        ),
        "expired nonce"
    );
}

#[tokio::test]
async fn revocation_and_introspection() {
    let e = env().await;
    let token = bearer_token(&e).await;
    assert!(e
        .auth
        .introspect(&e.barrier, &token)
        .await
        .unwrap()
        .is_some());
    assert!(e
        .auth
        .introspect(&e.barrier, "garbage")
        .await
        .unwrap()
        .is_none());
    let claims = verify_bearer(&e, &token).await.unwrap();
    assert!(matches!(
        e.auth
            .revoke(&e.barrier, &token, |c| c.client_id
                == "svc.acme.web.prod.other")
            .await,
        Err(AuthError::UnauthorizedClient(_))
    ));
    e.auth
        .revoke(&e.barrier, &token, |c| c.client_id == claims.client_id)
        .await
        .unwrap();
    assert!(matches!(
        verify_bearer(&e, &token).await,
        Err(AuthError::Revoked)
    ));
    assert!(e
        .auth
        .introspect(&e.barrier, &token)
        .await
        .unwrap()
        .is_none());
    e.auth
        .revoke(&e.barrier, "not-a-token", |_| true)
        .await
        .unwrap();
}

#[tokio::test]
async fn signing_keys_rotate_publish_first_and_retire_late() {
    let e = env().await;
    let old = bearer_token(&e).await;
    let old_kid = parts(&old).0["kid"].as_str().unwrap().to_owned();
    let new_kid = e.auth.rotate_keys(&e.barrier).await.unwrap();
    let jwks = e.auth.jwks(&e.barrier).await.unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(
        kids.contains(&old_kid.as_str()) && kids.contains(&new_kid.as_str()),
        "published before it signs"
    );
    let (id, secret) = secret_client(&e, "rot").await;
    let req = request(creds(&id, &secret));
    assert_eq!(
        parts(&e.auth.issue(&e.barrier, &req).await.unwrap().access_token).0["kid"],
        old_kid.as_str()
    );
    e.clock.advance(Duration::from_secs(61));
    let fresh = e.auth.issue(&e.barrier, &req).await.unwrap().access_token;
    assert_eq!(
        parts(&fresh).0["kid"],
        new_kid.as_str(),
        "the new key signs after the publish delay"
    );
    // The old key stays published until its tokens expired.
    let jwks = e.auth.jwks(&e.barrier).await.unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    e.clock.advance(Duration::from_secs(3600 + 31));
    let jwks = e.auth.jwks(&e.barrier).await.unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, [new_kid.as_str()]);
}

/// A JWKS source serving whatever the test puts in, counting fetches.
struct TestJwks {
    doc: std::sync::Mutex<Value>,
    fetches: Arc<std::sync::atomic::AtomicUsize>,
}

impl vern_authority::JwksSource for TestJwks {
    async fn fetch(&self) -> Result<Value, String> {
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(self.doc.lock().unwrap().clone())
    }
}

#[tokio::test]
async fn other_services_verify_offline_with_the_jwks() {
    use std::sync::atomic::Ordering;
    use vern_authority::{Verifier, VerifierConfig};

    let e = env().await;
    let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let source = TestJwks {
        doc: std::sync::Mutex::new(e.auth.jwks(&e.barrier).await.unwrap()),
        fetches: Arc::clone(&fetches),
    };
    let verifier = Verifier::new(VerifierConfig::new(ISSUER, ISSUER), source, e.clock.clone());
    let token = bearer_token(&e).await;
    let claims = verifier.verify(&token, Presented::Bearer).await.unwrap();
    assert_eq!(claims.client_id, "svc.acme.web.prod.api");
    verifier.verify(&token, Presented::Bearer).await.unwrap();
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "keys are cached");

    // Another audience refuses it.
    let other = Verifier::new(
        VerifierConfig::new(ISSUER, "https://payments.internal"),
        TestJwks {
            doc: std::sync::Mutex::new(e.auth.jwks(&e.barrier).await.unwrap()),
            fetches: Arc::default(),
        },
        e.clock.clone(),
    );
    assert!(
        matches!(other.verify(&token, Presented::Bearer).await, Err(AuthError::Claim(m)) if m.contains("aud"))
    );

    // Unknown kids cause at most one fetch per min_refresh.
    let (h, c, sig) = parts(&token);
    let mut unknown = h.clone();
    unknown["kid"] = json!("rotated-away");
    let forged = assemble(&unknown, &c, &sig);
    assert!(matches!(
        verifier.verify(&forged, Presented::Bearer).await,
        Err(AuthError::UnknownKey(_))
    ));
    assert!(matches!(
        verifier.verify(&forged, Presented::Bearer).await,
        Err(AuthError::UnknownKey(_))
    ));
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "no fetch storm from unknown kids"
    );
    e.clock.advance(Duration::from_secs(11));
    assert!(matches!(
        verifier.verify(&forged, Presented::Bearer).await,
        Err(AuthError::UnknownKey(_))
    ));
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        2,
        "one fetch after min_refresh"
    );

    // DPoP-bound tokens are checked with their proof, offline.
    let (id, secret) = secret_client(&e, "offline-bound").await;
    let prover = Prover::new(11);
    let token_url = format!("{ISSUER}/oauth2/token");
    let now = START + 11;
    let p = prover.proof("POST", &token_url, now, "o1", None, &[]);
    let proofs = [p.as_str()];
    let req = TokenRequest {
        dpop: Some(check(&proofs, "POST", &token_url)),
        ..request(creds(&id, &secret))
    };
    let bound = e.auth.issue(&e.barrier, &req).await.unwrap().access_token;
    let url = "https://payments.internal/charge";
    let proof = prover.proof("POST", url, now, "o2", Some(&bound), &[]);
    let proofs = [proof.as_str()];
    verifier
        .verify(&bound, Presented::Dpop(check(&proofs, "POST", url)))
        .await
        .unwrap();
    assert!(
        matches!(verifier.verify(&bound, Presented::Dpop(check(&proofs, "POST", url))).await, Err(AuthError::Dpop(m)) if m.contains("replay"))
    );
    assert!(matches!(
        verifier.verify(&bound, Presented::Bearer).await,
        Err(AuthError::Dpop(_))
    ));
}

#[tokio::test]
async fn es256_signing_is_optional_and_alg_still_follows_the_key() {
    let e = env().await;
    let mut cfg = without_nonce(ISSUER);
    cfg.signing_alg = vern_authority::Alg::Es256;
    // A fresh deployment whose first key is P-256.
    let dir = tempfile::tempdir().unwrap();
    let b = unsealed(sqlite(dir.path(), "es.db").await, e.clock.clone()).await;
    let auth = Authority::new(cfg, e.clock.clone());
    let created = auth.create_client(&b, &service("es")).await.unwrap();
    let req = request(creds(
        &created.record.client_id,
        created.secret.as_ref().unwrap(),
    ));
    let token = auth.issue(&b, &req).await.unwrap().access_token;
    let (h, c, sig) = parts(&token);
    assert_eq!(h["alg"], "ES256");
    auth.verify_access(&b, &token, Presented::Bearer)
        .await
        .unwrap();
    let jwks = auth.jwks(&b).await.unwrap();
    assert_eq!(
        (
            jwks["keys"][0]["kty"].as_str(),
            jwks["keys"][0]["alg"].as_str()
        ),
        (Some("EC"), Some("ES256"))
    );
    // Relabelling the ES256 token as EdDSA does not make it verify.
    let mut relabel = h.clone();
    relabel["alg"] = json!("EdDSA");
    assert!(matches!(
        auth.verify_access(&b, &assemble(&relabel, &c, &sig), Presented::Bearer)
            .await,
        Err(AuthError::Algorithm(_))
    ));
}

#[tokio::test]
async fn expired_markers_are_swept() {
    let e = env().await;
    let token = bearer_token(&e).await;
    e.auth.revoke(&e.barrier, &token, |_| true).await.unwrap();
    let (id, key) = keyed_client(&e, "sweeper", 3).await;
    let a = assertion(
        &id,
        &key,
        &format!("{ISSUER}/oauth2/token"),
        START + 60,
        "s1",
    );
    let req = request(asserted(None, a.clone()));
    e.auth.issue(&e.barrier, &req).await.unwrap();
    let count = |p: &'static str| {
        let store = Arc::clone(&e.store);
        async move { store.list(p, None, 100).await.unwrap().len() }
    };
    assert_eq!(
        (
            count("authority/revoked/").await,
            count("authority/assertion-jti/").await
        ),
        (1, 1)
    );
    assert_eq!(
        e.auth.sweep(&e.barrier).await.unwrap(),
        0,
        "nothing has expired yet"
    );
    e.clock.advance(Duration::from_secs(300 + 31));
    assert_eq!(e.auth.sweep(&e.barrier).await.unwrap(), 2);
    assert_eq!(
        (
            count("authority/revoked/").await,
            count("authority/assertion-jti/").await
        ),
        (0, 0)
    );
    // The swept token stays refused by its expiry, the assertion by its exp.
    assert!(matches!(
        verify_bearer(&e, &token).await,
        Err(AuthError::Expired)
    ));
    let req = request(asserted(None, a));
    assert!(matches!(
        e.auth.issue(&e.barrier, &req).await,
        Err(AuthError::InvalidClient)
    ));
}

/// Numbers an attacker may put where a NumericDate belongs: the edges of
/// `u64` and `i64`, negatives, fractions, a number beyond `u64`, and other
/// JSON types. None may panic (release builds check overflow); each must be
/// refused.
fn hostile_numbers() -> Vec<Value> {
    vec![
        json!(u64::MAX),
        json!(u64::MAX - 1),
        json!(i64::MAX),
        json!(i64::MIN),
        json!(-1),
        json!(0.5),
        json!(START as f64 + 0.5),
        json!(1e300),
        json!(-1e300),
        serde_json::from_str("18446744073709551616").unwrap(),
        json!(START.to_string()),
        Value::Null,
    ]
}

/// The authority's current signing key, read through the barrier: lets a
/// test sign tokens with hostile claims that still pass the signature check.
async fn authority_signing_key(e: &Env) -> (String, ed25519_dalek::SigningKey) {
    let doc = e
        .barrier
        .view("authority/")
        .unwrap()
        .get("signing-keys")
        .await
        .unwrap()
        .unwrap();
    let doc: Value = serde_json::from_slice(doc.value.expose()).unwrap();
    let key = &doc["keys"][0];
    assert_eq!(key["alg"], "EdDSA");
    let seed: [u8; 32] = B64
        .decode(key["seed"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    (
        key["kid"].as_str().unwrap().to_owned(),
        ed25519_dalek::SigningKey::from_bytes(&seed),
    )
}

#[tokio::test]
async fn hostile_numbers_in_access_tokens_are_refused_without_panic() {
    use vern_authority::{Verifier, VerifierConfig};

    let e = env().await;
    let token = bearer_token(&e).await;
    let (h, c, _) = parts(&token);
    let (kid, key) = authority_signing_key(&e).await;
    assert_eq!(h["kid"], kid.as_str());
    let resign = |name: &str, value: &Value| {
        let mut claims = c.clone();
        claims[name] = value.clone();
        sign_ed25519(&h, &claims, &key)
    };
    // The re-signed original passes, so a refusal below is the number's.
    verify_bearer(&e, &resign("exp", &c["exp"])).await.unwrap();

    let verifier = Verifier::new(
        VerifierConfig::new(ISSUER, ISSUER),
        TestJwks {
            doc: std::sync::Mutex::new(e.auth.jwks(&e.barrier).await.unwrap()),
            fetches: Arc::default(),
        },
        e.clock.clone(),
    );
    for name in ["exp", "iat", "nbf"] {
        for value in hostile_numbers() {
            let forged = resign(name, &value);
            let online = verify_bearer(&e, &forged).await;
            assert!(
                matches!(
                    online,
                    Err(AuthError::Claim(_) | AuthError::NotYetValid | AuthError::Expired)
                ),
                "{name} = {value}: {online:?}"
            );
            let offline = verifier.verify(&forged, Presented::Bearer).await;
            assert!(offline.is_err(), "{name} = {value} offline: {offline:?}");
            let introspected = e.auth.introspect(&e.barrier, &forged).await.unwrap();
            assert!(introspected.is_none(), "{name} = {value} introspected");
        }
    }
    // The cases an overflow would have hit: a token "valid until the end
    // of time" is refused for its lifetime, one "issued at the end of
    // time" as not yet valid, and a fractional or negative time as
    // malformed.
    assert!(
        matches!(verify_bearer(&e, &resign("exp", &json!(u64::MAX))).await, Err(AuthError::Claim(m)) if m.contains("exp"))
    );
    assert!(matches!(
        verify_bearer(&e, &resign("iat", &json!(u64::MAX))).await,
        Err(AuthError::NotYetValid)
    ));
    assert!(matches!(
        verify_bearer(&e, &resign("nbf", &json!(u64::MAX))).await,
        Err(AuthError::NotYetValid)
    ));
    for value in [json!(-1), json!(START as f64 + 0.5)] {
        assert!(
            matches!(verify_bearer(&e, &resign("nbf", &value)).await, Err(AuthError::Claim(m)) if m.contains("nbf")),
            "a malformed nbf is refused, not ignored"
        );
    }
    // Revoking a hostile token is a no-op, not a panic.
    e.auth
        .revoke(&e.barrier, &resign("exp", &json!(u64::MAX)), |_| true)
        .await
        .unwrap();
}

#[tokio::test]
async fn hostile_numbers_in_client_assertions_are_refused_without_panic() {
    let e = env().await;
    let (id, key) = keyed_client(&e, "hostile-signer", 7).await;
    let endpoint = format!("{ISSUER}/oauth2/token");
    let issue = |claims: Value| {
        let req = request(asserted(
            Some(id.clone()),
            sign_ed25519(&json!({"alg": "EdDSA", "typ": "JWT"}), &claims, &key),
        ));
        let e = &e;
        async move { e.auth.issue(&e.barrier, &req).await }
    };
    let claims = |jti: &str| json!({"iss": id, "sub": id, "aud": endpoint, "exp": START + 60, "iat": START, "nbf": START, "jti": jti});
    issue(claims("fine")).await.unwrap();
    for (n, (name, value)) in ["exp", "nbf", "iat"]
        .into_iter()
        .flat_map(|name| hostile_numbers().into_iter().map(move |v| (name, v)))
        .enumerate()
    {
        let mut c = claims(&format!("hostile-{n}"));
        c[name] = value.clone();
        let result = issue(c).await;
        assert!(
            matches!(result, Err(AuthError::InvalidClient)),
            "{name} = {value}: {result:?}"
        );
    }
    // A missing exp is refused too; missing nbf and iat are allowed (RFC
    // 7523 makes them optional).
    let mut no_exp = claims("no-exp");
    no_exp.as_object_mut().unwrap().remove("exp");
    assert!(matches!(issue(no_exp).await, Err(AuthError::InvalidClient)));
    let mut bare = claims("bare");
    bare.as_object_mut().unwrap().remove("nbf");
    bare.as_object_mut().unwrap().remove("iat");
    issue(bare).await.unwrap();
}

#[tokio::test]
async fn hostile_numbers_in_dpop_proofs_are_refused_without_panic() {
    let e = env().await;
    let (id, secret) = secret_client(&e, "hostile-dpop").await;
    let prover = Prover::new(9);
    let token_url = format!("{ISSUER}/oauth2/token");
    let api = format!("{ISSUER}/v1/secret/data/acme/web/prod/db");
    let issue_with = |proof: String| {
        let req_creds = creds(&id, &secret);
        let token_url = token_url.clone();
        let e = &e;
        async move {
            let proofs = [proof.as_str()];
            let req = TokenRequest {
                dpop: Some(check(&proofs, "POST", &token_url)),
                ..request(req_creds)
            };
            e.auth.issue(&e.barrier, &req).await
        }
    };
    let token = issue_with(prover.proof("POST", &token_url, START, "ok", None, &[]))
        .await
        .unwrap()
        .access_token;
    for (n, value) in hostile_numbers().into_iter().enumerate() {
        let at_token = prover.proof(
            "POST",
            &token_url,
            START,
            &format!("t{n}"),
            None,
            &[("iat", value.clone())],
        );
        let result = issue_with(at_token).await;
        assert!(
            matches!(result, Err(AuthError::Dpop(ref m)) if m.contains("iat")),
            "token endpoint, iat = {value}: {result:?}"
        );
        let at_api = prover.proof(
            "GET",
            &api,
            START,
            &format!("a{n}"),
            Some(&token),
            &[("iat", value.clone())],
        );
        let proofs = [at_api.as_str()];
        let result = e
            .auth
            .verify_access(
                &e.barrier,
                &token,
                Presented::Dpop(check(&proofs, "GET", &api)),
            )
            .await;
        assert!(
            matches!(result, Err(AuthError::Dpop(ref m)) if m.contains("iat")),
            "API, iat = {value}: {result:?}"
        );
    }
}
