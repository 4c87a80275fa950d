//! The KV v2 engine on both storage backends: versions, check-and-set,
//! soft delete, undelete, destroy, metadata, pruning, expiry, listing,
//! patching, concurrent writers on two replicas, and latest-version reads
//! that take one storage read without ever answering from a stale guess.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use vern_core::ManualClock;
use vern_seal::{Barrier, IssuedShare, Seal};
use vern_secrets::{
    KvConfig, KvEngine, KvError, ListPrefix, MetadataUpdate, Read, SecretData, SecretPath,
    WriteOptions,
};
use vern_store::testing::CountingStore;

struct Env {
    barrier: Arc<Barrier>,
    /// A second replica: its own seal and barrier over the same database.
    replica: Arc<Barrier>,
    clock: Arc<ManualClock>,
    kv: KvEngine,
    /// Read calls (`get`, `get_many`) reaching the first replica's store.
    reads: Arc<AtomicUsize>,
    _dir: Option<tempfile::TempDir>,
}

async fn env_on(url: String, dir: Option<tempfile::TempDir>) -> Env {
    let clock = Arc::new(ManualClock::new(
        UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    ));
    let store = CountingStore::new(vern_store::open(&url, 4).await.unwrap());
    let reads = store.reads();
    let seal = Seal::new(Arc::new(store), clock.clone()).await.unwrap();
    let out = seal.init_unsealed(1, 1, &[], None).await.unwrap();
    let IssuedShare::Clear(share) = &out.shares[0] else {
        panic!()
    };
    let store2 = vern_store::open(&url, 4).await.unwrap();
    let seal2 = Seal::new(store2, clock.clone()).await.unwrap();
    seal2.unseal(&hex_encode(share.expose())).await.unwrap();
    Env {
        barrier: seal.barrier().unwrap(),
        replica: seal2.barrier().unwrap(),
        kv: KvEngine::new("secret", clock.clone()).unwrap(),
        clock,
        reads,
        _dir: dir,
    }
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn sqlite() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("kv.db").display());
    env_on(url, Some(dir)).await
}

async fn postgres() -> Option<Env> {
    let url = vern_store::testing::fresh_postgres_url().await?;
    Some(env_on(url, None).await)
}

fn p(s: &str) -> SecretPath {
    SecretPath::parse(s).unwrap()
}

fn data(v: Value) -> SecretData {
    SecretData::new(v.as_object().cloned().unwrap())
}

fn live(r: Read) -> (Map<String, Value>, u64) {
    match r {
        Read::Live { data, version } => (data.into_inner(), version.version),
        other => panic!("expected live data, got {other:?}"),
    }
}

