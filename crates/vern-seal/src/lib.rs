//! The seal: Vern's data is useless without the root key, and the root key
//! never touches storage in clear.
//!
//! [`Seal`] is the state machine (uninitialised → sealed → unsealed) behind
//! `sys/init`, `sys/unseal`, `sys/seal` and `sys/seal-status`, and root key
//! rotation. Unsealing recombines Shamir shares into the root key, which
//! opens the keyring of data keys; the keyring becomes a [`Barrier`], the
//! single choke point that encrypts and decrypts everything stored. Sealing
//! drops the barrier, and the key material zeroizes with it.
#![forbid(unsafe_code)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::cast_possible_truncation
    )
)]

mod barrier;
mod keyring;
mod layout;
mod seal;

pub use barrier::{Barrier, BarrierWrite, KeyStatus, Plain};
pub use seal::{
    InitOutput, IssuedShare, RekeyOutcome, RekeyStatus, Seal, SealStatus, DEFAULT_SHARES,
    DEFAULT_THRESHOLD,
};

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
    /// The storage layer failed.
    #[error(transparent)]
    Store(#[from] vern_store::StoreError),
}
