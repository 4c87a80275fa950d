//! Authorization: the one point where every authenticated request is
//! decided, by the Cedar policies of `vern-policy` (built-ins plus the
//! policy directory). Default deny; the decision and the policies behind it
//! are logged with the request id.

use vern_core::Scope;
use vern_policy::{Decision, Query, Resource};
use vern_secrets::{ListPrefix, SecretPath};

use crate::auth::Caller;
use crate::error::ApiError;

/// A platform operation that needs a decision.
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
    /// Asking `POST /v1/authz/check`.
    CheckAuthz,
    /// Reloading the policy directory.
    ReloadPolicies,
    /// `vern audit hash`: HMAC of a value under the audit key.
    HashAudit,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Self::Seal => "sys.seal",
            Self::ReadKeyStatus => "sys.key-status",
            Self::RotateKeyring => "sys.rotate-keyring",
            Self::RotateRootKey => "sys.rotate-root",
            Self::ConfigureMount => "kv.config",
            Self::ManageClients => "client.manage",
            Self::CheckAuthz => "authz.check",
            Self::ReloadPolicies => "policy.reload",
            Self::HashAudit => "audit.hash",
        }
    }
}

/// What a caller does to a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SecretAction {
    /// Read data or subkeys.
    Read,
    /// Read metadata.
    MetadataRead,
    /// Write data or metadata.
    Write,
    /// Delete, undelete, destroy, delete metadata.
    Delete,
}

impl SecretAction {
    fn name(self) -> &'static str {
        match self {
            Self::Read => "secret.read",
            Self::MetadataRead => "secret.metadata.read",
            Self::Write => "secret.write",
            Self::Delete => "secret.delete",
        }
    }

    fn reads(self) -> bool {
        matches!(self, Self::Read | Self::MetadataRead)
    }
}

fn decide(caller: &Caller, action: &str, resource: Resource) -> Decision {
    let query = Query {
        subject: caller.subject.clone(),
        action: action.to_owned(),
        resource,
        source_ip: caller.source_ip.clone(),
        time: i64::try_from(caller.time).unwrap_or(i64::MAX),
        binding: caller.binding,
    };
    let d = caller.policies.decide(&query);
    if let Some(slot) = &caller.audit {
        slot.decision(action, &query.resource, &d);
    }
    if d.allowed {
        tracing::debug!(principal = %caller.principal.id, action, policies = ?d.policies, grant = ?d.grant, "Allowed.");
    } else {
        tracing::warn!(principal = %caller.principal.id, action, policies = ?d.policies, errors = ?d.errors, "Denied.");
    }
    d
}

/// Decides a platform operation; 403 on deny.
pub(crate) fn authorize(caller: &Caller, action: Action) -> Result<(), ApiError> {
    if decide(caller, action.name(), Resource::Platform).allowed {
        Ok(())
    } else {
        Err(ApiError::forbidden())
    }
}

/// Decides a secret operation. A denied read answers exactly like a path
/// with nothing at it (404), so another tenant's secrets cannot even be
/// shown to exist; a denied write is 403, which says nothing about
/// existence either.
pub(crate) fn authorize_secret(
    caller: &Caller,
    action: SecretAction,
    mount: &str,
    path: &SecretPath,
) -> Result<(), ApiError> {
    let resource = Resource::Secret {
        mount: mount.to_owned(),
        path: path.as_str().to_owned(),
        scope: path.scope().clone(),
    };
    if decide(caller, action.name(), resource).allowed {
        Ok(())
    } else if action.reads() {
        Err(ApiError::not_found())
    } else {
        Err(ApiError::forbidden())
    }
}

/// Whether the caller may list the folder `prefix` (or see it as an entry
/// of its parent's listing).
pub(crate) fn may_list(caller: &Caller, prefix: &ListPrefix) -> bool {
    let resource = match (&prefix.tenant, &prefix.project, &prefix.environment) {
        (None, _, _) => Resource::Platform,
        (Some(t), None, _) => Resource::Tenant(t.clone()),
        (Some(t), Some(p), None) => Resource::Project(t.clone(), p.clone()),
        (Some(t), Some(p), Some(e)) => Resource::Environment(Scope {
            tenant: t.clone(),
            project: p.clone(),
            environment: e.clone(),
        }),
    };
    decide(caller, "secret.list", resource).allowed
}

/// Decides reading audit records: of one tenant, or (`None`) of the whole
/// platform; 403 on deny.
pub(crate) fn authorize_audit_read(
    caller: &Caller,
    tenant: Option<&vern_core::TenantId>,
) -> Result<(), ApiError> {
    let resource = tenant.map_or(Resource::Platform, |t| Resource::Tenant(t.clone()));
    if decide(caller, "audit.read", resource).allowed {
        Ok(())
    } else {
        Err(ApiError::forbidden())
    }
}

/// Decides a request another service asks about (`/v1/authz/check`).
pub(crate) fn check(caller: &Caller, query: &Query) -> Decision {
    caller.policies.decide(query)
}
