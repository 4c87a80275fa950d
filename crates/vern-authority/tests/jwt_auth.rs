//! The JWT auth method in the domain: roles are checked before anything is
//! written and only by callers who may make their client; a login holds
//! every check (signature, algorithm, issuer, audience, times with their
//! leeways, subject, bound claims) and gets its client's identity with a
//! capped lifetime; apply declares roles with clients, all or nothing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use common::{acme_service, authority, Env, Everything, START};
use serde_json::{json, Value};
use vern_authority::jws::{p256_public, sign_es256};
use vern_authority::{
    ApplyGate, AuthError, AuthorityConfig, ClientKind, ClientRecord, ClientSpec, Declaration,
    JwksFetch, JwksUrl, JwtAuthError, JwtRoleSpec,
};

const ISSUER: &str = "https://kubernetes.default.svc";
const JWKS: &str = "https://issuer.example/openid/v1/jwks";
const SUBJECT: &str = "system:serviceaccount:web:api";

/// Serves one JWK set and counts fetches.
struct Issuer {
    set: Mutex<Value>,
    fetches: AtomicUsize,
}

impl JwksFetch for Issuer {
    async fn fetch(&self, _: &JwksUrl, _: Option<&str>) -> Result<Value, String> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        Ok(self.set.lock().unwrap().clone())
    }
}

fn key(seed: u8) -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap()
}

fn issuer(keys: &[(&str, u8)]) -> Issuer {
    let set: Vec<Value> = keys
        .iter()
        .map(|(kid, seed)| p256_public(&key(*seed)).to_json(Some(kid)))
        .collect();
    Issuer {
        set: Mutex::new(json!({ "keys": set })),
        fetches: AtomicUsize::new(0),
    }
}

/// Claims of a Kubernetes service-account token for `vern`, valid now.
fn claims() -> Value {
    json!({
        "iss": ISSUER,
        "sub": SUBJECT,
        "aud": ["vern", "other"],
        "exp": START + 600,
        "iat": START,
        "nbf": START,
        "kubernetes.io": {"namespace": "web", "serviceaccount": {"name": "api"}},
    })
}

fn signed(claims: &Value, kid: &str, seed: u8) -> String {
    sign_es256(&json!({"alg": "ES256", "kid": kid}), claims, &key(seed))
}

fn with(mut claims: Value, name: &str, value: Value) -> Value {
    claims
        .as_object_mut()
        .unwrap()
        .insert(name.to_owned(), value);
    claims
}

fn without(mut claims: Value, name: &str) -> Value {
    claims.as_object_mut().unwrap().remove(name);
    claims
}

fn role(name: &str, client_id: &str) -> JwtRoleSpec {
    JwtRoleSpec {
        name: name.to_owned(),
        client_id: client_id.to_owned(),
        bound_issuer: Some(ISSUER.to_owned()),
        jwks_url: Some(JWKS.to_owned()),
        bound_audiences: vec!["vern".to_owned()],
        bound_subject: Some(SUBJECT.to_owned()),
        bound_claims: BTreeMap::from([(
            "/kubernetes.io/namespace".to_owned(),
            vec!["web".to_owned()],
        )]),
        ..JwtRoleSpec::default()
    }
}

async fn env() -> Env {
    authority(AuthorityConfig::new("https://vern.test")).await
}

async fn service(e: &Env, spec: ClientSpec) -> String {
    e.auth
        .create_client(&e.barrier, &spec)
        .await
        .unwrap()
        .record
        .client_id
}

/// A caller that reaches only the services of tenant `acme`.
struct AcmeOnly;

impl ApplyGate for AcmeOnly {
    fn manages(&self, r: &ClientRecord) -> bool {
        matches!(&r.kind, ClientKind::Service { tenant, .. } if tenant == "acme")
    }
    fn may_grant(&self, id: &str, kind: &ClientKind, _: &[String]) -> Result<(), String> {
        match kind {
            ClientKind::Service { tenant, .. } if tenant == "acme" => Ok(()),
            _ => Err(format!("you may not manage client `{id}`")),
        }
    }
}

