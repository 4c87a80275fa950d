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
use crate::authz::{allows, check as decide};
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
    /// The DNS names of an `svid.issue` question.
    #[serde(default)]
    dns_names: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum CheckBody {
    Batch { requests: Vec<CheckRequest> },
    One(CheckRequest),
}

/// The question, if the caller may ask it: about itself (as it really is:
/// its own scopes or roles, whatever the request says), or about a
/// principal a policy lets it ask about (`authz.check` on that principal).
fn query(r: CheckRequest, caller: &Caller) -> Result<Query, String> {
    let binding = match r.binding.as_deref() {
        None | Some("none") => Binding::None,
        Some("dpop") => Binding::Dpop,
        Some("mtls") => Binding::Mtls,
        Some(other) => return Err(format!("binding `{other}` is not none, dpop or mtls")),
    };
    let asked = Subject::parse_spec(&r.principal)?;
    let subject = if asked.id == caller.subject.id {
        caller.subject.clone()
    } else if allows(caller, asked.as_resource()) {
        asked
    } else {
        return Err(format!(
            "you may ask only about yourself, not about `{}`",
            r.principal
        ));
    };
    Ok(Query {
        subject,
        action: r.action,
        resource: Resource::parse_spec(&r.resource)?,
        source_ip: r.source_ip.unwrap_or_default(),
        time: i64::try_from(caller.time).unwrap_or(i64::MAX),
        binding,
        dns_names: r.dns_names,
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
    let (requests, batch) = match body {
        CheckBody::Batch { requests } => (requests, true),
        CheckBody::One(r) => (vec![r], false),
    };
    if requests.is_empty() || requests.len() > MAX_BATCH {
        return Err(ApiError::bad_request(format!(
            "give 1 to {MAX_BATCH} requests"
        )));
    }
    // The request's own decision: about the caller itself.
    allows(&caller, caller.subject.as_resource());
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
        // Every result is an object; an absent one becomes an empty object.
        let mut one = match results.into_iter().next() {
            Some(Value::Object(one)) => one,
            _ => serde_json::Map::new(),
        };
        one.insert("request_id".to_owned(), json!(id.as_str()));
        Value::Object(one)
    };
    Ok(Json(body).into_response())
}

/// `POST /v1/sys/policies/reload`: re-reads the policy directory as one
/// atomic swap; a broken set is refused with its errors (400) and the old
/// one keeps serving.
pub(crate) async fn reload(State(state): State<AppState>) -> Result<Response, ApiError> {
    match state.reload_policies() {
        Ok(n) => Ok(Json(json!({ "data": { "policies": n } })).into_response()),
        Err(e) => Err(ApiError::new(StatusCode::BAD_REQUEST, e.to_string())),
    }
}

/// `GET /v1/sys/policies`: the policies in force (built-in and from files),
/// each with its id and text, for read-only review.
pub(crate) async fn list_policies(State(state): State<AppState>) -> Response {
    let policies: Vec<Value> = state
        .inner
        .policies
        .policies()
        .into_iter()
        .map(|(id, text)| json!({ "id": id, "policy": text }))
        .collect();
    Json(json!({ "data": { "policies": policies, "files": state.inner.policies.files() } }))
        .into_response()
}
