//! OAuth2 endpoints (RFC 6749 client credentials, RFC 7523, RFC 7662,
//! RFC 7009, RFC 8414, RFC 9449) mapped onto `vern-authority`. Their errors
//! take OAuth2's shape, `{"error": …, "error_description": …}`.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use base64::Engine as _;
use serde_json::{json, Value};
use vern_authority::{
    AccessClaims, AuthError, ClientCredentials, ClientKind, DpopCheck, NonceRule, TokenRequest,
    JWT_BEARER_ASSERTION,
};
use vern_crypto::SecretBytes;

use crate::audit::{printable, AuditSlot};
use crate::client_addr::ClientAddr;
use crate::error::ApiError;
use crate::limits::Refused;
use crate::listen::PeerCertificate;
use crate::state::AppState;

/// An OAuth2 error response.
pub(crate) struct OAuthError {
    status: StatusCode,
    code: &'static str,
    description: String,
    nonce: Option<String>,
    basic_challenge: bool,
    retry_after: Option<u64>,
}

impl OAuthError {
    fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            code,
            description: description.into(),
            nonce: None,
            basic_challenge: false,
            retry_after: None,
        }
    }

    fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.code, "error_description": self.description });
        let mut resp = (self.status, Json(body)).into_response();
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(nonce) = self.nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
            h.insert("dpop-nonce", nonce);
        }
        if let Some(secs) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.basic_challenge {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"vern\""),
            );
        }
        resp
    }
}

impl From<ApiError> for OAuthError {
    fn from(e: ApiError) -> Self {
        // Sealed, storage failure: keep the API's status and say so.
        let resp = e.into_response();
        Self::new(
            resp.status(),
            "server_error",
            "the server cannot handle this request now",
        )
    }
}

fn from_auth(err: AuthError, basic: bool) -> OAuthError {
    match err {
        AuthError::InvalidClient => {
            let mut e = OAuthError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication failed",
            );
            e.basic_challenge = basic;
            e
        }
        AuthError::InvalidScope(_) => {
            OAuthError::new(StatusCode::BAD_REQUEST, "invalid_scope", err.to_string())
        }
        AuthError::UnauthorizedClient(_) => OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            err.to_string(),
        ),
        AuthError::UseDpopNonce => {
            OAuthError::new(StatusCode::BAD_REQUEST, "use_dpop_nonce", err.to_string())
        }
        AuthError::Dpop(_) => OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_dpop_proof",
            err.to_string(),
        ),
        AuthError::Seal(e) => ApiError::from(e).into(),
        // Vern's own faults are a 500, never the caller's invalid_request.
        AuthError::Internal(_)
        | AuthError::BadKey(_)
        | AuthError::JwksUnavailable(_)
        | AuthError::Conflict(_) => ApiError::from(err).into(),
        other => OAuthError::invalid_request(other.to_string()),
    }
}

/// Parses an `application/x-www-form-urlencoded` body; a parameter given
/// twice is refused (RFC 6749 §3.2).
fn form(headers: &HeaderMap, body: &Bytes) -> Result<HashMap<String, String>, OAuthError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ct.split(';').next().map(str::trim) != Some("application/x-www-form-urlencoded") {
        return Err(OAuthError::invalid_request(
            "send the parameters as application/x-www-form-urlencoded",
        ));
    }
    let mut out = HashMap::new();
    for (k, v) in form_urlencoded::parse(body) {
        if out.insert(k.clone().into_owned(), v.into_owned()).is_some() {
            return Err(OAuthError::invalid_request(format!(
                "parameter `{k}` is given more than once"
            )));
        }
    }
    Ok(out)
}