#[tokio::test]
async fn roles_are_checked_before_anything_is_written() {
    let e = env().await;
    let web = service(&e, acme_service("web", &["secrets:read"])).await;
    let op = ClientSpec {
        name: "admin".into(),
        roles: vec!["platform-admin".into()],
        ..ClientSpec::default()
    };
    let op = service(&e, op).await;
    let ok = role("k8s-web", &web);
    let cases: Vec<(JwtRoleSpec, &str)> = vec![
        (
            JwtRoleSpec {
                bound_audiences: vec![],
                ..ok.clone()
            },
            "bound_audiences is required",
        ),
        (
            JwtRoleSpec {
                bound_issuer: None,
                ..ok.clone()
            },
            "bound_issuer is required",
        ),
        (
            JwtRoleSpec {
                jwks_url: None,
                ..ok.clone()
            },
            "give the issuer's keys",
        ),
        (
            JwtRoleSpec {
                jwt_validation_pubkeys: vec!["not pem".into()],
                ..ok.clone()
            },
            "not both",
        ),
        (
            JwtRoleSpec {
                jwks_url: Some("http://issuer.example/jwks".into()),
                ..ok.clone()
            },
            "must use https",
        ),
        (
            JwtRoleSpec {
                jwt_supported_algs: vec!["HS256".into()],
                ..ok.clone()
            },
            "`HS256` is not supported",
        ),
        (
            JwtRoleSpec {
                jwt_supported_algs: vec!["none".into()],
                ..ok.clone()
            },
            "`none` is not supported",
        ),
        (
            JwtRoleSpec {
                role_type: Some("oidc".into()),
                ..ok.clone()
            },
            "role_type must be `jwt`",
        ),
        (
            JwtRoleSpec {
                name: "../x".into(),
                ..ok.clone()
            },
            "role name",
        ),
        (
            JwtRoleSpec {
                token_ttl: Some(0),
                ..ok.clone()
            },
            "token_ttl must be positive",
        ),
        (
            JwtRoleSpec {
                token_ttl: Some(86_400),
                ..ok.clone()
            },
            "at most 3600 s",
        ),
        (
            JwtRoleSpec {
                expiration_leeway: Some(-5),
                ..ok.clone()
            },
            "expiration_leeway must be",
        ),
        (
            JwtRoleSpec {
                bound_claims_type: Some("regex".into()),
                ..ok.clone()
            },
            "bound_claims_type",
        ),
        (
            JwtRoleSpec {
                bound_claims: BTreeMap::from([("groups".into(), vec![])]),
                ..ok.clone()
            },
            "needs 1–64 expected values",
        ),
        (
            JwtRoleSpec {
                jwks_ca_pem: Some("not a certificate".into()),
                ..ok.clone()
            },
            "jwks_ca_pem is unusable",
        ),
        (
            JwtRoleSpec {
                jwks_url: None,
                jwt_validation_pubkeys: vec![
                    "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".into(),
                ],
                ..ok.clone()
            },
            "jwt_validation_pubkeys[0] is unusable",
        ),
        (
            JwtRoleSpec {
                client_id: "svc.acme.web.prod.nobody".into(),
                ..ok.clone()
            },
            "does not exist",
        ),
        (
            JwtRoleSpec {
                client_id: op,
                ..ok.clone()
            },
            "not an existing service client",
        ),
    ];
    for (spec, want) in cases {
        let err = e
            .auth
            .write_jwt_role(&e.barrier, &spec, &Everything)
            .await
            .unwrap_err();
        assert!(
            matches!(err, JwtAuthError::InvalidRole(_)),
            "{want}: {err:?}"
        );
        assert!(err.to_string().contains(want), "{want}: {err}");
    }
    assert!(e.auth.jwt_role_names(&e.barrier).await.unwrap().is_empty());
    let written = e
        .auth
        .write_jwt_role(&e.barrier, &ok, &Everything)
        .await
        .unwrap();
    assert_eq!(written.user_claim, "sub");
    assert_eq!(written.jwt_supported_algs.len(), 9);
    assert_eq!(
        (
            written.clock_skew_leeway,
            written.expiration_leeway,
            written.not_before_leeway
        ),
        (60, 150, 150)
    );
    assert_eq!(
        e.auth.jwt_role(&e.barrier, "k8s-web").await.unwrap(),
        written
    );
}

