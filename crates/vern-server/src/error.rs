//! The one place where errors become HTTP responses. Bodies take Vault's
//! shape, `{"errors":["…"]}`; internal details (SQL, paths, key material)
//! are logged, never returned.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use vern_attest::AttestError;
use vern_authority::{AuthError, JwtAuthError};
use vern_pki::PkiError;
use vern_seal::SealError;
use vern_secrets::KvError;

/// An error answer.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    errors: Vec<String>,
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            errors: vec![message.into()],
            headers: Vec::new(),
        }
    }

    /// 429 with `Retry-After`.
    pub(crate) fn too_many(wait: std::time::Duration) -> Self {
        let secs = crate::limits::retry_after_secs(wait);
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many requests; retry after {secs} s"),
        )
        .with_header(header::RETRY_AFTER, &secs.to_string())
    }

    pub(crate) fn status_code(&self) -> StatusCode {
        self.status
    }

    /// The error's text, to be wrapped in a larger message.
    pub(crate) fn message(&self) -> String {
        self.errors.join("; ")
    }

    /// Adds a response header (e.g. `WWW-Authenticate`).
    pub(crate) fn with_header(mut self, name: header::HeaderName, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((name, v));
        }
        self
    }

    /// Vault's answer for a path with nothing at it: 404 with no message.
    /// Also the answer for a path the caller may not see, so that the two
    /// cannot be told apart.
    pub(crate) fn not_found() -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            errors: Vec::new(),
            headers: Vec::new(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, "permission denied")
    }

    /// A refused token as Vault refuses it on its token endpoints: a 401
    /// becomes 403 `permission denied`, followed by what was wrong, and
    /// loses its `WWW-Authenticate` challenge (a 403 has none). Anything
    /// else (a missing token, a limit, a sealed server) is kept.
    pub(crate) fn permission_denied(self) -> Self {
        if self.status != StatusCode::UNAUTHORIZED {
            return self;
        }
        let mut errors = vec!["permission denied".to_owned()];
        errors.extend(self.errors);
        Self {
            status: StatusCode::FORBIDDEN,
            errors,
            headers: Vec::new(),
        }
    }

    pub(crate) fn internal(err: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %err, "Request failed with an internal error.");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; the server log has details under this request's X-Request-Id",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "errors": self.errors }).to_string();
        let mut resp = (self.status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (name, value) in self.headers {
            resp.headers_mut().append(name, value);
        }
        resp
    }
}

/// A limit refused the request: 429 with `Retry-After`.
impl From<crate::limits::Refused> for ApiError {
    fn from(refused: crate::limits::Refused) -> Self {
        Self::too_many(refused.wait)
    }
}

impl From<SealError> for ApiError {
    fn from(err: SealError) -> Self {
        match err {
            SealError::Sealed => Self::new(StatusCode::SERVICE_UNAVAILABLE, "Vern is sealed"),
            SealError::NotInitialized => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Vern is not initialized; run `vern operator init`",
            ),
            SealError::AlreadyInitialized => Self::bad_request("Vern is already initialized"),
            SealError::InvalidParameters(_) | SealError::BadShare(_) | SealError::WrongShares => {
                Self::bad_request(err.to_string())
            }
            SealError::Reserved(_)
            | SealError::Corrupt(_)
            | SealError::Conflict { .. }
            | SealError::BadKey { .. }
            | SealError::Store(_) => Self::internal(&err),
            _ => Self::internal(&err),
        }
    }
}

/// Bad input is a 400 naming what is wrong (a digest, an envelope, a
/// signature, a key); a write that would rewrite stored evidence, or lost
/// a race, a 409.
impl From<AttestError> for ApiError {
    fn from(err: AttestError) -> Self {
        match err {
            AttestError::BadDigest(_)
            | AttestError::Malformed(_)
            | AttestError::SubjectMismatch(_)
            | AttestError::UnknownKey(_)
            | AttestError::BadSignature(_)
            | AttestError::KeyNotValid { .. }
            | AttestError::BadKey(_)
            | AttestError::BadGate(_) => Self::bad_request(err.to_string()),
            AttestError::Immutable(_) | AttestError::Conflict(_) => {
                Self::new(StatusCode::CONFLICT, err.to_string())
            }
            AttestError::Seal(e) => e.into(),
            AttestError::Internal(_) => Self::internal(&err),
        }
    }
}

