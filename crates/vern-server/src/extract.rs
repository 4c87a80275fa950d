//! Request body extraction with clear, Vault-shaped errors.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
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

/// A JSON body. A missing `Content-Type` is accepted (the Vault CLI sends
/// none); any type other than JSON is refused with 415. An empty body reads
/// as `{}`.
pub(crate) struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: BodyLimit + Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
            let essence = ct.split(';').next().unwrap_or("").trim();
            if essence != "application/json" && !essence.ends_with("+json") {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!("content type `{essence}` is not supported; send `Content-Type: application/json`"),
                ));
            }
        }
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
