//! The KV v2 secrets engine: versioned secrets under tenant-scoped paths
//! (`<tenant>/<project>/<environment>/<name…>`), with Vault's semantics for
//! versions, soft delete, undelete, destroy, metadata, `max_versions`
//! pruning, `cas_required` and `delete_version_after`.
//!
//! Every value is stored through the mount's view of the seal's barrier
//! (`kv/<mount>/`), which cannot reach any other mount's or domain's keys;
//! the barrier's associated data is the storage key: mount, path and
//! version. Every change is one atomic
//! store batch guarded by compare-and-set on the secret's metadata entry,
//! so concurrent writers (also on other Vern replicas) are serialised and a
//! `cas` option is checked against what is really stored. The engine knows
//! nothing of HTTP; `vern-server` maps the wire format onto it.
#![forbid(unsafe_code)]

mod engine;
mod metadata;
mod path;

pub use engine::{
    go_duration, KvConfig, KvEngine, Read, SecretData, VersionView, WriteOptions,
    DEFAULT_MAX_VERSIONS,
};
pub use metadata::{MetadataUpdate, MetadataView};
pub use path::{ListPrefix, PathError, SecretPath, MAX_PATH_LEN};

/// Why a secrets operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// The path is malformed.
    #[error(transparent)]
    Path(#[from] PathError),
    /// Nothing is stored at the path (or at that version).
    #[error("no secret at this path")]
    NotFound,
    /// The `cas` option does not match the current version.
    #[error("check-and-set parameter did not match the current version")]
    CasMismatch,
    /// This secret or mount requires a `cas` option.
    #[error("check-and-set parameter required for this call")]
    CasRequired,
    /// A request field is invalid (the caller's fault); the message names
    /// it.
    #[error("{0}")]
    InvalidRequest(String),
    /// The mount name is not usable (a configuration mistake, refused at
    /// start).
    #[error("mount name `{0}` must be 1–64 of [a-z0-9_-]")]
    BadMount(String),
    /// The secret has had as many versions as a version number can count.
    #[error("this secret has no version numbers left")]
    VersionsExhausted,
    /// Vern's own fault (a value that cannot be encoded); the message is for
    /// the log.
    #[error("internal secrets engine error: {0}")]
    Internal(String),
    /// Writers kept colliding on this secret; the caller may retry.
    #[error("too many concurrent writers to this secret; retry")]
    Contention,
    /// The seal or storage failed.
    #[error(transparent)]
    Seal(#[from] vern_seal::SealError),
}