impl From<vern_nats::NatsError> for ApiError {
    fn from(err: vern_nats::NatsError) -> Self {
        use vern_nats::NatsError;
        match err {
            NatsError::BadSubject(_)
            | NatsError::BadJwt(_)
            | NatsError::BadRequest(_)
            | NatsError::BadPath(_) => Self::bad_request(err.to_string()),
            NatsError::Seal(e) => e.into(),
            NatsError::Internal(_) => Self::internal(&err),
        }
    }
}

impl From<KvError> for ApiError {
    fn from(err: KvError) -> Self {
        match err {
            KvError::NotFound => Self::not_found(),
            KvError::Path(_)
            | KvError::CasMismatch
            | KvError::CasRequired
            | KvError::InvalidRequest(_) => Self::bad_request(err.to_string()),
            KvError::VersionsExhausted => Self::new(StatusCode::CONFLICT, err.to_string()),
            KvError::BadMount(_) | KvError::Internal(_) => Self::internal(&err),
            KvError::Contention => Self::new(StatusCode::SERVICE_UNAVAILABLE, err.to_string()),
            KvError::Seal(e) => e.into(),
        }
    }
}

/// Errors of token verification on Vern's API: 401 with a
/// `WWW-Authenticate` challenge naming the scheme and the problem. Client
/// management errors are 400 (the caller's declaration), 404 or 409; Vern's
/// own faults are 500 (or the seal's status), never a 4xx.
impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        let (scheme, code) = match &err {
            AuthError::Dpop(_) | AuthError::UseDpopNonce => ("DPoP", "invalid_dpop_proof"),
            AuthError::Malformed(_)
            | AuthError::Algorithm(_)
            | AuthError::Signature
            | AuthError::UnknownKey(_)
            | AuthError::Claim(_)
            | AuthError::Expired
            | AuthError::NotYetValid
            | AuthError::Revoked
            | AuthError::ClientChanged
            | AuthError::InvalidClient
            | AuthError::InvalidScope(_)
            | AuthError::UnauthorizedClient(_) => ("Bearer", "invalid_token"),
            AuthError::InvalidClientSpec(_) | AuthError::Exists(_) => {
                return Self::bad_request(err.to_string())
            }
            AuthError::NoClient(_) => return Self::not_found(),
            AuthError::Forbidden(m) => return Self::new(StatusCode::FORBIDDEN, m.clone()),
            AuthError::Conflict(_) => return Self::new(StatusCode::CONFLICT, err.to_string()),
            AuthError::BadKey(_) | AuthError::JwksUnavailable(_) | AuthError::Internal(_) => {
                return Self::internal(&err)
            }
            AuthError::Seal(_) => return Self::from_seal_in_auth(err),
        };
        let algs = vern_authority::jwk::ACCEPTED_ALGS.join(" ");
        let challenge = format!("{scheme} error=\"{code}\", algs=\"{algs}\"");
        Self::new(StatusCode::UNAUTHORIZED, err.to_string())
            .with_header(header::WWW_AUTHENTICATE, &challenge)
    }
}

/// Errors of the JWT auth method. A refused login is a 400 with the
/// reason, as Vault answers; a role that does not exist is a 404 on the
/// role endpoints (the login endpoint answers it as a refusal); issuer
/// keys that cannot be fetched are a 502, neither the caller's fault nor
/// Vern's; Vern's own faults are 500.
impl From<JwtAuthError> for ApiError {
    fn from(err: JwtAuthError) -> Self {
        match err {
            JwtAuthError::Refused(_) | JwtAuthError::InvalidRole(_) => {
                Self::bad_request(err.to_string())
            }
            JwtAuthError::NoRole(_) => Self::not_found(),
            JwtAuthError::KeysUnavailable(_) => Self::new(StatusCode::BAD_GATEWAY, err.to_string()),
            JwtAuthError::Forbidden(m) => Self::new(StatusCode::FORBIDDEN, m),
            JwtAuthError::Conflict(_) => Self::new(StatusCode::CONFLICT, err.to_string()),
            JwtAuthError::Internal(_) => Self::internal(&err),
            JwtAuthError::Seal(e) => e.into(),
        }
    }
}

