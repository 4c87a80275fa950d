//! Authentication: who is calling. A token comes in `X-Vault-Token` (Vault's
//! header, used by hvac and the vault CLI) or `Authorization: Bearer`.
//! Today the root token of init is the only credential; the token
//! authority's access tokens plug in here.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use vern_core::Principal;
use vern_crypto::SecretBytes;

use crate::error::ApiError;
use crate::state::AppState;

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) principal: Principal,
}

fn presented_token(parts: &Parts) -> Result<Option<SecretBytes>, ApiError> {
    if let Some(v) = parts.headers.get("x-vault-token") {
        return Ok(Some(SecretBytes::new(v.as_bytes().to_vec())));
    }
    let Some(v) = parts.headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let v = v.as_bytes();
    match v.iter().position(|&b| b == b' ') {
        Some(i) if v[..i].eq_ignore_ascii_case(b"bearer") => {
            Ok(Some(SecretBytes::new(v[i + 1..].trim_ascii().to_vec())))
        }
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unsupported Authorization scheme; use `Bearer <token>` or the X-Vault-Token header",
        )),
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = presented_token(parts)?
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::new(StatusCode::FORBIDDEN, "missing client token"))?;
        if state.inner.seal.is_root_token(token.expose()).await? {
            tracing::info!(principal = "root", "Root token used.");
            return Ok(Self {
                principal: Principal::root(),
            });
        }
        tracing::warn!("Request with an unknown token refused.");
        Err(ApiError::forbidden())
    }
}
