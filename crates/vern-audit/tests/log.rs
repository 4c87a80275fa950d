//! The audit log against real storage: the tamper suite (every kind of
//! edit is detected), concurrent appends from two processes sharing one
//! database, the failing sink, and queries. Every case runs on SQLite and
//! PostgreSQL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use vern_audit::verify::{verify_store, Report};
use vern_audit::{
    layout, Actor, AuditConfig, AuditKeys, AuditLog, Event, Filter, PublicKey, Session, SinkTarget,
    TokenRef, Verdict,
};
use vern_core::{Clock, SystemClock};
use vern_seal::{IssuedShare, Seal};
use vern_store::{Key, Store, Write};

use vern_store::testing::TestDb as Db;

macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(&super::Db::sqlite()).await;
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

on_both_backends!(
    tamper_suite,
    two_processes_keep_one_chain,
    failing_sink_fails_appends,
    queries_filter_and_page,
);

fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// A "process": its own store handle, seal and audit log.
struct Process {
    store: Arc<dyn Store>,
    log: AuditLog,
    session: Arc<Session>,
    /// Kept unsealed: a session lives only as long as its barrier.
    _seal: Seal,
}

async fn first_process(db: &Db, config: AuditConfig) -> (Process, Vec<u8>) {
    let store = db.open().await;
    let seal = Seal::new(Arc::clone(&store), clock()).await.unwrap();
    let out = seal.init_unsealed(1, 1, &[], None).await.unwrap();
    let IssuedShare::Clear(share) = &out.shares[0] else {
        panic!("clear share expected")
    };
    let share = share.expose().to_vec();
    let log = AuditLog::new(Arc::clone(&store), clock(), config).unwrap();
    let session = log.session(&seal.barrier().unwrap()).await.unwrap();
    (
        Process {
            store,
            log,
            session,
            _seal: seal,
        },
        share,
    )
}

async fn another_process(db: &Db, share: &[u8]) -> Process {
    let store = db.open().await;
    let seal = Seal::new(Arc::clone(&store), clock()).await.unwrap();
    seal.unseal(&hex::encode(share)).await.unwrap();
    let log = AuditLog::new(Arc::clone(&store), clock(), AuditConfig::default()).unwrap();
    let session = log.session(&seal.barrier().unwrap()).await.unwrap();
    Process {
        store,
        log,
        session,
        _seal: seal,
    }
}

fn event(i: usize) -> Event {
    let mut hmacs = BTreeMap::new();
    hmacs.insert("issued_token".to_owned(), format!("hmac-sha256:{i:064x}"));
    Event {
        request_id: format!("req-{i}"),
        client_request_id: i.is_multiple_of(2).then(|| format!("caller-{i}")),
        operation: "GET /v1/{mount}/data/{*path}".to_owned(),
        principal: Some(Actor {
            kind: "service".to_owned(),
            id: format!("svc.acme.web.prod.api{}", i % 3),
            root: false,
            tenant: Some(
                if i.is_multiple_of(2) {
                    "acme"
                } else {
                    "globex"
                }
                .to_owned(),
            ),
            project: Some("web".to_owned()),
            environment: Some("prod".to_owned()),
        }),
        action: Some(
            if i.is_multiple_of(4) {
                "secret.write"
            } else {
                "secret.read"
            }
            .to_owned(),
        ),
        resource: Some(format!("secret:secret/acme/web/prod/db{i}")),
        resource_tenant: Some("acme".to_owned()),
        decision: Some(Verdict {
            allowed: !i.is_multiple_of(5),
            policies: vec!["vern.scope.secrets:read".to_owned()],
            grant: None,
        }),
        status: 200,
        source: "127.0.0.1".to_owned(),
        token: Some(TokenRef {
            hmac: format!("hmac-sha256:{:064x}", i + 1),
            id: Some(format!("jti-{i}")),
            binding: "dpop".to_owned(),
        }),
        hmacs,
        details: BTreeMap::new(),
    }
}

async fn append_concurrently(log: &AuditLog, from: usize, n: usize) {
    let tasks: Vec<_> = (from..from + n)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.append(event(i)).await.unwrap() })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

async fn verify(p: &Process) -> Report {
    verify_store(p.store.as_ref(), p.session.keys().public_key(), &mut |_| {})
        .await
        .unwrap()
}

fn k(s: &str) -> Key {
    Key::new(s).unwrap()
}

