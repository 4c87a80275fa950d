//! The vocabulary every other Vern crate shares: the tenancy scope
//! (tenant → project → environment), principals, request identifiers and the
//! injectable clock. This crate has no I/O and no dependencies on the rest of
//! the workspace.
#![forbid(unsafe_code)]

mod clock;
mod ids;
mod principal;

pub use clock::{Clock, ManualClock, SystemClock};
pub use ids::{EnvironmentId, IdError, ProjectId, RequestId, Scope, TenantId};
pub use principal::{Principal, PrincipalKind};
