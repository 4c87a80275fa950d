//! The log in segment files: appends across segments and restarts, reads by
//! cursor at every position, recovery from an unfinished write, refusal
//! of a corrupt end, a second process and a directory that cannot take a
//! new segment (also with batches in flight), the sink written by the
//! segment writer, tamper detection, and moving a log out of a key-value
//! store.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use vern_audit::verify::{verify_file, verify_segments, verify_store, Report};
use vern_audit::{
    import, layout, AuditConfig, AuditLog, Event, Filter, PublicKey, Relocation, SegmentLog,
    Session, SinkTarget,
};
use vern_core::SystemClock;
use vern_seal::Seal;
use vern_store::testing::TestDb;
use vern_store::{Key, Store, Write};

/// The barrier the audit keys live behind, in a throwaway database.
struct Keys {
    _db: TestDb,
    store: Arc<dyn Store>,
    seal: Seal,
}

impl Keys {
    async fn new() -> Self {
        let db = TestDb::sqlite();
        let store = db.open().await;
        let seal = Seal::new(Arc::clone(&store), Arc::new(SystemClock))
            .await
            .unwrap();
        seal.init_unsealed(1, 1, &[], None).await.unwrap();
        Self {
            _db: db,
            store,
            seal,
        }
    }

    async fn session(&self, log: &AuditLog) -> Arc<Session> {
        log.session(&self.seal.barrier().unwrap()).await.unwrap()
    }
}

fn event(i: usize) -> Event {
    Event {
        request_id: format!("req-{i}"),
        operation: "GET /v1/{mount}/data/{*path}".to_owned(),
        action: Some("secret.read".to_owned()),
        resource: Some(format!("secret:secret/acme/web/prod/db{i}")),
        status: 200,
        ..Event::default()
    }
}

/// Opens the log in `dir`, waiting for a closed one's appender to let go
/// of it.
async fn open(dir: &Path, segment_bytes: u64) -> AuditLog {
    open_with(dir, segment_bytes, AuditConfig::default()).await
}

