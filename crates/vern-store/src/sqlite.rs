//! The embedded SQLite backend: WAL journal with `synchronous=FULL`, so an
//! acknowledged commit survives a crash; one writer connection (SQLite
//! serialises writers anyway) and a small pool of readers that proceed in
//! parallel with it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::{lock_order, prefix_end, Entry, Expect, Key, Op, Store, StoreError, Write};

const BACKEND: &str = "sqlite";

/// Schema migrations, applied in order; the index plus one is the version.
const MIGRATIONS: &[&str] = &["CREATE TABLE kv (
        key     TEXT PRIMARY KEY NOT NULL,
        value   BLOB NOT NULL,
        version INTEGER NOT NULL CHECK (version > 0)
    ) WITHOUT ROWID"];

/// Whether other processes may open the database while this store has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locking {
    /// SQLite's default: processes share the file through POSIX locks, and
    /// every read transaction takes and drops a lock on the WAL index
    /// (`-shm`) with `fcntl`.
    Shared,
    /// SQLite's `unix-excl` VFS: the first lock takes the whole file for
    /// this process until the store closes, and the WAL index lives in this
    /// process's memory, so a read takes no file lock at all (two `fcntl`
    /// calls saved per read transaction). Connections of this process still
    /// lock each other as usual; another process cannot open the file.
    Exclusive,
}

impl Locking {
    fn vfs(self) -> &'static str {
        match self {
            Self::Shared => "unix",
            Self::Exclusive => "unix-excl",
        }
    }
}

/// Takes the file's first lock. A database that another process holds
/// alone (a running server) answers busy here, after the busy timeout, and
/// is named as such: SQLite's "database is locked" does not say by whom.
fn first_lock(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
    match conn.query_row("PRAGMA schema_version", [], |r| r.get::<_, i64>(0)) {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::DatabaseBusy =>
        {
            Err(StoreError::backend(
                BACKEND,
                format!(
                    "{} is held by another process (a running Vern server?)",
                    path.display()
                ),
            ))
        }
        Err(e) => Err(err(e)),
    }
}

/// How long a connection waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// SQLite storage in one database file.
pub struct SqliteStore {
    writer: Arc<Mutex<Connection>>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    /// Shared by every handle of this process on the same file, so a
    /// commit through any of them reaches it.
    cache: Arc<ReadCache>,
    /// Reads are answered from `cache` only while this process holds the
    /// file alone ([`Locking::Exclusive`]): then every change goes through
    /// a handle of this process, whose commit keeps the cache exact.
    cached_reads: bool,
}

/// The read cache of each database file this process has open.
fn cache_of(path: &Path) -> Arc<ReadCache> {
    static CACHES: OnceLock<Mutex<HashMap<PathBuf, Weak<ReadCache>>>> = OnceLock::new();
    let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let mut caches = CACHES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    caches.retain(|_, c| c.strong_count() > 0);
    if let Some(cache) = caches.get(&key).and_then(Weak::upgrade) {
        return cache;
    }
    let cache = Arc::new(ReadCache::default());
    caches.insert(key, Arc::downgrade(&cache));
    cache
}

/// Most bytes of keys and values the read cache holds; past it, it starts
/// over empty.
const CACHE_BYTES: usize = 1 << 20;

/// What a cached entry costs beside its key and value.
const CACHE_OVERHEAD: usize = 64;

/// Entries as last read, absent keys included (a token's revocation marker
/// is read on every request and almost never exists). The hot keys of the
/// request path (the token's marker and client, the secret's metadata and
/// version) are read from here instead of from SQLite, whose every read
/// re-checks the WAL index and copies pages out of the kernel's cache
/// (measured in `docs/ARCHITECTURE.md`).
///
/// Exactness: a commit removes its keys and moves the generation on both
/// before it begins and after it is durable (before it returns), and while
/// it runs nothing is inserted. A read inserts what it read only if no
/// commit was running when it began and the generation has not moved since:
/// otherwise it may have read a value as of before a commit, or the keys
/// of one batch from both sides of it. So the cache only ever holds values
/// as of one moment without a commit in flight, a multi-key read answered
/// from it is one snapshot, and once a commit has returned no reader finds
/// its keys' old values here, on this or any other thread.
#[derive(Default)]
struct ReadCache {
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    generation: u64,
    /// Commits in flight.
    writing: usize,
    bytes: usize,
    entries: HashMap<String, Option<Entry>>,
}

