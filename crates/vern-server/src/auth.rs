//! Authentication: who is calling. A token comes in `X-Vault-Token` (Vault's
//! header, used by hvac and the vault CLI), `Authorization: Bearer`, or
//! `Authorization: DPoP` with a `DPoP` proof header. The root token of init
//! is an operator; access tokens of the authority carry a service scope or
//! operator roles. A DPoP-bound token is accepted only with its proof.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use vern_authority::{AccessClaims, ClientKind, DpopCheck, NonceRule, Presented};
use vern_core::{Principal, PrincipalKind, TenantId};
use vern_policy::{Binding, PolicyEngine, Subject, SubjectKind};

use crate::audit::AuditSlot;
use crate::client_addr::ClientAddr;
use crate::error::ApiError;
use crate::limits::{Attempt, CredentialId, Source};
use crate::state::AppState;

/// The authenticated caller of a request, with what authorization needs
/// to decide about it.
#[derive(Clone)]
pub(crate) struct Caller {
    pub(crate) principal: Principal,
    /// The principal as policies see it (with scopes or roles).
    pub(crate) subject: Subject,
    pub(crate) source_ip: String,
    pub(crate) time: u64,
    pub(crate) binding: Binding,
    pub(crate) policies: Arc<PolicyEngine>,
    /// Where the request's audit record is being filled in.
    pub(crate) audit: Option<AuditSlot>,
    /// The Cedar action the route table names for this request.
    pub(crate) route_action: &'static str,
    /// Set once a decision on `route_action` was made.
    pub(crate) decided: Arc<AtomicBool>,
    /// The verified claims of the access token presented; none for the
    /// root token.
    pub(crate) claims: Option<Arc<AccessClaims>>,
}

/// What an authenticated token says, before the request context is added.
struct Identity {
    principal: Principal,
    subject: Subject,
    binding: Binding,
    claims: Option<Arc<AccessClaims>>,
}

impl Identity {
    fn root() -> Self {
        Self {
            principal: Principal::root(),
            subject: Subject {
                id: "root".to_owned(),
                kind: SubjectKind::Operator {
                    roles: Vec::new(),
                    tenant: None,
                    root: true,
                },
            },
            binding: Binding::None,
            claims: None,
        }
    }

    fn from_claims(claims: AccessClaims) -> Result<Self, ApiError> {
        let binding = if claims.x5t.is_some() {
            Binding::Mtls
        } else if claims.jkt.is_some() {
            Binding::Dpop
        } else {
            Binding::None
        };
        let (kind, subject_kind) = match &claims.kind {
            ClientKind::Service { .. } => {
                let scope = claims.kind.scope().ok_or_else(|| {
                    ApiError::new(StatusCode::UNAUTHORIZED, "the token's scope is malformed")
                })?;
                (
                    PrincipalKind::Service {
                        scope: scope.clone(),
                    },
                    SubjectKind::Service {
                        scope,
                        scopes: claims.scopes.clone(),
                    },
                )
            }
            ClientKind::Operator { roles, tenant } => {
                let tenant = match tenant {
                    Some(_) => Some(claims.kind.operator_tenant().ok_or_else(|| {
                        ApiError::new(StatusCode::UNAUTHORIZED, "the token's tenant is malformed")
                    })?),
                    None => None,
                };
                (
                    PrincipalKind::Operator {
                        root: false,
                        tenant: tenant.clone(),
                    },
                    SubjectKind::Operator {
                        roles: roles.clone(),
                        tenant,
                        root: false,
                    },
                )
            }
            // The services of its entries are read where a decision needs
            // them (`routes/workloads.rs`); without them it may do nothing.
            ClientKind::Node => (
                PrincipalKind::Node,
                SubjectKind::Node {
                    services: Vec::new(),
                },
            ),
        };
        Ok(Self {
            principal: Principal {
                id: claims.client_id.clone(),
                kind,
            },
            subject: Subject {
                id: claims.client_id.clone(),
                kind: subject_kind,
            },
            binding,
            claims: Some(Arc::new(claims)),
        })
    }
}

/// How the token arrived.
enum Scheme {
    /// `X-Vault-Token` or `Authorization: Bearer`.
    Bearer(String),
    /// `Authorization: DPoP`.
    Dpop(String),
}

/// The token a request presents (`X-Vault-Token`, or `Authorization` with
/// either scheme), as authentication reads it.
pub(crate) fn presented_token(headers: &HeaderMap) -> Option<String> {
    match presented(headers) {
        Ok(Some(Scheme::Bearer(t) | Scheme::Dpop(t))) => Some(t),
        _ => None,
    }
}

fn presented(headers: &HeaderMap) -> Result<Option<Scheme>, ApiError> {
    if let Some(v) = headers.get("x-vault-token") {
        let t = v
            .to_str()
            .map_err(|_| ApiError::bad_request("X-Vault-Token is not ASCII"))?;
        return Ok(Some(Scheme::Bearer(t.trim().to_owned())));
    }
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .map_err(|_| ApiError::bad_request("the Authorization header is not ASCII"))?;
    match v.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(Some(Scheme::Bearer(token.trim().to_owned()))),
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("dpop") => Ok(Some(Scheme::Dpop(token.trim().to_owned()))),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unsupported Authorization scheme; use `Bearer <token>`, `DPoP <token>` or the X-Vault-Token header",
        )),
    }
}