/// Client authentication from the Authorization header or the form.
fn credentials(
    headers: &HeaderMap,
    form: &HashMap<String, String>,
    peer: Option<&PeerCertificate>,
) -> Result<(ClientCredentials, bool), OAuthError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(s, _)| s.eq_ignore_ascii_case("basic"))
        .map(|(_, c)| c.trim().to_owned());
    let has_post = form.contains_key("client_secret");
    let has_assertion = form.contains_key("client_assertion");
    if [basic.is_some(), has_post, has_assertion]
        .iter()
        .filter(|x| **x)
        .count()
        > 1
    {
        return Err(OAuthError::invalid_request(
            "use exactly one client authentication method",
        ));
    }
    if let Some(encoded) = basic {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| OAuthError::invalid_request("the Basic credentials are not base64"))?;
        let decoded = zeroize::Zeroizing::new(
            String::from_utf8(decoded)
                .map_err(|_| OAuthError::invalid_request("the Basic credentials are not UTF-8"))?,
        );
        let (id, secret) = decoded.split_once(':').ok_or_else(|| {
            OAuthError::invalid_request("the Basic credentials need client_id:client_secret")
        })?;
        // RFC 6749 §2.3.1: both parts are form-urlencoded.
        let unescape = |s: &str| -> String {
            form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        return Ok((
            ClientCredentials::Secret {
                client_id: unescape(id),
                secret: SecretBytes::new(unescape(secret).into_bytes()),
            },
            true,
        ));
    }
    if has_assertion {
        if form.get("client_assertion_type").map(String::as_str) != Some(JWT_BEARER_ASSERTION) {
            return Err(OAuthError::invalid_request(format!(
                "client_assertion_type must be {JWT_BEARER_ASSERTION}"
            )));
        }
        return Ok((
            ClientCredentials::Assertion {
                client_id: form.get("client_id").cloned(),
                assertion: form.get("client_assertion").cloned().unwrap_or_default(),
            },
            false,
        ));
    }
    match (form.get("client_id"), form.get("client_secret")) {
        (Some(id), Some(secret)) => Ok((
            ClientCredentials::Secret {
                client_id: id.clone(),
                secret: SecretBytes::new(secret.clone().into_bytes()),
            },
            false,
        )),
        // RFC 8705 tls_client_auth: the connection's verified certificate.
        (Some(id), None) if peer.and_then(|p| p.0.as_ref()).is_some() => Ok((
            ClientCredentials::Tls {
                client_id: id.clone(),
                certificate: peer
                    .and_then(|p| p.0.as_deref())
                    .cloned()
                    .unwrap_or_default(),
            },
            false,
        )),
        _ => {
            let mut e = OAuthError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication is required",
            );
            e.basic_challenge = true;
            Err(e)
        }
    }
}

fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// A limit refused the request: 429 with `Retry-After`.
impl From<Refused> for OAuthError {
    fn from(refused: Refused) -> Self {
        let secs = crate::limits::retry_after_secs(refused.wait);
        let mut e = OAuthError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "temporarily_unavailable",
            format!("too many requests; retry after {secs} s"),
        );
        e.retry_after = Some(secs);
        e
    }
}

