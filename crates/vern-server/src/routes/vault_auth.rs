//! Vault's auth methods over Vern's token authority. The logins (AppRole,
//! client certificate) give a Vern client a Vault token: each is an open
//! route that checks its own credential under the token endpoint's
//! lockouts and rate limits and answers Vault's `auth` block through
//! [`login_response`]. The token is a Vern access token (a JWT of
//! `vern-authority`) of the client that logged in, and nothing weaker than
//! the one the token endpoint would give that client. Vault's token
//! endpoints (`lookup-self`, `renew-self`, `revoke-self`, `lookup`) act on
//! such tokens.

use std::time::{Duration, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use vern_authority::{
    certificate_thumbprint, AccessClaims, AuthError, ClientCredentials, ClientKind, ClientRecord,
    IssuedToken, LoginGrant,
};
use vern_core::RequestId;
use vern_crypto::SecretBytes;

use super::clients::as_subject;
use crate::audit::{printable, AuditSlot};
use crate::auth::{presented_token, Caller};
use crate::authz::authorize_on;
use crate::client_addr::ClientAddr;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::listen::PeerCertificate;
use crate::state::AppState;

/// The action every login is recorded under: it issues a token, exactly as
/// the token endpoint does (an open route's own action, not a Cedar one).
pub(crate) const LOGIN_ACTION: &str = "token.issue";

/// Vault's response envelope around `data` and `auth`.
fn envelope(id: &RequestId, mount_type: &str, data: Value, auth: Value) -> Value {
    Value::Object(super::vault_envelope(id, mount_type, data, auth))
}

/// What Vault calls a token's policies: a service's granted scopes, an
/// operator's roles. Cedar decides on exactly these.
fn policies(kind: &ClientKind, scopes: &[String]) -> Vec<String> {
    match kind {
        ClientKind::Service { .. } => scopes.to_vec(),
        ClientKind::Operator { roles, .. } => roles.clone(),
        ClientKind::Node => Vec::new(),
    }
}

/// A token's metadata as Vault shows it (`metadata` of a login, `meta` of a
/// lookup): the client and where it lives.
fn metadata(client_id: &str, kind: &ClientKind) -> Map<String, Value> {
    let mut meta = Map::new();
    meta.insert("client_id".to_owned(), json!(client_id));
    for (name, value) in kind.claims() {
        if value.is_string() {
            meta.insert(name.to_owned(), value);
        }
    }
    meta
}

/// Vault's answer to a successful login: the issued Vern access token as
/// the `auth` block (`client_token`, `accessor` = the token's `jti`,
/// `policies`, `metadata`, `lease_duration`, not renewable, an orphan
/// service token whose entity is the client), kept out of caches, and
/// recorded as its HMAC in the request's audit record. Every login method
/// answers through this, once [`vern_authority::Authority::issue_for_login`]
/// has issued the token for `grant`.
pub(crate) fn login_response(
    id: &RequestId,
    audit: Option<&AuditSlot>,
    grant: &LoginGrant<'_>,
    issued: &IssuedToken,
) -> Response {
    let client = grant.client;
    if let Some(slot) = audit {
        slot.sensitive("issued_token", issued.access_token.as_bytes());
    }
    tracing::info!(client_id = %client.client_id, method = grant.method, "Vault login: access token issued.");
    let scopes: Vec<String> = issued
        .scope
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let policies = policies(&client.kind, &scopes);
    let auth = json!({
        "client_token": issued.access_token,
        "accessor": issued.jti,
        "policies": policies,
        "token_policies": policies,
        "metadata": metadata(&client.client_id, &client.kind),
        "lease_duration": issued.expires_in,
        "renewable": false,
        "entity_id": client.client_id,
        "token_type": "service",
        "orphan": true,
        "mfa_requirement": null,
        "num_uses": 0,
    });
    no_store(Json(envelope(id, grant.method, Value::Null, auth)).into_response())
}

/// A refused login in Vault's shape: a credential that does not
/// authenticate is Vault's 400 with `message`, never more specific, so that
/// ids cannot be probed; a client that may not get a token this way is a
/// 400 saying why; Vern's own faults keep their status.
pub(crate) fn login_refused(err: AuthError, message: &'static str) -> ApiError {
    match err {
        AuthError::InvalidClient => ApiError::bad_request(message),
        AuthError::UnauthorizedClient(m) => ApiError::bad_request(m),
        other => ApiError::from(other),
    }
}

/// Issues the token of a login whose client authenticated (its `attempt`
/// admitted by the guard beforehand), and answers it; the client's rate is
/// charged only once a token is issued, and a refusal answers `refusal`
/// as [`login_refused`] does.
pub(crate) async fn issue_login(
    state: &AppState,
    id: &RequestId,
    audit: Option<&AuditSlot>,
    attempt: &crate::limits::Attempt,
    grant: &LoginGrant<'_>,
    refusal: &'static str,
) -> Result<Response, ApiError> {
    let barrier = state.inner.seal.barrier()?;
    match state.inner.authority.issue_for_login(&barrier, grant).await {
        Ok(issued) => {
            state
                .inner
                .guard
                .settle_client(attempt, &grant.client.client_id, false)?;
            Ok(login_response(id, audit, grant, &issued))
        }
        Err(err) => {
            tracing::warn!(client_id = %grant.client.client_id, error = %err, "Vault login refused.");
            Err(login_refused(err, refusal))
        }
    }
}

/// The body of an AppRole login. No `Debug`: it holds the secret.
#[derive(Deserialize)]
pub(crate) struct AppRoleLogin {
    role_id: Option<String>,
    secret_id: Option<String>,
}

/// Vault's answer to an AppRole login that does not authenticate.
const APPROLE_REFUSED: &str = "invalid role or secret ID";

/// `POST /v1/auth/approle/login`: `role_id` is a Vern client's id and
/// `secret_id` its client secret, checked exactly as `client_secret_basic`
/// is at the token endpoint (HMAC compared in constant time, the same
/// lockouts and limits); a deleted client's secret no longer
/// authenticates.
pub(crate) async fn approle_login(
    State(state): State<AppState>,
    audit: Option<Extension<AuditSlot>>,
    source: ClientAddr,
    Extension(id): Extension<RequestId>,
    ApiJson(body): ApiJson<AppRoleLogin>,
) -> Result<Response, ApiError> {
    let audit = audit.as_ref().map(|Extension(slot)| slot);
    let role_id = body.role_id.filter(|r| !r.is_empty());
    // The client named is on record before anything is checked, so a
    // refused login is found under it too.
    if let Some(slot) = audit {
        slot.action(
            LOGIN_ACTION,
            role_id.as_ref().map(|r| format!("client:{}", printable(r))),
        );
    }
    let role_id = role_id.ok_or_else(|| ApiError::bad_request("missing role_id"))?;
    let secret = body
        .secret_id
        .filter(|s| !s.is_empty())
        .map(|s| SecretBytes::new(s.into_bytes()))
        .ok_or_else(|| ApiError::bad_request("missing secret_id"))?;
    if let Some(slot) = audit {
        slot.sensitive("secret_id", secret.expose());
    }
    let guard = &state.inner.guard;
    let attempt = guard.admit_client(source.source(), &role_id)?;
    let barrier = state.inner.seal.barrier()?;
    let creds = ClientCredentials::Secret {
        client_id: role_id.clone(),
        secret,
    };
    let client: ClientRecord = match state
        .inner
        .authority
        .authenticate_client(&barrier, &creds)
        .await
    {
        Ok(client) => client,
        Err(err) => {
            if matches!(err, AuthError::InvalidClient) {
                guard.settle_client(&attempt, &role_id, true)?;
            }
            tracing::warn!(error = %err, "AppRole login refused.");
            return Err(login_refused(err, APPROLE_REFUSED));
        }
    };
    let grant = LoginGrant {
        client: &client,
        method: "approle",
        certificate: None,
    };
    issue_login(&state, &id, audit, &attempt, &grant, APPROLE_REFUSED).await
}

/// The body of a certificate login: the client to log in as, when the
/// certificate names several.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct CertLogin {
    name: Option<String>,
}

