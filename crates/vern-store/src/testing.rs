//! Test support shared by every crate's storage-backed tests: each test gets
//! its own fresh PostgreSQL database on the server named by
//! `VERN_TEST_POSTGRES_URL`.
#![allow(clippy::panic)]

use std::sync::Arc;

use tokio_postgres::NoTls;

use crate::{Entry, Key, Locking, Store, StoreError, Write};

/// One database for a test, from which any number of independent store
/// handles (as separate Vern processes would have) can be opened.
pub struct TestDb {
    /// The storage URL.
    pub url: String,
    locking: Locking,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A SQLite database in a fresh temporary directory.
    pub fn sqlite() -> Self {
        Self::sqlite_with(Locking::Shared)
    }

    /// A SQLite database in a fresh temporary directory whose handles hold
    /// it for this process alone, as the server's main database is held.
    pub fn sqlite_exclusive() -> Self {
        Self::sqlite_with(Locking::Exclusive)
    }

    fn sqlite_with(locking: Locking) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temporary directory: {e}"));
        let url = format!("sqlite:{}", dir.path().join("vern.db").display());
        Self {
            url,
            locking,
            _dir: Some(dir),
        }
    }

    /// A fresh PostgreSQL database; see [`fresh_postgres_url`].
    pub async fn postgres() -> Option<Self> {
        let url = fresh_postgres_url().await?;
        Some(Self {
            url,
            locking: Locking::Shared,
            _dir: None,
        })
    }

    /// Opens another handle.
    pub async fn open(&self) -> Arc<dyn Store> {
        crate::open_with(&self.url, 4, self.locking)
            .await
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", crate::redact_url(&self.url)))
    }
}

/// The environment variable naming the PostgreSQL server for tests.
pub const POSTGRES_URL_VAR: &str = "VERN_TEST_POSTGRES_URL";

/// A URL to a newly created, empty database, or `None` when no PostgreSQL
/// is configured outside CI. Under `CI=true` a missing or unreachable
/// PostgreSQL fails the test: CI never skips silently.
pub async fn fresh_postgres_url() -> Option<String> {
    let Ok(base) = std::env::var(POSTGRES_URL_VAR) else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "{POSTGRES_URL_VAR} is not set, but CI=true requires the PostgreSQL tests to run"
            );
        }
        eprintln!("note: {POSTGRES_URL_VAR} is not set; skipping the PostgreSQL half of this test");
        return None;
    };
    let (client, conn) = match tokio_postgres::connect(&base, NoTls).await {
        Ok(pair) => pair,
        Err(e) => panic!(
            "cannot reach PostgreSQL at {}: {e}",
            crate::redact_url(&base)
        ),
    };
    let driver = tokio::spawn(conn);
    let name = format!("vern_test_{}", uuid::Uuid::new_v4().simple());
    if let Err(e) = client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
    {
        panic!("cannot create test database: {e}");
    }
    drop(client);
    let _ = driver.await;
    Some(with_database(&base, &name))
}

/// Rebuilds the URL with the new database name, keeping everything else.
fn with_database(base: &str, db: &str) -> String {
    let (head, query) = match base.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (base, None),
    };
    let after_scheme = head.find("://").map_or(0, |i| i + 3);
    let head = match head[after_scheme..].find('/') {
        Some(slash) => &head[..after_scheme + slash],
        None => head,
    };
    match query {
        Some(q) => format!("{head}/{db}?{q}"),
        None => format!("{head}/{db}"),
    }
}

/// A store that counts its read calls (`get` and `get_many`: one round
/// trip each on PostgreSQL), so a test can hold a path to its read budget.
pub struct CountingStore {
    inner: Arc<dyn Store>,
    reads: Arc<std::sync::atomic::AtomicUsize>,
}

impl CountingStore {
    /// Wraps `inner`; the count starts at zero.
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            reads: Arc::default(),
        }
    }

    /// The read calls so far, shared with the store.
    pub fn reads(&self) -> Arc<std::sync::atomic::AtomicUsize> {
        Arc::clone(&self.reads)
    }

    fn count(&self) {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl Store for CountingStore {
    async fn get(&self, key: &Key) -> Result<Option<Entry>, StoreError> {
        self.count();
        self.inner.get(key).await
    }

    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Entry>>, StoreError> {
        self.count();
        self.inner.get_many(keys).await
    }

    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.inner.list(prefix, after, limit).await
    }

    async fn commit(&self, writes: Vec<Write>) -> Result<Vec<u64>, StoreError> {
        self.inner.commit(writes).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
}
