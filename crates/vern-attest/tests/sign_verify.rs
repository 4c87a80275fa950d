//! Signing and verification through the public API: per-owner keys behind
//! a real barrier on SQLite, rotation with retired keys that still verify
//! what they signed, and every refusal: tampered payloads and signatures,
//! unknown keys, keys outside their window, other subjects, other tenants.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use proptest::prelude::*;
use serde_json::json;
use vern_attest::statement::SLSA_PROVENANCE_V1;
use vern_attest::{
    pae, verify_envelope, AttestError, Envelope, KeyAlg, KeyOwner, KeyStore, Sha256Digest,
    Statement, SubjectRef,
};
use vern_core::{ManualClock, TenantId};
use vern_seal::{Barrier, Seal};

const NOW: u64 = 1_800_000_000;

async fn barrier(dir: &tempfile::TempDir) -> Arc<Barrier> {
    let store = vern_store::open(&format!("sqlite:{}", dir.path().join("a.db").display()), 2)
        .await
        .unwrap();
    let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(NOW)));
    let seal = Seal::new(store, clock).await.unwrap();
    seal.init_unsealed(1, 1, &[], None).await.unwrap();
    seal.barrier().unwrap()
}

fn tenant(t: &str) -> KeyOwner {
    KeyOwner::Tenant(TenantId::parse(t).unwrap())
}

fn subject(byte: char) -> SubjectRef {
    SubjectRef::parse(&format!(
        "reg.example/acme/web@sha256:{}",
        byte.to_string().repeat(64)
    ))
    .unwrap()
}

fn statement(s: &SubjectRef) -> Statement {
    Statement::new(
        s,
        SLSA_PROVENANCE_V1,
        json!({"buildDefinition": {"buildType": "x"}}),
    )
    .unwrap()
}

#[tokio::test]
async fn signs_and_verifies_with_each_algorithm() {
    let dir = tempfile::tempdir().unwrap();
    let b = barrier(&dir).await;
    for (owner, alg) in [
        (tenant("acme"), KeyAlg::Ed25519),
        (tenant("globex"), KeyAlg::EcdsaP256),
        (KeyOwner::Platform, KeyAlg::Ed25519),
    ] {
        let keys = KeyStore {
            alg,
            publish_delay: 0,
        };
        let s = subject('a');
        let (env, kid) = keys.sign(&b, &owner, &statement(&s), NOW).await.unwrap();
        let published = keys.published(&b, &owner, NOW).await.unwrap();
        assert_eq!(published.len(), 1);
        assert_eq!(published[0].kid, kid);
        assert_eq!(published[0].public.alg(), alg);
        assert_eq!(env.signatures[0].keyid, kid);
        // The signature is over PAE(type, payload), in standard base64.
        let sig = STANDARD.decode(&env.signatures[0].sig).unwrap();
        assert!(published[0]
            .public
            .verify(&pae(&env.payload_type, &env.payload_bytes().unwrap()), &sig));
        let v = verify_envelope(&env, &published, Some(NOW), NOW, Some(&s.digest)).unwrap();
        assert_eq!(v.statement, statement(&s));
        assert_eq!(v.kids, vec![kid]);
        // A round trip through bytes changes nothing.
        let again = Envelope::parse(&env.to_bytes().unwrap()).unwrap();
        assert_eq!(again, env);
    }
}

#[tokio::test]
async fn rotation_keeps_old_evidence_verifiable_in_its_window() {
    let dir = tempfile::tempdir().unwrap();
    let b = barrier(&dir).await;
    let owner = tenant("acme");
    let keys = KeyStore {
        alg: KeyAlg::Ed25519,
        publish_delay: 60,
    };
    let s = subject('b');
    let (old_env, old_kid) = keys.sign(&b, &owner, &statement(&s), NOW).await.unwrap();
    let new_kid = keys.rotate(&b, &owner, NOW + 10).await.unwrap();
    assert_ne!(new_kid, old_kid);

    // Published at once, signing only after the delay.
    let published = keys.published(&b, &owner, NOW + 10).await.unwrap();
    assert_eq!(published.len(), 2);
    let (_, kid) = keys
        .sign(&b, &owner, &statement(&s), NOW + 30)
        .await
        .unwrap();
    assert_eq!(kid, old_kid);
    let (new_env, kid) = keys
        .sign(&b, &owner, &statement(&s), NOW + 70)
        .await
        .unwrap();
    assert_eq!(kid, new_kid);

    let published = keys.published(&b, &owner, NOW + 70).await.unwrap();
    let old = published.iter().find(|k| k.kid == old_kid).unwrap();
    assert_eq!(old.valid_until, Some(NOW + 70));
    // The retired key still verifies what it signed while it was valid …
    verify_envelope(&old_env, &published, Some(NOW), NOW + 1000, Some(&s.digest)).unwrap();
    // … and nothing dated after its retirement.
    let err = verify_envelope(&old_env, &published, Some(NOW + 71), NOW + 1000, None).unwrap_err();
    assert!(matches!(err, AttestError::KeyNotValid { .. }), "{err}");
    // Without a signing time, the key must be valid now.
    let err = verify_envelope(&old_env, &published, None, NOW + 1000, None).unwrap_err();
    assert!(matches!(err, AttestError::KeyNotValid { .. }), "{err}");
    verify_envelope(&new_env, &published, None, NOW + 1000, None).unwrap();
    // A new key is not valid before it signs.
    let err = verify_envelope(&new_env, &published, Some(NOW + 20), NOW, None).unwrap_err();
    assert!(matches!(err, AttestError::KeyNotValid { .. }), "{err}");
}