/// Vault's answer to a certificate login that does not authenticate.
const CERT_REFUSED: &str = "invalid certificate or no client certificate supplied";

/// `POST /v1/auth/cert/login`: the client certificate the TLS connection
/// presented (verified against `--tls-client-ca` in the handshake) logs in
/// as the client registered with one of its DNS or URI SANs (a SPIFFE ID
/// among them), or as the client `name` if given, whose SAN it must carry.
/// The token is bound to that certificate (`cnf.x5t#S256`), as a token of
/// `tls_client_auth` is, so it works only on connections presenting it.
pub(crate) async fn cert_login(
    State(state): State<AppState>,
    audit: Option<Extension<AuditSlot>>,
    source: ClientAddr,
    peer: Option<Extension<PeerCertificate>>,
    Extension(id): Extension<RequestId>,
    ApiJson(body): ApiJson<CertLogin>,
) -> Result<Response, ApiError> {
    let audit = audit.as_ref().map(|Extension(slot)| slot);
    let name = body.name.filter(|n| !n.is_empty());
    let record = |resource: Option<String>| {
        if let Some(slot) = audit {
            slot.action(LOGIN_ACTION, resource);
        }
    };
    record(name.as_deref().map(|n| format!("client:{}", printable(n))));
    let Some(certificate) = peer.and_then(|Extension(p)| p.0) else {
        return Err(ApiError::bad_request(CERT_REFUSED));
    };
    // Until a client is found, what the login claims (the client named, or
    // else the certificate itself) is what is limited and recorded.
    let claimed = match &name {
        Some(n) => n.clone(),
        None => {
            let thumbprint = format!("certificate:{}", certificate_thumbprint(&certificate));
            record(Some(thumbprint.clone()));
            thumbprint
        }
    };
    let barrier = state.inner.seal.barrier()?;
    let found = state
        .inner
        .authority
        .certificate_client(&barrier, &certificate, name.as_deref())
        .await;
    let limited_as = match &found {
        Ok(client) => client.client_id.clone(),
        Err(_) => claimed,
    };
    let guard = &state.inner.guard;
    let attempt = guard.admit_client(source.source(), &limited_as)?;
    let client = match found {
        Ok(client) => client,
        Err(err) => {
            if matches!(err, AuthError::InvalidClient) {
                guard.settle_client(&attempt, &limited_as, true)?;
            }
            tracing::warn!(error = %err, "Certificate login refused.");
            return Err(login_refused(err, CERT_REFUSED));
        }
    };
    record(Some(format!("client:{}", client.client_id)));
    let grant = LoginGrant {
        client: &client,
        method: "cert",
        certificate: Some(&certificate),
    };
    issue_login(&state, &id, audit, &attempt, &grant, CERT_REFUSED).await
}

