//! The layers every request passes before reaching a handler.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;
use vern_core::RequestId;
use vern_store::CommitGate;

use crate::error::ApiError;
use crate::metrics::{method_label, HttpLabels};
use crate::state::AppState;

/// Header carrying the correlation id in both directions.
pub(crate) const REQUEST_ID_HEADER: &str = "x-request-id";

/// Header echoing the caller's own correlation id.
pub(crate) const CLIENT_REQUEST_ID_HEADER: &str = "x-client-request-id";

/// The caller's own `X-Request-Id`, when well-formed: kept beside the
/// server's id, never instead of it, so ids in the audit log stay unique
/// whatever callers send.
#[derive(Debug, Clone)]
pub(crate) struct ClientRequestId(pub(crate) RequestId);

/// Gives every request a fresh id; keeps the caller's well-formed
/// `X-Request-Id` beside it. Both go into the request's extensions and log
/// span, and are echoed (`X-Request-Id` is the server's id,
/// `X-Client-Request-Id` the caller's).
pub(crate) async fn request_id(mut req: Request, next: Next) -> Response {
    let id = RequestId::generate();
    let theirs = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(RequestId::parse);
    req.extensions_mut().insert(id.clone());
    let span = match &theirs {
        Some(t) => tracing::info_span!("request", request_id = %id, client_request_id = %t),
        None => tracing::info_span!("request", request_id = %id),
    };
    if let Some(t) = &theirs {
        req.extensions_mut().insert(ClientRequestId(t.clone()));
    }
    let mut resp = next.run(req).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(id.as_str()) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    if let Some(value) = theirs.and_then(|t| HeaderValue::from_str(t.as_str()).ok()) {
        resp.headers_mut().insert(CLIENT_REQUEST_ID_HEADER, value);
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
        // Saturates after 584,000 years.
        micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
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

/// Ends requests that run past the configured timeout with 503, but only
/// while none of their writes has begun: a request whose commit has begun
/// runs to its end and reports what was committed, so the client and the
/// audit record never call a committed write a failure.
pub(crate) async fn timeout(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = state.inner.config.request_timeout;
    let gate = CommitGate::new();
    let work = gate.scope(next.run(req));
    tokio::pin!(work);
    tokio::select! {
        resp = &mut work => resp,
        () = tokio::time::sleep(limit) => {
            if gate.abandon() {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("request did not complete within {} s", limit.as_secs_f64()),
                )
                .into_response()
            } else {
                tracing::warn!("The request ran past its timeout while committing; it finishes.");
                work.await
            }
        }
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