/// The verified client certificate of the request's connection, if any.
fn peer_certificate(parts: &Parts) -> Option<&[u8]> {
    parts
        .extensions
        .get::<crate::listen::PeerCertificate>()
        .and_then(|p| p.0.as_deref())
        .map(Vec::as_slice)
}

/// The presented credential tried from the caller's source, as the key of
/// its lockout: only the same token from the same source is locked out
/// after repeated failures. A request without a token has none.
fn attempt(parts: &Parts, source: Source) -> Option<Attempt> {
    parts
        .headers
        .get("x-vault-token")
        .or_else(|| parts.headers.get(header::AUTHORIZATION))
        .map(|v| Attempt {
            identity: CredentialId::token(v.as_bytes()),
            source,
        })
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // Authenticated once, by the authorization point.
        if let Some(caller) = parts.extensions.get::<Self>() {
            return Ok(caller.clone());
        }
        let guard = &state.inner.guard;
        let client = ClientAddr::of(&parts.extensions);
        let attempt = attempt(parts, client.source());
        // Only a credential that keeps failing from this source is refused
        // before it is checked; the source's own budget of failures is
        // looked at only once authentication has failed, so a valid token
        // from a busy shared address always gets through.
        guard
            .api_attempt(attempt.as_ref())
            .map_err(|r| ApiError::too_many(r.wait))?;
        let audit = parts.extensions.get::<AuditSlot>().cloned();
        let identity = match Self::authenticate(parts, state, audit.as_ref()).await {
            Ok(c) => c,
            Err(e) => {
                // Wrong or missing credentials count; an unavailable
                // server (sealed, storage) does not.
                let status = e.status_code();
                if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                    guard
                        .api_failed(attempt.as_ref(), client.source())
                        .map_err(|r| ApiError::too_many(r.wait))?;
                }
                return Err(e);
            }
        };
        if let Some(slot) = &audit {
            slot.principal(&identity.principal);
            slot.token_details(
                identity.claims.as_ref().map(|c| c.jti.clone()),
                identity.binding,
            );
        }
        let caller = Self {
            principal: identity.principal,
            subject: identity.subject,
            source_ip: client.to_string(),
            time: state.inner.clock.unix_seconds(),
            binding: identity.binding,
            policies: Arc::clone(&state.inner.policies),
            audit,
            route_action: "",
            decided: Arc::new(AtomicBool::new(false)),
            claims: identity.claims,
        };
        let tenant = match &caller.principal.kind {
            PrincipalKind::Service { scope } => Some(scope.tenant.as_str()),
            PrincipalKind::Operator { tenant, .. } => tenant.as_ref().map(TenantId::as_str),
            PrincipalKind::Node => None,
        };
        guard
            .api_succeeded(attempt.as_ref(), &caller.principal.id, tenant)
            .map_err(|r| ApiError::too_many(r.wait))?;
        Ok(caller)
    }
}

impl Caller {
    /// Verifies the presented token; notes it (as its HMAC) in the audit
    /// slot first, so refused tokens can be searched for too.
    async fn authenticate(
        parts: &Parts,
        state: &AppState,
        audit: Option<&AuditSlot>,
    ) -> Result<Identity, ApiError> {
        let scheme = presented(&parts.headers)?
            .ok_or_else(|| ApiError::new(StatusCode::FORBIDDEN, "missing client token"))?;
        if let (Some(slot), Scheme::Bearer(t) | Scheme::Dpop(t)) = (audit, &scheme) {
            if !t.is_empty() {
                slot.token(t);
            }
        }
        let seal = &state.inner.seal;
        let barrier = seal.barrier()?;
        let authority = &state.inner.authority;
        match scheme {
            Scheme::Bearer(token) if token.is_empty() => {
                Err(ApiError::new(StatusCode::FORBIDDEN, "missing client token"))
            }
            Scheme::Bearer(token) => {
                if seal.is_root_token(token.as_bytes()).await? {
                    tracing::info!(principal = "root", "Root token used.");
                    return Ok(Identity::root());
                }
                if token.matches('.').count() != 2 {
                    tracing::warn!("Request with an unknown token refused.");
                    return Err(ApiError::forbidden());
                }
                let claims = authority
                    .verify_access_with_certificate(
                        &barrier,
                        &token,
                        Presented::Bearer,
                        peer_certificate(parts),
                    )
                    .await?;
                Identity::from_claims(claims)
            }
            Scheme::Dpop(token) => {
                let proofs: Vec<&str> = parts
                    .headers
                    .get_all("dpop")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                let url = format!(
                    "{}{}",
                    state.inner.config.public_url.trim_end_matches('/'),
                    parts.uri.path()
                );
                let check = DpopCheck {
                    proofs: &proofs,
                    method: parts.method.as_str(),
                    url: &url,
                    access_token: None,
                    expected_jkt: None,
                    nonce: NonceRule::NotRequired,
                };
                let claims = authority
                    .verify_access_with_certificate(
                        &barrier,
                        &token,
                        Presented::Dpop(check),
                        peer_certificate(parts),
                    )
                    .await?;
                Identity::from_claims(claims)
            }
        }
    }
}
