//! Authorization: the one point where every authenticated request is
//! decided, by the Cedar policies of `vern-policy` (built-ins plus the
//! policy directory). Default deny; the decision and the policies behind it
//! are logged with the request id.
//!
//! [`gate`] reads the route table: an authorized route gets its caller
//! authenticated here, and a platform action (or an action on the caller's
//! own token) decided before the handler runs; a route whose resource comes from the request is decided by its
//! handler on the route's own action, and a handler that answers without
//! a decision fails closed.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use vern_core::{EnvironmentId, ProjectId, Scope, TenantId};
use vern_policy::{Decision, Query, Resource};
use vern_secrets::{ListPrefix, SecretPath};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::routes::{Access, AccessMap};
use crate::state::AppState;

/// Vault's `list` query parameter: its first value, read as Vault reads it
/// (Go's `strconv.ParseBool`: `1`, `t`, `T`, `TRUE`, `true`, `True` and
/// their false forms). Absent or empty is `false`; any other value is an
/// error naming it, which Vault answers with 400.
pub(crate) fn list_query(query: Option<&str>) -> Result<bool, String> {
    let value = query.and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "list")
            .map(|(_, v)| v.into_owned())
    });
    match value.as_deref() {
        None | Some("") => Ok(false),
        Some("1" | "t" | "T" | "TRUE" | "true" | "True") => Ok(true),
        Some("0" | "f" | "F" | "FALSE" | "false" | "False") => Ok(false),
        Some(other) => Err(format!(
            "list={:?} is not a boolean; use true or false",
            other.chars().take(32).collect::<String>()
        )),
    }
}

/// The method as the route table names it: Vault's `GET ?list=true` is a
/// `LIST`.
pub(crate) fn table_method(req: &Request) -> String {
    let method = req.method().as_str();
    let listing = list_query(req.uri().query()) == Ok(true);
    if method == "GET" && listing {
        "LIST".to_owned()
    } else {
        method.to_owned()
    }
}

/// Looks the request's route and method up in the route table, once, and
/// leaves the answer in its extensions for the audit point and the gate.
pub(crate) async fn declare(
    State(table): State<Arc<AccessMap>>,
    mut req: Request,
    next: Next,
) -> Response {
    let access = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .and_then(|route| table.get(route.as_str(), &table_method(&req)));
    if let Some(access) = access {
        req.extensions_mut().insert(access);
    }
    next.run(req).await
}

/// The route's access for this request, as [`declare`] found it; `None`
/// for requests no route answers (404 and 405 come from the fallbacks).
pub(crate) fn access_of(req: &Request) -> Option<Access> {
    req.extensions().get::<Access>().copied()
}

/// The authorization point of the request path.
pub(crate) async fn gate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(access) = access_of(&req) else {
        // A path a route answers, with a method the table does not declare
        // for it (a `GET ?list=true` of a route that lists nothing, among
        // others): default deny, before any handler runs. Only paths no
        // route answers go on, to the 404 fallback.
        if req.extensions().get::<MatchedPath>().is_some() {
            return ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this path",
            )
            .into_response();
        }
        return next.run(req).await;
    };
    let Some(action) = access.action() else {
        return next.run(req).await;
    };
    let (mut parts, body) = req.into_parts();
    let mut caller = match Caller::from_request_parts(&mut parts, &state).await {
        Ok(c) => c,
        Err(e) if matches!(access, Access::Own(_)) => return e.permission_denied().into_response(),
        Err(e) => return e.into_response(),
    };
    caller.route_action = action;
    let decided_here = match access {
        Access::Platform(_) => Some(Resource::Platform),
        Access::Own(_) => Some(caller.subject.as_resource()),
        Access::Resource(_) | Access::Open(_) | Access::Public => None,
    };
    if let Some(resource) = decided_here {
        if !decide(&caller, action, resource).allowed {
            return ApiError::forbidden().into_response();
        }
    }
    let decided = Arc::clone(&caller.decided);
    parts.extensions.insert(caller);
    let resp = next.run(Request::from_parts(parts, body)).await;
    if resp.status().is_success() && !decided.load(Ordering::Acquire) {
        tracing::error!(
            action,
            "A route answered without an authorization decision; the request fails."
        );
        return ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the request was not authorized, so it failed",
        )
        .into_response();
    }
    resp
}

fn decide(caller: &Caller, action: &str, resource: Resource) -> Decision {
    decide_with(caller, action, resource, Vec::new())
}