fn cached_size(key: &str, entry: &Option<Entry>) -> usize {
    key.len() + entry.as_ref().map_or(0, |e| e.value.len()) + CACHE_OVERHEAD
}

impl ReadCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every key's entry, if all of them are here; otherwise the generation
    /// under which what is read instead may be inserted (none while a commit
    /// runs).
    fn get_all(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>, Option<u64>> {
        let inner = self.lock();
        keys.iter()
            .map(|k| inner.entries.get(*k).cloned())
            .collect::<Option<Vec<_>>>()
            .ok_or((inner.writing == 0).then_some(inner.generation))
    }

    fn insert(&self, generation: u64, read: &[(&str, &Option<Entry>)]) {
        let mut inner = self.lock();
        if inner.generation != generation || inner.writing > 0 {
            return;
        }
        for (key, entry) in read {
            let size = cached_size(key, entry);
            if size > CACHE_BYTES / 16 {
                continue;
            }
            if inner.bytes + size > CACHE_BYTES {
                inner.entries = HashMap::new();
                inner.bytes = 0;
            }
            if let Some(old) = inner.entries.insert((*key).to_owned(), (*entry).clone()) {
                inner.bytes = inner.bytes.saturating_sub(cached_size(key, &old));
            }
            inner.bytes += size;
        }
    }

    /// Before a commit begins.
    fn begin_write(&self, writes: &[Write]) {
        let mut inner = self.lock();
        inner.writing += 1;
        inner.forget(writes);
    }

    /// After a commit ended, durable or failed.
    fn end_write(&self, writes: &[Write]) {
        let mut inner = self.lock();
        inner.writing = inner.writing.saturating_sub(1);
        inner.forget(writes);
    }
}