macro_rules! both {
    ($($case:ident),* $(,)?) => {
        mod sqlite_backend { $( #[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $case() { super::$case(&super::sqlite().await).await; } )* }
        mod postgres_backend { $( #[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $case() { let Some(e) = super::postgres().await else { return }; super::$case(&e).await; } )* }
    };
}

both!(
    versions_and_cas,
    delete_undelete_destroy,
    metadata_and_pruning,
    expiry_after_delete_version_after,
    listing,
    patch_and_subkeys,
    concurrent_cas_across_replicas,
    latest_reads_take_one_storage_read,
    stale_guesses_never_answer
);

async fn versions_and_cas(e: &Env) {
    let (b, kv) = (&*e.barrier, &e.kv);
    let path = p("acme/web/prod/db");
    assert!(matches!(
        kv.read(b, &path, None).await,
        Err(KvError::NotFound)
    ));
    let v1 = kv
        .write(
            b,
            &path,
            data(json!({"password": "one"})),
            WriteOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(v1.version, 1);
    let v2 = kv
        .write(
            b,
            &path,
            data(json!({"password": "two"})),
            WriteOptions { cas: Some(1) },
        )
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    assert!(matches!(
        kv.write(b, &path, data(json!({})), WriteOptions { cas: Some(1) })
            .await,
        Err(KvError::CasMismatch)
    ));
    assert!(matches!(
        kv.write(b, &path, data(json!({})), WriteOptions { cas: Some(0) })
            .await,
        Err(KvError::CasMismatch)
    ));
    let (d, v) = live(kv.read(b, &path, None).await.unwrap());
    assert_eq!((d["password"].as_str(), v), (Some("two"), 2));
    let (d, _) = live(kv.read(b, &path, Some(1)).await.unwrap());
    assert_eq!(d["password"], "one");
    assert!(matches!(
        kv.read(b, &path, Some(9)).await,
        Err(KvError::NotFound)
    ));
    // cas 0 creates only.
    let fresh = p("acme/web/prod/new");
    kv.write(
        b,
        &fresh,
        data(json!({"k": 1})),
        WriteOptions { cas: Some(0) },
    )
    .await
    .unwrap();
    // The replica reads what this one wrote at once.
    let (d, _) = live(kv.read(&e.replica, &path, None).await.unwrap());
    assert_eq!(d["password"], "two");
    // cas_required on the mount.
    kv.set_config(
        b,
        KvConfig {
            cas_required: true,
            ..KvConfig::default()
        },
    )
    .await
    .unwrap();
    assert!(matches!(
        kv.write(b, &path, data(json!({})), WriteOptions::default())
            .await,
        Err(KvError::CasRequired)
    ));
    kv.write(
        b,
        &path,
        data(json!({"password": "three"})),
        WriteOptions { cas: Some(2) },
    )
    .await
    .unwrap();
}

async fn delete_undelete_destroy(e: &Env) {
    let (b, kv) = (&*e.barrier, &e.kv);
    let path = p("acme/web/prod/api-key");
    for i in 1..=3 {
        kv.write(b, &path, data(json!({"v": i})), WriteOptions::default())
            .await
            .unwrap();
    }
    kv.delete_latest(b, &path).await.unwrap();
    let Read::Deleted(v) = kv.read(b, &path, None).await.unwrap() else {
        panic!("latest should be deleted")
    };
    assert_eq!(v.version, 3);
    assert!(v.deleted.is_some());
    assert_eq!(live(kv.read(b, &path, Some(2)).await.unwrap()).0["v"], 2);
    kv.delete_versions(b, &path, &[1, 2, 77]).await.unwrap();
    assert!(matches!(
        kv.read(b, &path, Some(1)).await.unwrap(),
        Read::Deleted(_)
    ));
    kv.undelete_versions(b, &path, &[1, 3]).await.unwrap();
    assert_eq!(live(kv.read(b, &path, None).await.unwrap()).0["v"], 3);
    kv.destroy_versions(b, &path, &[3]).await.unwrap();
    let Read::Destroyed(v) = kv.read(b, &path, None).await.unwrap() else {
        panic!()
    };
    assert!(v.destroyed);
    kv.undelete_versions(b, &path, &[3]).await.unwrap();
    assert!(
        matches!(kv.read(b, &path, None).await.unwrap(), Read::Destroyed(_)),
        "destroyed stays destroyed"
    );
    kv.delete_metadata(b, &path).await.unwrap();
    assert!(matches!(
        kv.read(b, &path, Some(1)).await,
        Err(KvError::NotFound)
    ));
    assert!(matches!(
        kv.read_metadata(b, &path).await,
        Err(KvError::NotFound)
    ));
    // Writing again starts from version 1.
    assert_eq!(
        kv.write(b, &path, data(json!({})), WriteOptions::default())
            .await
            .unwrap()
            .version,
        1
    );
    assert!(matches!(
        kv.delete_latest(b, &p("acme/web/prod/none")).await,
        Err(KvError::NotFound)
    ));
}

async fn metadata_and_pruning(e: &Env) {
    let (b, kv) = (&*e.barrier, &e.kv);
    let path = p("acme/web/prod/rotating");
    let update = MetadataUpdate {
        max_versions: Some(3),
        custom_metadata: Some([("owner".to_owned(), Some("team-a".to_owned()))].into()),
        ..MetadataUpdate::default()
    };
    assert!(
        matches!(
            kv.write_metadata(b, &path, &update, false).await,
            Err(KvError::NotFound)
        ),
        "PATCH needs an existing secret"
    );
    kv.write_metadata(b, &path, &update, true).await.unwrap();
    for i in 1..=5 {
        kv.write(b, &path, data(json!({"v": i})), WriteOptions::default())
            .await
            .unwrap();
    }
    let m = kv.read_metadata(b, &path).await.unwrap();
    assert_eq!(
        (m.current_version, m.oldest_version, m.max_versions),
        (5, 3, 3)
    );
    assert_eq!(m.versions.keys().copied().collect::<Vec<_>>(), [3, 4, 5]);
    assert_eq!(m.custom_metadata["owner"], "team-a");
    assert!(
        matches!(kv.read(b, &path, Some(2)).await, Err(KvError::NotFound)),
        "pruned"
    );
    let patch = MetadataUpdate {
        custom_metadata: Some(
            [
                ("env".to_owned(), Some("prod".to_owned())),
                ("owner".to_owned(), None),
            ]
            .into(),
        ),
        cas_required: Some(true),
        ..MetadataUpdate::default()
    };
    kv.write_metadata(b, &path, &patch, false).await.unwrap();
    let m = kv.read_metadata(b, &path).await.unwrap();
    assert_eq!(m.custom_metadata.len(), 1);
    assert_eq!(m.custom_metadata["env"], "prod");
    assert!(m.cas_required);
    let too_big = MetadataUpdate {
        custom_metadata: Some([("k".to_owned(), Some("x".repeat(600)))].into()),
        ..MetadataUpdate::default()
    };
    assert!(matches!(
        kv.write_metadata(b, &path, &too_big, false).await,
        Err(KvError::InvalidRequest(_))
    ));
}

async fn expiry_after_delete_version_after(e: &Env) {
    let (b, kv) = (&*e.barrier, &e.kv);
    let path = p("acme/web/prod/temp");
    let update = MetadataUpdate {
        delete_version_after: Some(Duration::from_secs(60)),
        ..MetadataUpdate::default()
    };
    kv.write_metadata(b, &path, &update, true).await.unwrap();
    kv.write(b, &path, data(json!({"t": 1})), WriteOptions::default())
        .await
        .unwrap();
    assert!(matches!(
        kv.read(b, &path, None).await.unwrap(),
        Read::Live { .. }
    ));
    e.clock.advance(Duration::from_secs(61));
    assert!(matches!(
        kv.read(b, &path, None).await.unwrap(),
        Read::Deleted(_)
    ));
}

async fn listing(e: &Env) {
    let (b, kv) = (&*e.barrier, &e.kv);
    for s in [
        "acme/web/prod/db",
        "acme/web/prod/db/replica",
        "acme/web/prod/api",
        "acme/web/dev/db",
        "acme/mail/prod/x",
        "globex/app/prod/y",
    ] {
        kv.write(b, &p(s), data(json!({"x": 1})), WriteOptions::default())
            .await
            .unwrap();
    }
    let list = |s: &str| {
        let prefix = ListPrefix::parse(s).unwrap();
        async move { kv.list(b, &prefix).await.unwrap() }
    };
    assert_eq!(list("").await, ["acme/", "globex/"]);
    assert_eq!(list("acme/").await, ["mail/", "web/"]);
    assert_eq!(list("acme/web").await, ["dev/", "prod/"]);
    assert_eq!(list("acme/web/prod/").await, ["api", "db", "db/"]);
    assert!(list("acme/nothing/").await.is_empty());
    kv.delete_metadata(b, &p("acme/web/dev/db")).await.unwrap();
    assert_eq!(list("acme/web").await, ["prod/"]);
}

async fn patch_and_subkeys(e: &Env) {
    let (b, kv) = (&*e.barrier, &e.kv);
    let path = p("acme/web/prod/config");
    assert!(matches!(
        kv.patch(b, &path, Map::new(), WriteOptions::default())
            .await,
        Err(KvError::NotFound)
    ));
    kv.write(
        b,
        &path,
        data(json!({"a": 1, "nested": {"x": 1, "y": 2}})),
        WriteOptions::default(),
    )
    .await
    .unwrap();
    let patch = json!({"a": null, "b": 2, "nested": {"y": null, "z": 3}})
        .as_object()
        .cloned()
        .unwrap();
    let v = kv
        .patch(b, &path, patch.clone(), WriteOptions { cas: Some(1) })
        .await
        .unwrap();
    assert_eq!(v.version, 2);
    let (d, _) = live(kv.read(b, &path, None).await.unwrap());
    assert_eq!(
        Value::Object(d),
        json!({"b": 2, "nested": {"x": 1, "z": 3}})
    );
    assert!(matches!(
        kv.patch(b, &path, patch, WriteOptions { cas: Some(1) })
            .await,
        Err(KvError::CasMismatch)
    ));
    let (sub, v) = kv.subkeys(b, &path, None, 0).await.unwrap();
    assert_eq!(
        (sub, v.version),
        (json!({"b": null, "nested": {"x": null, "z": null}}), 2)
    );
}

async fn concurrent_cas_across_replicas(e: &Env) {
    let path = p("acme/web/prod/contended");
    e.kv.write(
        &e.barrier,
        &path,
        data(json!({"n": 0})),
        WriteOptions::default(),
    )
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let b = if i % 2 == 0 {
            Arc::clone(&e.barrier)
        } else {
            Arc::clone(&e.replica)
        };
        let kv = KvEngine::new("secret", e.clock.clone()).unwrap();
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            kv.write(
                &b,
                &path,
                data(json!({"writer": i})),
                WriteOptions { cas: Some(1) },
            )
            .await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(v) => {
                assert_eq!(v.version, 2);
                wins += 1;
            }
            Err(KvError::CasMismatch) => {}
            Err(other) => panic!("unexpected: {other}"),
        }
    }
    assert_eq!(wins, 1, "exactly one writer with the same cas wins");
    // Without cas, concurrent writers all land, as consecutive versions.
    let mut tasks = Vec::new();
    for i in 0..6 {
        let b = if i % 2 == 0 {
            Arc::clone(&e.barrier)
        } else {
            Arc::clone(&e.replica)
        };
        let kv = KvEngine::new("secret", e.clock.clone()).unwrap();
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            kv.write(&b, &path, data(json!({"i": i})), WriteOptions::default())
                .await
                .unwrap()
                .version
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(t.await.unwrap());
    }
    versions.sort();
    assert_eq!(versions, (3..=8).collect::<Vec<_>>());
}

/// `f`'s result, and the store reads on the first replica while it ran.
async fn reads_during<T>(e: &Env, f: impl std::future::Future<Output = T>) -> (T, usize) {
    let before = e.reads.load(Ordering::SeqCst);
    let out = f.await;
    (out, e.reads.load(Ordering::SeqCst) - before)
}

async fn latest_reads_take_one_storage_read(e: &Env) {
    let (b, kv) = (&*e.barrier, &e.kv);
    let path = p("acme/web/prod/hot");
    let other = KvEngine::new("secret", e.clock.clone()).unwrap();
    kv.write(b, &path, data(json!({"v": 1})), WriteOptions::default())
        .await
        .unwrap();
    let (r, reads) = reads_during(e, kv.read(b, &path, None)).await;
    assert_eq!(
        live(r.unwrap()),
        (json!({"v": 1}).as_object().cloned().unwrap(), 1)
    );
    assert_eq!(reads, 1, "metadata and data in one read after a write");
    let (r, reads) = reads_during(e, kv.read(b, &path, Some(1))).await;
    assert_eq!(live(r.unwrap()).1, 1);
    assert_eq!(reads, 1, "an asked version is read with the metadata");
    // Another replica moves the secret on: the guess is wrong once.
    other
        .write(
            &e.replica,
            &path,
            data(json!({"v": 2})),
            WriteOptions::default(),
        )
        .await
        .unwrap();
    let (r, reads) = reads_during(e, kv.read(b, &path, None)).await;
    assert_eq!(live(r.unwrap()).1, 2);
    assert_eq!(reads, 2, "a stale guess costs the second read");
    let (r, reads) = reads_during(e, kv.read(b, &path, None)).await;
    assert_eq!(live(r.unwrap()).1, 2);
    assert_eq!(reads, 1);
    // A path never read before: the metadata first, then the version.
    let fresh = KvEngine::new("secret", e.clock.clone()).unwrap();
    let (r, reads) = reads_during(e, fresh.read(b, &path, None)).await;
    assert_eq!(live(r.unwrap()).1, 2);
    assert_eq!(reads, 2);
}

async fn stale_guesses_never_answer(e: &Env) {
    let (b, kv) = (&*e.barrier, &e.kv);
    let other = KvEngine::new("secret", e.clock.clone()).unwrap();
    let path = p("acme/web/prod/moving");
    for v in 1..=3 {
        kv.write(b, &path, data(json!({"v": v})), WriteOptions::default())
            .await
            .unwrap();
    }
    assert_eq!(live(kv.read(b, &path, None).await.unwrap()).0["v"], 3);
    // Through the other replica: destroyed, then deleted, then gone and
    // written again from version 1. Each read here starts from a guess
    // the other replica has made wrong.
    other
        .destroy_versions(&e.replica, &path, &[3])
        .await
        .unwrap();
    assert!(matches!(kv.read(b, &path, None).await.unwrap(), Read::Destroyed(v) if v.version == 3));
    other
        .write(
            &e.replica,
            &path,
            data(json!({"v": 4})),
            WriteOptions::default(),
        )
        .await
        .unwrap();
    other.delete_latest(&e.replica, &path).await.unwrap();
    assert!(matches!(kv.read(b, &path, None).await.unwrap(), Read::Deleted(v) if v.version == 4));
    assert_eq!(live(kv.read(b, &path, Some(2)).await.unwrap()).0["v"], 2);
    other.delete_metadata(&e.replica, &path).await.unwrap();
    assert!(matches!(
        kv.read(b, &path, None).await,
        Err(KvError::NotFound)
    ));
    for v in 10..=11 {
        other
            .write(
                &e.replica,
                &path,
                data(json!({"v": v})),
                WriteOptions::default(),
            )
            .await
            .unwrap();
    }
    assert_eq!(
        live(kv.read(b, &path, None).await.unwrap()),
        (json!({"v": 11}).as_object().cloned().unwrap(), 2)
    );

    // Many more paths than it takes for guesses to share slots, each with
    // its own number of versions: every read still answers its own path's
    // latest version.
    let paths: Vec<(SecretPath, u64)> = (0..600)
        .map(|i| (p(&format!("acme/web/prod/many-{i}")), 1 + i % 3))
        .collect();
    for (path, versions) in &paths {
        for v in 1..=*versions {
            kv.write(
                b,
                path,
                data(json!({"path": path.as_str(), "v": v})),
                WriteOptions::default(),
            )
            .await
            .unwrap();
        }
    }
    for _ in 0..2 {
        for (path, versions) in paths.iter().rev() {
            let (got, version) = live(kv.read(b, path, None).await.unwrap());
            assert_eq!(version, *versions);
            assert_eq!(got["path"], path.as_str());
            assert_eq!(got["v"], *versions);
        }
    }
}