async fn open_with(dir: &Path, segment_bytes: u64, config: AuditConfig) -> AuditLog {
    for _ in 0..100 {
        match SegmentLog::open_with(dir, segment_bytes) {
            Ok(files) => return AuditLog::new(files, Arc::new(SystemClock), config).unwrap(),
            Err(e) if e.to_string().contains("held by another process") => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the log in {} stayed locked", dir.display());
}

async fn append_concurrently(log: &AuditLog, from: usize, n: usize) {
    let appends = (from..from + n).map(|i| {
        let log = log.clone();
        async move { log.append(event(i)).await.unwrap() }
    });
    futures_util::future::join_all(appends).await;
}

fn verify(dir: &Path, key: PublicKey) -> Report {
    verify_segments(dir, key, &mut |_| {}).unwrap()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files
}

async fn all_seqs(log: &AuditLog) -> Vec<u64> {
    let mut seqs = Vec::new();
    let mut after = 0;
    loop {
        let page = log
            .query(&Filter {
                after,
                limit: 97,
                ..Filter::default()
            })
            .await
            .unwrap();
        seqs.extend(page.records.iter().map(|r| r.seq));
        match page.next_after {
            Some(next) => after = next,
            None => return seqs,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_roll_over_segments_and_go_on_after_a_restart() {
    let keys = Keys::new().await;
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 8 * 1024).await;
    let session = keys.session(&log).await;
    // In batches of ten: a segment is closed only between batches.
    for batch in 0..30 {
        append_concurrently(&log, batch * 10, 10).await;
    }
    log.checkpoint(&session).await.unwrap().unwrap();
    assert_eq!(all_seqs(&log).await, (1..=300).collect::<Vec<_>>());
    let key = session.keys().public_key();
    drop((log, session));

    let log = open(dir.path(), 8 * 1024).await;
    let session = keys.session(&log).await;
    append_concurrently(&log, 300, 20).await;
    log.checkpoint(&session).await.unwrap().unwrap();
    assert_eq!(all_seqs(&log).await, (1..=320).collect::<Vec<_>>());
    assert!(segment_files(dir.path()).len() > 5);

    let report = verify(dir.path(), key);
    assert!(report.intact(), "{report:?}");
    assert_eq!((report.records, report.checkpoints), (320, 2));
    assert_eq!(report.unsigned_tail, 0);
    // A restart signs nothing new when the head is signed already.
    drop((log, session));
    let log = open(dir.path(), 8 * 1024).await;
    let session = keys.session(&log).await;
    assert!(log.checkpoint(&session).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cursor_reads_on_from_every_position() {
    let keys = Keys::new().await;
    for segment_bytes in [vern_audit::DEFAULT_SEGMENT_BYTES, 40 * 1024] {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), segment_bytes).await;
        let session = keys.session(&log).await;
        for batch in 0..7 {
            append_concurrently(&log, batch * 100, 100).await;
            // Checkpoint lines between records are not records.
            log.checkpoint(&session).await.unwrap();
        }
        for after in [
            0, 1, 2, 254, 255, 256, 257, 511, 512, 513, 650, 699, 700, 701,
        ] {
            let page = log
                .query(&Filter {
                    after,
                    limit: 3,
                    ..Filter::default()
                })
                .await
                .unwrap();
            let seqs: Vec<u64> = page.records.iter().map(|r| r.seq).collect();
            let expected: Vec<u64> = (after + 1..=700).take(3).collect();
            assert_eq!(seqs, expected, "after {after}, segments of {segment_bytes}");
            assert_eq!(page.head, 700);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unfinished_write_is_cut_and_the_chain_goes_on() {
    let keys = Keys::new().await;
    for tail in [
        br#"{"type":"record","seq":21,"prev":"ab"#.to_vec(),
        vec![0u8; 4096],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), 1 << 20).await;
        let session = keys.session(&log).await;
        append_concurrently(&log, 0, 20).await;
        let key = session.keys().public_key();
        drop((log, session));
        let last = segment_files(dir.path()).pop().unwrap();
        let before = std::fs::read(&last).unwrap();
        let mut torn = before.clone();
        torn.extend_from_slice(&tail);
        std::fs::write(&last, &torn).unwrap();
        // Still being written, for all a reader can tell: not a problem.
        assert!(verify(dir.path(), key).intact());

        let log = open(dir.path(), 1 << 20).await;
        assert_eq!(std::fs::read(&last).unwrap(), before);
        append_concurrently(&log, 20, 5).await;
        let report = verify(dir.path(), key);
        assert!(report.intact(), "{report:?}");
        assert_eq!(report.records, 25);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_last_record_that_does_not_parse_stops_appends_and_is_reported() {
    let keys = Keys::new().await;
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1 << 20).await;
    let session = keys.session(&log).await;
    append_concurrently(&log, 0, 5).await;
    let key = session.keys().public_key();
    drop((log, session));
    let last = segment_files(dir.path()).pop().unwrap();
    let text = std::fs::read_to_string(&last).unwrap();
    // A complete last line, edited: evidence, never cut.
    let edited = text.replacen(r#""seq":5,"#, r#""seq":5,,"#, 1);
    assert_ne!(edited, text);
    std::fs::write(&last, &edited).unwrap();

    let log = open(dir.path(), 1 << 20).await;
    let err = log.append(event(9)).await.unwrap_err().to_string();
    assert!(err.contains("run `vern audit verify`"), "{err}");
    // Nor is it taken for a new log: keys that went missing are not
    // replaced by fresh ones that would sign whatever it becomes.
    let elsewhere = Keys::new().await;
    let err = log
        .session(&elsewhere.seal.barrier().unwrap())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("the audit log has records"), "{err}");
    assert_eq!(std::fs::read_to_string(&last).unwrap(), edited);
    let report = verify(dir.path(), key);
    assert_eq!(report.first_broken().unwrap().seq, 5, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_process_cannot_append_to_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    let _held = SegmentLog::open(dir.path()).unwrap();
    let err = SegmentLog::open(dir.path()).err().unwrap().to_string();
    assert!(err.contains("held by another process"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_fail_while_no_segment_can_be_created_and_resume_after() {
    let keys = Keys::new().await;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("log");
    // One byte per segment: every batch starts a new file.
    let log = open(&dir, 1).await;
    let session = keys.session(&log).await;
    log.append(event(0)).await.unwrap();
    let aside = parent.path().join("aside");
    std::fs::rename(&dir, &aside).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();
    let err = log.append(event(1)).await.unwrap_err().to_string();
    assert!(err.contains("could not be written durably"), "{err}");
    std::fs::remove_file(&dir).unwrap();
    std::fs::rename(&aside, &dir).unwrap();
    assert_eq!(log.append(event(2)).await.unwrap(), 2);
    let report = verify(&dir, session.keys().public_key());
    assert!(report.intact(), "{report:?}");
    assert_eq!(report.records, 2);
}

/// Appends `n` records at once; returns the numbers of those written and
/// how many failed.
async fn append_counting(log: &AuditLog, from: usize, n: usize) -> (Vec<u64>, usize) {
    let appends = (from..from + n).map(|i| {
        let log = log.clone();
        async move { log.append(event(i)).await }
    });
    let results = futures_util::future::join_all(appends).await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    (results.into_iter().filter_map(Result::ok).collect(), failed)
}

/// The writer syncs one batch while the next ones are chained after it.
/// When a write fails, the batches chained on it fail too, unwritten; the
/// next ones chain after what is durable, so the numbers handed out stay
/// one gapless run and the files verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_write_fails_what_was_chained_on_it_and_the_chain_goes_on() {
    let keys = Keys::new().await;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("log");
    let aside = parent.path().join("aside");
    // One byte per segment: every write needs a new file.
    let log = open(&dir, 1).await;
    let session = keys.session(&log).await;
    let mut written = vec![log.append(event(0)).await.unwrap()];
    let mut from = 1;
    for _ in 0..3 {
        std::fs::rename(&dir, &aside).unwrap();
        std::fs::write(&dir, b"not a directory").unwrap();
        let (ok, failed) = append_counting(&log, from, 64).await;
        assert_eq!((ok.len(), failed), (0, 64));
        std::fs::remove_file(&dir).unwrap();
        std::fs::rename(&aside, &dir).unwrap();
        let (ok, failed) = append_counting(&log, from + 64, 64).await;
        assert_eq!((ok.len(), failed), (64, 0));
        written.extend(ok);
        from += 128;
    }
    // Now with appends in flight while the directory goes and comes back.
    let appends = {
        let log = log.clone();
        tokio::spawn(async move {
            let mut all = Vec::new();
            for round in 0..20 {
                all.push(append_counting(&log, 1000 + round * 32, 32).await);
            }
            all
        })
    };
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(2)).await;
        std::fs::rename(&dir, &aside).unwrap();
        std::fs::write(&dir, b"not a directory").unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
        std::fs::remove_file(&dir).unwrap();
        std::fs::rename(&aside, &dir).unwrap();
    }
    for (ok, _) in appends.await.unwrap() {
        written.extend(ok);
    }
    written.sort_unstable();
    let expected: Vec<u64> = (1..=written.len() as u64).collect();
    assert_eq!(written, expected, "numbers handed out skip or repeat");
    assert_eq!(all_seqs(&log).await, expected);
    log.checkpoint(&session).await.unwrap().unwrap();
    let report = verify(&dir, session.keys().public_key());
    assert!(report.intact(), "{report:?}");
    assert_eq!(report.records, written.len() as u64);
}

/// With segment files, the sink is written by the segment writer, after
/// the files and before a request is answered: it holds the same records
/// and checkpoints, and verifies on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sink_holds_what_the_segment_files_hold() {
    let keys = Keys::new().await;
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("audit.jsonl");
    let config = || AuditConfig {
        sink: Some(SinkTarget::File(sink.clone())),
        ..AuditConfig::default()
    };
    let files = dir.path().join("log");
    let log = open_with(&files, 8 * 1024, config()).await;
    let session = keys.session(&log).await;
    for batch in 0..10 {
        append_concurrently(&log, batch * 25, 25).await;
    }
    let cp = log.close().await.unwrap().unwrap();
    assert_eq!(cp.seq, 250, "the closing checkpoint signs every record");
    drop((log, session));
    let key = keys
        .session(&open_with(&files, 8 * 1024, config()).await)
        .await;
    let key = key.keys().public_key();
    let from_files = verify(&files, key);
    let from_sink = verify_file(&sink, key, &mut |_| {}).unwrap();
    assert!(
        from_files.intact() && from_sink.intact(),
        "{from_files:?} {from_sink:?}"
    );
    assert_eq!((from_sink.records, from_sink.checkpoints), (250, 1));
    assert_eq!(from_sink.unsigned_tail, 0);
    let lines = |text: String| -> Vec<String> { text.lines().map(str::to_owned).collect() };
    let mut segments = String::new();
    for file in segment_files(&files) {
        segments.push_str(&std::fs::read_to_string(file).unwrap());
    }
    assert_eq!(
        lines(std::fs::read_to_string(&sink).unwrap()),
        lines(segments)
    );
}

/// A sink that cannot be written fails the appends, as with a store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_sink_fails_appends_to_segment_files() {
    let dir = tempfile::tempdir().unwrap();
    let config = AuditConfig {
        sink: Some(SinkTarget::parse("/dev/full")),
        ..AuditConfig::default()
    };
    let log = open_with(dir.path(), 8 * 1024, config).await;
    let err = log.append(event(1)).await.unwrap_err();
    assert!(err.to_string().contains("/dev/full"), "{err}");
}

/// A copy of the files of `dir` in a new directory.
fn copy_of(dir: &Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    for file in segment_files(dir) {
        std::fs::copy(&file, copy.path().join(file.file_name().unwrap())).unwrap();
    }
    copy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_kind_of_edit_to_the_files_is_detected() {
    let keys = Keys::new().await;
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 4 * 1024).await;
    let session = keys.session(&log).await;
    for batch in 0..4 {
        append_concurrently(&log, batch * 15, 15).await;
        log.checkpoint(&session).await.unwrap();
    }
    let key = session.keys().public_key();
    drop((log, session));
    assert!(verify(dir.path(), key).intact());
    let files = segment_files(dir.path());
    assert!(files.len() >= 4, "{files:?}");
    let name = |i: usize| files[i].file_name().unwrap().to_owned();

    let broken = |edit: &dyn Fn(&Path)| {
        let copy = copy_of(dir.path());
        edit(copy.path());
        let report = verify(copy.path(), key);
        assert!(!report.intact(), "{report:?}");
        report
    };
    // One byte of a record.
    broken(&|d| {
        let path = d.join(name(1));
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.iter().position(|b| *b == b'G').unwrap();
        bytes[at] = b'P';
        std::fs::write(&path, bytes).unwrap();
    });
    // One line removed.
    broken(&|d| {
        let path = d.join(name(1));
        let text = std::fs::read_to_string(&path).unwrap();
        let kept: Vec<&str> = text.lines().skip(1).collect();
        std::fs::write(&path, kept.join("\n") + "\n").unwrap();
    });
    // A whole segment removed.
    broken(&|d| std::fs::remove_file(d.join(name(1))).unwrap());
    // Two segments swapped.
    broken(&|d| {
        let (a, b) = (d.join(name(1)), d.join(name(2)));
        let tmp = d.join("swap");
        std::fs::rename(&a, &tmp).unwrap();
        std::fs::rename(&b, &a).unwrap();
        std::fs::rename(&tmp, &b).unwrap();
    });
    // The records after 30 dropped, the checkpoints kept: truncation.
    let report = broken(&|d| {
        for file in segment_files(d) {
            let text = std::fs::read_to_string(&file).unwrap();
            let kept: Vec<&str> = text
                .lines()
                .filter(|l| {
                    l.starts_with(r#"{"type":"checkpoint""#)
                        || serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                            .as_u64()
                            .unwrap()
                            <= 30
                })
                .collect();
            std::fs::write(&file, kept.join("\n") + "\n").unwrap();
        }
    });
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.reason.contains("truncated")),
        "{report:?}"
    );
}

async fn log_keys(store: &dyn Store) -> Vec<(String, Vec<u8>)> {
    let keys = store.list(layout::PREFIX, None, 100_000).await.unwrap();
    let mut out = Vec::new();
    for k in keys {
        let value = store.get(&Key::new(&k).unwrap()).await.unwrap().unwrap();
        out.push((k, value.value));
    }
    out
}

async fn restore(store: &dyn Store, entries: &[(String, Vec<u8>)]) {
    let writes = entries
        .iter()
        .map(|(k, v)| Write::put(Key::new(k).unwrap(), v.clone()))
        .collect();
    store.commit(writes).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_log_in_a_store_moves_into_segment_files() {
    let keys = Keys::new().await;
    // A log as older versions kept it, in the key-value store.
    let kv = AuditLog::new(
        Arc::clone(&keys.store),
        Arc::new(SystemClock),
        AuditConfig::default(),
    )
    .unwrap();
    let session = keys.session(&kv).await;
    append_concurrently(&kv, 0, 40).await;
    kv.checkpoint(&session).await.unwrap().unwrap();
    append_concurrently(&kv, 40, 10).await;
    let key = session.keys().public_key();
    let before = verify_store(keys.store.as_ref(), key, &mut |_| {})
        .await
        .unwrap();
    assert!(before.intact());
    drop((kv, session));
    let entries = log_keys(keys.store.as_ref()).await;

    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("vern-audit");
    assert_eq!(
        import(keys.store.as_ref(), &dir).await.unwrap(),
        Relocation::Moved(entries.len())
    );
    assert!(log_keys(keys.store.as_ref()).await.is_empty());
    let report = verify(&dir, key);
    assert!(report.intact(), "{report:?}");
    assert_eq!((report.records, report.checkpoints), (50, 1));
    assert_eq!(report.head_hash, before.head_hash);

    // Cut short after the files were in place: the deletion is finished.
    restore(keys.store.as_ref(), &entries).await;
    assert_eq!(
        import(keys.store.as_ref(), &dir).await.unwrap(),
        Relocation::Moved(entries.len())
    );
    assert_eq!(
        import(keys.store.as_ref(), &dir).await.unwrap(),
        Relocation::Nothing
    );

    // The files go on from the moved chain, keys and all.
    let log = open(&dir, 1 << 20).await;
    let session = keys.session(&log).await;
    append_concurrently(&log, 50, 5).await;
    assert_eq!(session.keys().public_key(), key);
    drop((log, session));
    let report = verify(&dir, key);
    assert!(report.intact(), "{report:?}");
    assert_eq!(report.records, 55);

    // Another log beside files that hold one is left alone.
    restore(keys.store.as_ref(), &entries).await;
    assert_eq!(
        import(keys.store.as_ref(), &dir).await.unwrap(),
        Relocation::LeftInPlace(entries.len())
    );
    assert_eq!(verify(&dir, key).records, 55);

    // A log with a record missing is not moved at all.
    keys.store
        .commit(vec![Write::delete(Key::new(layout::record(7)).unwrap())])
        .await
        .unwrap();
    let other = parent.path().join("other");
    let err = import(keys.store.as_ref(), &other)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("record 7 is missing"), "{err}");
    assert!(!other.exists());
}