impl CacheInner {
    fn forget(&mut self, writes: &[Write]) {
        self.generation += 1;
        for w in writes {
            if let Some(old) = self.entries.remove(w.key.as_str()) {
                self.bytes = self.bytes.saturating_sub(cached_size(w.key.as_str(), &old));
            }
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, migrates it, and
    /// opens `readers` read-only connections beside the writer. With
    /// [`Locking::Exclusive`] the file is held by this process alone.
    pub async fn open(path: &Path, readers: usize, locking: Locking) -> Result<Self, StoreError> {
        let path = path.to_owned();
        let readers = readers.max(1);
        blocking(move || {
            prepare_files(&path)?;
            let vfs = locking.vfs();
            let mut writer = Connection::open_with_flags_and_vfs(&path, OpenFlags::default(), vfs)
                .map_err(err)?;
            first_lock(&writer, &path)?;
            configure(&writer)?;
            migrate(&mut writer)?;
            let readers = (0..readers)
                .map(|_| {
                    let conn = Connection::open_with_flags_and_vfs(
                        &path,
                        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                        vfs,
                    )
                    .map_err(err)?;
                    conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
                    Ok(Mutex::new(conn))
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            Ok(Self {
                writer: Arc::new(Mutex::new(writer)),
                readers,
                next_reader: AtomicUsize::new(0),
                cache: cache_of(&path),
                cached_reads: locking == Locking::Exclusive,
            })
        })
        .await
    }

    /// Runs a read on one of the read-only connections, directly on the
    /// calling task. A point read or a short range from SQLite's page cache
    /// takes a few microseconds, well under what handing it to Tokio's
    /// blocking pool and back costs (measured: 33 µs against 3 µs per
    /// `get`, and thread hand-offs dominated the HTTP read profile). The
    /// price is that a read missing the page cache holds a runtime worker
    /// for the duration of a disk read. Writes, which fsync, stay on the
    /// blocking pool.
    fn with_reader<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        // `open` creates at least one reader, so `n` is never zero.
        let n = self.readers.len().max(1);
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed) % n;
        // Take the first idle connection, starting at a rotating position;
        // wait for one only if all are busy.
        let mut ring = self.readers.iter().cycle().skip(start).take(n);
        if let Some(conn) = ring.clone().find_map(|r| r.try_lock().ok()) {
            return f(&conn);
        }
        let Some(first) = ring.next() else {
            return Err(StoreError::backend(BACKEND, "no read connection is open"));
        };
        let conn = first.lock().unwrap_or_else(|e| e.into_inner());
        f(&conn)
    }
}

/// Creates the database's directory (0700) and the database file (0600)
/// before SQLite opens it, and tightens an existing database (and its
/// `-wal`/`-shm` files) that others could read. The data is encrypted, but
/// its size, change rate and key names (secret paths, client ids) are
/// nobody else's business. SQLite gives the `-wal` and `-shm` files the
/// database file's permissions, so they follow.
fn prepare_files(path: &Path) -> Result<(), StoreError> {
    let failed = |what: &Path, e: std::io::Error| {
        StoreError::backend(BACKEND, format!("cannot create {}: {e}", what.display()))
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(|e| failed(dir, e))?;
    }
    let mut options = std::fs::OpenOptions::new();
    // Neither truncates nor replaces an existing database.
    options.write(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map_err(|e| failed(path, e))?;
    #[cfg(unix)]
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        tighten(Path::new(&file));
    }
    Ok(())
}

/// Removes group and other permissions from an existing file, with a
/// warning: a database made by an older Vern, or copied with a wide umask.
/// A file that cannot be changed (another owner) is only warned about:
/// the operator fixes it, Vern still starts.
#[cfg(unix)]
fn tighten(file: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let Ok(meta) = std::fs::metadata(file) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return;
    }
    let owner_only = mode & 0o700;
    match std::fs::set_permissions(file, std::fs::Permissions::from_mode(owner_only)) {
        Ok(()) => tracing::warn!(
            path = %file.display(),
            was = format!("{mode:o}"),
            now = format!("{owner_only:o}"),
            "Database file was open to other users; made it owner-only."
        ),
        Err(e) => tracing::warn!(
            path = %file.display(),
            mode = format!("{mode:o}"),
            error = %e,
            "Database file is open to other users and cannot be changed; make it owner-only (chmod 600)."
        ),
    }
}

fn err(e: rusqlite::Error) -> StoreError {
    StoreError::backend(BACKEND, e)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::backend(BACKEND, format!("storage task failed: {e}")))?
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::backend(
            BACKEND,
            format!("could not enable WAL journal (got `{mode}`)"),
        ));
    }
    // FULL makes every commit fsync the WAL: an acknowledged write survives
    // power loss, not only a process crash.
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
        .map_err(err)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS vern_migrations (
            version    INTEGER PRIMARY KEY,
            applied_at INTEGER NOT NULL
        )",
    )
    .map_err(err)?;
    let current: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM vern_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(err)?;
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known,
        });
    }
    // A negative version (never written by Vern) skips every migration, as
    // a schema too new would.
    let applied = usize::try_from(current).unwrap_or(usize::MAX);
    for (version, sql) in (1i64..).zip(MIGRATIONS).skip(applied) {
        tx.execute_batch(sql).map_err(err)?;
        tx.execute(
            "INSERT INTO vern_migrations (version, applied_at) VALUES (?1, unixepoch())",
            params![version],
        )
        .map_err(err)?;
        tracing::info!(backend = BACKEND, version, "Applied storage migration.");
    }
    tx.commit().map_err(err)
}

/// Runs one of the transaction statements through the statement cache:
/// `Connection::transaction` compiles `BEGIN` and `COMMIT` afresh each time,
/// which every commit and every multi-key read would pay for.
fn run_cached(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut stmt| stmt.execute([]))
        .map(|_| ())
        .map_err(err)
}

/// Runs `body` inside a transaction opened with `begin` (`BEGIN` or `BEGIN
/// IMMEDIATE`), committed when it succeeds and rolled back otherwise (a
/// failed `COMMIT` included), so the connection never stays inside a
/// transaction.
fn in_transaction<T>(
    conn: &Connection,
    begin: &str,
    body: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    run_cached(conn, begin)?;
    let result = body(conn).and_then(|value| run_cached(conn, "COMMIT").map(|()| value));
    if result.is_err() && !conn.is_autocommit() {
        // Best effort, as rusqlite's own transactions roll back on drop; a
        // rollback that fails leaves SQLite to roll back on the next BEGIN
        // error, never a half-applied batch.
        let _ = run_cached(conn, "ROLLBACK");
    }
    result
}

