//! `sys/` endpoints with Vault's request and response shapes: health, init,
//! seal status, unseal and seal.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use vern_seal::{SealStatus, DEFAULT_SHARES, DEFAULT_THRESHOLD};

use crate::auth::Caller;
use crate::authz::{authorize, Action};
use crate::cluster::ClusterInfo;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Query parameters of Vault's health endpoint that override status codes
/// (`activecode`, `sealedcode`, `uninitcode`); `standbyok` and friends are
/// accepted and have nothing to change, since no Vern replica is a standby.
type HealthQuery = HashMap<String, String>;

#[derive(Debug, Serialize)]
struct Health {
    initialized: bool,
    sealed: bool,
    standby: bool,
    performance_standby: bool,
    replication_performance_mode: &'static str,
    replication_dr_mode: &'static str,
    server_time_utc: u64,
    version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster_id: Option<String>,
}

fn status_code(q: &HealthQuery, name: &str, default: StatusCode) -> Result<StatusCode, ApiError> {
    let Some(raw) = q.get(name) else {
        return Ok(default);
    };
    raw.parse::<u16>()
        .ok()
        .and_then(|c| StatusCode::from_u16(c).ok())
        .filter(|s| (200..600).contains(&s.as_u16()))
        .ok_or_else(|| {
            ApiError::bad_request(format!("{name}={raw:?} is not a valid HTTP status code"))
        })
}

/// The cluster identity, loaded once per process after the first unseal.
async fn cluster(state: &AppState) -> Option<ClusterInfo> {
    if let Some(info) = state.inner.cluster.read().await.clone() {
        return Some(info);
    }
    let barrier = state.inner.seal.barrier().ok()?;
    let name = state.inner.config.cluster_name.as_deref();
    match ClusterInfo::load_or_create(&barrier, name).await {
        Ok(info) => {
            *state.inner.cluster.write().await = Some(info.clone());
            Some(info)
        }
        Err(e) => {
            tracing::error!(error = %e, "Cannot load the cluster identity.");
            None
        }
    }
}

/// `GET|HEAD /v1/sys/health`: 200 active, 501 uninitialised, 503 sealed.
pub(crate) async fn health(
    State(state): State<AppState>,
    Query(q): Query<HealthQuery>,
) -> Result<Response, ApiError> {
    let seal = &state.inner.seal;
    let initialized = seal.is_initialized().await?;
    let sealed = seal.is_sealed();
    let info = if sealed { None } else { cluster(&state).await };
    let code = if !initialized {
        status_code(&q, "uninitcode", StatusCode::NOT_IMPLEMENTED)?
    } else if sealed {
        status_code(&q, "sealedcode", StatusCode::SERVICE_UNAVAILABLE)?
    } else {
        // Every unsealed Vern replica is active: replicas share the
        // database and serve reads and writes alike.
        status_code(&q, "activecode", StatusCode::OK)?
    };
    let body = Health {
        initialized,
        sealed,
        standby: false,
        performance_standby: false,
        replication_performance_mode: "disabled",
        replication_dr_mode: "disabled",
        server_time_utc: state.inner.clock.unix_seconds(),
        version: VERSION,
        cluster_name: info.as_ref().map(|i| i.name.clone()),
        cluster_id: info.map(|i| i.id),
    };
    Ok((code, Json(body)).into_response())
}

/// `GET /v1/sys/init`.
pub(crate) async fn init_status(State(state): State<AppState>) -> Result<Response, ApiError> {
    let initialized = state.inner.seal.is_initialized().await?;
    Ok(Json(serde_json::json!({ "initialized": initialized })).into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct InitRequest {
    secret_shares: Option<u8>,
    secret_threshold: Option<u8>,
    pgp_keys: Option<Vec<String>>,
}

#[derive(Serialize)]
struct InitResponse {
    keys: Vec<String>,
    keys_base64: Vec<String>,
    root_token: String,
}

/// `PUT|POST /v1/sys/init`: returns the unseal keys and root token once.
pub(crate) async fn init(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<InitRequest>,
) -> Result<Response, ApiError> {
    if req.pgp_keys.is_some_and(|k| !k.is_empty()) {
        return Err(ApiError::bad_request(
            "pgp_keys is not supported; Vern encrypts shares to age recipients instead",
        ));
    }
    let shares = req.secret_shares.unwrap_or(DEFAULT_SHARES);
    let threshold = req.secret_threshold.unwrap_or(DEFAULT_THRESHOLD);
    let out = state.inner.seal.init(shares, threshold, None).await?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = InitResponse {
        keys: out.shares.iter().map(|s| hex::encode(s.expose())).collect(),
        keys_base64: out.shares.iter().map(|s| b64.encode(s.expose())).collect(),
        root_token: String::from_utf8_lossy(out.root_token.expose()).into_owned(),
    };
    Ok(Json(body).into_response())
}

#[derive(Serialize)]
struct SealStatusBody {
    #[serde(rename = "type")]
    kind: &'static str,
    initialized: bool,
    sealed: bool,
    t: u8,
    n: u8,
    progress: u8,
    nonce: String,
    version: &'static str,
    migration: bool,
    recovery_seal: bool,
    storage_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster_id: Option<String>,
}

async fn seal_status_body(state: &AppState, s: SealStatus) -> SealStatusBody {
    let info = if s.sealed { None } else { cluster(state).await };
    SealStatusBody {
        kind: "shamir",
        initialized: s.initialized,
        sealed: s.sealed,
        t: s.threshold,
        n: s.shares,
        progress: s.progress,
        nonce: s.nonce,
        version: VERSION,
        migration: false,
        recovery_seal: false,
        storage_type: state.inner.store.backend(),
        cluster_name: info.as_ref().map(|i| i.name.clone()),
        cluster_id: info.map(|i| i.id),
    }
}

/// `GET /v1/sys/seal-status`.
pub(crate) async fn seal_status(State(state): State<AppState>) -> Result<Response, ApiError> {
    let status = state.inner.seal.status().await?;
    Ok(Json(seal_status_body(&state, status).await).into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct UnsealRequest {
    key: Option<String>,
    #[serde(default)]
    reset: bool,
}

/// `PUT|POST /v1/sys/unseal`: one share per call, or `reset`.
pub(crate) async fn unseal(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<UnsealRequest>,
) -> Result<Response, ApiError> {
    let seal = &state.inner.seal;
    let status = if req.reset {
        seal.reset_unseal().await?
    } else {
        let key = req
            .key
            .ok_or_else(|| ApiError::bad_request("`key` is required unless `reset` is true"))?;
        seal.unseal(&key).await?
    };
    Ok(Json(seal_status_body(&state, status).await).into_response())
}

/// `PUT|POST /v1/sys/seal`: privileged.
pub(crate) async fn seal(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    authorize(&caller, Action::SysSeal)?;
    state.inner.seal.seal().await;
    tracing::warn!(principal = %caller.principal.id, "Sealed by request.");
    Ok(StatusCode::NO_CONTENT.into_response())
}
