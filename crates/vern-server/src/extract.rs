//! Request body extraction for the Vault API (`/v1/…`) with clear,
//! Vault-shaped errors. The OAuth2 endpoints parse their own form bodies
//! (`routes/oauth.rs`) and stay as strict as their RFCs.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;

/// States that know the largest body they accept, for the error message.
pub(crate) trait BodyLimit {
    fn body_limit(&self) -> usize;
}

impl BodyLimit for AppState {
    fn body_limit(&self) -> usize {
        self.inner.config.max_request_bytes
    }
}

/// A JSON body, whatever its `Content-Type`: Vault ignores the header, and
/// its own examples (`curl --data @payload.json`) send JSON as
/// `application/x-www-form-urlencoded`. What is parsed is still JSON only,
/// against the endpoint's type: a body that is not (a form, for one) is a
/// 400 naming the JSON error, an oversize one 413. An empty body reads as
/// `{}`.
pub(crate) struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: BodyLimit + Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let limit = state.body_limit();
        let bytes = Bytes::from_request(req, state).await.map_err(|rej| {
            if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body is larger than the limit of {limit} bytes"),
                )
            } else {
                ApiError::bad_request(format!("cannot read request body: {}", rej.body_text()))
            }
        })?;
        let body: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(body).map(ApiJson).map_err(|e| {
            ApiError::bad_request(format!(
                "request body is not valid JSON for this endpoint: {e}"
            ))
        })
    }
}
