//! Authorization with Cedar: Vern's schema, the built-in policies (tenant
//! isolation as a `forbid` no `permit` can override, service scopes and
//! operator roles from the tables of [`roles`], root as break-glass), policy
//! files validated in strict mode, decisions with the policies that
//! determined them, and atomic reloads that keep the old set on error.
//!
//! Cross-tenant access exists only as an explicit grant: a `permit` in a
//! policy file annotated `@cross_tenant_grant`. Grants are evaluated on
//! their own first; when one matches, the isolation rule is lifted for that
//! one request through the `cross_tenant_grant` context flag (no other
//! policy can set it), and the grant itself then permits the request.
//!
//! Each request evaluates only the global policies and those confined by
//! their scope to its principal's or its resource's tenant (see
//! `partition.rs` for why that is exact), and decisions are cached per
//! loaded set unless a policy reads the time (see `cache.rs`).
//!
//! This crate does no I/O except reading policy files it is pointed at.
#![forbid(unsafe_code)]

mod cache;
mod engine;
mod model;
mod partition;
pub mod roles;

pub use cache::CacheStats;
pub use engine::{Decision, PolicyEngine, PolicyError};
pub use model::{Binding, Query, Resource, Subject, SubjectKind, ACTIONS};
pub use roles::Holdings;