async fn get_json(store: &dyn Store, key: &str) -> Value {
    let entry = store.get(&k(key)).await.unwrap().unwrap();
    serde_json::from_slice(&entry.value).unwrap()
}

/// Writes a record in the canonical form the log writes (struct field
/// order), so only the edit itself differs; anything else as given.
async fn put_json(store: &dyn Store, key: &str, value: &Value) {
    let bytes = match serde_json::from_value::<vern_audit::AuditRecord>(value.clone()) {
        Ok(record) => serde_json::to_vec(&record).unwrap(),
        Err(_) => serde_json::to_vec(value).unwrap(),
    };
    store.commit(vec![Write::put(k(key), bytes)]).await.unwrap();
}

async fn delete(store: &dyn Store, key: &str) {
    store.commit(vec![Write::delete(k(key))]).await.unwrap();
}

/// Rewrites records `from..=to` as an attacker without the signing key
/// would: re-chained, with correct hashes, so only checkpoints catch it.
async fn rechain(store: &dyn Store, from: u64, to: u64) {
    let mut prev = if from == 1 {
        vern_audit::GENESIS.to_owned()
    } else {
        get_json(store, &layout::record(from - 1)).await["hash"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    for seq in from..=to {
        let mut r: vern_audit::AuditRecord =
            serde_json::from_value(get_json(store, &layout::record(seq)).await).unwrap();
        r.seq = seq;
        r.prev = prev.clone();
        r.hash = hex::encode(r.compute_hash());
        prev = r.hash.clone();
        put_json(
            store,
            &layout::record(seq),
            &serde_json::to_value(&r).unwrap(),
        )
        .await;
    }
}

/// Snapshot of every audit key, to undo a tamper case.
async fn snapshot(store: &dyn Store) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for prefix in [layout::RECORDS, layout::CHECKPOINTS] {
        for key in store.list(prefix, None, 100_000).await.unwrap() {
            let v = store.get(&k(&key)).await.unwrap().unwrap().value;
            out.insert(key, v);
        }
    }
    out
}

async fn restore(store: &dyn Store, snap: &BTreeMap<String, Vec<u8>>) {
    let mut writes = Vec::new();
    for prefix in [layout::RECORDS, layout::CHECKPOINTS] {
        for key in store.list(prefix, None, 100_000).await.unwrap() {
            if !snap.contains_key(&key) {
                writes.push(Write::delete(k(&key)));
            }
        }
    }
    for (key, v) in snap {
        writes.push(Write::put(k(key), v.clone()));
    }
    store.commit(writes).await.unwrap();
}

const N: u64 = 30;

/// One tamper of a record's JSON.
type Edit = Box<dyn Fn(&mut Value)>;

#[allow(clippy::too_many_lines)]
async fn tamper_suite(db: &Db) {
    let (p, _) = first_process(db, AuditConfig::default()).await;
    append_concurrently(&p.log, 0, 10).await;
    assert_eq!(p.log.checkpoint(&p.session).await.unwrap().unwrap().seq, 10);
    append_concurrently(&p.log, 10, 20).await;
    assert_eq!(p.log.checkpoint(&p.session).await.unwrap().unwrap().seq, N);
    let store = p.store.as_ref();
    let raw_keys = store.get(&k(layout::KEYS)).await.unwrap().unwrap().value;
    assert!(
        !raw_keys.windows(7).any(|w| w == b"signing"),
        "the audit keys are stored in clear"
    );
    let clean = verify(&p).await;
    assert!(clean.intact(), "{:?}", clean.problems);
    assert_eq!(
        (clean.records, clean.checkpoints, clean.unsigned_tail),
        (N, 2, 0)
    );
    let snap = snapshot(store).await;

    // Each field of a record edited, once leaving the hash and once
    // re-chaining everything after it; both must be caught, at that record.
    let target = 7;
    let key7 = layout::record(target);
    let original = get_json(store, &key7).await;
    let edits: Vec<(&str, Edit)> = vec![
        ("seq", Box::new(|v| v["seq"] = json!(70))),
        ("prev", Box::new(|v| v["prev"] = json!(vern_audit::GENESIS))),
        (
            "time",
            Box::new(|v| v["time"] = json!("2020-01-01T00:00:00.000Z")),
        ),
        ("hash", Box::new(|v| v["hash"] = json!(vern_audit::GENESIS))),
        (
            "request_id",
            Box::new(|v| v["event"]["request_id"] = json!("forged")),
        ),
        (
            "operation",
            Box::new(|v| v["event"]["operation"] = json!("GET /v1/sys/health")),
        ),
        (
            "principal",
            Box::new(|v| v["event"]["principal"]["id"] = json!("op.mallory")),
        ),
        (
            "principal tenant",
            Box::new(|v| v["event"]["principal"]["tenant"] = json!("other")),
        ),
        (
            "action",
            Box::new(|v| v["event"]["action"] = json!("secret.list")),
        ),
        (
            "resource",
            Box::new(|v| v["event"]["resource"] = json!("secret:secret/x/y/z/w")),
        ),
        (
            "resource tenant",
            Box::new(|v| v["event"]["resource_tenant"] = Value::Null),
        ),
        (
            "decision",
            Box::new(|v| {
                let allowed = v["event"]["decision"]["allowed"].as_bool().unwrap();
                v["event"]["decision"]["allowed"] = json!(!allowed);
            }),
        ),
        (
            "policies",
            Box::new(|v| v["event"]["decision"]["policies"] = json!([])),
        ),
        ("status", Box::new(|v| v["event"]["status"] = json!(404))),
        (
            "source",
            Box::new(|v| v["event"]["source"] = json!("10.0.0.1")),
        ),
        (
            "token",
            Box::new(|v| v["event"]["token"]["hmac"] = json!("hmac-sha256:00")),
        ),
        (
            "binding",
            Box::new(|v| v["event"]["token"]["binding"] = json!("none")),
        ),
        ("hmacs", Box::new(|v| v["event"]["hmacs"] = json!({}))),
        (
            "extra field",
            Box::new(|v| v["event"]["note"] = json!("added")),
        ),
    ];
    for (field, edit) in &edits {
        let mut v = original.clone();
        edit(&mut v);
        put_json(store, &key7, &v).await;
        let report = verify(&p).await;
        let first = report
            .first_broken()
            .unwrap_or_else(|| panic!("edit of {field} undetected"));
        assert_eq!(first.seq, target, "edit of {field}: {:?}", report.problems);
        restore(store, &snap).await;

        // Re-chaining rewrites these fields itself, or cannot carry them.
        if matches!(*field, "seq" | "prev" | "hash" | "extra field") {
            continue;
        }
        let mut v = original.clone();
        edit(&mut v);
        put_json(store, &key7, &v).await;
        rechain(store, target, N).await;
        let report = verify(&p).await;
        assert!(
            !report.intact(),
            "rewritten chain after {field} edit undetected"
        );
        restore(store, &snap).await;
    }

    // A record deleted.
    delete(store, &key7).await;
    assert_eq!(verify(&p).await.first_broken().unwrap().seq, target);
    restore(store, &snap).await;

    // A record deleted and the rest renumbered and re-chained.
    for seq in target..N {
        let mut v = get_json(store, &layout::record(seq + 1)).await;
        v["seq"] = json!(seq);
        put_json(store, &layout::record(seq), &v).await;
    }
    delete(store, &layout::record(N)).await;
    rechain(store, target, N - 1).await;
    assert!(
        !verify(&p).await.intact(),
        "deletion with renumbering undetected"
    );
    restore(store, &snap).await;

    // Two records swapped.
    let r8 = get_json(store, &layout::record(8)).await;
    put_json(store, &layout::record(8), &original).await;
    put_json(store, &key7, &r8).await;
    assert_eq!(verify(&p).await.first_broken().unwrap().seq, target);
    restore(store, &snap).await;

    // Two records swapped with their seq fields too.
    let (mut a, mut b) = (r8.clone(), original.clone());
    a["seq"] = json!(7);
    b["seq"] = json!(8);
    put_json(store, &key7, &a).await;
    put_json(store, &layout::record(8), &b).await;
    assert_eq!(verify(&p).await.first_broken().unwrap().seq, target);
    restore(store, &snap).await;

    // A record inserted: everything after it renumbered and re-chained.
    for seq in (target..=N).rev() {
        let mut v = get_json(store, &layout::record(seq)).await;
        v["seq"] = json!(seq + 1);
        put_json(store, &layout::record(seq + 1), &v).await;
    }
    let mut forged = original.clone();
    forged["event"]["request_id"] = json!("inserted");
    put_json(store, &key7, &forged).await;
    assert_eq!(verify(&p).await.first_broken().unwrap().seq, target);
    rechain(store, target, N + 1).await;
    assert!(
        !verify(&p).await.intact(),
        "insertion with re-chaining undetected"
    );
    restore(store, &snap).await;

    // The tail truncated after the last checkpoint was signed.
    for seq in 25..=N {
        delete(store, &layout::record(seq)).await;
    }
    let report = verify(&p).await;
    assert_eq!(
        report.first_broken().unwrap().seq,
        25,
        "{:?}",
        report.problems
    );
    restore(store, &snap).await;

    // Unsigned records after the last checkpoint removed: the head still
    // names them.
    append_concurrently(&p.log, 100, 3).await;
    let longer = snapshot(store).await;
    for seq in N + 1..=N + 3 {
        delete(store, &layout::record(seq)).await;
    }
    let report = verify(&p).await;
    assert_eq!(
        report.first_broken().unwrap().seq,
        N + 1,
        "{:?}",
        report.problems
    );
    restore(store, &longer).await;
    assert!(verify(&p).await.intact());
    let snap = longer;

    // A checkpoint forged: its head changed.
    let cp_key = layout::checkpoint(10);
    let cp = get_json(store, &cp_key).await;
    let mut forged = cp.clone();
    forged["head"] = json!(vern_audit::GENESIS);
    put_json(store, &cp_key, &forged).await;
    assert_eq!(verify(&p).await.first_broken().unwrap().seq, 10);
    restore(store, &snap).await;

    // The whole chain rewritten and re-signed with another key.
    let mallory = AuditKeys::generate();
    let mut v = original.clone();
    v["event"]["status"] = json!(403);
    put_json(store, &key7, &v).await;
    rechain(store, target, N + 3).await;
    for seq in [10, N] {
        let head = get_json(store, &layout::record(seq)).await["hash"].clone();
        let mut cp: vern_audit::Checkpoint =
            serde_json::from_value(get_json(store, &layout::checkpoint(seq)).await).unwrap();
        cp.head = head.as_str().unwrap().to_owned();
        cp.key = mallory.public_key().to_string();
        cp.signature = sign_with(&mallory, &cp);
        put_json(
            store,
            &layout::checkpoint(seq),
            &serde_json::to_value(&cp).unwrap(),
        )
        .await;
    }
    let report = verify(&p).await;
    assert_eq!(
        report.first_broken().unwrap().seq,
        10,
        "{:?}",
        report.problems
    );
    // Verified against the forger's key instead, the same log looks fine:
    // the trusted key is what makes checkpoints worth anything.
    let fooled = verify_store(store, mallory.public_key(), &mut |_| {})
        .await
        .unwrap();
    assert!(fooled.intact());
    restore(store, &snap).await;

    // A checkpoint's signature replaced by one of another key under the
    // trusted key's name.
    let mut forged: vern_audit::Checkpoint = serde_json::from_value(cp).unwrap();
    forged.signature = sign_with(&mallory, &forged);
    put_json(store, &cp_key, &serde_json::to_value(&forged).unwrap()).await;
    assert_eq!(verify(&p).await.first_broken().unwrap().seq, 10);
    restore(store, &snap).await;

    assert!(verify(&p).await.intact());
}

/// Signs a checkpoint with someone else's key.
fn sign_with(keys: &AuditKeys, cp: &vern_audit::Checkpoint) -> String {
    keys.sign_checkpoint(cp)
}

async fn two_processes_keep_one_chain(db: &Db) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.jsonl");
    let config = AuditConfig {
        sink: Some(SinkTarget::File(file.clone())),
        ..AuditConfig::default()
    };
    let (a, share) = first_process(db, config).await;
    let b = another_process(db, &share).await;
    let (x, y) = tokio::join!(
        append_concurrently(&a.log, 0, 150),
        append_concurrently(&b.log, 150, 150),
    );
    let ((), ()) = (x, y);
    a.log.checkpoint(&a.session).await.unwrap();
    let report = verify(&b).await;
    assert!(report.intact(), "{:?}", report.problems);
    assert_eq!(report.records, 300);
    assert_eq!(report.head_seq, 300);
    assert_eq!(report.unsigned_tail, 0);
    let mut ids: Vec<_> = a
        .log
        .query(&Filter {
            limit: 1000,
            ..Filter::default()
        })
        .await
        .unwrap()
        .records
        .into_iter()
        .map(|r| r.event.request_id)
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 300);

    // A's file holds the whole chain, B's records included (filled in from
    // storage), and verifies on its own.
    let from_file =
        vern_audit::verify::verify_file(&file, a.session.keys().public_key(), &mut |_| {}).unwrap();
    assert!(from_file.intact(), "{:?}", from_file.problems);
    assert_eq!((from_file.records, from_file.unsigned_tail), (300, 0));

    // Keys that vanish under an existing log are not silently replaced.
    a.store
        .commit(vec![Write::delete(k(layout::KEYS))])
        .await
        .unwrap();
    let store = db.open().await;
    let seal = Seal::new(Arc::clone(&store), clock()).await.unwrap();
    seal.unseal(&hex::encode(&share)).await.unwrap();
    let log = AuditLog::new(store, clock(), AuditConfig::default()).unwrap();
    let Err(err) = log.session(&seal.barrier().unwrap()).await else {
        panic!("new keys were made for an existing log");
    };
    assert!(err.to_string().contains("missing"), "{err}");
}

