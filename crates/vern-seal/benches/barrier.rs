//! Barrier encryption and decryption against raw AES-256-GCM in the same
//! run. The barrier runs over an in-memory store so the figures show the
//! barrier's own cost (AAD building, term lookup, framing, async call)
//! rather than a database's.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use async_trait::async_trait;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vern_core::SystemClock;
use vern_crypto::SecretBytes;
use vern_seal::{BarrierWrite, Expect, IssuedShare, Seal};
use vern_store::{Entry, Key, Op, Store, StoreError, Write};

#[derive(Default)]
struct MemStore(Mutex<BTreeMap<String, Entry>>);

#[async_trait]
impl Store for MemStore {
    async fn get(&self, key: &Key) -> Result<Option<Entry>, StoreError> {
        Ok(self.0.lock().unwrap().get(key.as_str()).cloned())
    }
    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Entry>>, StoreError> {
        let map = self.0.lock().unwrap();
        Ok(keys.iter().map(|k| map.get(k.as_str()).cloned()).collect())
    }
    async fn list(
        &self,
        prefix: &str,
        _: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let map = self.0.lock().unwrap();
        Ok(map
            .keys()
            .filter(|k| k.starts_with(prefix))
            .take(limit)
            .cloned()
            .collect())
    }
    async fn commit(&self, writes: Vec<Write>) -> Result<Vec<u64>, StoreError> {
        let mut map = self.0.lock().unwrap();
        let mut out = Vec::new();
        for w in writes {
            let version = map.get(w.key.as_str()).map_or(0, |e| e.version) + 1;
            match (w.op, w.expect) {
                (Op::Put(value), _) => {
                    map.insert(w.key.as_str().to_owned(), Entry { value, version });
                    out.push(version);
                }
                (Op::Delete, _) => {
                    map.remove(w.key.as_str());
                    out.push(0);
                }
            }
        }
        Ok(out)
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
    fn backend(&self) -> &'static str {
        "memory"
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store: Arc<dyn Store> = Arc::new(MemStore::default());
    let seal = rt
        .block_on(Seal::new(Arc::clone(&store), Arc::new(SystemClock)))
        .unwrap();
    let out = rt.block_on(seal.init(1, 1, &[], None)).unwrap();
    let IssuedShare::Clear(share) = &out.shares[0] else {
        unreachable!()
    };
    rt.block_on(seal.unseal(&hex::encode(share.expose())))
        .unwrap();
    let barrier = seal.barrier().unwrap();
    let raw = Aes256Gcm::new_from_slice(&[7u8; 32]).unwrap();
    // The barrier's associated data is the absolute key: the view's prefix
    // and the relative key.
    let view_prefix = "kv/secret/";
    let relative = "data/tenant-a/app/prod/db-password/1";
    let key = Key::new(format!("{view_prefix}{relative}")).unwrap();

    let mut group = c.benchmark_group("encrypt");
    for size in [64usize, 1024, 65536] {
        let data = vec![0x5au8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("raw_aes_gcm", size), &data, |b, data| {
            b.iter(|| {
                raw.encrypt(
                    Nonce::from_slice(&[1u8; 12]),
                    Payload {
                        msg: data,
                        aad: key.as_str().as_bytes(),
                    },
                )
                .unwrap()
            });
        });
        group.bench_with_input(BenchmarkId::new("barrier_put", size), &data, |b, data| {
            b.to_async(&rt).iter(|| {
                let w = BarrierWrite {
                    key: relative.to_owned(),
                    value: Some(SecretBytes::new(data.clone())),
                    expect: Expect::Any,
                };
                let barrier = Arc::clone(&barrier);
                async move {
                    let view = barrier.view(view_prefix).unwrap();
                    view.commit(vec![w]).await.unwrap()
                }
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("decrypt");
    for size in [64usize, 1024, 65536] {
        let data = vec![0x5au8; size];
        let sealed = raw
            .encrypt(
                Nonce::from_slice(&[1u8; 12]),
                Payload {
                    msg: &data,
                    aad: key.as_str().as_bytes(),
                },
            )
            .unwrap();
        rt.block_on(
            barrier
                .view(view_prefix)
                .unwrap()
                .commit(vec![BarrierWrite {
                    key: relative.to_owned(),
                    value: Some(SecretBytes::new(data.clone())),
                    expect: Expect::Any,
                }]),
        )
        .unwrap();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(
            BenchmarkId::new("raw_aes_gcm", size),
            &sealed,
            |b, sealed| {
                b.iter(|| {
                    raw.decrypt(
                        Nonce::from_slice(&[1u8; 12]),
                        Payload {
                            msg: sealed,
                            aad: key.as_str().as_bytes(),
                        },
                    )
                    .unwrap()
                });
            },
        );
        group.bench_function(BenchmarkId::new("barrier_get", size), |b| {
            b.to_async(&rt).iter(|| {
                let barrier = Arc::clone(&barrier);
                async move {
                    let view = barrier.view(view_prefix).unwrap();
                    view.get(relative).await.unwrap().unwrap()
                }
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
