//! The audit log over HTTP: filtered queries (each one itself audited),
//! the HMAC of a known value, and the checkpoint verification key.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use vern_audit::{AuditLog, Filter};
use vern_core::{PrincipalKind, RequestId, TenantId};
use zeroize::Zeroizing;

use crate::auth::Caller;
use crate::authz::authorize_audit_read;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;

fn log(state: &AppState) -> Result<&AuditLog, ApiError> {
    state
        .inner
        .audit
        .as_ref()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "audit is turned off on this server"))
}

/// Query parameters of `GET /v1/audit/records`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecordsQuery {
    after: Option<u64>,
    since: Option<String>,
    until: Option<String>,
    principal: Option<String>,
    tenant: Option<String>,
    action: Option<String>,
    decision: Option<String>,
    limit: Option<usize>,
}

fn time(name: &str, value: Option<&str>) -> Result<Option<std::time::SystemTime>, ApiError> {
    value
        .map(|v| {
            humantime::parse_rfc3339_weak(v).map_err(|_| {
                ApiError::bad_request(format!(
                    "`{name}` must be an RFC 3339 time such as 2026-01-31T12:00:00Z"
                ))
            })
        })
        .transpose()
}

/// `GET /v1/audit/records`: records oldest first, filtered by time,
/// principal, tenant, action and decision; `after` is the cursor. Reading
/// one tenant's records needs `audit.read` on that tenant; a service or a
/// tenant operator that names no tenant reads its own tenant's; everything
/// else needs
/// `audit.read` on the platform.
pub(crate) async fn records(
    State(state): State<AppState>,
    caller: Caller,
    Extension(id): Extension<RequestId>,
    query: Result<Query<RecordsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let log = log(&state)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let tenant = match (&q.tenant, &caller.principal.kind) {
        (Some(t), _) => Some(TenantId::parse(t).map_err(|e| ApiError::bad_request(e.to_string()))?),
        (None, PrincipalKind::Service { scope }) => Some(scope.tenant.clone()),
        (
            None,
            PrincipalKind::Operator {
                tenant: Some(t), ..
            },
        ) => Some(t.clone()),
        (None, PrincipalKind::Operator { tenant: None, .. } | PrincipalKind::Node) => None,
    };
    authorize_audit_read(&caller, tenant.as_ref())?;
    let allowed = match q.decision.as_deref() {
        None => None,
        Some("allow") => Some(true),
        Some("deny") => Some(false),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "decision `{other}` must be allow or deny"
            )))
        }
    };
    let filter = Filter {
        after: q.after.unwrap_or(0),
        since: time("since", q.since.as_deref())?,
        until: time("until", q.until.as_deref())?,
        principal: q.principal,
        tenant: tenant.map(|t| t.to_string()),
        action: q.action,
        allowed,
        limit: q.limit.unwrap_or(100),
    };
    let page = log
        .query(&filter)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(json!({
        "request_id": id.as_str(),
        "data": {
            "records": page.records,
            "next_after": page.next_after,
            "head": page.head,
        },
    }))
    .into_response())
}

/// Body of `POST /v1/audit/hash`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HashBody {
    input: String,
}

/// `POST /v1/audit/hash`: the HMAC a record would carry for `input`, so a
/// known token or secret can be searched for.
pub(crate) async fn hash(
    caller: Caller,
    Extension(id): Extension<RequestId>,
    ApiJson(body): ApiJson<HashBody>,
) -> Result<Response, ApiError> {
    let input = Zeroizing::new(body.input);
    let slot = caller.audit.as_ref().ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "audit is turned off on this server")
    })?;
    let hash = slot
        .hmac(input.as_bytes())
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Vern is sealed"))?;
    Ok(Json(json!({ "request_id": id.as_str(), "data": { "hash": hash } })).into_response())
}

/// `GET /v1/audit/public-key`: the key checkpoints are signed with, for
/// `vern audit verify`. Known only while unsealed.
pub(crate) async fn public_key(State(state): State<AppState>) -> Result<Response, ApiError> {
    let log = log(&state)?;
    let barrier = state.inner.seal.barrier()?;
    let session = log
        .session(&barrier)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(
        Json(json!({ "data": { "public_key": session.keys().public_key().to_string() } }))
            .into_response(),
    )
}
