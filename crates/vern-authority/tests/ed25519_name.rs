//! The fully specified algorithm name `Ed25519` (RFC 9864) beside `EdDSA`:
//! accepted in client assertions and DPoP proofs exactly where `EdDSA` is,
//! never as a way to another key or another algorithm.
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
use common::{acme_service, authority, request, without_nonce, Env, START};
use hmac::{Hmac, Mac};
use proptest::prelude::*;
use serde_json::{json, Value};
use sha2::Sha256;
use vern_authority::jws::{ed25519_public, p256_public, sign_ed25519, sign_es256, Unverified};
use vern_authority::{AuthError, ClientCredentials, DpopCheck, NonceRule, TokenRequest};

const ISSUER: &str = "https://vern.test:8200";

fn ed(seed: u8) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
}

/// A JWS over `header` and `claims` whose signature is HMAC-SHA256 keyed
/// with `secret`: the classic algorithm confusion, a public key used as an
/// HMAC secret.
fn hmac_signed(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", B64.encode(mac.finalize().into_bytes()))
}

/// A compact JWS with `alg` set to `alg` and a signature of `sig` bytes.
fn relabelled(alg: &str, claims: &Value, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        B64.encode(json!({"alg": alg}).to_string()),
        B64.encode(claims.to_string()),
        B64.encode(sig)
    )
}

proptest! {
    /// Under either name, an Ed25519 signature verifies with its own key
    /// only: a proof labelled `Ed25519` and signed with any other key is
    /// refused.
    #[test]
    fn either_name_verifies_with_the_signing_key_only(
        a in 1u8..=255,
        b in 1u8..=255,
        sub in "[a-z]{1,12}",
        fully_specified in any::<bool>(),
    ) {
        prop_assume!(a != b);
        let alg = if fully_specified { "Ed25519" } else { "EdDSA" };
        let claims = json!({"sub": sub});
        let jws = sign_ed25519(&json!({"alg": alg}), &claims, &ed(b));
        let parsed = Unverified::parse(&jws).unwrap();
        prop_assert!(parsed.verify(&ed25519_public(&ed(b))).is_ok());
        prop_assert!(matches!(
            parsed.verify(&ed25519_public(&ed(a))),
            Err(AuthError::Signature)
        ));
    }

    /// No other name makes an Ed25519 key verify anything, and `Ed25519`
    /// makes no other key type verify: the algorithm follows from the key.
    #[test]
    fn other_names_and_other_keys_are_refused(
        alg in prop_oneof![
            Just("none".to_owned()),
            Just("HS256".to_owned()),
            Just("ES256".to_owned()),
            Just("ed25519".to_owned()),
            Just("EDDSA".to_owned()),
            Just("Ed448".to_owned()),
            "[A-Za-z0-9]{0,10}",
        ],
        seed in 1u8..=255,
    ) {
        prop_assume!(alg != "EdDSA" && alg != "Ed25519");
        let key = ed(seed);
        let claims = json!({"sub": "x"});
        let public = ed25519_public(&key);
        // Signed properly by the key, but under another name.
        let jws = sign_ed25519(&json!({"alg": alg}), &claims, &key);
        prop_assert!(matches!(
            Unverified::parse(&jws).unwrap().verify(&public),
            Err(AuthError::Algorithm(_))
        ));
        // HMAC keyed with the public key's bytes.
        let forged = hmac_signed(&json!({"alg": alg}), &claims, key.verifying_key().as_bytes());
        prop_assert!(Unverified::parse(&forged).unwrap().verify(&public).is_err());
        // `Ed25519` over a P-256 key.
        let mut scalar = [0u8; 32];
        scalar[31] = seed;
        let ec = p256::ecdsa::SigningKey::from_slice(&scalar).unwrap();
        let es = sign_es256(&json!({"alg": "Ed25519"}), &claims, &ec);
        prop_assert!(matches!(
            Unverified::parse(&es).unwrap().verify(&p256_public(&ec)),
            Err(AuthError::Algorithm(_))
        ));
    }
}

async fn env() -> Env {
    authority(without_nonce(ISSUER)).await
}

/// A DPoP proof for `POST` of the token endpoint, its header naming `alg`
/// and embedding the public key of `jwk_of`, signed with `signer`.
fn ed_proof(
    alg: &str,
    jwk_of: &ed25519_dalek::SigningKey,
    signer: &ed25519_dalek::SigningKey,
    jti: &str,
) -> String {
    let header =
        json!({"alg": alg, "typ": "dpop+jwt", "jwk": ed25519_public(jwk_of).to_json(None)});
    let claims =
        json!({"htm": "POST", "htu": format!("{ISSUER}/oauth2/token"), "iat": START, "jti": jti});
    sign_ed25519(&header, &claims, signer)
}

