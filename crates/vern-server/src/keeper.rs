//! The keeper: a stateless process that holds one unseal share in memory
//! and hands it only to the Vern server it was configured for. Mutual TLS
//! with identity pinning (see `vern-pki`) decides who may connect at all;
//! everyone who gets through is that server.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;
use vern_crypto::{SecretBytes, KEY_LEN};

use crate::error::ApiError;
use crate::extract::{ApiJson, BodyLimit};
use crate::middleware;

/// Largest body a keeper accepts: one share and some JSON.
const KEEPER_BODY_LIMIT: usize = 4096;

/// What a keeper holds.
#[derive(Clone, Default)]
pub struct KeeperState {
    share: Arc<RwLock<Option<SecretBytes>>>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct ShareBody {
    pub(crate) share: String,
}

/// The keeper's HTTP application.
pub fn keeper_app(state: KeeperState) -> Router {
    Router::new()
        .route("/v1/keeper/share", get(get_share).put(put_share))
        .route("/v1/keeper/health", get(health))
        .with_state(state)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no handler for this path") })
        .layer(axum::extract::DefaultBodyLimit::max(KEEPER_BODY_LIMIT))
        .layer(axum::middleware::from_fn(middleware::request_id))
}

async fn health(State(state): State<KeeperState>) -> Response {
    let holds = state.share.read().await.is_some();
    Json(serde_json::json!({ "holds_share": holds })).into_response()
}

async fn get_share(State(state): State<KeeperState>) -> Result<Response, ApiError> {
    let share = state.share.read().await;
    let Some(share) = share.as_ref() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "this keeper holds no share",
        ));
    };
    tracing::info!("Keeper handed out its share.");
    Ok(Json(ShareBody {
        share: hex::encode(share.expose()),
    })
    .into_response())
}

async fn put_share(
    State(state): State<KeeperState>,
    ApiJson(body): ApiJson<ShareBody>,
) -> Result<Response, ApiError> {
    let text = zeroize::Zeroizing::new(body.share);
    let bytes = hex::decode(text.trim()).map_err(|_| ApiError::bad_request("share must be hex"))?;
    let share = SecretBytes::new(bytes);
    if share.len() != KEY_LEN + 1 {
        return Err(ApiError::bad_request(format!(
            "a share is {} bytes; got {}",
            KEY_LEN + 1,
            share.len()
        )));
    }
    *state.share.write().await = Some(share);
    tracing::info!("Keeper stored a share.");
    Ok(StatusCode::NO_CONTENT.into_response())
}

impl BodyLimit for KeeperState {
    fn body_limit(&self) -> usize {
        KEEPER_BODY_LIMIT
    }
}
