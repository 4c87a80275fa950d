//! Durable storage for Vern: one [`Store`] trait and two real backends,
//! embedded SQLite (the default) and PostgreSQL (shared by several Vern
//! replicas). The store sees only opaque, already-encrypted bytes under
//! string keys; encryption is the seal's barrier's job, one layer up.
//!
//! Every write goes through [`Store::commit`], an atomic batch whose entries
//! each carry an [`Expect`]ation about the current version of their key. This
//! compare-and-set is how concurrent writers (threads, or Vern processes
//! sharing one database) are resolved: exactly one wins, the rest get
//! [`StoreError::Conflict`] and nothing of their batch is written.
#![forbid(unsafe_code)]

mod gate;
mod key;
mod postgres;
mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;

use async_trait::async_trait;

pub use gate::CommitGate;
pub use key::{Key, KeyError};
pub use postgres::PostgresStore;
pub use sqlite::{Locking, SqliteStore};

/// A stored value and its version. Versions start at 1 and grow by one on
/// every overwrite of the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The stored bytes.
    pub value: Vec<u8>,
    /// The version of this value.
    pub version: u64,
}

/// What a write expects to find before it applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Apply whatever is there.
    Any,
    /// The key must not exist.
    Absent,
    /// The key must exist at exactly this version.
    Version(u64),
}

/// What a write does to its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Store this value, bumping the version.
    Put(Vec<u8>),
    /// Remove the key.
    Delete,
}

/// One conditional write inside an atomic [`Store::commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The key written.
    pub key: Key,
    /// The change.
    pub op: Op,
    /// The precondition.
    pub expect: Expect,
}

impl Write {
    /// An unconditional put.
    pub fn put(key: Key, value: Vec<u8>) -> Self {
        Self {
            key,
            op: Op::Put(value),
            expect: Expect::Any,
        }
    }

    /// Adds a precondition.
    pub fn expecting(mut self, expect: Expect) -> Self {
        self.expect = expect;
        self
    }

    /// An unconditional delete.
    pub fn delete(key: Key) -> Self {
        Self {
            key,
            op: Op::Delete,
            expect: Expect::Any,
        }
    }
}

/// Why a storage operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A precondition did not hold; nothing of the batch was written.
    #[error("write conflict on `{key}`: it changed since it was read")]
    Conflict {
        /// The first key whose expectation failed.
        key: String,
    },
    /// The request ran out of time before this write began; nothing of
    /// the batch was written.
    #[error("the request ran out of time before its write began; nothing was written")]
    Abandoned,
    /// The same key appeared twice in one batch.
    #[error("key `{0}` appears twice in one batch")]
    DuplicateKey(String),
    /// The backend could not be reached or failed; details are for logs only.
    #[error("{backend} storage failed: {detail}")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// The backend's own message; may name tables or files, so it is
        /// logged but never sent to a client.
        detail: String,
    },
    /// The storage URL could not be understood.
    #[error("storage `{0}` is not understood; use `sqlite:PATH` or `postgres://USER@HOST/DB`")]
    BadUrl(String),
    /// The database holds a schema newer than this build understands.
    #[error(
        "the database schema is at version {found}, newer than this build's {known}; upgrade Vern"
    )]
    SchemaTooNew {
        /// Version found in the database.
        found: i64,
        /// Latest version this build knows.
        known: i64,
    },
}

impl StoreError {
    fn backend(backend: &'static str, err: impl std::fmt::Display) -> Self {
        Self::Backend {
            backend,
            detail: err.to_string(),
        }
    }
}

/// Durable, versioned key-value storage.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads one key.
    async fn get(&self, key: &Key) -> Result<Option<Entry>, StoreError>;

    /// Reads several keys from one snapshot, in one read transaction (one
    /// round trip on a networked store). Entries come in the order of
    /// `keys`; a key given twice is read once and answered twice.
    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Entry>>, StoreError>;

    /// Keys starting with `prefix`, in byte order, strictly after `after`
    /// when given, at most `limit` of them.
    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;

    /// Applies all writes atomically and durably, or none of them. Returns
    /// the new version of each written key (0 for deletes), in input order.
    async fn commit(&self, writes: Vec<Write>) -> Result<Vec<u64>, StoreError>;

    /// Checks that the backend answers; for readiness probes.
    async fn ping(&self) -> Result<(), StoreError>;

    /// The backend's name, for logs and metrics.
    fn backend(&self) -> &'static str;
}

