//! The route table: every route with the access of each of its methods
//! (public probe, open with its own credentials, or authorized by a named
//! Cedar action). The router, the audit exemptions and the authorization
//! point are built from it.

mod attest;
mod audit;
mod authz;
mod clients;
mod jwt_auth;
mod kv;
mod mounts;
mod nats;
mod oauth;
mod pki;
mod sys;
mod vault_auth;
mod workloads;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::Arc;

use axum::routing::{any, delete, get, post, put, MethodRouter};
use axum::Router;
use tower::ServiceBuilder;

use crate::error::ApiError;
use crate::middleware;
use crate::state::AppState;

/// How a route is reached. Every route of the server declares one per
/// method in [`table`]; the router, the audit exemptions and the
/// authorization point are all built from that table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// A probe or public document: no token, no audit record.
    Public,
    /// No token: the request carries its own authority (key shares, client
    /// credentials), which the handler checks. Recorded under `action`.
    Open(&'static str),
    /// A token and a Cedar decision on `action` about the platform, made
    /// by the authorization point before the handler runs.
    Platform(&'static str),
    /// A token and a Cedar decision on `action` about a resource the
    /// handler derives from the request (a secret path, a client, a
    /// tenant); a handler that answers without one fails closed.
    Resource(&'static str),
    /// A token and a Cedar decision on `action` about the caller itself
    /// (its own token, as Vault's `auth/token/*-self`), made by the
    /// authorization point before the handler. A token that does not
    /// authenticate is refused as Vault refuses it there, 403 `permission
    /// denied`: that is how Vault clients test a token (hvac's
    /// `is_authenticated` reads a 403 as "no", and a 401 as a failure).
    Own(&'static str),
}

impl Access {
    /// The Cedar action an authorized route is decided on.
    pub(crate) fn action(self) -> Option<&'static str> {
        match self {
            Self::Platform(a) | Self::Resource(a) | Self::Own(a) => Some(a),
            Self::Public | Self::Open(_) => None,
        }
    }
}

/// One row of the route table: a path, the access of each method it
/// answers, and the handlers.
pub(crate) struct Route {
    pub(crate) path: &'static str,
    pub(crate) methods: Vec<(&'static str, Access)>,
    handler: MethodRouter<AppState>,
}

fn route(
    path: &'static str,
    methods: &[(&'static str, Access)],
    handler: MethodRouter<AppState>,
) -> Route {
    Route {
        path,
        methods: methods.to_vec(),
        handler,
    }
}

use Access::{Open, Own, Platform, Public, Resource};

/// Every route of the API.
pub(crate) fn table() -> Vec<Route> {
    vec![
        route(
            "/v1/sys/health",
            &[("GET", Public), ("HEAD", Public)],
            get(sys::health),
        ),
        route(
            "/v1/sys/init",
            &[("GET", Public), ("HEAD", Public)],
            get(sys::init_status),
        ),
        route(
            "/v1/sys/init",
            &[("PUT", Open("sys.init")), ("POST", Open("sys.init"))],
            put(sys::init).post(sys::init),
        ),
        route(
            "/v1/sys/seal-status",
            &[("GET", Public), ("HEAD", Public)],
            get(sys::seal_status),
        ),
        route(
            "/v1/sys/unseal",
            &[("PUT", Open("sys.unseal")), ("POST", Open("sys.unseal"))],
            put(sys::unseal).post(sys::unseal),
        ),
        route(
            "/v1/sys/seal",
            &[
                ("PUT", Platform("sys.seal")),
                ("POST", Platform("sys.seal")),
            ],
            put(sys::seal).post(sys::seal),
        ),
        route(
            "/v1/sys/key-status",
            &[
                ("GET", Platform("sys.key-status")),
                ("HEAD", Platform("sys.key-status")),
            ],
            get(sys::key_status),
        ),
        route(
            "/v1/sys/rotate",
            &[
                ("PUT", Platform("sys.rotate-keyring")),
                ("POST", Platform("sys.rotate-keyring")),
            ],
            put(sys::rotate_keyring).post(sys::rotate_keyring),
        ),
        route(
            "/v1/sys/rotate/keyring",
            &[
                ("PUT", Platform("sys.rotate-keyring")),
                ("POST", Platform("sys.rotate-keyring")),
            ],
            put(sys::rotate_keyring).post(sys::rotate_keyring),
        ),
        route(
            "/v1/sys/rotate/root/init",
            &[
                ("GET", Open("sys.rotate-root.status")),
                ("HEAD", Open("sys.rotate-root.status")),
            ],
            get(sys::rekey_status),
        ),
        route(
            "/v1/sys/rotate/root/init",
            &[
                ("PUT", Platform("sys.rotate-root")),
                ("POST", Platform("sys.rotate-root")),
                ("DELETE", Platform("sys.rotate-root")),
            ],
            put(sys::rekey_init)
                .post(sys::rekey_init)
                .delete(sys::rekey_cancel),
        ),
        route(
            "/v1/sys/rotate/root/update",
            &[
                ("PUT", Open("sys.rotate-root.update")),
                ("POST", Open("sys.rotate-root.update")),
            ],
            put(sys::rekey_update).post(sys::rekey_update),
        ),
        route(
            "/v1/sys/mounts",
            &[
                ("GET", Resource("kv.mount.read")),
                ("HEAD", Resource("kv.mount.read")),
            ],
            get(mounts::list),
        ),
        route(
            "/v1/sys/internal/ui/mounts/{*path}",
            &[
                ("GET", Resource("kv.mount.read")),
                ("HEAD", Resource("kv.mount.read")),
            ],
            get(mounts::preflight),
        ),
        route(
            "/v1/sys/policies",
            &[
                ("GET", Platform("policy.read")),
                ("HEAD", Platform("policy.read")),
            ],
            get(authz::list_policies),
        ),
        route(
            "/v1/sys/policies/reload",
            &[
                ("POST", Platform("policy.reload")),
                ("PUT", Platform("policy.reload")),
            ],
            post(authz::reload).put(authz::reload),
        ),
        route(
            "/v1/{mount}/config",
            &[
                ("GET", Platform("kv.config")),
                ("HEAD", Platform("kv.config")),
                ("PUT", Platform("kv.config")),
                ("POST", Platform("kv.config")),
            ],
            get(kv::read_config)
                .put(kv::write_config)
                .post(kv::write_config),
        ),
        route(
            "/v1/{mount}/data/{*path}",
            &[
                ("GET", Resource("secret.read")),
                ("HEAD", Resource("secret.read")),
                ("PUT", Resource("secret.write")),
                ("POST", Resource("secret.write")),
                ("PATCH", Resource("secret.write")),
                ("DELETE", Resource("secret.delete")),
            ],
            get(kv::read_data)
                .put(kv::write_data)
                .post(kv::write_data)
                .patch(kv::patch_data)
                .delete(kv::delete_latest),
        ),
        route(
            "/v1/{mount}/delete/{*path}",
            &[
                ("PUT", Resource("secret.delete")),
                ("POST", Resource("secret.delete")),
            ],
            put(kv::delete_versions).post(kv::delete_versions),
        ),
        route(
            "/v1/{mount}/undelete/{*path}",
            &[
                ("PUT", Resource("secret.delete")),
                ("POST", Resource("secret.delete")),
            ],
            put(kv::undelete_versions).post(kv::undelete_versions),
        ),
        route(
            "/v1/{mount}/destroy/{*path}",
            &[
                ("PUT", Resource("secret.delete")),
                ("POST", Resource("secret.delete")),
            ],
            put(kv::destroy_versions).post(kv::destroy_versions),
        ),
        route(
            "/v1/{mount}/subkeys/{*path}",
            &[
                ("GET", Resource("secret.read")),
                ("HEAD", Resource("secret.read")),
            ],
            get(kv::subkeys),
        ),
        route("/v1/{mount}/metadata", &METADATA, any(kv::metadata)),
        route("/v1/{mount}/metadata/", &METADATA, any(kv::metadata)),
        route("/v1/{mount}/metadata/{*path}", &METADATA, any(kv::metadata)),
        route(
            "/oauth2/token",
            &[("POST", Open("token.issue"))],
            post(oauth::token),
        ),
        route(
            "/oauth2/jwks",
            &[("GET", Public), ("HEAD", Public)],
            get(oauth::jwks),
        ),
        route(
            "/oauth2/introspect",
            &[("POST", Open("token.introspect"))],
            post(oauth::introspect),
        ),
        route(
            "/oauth2/revoke",
            &[("POST", Open("token.revoke"))],
            post(oauth::revoke),
        ),
        route(
            "/.well-known/oauth-authorization-server",
            &[("GET", Public), ("HEAD", Public)],
            get(oauth::metadata),
        ),
        route(
            "/v1/auth/approle/login",
            &[
                ("POST", Open(vault_auth::LOGIN_ACTION)),
                ("PUT", Open(vault_auth::LOGIN_ACTION)),
            ],
            post(vault_auth::approle_login).put(vault_auth::approle_login),
        ),
        route(
            "/v1/auth/cert/login",
            &[
                ("POST", Open(vault_auth::LOGIN_ACTION)),
                ("PUT", Open(vault_auth::LOGIN_ACTION)),
            ],
            post(vault_auth::cert_login).put(vault_auth::cert_login),
        ),
        route(
            "/v1/auth/token/lookup-self",
            &[
                ("GET", Own("token.lookup-self")),
                ("POST", Own("token.lookup-self")),
            ],
            get(vault_auth::lookup_self).post(vault_auth::lookup_self),
        ),
        route(
            "/v1/auth/token/renew-self",
            &[
                ("POST", Own("token.renew-self")),
                ("PUT", Own("token.renew-self")),
            ],
            post(vault_auth::renew_self).put(vault_auth::renew_self),
        ),
        route(
            "/v1/auth/token/revoke-self",
            &[
                ("POST", Own("token.revoke-self")),
                ("PUT", Own("token.revoke-self")),
            ],
            post(vault_auth::revoke_self).put(vault_auth::revoke_self),
        ),
        route(
            "/v1/auth/token/lookup",
            &[
                ("POST", Resource("token.lookup")),
                ("PUT", Resource("token.lookup")),
            ],
            post(vault_auth::lookup).put(vault_auth::lookup),
        ),
        route(
            "/v1/auth/clients",
            &[
                ("GET", Resource("client.read")),
                ("HEAD", Resource("client.read")),
            ],
            get(clients::list),
        ),
        route(
            "/v1/auth/clients",
            &[("POST", Resource("client.manage"))],
            post(clients::create),
        ),
        route(
            "/v1/auth/clients/{id}",
            &[
                ("GET", Resource("client.read")),
                ("HEAD", Resource("client.read")),
            ],
            get(clients::read),
        ),
        route(
            "/v1/auth/clients/{id}",
            &[("DELETE", Resource("client.manage"))],
            delete(clients::delete),
        ),
        route(
            "/v1/auth/keys/rotate",
            &[("POST", Platform("keys.rotate"))],
            post(clients::rotate_keys),
        ),
        route(
            "/v1/auth/apply",
            &[("POST", Resource("client.manage"))],
            post(clients::apply),
        ),
        route(
            "/v1/auth/jwt/login",
            &[
                ("POST", Open(vault_auth::LOGIN_ACTION)),
                ("PUT", Open(vault_auth::LOGIN_ACTION)),
            ],
            post(jwt_auth::login).put(jwt_auth::login),
        ),
        route(
            "/v1/auth/jwt/role",
            &[("LIST", Resource("client.read"))],
            any(jwt_auth::list_roles),
        ),
        route(
            "/v1/auth/jwt/role/{name}",
            &[
                ("GET", Resource("client.read")),
                ("HEAD", Resource("client.read")),
            ],
            get(jwt_auth::read_role),
        ),
        route(
            "/v1/auth/jwt/role/{name}",
            &[
                ("POST", Resource("client.manage")),
                ("PUT", Resource("client.manage")),
                ("DELETE", Resource("client.manage")),
            ],
            post(jwt_auth::write_role)
                .put(jwt_auth::write_role)
                .delete(jwt_auth::delete_role),
        ),
        route(
            "/v1/authz/check",
            &[("POST", Resource("authz.check"))],
            post(authz::check),
        ),
        route(
            "/v1/audit/records",
            &[
                ("GET", Resource("audit.read")),
                ("HEAD", Resource("audit.read")),
            ],
            get(audit::records),
        ),
        route(
            "/v1/audit/hash",
            &[
                ("POST", Platform("audit.hash")),
                ("PUT", Platform("audit.hash")),
            ],
            post(audit::hash).put(audit::hash),
        ),
        route(
            "/v1/audit/public-key",
            &[("GET", Public), ("HEAD", Public)],
            get(audit::public_key),
        ),
        route(
            "/v1/pki/svid",
            &[("POST", Resource("svid.issue"))],
            post(pki::issue_svid),
        ),
        route(
            "/v1/pki/jwt-svid",
            &[("POST", Resource("svid.issue"))],
            post(pki::issue_jwt_svid),
        ),
        route(
            "/v1/pki/workloads",
            &[
                ("POST", Resource("workload.register")),
                ("GET", Resource("workload.read")),
                ("HEAD", Resource("workload.read")),
            ],
            post(workloads::register).get(workloads::list),
        ),
        route(
            "/v1/pki/workloads/{id}",
            &[("DELETE", Resource("workload.register"))],
            delete(workloads::delete),
        ),
        route(
            "/v1/pki/bundle",
            &[("GET", Public), ("HEAD", Public)],
            get(pki::bundle),
        ),
        route(
            "/v1/pki/ca.pem",
            &[("GET", Public), ("HEAD", Public)],
            get(pki::ca_pem),
        ),
        route(
            "/v1/pki/rotate",
            &[("POST", Platform("pki.rotate"))],
            post(pki::rotate),
        ),
        route(
            "/v1/pki/import",
            &[("POST", Platform("pki.import"))],
            post(pki::import),
        ),
        route(
            "/v1/pki/certs",
            &[
                ("GET", Platform("pki.read")),
                ("HEAD", Platform("pki.read")),
            ],
            get(pki::certs),
        ),
        route(
            "/v1/attest/keys",
            &[("GET", Public), ("HEAD", Public)],
            get(attest::keys),
        ),
        route(
            "/v1/attest/sign",
            &[("POST", Resource("attest.sign"))],
            post(attest::sign),
        ),
        route(
            "/v1/attest/promote",
            &[("POST", Resource("attest.promote"))],
            post(attest::promote),
        ),
        route(
            "/v1/attest/gates",
            &[
                ("GET", Resource("attest.gate")),
                ("HEAD", Resource("attest.gate")),
            ],
            get(attest::gate),
        ),
        route(
            "/v1/attest/rotate",
            &[("POST", Resource("attest.rotate"))],
            post(attest::rotate),
        ),
        route(
            "/v1/evidence",
            &[
                ("GET", Resource("evidence.read")),
                ("HEAD", Resource("evidence.read")),
            ],
            get(attest::by_subject),
        ),
        route(
            "/v1/evidence/import",
            &[("POST", Resource("evidence.import"))],
            post(attest::import),
        ),
        route(
            "/v1/evidence/{address}",
            &[
                ("GET", Resource("evidence.read")),
                ("HEAD", Resource("evidence.read")),
            ],
            get(attest::get),
        ),
        route(
            "/v1/nats/config",
            &[
                ("GET", Platform("nats.config")),
                ("HEAD", Platform("nats.config")),
            ],
            get(nats::config),
        ),
        route(
            "/v1/nats/paths",
            &[
                ("GET", Resource("nats.paths")),
                ("HEAD", Resource("nats.paths")),
            ],
            get(nats::paths),
        ),
        route(
            "/metrics",
            &[("GET", Public), ("HEAD", Public)],
            get(metrics),
        ),
    ]
}

/// The KV metadata endpoint answers Vault's `LIST` verb, so it takes any
/// method; these are the ones it serves.
const METADATA: [(&str, Access); 7] = [
    ("GET", Resource("secret.metadata.read")),
    ("HEAD", Resource("secret.metadata.read")),
    ("LIST", Resource("secret.list")),
    ("PUT", Resource("secret.write")),
    ("POST", Resource("secret.write")),
    ("PATCH", Resource("secret.write")),
    ("DELETE", Resource("secret.delete")),
];

/// The access of each (route template, method), looked up per request.
#[derive(Debug, Default)]
pub(crate) struct AccessMap(HashMap<(&'static str, &'static str), Access>);

impl AccessMap {
    fn of(table: &[Route]) -> Self {
        let mut map = HashMap::new();
        for r in table {
            for (method, access) in &r.methods {
                map.insert((r.path, *method), *access);
            }
        }
        Self(map)
    }

    /// The access of a request's route and method; `None` for requests no
    /// route answers (404 and 405 come from the fallbacks).
    pub(crate) fn get(&self, route: &str, method: &str) -> Option<Access> {
        self.0.get(&(route, method)).copied()
    }
}

pub(crate) fn router(state: AppState) -> Router {
    let limit = state.inner.config.max_request_bytes;
    let rows = table();
    let access = Arc::new(AccessMap::of(&rows));
    let mut paths: Vec<(&'static str, MethodRouter<AppState>)> = Vec::new();
    for r in rows {
        match paths.iter_mut().find(|(p, _)| *p == r.path) {
            Some((_, handler)) => *handler = std::mem::take(handler).merge(r.handler),
            None => paths.push((r.path, r.handler)),
        }
    }
    let mut router = Router::new();
    for (path, handler) in paths {
        router = router.route(path, handler);
    }
    router
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
                    access,
                    crate::authz::declare,
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
                .layer(DefaultBodyLimit::max(limit))
                .layer(axum::middleware::from_fn(middleware::cross_site))
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    crate::authz::gate,
                )),
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

/// A duration field as Vault takes one: a whole number of seconds, or a
/// duration string such as `"90s"` or `"1h"` (`""` and `"0"` are zero).
pub(crate) fn duration_field(
    field: &str,
    v: &serde_json::Value,
) -> Result<std::time::Duration, ApiError> {
    use serde_json::Value;
    let bad = || {
        ApiError::bad_request(format!(
            "`{field}` must be a whole number of seconds or a duration such as `1h`"
        ))
    };
    match v {
        Value::Number(n) => n
            .as_u64()
            .map(std::time::Duration::from_secs)
            .ok_or_else(bad),
        Value::String(s) if s.trim().is_empty() || s.trim() == "0" => Ok(std::time::Duration::ZERO),
        Value::String(s) => humantime::parse_duration(s.trim()).map_err(|_| bad()),
        _ => Err(bad()),
    }
}

/// Vault's response envelope around `data` (and a login's `auth`), as every
/// Vault-compatible route answers.
pub(crate) fn vault_envelope(
    id: &vern_core::RequestId,
    mount_type: &str,
    data: serde_json::Value,
    auth: serde_json::Value,
) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::{json, Value};
    let mut body = serde_json::Map::new();
    body.insert("request_id".to_owned(), json!(id.as_str()));
    body.insert("lease_id".to_owned(), json!(""));
    body.insert("renewable".to_owned(), json!(false));
    body.insert("lease_duration".to_owned(), json!(0));
    body.insert("data".to_owned(), data);
    body.insert("wrap_info".to_owned(), Value::Null);
    body.insert("warnings".to_owned(), Value::Null);
    body.insert("auth".to_owned(), auth);
    body.insert("mount_type".to_owned(), json!(mount_type));
    body
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// Every route states its access for every method it answers: each
    /// (path, method) once, every authorized one with an action Cedar
    /// knows, and public access only for reads, which change nothing and
    /// so need no record.
    #[test]
    fn every_route_is_public_open_or_authorized_and_audited() {
        let mut seen = HashSet::new();
        for r in table() {
            assert!(!r.methods.is_empty(), "{} declares no method", r.path);
            for (method, access) in &r.methods {
                assert!(
                    seen.insert((r.path, *method)),
                    "{method} {} is declared twice",
                    r.path
                );
                match access {
                    Access::Public => assert!(
                        matches!(*method, "GET" | "HEAD"),
                        "{method} {} is public but not a read",
                        r.path
                    ),
                    Access::Open(action) => assert!(!action.is_empty()),
                    Access::Platform(action) | Access::Resource(action) | Access::Own(action) => {
                        assert!(
                            vern_policy::ACTIONS.contains(action),
                            "{method} {}: `{action}` is not a Cedar action",
                            r.path
                        )
                    }
                }
            }
        }
        // The probes and public documents, and nothing else, go unrecorded.
        let public: HashSet<&str> = table()
            .iter()
            .filter(|r| r.methods.iter().all(|(_, a)| *a == Access::Public))
            .map(|r| r.path)
            .collect();
        let expected: HashSet<&str> = [
            "/v1/sys/health",
            "/v1/sys/init",
            "/v1/sys/seal-status",
            "/oauth2/jwks",
            "/.well-known/oauth-authorization-server",
            "/v1/audit/public-key",
            "/v1/pki/bundle",
            "/v1/pki/ca.pem",
            "/v1/attest/keys",
            "/metrics",
        ]
        .into();
        assert_eq!(public, expected);
        // Secrets, clients, audit and decisions are decided per resource;
        // nothing that touches tenant data is open.
        for r in table() {
            if r.path.contains("{mount}/") && !r.path.ends_with("/config") {
                assert!(
                    r.methods
                        .iter()
                        .all(|(_, a)| matches!(a, Access::Resource(a) if a.starts_with("secret."))),
                    "{}",
                    r.path
                );
            }
        }
    }
}
