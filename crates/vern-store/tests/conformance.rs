//! The storage conformance suite: every case runs unchanged against SQLite
//! (shared, and held by one process as the server holds its main database)
//! and PostgreSQL. A backend is correct when it passes all of them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use vern_store::{Expect, Key, Op, Store, StoreError, Write};

use vern_store::testing::TestDb as Db;

fn key(s: &str) -> Key {
    Key::new(s).unwrap()
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let db = super::Db::sqlite();
                    super::$case(&db).await;
                }
            )*
        }
        mod sqlite_exclusive {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let db = super::Db::sqlite_exclusive();
                    super::$case(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let Some(db) = super::Db::postgres().await else { return };
                    super::$case(&db).await;
                }
            )*
        }
    };
}

conformance!(
    get_put_versions,
    get_many_answers_in_order,
    preconditions,
    batches_are_atomic,
    deletes,
    list_by_prefix,
    values_round_trip,
    concurrent_cas_has_one_winner,
    no_lost_updates_across_handles,
    data_survives_reopen,
    matches_a_model,
    a_commit_is_read_by_every_handle_at_once,
    no_read_goes_back_behind_an_acknowledged_commit,
    concurrent_reads_each_get_their_own_answer,
);

/// Many reads at once, as a busy server makes them (a backend may answer
/// them together): each gets exactly its own keys' entries in its own
/// order, with keys shared between reads, asked twice in one read, absent,
/// and one read of more keys than any batch gathers.
async fn concurrent_reads_each_get_their_own_answer(db: &Db) {
    let s = db.open().await;
    let keys = 400usize;
    let writes = (0..keys)
        .filter(|i| !i.is_multiple_of(3))
        .map(|i| Write::put(key(&format!("many/{i:03}")), i.to_string().into_bytes()))
        .collect();
    s.commit(writes).await.unwrap();
    let expected = |i: usize| (!i.is_multiple_of(3)).then(|| i.to_string().into_bytes());
    let mut tasks = Vec::new();
    for call in 0..200usize {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            let wanted: Vec<usize> = match call {
                0 => (0..keys).rev().collect(),
                _ => vec![call, (call * 7) % keys, 1, call, keys + call],
            };
            let asked: Vec<Key> = wanted
                .iter()
                .map(|i| key(&format!("many/{i:03}")))
                .collect();
            (wanted, s.get_many(&asked).await.unwrap())
        }));
    }
    for t in tasks {
        let (wanted, got) = t.await.unwrap();
        let got: Vec<Option<Vec<u8>>> = got.into_iter().map(|e| e.map(|e| e.value)).collect();
        let want: Vec<Option<Vec<u8>>> = wanted
            .iter()
            .map(|&i| if i < keys { expected(i) } else { None })
            .collect();
        assert_eq!(got, want, "the read of {wanted:?}");
    }
    let singles: Vec<_> = (0..50usize)
        .map(|i| {
            let s = Arc::clone(&s);
            tokio::spawn(async move { (i, s.get(&key(&format!("many/{i:03}"))).await.unwrap()) })
        })
        .collect();
    for t in singles {
        let (i, got) = t.await.unwrap();
        assert_eq!(got.map(|e| e.value), expected(i), "the read of key {i}");
    }
}

/// What one handle has read (and may keep) is never answered again once
/// another handle's commit has changed it: overwritten, created where it
/// was absent, deleted, alone and in a multi-key read.
async fn a_commit_is_read_by_every_handle_at_once(db: &Db) {
    let (a, b) = (db.open().await, db.open().await);
    b.commit(vec![Write::put(key("seen/k"), b"one".to_vec())])
        .await
        .unwrap();
    for _ in 0..2 {
        assert_eq!(a.get(&key("seen/k")).await.unwrap().unwrap().value, b"one");
        assert!(a.get(&key("seen/absent")).await.unwrap().is_none());
        let both = a
            .get_many(&[key("seen/k"), key("seen/absent")])
            .await
            .unwrap();
        assert_eq!(both[0].as_ref().unwrap().value, b"one");
        assert!(both[1].is_none());
    }
    b.commit(vec![
        Write::put(key("seen/k"), b"two".to_vec()),
        Write::put(key("seen/absent"), b"now".to_vec()),
    ])
    .await
    .unwrap();
    let k = a.get(&key("seen/k")).await.unwrap().unwrap();
    assert_eq!((k.value.as_slice(), k.version), (&b"two"[..], 2));
    let both = a
        .get_many(&[key("seen/k"), key("seen/absent")])
        .await
        .unwrap();
    assert_eq!(both[0].as_ref().unwrap().value, b"two");
    assert_eq!(both[1].as_ref().unwrap().value, b"now");
    // The writer's own handle, too.
    assert_eq!(
        b.get(&key("seen/absent")).await.unwrap().unwrap().value,
        b"now"
    );
    a.commit(vec![Write::delete(key("seen/k"))]).await.unwrap();
    assert!(b.get(&key("seen/k")).await.unwrap().is_none());
    assert!(a.get_many(&[key("seen/k")]).await.unwrap()[0].is_none());
}

