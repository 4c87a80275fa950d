//! Storage put/get throughput on SQLite and, when `VERN_TEST_POSTGRES_URL`
//! is set (`./scripts/bench` sets it), PostgreSQL. Every put is a durable
//! commit (fsync), so put figures are bounded by the disk's fsync rate.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vern_store::{Expect, Key, Store, Write};

const VALUE_LEN: usize = 256;
const PRELOADED: usize = 1000;

fn backends(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
) -> Vec<(&'static str, Arc<dyn Store>)> {
    let mut out = Vec::new();
    let sqlite = format!("sqlite:{}", dir.join("bench.db").display());
    out.push(("sqlite", rt.block_on(vern_store::open(&sqlite, 4)).unwrap()));
    if let Some(url) = rt.block_on(vern_store::testing::fresh_postgres_url()) {
        out.push(("postgres", rt.block_on(vern_store::open(&url, 4)).unwrap()));
    }
    out
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let value = vec![0xa5u8; VALUE_LEN];
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(1));
    for (name, store) in backends(&rt, dir.path()) {
        let preload: Vec<Write> = (0..PRELOADED)
            .map(|i| Write::put(Key::new(format!("read/{i:06}")).unwrap(), value.clone()))
            .collect();
        rt.block_on(store.commit(preload)).unwrap();

        let mut i = 0usize;
        group.bench_function(BenchmarkId::new("get", name), |b| {
            b.to_async(&rt).iter(|| {
                i = (i + 7919) % PRELOADED;
                let key = Key::new(format!("read/{i:06}")).unwrap();
                let store = Arc::clone(&store);
                async move { store.get(&key).await.unwrap().unwrap() }
            });
        });

        let mut n = 0u64;
        group.bench_function(BenchmarkId::new("put", name), |b| {
            b.to_async(&rt).iter(|| {
                n += 1;
                let w = Write::put(Key::new(format!("write/{n}")).unwrap(), value.clone());
                let store = Arc::clone(&store);
                async move { store.commit(vec![w]).await.unwrap() }
            });
        });

        let key = Key::new("cas/counter").unwrap();
        let mut version = rt
            .block_on(store.commit(vec![Write::put(key.clone(), value.clone())]))
            .unwrap()[0];
        group.bench_function(BenchmarkId::new("cas_put", name), |b| {
            b.iter(|| {
                let w = Write::put(key.clone(), value.clone()).expecting(Expect::Version(version));
                version = rt.block_on(store.commit(vec![w])).unwrap()[0];
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