#[tokio::test]
async fn dpop_proofs_labelled_ed25519_bind_and_forgeries_are_refused() {
    let e = env().await;
    let (id, secret) =
        common::create_with_secret(&e, &acme_service("bound", &["secrets:read"])).await;
    let url = format!("{ISSUER}/oauth2/token");
    let issue = |proof: String| {
        let (e, id, secret, url) = (&e, id.clone(), secret.clone(), url.clone());
        async move {
            let proofs = [proof.as_str()];
            let req = TokenRequest {
                dpop: Some(DpopCheck {
                    proofs: &proofs,
                    method: "POST",
                    url: &url,
                    access_token: None,
                    expected_jkt: None,
                    nonce: NonceRule::NotRequired,
                }),
                ..request(common::secret_credentials(&id, &secret))
            };
            e.auth.issue(&e.barrier, &req).await
        }
    };
    let issued = issue(ed_proof("Ed25519", &ed(7), &ed(7), "p1"))
        .await
        .unwrap();
    assert_eq!(issued.token_type, "DPoP");
    let claims: Value = serde_json::from_slice(
        &B64.decode(issued.access_token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["cnf"]["jkt"], ed25519_public(&ed(7)).thumbprint());

    // Signed with a key other than the one it embeds.
    assert!(matches!(
        issue(ed_proof("Ed25519", &ed(7), &ed(8), "p2")).await,
        Err(AuthError::Dpop(_))
    ));
    // `none` and HMAC in place of the signature.
    let header = |alg: &str| json!({"alg": alg, "typ": "dpop+jwt", "jwk": ed25519_public(&ed(7)).to_json(None)});
    let claims = json!({"htm": "POST", "htu": url, "iat": START, "jti": "p3"});
    let none = format!(
        "{}.{}.{}",
        B64.encode(header("none").to_string()),
        B64.encode(claims.to_string()),
        B64.encode([0u8; 64])
    );
    let hs = hmac_signed(&header("HS256"), &claims, ed(7).verifying_key().as_bytes());
    for forged in [none, hs] {
        assert!(matches!(issue(forged).await, Err(AuthError::Dpop(_))));
    }
    // The same key under `EdDSA` still binds.
    assert!(issue(ed_proof("EdDSA", &ed(7), &ed(7), "p4")).await.is_ok());
}

#[tokio::test]
async fn client_assertions_labelled_ed25519_authenticate_their_client_only() {
    let e = env().await;
    let key = ed(3);
    let mut spec = acme_service("signer", &[]);
    spec.jwks = vec![ed25519_public(&key).to_json(None)];
    let id = e
        .auth
        .create_client(&e.barrier, &spec)
        .await
        .unwrap()
        .record
        .client_id;
    let assertion = |alg: &str, signer: &ed25519_dalek::SigningKey, jti: &str| {
        let claims = json!({"iss": id, "sub": id, "aud": format!("{ISSUER}/oauth2/token"),
            "exp": START + 60, "iat": START, "jti": jti});
        sign_ed25519(&json!({"alg": alg, "typ": "JWT"}), &claims, signer)
    };
    let issue = |a: String| {
        let e = &e;
        let req = request(ClientCredentials::Assertion {
            client_id: None,
            assertion: a,
        });
        async move { e.auth.issue(&e.barrier, &req).await }
    };
    assert!(issue(assertion("Ed25519", &key, "a1")).await.is_ok());
    assert!(matches!(
        issue(assertion("Ed25519", &ed(4), "a2")).await,
        Err(AuthError::InvalidClient)
    ));
    let claims = json!({"iss": id, "sub": id, "aud": format!("{ISSUER}/oauth2/token"),
        "exp": START + 60, "iat": START, "jti": "a3"});
    let hs = hmac_signed(
        &json!({"alg": "HS256"}),
        &claims,
        key.verifying_key().as_bytes(),
    );
    assert!(matches!(issue(hs).await, Err(AuthError::InvalidClient)));
    assert!(matches!(
        issue(relabelled("none", &claims, &[0u8; 64])).await,
        Err(AuthError::InvalidClient)
    ));
}

#[test]
fn metadata_advertises_both_names_wherever_private_key_jwt_is_listed() {
    let auth = vern_authority::Authority::new(
        vern_authority::AuthorityConfig::new(ISSUER),
        std::sync::Arc::new(vern_core::SystemClock),
    );
    let meta = auth.metadata();
    for endpoint in ["token", "introspection", "revocation"] {
        let methods = &meta[format!("{endpoint}_endpoint_auth_methods_supported")];
        assert!(methods
            .as_array()
            .unwrap()
            .contains(&json!("private_key_jwt")));
        assert_eq!(
            meta[format!("{endpoint}_endpoint_auth_signing_alg_values_supported")],
            json!(["EdDSA", "Ed25519", "ES256"]),
            "{endpoint}"
        );
    }
    assert_eq!(
        meta["dpop_signing_alg_values_supported"],
        json!(["EdDSA", "Ed25519", "ES256"])
    );
}
