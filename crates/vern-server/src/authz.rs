//! Authorization: the one point where every authenticated request is
//! decided. Default deny. The decision is made from the caller, the action
//! and the resource; the policy engine (Cedar) replaces the built-in rule
//! here without handlers changing.

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
}

/// Decides `action` for `caller`; returns 403 on deny.
pub(crate) fn authorize(caller: &Caller, action: Action) -> Result<(), ApiError> {
    let allowed = match action {
        Action::Seal | Action::ReadKeyStatus | Action::RotateKeyring | Action::RotateRootKey => {
            caller.principal.is_operator()
        }
    };
    if allowed {
        Ok(())
    } else {
        tracing::warn!(principal = %caller.principal.id, ?action, "Request denied.");
        Err(ApiError::forbidden())
    }
}