/// Opens the store named by `url` (`sqlite:PATH` or `postgres://…`) and
/// brings its schema up to date. Other processes may open it too.
pub async fn open(url: &str, pool_size: usize) -> Result<Arc<dyn Store>, StoreError> {
    open_with(url, pool_size, Locking::Shared).await
}

/// Like [`open`], with a SQLite database held as `locking` says
/// ([`Locking::Exclusive`] for a server whose reads should take no file
/// lock). PostgreSQL is opened as by [`open`].
pub async fn open_with(
    url: &str,
    pool_size: usize,
    locking: Locking,
) -> Result<Arc<dyn Store>, StoreError> {
    if let Some(path) = url.strip_prefix("sqlite:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        if path.is_empty() {
            return Err(StoreError::BadUrl(url.to_owned()));
        }
        Ok(Arc::new(
            SqliteStore::open(path.as_ref(), pool_size, locking).await?,
        ))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::connect(url, pool_size).await?))
    } else {
        Err(StoreError::BadUrl(redact_url(url)))
    }
}

/// For `sqlite:PATH`, the URL of the database file beside it named
/// `STEM-NAME.EXT` (`vern.db` → `vern-audit.db`); `None` for a server
/// database, whose one database serves every purpose.
pub fn sibling_url(url: &str, name: &str) -> Option<String> {
    let path = url.strip_prefix("sqlite:")?;
    let path = std::path::Path::new(path.strip_prefix("//").unwrap_or(path));
    let stem = path.file_stem()?.to_string_lossy();
    let file = match path.extension() {
        Some(ext) => format!("{stem}-{name}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{name}"),
    };
    Some(format!("sqlite:{}", path.with_file_name(file).display()))
}

/// Removes a password from a URL before it is shown anywhere.
pub fn redact_url(url: &str) -> String {
    // `rsplit_once` keeps the last `@`, as a password may contain one.
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:[redacted]@{host}"),
        None => url.to_owned(),
    }
}

/// Checks a batch for duplicate keys and returns the writes with their
/// input indices in key order, the order in which backends lock rows so
/// that concurrent batches over the same keys cannot deadlock.
fn lock_order(writes: &[Write]) -> Result<Vec<(usize, &Write)>, StoreError> {
    let mut order: Vec<(usize, &Write)> = writes.iter().enumerate().collect();
    order.sort_by(|(_, a), (_, b)| a.key.cmp(&b.key));
    for pair in order.windows(2) {
        if let [(_, a), (_, b)] = pair {
            if a.key == b.key {
                return Err(StoreError::DuplicateKey(a.key.as_str().to_owned()));
            }
        }
    }
    Ok(order)
}

/// Upper bound of the key range that starts with `prefix`: keys never
/// contain U+10FFFF, so every key with this prefix sorts below it.
fn prefix_end(prefix: &str) -> String {
    let mut end = String::with_capacity(prefix.len() + 4);
    end.push_str(prefix);
    end.push('\u{10FFFF}');
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://vern:s3cret@db:5432/vern"),
            "postgres://vern:[redacted]@db:5432/vern"
        );
        assert_eq!(
            redact_url("postgres://vern@db/vern"),
            "postgres://vern@db/vern"
        );
        assert_eq!(redact_url("sqlite:/tmp/x"), "sqlite:/tmp/x");
    }

    #[test]
    fn sibling_files_sit_beside_sqlite_databases_only() {
        let sib = |u| sibling_url(u, "audit");
        assert_eq!(
            sib("sqlite:/var/lib/vern/vern.db").as_deref(),
            Some("sqlite:/var/lib/vern/vern-audit.db")
        );
        assert_eq!(
            sib("sqlite:///data/store").as_deref(),
            Some("sqlite:/data/store-audit")
        );
        assert_eq!(
            sib("sqlite:vern.db").as_deref(),
            Some("sqlite:vern-audit.db")
        );
        assert_eq!(sib("postgres://vern@db/vern"), None);
        assert_eq!(sib("sqlite:"), None);
    }

    #[tokio::test]
    async fn unknown_urls_are_refused() {
        for url in ["mysql://x", "sqlite:", "", "/tmp/file"] {
            assert!(
                matches!(open(url, 1).await, Err(StoreError::BadUrl(_))),
                "{url}"
            );
        }
    }

    #[test]
    fn duplicate_keys_in_a_batch_are_refused() {
        let k = Key::new("a").unwrap();
        let err = lock_order(&[Write::delete(k.clone()), Write::delete(k)]).unwrap_err();
        assert!(matches!(err, StoreError::DuplicateKey(_)));
    }
}