fn apply(conn: &Connection, writes: &[Write]) -> Result<Vec<u64>, StoreError> {
    let order = lock_order(writes)?;
    in_transaction(conn, "BEGIN IMMEDIATE", |tx| {
        let mut versions = vec![0u64; writes.len()];
        // Cached statements: a batch of many writes (an audit group commit)
        // would otherwise compile the same SQL once per write.
        let mut select = tx
            .prepare_cached("SELECT version FROM kv WHERE key = ?1")
            .map_err(err)?;
        let mut upsert = tx
            .prepare_cached(
                "INSERT INTO kv (key, value, version) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = excluded.version",
            )
            .map_err(err)?;
        let mut delete = tx
            .prepare_cached("DELETE FROM kv WHERE key = ?1")
            .map_err(err)?;
        for (i, w) in order {
            let current: Option<i64> = select
                .query_row([w.key.as_str()], |r| r.get(0))
                .optional()
                .map_err(err)?;
            let holds = match (w.expect, current) {
                (Expect::Any, _) => true,
                (Expect::Absent, found) => found.is_none(),
                (Expect::Version(v), Some(found)) => i64::try_from(v).is_ok_and(|v| v == found),
                (Expect::Version(_), None) => false,
            };
            if !holds {
                // The caller rolls the transaction back.
                return Err(StoreError::Conflict {
                    key: w.key.as_str().to_owned(),
                });
            }
            match &w.op {
                Op::Put(value) => {
                    let next = current.unwrap_or(0) + 1;
                    upsert
                        .execute(params![w.key.as_str(), value, next])
                        .map_err(err)?;
                    if let Some(slot) = versions.get_mut(i) {
                        *slot = next as u64;
                    }
                }
                Op::Delete => {
                    delete.execute([w.key.as_str()]).map_err(err)?;
                }
            }
        }
        Ok(versions)
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &Key) -> Result<Option<Entry>, StoreError> {
        let key = key.as_str();
        let generation = match self.cached_reads.then(|| self.cache.get_all(&[key])) {
            Some(Ok(mut hit)) => return Ok(hit.pop().flatten()),
            Some(Err(generation)) => generation,
            None => None,
        };
        let read = self.with_reader(|conn| {
            conn.prepare_cached("SELECT value, version FROM kv WHERE key = ?1")
                .map_err(err)?
                .query_row([key], |r| {
                    Ok(Entry {
                        value: r.get(0)?,
                        version: r.get::<_, i64>(1)? as u64,
                    })
                })
                .optional()
                .map_err(err)
        })?;
        if let Some(generation) = generation {
            self.cache.insert(generation, &[(key, &read)]);
        }
        Ok(read)
    }

    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Entry>>, StoreError> {
        let names: Vec<&str> = keys.iter().map(Key::as_str).collect();
        // All from the cache or all from one read transaction, so the
        // entries are one snapshot either way.
        let generation = match self.cached_reads.then(|| self.cache.get_all(&names)) {
            Some(Ok(hit)) => return Ok(hit),
            Some(Err(generation)) => generation,
            None => None,
        };
        let read = self.with_reader(|conn| {
            // One read transaction: one snapshot, one WAL read mark.
            in_transaction(conn, "BEGIN", |tx| {
                let mut stmt = tx
                    .prepare_cached("SELECT value, version FROM kv WHERE key = ?1")
                    .map_err(err)?;
                names
                    .iter()
                    .map(|key| {
                        stmt.query_row([key], |r| {
                            Ok(Entry {
                                value: r.get(0)?,
                                version: r.get::<_, i64>(1)? as u64,
                            })
                        })
                        .optional()
                        .map_err(err)
                    })
                    .collect::<Result<Vec<_>, StoreError>>()
            })
        })?;
        if let Some(generation) = generation {
            let pairs: Vec<(&str, &Option<Entry>)> =
                names.iter().copied().zip(read.iter()).collect();
            self.cache.insert(generation, &pairs);
        }
        Ok(read)
    }

    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let end = prefix_end(prefix);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_reader(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT key FROM kv WHERE key >= ?1 AND key < ?2 AND (?3 IS NULL OR key > ?3)
                     ORDER BY key LIMIT ?4",
                )
                .map_err(err)?;
            let rows = stmt
                .query_map(params![prefix, end, after, limit], |r| {
                    r.get::<_, String>(0)
                })
                .map_err(err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(err)
        })
    }

    async fn commit(&self, writes: Vec<Write>) -> Result<Vec<u64>, StoreError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        crate::gate::begin_commit()?;
        let writer = Arc::clone(&self.writer);
        let cache = Arc::clone(&self.cache);
        blocking(move || {
            let conn = writer.lock().unwrap_or_else(|e| e.into_inner());
            cache.begin_write(&writes);
            let result = apply(&conn, &writes);
            cache.end_write(&writes);
            result
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.with_reader(|conn| conn.query_row("SELECT 1", [], |_| Ok(())).map_err(err))
    }

    fn backend(&self) -> &'static str {
        BACKEND
    }
}
