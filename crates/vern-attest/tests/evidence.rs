//! The evidence store on SQLite and PostgreSQL: content addressing,
//! idempotent and immutable writes, the subject index, tenant separation,
//! nothing stored that did not verify, all-or-nothing batches, and two
//! replicas storing the same envelope at once.
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
use serde_json::json;
use vern_attest::statement::{SLSA_PROVENANCE_V1, VULNS_V01};
use vern_attest::{
    verify_envelope, AttestError, Envelope, EvidenceStore, KeyOwner, KeyStore, Provenance,
    Sha256Digest, Statement, SubjectRef,
};
use vern_core::{ManualClock, TenantId};
use vern_seal::{Barrier, IssuedShare, Seal};
use vern_store::testing::TestDb;

const NOW: u64 = 1_800_000_000;

/// Two replicas (own seal and barrier) over one database.
async fn replicas(db: &TestDb) -> (Arc<Barrier>, Arc<Barrier>) {
    let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(NOW)));
    let seal = Seal::new(db.open().await, clock.clone()).await.unwrap();
    let out = seal.init_unsealed(1, 1, &[], None).await.unwrap();
    let IssuedShare::Clear(share) = &out.shares[0] else {
        panic!("share not in clear")
    };
    let seal2 = Seal::new(db.open().await, clock).await.unwrap();
    seal2.unseal(&hex::encode(share.expose())).await.unwrap();
    (seal.barrier().unwrap(), seal2.barrier().unwrap())
}

async fn each_backend<F, Fut>(f: F)
where
    F: Fn(TestDb) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    f(TestDb::sqlite()).await;
    if let Some(db) = TestDb::postgres().await {
        f(db).await;
    }
}

fn tenant(t: &str) -> KeyOwner {
    KeyOwner::Tenant(TenantId::parse(t).unwrap())
}

fn subject(c: char) -> SubjectRef {
    SubjectRef::parse(&format!(
        "reg.example/web@sha256:{}",
        c.to_string().repeat(64)
    ))
    .unwrap()
}

fn by(signer: &str) -> Provenance {
    Provenance {
        signer: signer.to_owned(),
        signed_at: NOW,
    }
}

async fn signed(b: &Barrier, owner: &KeyOwner, s: &SubjectRef, predicate_type: &str) -> Vec<u8> {
    let st = Statement::new(s, predicate_type, json!({"n": predicate_type})).unwrap();
    let (env, _) = KeyStore::default().sign(b, owner, &st, NOW).await.unwrap();
    env.to_bytes().unwrap()
}

#[tokio::test]
async fn stores_by_content_and_indexes_by_subject() {
    each_backend(|db| async move {
        let (b, replica) = replicas(&db).await;
        let store = EvidenceStore;
        let acme = tenant("acme");
        let trusted = KeyStore::default().published(&b, &acme, NOW).await.unwrap();
        let s = subject('a');
        let bytes = signed(&b, &acme, &s, SLSA_PROVENANCE_V1).await;

        let (stored, verified) = store
            .put(
                &b,
                &acme,
                &bytes,
                &trusted,
                &by("svc.acme.ci.prod.builder"),
                NOW,
            )
            .await
            .unwrap();
        assert!(stored.created);
        assert_eq!(stored.address, Sha256Digest::of(&bytes));
        assert_eq!(stored.subjects, vec![s.digest.clone()]);
        assert_eq!(verified.statement.predicate_type, SLSA_PROVENANCE_V1);

        // The same bytes again, from another replica: nothing written.
        let (again, _) = store
            .put(
                &replica,
                &acme,
                &bytes,
                &trusted,
                &by("svc.acme.other"),
                NOW,
            )
            .await
            .unwrap();
        assert!(!again.created);
        assert_eq!(again.address, stored.address);

        let e = store
            .get(&replica, &acme, &stored.address)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(e.bytes, bytes);
        assert_eq!(
            e.signer, "svc.acme.ci.prod.builder",
            "the first write stays"
        );
        assert_eq!(e.signed_at, NOW);
        assert_eq!(e.predicate_type, SLSA_PROVENANCE_V1);
        assert_eq!(
            e.kids,
            trusted.iter().map(|k| k.kid.clone()).collect::<Vec<_>>()
        );

        let second = signed(&b, &acme, &s, VULNS_V01).await;
        store
            .put(&b, &acme, &second, &trusted, &by("x"), NOW)
            .await
            .unwrap();
        let found = store
            .by_subject(&replica, Some(&acme), &s.digest)
            .await
            .unwrap();
        assert_eq!(found.len(), 2);
        assert!(store
            .by_subject(&b, Some(&acme), &subject('0').digest)
            .await
            .unwrap()
            .is_empty());
    })
    .await;
}

