//! The route table.

mod audit;
mod authz;
mod clients;
mod kv;
mod oauth;
mod sys;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use axum::Router;
use tower::ServiceBuilder;

use crate::error::ApiError;
use crate::middleware;
use crate::state::AppState;

pub(crate) fn router(state: AppState) -> Router {
    let limit = state.inner.config.max_request_bytes;
    Router::new()
        .route("/v1/sys/health", get(sys::health))
        .route(
            "/v1/sys/init",
            get(sys::init_status).put(sys::init).post(sys::init),
        )
        .route("/v1/sys/seal-status", get(sys::seal_status))
        .route("/v1/sys/unseal", put(sys::unseal).post(sys::unseal))
        .route("/v1/sys/seal", put(sys::seal).post(sys::seal))
        .route("/v1/sys/key-status", get(sys::key_status))
        .route(
            "/v1/sys/rotate",
            put(sys::rotate_keyring).post(sys::rotate_keyring),
        )
        .route(
            "/v1/sys/rotate/keyring",
            put(sys::rotate_keyring).post(sys::rotate_keyring),
        )
        .route(
            "/v1/sys/rotate/root/init",
            get(sys::rekey_status)
                .put(sys::rekey_init)
                .post(sys::rekey_init)
                .delete(sys::rekey_cancel),
        )
        .route(
            "/v1/sys/rotate/root/update",
            put(sys::rekey_update).post(sys::rekey_update),
        )
        .route(
            "/v1/{mount}/config",
            get(kv::read_config)
                .put(kv::write_config)
                .post(kv::write_config),
        )
        .route(
            "/v1/{mount}/data/{*path}",
            get(kv::read_data)
                .put(kv::write_data)
                .post(kv::write_data)
                .patch(kv::patch_data)
                .delete(kv::delete_latest),
        )
        .route(
            "/v1/{mount}/delete/{*path}",
            put(kv::delete_versions).post(kv::delete_versions),
        )
        .route(
            "/v1/{mount}/undelete/{*path}",
            put(kv::undelete_versions).post(kv::undelete_versions),
        )
        .route(
            "/v1/{mount}/destroy/{*path}",
            put(kv::destroy_versions).post(kv::destroy_versions),
        )
        .route("/v1/{mount}/subkeys/{*path}", get(kv::subkeys))
        .route("/v1/{mount}/metadata", any(kv::metadata))
        .route("/v1/{mount}/metadata/", any(kv::metadata))
        .route("/v1/{mount}/metadata/{*path}", any(kv::metadata))
        .route("/oauth2/token", post(oauth::token))
        .route("/oauth2/jwks", get(oauth::jwks))
        .route("/oauth2/introspect", post(oauth::introspect))
        .route("/oauth2/revoke", post(oauth::revoke))
        .route(
            "/.well-known/oauth-authorization-server",
            get(oauth::metadata),
        )
        .route("/v1/auth/clients", get(clients::list).post(clients::create))
        .route(
            "/v1/auth/clients/{id}",
            get(clients::read).delete(clients::delete),
        )
        .route("/v1/auth/keys/rotate", post(clients::rotate_keys))
        .route("/v1/auth/apply", post(clients::apply))
        .route("/v1/authz/check", post(authz::check))
        .route("/v1/sys/policies/reload", post(authz::reload))
        .route("/v1/audit/records", get(audit::records))
        .route("/v1/audit/hash", post(audit::hash).put(audit::hash))
        .route("/v1/audit/public-key", get(audit::public_key))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(
            ServiceBuilder::new()
                .layer(axum::middleware::from_fn(middleware::request_id))
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    crate::client_addr::resolve,
                ))
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    middleware::observe,
                ))
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    crate::audit::record,
                ))
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    middleware::timeout,
                ))
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    middleware::body_limit,
                ))
                .layer(DefaultBodyLimit::max(limit)),
        )
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no handler for this path")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this path",
    )
}

async fn metrics(State(state): State<AppState>) -> Response {
    match state.inner.metrics.render() {
        Ok(body) => {
            let mut resp = body.into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            resp
        }
        Err(e) => ApiError::internal(&e).into_response(),
    }
}