/// The client id a credential names, for limits and lockouts.
fn claimed_client(creds: &ClientCredentials) -> String {
    match creds {
        ClientCredentials::Secret { client_id, .. } | ClientCredentials::Tls { client_id, .. } => {
            client_id.clone()
        }
        ClientCredentials::Assertion {
            client_id: Some(id),
            ..
        } => id.clone(),
        ClientCredentials::Assertion { assertion, .. } => {
            vern_authority::jws::Unverified::parse(assertion)
                .ok()
                .and_then(|j| {
                    j.claims
                        .get("iss")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .unwrap_or_default()
        }
    }
}

/// The client authentication method of `creds`, as RFC 8414 names it.
fn auth_method(creds: &ClientCredentials, basic: bool) -> &'static str {
    match creds {
        ClientCredentials::Secret { .. } if basic => "client_secret_basic",
        ClientCredentials::Secret { .. } => "client_secret_post",
        ClientCredentials::Assertion { .. } => "private_key_jwt",
        ClientCredentials::Tls { .. } => "tls_client_auth",
    }
}

/// A node's certificate login must present its own X.509-SVID from Vern's
/// CA: the listener may also trust a `--tls-client-ca` bundle, whose
/// certificates could carry any URI SAN. Other credentials pass.
async fn node_certificate_is_own_svid(
    state: &AppState,
    barrier: &vern_seal::Barrier,
    creds: &ClientCredentials,
) -> Result<bool, OAuthError> {
    let ClientCredentials::Tls {
        client_id,
        certificate,
    } = creds
    else {
        return Ok(true);
    };
    if !client_id.starts_with("node.") {
        return Ok(true);
    }
    let pki = &state.inner.pki;
    let Some(expected) = vern_authority::node_spiffe_id(&pki.config().trust_domain, client_id)
        .and_then(|id| vern_pki::SpiffeId::parse(&id).ok())
    else {
        return Ok(false);
    };
    pki.is_own_svid(barrier, certificate, &expected)
        .await
        .map_err(|e| OAuthError::from(ApiError::from(e)))
}

/// `POST /oauth2/token`.
pub(crate) async fn token(
    State(state): State<AppState>,
    audit: Option<Extension<AuditSlot>>,
    source: ClientAddr,
    peer: Option<Extension<PeerCertificate>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let form = form(&headers, &body)?;
    match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {}
        Some(_) => {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only client_credentials is supported",
            ))
        }
        None => return Err(OAuthError::invalid_request("grant_type is missing")),
    }
    let (creds, basic) = credentials(&headers, &form, peer.as_ref().map(|Extension(p)| p))?;
    let claimed = claimed_client(&creds);
    if let Some(Extension(slot)) = &audit {
        slot.action(
            "token.issue",
            Some(format!("client:{}", printable(&claimed))),
        );
        match &creds {
            ClientCredentials::Secret { secret, .. } => {
                slot.sensitive("client_secret", secret.expose());
            }
            ClientCredentials::Assertion { assertion, .. } => {
                slot.sensitive("client_assertion", assertion.as_bytes());
            }
            ClientCredentials::Tls { .. } => {}
        }
        slot.detail("auth_method", auth_method(&creds, basic));
    }
    // The (client, source) lockout and the client's own rate, before its
    // credential is checked.
    let attempt = state.inner.guard.admit_client(source.source(), &claimed)?;
    let barrier = state.inner.seal.barrier().map_err(ApiError::from)?;
    if !node_certificate_is_own_svid(&state, &barrier, &creds).await? {
        state.inner.guard.settle_client(&attempt, &claimed, true)?;
        return Err(from_auth(AuthError::InvalidClient, basic));
    }
    let authority = &state.inner.authority;
    let proofs: Vec<&str> = headers
        .get_all("dpop")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let url = authority.config().token_endpoint();
    let nonce_rule = authority.config().token_nonce;
    let dpop = (!proofs.is_empty()).then(|| DpopCheck {
        proofs: &proofs,
        method: Method::POST.as_str(),
        url: &url,
        access_token: None,
        expected_jkt: None,
        nonce: nonce_rule,
    });
    let req = TokenRequest {
        credentials: creds,
        scope: form.get("scope").map(String::as_str),
        dpop,
    };
    let result = authority.issue(&barrier, &req).await;
    match &result {
        Ok(_) => state.inner.guard.settle_client(&attempt, &claimed, false)?,
        Err(AuthError::InvalidClient) => {
            state.inner.guard.settle_client(&attempt, &claimed, true)?
        }
        // Refused after authenticating (scope, DPoP), or not decided
        // (sealed, storage): neither a failure nor an issued token.
        Err(_) => {}
    }
    match result {
        Ok(issued) => {
            tracing::info!(token_type = issued.token_type, "Access token issued.");
            if let Some(Extension(slot)) = &audit {
                slot.sensitive("issued_token", issued.access_token.as_bytes());
            }
            let mut resp = no_store(
                Json(json!({
                    "access_token": issued.access_token,
                    "token_type": issued.token_type,
                    "expires_in": issued.expires_in,
                    "scope": issued.scope,
                }))
                .into_response(),
            );
            if nonce_rule == NonceRule::Required {
                if let Ok(n) = authority.dpop_nonce(&barrier).await {
                    if let Ok(v) = HeaderValue::from_str(&n) {
                        resp.headers_mut().insert("dpop-nonce", v);
                    }
                }
            }
            Ok(resp)
        }
        Err(err) => {
            tracing::warn!(error = %err, "Token request refused.");
            let needs_nonce = matches!(err, AuthError::UseDpopNonce);
            let mut e = from_auth(err, basic);
            if needs_nonce {
                e.nonce = authority.dpop_nonce(&barrier).await.ok();
            }
            Err(e)
        }
    }
}

/// `GET /oauth2/jwks`.
pub(crate) async fn jwks(State(state): State<AppState>) -> Result<Response, ApiError> {
    let barrier = state.inner.seal.barrier()?;
    let set = state.inner.authority.jwks(&barrier).await?;
    Ok(Json(set).into_response())
}

/// `GET /.well-known/oauth-authorization-server`.
pub(crate) async fn metadata(State(state): State<AppState>) -> Response {
    Json(state.inner.authority.metadata()).into_response()
}

fn claims_json(c: &AccessClaims, issuer: &str) -> Value {
    let mut v = serde_json::Map::new();
    let mut member = |name: &str, value: Value| {
        v.insert(name.to_owned(), value);
    };
    member("active", json!(true));
    member("client_id", json!(c.client_id));
    member("sub", json!(c.client_id));
    member("scope", json!(c.scopes.join(" ")));
    member(
        "token_type",
        json!(if c.jkt.is_some() { "DPoP" } else { "Bearer" }),
    );
    member("exp", json!(c.exp));
    member("iat", json!(c.iat));
    member("jti", json!(c.jti));
    member("iss", json!(issuer));
    for (name, value) in c.kind.claims() {
        member(name, value);
    }
    let mut cnf = serde_json::Map::new();
    if let Some(jkt) = &c.jkt {
        cnf.insert("jkt".to_owned(), json!(jkt));
    }
    if let Some(x5t) = &c.x5t {
        cnf.insert("x5t#S256".to_owned(), json!(x5t));
    }
    if !cnf.is_empty() {
        member("cnf", Value::Object(cnf));
    }
    Value::Object(v)
}