/// RFC 3339 of a Unix time in seconds.
fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// Vault's description of a Vern access token (`data` of a lookup). `id` is
/// the token exactly as the caller presented it, and nothing else secret is
/// in it: `accessor` is the token's `jti`. A Vern token is never renewed,
/// so `explicit_max_ttl` is its whole life.
fn token_data(presented: &str, claims: &AccessClaims, now: u64) -> Value {
    let method = claims.auth_method.as_deref();
    let life = claims.exp.saturating_sub(claims.iat);
    json!({
        "accessor": claims.jti,
        "creation_time": claims.iat,
        "creation_ttl": life,
        "display_name": method.unwrap_or("oauth2"),
        "entity_id": claims.client_id,
        "expire_time": rfc3339(claims.exp),
        "explicit_max_ttl": life,
        "id": presented,
        "issue_time": rfc3339(claims.iat),
        "meta": metadata(&claims.client_id, &claims.kind),
        "num_uses": 0,
        "orphan": true,
        "path": method.map_or_else(|| "oauth2/token".to_owned(), |m| format!("auth/{m}/login")),
        "policies": policies(&claims.kind, &claims.scopes),
        "renewable": false,
        "ttl": claims.exp.saturating_sub(now),
        "type": "service",
    })
}

/// Vault's description of the root token of init: no expiry, the `root`
/// policy, no accessor (its only handle is the token itself).
fn root_data(presented: &str) -> Value {
    json!({
        "accessor": "",
        "creation_time": null,
        "creation_ttl": 0,
        "display_name": "root",
        "entity_id": "",
        "expire_time": null,
        "explicit_max_ttl": 0,
        "id": presented,
        "issue_time": null,
        "meta": null,
        "num_uses": 0,
        "orphan": true,
        "path": "auth/token/root",
        "policies": ["root"],
        "renewable": false,
        "ttl": 0,
        "type": "service",
    })
}

