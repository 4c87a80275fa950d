//! Artifact trust benchmarks: envelopes signed and verified per second next
//! to the raw Ed25519 signature rate over the same bytes in the same run,
//! and evidence lookups by subject with 1,000,000 envelopes stored on
//! SQLite (p50 and p99 printed, criterion's mean beside them).
//!
//! The store is seeded once through `EvidenceStore::put_all` (no HTTP) and
//! kept at `target/attest-bench/` with its unseal key, so later runs reuse
//! it. `VERN_ATTEST_BENCH_ENVELOPES` sets another size.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss
)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ed25519_dalek::{Signer as _, SigningKey};
use serde_json::json;
use vern_attest::statement::SLSA_PROVENANCE_V1;
use vern_attest::{
    verify_envelope, Envelope, EvidenceStore, KeyOwner, KeyStore, Provenance, Sha256Digest,
    Statement, SubjectRef,
};
use vern_core::{ManualClock, TenantId};
use vern_seal::{Barrier, IssuedShare, Seal};

const NOW: u64 = 1_800_000_000;
const BATCH: usize = 500;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn acme() -> KeyOwner {
    KeyOwner::Tenant(TenantId::parse("acme").unwrap())
}

fn subject(i: u64) -> SubjectRef {
    let hex = Sha256Digest::of(&i.to_le_bytes());
    SubjectRef::parse(&format!("reg.example/app{i}@{hex}")).unwrap()
}

fn statement(i: u64) -> Statement {
    Statement::new(
        &subject(i),
        SLSA_PROVENANCE_V1,
        json!({"buildDefinition": {"buildType": "https://example.com/ci/v1", "run": i}}),
    )
    .unwrap()
}

/// A barrier over a SQLite file in `dir`, initialised once; its unseal
/// share is kept beside it so a later run opens the same store.
async fn barrier(dir: &std::path::Path) -> Arc<Barrier> {
    let url = format!("sqlite:{}", dir.join("evidence.db").display());
    let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(NOW)));
    let store = vern_store::open(&url, 4).await.unwrap();
    let seal = Seal::new(store, clock).await.unwrap();
    let share_file = dir.join("share.hex");
    match std::fs::read_to_string(&share_file) {
        Ok(share) => {
            seal.unseal(share.trim()).await.unwrap();
        }
        Err(_) => {
            let out = seal.init_unsealed(1, 1, &[], None).await.unwrap();
            let IssuedShare::Clear(share) = &out.shares[0] else {
                panic!("share not in clear")
            };
            std::fs::write(&share_file, hex::encode(share.expose())).unwrap();
        }
    }
    seal.barrier().unwrap()
}

fn sign_verify(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let b = rt.block_on(barrier(dir.path()));
    let owner = acme();
    let keys = rt
        .block_on(KeyStore::default().published(&b, &owner, NOW))
        .unwrap();
    let st = statement(1);
    let (envelope, _) = rt
        .block_on(KeyStore::default().sign(&b, &owner, &st, NOW))
        .unwrap();
    let pae = envelope.pae().unwrap();
    let raw_key = SigningKey::from_bytes(&[7; 32]);
    let raw_sig = raw_key.sign(&pae);
    let raw_public = raw_key.verifying_key();

    let mut g = c.benchmark_group("envelopes");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sign_envelope_with_stored_key", |bench| {
        bench.to_async(&rt).iter(|| async {
            KeyStore::default()
                .sign(&b, &owner, &st, NOW)
                .await
                .unwrap()
        });
    });
    g.bench_function("raw_ed25519_sign_same_pae", |bench| {
        bench.iter(|| raw_key.sign(&pae));
    });
    let bytes = envelope.to_bytes().unwrap();
    g.bench_function("verify_envelope_from_bytes", |bench| {
        bench.iter(|| {
            let env = Envelope::parse(&bytes).unwrap();
            verify_envelope(&env, &keys, Some(NOW), NOW, None).unwrap()
        });
    });
    g.bench_function("raw_ed25519_verify_same_pae", |bench| {
        bench.iter(|| raw_public.verify_strict(&pae, &raw_sig).unwrap());
    });
    g.finish();
}

fn envelopes_wanted() -> u64 {
    std::env::var("VERN_ATTEST_BENCH_ENVELOPES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// Seeds `n` envelopes (one subject each) unless the directory already
/// holds that many.
async fn seed(b: &Barrier, dir: &std::path::Path, n: u64) {
    let marker = dir.join("seeded.txt");
    if std::fs::read_to_string(&marker)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        == Some(n)
    {
        return;
    }
    let owner = acme();
    let ks = KeyStore::default();
    let keys = ks.published(b, &owner, NOW).await.unwrap();
    let started = Instant::now();
    let mut i = 0;
    while i < n {
        let mut items = Vec::with_capacity(BATCH);
        for j in i..(i + BATCH as u64).min(n) {
            let (env, _) = ks.sign(b, &owner, &statement(j), NOW).await.unwrap();
            let verified = verify_envelope(&env, &keys, Some(NOW), NOW, None).unwrap();
            let provenance = Provenance {
                signer: "svc.acme.ci.prod.builder".to_owned(),
                signed_at: NOW,
            };
            items.push((owner.clone(), env.to_bytes().unwrap(), verified, provenance));
        }
        i += items.len() as u64;
        EvidenceStore.put_all(b, &items).await.unwrap();
        if i % 50_000 == 0 {
            eprintln!("seeded {i} envelopes in {:?}", started.elapsed());
        }
    }
    std::fs::write(&marker, n.to_string()).unwrap();
}

fn lookups(c: &mut Criterion) {
    let rt = runtime();
    let n = envelopes_wanted();
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../../target/attest-bench/{n}"));
    std::fs::create_dir_all(&dir).unwrap();
    let b = rt.block_on(barrier(&dir));
    rt.block_on(seed(&b, &dir, n));
    let owner = acme();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        // xorshift: spread lookups over the whole store.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let mut times = Vec::with_capacity(10_000);
    rt.block_on(async {
        for _ in 0..10_000 {
            let digest = subject(next()).digest;
            let t = Instant::now();
            let found = EvidenceStore
                .by_subject(&b, Some(&owner), &digest)
                .await
                .unwrap();
            times.push(t.elapsed());
            assert_eq!(found.len(), 1);
        }
    });
    times.sort();
    eprintln!(
        "evidence lookups by subject at {n} envelopes: p50 {:?}, p99 {:?}, max {:?} (10,000 lookups)",
        times[times.len() / 2],
        times[times.len() * 99 / 100],
        times[times.len() - 1]
    );
    let mut g = c.benchmark_group("evidence");
    g.throughput(Throughput::Elements(1));
    g.bench_function(format!("lookup_by_subject_at_{n}"), |bench| {
        bench.to_async(&rt).iter(|| {
            let digest = subject(next()).digest;
            let b = Arc::clone(&b);
            let owner = owner.clone();
            async move {
                EvidenceStore
                    .by_subject(&b, Some(&owner), &digest)
                    .await
                    .unwrap()
            }
        });
    });
    g.finish();
}

criterion_group!(benches, sign_verify, lookups);
criterion_main!(benches);