/// `POST /oauth2/introspect`: for authenticated clients. A service client
/// learns about tokens of its own tenant only; anything else is inactive.
pub(crate) async fn introspect(
    State(state): State<AppState>,
    audit: Option<Extension<AuditSlot>>,
    source: ClientAddr,
    peer: Option<Extension<PeerCertificate>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let call = client_call(&state, source, peer, &headers, &body).await?;
    note_client_call(audit.as_ref(), "token.introspect", &call);
    let authority = &state.inner.authority;
    let claims = authority
        .introspect(&call.barrier, &call.token)
        .await
        .map_err(|e| from_auth(e, call.basic))?;
    let visible = claims.filter(|c| reaches(&call.caller.kind, &c.kind));
    let body = match visible {
        Some(c) => claims_json(&c, &authority.config().issuer),
        None => json!({ "active": false }),
    };
    Ok(no_store(Json(body).into_response()))
}

/// `POST /oauth2/revoke`: a service revokes its own tokens, a tenant
/// operator its tenant's, a platform operator any. Takes effect on Vern's
/// API at once.
pub(crate) async fn revoke(
    State(state): State<AppState>,
    audit: Option<Extension<AuditSlot>>,
    source: ClientAddr,
    peer: Option<Extension<PeerCertificate>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let call = client_call(&state, source, peer, &headers, &body).await?;
    note_client_call(audit.as_ref(), "token.revoke", &call);
    let caller = &call.caller;
    let may_revoke = |c: &AccessClaims| match caller.kind {
        ClientKind::Service { .. } => c.client_id == caller.client_id,
        ClientKind::Operator { .. } => reaches(&caller.kind, &c.kind),
        ClientKind::Node => c.client_id == caller.client_id,
    };
    state
        .inner
        .authority
        .revoke(&call.barrier, &call.token, may_revoke)
        .await
        .map_err(|e| from_auth(e, call.basic))?;
    // Live NATS connections opened with the token end too.
    state
        .inner
        .nats
        .revoke(crate::nats::Revocation::token(&call.token));
    Ok(no_store(StatusCode::OK.into_response()))
}

/// Whether a client may see (introspect) or, as an operator, revoke a
/// token of `token`'s client: a platform operator any, a tenant operator
/// or a service only its own tenant's.
fn reaches(caller: &ClientKind, token: &ClientKind) -> bool {
    let tenant = |k: &ClientKind| match k {
        ClientKind::Service { tenant, .. } => Some(tenant.clone()),
        ClientKind::Operator { tenant, .. } => tenant.clone(),
        ClientKind::Node => None,
    };
    match (caller, tenant(caller)) {
        (ClientKind::Operator { .. }, None) => true,
        (_, mine) => mine.is_some() && mine == tenant(token),
    }
}

/// Records the client and the (HMAC of the) token it asks about.
fn note_client_call(audit: Option<&Extension<AuditSlot>>, action: &str, call: &ClientCall) {
    if let Some(Extension(slot)) = audit {
        slot.action(action, Some(format!("client:{}", call.caller.client_id)));
        slot.sensitive("token", call.token.as_bytes());
    }
}

/// An authenticated client's request about a `token` (introspection,
/// revocation).
struct ClientCall {
    caller: vern_authority::ClientRecord,
    token: String,
    barrier: std::sync::Arc<vern_seal::Barrier>,
    basic: bool,
}

/// Parses and authenticates a client request about a token, under the
/// same limits and lockouts as the token endpoint.
async fn client_call(
    state: &AppState,
    source: ClientAddr,
    peer: Option<Extension<PeerCertificate>>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<ClientCall, OAuthError> {
    let form = form(headers, body)?;
    let (creds, basic) = credentials(headers, &form, peer.as_ref().map(|Extension(p)| p))?;
    let barrier = state.inner.seal.barrier().map_err(ApiError::from)?;
    let claimed = claimed_client(&creds);
    let attempt = state.inner.guard.admit_client(source.source(), &claimed)?;
    let result = state
        .inner
        .authority
        .authenticate_client(&barrier, &creds)
        .await;
    match &result {
        Ok(_) => state.inner.guard.settle_client(&attempt, &claimed, false)?,
        Err(AuthError::InvalidClient) => {
            state.inner.guard.settle_client(&attempt, &claimed, true)?
        }
        Err(_) => {}
    }
    let caller = result.map_err(|e| from_auth(e, basic))?;
    let token = form
        .get("token")
        .cloned()
        .ok_or_else(|| OAuthError::invalid_request("token is missing"))?;
    Ok(ClientCall {
        caller,
        token,
        barrier,
        basic,
    })
}
