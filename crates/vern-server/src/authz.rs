//! Authorization: the one point where every authenticated request is
//! decided. Default deny. The decision is made from the caller, the action
//! and the resource; the policy engine (Cedar) replaces the built-in rule
//! here without handlers changing.

use vern_core::{PrincipalKind, Scope};
use vern_secrets::ListPrefix;

use crate::auth::Caller;
use crate::error::ApiError;

/// One API operation that needs a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// `PUT /v1/sys/seal`.
    Seal,
    /// `GET /v1/sys/key-status`.
    ReadKeyStatus,
    /// `PUT /v1/sys/rotate/keyring`.
    RotateKeyring,
    /// Starting or cancelling `sys/rotate/root`.
    RotateRootKey,
    /// Reading or changing a KV mount's `config`.
    ConfigureMount,
    /// Creating, reading, deleting clients; rotating signing keys.
    ManageClients,
}

/// What a caller may do to a tenant's secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SecretAction {
    /// Read data, metadata or subkeys.
    Read,
    /// Write data or metadata, delete, undelete, destroy.
    Write,
}

/// Whether `caller` may act on secrets in `scope`. Operators (today only the
/// root token) administer every tenant; a service acts only inside its own
/// environment.
fn allows_scope(caller: &Caller, scope: &Scope) -> bool {
    match &caller.principal.kind {
        PrincipalKind::Operator { .. } => true,
        PrincipalKind::Service { scope: own } => own == scope,
        _ => false,
    }
}

/// Decides a secret operation. A denied read answers exactly like a path
/// with nothing at it (404), so another tenant's secrets cannot even be
/// shown to exist; a denied write is 403, which says nothing about
/// existence either.
pub(crate) fn authorize_secret(
    caller: &Caller,
    action: SecretAction,
    scope: &Scope,
) -> Result<(), ApiError> {
    if allows_scope(caller, scope) {
        return Ok(());
    }
    tracing::warn!(principal = %caller.principal.id, ?action, "Secret access denied.");
    Err(match action {
        SecretAction::Read => ApiError::not_found(),
        SecretAction::Write => ApiError::forbidden(),
    })
}

/// Whether a LIST entry under `prefix` may be shown: a folder above the
/// environment level is shown when the caller may see something inside it.
pub(crate) fn may_list(caller: &Caller, prefix: &ListPrefix) -> bool {
    match &caller.principal.kind {
        PrincipalKind::Operator { .. } => true,
        PrincipalKind::Service { scope } => {
            prefix.tenant.as_ref().is_none_or(|t| *t == scope.tenant)
                && prefix.project.as_ref().is_none_or(|p| *p == scope.project)
                && prefix
                    .environment
                    .as_ref()
                    .is_none_or(|e| *e == scope.environment)
        }
        _ => false,
    }
}

/// Decides `action` for `caller`; returns 403 on deny.
pub(crate) fn authorize(caller: &Caller, action: Action) -> Result<(), ApiError> {
    let allowed = match action {
        Action::Seal
        | Action::ReadKeyStatus
        | Action::RotateKeyring
        | Action::RotateRootKey
        | Action::ConfigureMount
        | Action::ManageClients => caller.principal.is_operator(),
    };
    if allowed {
        Ok(())
    } else {
        tracing::warn!(principal = %caller.principal.id, ?action, "Request denied.");
        Err(ApiError::forbidden())
    }
}
