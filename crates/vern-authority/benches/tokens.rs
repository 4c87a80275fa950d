//! Token issuance (client secret, private_key_jwt) and in-process
//! verification (bearer, and token + DPoP proof), next to raw Ed25519 sign
//! and verify measured in the same run. Issuance runs against SQLite in a
//! temporary directory, so private_key_jwt includes its durable jti write.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use ed25519_dalek::{Signer as _, Verifier as _};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use vern_authority::jws::{ed25519_public, p256_public, sign_ed25519, sign_es256};
use vern_authority::{
    Authority, AuthorityConfig, ClientCredentials, ClientSpec, DpopCheck, JwksSource, NonceRule,
    Presented, TokenRequest, Verifier, VerifierConfig,
};
use vern_core::ManualClock;
use vern_seal::Seal;

const ISSUER: &str = "https://vern.bench";
const NOW: u64 = 1_800_000_000;

struct Fixed(Value);

impl JwksSource for Fixed {
    async fn fetch(&self) -> Result<Value, String> {
        Ok(self.0.clone())
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(NOW)));
    let (auth, barrier) = rt.block_on(async {
        let store = vern_store::open(&format!("sqlite:{}", dir.path().join("b.db").display()), 2)
            .await
            .unwrap();
        let seal = Seal::new(store, clock.clone()).await.unwrap();
        seal.init_unsealed(1, 1, &[], None).await.unwrap();
        let mut config = AuthorityConfig::new(ISSUER);
        config.token_nonce = NonceRule::NotRequired;
        (
            Authority::new(config, clock.clone()),
            seal.barrier().unwrap(),
        )
    });
    let spec = |name: &str| ClientSpec {
        tenant: Some("acme".into()),
        project: Some("web".into()),
        environment: Some("prod".into()),
        name: name.into(),
        ..ClientSpec::default()
    };
    let secret_client = rt
        .block_on(auth.create_client(&barrier, &spec("secret")))
        .unwrap();
    let client_key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let mut keyed = spec("keyed");
    keyed.jwks = vec![ed25519_public(&client_key).to_json(None)];
    let keyed_id = rt
        .block_on(auth.create_client(&barrier, &keyed))
        .unwrap()
        .record
        .client_id;

    let raw = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
    let msg = [0x42u8; 300];
    let sig = raw.sign(&msg);
    let mut group = c.benchmark_group("baseline");
    group.bench_function("ed25519_sign", |b| b.iter(|| raw.sign(&msg)));
    group.bench_function("ed25519_verify_strict", |b| {
        b.iter(|| raw.verifying_key().verify_strict(&msg, &sig).unwrap())
    });
    group.bench_function("ed25519_verify", |b| {
        b.iter(|| raw.verifying_key().verify(&msg, &sig).unwrap())
    });
    group.finish();

    let mut group = c.benchmark_group("issue");
    let id = secret_client.record.client_id.clone();
    let secret = secret_client.secret.unwrap();
    group.bench_function("client_secret", |b| {
        b.to_async(&rt).iter(|| async {
            let req = TokenRequest {
                credentials: ClientCredentials::Secret {
                    client_id: id.clone(),
                    secret: secret.clone(),
                },
                scope: None,
                dpop: None,
            };
            auth.issue(&barrier, &req).await.unwrap()
        });
    });
    let n = AtomicU64::new(0);
    group.bench_function("private_key_jwt", |b| {
        b.to_async(&rt).iter(|| async {
            let jti = n.fetch_add(1, Ordering::Relaxed);
            let assertion = sign_ed25519(
                &json!({"alg": "EdDSA"}),
                &json!({"iss": keyed_id, "sub": keyed_id, "aud": format!("{ISSUER}/oauth2/token"), "exp": NOW + 60, "jti": format!("j{jti}")}),
                &client_key,
            );
            let req = TokenRequest {
                credentials: ClientCredentials::Assertion { client_id: None, assertion },
                scope: None,
                dpop: None,
            };
            auth.issue(&barrier, &req).await.unwrap()
        });
    });
    group.finish();

    // A DPoP-bound token and a verifier holding the JWKS.
    let prover = p256::ecdsa::SigningKey::from_slice(&[5; 32]).unwrap();
    let proof_for = |htm: &str, htu: &str, jti: String, token: Option<&str>| {
        let mut claims = json!({"htm": htm, "htu": htu, "iat": NOW, "jti": jti});
        if let Some(t) = token {
            claims["ath"] = json!(B64.encode(Sha256::digest(t.as_bytes())));
        }
        sign_es256(
            &json!({"alg": "ES256", "typ": "dpop+jwt", "jwk": p256_public(&prover).to_json(None)}),
            &claims,
            &prover,
        )
    };
    let token_url = format!("{ISSUER}/oauth2/token");
    let bound = rt.block_on(async {
        let p = proof_for("POST", &token_url, "setup".into(), None);
        let proofs = [p.as_str()];
        let req = TokenRequest {
            credentials: ClientCredentials::Secret {
                client_id: id.clone(),
                secret: secret.clone(),
            },
            scope: None,
            dpop: Some(DpopCheck {
                proofs: &proofs,
                method: "POST",
                url: &token_url,
                access_token: None,
                expected_jkt: None,
                nonce: NonceRule::NotRequired,
            }),
        };
        auth.issue(&barrier, &req).await.unwrap().access_token
    });
    let bearer = rt.block_on(async {
        let req = TokenRequest {
            credentials: ClientCredentials::Secret {
                client_id: id.clone(),
                secret: secret.clone(),
            },
            scope: None,
            dpop: None,
        };
        auth.issue(&barrier, &req).await.unwrap().access_token
    });
    let jwks = rt.block_on(auth.jwks(&barrier)).unwrap();
    let verifier = Verifier::new(
        VerifierConfig::new(ISSUER, ISSUER),
        Fixed(jwks),
        clock.clone(),
    );
    let api = "https://api.internal/v1/thing";
    let mut group = c.benchmark_group("verify");
    group.bench_function("bearer_token", |b| {
        b.to_async(&rt)
            .iter(|| async { verifier.verify(&bearer, Presented::Bearer).await.unwrap() });
    });
    let k = AtomicU64::new(0);
    group.bench_function("token_and_dpop_proof", |b| {
        b.iter_batched(
            || {
                proof_for(
                    "GET",
                    api,
                    format!("p{}", k.fetch_add(1, Ordering::Relaxed)),
                    Some(&bound),
                )
            },
            |proof| {
                rt.block_on(async {
                    let proofs = [proof.as_str()];
                    let check = DpopCheck {
                        proofs: &proofs,
                        method: "GET",
                        url: api,
                        access_token: None,
                        expected_jkt: None,
                        nonce: NonceRule::NotRequired,
                    };
                    verifier
                        .verify(&bound, Presented::Dpop(check))
                        .await
                        .unwrap()
                })
            },
            BatchSize::SmallInput,
        );
    });
    // The same with an Ed25519 DPoP key, whose proofs verify faster.
    let ed_prover = ed25519_dalek::SigningKey::from_bytes(&[6; 32]);
    let ed_proof_for = |htm: &str, htu: &str, jti: String, token: Option<&str>| {
        let mut claims = json!({"htm": htm, "htu": htu, "iat": NOW, "jti": jti});
        if let Some(t) = token {
            claims["ath"] = json!(B64.encode(Sha256::digest(t.as_bytes())));
        }
        sign_ed25519(
            &json!({"alg": "EdDSA", "typ": "dpop+jwt", "jwk": ed25519_public(&ed_prover).to_json(None)}),
            &claims,
            &ed_prover,
        )
    };
    let ed_bound = rt.block_on(async {
        let p = ed_proof_for("POST", &token_url, "setup-ed".into(), None);
        let proofs = [p.as_str()];
        let req = TokenRequest {
            credentials: ClientCredentials::Secret {
                client_id: id.clone(),
                secret: secret.clone(),
            },
            scope: None,
            dpop: Some(DpopCheck {
                proofs: &proofs,
                method: "POST",
                url: &token_url,
                access_token: None,
                expected_jkt: None,
                nonce: NonceRule::NotRequired,
            }),
        };
        auth.issue(&barrier, &req).await.unwrap().access_token
    });
    group.bench_function("token_and_dpop_proof_eddsa", |b| {
        b.iter_batched(
            || {
                ed_proof_for(
                    "GET",
                    api,
                    format!("e{}", k.fetch_add(1, Ordering::Relaxed)),
                    Some(&ed_bound),
                )
            },
            |proof| {
                rt.block_on(async {
                    let proofs = [proof.as_str()];
                    let check = DpopCheck {
                        proofs: &proofs,
                        method: "GET",
                        url: api,
                        access_token: None,
                        expected_jkt: None,
                        nonce: NonceRule::NotRequired,
                    };
                    verifier
                        .verify(&ed_bound, Presented::Dpop(check))
                        .await
                        .unwrap()
                })
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
