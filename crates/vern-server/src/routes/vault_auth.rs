//! Vault's auth methods over Vern's token authority: the logins that give a
//! Vern client a Vault token (AppRole), each an open route that checks its
//! own credential under the token endpoint's lockouts and rate limits and
//! answers Vault's `auth` block through [`login_response`]. The token a
//! login returns is a Vern access token (a JWT of `vern-authority`), bound
//! to the client that logged in, and nothing weaker than the one the token
//! endpoint would give that client.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use vern_authority::{
    AuthError, ClientCredentials, ClientKind, ClientRecord, IssuedToken, LoginGrant,
};
use vern_core::RequestId;
use vern_crypto::SecretBytes;

use crate::audit::{printable, AuditSlot};
use crate::client_addr::ClientAddr;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;

/// The action every login is recorded under: it issues a token, exactly as
/// the token endpoint does (an open route's own action, not a Cedar one).
pub(crate) const LOGIN_ACTION: &str = "token.issue";

/// Vault's response envelope around `data` and `auth`.
fn envelope(id: &RequestId, mount_type: &str, data: Value, auth: Value) -> Value {
    json!({
        "request_id": id.as_str(),
        "lease_id": "",
        "renewable": false,
        "lease_duration": 0,
        "data": data,
        "wrap_info": null,
        "warnings": null,
        "auth": auth,
        "mount_type": mount_type,
    })
}

/// What Vault calls a token's policies: a service's granted scopes, an
/// operator's roles. Cedar decides on exactly these.
fn policies(kind: &ClientKind, scopes: &[String]) -> Vec<String> {
    match kind {
        ClientKind::Service { .. } => scopes.to_vec(),
        ClientKind::Operator { roles, .. } => roles.clone(),
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
    let mut resp = Json(envelope(id, grant.method, Value::Null, auth)).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
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
    let role_id = body
        .role_id
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing role_id"))?;
    let secret = body
        .secret_id
        .filter(|s| !s.is_empty())
        .map(|s| SecretBytes::new(s.into_bytes()))
        .ok_or_else(|| ApiError::bad_request("missing secret_id"))?;
    if let Some(slot) = audit {
        slot.action(
            LOGIN_ACTION,
            Some(format!("client:{}", printable(&role_id))),
        );
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
