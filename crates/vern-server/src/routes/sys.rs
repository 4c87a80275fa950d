//! `sys/` endpoints with Vault's request and response shapes: health, init,
//! seal status, unseal and seal.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use vern_seal::{
    IssuedShare, RekeyOutcome, RekeyStatus, SealStatus, DEFAULT_SHARES, DEFAULT_THRESHOLD,
};

use crate::audit::AuditSlot;
use crate::auth::Caller;
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

/// Parameters of a new share set, shared by init and root rotation.
#[derive(Debug, Deserialize)]
pub(crate) struct ShareSetRequest {
    secret_shares: Option<u8>,
    secret_threshold: Option<u8>,
    /// One age recipient (`age1…`) per share; each share is then returned
    /// encrypted to its recipient.
    #[serde(default)]
    share_recipients: Vec<String>,
    pgp_keys: Option<Vec<String>>,
}

impl ShareSetRequest {
    fn parameters(&self) -> Result<(u8, u8), ApiError> {
        if self.pgp_keys.as_ref().is_some_and(|k| !k.is_empty()) {
            return Err(ApiError::bad_request(
                "pgp_keys is not supported; give age recipients in share_recipients instead",
            ));
        }
        Ok((
            self.secret_shares.unwrap_or(DEFAULT_SHARES),
            self.secret_threshold.unwrap_or(DEFAULT_THRESHOLD),
        ))
    }
}

/// Shares as Vault returns them: `keys` (hex) and `keys_base64`. An
/// age-encrypted share is its armored age file in `keys` and the same text
/// base64-encoded in `keys_base64`.
fn share_lists(shares: &[IssuedShare]) -> (Vec<String>, Vec<String>) {
    let b64 = base64::engine::general_purpose::STANDARD;
    shares
        .iter()
        .map(|s| match s {
            IssuedShare::Clear(s) => (hex::encode(s.expose()), b64.encode(s.expose())),
            IssuedShare::Encrypted(armored) => (armored.clone(), b64.encode(armored)),
        })
        .unzip()
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
    audit: Option<Extension<AuditSlot>>,
    ApiJson(req): ApiJson<ShareSetRequest>,
) -> Result<Response, ApiError> {
    if let Some(Extension(slot)) = &audit {
        slot.action("sys.init", Some("platform".to_owned()));
    }
    let (shares, threshold) = req.parameters()?;
    let seal = &state.inner.seal;
    let out = match &state.inner.keepers {
        // Keepers will hold the shares: stay unsealed and hand them out now.
        Some(keepers) => {
            let out = seal
                .init_unsealed(shares, threshold, &req.share_recipients, None)
                .await?;
            keepers.wake.notify_one();
            state.ensure_ca().await;
            out
        }
        None => {
            seal.init(shares, threshold, &req.share_recipients, None)
                .await?
        }
    };
    let (keys, keys_base64) = share_lists(&out.shares);
    let body = InitResponse {
        keys,
        keys_base64,
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

/// One share to unseal with, or a reset. No `Debug`: it holds the share.
#[derive(Deserialize)]
pub(crate) struct UnsealRequest {
    key: Option<String>,
    #[serde(default)]
    reset: bool,
}

/// `PUT|POST /v1/sys/unseal`: one share per call, or `reset`.
pub(crate) async fn unseal(
    State(state): State<AppState>,
    audit: Option<Extension<AuditSlot>>,
    ApiJson(req): ApiJson<UnsealRequest>,
) -> Result<Response, ApiError> {
    if let Some(Extension(slot)) = &audit {
        slot.action("sys.unseal", Some("platform".to_owned()));
    }
    let seal = &state.inner.seal;
    let status = if req.reset {
        seal.reset_unseal().await?
    } else {
        let key = req
            .key
            .ok_or_else(|| ApiError::bad_request("`key` is required unless `reset` is true"))?;
        seal.unseal(&key).await?
    };
    if !status.sealed {
        state.ensure_ca().await;
    }
    Ok(Json(seal_status_body(&state, status).await).into_response())
}

/// `PUT|POST /v1/sys/seal`: privileged.
pub(crate) async fn seal(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    state.inner.seal.seal().await;
    state.inner.authority.forget();
    state.inner.pki.forget();
    tracing::warn!(principal = %caller.principal.id, "Sealed by request.");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /v1/sys/key-status`: the active keyring term.
pub(crate) async fn key_status(State(state): State<AppState>) -> Result<Response, ApiError> {
    let status = state.inner.seal.key_status()?;
    Ok(Json(key_status_body(status)).into_response())
}

fn key_status_body(status: vern_seal::KeyStatus) -> serde_json::Value {
    let installed = std::time::UNIX_EPOCH + std::time::Duration::from_secs(status.installed);
    serde_json::json!({
        "term": status.term,
        "install_time": humantime::format_rfc3339_seconds(installed).to_string(),
        "terms": status.terms,
    })
}

/// `PUT|POST /v1/sys/rotate/keyring` (and Vault's `sys/rotate`): adds a
/// keyring term.
pub(crate) async fn rotate_keyring(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let status = state.inner.seal.rotate_keyring().await?;
    tracing::warn!(principal = %caller.principal.id, term = status.term, "Keyring rotated by request.");
    Ok(Json(key_status_body(status)).into_response())
}

fn rekey_body(s: RekeyStatus) -> serde_json::Value {
    serde_json::json!({
        "started": s.started,
        "nonce": s.nonce,
        "t": s.threshold,
        "n": s.shares,
        "progress": s.progress,
        "required": s.required,
        "encrypted_shares": s.encrypted,
    })
}

/// `GET /v1/sys/rotate/root/init`: root rotation progress.
pub(crate) async fn rekey_status(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(rekey_body(state.inner.seal.rekey_status().await?)).into_response())
}

/// `PUT|POST /v1/sys/rotate/root/init`: starts a root key rotation.
pub(crate) async fn rekey_init(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ShareSetRequest>,
) -> Result<Response, ApiError> {
    let (shares, threshold) = req.parameters()?;
    let status = state
        .inner
        .seal
        .rekey_init(shares, threshold, &req.share_recipients)
        .await?;
    Ok(Json(rekey_body(status)).into_response())
}

/// `DELETE /v1/sys/rotate/root/init`: abandons a root key rotation.
pub(crate) async fn rekey_cancel(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(rekey_body(state.inner.seal.rekey_cancel().await?)).into_response())
}

/// One share of a root key rotation. No `Debug`: it holds the share.
#[derive(Deserialize)]
pub(crate) struct RekeyUpdateRequest {
    key: String,
    nonce: String,
}

/// `PUT|POST /v1/sys/rotate/root/update`: one current share per call; the
/// shares themselves are the authority, as for unseal.
pub(crate) async fn rekey_update(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RekeyUpdateRequest>,
) -> Result<Response, ApiError> {
    let body = match state.inner.seal.rekey_update(&req.key, &req.nonce).await? {
        RekeyOutcome::Pending(status) => rekey_body(status),
        RekeyOutcome::Complete { nonce, shares } => {
            let (keys, keys_base64) = share_lists(&shares);
            serde_json::json!({
                "complete": true,
                "nonce": nonce,
                "keys": keys,
                "keys_base64": keys_base64,
            })
        }
    };
    Ok(Json(body).into_response())
}
