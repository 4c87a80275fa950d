//! The seal: Vern's data is useless without the root key, and the root key
//! never touches storage in clear.
//!
//! [`Seal`] is the state machine (uninitialised → sealed → unsealed) behind
//! `sys/init`, `sys/unseal`, `sys/seal` and `sys/seal-status`, and root key
//! rotation. Unsealing recombines Shamir shares into the root key, which
//! opens the keyring of data keys; the keyring becomes a [`Barrier`], the
//! single choke point that encrypts and decrypts everything stored. Sealing
//! drops the barrier, and the key material zeroizes with it.
//!
//! Domains reach storage only through a [`BarrierView`], the barrier scoped
//! to the domain's own prefix (OpenBao's `BarrierView`): keys are relative
//! to it and cannot leave it. This crate re-exports the little of the store
//! a domain needs ([`Expect`]; conflicts are [`SealError::Conflict`]), so no
//! domain crate depends on `vern-store`.
#![forbid(unsafe_code)]

mod barrier;
mod keyring;
mod layout;
mod seal;
mod view;

pub use barrier::{Barrier, KeyStatus, Plain};
pub use seal::{
    InitOutput, IssuedShare, RekeyOutcome, RekeyStatus, Seal, SealStatus, DEFAULT_SHARES,
    DEFAULT_THRESHOLD,
};
/// The compare-and-set precondition of a write, as the store defines it.
pub use vern_store::Expect;
pub use view::{BarrierView, BarrierWrite, ViewBatch};

/// Why a seal or barrier operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// `init` was called on an initialised store.
    #[error("Vern is already initialized")]
    AlreadyInitialized,
    /// An operation needs an initialised store.
    #[error("Vern is not initialized; run `vern operator init`")]
    NotInitialized,
    /// An operation needs the root key and Vern is sealed.
    #[error("Vern is sealed")]
    Sealed,
    /// Parameters are out of range or inconsistent.
    #[error("{0}")]
    InvalidParameters(String),
    /// An unseal key could not be decoded or is malformed.
    #[error("unseal key is invalid: {0}")]
    BadShare(String),
    /// A threshold of shares was reached but they do not make the root key.
    #[error("the unseal keys given do not reconstruct the root key; progress was reset")]
    WrongShares,
    /// A reserved key was written through the barrier.
    #[error("storage key `{0}` is reserved for the seal")]
    Reserved(String),
    /// A stored value failed to decrypt or parse: tampering, or a ciphertext
    /// moved from where it was written.
    #[error("stored data at `{0}` failed integrity checks")]
    Corrupt(String),
    /// A compare-and-set precondition did not hold: another writer changed
    /// the key first, and nothing of the batch was written. The caller may
    /// re-read and retry.
    #[error("write conflict on `{key}`: it changed since it was read")]
    Conflict {
        /// The storage key whose expectation failed.
        key: String,
    },
    /// A key or prefix given to a barrier view is malformed or would leave
    /// the view: a bug in the caller, which parses its input into keys.
    #[error("storage key `{key}` is refused: {reason}")]
    BadKey {
        /// The key or prefix as given.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The storage layer failed.
    #[error(transparent)]
    Store(vern_store::StoreError),
}

impl From<vern_store::StoreError> for SealError {
    /// A conflict becomes [`SealError::Conflict`], so that domains can
    /// retry on it without naming the store's error type.
    fn from(err: vern_store::StoreError) -> Self {
        match err {
            vern_store::StoreError::Conflict { key } => Self::Conflict { key },
            other => Self::Store(other),
        }
    }
}
