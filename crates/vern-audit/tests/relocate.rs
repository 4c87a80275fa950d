//! Moving a log into a store of its own: all of it or none of it, resumed
//! after an interruption, never over a log already there.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use std::sync::Arc;

use vern_audit::verify::verify_store;
use vern_audit::{layout, relocate, AuditConfig, AuditLog, Event, Relocation};
use vern_core::SystemClock;
use vern_seal::Seal;
use vern_store::testing::TestDb;
use vern_store::{Key, Store, Write};

async fn log_keys(store: &dyn Store) -> Vec<String> {
    let mut keys = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list(layout::PREFIX, after.as_deref(), 500)
            .await
            .unwrap();
        let Some(last) = page.last().cloned() else {
            return keys;
        };
        keys.extend(page);
        after = Some(last);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_log_moves_whole_resumes_after_an_interruption_and_never_overwrites() {
    let (main_db, audit_db) = (TestDb::sqlite(), TestDb::sqlite());
    let (main, audit) = (main_db.open().await, audit_db.open().await);
    let seal = Seal::new(Arc::clone(&main), Arc::new(SystemClock))
        .await
        .unwrap();
    seal.init_unsealed(1, 1, &[], None).await.unwrap();
    let log = AuditLog::new(
        Arc::clone(&main),
        Arc::new(SystemClock),
        AuditConfig::default(),
    )
    .unwrap();
    let session = log.session(&seal.barrier().unwrap()).await.unwrap();
    // More records than one page of the move, appended in batches.
    let appends = (0..1_500).map(|i| {
        let log = log.clone();
        async move {
            log.append(Event {
                request_id: format!("req-{i}"),
                operation: "GET /v1/sys/health".to_owned(),
                status: 200,
                ..Event::default()
            })
            .await
            .unwrap()
        }
    });
    futures_util::future::join_all(appends).await;
    log.checkpoint(&session).await.unwrap();
    let before = log_keys(main.as_ref()).await;
    assert!(before.len() > 1_500);

    // A move cut short: some records copied, no head yet.
    let partial: Vec<Write> = before
        .iter()
        .filter(|k| k.as_str() != layout::HEAD)
        .take(700)
        .map(|k| Write::put(Key::new(k).unwrap(), b"partial".to_vec()))
        .collect();
    audit.commit(partial).await.unwrap();

    assert_eq!(
        relocate(main.as_ref(), audit.as_ref()).await.unwrap(),
        Relocation::Moved(before.len())
    );
    assert!(log_keys(main.as_ref()).await.is_empty());
    assert_eq!(log_keys(audit.as_ref()).await, before);
    let report = verify_store(audit.as_ref(), session.keys().public_key(), &mut |_| {})
        .await
        .unwrap();
    assert!(report.intact(), "{report:?}");
    assert_eq!(report.records, 1_500);

    assert_eq!(
        relocate(main.as_ref(), audit.as_ref()).await.unwrap(),
        Relocation::Nothing
    );
    // A log entry in the main store beside a log in the audit store (a
    // downgrade, say) is left alone, and the audit store is not touched.
    main.commit(vec![Write::put(
        Key::new(layout::HEAD).unwrap(),
        b"{}".to_vec(),
    )])
    .await
    .unwrap();
    assert_eq!(
        relocate(main.as_ref(), audit.as_ref()).await.unwrap(),
        Relocation::LeftInPlace(1)
    );
    assert_eq!(log_keys(audit.as_ref()).await, before);
}