#[tokio::test]
async fn a_caller_writes_and_deletes_roles_only_for_clients_it_may_make() {
    let e = env().await;
    let acme = service(&e, acme_service("web", &["secrets:read"])).await;
    let globex = service(
        &e,
        ClientSpec {
            tenant: Some("globex".into()),
            ..acme_service("web", &["secrets:read"])
        },
    )
    .await;
    fn refused<T: std::fmt::Debug>(r: Result<T, JwtAuthError>) -> String {
        match r {
            Err(JwtAuthError::Forbidden(m)) => m,
            other => panic!("{other:?}"),
        }
    }
    // Another tenant's client, existing or not, gets the same refusal.
    let m1 = refused(
        e.auth
            .write_jwt_role(&e.barrier, &role("r", &globex), &AcmeOnly)
            .await,
    );
    let m2 = refused(
        e.auth
            .write_jwt_role(
                &e.barrier,
                &role("r", "svc.globex.web.prod.ghost"),
                &AcmeOnly,
            )
            .await,
    );
    assert_eq!(
        m1.replace(&globex, "ID"),
        m2.replace("svc.globex.web.prod.ghost", "ID")
    );
    // A missing client of one's own tenant is reported as missing.
    let missing = e
        .auth
        .write_jwt_role(&e.barrier, &role("r", "svc.acme.web.prod.ghost"), &AcmeOnly)
        .await
        .unwrap_err();
    assert!(missing.to_string().contains("does not exist"), "{missing}");

    e.auth
        .write_jwt_role(&e.barrier, &role("theirs", &globex), &Everything)
        .await
        .unwrap();
    e.auth
        .write_jwt_role(&e.barrier, &role("mine", &acme), &AcmeOnly)
        .await
        .unwrap();
    // Another tenant's role can be neither taken over nor deleted.
    refused(
        e.auth
            .write_jwt_role(&e.barrier, &role("theirs", &acme), &AcmeOnly)
            .await,
    );
    refused(
        e.auth
            .delete_jwt_role(&e.barrier, "theirs", &AcmeOnly)
            .await,
    );
    assert_eq!(
        e.auth
            .jwt_role(&e.barrier, "theirs")
            .await
            .unwrap()
            .client_id,
        globex
    );
    e.auth
        .delete_jwt_role(&e.barrier, "mine", &AcmeOnly)
        .await
        .unwrap();
    assert!(matches!(
        e.auth.jwt_role(&e.barrier, "mine").await,
        Err(JwtAuthError::NoRole(_))
    ));
}

