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
//! This crate does no I/O except reading policy files it is pointed at.
#![forbid(unsafe_code)]

mod engine;
mod model;
pub mod roles;

pub use engine::{Decision, PolicyEngine, PolicyError};
pub use model::{Binding, Query, Resource, Subject, SubjectKind, ACTIONS};
pub use roles::Holdings;
