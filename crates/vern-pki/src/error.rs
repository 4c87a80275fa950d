//! Errors of the certificate authority, in three families: the caller's
//! request was refused (4xx on the API), Vern cannot sign right now, or
//! Vern failed.

use vern_seal::SealError;

/// Why a PKI operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// The CSR was refused; nothing was signed.
    #[error("CSR refused: {0}")]
    BadCsr(String),
    /// The request was refused (a lifetime, DNS name or audience that is
    /// not acceptable); nothing was signed.
    #[error("{0}")]
    InvalidRequest(String),
    /// The caller has no SPIFFE ID (the root token).
    #[error(transparent)]
    NoIdentity(#[from] crate::spiffe::IdentityError),
    /// A CA offered for import was refused; nothing changed.
    #[error("CA import refused: {0}")]
    InvalidCa(String),
    /// No CA can sign now (its certificate expired, or it was made for
    /// another trust domain): an operator must rotate or import one.
    #[error("the CA cannot sign: {0}")]
    Unavailable(String),
    /// Concurrent changes kept colliding; retry.
    #[error("{0}")]
    Conflict(String),
    /// Vern's own fault (a stored value that does not read back, a
    /// signing failure).
    #[error("internal PKI error: {0}")]
    Internal(String),
    /// The seal or the storage under it.
    #[error(transparent)]
    Seal(#[from] SealError),
}

impl PkiError {
    pub(crate) fn corrupt(what: &str) -> Self {
        Self::Seal(SealError::Corrupt(format!("pki/{what}")))
    }
}