#[tokio::test]
async fn refuses_tampering_other_subjects_and_other_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let b = barrier(&dir).await;
    let keys = KeyStore::default();
    let s = subject('c');
    let (env, _) = keys
        .sign(&b, &tenant("acme"), &statement(&s), NOW)
        .await
        .unwrap();
    let acme = keys.published(&b, &tenant("acme"), NOW).await.unwrap();
    let globex = keys.published(&b, &tenant("globex"), NOW).await.unwrap();

    // Another tenant's keys do not know the signer.
    let err = verify_envelope(&env, &globex, None, NOW, None).unwrap_err();
    assert!(matches!(err, AttestError::UnknownKey(_)), "{err}");

    // A key id is only a hint: under another signer's naming, the
    // signature still finds the trusted key that made it …
    let mut renamed = env.clone();
    renamed.signatures[0].keyid = "sslib-style-key-id".to_owned();
    let v = verify_envelope(&renamed, &acme, None, NOW, None).unwrap();
    assert_eq!(v.kids, vec![env.signatures[0].keyid.clone()]);
    // … and no other tenant's key passes for it.
    let err = verify_envelope(&renamed, &globex, None, NOW, None).unwrap_err();
    assert!(matches!(err, AttestError::UnknownKey(_)), "{err}");
    // Nor does an envelope whose signature no trusted key made.
    let mut forged = renamed.clone();
    forged.signatures[0].sig = STANDARD.encode([7u8; 64]);
    let err = verify_envelope(&forged, &acme, None, NOW, None).unwrap_err();
    assert!(matches!(err, AttestError::UnknownKey(_)), "{err}");

    // The statement does not name another subject.
    let err = verify_envelope(&env, &acme, None, NOW, Some(&subject('d').digest)).unwrap_err();
    assert!(matches!(err, AttestError::SubjectMismatch(_)), "{err}");

    // A signature over other bytes: the payload swapped for another
    // statement, and the payload type changed.
    let mut swapped = env.clone();
    swapped.payload = STANDARD.encode(statement(&subject('d')).to_bytes().unwrap());
    let err = verify_envelope(&swapped, &acme, None, NOW, None).unwrap_err();
    assert!(matches!(err, AttestError::BadSignature(_)), "{err}");
    let mut retyped = env.clone();
    retyped.payload_type = "application/json".into();
    assert!(verify_envelope(&retyped, &acme, None, NOW, None).is_err());

    // A valid signature plus a forged one is refused as a whole.
    let mut extra = env.clone();
    extra.push_signature(&acme[0].kid, &[0u8; 64]);
    let err = verify_envelope(&extra, &acme, None, NOW, None).unwrap_err();
    assert!(matches!(err, AttestError::BadSignature(_)), "{err}");

    // A signed payload that is not a statement is malformed.
    let (mut other, _) = keys
        .sign(&b, &tenant("acme"), &statement(&s), NOW)
        .await
        .unwrap();
    other.payload = STANDARD.encode(b"{}");
    other.signatures.clear();
    assert!(verify_envelope(&other, &acme, None, NOW, None).is_err());
}

#[test]
fn digests_in_the_wrong_format_are_refused() {
    for bad in ["sha256:ABC", "md5:abc", "", "sha256:"] {
        assert!(matches!(
            Sha256Digest::parse(bad),
            Err(AttestError::BadDigest(_))
        ));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// PAE is injective: different (type, body) pairs never encode alike,
    /// so no signature over one is a signature over another.
    #[test]
    fn pae_is_injective(
        t1 in ".{0,12}", b1 in proptest::collection::vec(any::<u8>(), 0..24),
        t2 in ".{0,12}", b2 in proptest::collection::vec(any::<u8>(), 0..24),
    ) {
        prop_assume!((t1.as_str(), &b1) != (t2.as_str(), &b2));
        prop_assert_ne!(pae(&t1, &b1), pae(&t2, &b2));
    }

    /// Any change to one byte of the signed payload, or one bit of the
    /// signature, makes verification fail, for both algorithms.
    #[test]
    fn any_flipped_byte_is_refused(pos in any::<prop::sample::Index>(), bit in 0u8..8, ec in any::<bool>(), in_sig in any::<bool>()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let b = barrier(&dir).await;
            let alg = if ec { KeyAlg::EcdsaP256 } else { KeyAlg::Ed25519 };
            let keys = KeyStore { alg, publish_delay: 0 };
            let owner = tenant("acme");
            let (env, _) = keys.sign(&b, &owner, &statement(&subject('e')), NOW).await.unwrap();
            let trusted = keys.published(&b, &owner, NOW).await.unwrap();
            let mut bad = env.clone();
            if in_sig {
                let mut sig = STANDARD.decode(&env.signatures[0].sig).unwrap();
                let i = pos.index(sig.len());
                sig[i] ^= 1 << bit;
                bad.signatures[0].sig = STANDARD.encode(sig);
            } else {
                let mut payload = env.payload_bytes().unwrap();
                let i = pos.index(payload.len());
                payload[i] ^= 1 << bit;
                bad.payload = STANDARD.encode(payload);
            }
            prop_assert!(verify_envelope(&bad, &trusted, None, NOW, None).is_err());
            Ok(())
        })?;
    }
}
