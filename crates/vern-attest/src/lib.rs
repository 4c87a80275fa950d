//! Artifact trust: statements about artifacts, named by digest, signed as
//! DSSE envelopes, kept as evidence and weighed by promotion gates.
//!
//! - [`digest`]: SHA-256 digests and `NAME@sha256:HEX` subjects, parsed once.
//! - [`dsse`]: the DSSE envelope and its pre-authentication encoding (PAE),
//!   the bytes every signature covers.
//! - [`statement`]: the in-toto Statement v1 an envelope carries, and the
//!   predicates Vern reads (a vulnerability scan's critical findings).
//! - [`keys`]: signing keys per tenant and one for the platform, behind the
//!   barrier view `attest/`, rotated so that a retired key still verifies
//!   what it signed while it was valid.
//! - [`verify`]: the offline check of an envelope against trusted public
//!   keys; it needs no storage, so exported keys suffice.
//! - [`evidence`]: the content-addressed, immutable evidence store.
//! - [`gates`]: promotion gates per environment, and their evaluation
//!   against the evidence about a subject.
//!
//! This crate knows no HTTP; `vern-server` maps its routes onto it.
#![forbid(unsafe_code)]

pub mod digest;
pub mod dsse;
pub mod evidence;
pub mod gates;
pub mod keys;
pub mod statement;
pub mod verify;

pub use digest::{Sha256Digest, SubjectRef};
pub use dsse::{pae, Envelope, EnvelopeSignature, MAX_ENVELOPE_BYTES};
pub use evidence::{Evidence, EvidenceStore, Provenance, Stored};
pub use gates::{Gate, GatePlan, GateStore, Outcome, Requirement};
pub use keys::{KeyAlg, KeyOwner, KeyStore, PublicKey, TrustedKey};
pub use statement::{Statement, StatementSubject, IN_TOTO_PAYLOAD_TYPE, STATEMENT_V1};
pub use verify::{verify_envelope, Verified};

use vern_seal::{Barrier, BarrierView, SealError};

/// The prefix of the barrier view everything of this crate is stored under.
pub const VIEW_PREFIX: &str = "attest/";

/// The crate's barrier view.
pub(crate) fn view(barrier: &Barrier) -> Result<BarrierView<'_>, AttestError> {
    Ok(barrier.view(VIEW_PREFIX)?)
}

/// Why an attestation operation failed. The first group is the caller's
/// mistake (a 4xx at the edge), the rest are Vern's own state or fault.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    /// A digest or subject reference is not in the form asked for.
    #[error("{0}")]
    BadDigest(String),
    /// The envelope is not a well-formed DSSE envelope, or its payload is
    /// not an in-toto Statement v1.
    #[error("malformed envelope: {0}")]
    Malformed(String),
    /// The statement does not name the subject it was checked against.
    #[error("{0}")]
    SubjectMismatch(String),
    /// A signature names a key that is not trusted.
    #[error("signature by unknown key `{0}`: it does not verify with any trusted key")]
    UnknownKey(String),
    /// A signature does not verify: it was made over other bytes or by
    /// another key.
    #[error("signature by key `{0}` does not verify over this envelope")]
    BadSignature(String),
    /// The key was not valid at the time the envelope was signed.
    #[error("key `{kid}` was not valid at {at} (valid from {valid_from}{until})")]
    KeyNotValid {
        /// The key.
        kid: String,
        /// The signing time checked, Unix seconds.
        at: u64,
        /// When the key became valid.
        valid_from: u64,
        /// `", until N"` when the key was retired.
        until: String,
    },
    /// A promotion gate is malformed.
    #[error("{0}")]
    BadGate(String),
    /// A public key given for verification cannot be read.
    #[error("public key is invalid: {0}")]
    BadKey(String),
    /// Stored state would have to be rewritten; evidence is immutable.
    #[error("{0}")]
    Immutable(String),
    /// A compare-and-set kept failing against concurrent writers.
    #[error("{0}")]
    Conflict(String),
    /// The seal or the barrier refused (sealed, corrupt data, storage).
    #[error(transparent)]
    Seal(#[from] SealError),
    /// Vern's own fault.
    #[error("internal error: {0}")]
    Internal(String),
}
