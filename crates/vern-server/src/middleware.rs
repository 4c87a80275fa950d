//! The layers every request passes before reaching a handler.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
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

/// Refuses a web browser's request to the Vault API (`/v1/`) that a page of
/// another site could have sent without asking: one that may change
/// something (any method but `GET` and `HEAD`, with or without a body),
/// whose `Content-Type` is not JSON, and that carries `Origin` or
/// `Sec-Fetch-Site: cross-site|same-site`. The API reads JSON whatever its
/// content type (as Vault does), and browsers send `text/plain`, form and
/// bodiless `POST`s cross-site without a CORS preflight, so without this a
/// page open in an operator's browser could unseal, initialise or log in
/// with the browser's client certificate. Vault clients (CLI, hvac, curl,
/// Terraform, ESO) send neither header, and a JSON content type is
/// preflighted, which Vern never grants. Runs after the audit slot, so the
/// refusal is on record, and before authentication, so it charges no
/// lockout and no handler runs.
pub(crate) async fn cross_site(req: Request, next: Next) -> Response {
    let declared = crate::authz::access_of(&req).is_some();
    let reads = matches!(*req.method(), Method::GET | Method::HEAD);
    if !declared
        || reads
        || !req.uri().path().starts_with("/v1/")
        || !from_browser(req.headers())
        || json_content_type(req.headers())
    {
        return next.run(req).await;
    }
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .map(|v| crate::audit::printable(&String::from_utf8_lossy(v.as_bytes())));
    tracing::warn!(
        origin = origin.as_deref().unwrap_or(""),
        route = %route_template(&req),
        "A browser's cross-site request whose Content-Type is not JSON was refused."
    );
    ApiError::new(
        StatusCode::FORBIDDEN,
        "cross-site request refused: it comes from a web browser (it carries an Origin or Sec-Fetch-Site header) \
         and its Content-Type is not JSON; Vault clients send neither header, and a page must send \
         Content-Type: application/json",
    )
    .into_response()
}

/// Whether a browser sent the request on behalf of a page: browsers add
/// `Origin` to every `POST` (`null` from sandboxed or opaque origins) and
/// `Sec-Fetch-Site` to every request; Vault clients send neither.
fn from_browser(headers: &HeaderMap) -> bool {
    headers.contains_key(header::ORIGIN)
        || headers.get_all("sec-fetch-site").iter().any(|v| {
            v.to_str().is_ok_and(|site| {
                let site = site.trim();
                site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site")
            })
        })
}

/// Whether the request has exactly one `Content-Type` and its media type
/// (parameters aside, case-insensitive) is `application/json` or a
/// `+json` type such as `application/merge-patch+json`. No such type is one
/// a browser may send cross-site unasked (`text/plain`,
/// `application/x-www-form-urlencoded`, `multipart/form-data`): a value
/// such as `text/plain; a=application/json` is `text/plain` to a browser,
/// and so it is here.
fn json_content_type(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let essence = value
        .split_once(';')
        .map_or(value, |(essence, _)| essence)
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_static(value));
        }
        h
    }

    #[test]
    fn only_json_media_types_are_json() {
        for json in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            " application/json ;charset=UTF-8",
            "application/merge-patch+json",
        ] {
            assert!(
                json_content_type(&headers(&[("content-type", json)])),
                "{json}"
            );
        }
        for other in [
            "text/plain",
            "text/plain; a=application/json",
            "text/plain;charset=application/json",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=application/json",
            "application/json, text/plain",
            "text/json",
            "application/jsonx",
            "",
        ] {
            assert!(
                !json_content_type(&headers(&[("content-type", other)])),
                "{other}"
            );
        }
        assert!(!json_content_type(&HeaderMap::new()), "no content type");
        assert!(
            !json_content_type(&headers(&[
                ("content-type", "application/json"),
                ("content-type", "text/plain"),
            ])),
            "two content types"
        );
    }

    #[test]
    fn browsers_are_told_by_origin_or_fetch_site() {
        for browser in [
            headers(&[("origin", "https://evil.example")]),
            headers(&[("origin", "null")]),
            headers(&[("sec-fetch-site", "cross-site")]),
            headers(&[("sec-fetch-site", "same-site")]),
            headers(&[("sec-fetch-site", "Cross-Site")]),
        ] {
            assert!(from_browser(&browser), "{browser:?}");
        }
        for client in [
            HeaderMap::new(),
            headers(&[("sec-fetch-site", "same-origin")]),
            headers(&[("sec-fetch-site", "none")]),
            headers(&[("user-agent", "hvac/2.3.0")]),
        ] {
            assert!(!from_browser(&client), "{client:?}");
        }
    }
}
