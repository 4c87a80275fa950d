//! Vern's audit log.
//!
//! Every decided request becomes an [`AuditRecord`] that carries its
//! sequence number and the SHA-256 of the record before it, so the records
//! form one hash chain. At an interval and on shutdown the server signs a
//! [`Checkpoint`] (sequence number and head hash, Ed25519) with a key kept
//! behind the barrier, so a rewritten chain or a truncated tail is caught
//! against the last signature. Sensitive values appear only as HMAC-SHA256
//! under a per-deployment key, also behind the barrier.
//!
//! [`AuditLog`] appends with group commit: one task chains whatever records
//! are waiting and writes them as one batch. In a key-value store (shared by
//! replicas on PostgreSQL) a batch is one transaction with the chain head as
//! a compare-and-set key, so several processes keep one strictly ordered
//! chain; an embedded server keeps its log in segment files
//! ([`SegmentLog`]), a batch being one write and one sync. [`verify`] checks
//! a log from storage, from segment files or from a JSON-lines file.
#![forbid(unsafe_code)]

mod backing;
mod keys;
mod log;
mod query;
mod record;
mod relocate;
mod segments;
mod sink;
pub mod verify;
mod writer;

pub use backing::LogStore;
pub use keys::{AuditKeys, PublicKey};
pub use log::{AuditConfig, AuditLog, Session};
pub use query::{Filter, Page};
pub use record::{Actor, AuditRecord, Checkpoint, Event, Line, TokenRef, Verdict, GENESIS};
pub use relocate::{import, relocate, Relocation};
pub use segments::{SegmentLog, DEFAULT_SEGMENT_BYTES};
pub use sink::SinkTarget;

/// Storage keys of the audit log. Records and checkpoints are stored in
/// clear (they hold no secret, only HMACs) so they can be verified
/// without unsealing; the keys live behind the barrier.
pub mod layout {
    /// Prefix of every key of the log (records, checkpoints, head).
    pub const PREFIX: &str = "audit/";
    /// Prefix of records: `audit/log/<seq, 20 digits>`.
    pub const RECORDS: &str = "audit/log/";
    /// Prefix of checkpoints: `audit/checkpoint/<seq, 20 digits>`.
    pub const CHECKPOINTS: &str = "audit/checkpoint/";
    /// The chain head `{seq, hash}`, the compare-and-set point of appends.
    pub const HEAD: &str = "audit/head";
    /// The HMAC and signing keys (through the barrier), as a storage key.
    pub const KEYS: &str = "core/audit/keys";
    /// The audit's view of the barrier: the only encrypted keys it reaches.
    pub const KEYS_VIEW: &str = "core/audit/";
    /// The keys' name within [`KEYS_VIEW`].
    pub const KEYS_NAME: &str = "keys";

    /// The storage key of record `seq`.
    pub fn record(seq: u64) -> String {
        format!("{RECORDS}{seq:020}")
    }

    /// The storage key of the checkpoint at `seq`.
    pub fn checkpoint(seq: u64) -> String {
        format!("{CHECKPOINTS}{seq:020}")
    }
}

/// A storage key of the audit log (its names are fixed, so a failure means
/// a corrupt listing).
pub(crate) fn storage_key(s: &str) -> Result<vern_store::Key, AuditError> {
    vern_store::Key::new(s).map_err(|e| AuditError::Corrupt(e.to_string()))
}

/// Why an audit operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Storage failed; the record is not durable.
    #[error("audit storage: {0}")]
    Store(#[from] vern_store::StoreError),
    /// The barrier failed (sealed, or the key record is corrupt).
    #[error("audit keys: {0}")]
    Seal(#[from] vern_seal::SealError),
    /// The file or stdout sink failed.
    #[error("audit sink `{target}`: {detail}")]
    Sink {
        /// The sink's target.
        target: String,
        /// What went wrong.
        detail: String,
    },
    /// A stored audit value does not parse.
    #[error("audit entry `{0}` is malformed")]
    Corrupt(String),
    /// A record or checkpoint did not become durable.
    #[error("the audit record could not be written durably: {0}")]
    Write(String),
    /// The appender is gone (the process is shutting down).
    #[error("the audit log is closed")]
    Closed,
    /// The chain head kept moving under other writers.
    #[error("the audit chain head kept changing; gave up after {0} attempts")]
    Contention(usize),
    /// A caller-supplied value is invalid (a public key to verify with,
    /// the log's settings); the message names it.
    #[error("{0}")]
    Invalid(String),
    /// A file to verify could not be read.
    #[error("cannot read {path}: {detail}")]
    Read {
        /// The file.
        path: String,
        /// What went wrong.
        detail: String,
    },
}
