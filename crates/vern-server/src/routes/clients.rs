//! Client management: `POST /v1/auth/clients`, `GET|LIST /v1/auth/clients`,
//! `GET|DELETE /v1/auth/clients/:id`, and signing key rotation. Operators only.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use vern_authority::{ClientRecord, ClientSpec};

use crate::auth::Caller;
use crate::authz::{authorize, Action};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;

fn record_json(r: &ClientRecord) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or_else(|_| json!({}));
    if let Some(map) = v.as_object_mut() {
        map.remove("secret_hmac");
        map.insert("has_secret".to_owned(), json!(r.secret_hmac.is_some()));
    }
    v
}

/// `POST /v1/auth/clients`.
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(spec): ApiJson<ClientSpec>,
) -> Result<Response, ApiError> {
    authorize(&caller, Action::ManageClients)?;
    let barrier = state.inner.seal.barrier()?;
    let created = state.inner.authority.create_client(&barrier, &spec).await?;
    let mut body = record_json(&created.record);
    if let Some(secret) = &created.secret {
        if let Some(slot) = &caller.audit {
            slot.sensitive("client_secret", secret.expose());
        }
        body["client_secret"] = json!(String::from_utf8_lossy(secret.expose()));
    }
    Ok((StatusCode::OK, Json(json!({ "data": body }))).into_response())
}

/// `GET /v1/auth/clients` (and `LIST`).
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    authorize(&caller, Action::ManageClients)?;
    let barrier = state.inner.seal.barrier()?;
    let ids = state.inner.authority.client_ids(&barrier).await?;
    Ok(Json(json!({ "data": { "keys": ids } })).into_response())
}

/// `GET /v1/auth/clients/:id`.
pub(crate) async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&caller, Action::ManageClients)?;
    let barrier = state.inner.seal.barrier()?;
    let r = state.inner.authority.client(&barrier, &id).await?;
    Ok(Json(json!({ "data": record_json(&r) })).into_response())
}

/// `DELETE /v1/auth/clients/:id`.
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&caller, Action::ManageClients)?;
    let barrier = state.inner.seal.barrier()?;
    state.inner.authority.delete_client(&barrier, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApplyBody {
    #[serde(default)]
    clients: Vec<ClientSpec>,
    #[serde(default)]
    prune: bool,
    #[serde(default)]
    dry_run: bool,
}

/// `POST /v1/auth/apply`: declare the whole client set (GitOps).
pub(crate) async fn apply(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<ApplyBody>,
) -> Result<Response, ApiError> {
    authorize(&caller, Action::ManageClients)?;
    let barrier = state.inner.seal.barrier()?;
    let plan = state
        .inner
        .authority
        .apply(&barrier, &body.clients, body.prune, body.dry_run)
        .await?;
    let secrets: serde_json::Map<String, Value> = plan
        .secrets
        .iter()
        .map(|(id, s)| (id.clone(), json!(String::from_utf8_lossy(s.expose()))))
        .collect();
    let update: Vec<Value> = plan
        .update
        .iter()
        .map(|(id, changes)| json!({ "client_id": id, "changes": changes }))
        .collect();
    Ok(Json(json!({ "data": {
        "dry_run": body.dry_run,
        "create": plan.create,
        "update": update,
        "delete": plan.delete,
        "unchanged": plan.unchanged,
        "kept": plan.kept,
        "secrets": secrets,
    }}))
    .into_response())
}

/// `POST /v1/auth/keys/rotate`: a new signing key, published now, signing
/// after the publish delay.
pub(crate) async fn rotate_keys(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    authorize(&caller, Action::ManageClients)?;
    let barrier = state.inner.seal.barrier()?;
    let kid = state.inner.authority.rotate_keys(&barrier).await?;
    Ok(Json(json!({ "data": { "kid": kid } })).into_response())
}
