//! Audit benchmarks: appends (one at a time, and many concurrent requests
//! sharing group commits) on SQLite, and verification of a
//! 1,000,000-record log next to raw SHA-256 over the same bytes.
//!
//! The verification log is also left at `target/audit-bench/log.jsonl`
//! with its key in `key.txt`, for timing `vern audit verify --file`.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sha2::{Digest, Sha256};
use vern_audit::{
    Actor, AuditConfig, AuditKeys, AuditLog, AuditRecord, Checkpoint, Event, Line, TokenRef,
    Verdict, GENESIS,
};
use vern_core::SystemClock;
use vern_seal::Seal;

const RECORDS: u64 = 1_000_000;
const CHECKPOINT_EVERY: u64 = 10_000;

fn event(i: u64) -> Event {
    Event {
        request_id: format!("7f0c1e9a-2b3d-4c5e-8f90-{i:012}"),
        client_request_id: None,
        operation: "GET /v1/{mount}/data/{*path}".to_owned(),
        principal: Some(Actor {
            kind: "service".to_owned(),
            id: "svc.acme.web.prod.api".to_owned(),
            root: false,
            tenant: Some("acme".to_owned()),
            project: Some("web".to_owned()),
            environment: Some("prod".to_owned()),
        }),
        action: Some("secret.read".to_owned()),
        resource: Some(format!("secret:secret:acme/web/prod/db{}", i % 100)),
        resource_tenant: Some("acme".to_owned()),
        decision: Some(Verdict {
            allowed: true,
            policies: vec!["vern.scope.secrets:read".to_owned()],
            grant: None,
        }),
        status: 200,
        source: "10.1.2.3".to_owned(),
        token: Some(TokenRef {
            hmac: format!("hmac-sha256:{:064x}", i % 1000),
            id: Some(format!("5d7e9f10-{i:012}")),
            binding: "dpop".to_owned(),
        }),
        hmacs: Default::default(),
        details: Default::default(),
    }
}

fn bench_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/audit-bench");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a signed 1,000,000-record log once; returns its path and key.
fn million_record_log() -> (PathBuf, AuditKeys) {
    let dir = bench_dir();
    let path = dir.join("log.jsonl");
    let keys = AuditKeys::generate();
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut prev = GENESIS.to_owned();
    for seq in 1..=RECORDS {
        let r = AuditRecord::chain(
            seq,
            &prev,
            "2026-11-24T12:00:00.000Z".to_owned(),
            event(seq),
        );
        prev.clone_from(&r.hash);
        serde_json::to_writer(&mut out, &Line::Record(Box::new(r))).unwrap();
        out.write_all(b"\n").unwrap();
        if seq % CHECKPOINT_EVERY == 0 {
            let mut cp = Checkpoint {
                seq,
                head: prev.clone(),
                time: "2026-11-24T12:00:00.000Z".to_owned(),
                key: keys.public_key().to_string(),
                signature: String::new(),
            };
            cp.signature = keys.sign_checkpoint(&cp);
            serde_json::to_writer(&mut out, &Line::Checkpoint(cp)).unwrap();
            out.write_all(b"\n").unwrap();
        }
    }
    out.flush().unwrap();
    std::fs::write(dir.join("key.txt"), keys.public_key().to_string()).unwrap();
    (path, keys)
}

fn verify(c: &mut Criterion) {
    let (path, keys) = million_record_log();
    let bytes = std::fs::read(&path).unwrap();
    let trusted = keys.public_key();
    let mut g = c.benchmark_group("verify_1m");
    g.sample_size(10).measurement_time(Duration::from_secs(40));
    g.throughput(Throughput::Elements(RECORDS));
    g.bench_function("verify_file", |b| {
        b.iter(|| {
            let report = vern_audit::verify::verify_file(&path, trusted, &mut |_| {}).unwrap();
            assert!(report.intact());
        });
    });
    g.bench_function("sha256_same_bytes", |b| {
        b.iter(|| Sha256::digest(&bytes));
    });
    g.finish();
}

fn append(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("vern.db").display());
    let log = rt.block_on(async {
        let store = vern_store::open(&url, 4).await.unwrap();
        let seal = Seal::new(Arc::clone(&store), Arc::new(SystemClock))
            .await
            .unwrap();
        seal.init_unsealed(1, 1, &[], None).await.unwrap();
        let log = AuditLog::new(store, Arc::new(SystemClock), AuditConfig::default()).unwrap();
        log.session(&seal.barrier().unwrap()).await.unwrap();
        log
    });
    let mut g = c.benchmark_group("append_sqlite");
    g.throughput(Throughput::Elements(1));
    g.bench_function("one_at_a_time", |b| {
        b.to_async(&rt).iter(|| {
            let log = log.clone();
            async move { log.append(event(1)).await.unwrap() }
        });
    });
    const CONCURRENT: u64 = 256;
    g.throughput(Throughput::Elements(CONCURRENT));
    g.bench_function("256_concurrent", |b| {
        b.to_async(&rt).iter_batched(
            || log.clone(),
            |log| async move {
                let tasks: Vec<_> = (0..CONCURRENT)
                    .map(|i| {
                        let log = log.clone();
                        tokio::spawn(async move { log.append(event(i)).await.unwrap() })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            },
            BatchSize::SmallInput,
        );
    });
    g.finish();
}

criterion_group!(benches, append, verify);
criterion_main!(benches);