fn decide_with(
    caller: &Caller,
    action: &str,
    resource: Resource,
    dns_names: Vec<String>,
) -> Decision {
    let query = Query {
        subject: caller.subject.clone(),
        action: action.to_owned(),
        resource,
        source_ip: caller.source_ip.clone(),
        time: i64::try_from(caller.time).unwrap_or(i64::MAX),
        binding: caller.binding,
        dns_names,
    };
    let d = caller.policies.decide(&query);
    if action == caller.route_action {
        caller.decided.store(true, Ordering::Release);
    }
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

/// Decides the route's action on `resource`; 403 on deny.
pub(crate) fn authorize_on(caller: &Caller, resource: Resource) -> Result<(), ApiError> {
    if decide(caller, caller.route_action, resource).allowed {
        Ok(())
    } else {
        Err(ApiError::forbidden())
    }
}

/// Decides the route's action (`svid.issue`) on the principal an SVID
/// would name, with the DNS names it would carry besides its SPIFFE ID;
/// 403 on deny.
pub(crate) fn authorize_svid(
    caller: &Caller,
    resource: Resource,
    dns_names: &[vern_pki::DnsName],
) -> Result<(), ApiError> {
    let names = dns_names.iter().map(|d| d.as_str().to_owned()).collect();
    if decide_with(caller, caller.route_action, resource, names).allowed {
        Ok(())
    } else {
        Err(ApiError::forbidden())
    }
}

/// Whether the route's action is allowed on `resource` (a filter over
/// entries: no error, and the first decision stays the request's own).
pub(crate) fn allows(caller: &Caller, resource: Resource) -> bool {
    decide(caller, caller.route_action, resource).allowed
}

/// Whether `action`, another than the route's own, is allowed on
/// `resource`: a declaration that spans domains (promotion gates in an
/// apply) decides each entry on the action that governs it.
pub(crate) fn allows_action(caller: &Caller, action: &str, resource: Resource) -> bool {
    decide(caller, action, resource).allowed
}

/// Decides the route's action on a secret. A denied read answers exactly
/// like a path with nothing at it (404), so another tenant's secrets, or
/// another environment's, cannot even be shown to exist; a denied write is
/// 403, which says nothing about existence either. In the caller's own
/// environment existence is no secret, so a token lacking the scope gets
/// 403 there.
pub(crate) fn authorize_secret(
    caller: &Caller,
    mount: &str,
    path: &SecretPath,
) -> Result<(), ApiError> {
    let resource = Resource::Secret {
        mount: mount.to_owned(),
        path: path.as_str().to_owned(),
        scope: path.scope().clone(),
    };
    let action = caller.route_action;
    if decide(caller, action, resource).allowed {
        return Ok(());
    }
    let reads = matches!(action, "secret.read" | "secret.metadata.read");
    let own = matches!(&caller.principal.kind, vern_core::PrincipalKind::Service { scope } if scope == path.scope());
    if reads && !own {
        Err(ApiError::not_found())
    } else {
        Err(ApiError::forbidden())
    }
}

/// Whether the caller may list the folder `prefix` (or see it as an entry
/// of its parent's listing).
pub(crate) fn may_list(caller: &Caller, prefix: &ListPrefix) -> bool {
    let resource = folder_resource(
        prefix.tenant.clone(),
        prefix.project.clone(),
        prefix.environment.clone(),
    );
    decide(caller, "secret.list", resource).allowed
}

/// What a folder of the KV tree is decided as: the platform (the root), a
/// tenant, a project or an environment, as far as the folder reaches.
pub(crate) fn folder_resource(
    tenant: Option<TenantId>,
    project: Option<ProjectId>,
    environment: Option<EnvironmentId>,
) -> Resource {
    match (tenant, project, environment) {
        (None, _, _) => Resource::Platform,
        (Some(t), None, _) => Resource::Tenant(t),
        (Some(t), Some(p), None) => Resource::Project(t, p),
        (Some(tenant), Some(project), Some(environment)) => Resource::Environment(Scope {
            tenant,
            project,
            environment,
        }),
    }
}

/// Decides reading audit records: of one tenant, or (`None`) of the whole
/// platform; 403 on deny.
pub(crate) fn authorize_audit_read(
    caller: &Caller,
    tenant: Option<&TenantId>,
) -> Result<(), ApiError> {
    authorize_on(
        caller,
        tenant.map_or(Resource::Platform, |t| Resource::Tenant(t.clone())),
    )
}

/// Decides a request another service asks about (`/v1/authz/check`).
pub(crate) fn check(caller: &Caller, query: &Query) -> Decision {
    caller.policies.decide(query)
}