async fn failing_sink_fails_appends(db: &Db) {
    let config = AuditConfig {
        sink: Some(SinkTarget::parse("/dev/full")),
        ..AuditConfig::default()
    };
    let (p, _) = first_process(db, config).await;
    let err = p.log.append(event(1)).await.unwrap_err();
    assert!(err.to_string().contains("/dev/full"), "{err}");
}

async fn queries_filter_and_page(db: &Db) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    let config = AuditConfig {
        sink: Some(SinkTarget::File(file.clone())),
        checkpoint_interval: Duration::from_millis(50),
        ..AuditConfig::default()
    };
    let (p, _) = first_process(db, config).await;
    for i in 0..40 {
        p.log.append(event(i)).await.unwrap();
    }
    let q = |f: Filter| {
        let log = p.log.clone();
        async move { log.query(&Filter { limit: 1000, ..f }).await.unwrap() }
    };
    let all = q(Filter::default()).await;
    assert_eq!(
        (all.records.len(), all.head, all.next_after),
        (40, 40, None)
    );
    let denied = q(Filter {
        allowed: Some(false),
        ..Filter::default()
    })
    .await;
    assert_eq!(denied.records.len(), 8);
    let globex = q(Filter {
        tenant: Some("globex".to_owned()),
        action: Some("secret.read".to_owned()),
        ..Filter::default()
    })
    .await;
    assert!(globex
        .records
        .iter()
        .all(|r| r.event.concerns_tenant("globex")));
    assert_eq!(globex.records.len(), 20);
    let by = q(Filter {
        principal: Some("svc.acme.web.prod.api1".to_owned()),
        ..Filter::default()
    })
    .await;
    assert_eq!(by.records.len(), 13);
    let page = p
        .log
        .query(&Filter {
            after: 10,
            limit: 5,
            ..Filter::default()
        })
        .await
        .unwrap();
    let seqs: Vec<u64> = page.records.iter().map(|r| r.seq).collect();
    assert_eq!(
        (seqs, page.next_after),
        (vec![11, 12, 13, 14, 15], Some(15))
    );
    let future = q(Filter {
        since: Some(std::time::SystemTime::now() + Duration::from_secs(3600)),
        ..Filter::default()
    })
    .await;
    assert!(future.records.is_empty());

    // The file sink holds the same chain and, once the interval has
    // passed, a checkpoint.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&file)
        .unwrap()
        .contains(r#""type":"checkpoint""#)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint was signed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report =
        vern_audit::verify::verify_file(&file, p.session.keys().public_key(), &mut |_| {}).unwrap();
    assert!(report.intact(), "{:?}", report.problems);
    let signed = report.last_checkpoint.unwrap();
    assert_eq!((report.records, report.unsigned_tail), (40, 40 - signed));
    let text = std::fs::read_to_string(&file).unwrap();
    let cut: String = text
        .lines()
        .filter(|l| !l.contains("\"seq\":3,"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&file, cut).unwrap();
    let report =
        vern_audit::verify::verify_file(&file, p.session.keys().public_key(), &mut |_| {}).unwrap();
    assert_eq!(report.first_broken().unwrap().seq, 3);
    let _: PublicKey = p.session.keys().public_key();
}