/// Readers on several handles race a writer that overwrites two keys in
/// one batch: a read that starts after a commit was acknowledged never
/// sees an older version, and a multi-key read never sees the two keys
/// from different batches.
async fn no_read_goes_back_behind_an_acknowledged_commit(db: &Db) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let (writer, readers) = (db.open().await, [db.open().await, db.open().await]);
    let acknowledged = Arc::new(AtomicU64::new(0));
    let rounds = 150u64;
    let mut tasks = Vec::new();
    for i in 0..4 {
        let s = Arc::clone(&readers[i % 2]);
        let acknowledged = Arc::clone(&acknowledged);
        tasks.push(tokio::spawn(async move {
            loop {
                let floor = acknowledged.load(Ordering::SeqCst);
                let pair = s.get_many(&[key("race/a"), key("race/b")]).await.unwrap();
                let versions: Vec<u64> = pair
                    .iter()
                    .map(|e| e.as_ref().map_or(0, |e| e.version))
                    .collect();
                assert_eq!(versions[0], versions[1], "a torn multi-key read");
                assert!(
                    versions[0] >= floor,
                    "read version {} after {floor} was acknowledged",
                    versions[0]
                );
                let one = s
                    .get(&key("race/a"))
                    .await
                    .unwrap()
                    .map_or(0, |e| e.version);
                assert!(
                    one >= floor,
                    "read version {one} after {floor} was acknowledged"
                );
                if floor == rounds {
                    return;
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    for round in 1..=rounds {
        writer
            .commit(vec![
                Write::put(key("race/a"), round.to_string().into_bytes()),
                Write::put(key("race/b"), round.to_string().into_bytes()),
            ])
            .await
            .unwrap();
        acknowledged.store(round, Ordering::SeqCst);
    }
    for t in tasks {
        t.await.unwrap();
    }
}

async fn get_many_answers_in_order(db: &Db) {
    let s = db.open().await;
    assert_eq!(s.get_many(&[]).await.unwrap(), Vec::new());
    s.commit(vec![
        Write::put(key("m/a"), b"1".to_vec()),
        Write::put(key("m/b"), b"2".to_vec()),
    ])
    .await
    .unwrap();
    s.commit(vec![Write::put(key("m/b"), b"3".to_vec())])
        .await
        .unwrap();
    let wanted = [key("m/b"), key("m/none"), key("m/a"), key("m/b")];
    let got = s.get_many(&wanted).await.unwrap();
    let expected: Vec<Option<(Vec<u8>, u64)>> = vec![
        Some((b"3".to_vec(), 2)),
        None,
        Some((b"1".to_vec(), 1)),
        Some((b"3".to_vec(), 2)),
    ];
    assert_eq!(
        got.into_iter()
            .map(|e| e.map(|e| (e.value, e.version)))
            .collect::<Vec<_>>(),
        expected
    );
    // The same as reading one by one.
    for k in &wanted {
        assert_eq!(
            s.get_many(std::slice::from_ref(k)).await.unwrap(),
            vec![s.get(k).await.unwrap()]
        );
    }
}

async fn get_put_versions(db: &Db) {
    let s = db.open().await;
    assert_eq!(s.get(&key("a")).await.unwrap(), None);
    assert_eq!(
        s.commit(vec![Write::put(key("a"), b"1".to_vec())])
            .await
            .unwrap(),
        vec![1]
    );
    assert_eq!(
        s.commit(vec![Write::put(key("a"), b"2".to_vec())])
            .await
            .unwrap(),
        vec![2]
    );
    let e = s.get(&key("a")).await.unwrap().unwrap();
    assert_eq!((e.value.as_slice(), e.version), (&b"2"[..], 2));
    assert_eq!(s.commit(vec![]).await.unwrap(), Vec::<u64>::new());
    s.ping().await.unwrap();
}

async fn preconditions(db: &Db) {
    let s = db.open().await;
    let create = |v: &[u8]| Write::put(key("k"), v.to_vec()).expecting(Expect::Absent);
    assert_eq!(s.commit(vec![create(b"first")]).await.unwrap(), vec![1]);
    let err = s.commit(vec![create(b"second")]).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { ref key } if key == "k"),
        "{err}"
    );

    let cas = |v: u64, val: &[u8]| Write::put(key("k"), val.to_vec()).expecting(Expect::Version(v));
    assert!(matches!(
        s.commit(vec![cas(7, b"x")]).await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        s.commit(vec![cas(u64::MAX, b"x")]).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(s.commit(vec![cas(1, b"third")]).await.unwrap(), vec![2]);
    assert!(matches!(
        s.commit(vec![cas(1, b"stale")]).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(s.get(&key("k")).await.unwrap().unwrap().value, b"third");

    let missing = Write::put(key("nope"), b"x".to_vec()).expecting(Expect::Version(1));
    assert!(matches!(
        s.commit(vec![missing]).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(s.get(&key("nope")).await.unwrap(), None);
}

async fn batches_are_atomic(db: &Db) {
    let s = db.open().await;
    s.commit(vec![Write::put(key("held"), b"v".to_vec())])
        .await
        .unwrap();
    let batch = vec![
        Write::put(key("b1"), b"1".to_vec()),
        Write::put(key("b2"), b"2".to_vec()),
        Write::put(key("held"), b"clobber".to_vec()).expecting(Expect::Absent),
        Write::put(key("z9"), b"3".to_vec()),
    ];
    // The conflict names the write whose precondition failed, not its
    // neighbours in the batch.
    assert!(matches!(
        s.commit(batch).await,
        Err(StoreError::Conflict { ref key }) if key == "held"
    ));
    for k in ["b1", "b2", "z9"] {
        assert_eq!(
            s.get(&key(k)).await.unwrap(),
            None,
            "{k} was written by a failed batch"
        );
    }
    assert_eq!(s.get(&key("held")).await.unwrap().unwrap().value, b"v");

    let dup = vec![Write::put(key("d"), vec![]), Write::delete(key("d"))];
    assert!(matches!(
        s.commit(dup).await,
        Err(StoreError::DuplicateKey(_))
    ));

    let ok = vec![
        Write::put(key("z"), b"z".to_vec()),
        Write::put(key("held"), b"new".to_vec()).expecting(Expect::Version(1)),
        Write::put(key("a"), b"a".to_vec()).expecting(Expect::Absent),
    ];
    assert_eq!(
        s.commit(ok).await.unwrap(),
        vec![1, 2, 1],
        "versions come back in input order"
    );
}

async fn deletes(db: &Db) {
    let s = db.open().await;
    s.commit(vec![Write::put(key("d"), b"x".to_vec())])
        .await
        .unwrap();
    let stale = Write::delete(key("d")).expecting(Expect::Version(2));
    assert!(matches!(
        s.commit(vec![stale]).await,
        Err(StoreError::Conflict { .. })
    ));
    let absent = Write::delete(key("d")).expecting(Expect::Absent);
    assert!(matches!(
        s.commit(vec![absent]).await,
        Err(StoreError::Conflict { .. })
    ));
    let ok = Write::delete(key("d")).expecting(Expect::Version(1));
    assert_eq!(s.commit(vec![ok]).await.unwrap(), vec![0]);
    assert_eq!(s.get(&key("d")).await.unwrap(), None);
    // Deleting what is not there is not an error unless a version was expected.
    s.commit(vec![Write::delete(key("d"))]).await.unwrap();
    s.commit(vec![Write::delete(key("d")).expecting(Expect::Absent)])
        .await
        .unwrap();
}

async fn list_by_prefix(db: &Db) {
    let s = db.open().await;
    let keys = ["a/1", "a/2", "a/10", "a", "ab", "a/ü", "a/z/deep", "b/1"];
    s.commit(keys.iter().map(|k| Write::put(key(k), vec![])).collect())
        .await
        .unwrap();
    let all = s.list("a/", None, 100).await.unwrap();
    assert_eq!(
        all,
        ["a/1", "a/10", "a/2", "a/z/deep", "a/ü"],
        "bytewise order, prefix only"
    );
    assert_eq!(s.list("a/", None, 2).await.unwrap(), ["a/1", "a/10"]);
    assert_eq!(
        s.list("a/", Some("a/10"), 2).await.unwrap(),
        ["a/2", "a/z/deep"]
    );
    assert_eq!(s.list("a", None, 100).await.unwrap().len(), 7);
    assert!(s.list("c/", None, 100).await.unwrap().is_empty());
    assert_eq!(s.list("", None, 100).await.unwrap().len(), keys.len());
    // LIKE wildcards in a prefix are literal characters.
    s.commit(vec![
        Write::put(key("p%/x"), vec![]),
        Write::put(key("p_/y"), vec![]),
    ])
    .await
    .unwrap();
    assert_eq!(s.list("p%", None, 10).await.unwrap(), ["p%/x"]);
}

async fn values_round_trip(db: &Db) {
    let s = db.open().await;
    let big: Vec<u8> = (0..(1 << 20)).map(|i| (i % 251) as u8).collect();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("zeros", vec![0; 17]),
        ("all-bytes", (0..=255).collect()),
        ("big", big),
    ];
    for (k, v) in &cases {
        s.commit(vec![Write::put(key(k), v.clone())]).await.unwrap();
    }
    for (k, v) in &cases {
        assert_eq!(&s.get(&key(k)).await.unwrap().unwrap().value, v, "{k}");
    }
}

async fn concurrent_cas_has_one_winner(db: &Db) {
    let setup = db.open().await;
    setup
        .commit(vec![Write::put(key("race"), b"0".to_vec())])
        .await
        .unwrap();
    // Two handles stand for two Vern replicas on one database.
    let handles = [db.open().await, db.open().await];
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = Arc::clone(&handles[i % 2]);
        tasks.push(tokio::spawn(async move {
            let w = Write::put(key("race"), format!("writer {i}").into_bytes())
                .expecting(Expect::Version(1));
            s.commit(vec![w]).await
        }));
    }
    let mut winners = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(v) => {
                assert_eq!(v, vec![2]);
                winners += 1;
            }
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(winners, 1);
    assert_eq!(setup.get(&key("race")).await.unwrap().unwrap().version, 2);
}

async fn no_lost_updates_across_handles(db: &Db) {
    let handles = [db.open().await, db.open().await];
    let (workers, increments) = (6, 15);
    let mut tasks = Vec::new();
    for i in 0..workers {
        let s = Arc::clone(&handles[i % 2]);
        tasks.push(tokio::spawn(async move {
            for _ in 0..increments {
                loop {
                    let current = s.get(&key("counter")).await.unwrap();
                    let (n, expect) = match current {
                        Some(e) => (
                            String::from_utf8(e.value).unwrap().parse::<u64>().unwrap(),
                            Expect::Version(e.version),
                        ),
                        None => (0, Expect::Absent),
                    };
                    let w = Write::put(key("counter"), (n + 1).to_string().into_bytes())
                        .expecting(expect);
                    match s.commit(vec![w]).await {
                        Ok(_) => break,
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let e = handles[0].get(&key("counter")).await.unwrap().unwrap();
    let total = (workers * increments) as u64;
    assert_eq!(e.value, total.to_string().into_bytes());
    assert_eq!(e.version, total);
}

async fn data_survives_reopen(db: &Db) {
    {
        let s = db.open().await;
        s.commit(vec![Write::put(key("kept"), b"yes".to_vec())])
            .await
            .unwrap();
    }
    // Reopening runs the migrations again; they must be idempotent.
    let s = db.open().await;
    let e = s.get(&key("kept")).await.unwrap().unwrap();
    assert_eq!((e.value, e.version), (b"yes".to_vec(), 1));
}

#[derive(Debug, Clone)]
enum ModelOp {
    Put(u8, Vec<u8>),
    Create(u8, Vec<u8>),
    Cas(u8, u64, Vec<u8>),
    Delete(u8),
    DeleteAt(u8, u64),
}

fn model_op() -> impl Strategy<Value = ModelOp> {
    let k = 0u8..6;
    let v = proptest::collection::vec(any::<u8>(), 0..8);
    prop_oneof![
        (k.clone(), v.clone()).prop_map(|(k, v)| ModelOp::Put(k, v)),
        (k.clone(), v.clone()).prop_map(|(k, v)| ModelOp::Create(k, v)),
        (k.clone(), 0u64..4, v).prop_map(|(k, n, v)| ModelOp::Cas(k, n, v)),
        k.clone().prop_map(ModelOp::Delete),
        (k, 0u64..4).prop_map(|(k, n)| ModelOp::DeleteAt(k, n)),
    ]
}

/// Random batches of operations applied to the store and to an in-memory
/// model must agree on every outcome and on the final contents.
async fn matches_a_model(db: &Db) {
    let s = db.open().await;
    let runner_store = Arc::clone(&s);
    let handle = tokio::runtime::Handle::current();
    let case = std::sync::atomic::AtomicUsize::new(0);
    tokio::task::spawn_blocking(move || {
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(24));
        let strategy = proptest::collection::vec(proptest::collection::vec(model_op(), 1..4), 1..8);
        runner
            .run(&strategy, |batches| {
                let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let prefix = format!("model/{n}/");
                handle.block_on(check_against_model(&*runner_store, &prefix, batches));
                Ok(())
            })
            .unwrap();
    })
    .await
    .unwrap();
}

async fn check_against_model(s: &dyn Store, prefix: &str, batches: Vec<Vec<ModelOp>>) {
    let mut model: BTreeMap<String, (Vec<u8>, u64)> = BTreeMap::new();
    for batch in batches {
        let mut writes = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for op in batch {
            let (k, write) = match op {
                ModelOp::Put(k, v) => (k, Write::put(key(&format!("{prefix}{k}")), v)),
                ModelOp::Create(k, v) => (
                    k,
                    Write::put(key(&format!("{prefix}{k}")), v).expecting(Expect::Absent),
                ),
                ModelOp::Cas(k, n, v) => (
                    k,
                    Write::put(key(&format!("{prefix}{k}")), v).expecting(Expect::Version(n)),
                ),
                ModelOp::Delete(k) => (k, Write::delete(key(&format!("{prefix}{k}")))),
                ModelOp::DeleteAt(k, n) => (
                    k,
                    Write::delete(key(&format!("{prefix}{k}"))).expecting(Expect::Version(n)),
                ),
            };
            if seen.insert(k) {
                writes.push(write);
            }
        }
        let mut next = model.clone();
        let mut expected_versions = Vec::new();
        let mut ok = true;
        for w in &writes {
            let cur = next.get(w.key.as_str()).map(|e| e.1);
            let holds = match w.expect {
                Expect::Any => true,
                Expect::Absent => cur.is_none(),
                Expect::Version(v) => cur == Some(v),
            };
            ok &= holds;
            match &w.op {
                Op::Put(v) => {
                    let version = cur.unwrap_or(0) + 1;
                    next.insert(w.key.as_str().to_owned(), (v.clone(), version));
                    expected_versions.push(version);
                }
                Op::Delete => {
                    next.remove(w.key.as_str());
                    expected_versions.push(0);
                }
            }
        }
        match s.commit(writes).await {
            Ok(versions) => {
                assert!(ok, "store accepted a batch the model rejects");
                assert_eq!(versions, expected_versions);
                model = next;
            }
            Err(StoreError::Conflict { .. }) => {
                assert!(!ok, "store rejected a batch the model accepts")
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    let listed = s.list(prefix, None, 100).await.unwrap();
    assert_eq!(listed, model.keys().cloned().collect::<Vec<_>>());
    for (k, (v, version)) in &model {
        let e = s.get(&key(k)).await.unwrap().unwrap();
        assert_eq!((&e.value, e.version), (v, *version));
    }
}