/// Errors of the CA. A refused request (a CSR, a lifetime, DNS names, an
/// audience, a CA to import, a caller without a SPIFFE ID) is a 400 saying
/// why; a CA that cannot sign now is a 503 an operator fixes by rotating;
/// colliding rotations are a 409; Vern's own faults are 500.
impl From<PkiError> for ApiError {
    fn from(err: PkiError) -> Self {
        match err {
            PkiError::BadCsr(_)
            | PkiError::InvalidRequest(_)
            | PkiError::InvalidCa(_)
            | PkiError::NoIdentity(_) => Self::bad_request(err.to_string()),
            PkiError::Unavailable(_) => Self::new(StatusCode::SERVICE_UNAVAILABLE, err.to_string()),
            PkiError::Conflict(_) => Self::new(StatusCode::CONFLICT, err.to_string()),
            PkiError::Internal(_) => Self::internal(&err),
            PkiError::Seal(e) => e.into(),
        }
    }
}

impl ApiError {
    fn from_seal_in_auth(err: AuthError) -> Self {
        match err {
            AuthError::Seal(e) => e.into(),
            other => Self::internal(&other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 4xx always means the caller's fault: every kind of authority
    /// failure lands in its family's status, internal faults in 500.
    #[test]
    fn authority_errors_map_by_whose_fault_they_are() {
        let status = |e: AuthError| ApiError::from(e).status_code();
        for caller in [
            AuthError::Malformed("x".into()),
            AuthError::Signature,
            AuthError::Expired,
            AuthError::Revoked,
            AuthError::ClientChanged,
            AuthError::Dpop("x".into()),
        ] {
            assert_eq!(status(caller), StatusCode::UNAUTHORIZED);
        }
        assert_eq!(
            status(AuthError::InvalidClientSpec("bad scope".into())),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(AuthError::Exists("op.a".into())),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(AuthError::NoClient("op.a".into())),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(AuthError::Conflict("again".into())),
            StatusCode::CONFLICT
        );
        for internal in [
            AuthError::Internal("no signing key is active".into()),
            AuthError::BadKey("invalid Ed25519 key".into()),
            AuthError::JwksUnavailable("down".into()),
        ] {
            assert_eq!(status(internal), StatusCode::INTERNAL_SERVER_ERROR);
        }
        assert_eq!(
            status(AuthError::Seal(SealError::Sealed)),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    /// So do the CA's.
    #[test]
    fn pki_errors_map_by_whose_fault_they_are() {
        let status = |e: PkiError| ApiError::from(e).status_code();
        for (err, want) in [
            (PkiError::BadCsr("x".into()), StatusCode::BAD_REQUEST),
            (
                PkiError::InvalidRequest("x".into()),
                StatusCode::BAD_REQUEST,
            ),
            (PkiError::InvalidCa("x".into()), StatusCode::BAD_REQUEST),
            (
                PkiError::NoIdentity(vern_pki::IdentityError::Root),
                StatusCode::BAD_REQUEST,
            ),
            (
                PkiError::Unavailable("x".into()),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (PkiError::Conflict("x".into()), StatusCode::CONFLICT),
            (
                PkiError::Internal("x".into()),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (
                PkiError::Seal(SealError::Sealed),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
        ] {
            assert_eq!(status(err), want);
        }
    }

    /// The JWT auth method's errors land by whose fault they are, too.
    #[test]
    fn jwt_auth_errors_map_by_whose_fault_they_are() {
        let status = |e: JwtAuthError| ApiError::from(e).status_code();
        for (err, want) in [
            (
                JwtAuthError::Refused("expired".into()),
                StatusCode::BAD_REQUEST,
            ),
            (
                JwtAuthError::InvalidRole("no audience".into()),
                StatusCode::BAD_REQUEST,
            ),
            (JwtAuthError::NoRole("r".into()), StatusCode::NOT_FOUND),
            (
                JwtAuthError::Forbidden("not yours".into()),
                StatusCode::FORBIDDEN,
            ),
            (JwtAuthError::Conflict("again".into()), StatusCode::CONFLICT),
            (
                JwtAuthError::KeysUnavailable("down".into()),
                StatusCode::BAD_GATEWAY,
            ),
            (
                JwtAuthError::Internal("x".into()),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (
                JwtAuthError::Seal(SealError::Sealed),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
        ] {
            assert_eq!(status(err), want);
        }
    }
}
