//! Vern's NATS security, without the network: the NATS JWT claims of the
//! auth callout as Vern's own serde types, their nkey signatures and xkey
//! sealing, the keys behind the barrier (view `nats/`), the nats-server
//! configuration of tenants as accounts, permissions derived from
//! declarations and decisions, the sites and subject mappings of the
//! `nats:` apply section, and the path report. The callout service
//! that talks to nats-server lives in `vern-server`.

#![forbid(unsafe_code)]
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod callout;
pub mod claims;
pub mod config;
pub mod jwt;
mod keys;
pub mod paths;
pub mod perms;
pub mod sites;
mod subject;

use vern_seal::{Barrier, BarrierView, SealError};

pub use keys::{NatsKeys, CALLOUT_USER, SYSTEM_USER};
pub use subject::Subject;

/// The prefix of the crate's barrier view.
pub const VIEW_PREFIX: &str = "nats/";

/// The crate's barrier view.
pub(crate) fn view(barrier: &Barrier) -> Result<BarrierView<'_>, NatsError> {
    Ok(barrier.view(VIEW_PREFIX)?)
}

/// Why a NATS operation failed. The first group is the caller's mistake
/// (a 4xx at the edge, or a refused callout request); the rest are Vern's
/// own state or fault.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// A subject is malformed or a declaration is unusable.
    #[error("{0}")]
    BadSubject(String),
    /// A JWT is malformed, unsigned, or signed by another key than its
    /// issuer's.
    #[error("bad NATS JWT: {0}")]
    BadJwt(String),
    /// A callout request cannot be trusted or used.
    #[error("bad callout request: {0}")]
    BadRequest(String),
    /// A file path cannot be written into the configuration.
    #[error("{0}")]
    BadPath(String),
    /// The barrier refused (sealed, corrupt, conflict).
    #[error(transparent)]
    Seal(#[from] SealError),
    /// An internal fault.
    #[error("internal NATS error: {0}")]
    Internal(String),
}