#[tokio::test]
async fn tenants_see_only_their_own_evidence() {
    each_backend(|db| async move {
        let (b, _) = replicas(&db).await;
        let store = EvidenceStore;
        let keys = KeyStore::default();
        let (acme, globex) = (tenant("acme"), tenant("globex"));
        let s = subject('b');
        let a = signed(&b, &acme, &s, SLSA_PROVENANCE_V1).await;
        let g = signed(&b, &globex, &s, SLSA_PROVENANCE_V1).await;
        let acme_keys = keys.published(&b, &acme, NOW).await.unwrap();
        let globex_keys = keys.published(&b, &globex, NOW).await.unwrap();
        let a_addr = store
            .put(&b, &acme, &a, &acme_keys, &by("a"), NOW)
            .await
            .unwrap()
            .0
            .address;
        let g_addr = store
            .put(&b, &globex, &g, &globex_keys, &by("g"), NOW)
            .await
            .unwrap()
            .0
            .address;

        // A tenant cannot store an envelope its keys did not sign …
        let err = store
            .put(&b, &acme, &g, &acme_keys, &by("a"), NOW)
            .await
            .unwrap_err();
        assert!(matches!(err, AttestError::UnknownKey(_)), "{err}");
        // … and looks up only its own.
        let mine = store.by_subject(&b, Some(&acme), &s.digest).await.unwrap();
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0].address, a_addr);
        assert!(store.get(&b, &acme, &g_addr).await.unwrap().is_none());
        // Every owner's, for platform auditors.
        let all = store.by_subject(&b, None, &s.digest).await.unwrap();
        assert_eq!(all.len(), 2);
        assert!(all.iter().any(|e| e.owner == globex && e.address == g_addr));
    })
    .await;
}

#[tokio::test]
async fn bad_input_is_stored_nowhere() {
    each_backend(|db| async move {
        let (b, _) = replicas(&db).await;
        let store = EvidenceStore;
        let acme = tenant("acme");
        let keys = KeyStore::default().published(&b, &acme, NOW).await.unwrap();
        let s = subject('c');
        let good = signed(&b, &acme, &s, SLSA_PROVENANCE_V1).await;
        let mut env = Envelope::parse(&good).unwrap();
        env.payload = STANDARD.encode(
            Statement::new(&subject('d'), SLSA_PROVENANCE_V1, json!({}))
                .unwrap()
                .to_bytes()
                .unwrap(),
        );
        let other_bytes = env.to_bytes().unwrap();
        for (bad, what) in [
            (b"{not json".to_vec(), "malformed"),
            (other_bytes, "signature over other bytes"),
        ] {
            assert!(
                store
                    .put(&b, &acme, &bad, &keys, &by("a"), NOW)
                    .await
                    .is_err(),
                "{what}"
            );
        }
        // A signing time outside the key's window.
        let early = Provenance {
            signer: "a".into(),
            signed_at: NOW - 1,
        };
        let err = store
            .put(&b, &acme, &good, &keys, &early, NOW)
            .await
            .unwrap_err();
        assert!(matches!(err, AttestError::KeyNotValid { .. }), "{err}");
        for d in ['c', 'd'] {
            assert!(store
                .by_subject(&b, None, &subject(d).digest)
                .await
                .unwrap()
                .is_empty());
        }
    })
    .await;
}

#[tokio::test]
async fn batches_are_all_or_nothing() {
    each_backend(|db| async move {
        let (b, replica) = replicas(&db).await;
        let store = EvidenceStore;
        let acme = tenant("acme");
        let keys = KeyStore::default().published(&b, &acme, NOW).await.unwrap();
        let mut items = Vec::new();
        for c in ['e', 'f'] {
            let bytes = signed(&b, &acme, &subject(c), SLSA_PROVENANCE_V1).await;
            let v = verify_envelope(
                &Envelope::parse(&bytes).unwrap(),
                &keys,
                Some(NOW),
                NOW,
                None,
            )
            .unwrap();
            items.push((acme.clone(), bytes, v, by("import")));
        }
        // One of them is already stored by a replica: the rest is written,
        // the stored one left as it is.
        store
            .put(&replica, &acme, &items[0].1, &keys, &by("first"), NOW)
            .await
            .unwrap();
        let out = store.put_all(&b, &items).await.unwrap();
        assert!(!out[0].created);
        assert!(out[1].created);
        let first = store
            .get(&b, &acme, &out[0].address)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.signer, "first");
        // Idempotent as a whole.
        let again = store.put_all(&b, &items).await.unwrap();
        assert!(again.iter().all(|s| !s.created));
    })
    .await;
}

#[tokio::test]
async fn concurrent_writers_of_the_same_bytes_agree() {
    each_backend(|db| async move {
        let (b, replica) = replicas(&db).await;
        let acme = tenant("acme");
        let keys = KeyStore::default().published(&b, &acme, NOW).await.unwrap();
        let bytes = signed(&b, &acme, &subject('1'), SLSA_PROVENANCE_V1).await;
        let (px, py) = (by("x"), by("y"));
        let (x, y) = tokio::join!(
            EvidenceStore.put(&b, &acme, &bytes, &keys, &px, NOW),
            EvidenceStore.put(&replica, &acme, &bytes, &keys, &py, NOW),
        );
        let (x, y) = (x.unwrap().0, y.unwrap().0);
        assert_eq!(x.address, y.address);
        assert!(x.created ^ y.created, "exactly one write creates the entry");
    })
    .await;
}
