//! The layers every request passes before reaching a handler.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;
use vern_core::RequestId;

use crate::error::ApiError;
use crate::metrics::{method_label, HttpLabels};
use crate::state::AppState;

/// Header carrying the correlation id in both directions.
pub(crate) const REQUEST_ID_HEADER: &str = "x-request-id";

/// Accepts the caller's `X-Request-Id` when it is well-formed, else makes
/// one; puts it in the request's extensions and log span, and echoes it.
pub(crate) async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(RequestId::parse)
        .unwrap_or_else(RequestId::generate);
    req.extensions_mut().insert(id.clone());
    let span = tracing::info_span!("request", request_id = %id);
    let mut resp = next.run(req).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(id.as_str()) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    resp
}

/// The request's route template (`/v1/{mount}/data/{*path}`), never the
/// raw path, which can name secrets.
pub(crate) fn route_template(req: &Request) -> String {
    req.extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned())
}

/// Counts and times every request by route template (never the raw path,
/// which would leak secret names into metrics) and by method from a fixed
/// set (so made-up methods cannot grow `/metrics`), and writes the access
/// log.
pub(crate) async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = route_template(&req);
    let resp = next.run(req).await;
    let elapsed = started.elapsed();
    let status = resp.status().as_u16();
    tracing::info!(
        method = %method,
        route = %route,
        status,
        micros = elapsed.as_micros() as u64,
        "Request handled."
    );
    state.inner.metrics.observe(
        HttpLabels {
            method: method_label(&method),
            route,
            status,
        },
        elapsed.as_secs_f64(),
    );
    resp
}

/// Ends requests that run past the configured timeout with 503.
pub(crate) async fn timeout(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = state.inner.config.request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("request did not complete within {} s", limit.as_secs_f64()),
        )
        .into_response(),
    }
}

/// Refuses a body announced as too large before reading any of it; bodies
/// without a length are cut off while read (see `DefaultBodyLimit`).
pub(crate) async fn body_limit(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let limit = state.inner.config.max_request_bytes;
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than the limit of {limit} bytes"),
        )
        .into_response();
    }
    next.run(req).await
}
