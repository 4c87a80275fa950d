//! Acknowledged writes survive a crash: a writer process is killed with
//! SIGKILL mid-stream, and every batch it acknowledged must be present and
//! complete afterwards, on SQLite and PostgreSQL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use vern_store::Key;

const ACKS_BEFORE_KILL: u64 = 150;

async fn crash_and_check(url: &str, extra: &[&str]) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vern-store-writer"))
        .args([url, "crash"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = Vec::new();
    while (acked.len() as u64) < ACKS_BEFORE_KILL {
        let line = lines.next().expect("writer exited early").unwrap();
        acked.push(line.parse::<u64>().unwrap());
    }
    child.kill().unwrap(); // SIGKILL on Unix
                           // Acknowledgements already in the pipe were printed after their commit
                           // returned, so they count too.
    for line in lines {
        acked.push(line.unwrap().parse().unwrap());
    }
    child.wait().unwrap();

    let store = vern_store::open(url, 1).await.unwrap();
    let last = *acked.last().unwrap();
    assert_eq!(
        acked,
        (0..=last).collect::<Vec<_>>(),
        "acks are consecutive"
    );
    for i in &acked {
        for side in ["a", "b"] {
            let key = Key::new(format!("crash/{side}/{i:010}")).unwrap();
            let entry = store.get(&key).await.unwrap();
            assert_eq!(
                entry.map(|e| e.value),
                Some(format!("value-{i}").into_bytes()),
                "acknowledged batch {i} lost its {side} half"
            );
        }
    }
    // A batch in flight at the kill is all there or all absent.
    let a = store
        .list("crash/a/", None, usize::MAX)
        .await
        .unwrap()
        .len();
    let b = store
        .list("crash/b/", None, usize::MAX)
        .await
        .unwrap()
        .len();
    assert_eq!(a, b, "a batch was half-written");
    assert!((last + 1..=last + 2).contains(&(a as u64)));
}

#[tokio::test]
async fn sqlite_keeps_acknowledged_writes_after_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("crash.db").display());
    crash_and_check(&url, &[]).await;
}

/// As the server holds its main database: the WAL index lives in the
/// killed process's memory and is rebuilt from the WAL on the next open.
#[tokio::test]
async fn exclusive_sqlite_keeps_acknowledged_writes_after_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("crash.db").display());
    crash_and_check(&url, &["exclusive"]).await;
}

#[tokio::test]
async fn postgres_keeps_acknowledged_writes_after_sigkill() {
    let Some(url) = vern_store::testing::fresh_postgres_url().await else {
        return;
    };
    crash_and_check(&url, &[]).await;
}