/// `GET|POST /v1/auth/token/lookup-self`: the presented token, as Vault
/// describes it. The authorization point has authenticated it and decided
/// `token.lookup-self` on the caller itself.
pub(crate) async fn lookup_self(
    caller: Caller,
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
) -> Response {
    let presented = presented_token(&headers).unwrap_or_default();
    let data = match &caller.claims {
        Some(claims) => token_data(&presented, claims, caller.time),
        None => root_data(&presented),
    };
    no_store(Json(envelope(&id, "token", data, Value::Null)).into_response())
}

/// `POST /v1/auth/token/renew-self`: Vern access tokens carry a fixed
/// `exp` and are never renewed (a new one comes from a new login), so this
/// answers as Vault does for a token that is not renewable.
pub(crate) async fn renew_self() -> ApiError {
    ApiError::bad_request("lease is not renewable")
}

/// `POST /v1/auth/token/revoke-self`: revokes the presented token in the
/// revocation store `/oauth2/revoke` writes to, so it is refused everywhere
/// at once; 204 as Vault answers. The root token of init is the
/// break-glass credential and is not revoked this way.
pub(crate) async fn revoke_self(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(claims) = caller.claims.as_deref() else {
        return Err(ApiError::bad_request(
            "the root token of init cannot be revoked: it is Vern's break-glass credential",
        ));
    };
    let presented = presented_token(&headers).unwrap_or_default();
    let barrier = state.inner.seal.barrier()?;
    state
        .inner
        .authority
        .revoke(&barrier, &presented, |c| c.jti == claims.jti)
        .await?;
    state
        .inner
        .nats
        .revoke(crate::nats::Revocation::token(&presented));
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The body of a token lookup. No `Debug`: it holds a token.
#[derive(Deserialize)]
pub(crate) struct LookupBody {
    token: Option<String>,
}

/// `POST /v1/auth/token/lookup`: another principal's Vern access token,
/// for callers allowed `token.lookup` on the principal it was issued to (a
/// tenant operator only its own tenant's; a service no one's). Answers
/// Vault's 403 `bad token` for a token that is not a live Vern access
/// token, and echoes nothing secret but the token the caller sent.
pub(crate) async fn lookup(
    State(state): State<AppState>,
    caller: Caller,
    Extension(id): Extension<RequestId>,
    ApiJson(body): ApiJson<LookupBody>,
) -> Result<Response, ApiError> {
    let token = body
        .token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing token"))?;
    if let Some(slot) = &caller.audit {
        slot.sensitive("looked_up_token", token.as_bytes());
    }
    let barrier = state.inner.seal.barrier()?;
    let claims = state
        .inner
        .authority
        .introspect(&barrier, &token)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::FORBIDDEN, "bad token"))?;
    let subject = as_subject(&claims.client_id, &claims.kind, &claims.scopes)
        .ok_or_else(|| ApiError::new(StatusCode::FORBIDDEN, "bad token"))?;
    authorize_on(&caller, subject.as_resource())?;
    let data = token_data(&token, &claims, caller.time);
    Ok(no_store(
        Json(envelope(&id, "token", data, Value::Null)).into_response(),
    ))
}

/// Keeps a response that holds a token out of caches.
fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
