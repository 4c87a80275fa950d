//! Vern's HTTP edge, and the only crate that knows HTTP.
//!
//! Every request takes the same way through [`app`]:
//! request id → client address ([`client_addr`]) → metrics and access log →
//! audit slot ([`audit`]) → timeout →
//! body size limit → cross-site guard → route → authenticate ([`auth`]) → authorize
//! ([`authz`]) → domain call (through the seal's barrier) → audit append →
//! response. Errors from any domain are turned
//! into HTTP in one place, [`error`].
#![forbid(unsafe_code)]

mod audit;
mod auth;
mod authz;
mod ca_tls;
mod client_addr;
mod cluster;
mod error;
mod extract;
mod jwks_fetch;
mod keeper;
mod keepers;
mod limits;
mod listen;
mod metrics;
mod middleware;
mod nats;
mod routes;
mod state;
mod tls_state;

pub use ca_tls::CaTls;
pub use client_addr::{Cidr, CidrError};
pub use keeper::{keeper_app, KeeperFiles, KeeperState, KeeperTls};
pub use keepers::{CertsFromCa, KeeperConfig, KeepersError};
pub use limits::{Limits, Rate};
pub use listen::{serve, ConnectionLimits, Listener, ServeError, TlsFiles};
pub use state::{AppState, ServerConfig, StateError};

use axum::Router;

/// Builds the complete HTTP application over `state`.
pub fn app(state: AppState) -> Router {
    routes::router(state)
}