#[tokio::test]
async fn a_login_holds_every_check() {
    let e = env().await;
    let web = service(&e, acme_service("web", &["secrets:read"])).await;
    let mut spec = role("k8s-web", &web);
    spec.jwt_supported_algs = vec!["ES256".into(), "RS256".into()];
    e.auth
        .write_jwt_role(&e.barrier, &spec, &Everything)
        .await
        .unwrap();
    let iss = issuer(&[("k1", 1)]);
    let login = |jwt: String| {
        let (e, iss) = (&e, &iss);
        async move {
            let role = e.auth.jwt_role(&e.barrier, "k8s-web").await.unwrap();
            e.auth.jwt_login(&e.barrier, &role, &jwt, iss).await
        }
    };

    let ok = login(signed(&claims(), "k1", 1)).await.unwrap();
    assert_eq!(ok.client.client_id, web);
    assert_eq!(ok.user, SUBJECT);
    assert_eq!(ok.ttl, 300);
    // Within the leeways (150 s past exp and before nbf, 60 s of skew).
    login(signed(&with(claims(), "exp", json!(START - 200)), "k1", 1))
        .await
        .unwrap();
    login(signed(&with(claims(), "nbf", json!(START + 200)), "k1", 1))
        .await
        .unwrap();

    let unsigned = format!(
        "{}.{}.",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims().to_string())
    );
    let hs256 = {
        use hmac::Mac as _;
        let h = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"alg":"HS256","kid":"k1"}"#);
        let p = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims().to_string());
        // The public key as the HMAC secret: algorithm confusion.
        let public = p256_public(&key(1)).to_json(None).to_string();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(public.as_bytes()).unwrap();
        mac.update(format!("{h}.{p}").as_bytes());
        let sig =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{h}.{p}.{sig}")
    };
    let cases: Vec<(String, &str)> = vec![
        (
            signed(
                &with(claims(), "iss", json!("https://evil.example")),
                "k1",
                1,
            ),
            "issuer",
        ),
        (
            signed(&with(claims(), "aud", json!("other")), "k1", 1),
            "audience",
        ),
        (signed(&without(claims(), "aud"), "k1", 1), "audience"),
        (
            signed(
                &with(claims(), "sub", json!("system:serviceaccount:web:db")),
                "k1",
                1,
            ),
            "subject",
        ),
        (
            signed(
                &with(claims(), "kubernetes.io", json!({"namespace": "db"})),
                "k1",
                1,
            ),
            "`/kubernetes.io/namespace` matches none",
        ),
        (
            signed(&without(claims(), "kubernetes.io"), "k1", 1),
            "lacks the bound claim",
        ),
        (
            signed(&with(claims(), "exp", json!(START - 211)), "k1", 1),
            "expired",
        ),
        (signed(&without(claims(), "exp"), "k1", 1), "no expiry"),
        (
            signed(&with(claims(), "exp", json!(-1)), "k1", 1),
            "`exp` must be",
        ),
        (
            signed(&with(claims(), "exp", json!(u64::MAX)), "k1", 1),
            "ok",
        ),
        (
            signed(&with(claims(), "nbf", json!(START + 211)), "k1", 1),
            "not valid yet",
        ),
        (
            signed(&with(claims(), "iat", json!(START + 61)), "k1", 1),
            "in the future",
        ),
        (signed(&claims(), "k1", 2), "signature does not verify"),
        (signed(&claims(), "k9", 2), "publishes no key `k9`"),
        (unsigned, "malformed"),
        (hs256, "`HS256` is not accepted"),
        (
            vern_authority::jws::sign_ed25519(
                &json!({"alg": "EdDSA", "kid": "k1"}),
                &claims(),
                &ed25519_dalek::SigningKey::from_bytes(&[1; 32]),
            ),
            "`EdDSA` is not accepted",
        ),
        ("x".repeat(20_000), "malformed"),
    ];
    for (jwt, want) in cases {
        match login(jwt).await {
            Ok(_) if want == "ok" => {}
            Ok(l) => panic!("{want}: logged in as {}", l.client.client_id),
            Err(JwtAuthError::Refused(m)) => assert!(m.contains(want), "{want}: {m}"),
            Err(other) => panic!("{want}: {other:?}"),
        }
    }
    // Nothing the caller sent is echoed: not the subject, not the issuer.
    let err = login(signed(
        &with(claims(), "iss", json!("https://evil.example")),
        "k1",
        1,
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(!err.contains("evil") && !err.contains(ISSUER), "{err}");

    assert!(matches!(
        e.auth.jwt_role(&e.barrier, "nope").await,
        Err(JwtAuthError::NoRole(_))
    ));
    // Made-up kids did not make the issuer's keys be fetched again and again.
    assert_eq!(iss.fetches.load(Ordering::SeqCst), 1);
    // A new key appears in the set (a rotation): found once the refetch
    // interval has passed.
    *iss.set.lock().unwrap() = json!({"keys": [p256_public(&key(1)).to_json(Some("k1")), p256_public(&key(2)).to_json(Some("k2"))]});
    e.clock.advance(Duration::from_secs(5));
    login(signed(&claims(), "k2", 2)).await.unwrap();
    assert_eq!(iss.fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_login_gets_the_clients_lifetime_at_most_and_fails_once_the_client_is_gone() {
    let e = env().await;
    let short = service(
        &e,
        ClientSpec {
            token_ttl: Some(120),
            ..acme_service("short", &[])
        },
    )
    .await;
    let plain = service(&e, acme_service("plain", &[])).await;
    let iss = issuer(&[("k1", 1)]);
    for (name, client, ttl, want) in [
        ("a", &short, Some(600), 120),
        ("b", &short, Some(60), 60),
        ("c", &plain, None, 300),
        ("d", &plain, Some(3600), 3600),
    ] {
        let spec = JwtRoleSpec {
            token_ttl: ttl,
            ..role(name, client)
        };
        e.auth
            .write_jwt_role(&e.barrier, &spec, &Everything)
            .await
            .unwrap();
        let role = e.auth.jwt_role(&e.barrier, name).await.unwrap();
        let got = e
            .auth
            .jwt_login(&e.barrier, &role, &signed(&claims(), "k1", 1), &iss)
            .await
            .unwrap();
        assert_eq!(got.ttl, want, "{name}");
    }
    e.auth.delete_client(&e.barrier, &plain).await.unwrap();
    let role = e.auth.jwt_role(&e.barrier, "c").await.unwrap();
    let err = e
        .auth
        .jwt_login(&e.barrier, &role, &signed(&claims(), "k1", 1), &iss)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("client no longer exists"), "{err}");
}

/// The SubjectPublicKeyInfo of a P-256 key, as PEM.
fn p256_pem(seed: u8) -> String {
    let point = key(seed).verifying_key().to_encoded_point(false);
    // SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING }.
    let mut der = hex_bytes("3059301306072a8648ce3d020106082a8648ce3d030107034200");
    der.extend_from_slice(point.as_bytes());
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        B64.encode(der)
    )
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test]
async fn static_keys_need_no_fetch() {
    let e = env().await;
    let web = service(&e, acme_service("web", &[])).await;
    let spec = JwtRoleSpec {
        jwks_url: None,
        jwt_validation_pubkeys: vec![p256_pem(3), p256_pem(4)],
        ..role("air-gapped", &web)
    };
    e.auth
        .write_jwt_role(&e.barrier, &spec, &Everything)
        .await
        .unwrap();
    let iss = issuer(&[]);
    let login = |jwt: String| {
        let (e, iss) = (&e, &iss);
        async move {
            let role = e.auth.jwt_role(&e.barrier, "air-gapped").await.unwrap();
            e.auth.jwt_login(&e.barrier, &role, &jwt, iss).await
        }
    };
    // Static keys have no kid; any of them may have signed.
    let no_kid = |seed| sign_es256(&json!({"alg": "ES256"}), &claims(), &key(seed));
    login(no_kid(3)).await.unwrap();
    login(no_kid(4)).await.unwrap();
    let err = login(no_kid(5)).await.unwrap_err();
    assert!(
        err.to_string().contains("signature does not verify"),
        "{err}"
    );
    assert_eq!(iss.fetches.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn apply_declares_roles_with_their_clients_all_or_nothing() {
    let e = env().await;
    let apply = |clients: Vec<ClientSpec>, roles: Option<Vec<JwtRoleSpec>>, prune: bool| {
        let e = &e;
        async move {
            let declared = Declaration {
                clients: Some(&clients),
                jwt_roles: roles.as_deref(),
            };
            e.auth
                .apply_declared(&e.barrier, declared, prune, false, &AcmeOnly)
                .await
        }
    };
    let web = acme_service("web", &["secrets:read"]);
    let web_id = "svc.acme.web.prod.web";
    // A role may name a client the same apply creates.
    let plan = apply(
        vec![web.clone()],
        Some(vec![role("k8s-web", web_id)]),
        false,
    )
    .await
    .unwrap();
    assert_eq!(plan.create, [web_id]);
    assert_eq!(plan.jwt_roles.create, ["k8s-web"]);
    // The same again changes nothing.
    let plan = apply(
        vec![web.clone()],
        Some(vec![role("k8s-web", web_id)]),
        false,
    )
    .await
    .unwrap();
    assert_eq!(plan.jwt_roles.unchanged, ["k8s-web"]);

    // One bad role: nothing at all is written, the new client neither.
    let api = acme_service("api", &[]);
    let bad = JwtRoleSpec {
        bound_audiences: vec![],
        ..role("k8s-api", "svc.acme.web.prod.api")
    };
    let err = apply(
        vec![web.clone(), api.clone()],
        Some(vec![role("k8s-web", web_id), bad]),
        false,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, AuthError::InvalidClientSpec(m) if m.contains("JWT role `k8s-api`") && m.contains("bound_audiences")),
        "{err:?}"
    );
    assert!(e
        .auth
        .client(&e.barrier, "svc.acme.web.prod.api")
        .await
        .is_err());
    // A role for a client the apply prunes, or for another tenant's client.
    let err = apply(vec![], Some(vec![role("k8s-web", web_id)]), true)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("does not exist after this apply"),
        "{err}"
    );
    let globex = ClientSpec {
        tenant: Some("globex".into()),
        ..web.clone()
    };
    e.auth.create_client(&e.barrier, &globex).await.unwrap();
    let err = apply(
        vec![web.clone()],
        Some(vec![
            role("k8s-web", web_id),
            role("theirs", "svc.globex.web.prod.web"),
        ]),
        false,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, AuthError::Forbidden(_)), "{err:?}");
    assert_eq!(
        e.auth.jwt_role_names(&e.barrier).await.unwrap(),
        ["k8s-web"]
    );

    // Without a roles section, roles are left alone even with prune; with
    // one, prune deletes the undeclared roles the caller manages only.
    e.auth
        .write_jwt_role(
            &e.barrier,
            &role("theirs", "svc.globex.web.prod.web"),
            &Everything,
        )
        .await
        .unwrap();
    let plan = apply(vec![web.clone()], None, true).await.unwrap();
    assert!(plan.jwt_roles.delete.is_empty());
    let plan = apply(vec![web.clone()], Some(vec![]), true).await.unwrap();
    assert_eq!(plan.jwt_roles.delete, ["k8s-web"]);
    assert_eq!(plan.jwt_roles.kept, ["theirs"]);
    assert_eq!(e.auth.jwt_role_names(&e.barrier).await.unwrap(), ["theirs"]);
}
