//! The decision API for the platform's other services, and policy reloads.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};
use vern_core::RequestId;
use vern_policy::{Binding, Query, Resource, Subject};

use crate::auth::Caller;
use crate::authz::{authorize, check as decide, Action};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;

/// Most requests in one batch.
const MAX_BATCH: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CheckRequest {
    principal: String,
    action: String,
    resource: String,
    #[serde(default)]
    source_ip: Option<String>,
    #[serde(default)]
    binding: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum CheckBody {
    Batch { requests: Vec<CheckRequest> },
    One(CheckRequest),
}

fn query(r: CheckRequest, caller: &Caller) -> Result<Query, String> {
    let binding = match r.binding.as_deref() {
        None | Some("none") => Binding::None,
        Some("dpop") => Binding::Dpop,
        Some("mtls") => Binding::Mtls,
        Some(other) => return Err(format!("binding `{other}` is not none, dpop or mtls")),
    };
    Ok(Query {
        subject: Subject::parse_spec(&r.principal)?,
        action: r.action,
        resource: Resource::parse_spec(&r.resource)?,
        source_ip: r.source_ip.unwrap_or_default(),
        time: i64::try_from(caller.time).unwrap_or(i64::MAX),
        binding,
    })
}

/// `POST /v1/authz/check`: one request (`{principal, action, resource}`)
/// or a batch (`{"requests": [...]}`), answered with the decision, the
/// policies that determined it, any cross-tenant grant and errors.
pub(crate) async fn check(
    caller: Caller,
    Extension(id): Extension<RequestId>,
    ApiJson(body): ApiJson<CheckBody>,
) -> Result<Response, ApiError> {
    authorize(&caller, Action::CheckAuthz)?;
    let (requests, batch) = match body {
        CheckBody::Batch { requests } => (requests, true),
        CheckBody::One(r) => (vec![r], false),
    };
    if requests.is_empty() || requests.len() > MAX_BATCH {
        return Err(ApiError::bad_request(format!(
            "give 1 to {MAX_BATCH} requests"
        )));
    }
    let results: Vec<Value> = requests
        .into_iter()
        .map(|r| match query(r, &caller) {
            Ok(q) => {
                let d = decide(&caller, &q);
                json!({
                    "decision": if d.allowed { "allow" } else { "deny" },
                    "policies": d.policies,
                    "cross_tenant_grant": d.grant,
                    "errors": d.errors,
                })
            }
            Err(e) => json!({ "decision": "deny", "policies": [], "cross_tenant_grant": null, "errors": [e] }),
        })
        .collect();
    let body = if batch {
        json!({ "request_id": id.as_str(), "results": results })
    } else {
        let mut one = results.into_iter().next().unwrap_or(Value::Null);
        one["request_id"] = json!(id.as_str());
        one
    };
    Ok(Json(body).into_response())
}

/// `POST /v1/sys/policies/reload`: re-reads the policy directory as one
/// atomic swap; a broken set is refused with its errors (400) and the old
/// one keeps serving.
pub(crate) async fn reload(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    authorize(&caller, Action::ReloadPolicies)?;
    match state.reload_policies() {
        Ok(n) => Ok(Json(json!({ "data": { "policies": n } })).into_response()),
        Err(e) => Err(ApiError::new(StatusCode::BAD_REQUEST, e.to_string())),
    }
}
