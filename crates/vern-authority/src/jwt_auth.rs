//! The JWT auth method (Vault's `auth/jwt`): roles that trust an external
//! issuer (a Kubernetes cluster, a CI system, an identity provider) and map
//! the workloads it vouches for to one of Vern's service clients. A login
//! presents a JWT; when its signature verifies with the issuer's keys and
//! its issuer, audience, times, subject and bound claims fit the role, the
//! caller gets a token of the role's client: the same token, with the same
//! scope and limits, that the client gets at the token endpoint.
//!
//! Roles live behind the barrier at `authority/jwt/roles/<name>`, written
//! with compare-and-set like clients. Keys come from a JWKS URL (fetched
//! through [`JwksFetch`], cached per URL) or from PEM keys kept in the
//! role, for issuers Vern cannot reach.

mod bounds;
mod jwks;
mod keys;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use vern_crypto::SecretBytes;
use vern_seal::{Barrier, BarrierWrite, Expect, SealError};

use crate::authority::{view, Authority};
use crate::claims::{audience_has, numeric_date};
use crate::clients::{ClientKind, ClientRecord};
use crate::jws::Unverified;
use crate::registry::ApplyGate;
use crate::AuthError;

pub use bounds::ClaimMatch;
pub(crate) use jwks::JwksCache;
pub use jwks::{JwksFetch, JwksUrl};
pub use keys::JwtAlg;

/// Where roles are kept, relative to the authority's view.
pub(crate) const JWT_ROLES: &str = "jwt/roles/";
/// Longest JWT accepted at login, in bytes: other issuers' tokens carry
/// more claims than Vern's own, but nothing legitimate comes near this.
pub const MAX_EXTERNAL_JWT_LEN: usize = 16 * 1024;
/// Vault's default leeways (seconds).
const DEFAULT_CLOCK_SKEW: u64 = 60;
const DEFAULT_EXPIRATION_LEEWAY: u64 = 150;
const DEFAULT_NOT_BEFORE_LEEWAY: u64 = 150;
/// Largest leeway a role may set (seconds).
const MAX_LEEWAY: u64 = 3600;
/// Most bound audiences, bound claims, expected values per claim and
/// static keys a role may hold.
const MAX_LIST: usize = 64;
/// Longest string in a role (names, issuers, values, patterns); PEM keys
/// and CA bundles have their own bound.
const MAX_TEXT: usize = 1024;
/// Longest PEM key or CA bundle.
const MAX_PEM: usize = 64 * 1024;

/// Why a JWT auth operation failed.
///
/// Three families, for the one place that maps them to HTTP: the login was
/// refused (`Refused`, `NoRole`: the caller's JWT or role name); the
/// issuer's keys could not be had (`KeysUnavailable`: neither the caller's
/// fault nor Vern's); a role could not be written (`InvalidRole`,
/// `Forbidden`); or Vern failed (`Conflict`, `Internal`, `Seal`).
#[derive(Debug, thiserror::Error)]
pub enum JwtAuthError {
    /// The login was refused; the message says which check failed, never
    /// a claim's value, the role's expected values or the token.
    #[error("{0}")]
    Refused(String),
    /// No role of this name.
    #[error("role `{0}` does not exist")]
    NoRole(String),
    /// The issuer's JWK set could not be fetched, so nothing can be
    /// verified (fail closed).
    #[error("the issuer's keys could not be fetched: {0}")]
    KeysUnavailable(String),
    /// A role declaration is invalid; the message names the field.
    #[error("{0}")]
    InvalidRole(String),
    /// The caller may not write or delete this role; the message says why.
    #[error("{0}")]
    Forbidden(String),
    /// A concurrent change won; running the operation again is safe.
    #[error("{0}")]
    Conflict(String),
    /// An internal fault; the message is for the log.
    #[error("internal JWT auth error: {0}")]
    Internal(String),
    /// The seal or storage failed.
    #[error(transparent)]
    Seal(#[from] SealError),
}

impl From<AuthError> for JwtAuthError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Seal(s) => Self::Seal(s),
            other => Self::Internal(other.to_string()),
        }
    }
}

/// A role as declared (by `POST /v1/auth/jwt/role/<name>` or an apply
/// file), in Vault's names. Unknown fields are refused, so a typo cannot
/// silently drop a bound.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtRoleSpec {
    /// The role's name.
    #[serde(default)]
    pub name: String,
    /// `jwt` (the default); OIDC's browser flow is not offered.
    #[serde(default)]
    pub role_type: Option<String>,
    /// The service client whose tokens a login gets.
    #[serde(default)]
    pub client_id: String,
    /// The `iss` the JWT must carry.
    #[serde(default)]
    pub bound_issuer: Option<String>,
    /// Where the issuer publishes its keys.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// The CAs (PEM) that the JWKS server's certificate must chain to;
    /// the usual web roots when absent.
    #[serde(default)]
    pub jwks_ca_pem: Option<String>,
    /// The issuer's public keys (PEM), instead of a JWKS URL.
    #[serde(default)]
    pub jwt_validation_pubkeys: Vec<String>,
    /// Accepted signature algorithms; every supported one when empty.
    #[serde(default)]
    pub jwt_supported_algs: Vec<String>,
    /// Audiences of which the JWT's `aud` must name one. Required.
    #[serde(default)]
    pub bound_audiences: Vec<String>,
    /// The `sub` the JWT must carry.
    #[serde(default)]
    pub bound_subject: Option<String>,
    /// Claims the JWT must carry, each with one of the listed values.
    #[serde(default)]
    pub bound_claims: BTreeMap<String, Vec<String>>,
    /// `string` (exact, the default) or `glob`.
    #[serde(default)]
    pub bound_claims_type: Option<String>,
    /// The claim that names the workload (default `sub`), for the token's
    /// metadata and the audit log.
    #[serde(default)]
    pub user_claim: Option<String>,
    /// Lifetime of the issued token (seconds); the client's own lifetime
    /// and the authority's maximum still cap it.
    #[serde(default)]
    pub token_ttl: Option<u64>,
    /// Leeway for clock differences (seconds): unset or 0 for Vault's
    /// default of 60, -1 for none.
    #[serde(default)]
    pub clock_skew_leeway: Option<i64>,
    /// Extra leeway past `exp` (seconds): unset or 0 for Vault's default
    /// of 150, -1 for none.
    #[serde(default)]
    pub expiration_leeway: Option<i64>,
    /// Extra leeway before `nbf` (seconds): unset or 0 for Vault's default
    /// of 150, -1 for none.
    #[serde(default)]
    pub not_before_leeway: Option<i64>,
}

/// A role as stored and read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtRole {
    /// The role's name.
    pub name: String,
    /// The service client a login gets tokens of.
    pub client_id: String,
    /// The client's tenant, project and environment when the role was
    /// written: who may manage the role is decided on them, even after the
    /// client is gone.
    pub tenant: String,
    /// See `tenant`.
    pub project: String,
    /// See `tenant`.
    pub environment: String,
    /// The `iss` a JWT must carry.
    pub bound_issuer: String,
    /// The issuer's JWKS URL, when keys are fetched.
    pub jwks_url: Option<String>,
    /// CAs for the JWKS server's certificate.
    pub jwks_ca_pem: Option<String>,
    /// Static PEM keys, when keys are not fetched.
    pub jwt_validation_pubkeys: Vec<String>,
    /// Accepted algorithms.
    pub jwt_supported_algs: Vec<String>,
    /// Accepted audiences.
    pub bound_audiences: Vec<String>,
    /// Required `sub`.
    pub bound_subject: Option<String>,
    /// Required claims.
    pub bound_claims: BTreeMap<String, Vec<String>>,
    /// How bound claims match.
    pub bound_claims_type: ClaimMatch,
    /// The claim naming the workload.
    pub user_claim: String,
    /// Issued tokens' lifetime (seconds), when set.
    pub token_ttl: Option<u64>,
    /// Effective clock skew leeway (seconds).
    pub clock_skew_leeway: u64,
    /// Effective expiration leeway (seconds).
    pub expiration_leeway: u64,
    /// Effective not-before leeway (seconds).
    pub not_before_leeway: u64,
    /// Creation time (Unix seconds).
    pub created: u64,
    /// Time of the last change (Unix seconds).
    pub updated: u64,
}

impl JwtRole {
    /// The role's client as a principal kind (a service), for decisions.
    pub fn client_kind(&self) -> ClientKind {
        ClientKind::Service {
            tenant: self.tenant.clone(),
            project: self.project.clone(),
            environment: self.environment.clone(),
        }
    }

    /// Whether two roles hold the same settings (times aside).
    fn same_settings(&self, other: &Self) -> bool {
        let times = |r: &Self| Self {
            created: 0,
            updated: 0,
            ..r.clone()
        };
        times(self) == times(other)
    }
}

/// A successful login: the role's client as it is now, the workload's
/// name (the role's `user_claim`) and the lifetime the token gets.
#[derive(Debug)]
pub struct JwtLogin {
    /// The client whose token the caller gets.
    pub client: ClientRecord,
    /// The value of the role's `user_claim`.
    pub user: String,
    /// Lifetime of the token to issue (seconds), already capped.
    pub ttl: u64,
}

/// What an apply did (or, dry, would do) to the JWT roles.
#[derive(Debug, Default)]
pub struct JwtRolePlan {
    /// Roles created.
    pub create: Vec<String>,
    /// Roles changed.
    pub update: Vec<String>,
    /// Roles deleted (only with prune).
    pub delete: Vec<String>,
    /// Roles already as declared.
    pub unchanged: Vec<String>,
    /// Roles not declared and kept.
    pub kept: Vec<String>,
}

/// A role's name: 1–128 ASCII letters, digits, `-`, `_` and `.`, starting
/// with a letter or digit, so it is safe as a storage key and in logs.
fn check_name(name: &str) -> Result<(), JwtAuthError> {
    let ok = (1..=128).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(JwtAuthError::InvalidRole(format!(
            "role name `{}` must be 1–128 letters, digits, `-`, `_` or `.`, starting with a letter or digit",
            jwks::printable(name)
        )))
    }
}

fn invalid(message: impl Into<String>) -> JwtAuthError {
    JwtAuthError::InvalidRole(message.into())
}

fn check_text(field: &str, value: &str) -> Result<(), JwtAuthError> {
    if value.is_empty() || value.len() > MAX_TEXT || value.chars().any(char::is_control) {
        return Err(invalid(format!(
            "{field} entries must be 1–{MAX_TEXT} characters without control characters"
        )));
    }
    Ok(())
}

fn leeway(field: &str, given: Option<i64>, default: u64) -> Result<u64, JwtAuthError> {
    match given {
        None | Some(0) => Ok(default),
        Some(-1) => Ok(0),
        Some(n) => u64::try_from(n)
            .ok()
            .filter(|n| *n <= MAX_LEEWAY)
            .ok_or_else(|| {
                invalid(format!(
                    "{field} must be -1 (none), 0 (the default of {default} s) or up to {MAX_LEEWAY} s"
                ))
            }),
    }
}

/// The settings of a valid spec, before its client is looked at.
struct Checked {
    algs: Vec<String>,
    claim_match: ClaimMatch,
    leeways: (u64, u64, u64),
}

impl JwtRoleSpec {
    /// Checks everything that does not need storage: the name, the key
    /// source (URL form, PEM keys parse, RSA keys of at least 2048 bits),
    /// algorithms, bounds and lifetimes.
    fn check(&self, max_ttl: u64) -> Result<Checked, JwtAuthError> {
        check_name(&self.name)?;
        if self.role_type.as_deref().is_some_and(|t| t != "jwt") {
            return Err(invalid(
                "role_type must be `jwt`: Vern offers no OIDC browser login",
            ));
        }
        if self.client_id.is_empty() {
            return Err(invalid(
                "client_id is required: the service client a login gets tokens of",
            ));
        }
        match &self.bound_issuer {
            Some(iss) => check_text("bound_issuer", iss)?,
            None => {
                return Err(invalid(
                    "bound_issuer is required: the issuer (`iss`) this role trusts",
                ))
            }
        }
        match (&self.jwks_url, self.jwt_validation_pubkeys.is_empty()) {
            (Some(url), true) => {
                JwksUrl::parse(url).map_err(invalid)?;
            }
            (None, false) => {
                if self.jwt_validation_pubkeys.len() > MAX_LIST {
                    return Err(invalid(format!(
                        "jwt_validation_pubkeys holds at most {MAX_LIST} keys"
                    )));
                }
                for (i, pem) in self.jwt_validation_pubkeys.iter().enumerate() {
                    if pem.len() > MAX_PEM {
                        return Err(invalid(format!("jwt_validation_pubkeys[{i}] is too long")));
                    }
                    keys::ExternalKey::from_pem(pem).map_err(|e| {
                        invalid(format!("jwt_validation_pubkeys[{i}] is unusable: {e}"))
                    })?;
                }
                if self.jwks_ca_pem.is_some() {
                    return Err(invalid("jwks_ca_pem goes with jwks_url only"));
                }
            }
            (Some(_), false) => {
                return Err(invalid(
                    "give either jwks_url or jwt_validation_pubkeys, not both",
                ))
            }
            (None, true) => {
                return Err(invalid(
                    "give the issuer's keys: jwks_url, or jwt_validation_pubkeys for an issuer Vern cannot reach",
                ))
            }
        }
        if let Some(ca) = &self.jwks_ca_pem {
            if ca.len() > MAX_PEM {
                return Err(invalid("jwks_ca_pem is too long"));
            }
            vern_pki::roots_from_pem(ca)
                .map_err(|e| invalid(format!("jwks_ca_pem is unusable: {e}")))?;
        }
        let mut algs = Vec::new();
        for name in &self.jwt_supported_algs {
            let alg = JwtAlg::parse(name).ok_or_else(|| {
                invalid(format!(
                    "algorithm `{}` is not supported; use {} (never `none` or HMAC)",
                    jwks::printable(name),
                    JwtAlg::ALL.map(JwtAlg::name).join(", ")
                ))
            })?;
            if !algs.contains(&alg.name().to_owned()) {
                algs.push(alg.name().to_owned());
            }
        }
        if algs.is_empty() {
            algs = JwtAlg::ALL.map(|a| a.name().to_owned()).to_vec();
        }
        if self.bound_audiences.is_empty() {
            return Err(invalid(
                "bound_audiences is required: a JWT meant for another audience must never log in",
            ));
        }
        if self.bound_audiences.len() > MAX_LIST {
            return Err(invalid(format!(
                "bound_audiences holds at most {MAX_LIST} values"
            )));
        }
        for a in &self.bound_audiences {
            check_text("bound_audiences", a)?;
        }
        if let Some(s) = &self.bound_subject {
            check_text("bound_subject", s)?;
        }
        let claim_match = match self.bound_claims_type.as_deref() {
            None | Some("string") => ClaimMatch::String,
            Some("glob") => ClaimMatch::Glob,
            Some(_) => return Err(invalid("bound_claims_type must be `string` or `glob`")),
        };
        if self.bound_claims.len() > MAX_LIST {
            return Err(invalid(format!(
                "bound_claims holds at most {MAX_LIST} claims"
            )));
        }
        for (claim, values) in &self.bound_claims {
            check_text("bound_claims names", claim)?;
            if values.is_empty() || values.len() > MAX_LIST {
                return Err(invalid(format!(
                    "bound claim `{}` needs 1–{MAX_LIST} expected values",
                    jwks::printable(claim)
                )));
            }
            for v in values {
                check_text("bound_claims values", v)?;
            }
        }
        if let Some(c) = &self.user_claim {
            check_text("user_claim", c)?;
        }
        match self.token_ttl {
            Some(0) => return Err(invalid("token_ttl must be positive")),
            Some(t) if t > max_ttl => {
                return Err(invalid(format!(
                    "token_ttl may be at most {max_ttl} s, the longest lifetime of Vern's tokens"
                )))
            }
            _ => {}
        }
        Ok(Checked {
            algs,
            claim_match,
            leeways: (
                leeway(
                    "clock_skew_leeway",
                    self.clock_skew_leeway,
                    DEFAULT_CLOCK_SKEW,
                )?,
                leeway(
                    "expiration_leeway",
                    self.expiration_leeway,
                    DEFAULT_EXPIRATION_LEEWAY,
                )?,
                leeway(
                    "not_before_leeway",
                    self.not_before_leeway,
                    DEFAULT_NOT_BEFORE_LEEWAY,
                )?,
            ),
        })
    }

    /// The role this spec declares for a client of `kind`, at `now`.
    fn role(&self, checked: Checked, kind: &ClientKind, now: u64) -> Result<JwtRole, JwtAuthError> {
        let ClientKind::Service {
            tenant,
            project,
            environment,
        } = kind
        else {
            return Err(invalid(format!(
                "client `{}` is an operator; a JWT role maps to a service client",
                self.client_id
            )));
        };
        let (clock_skew_leeway, expiration_leeway, not_before_leeway) = checked.leeways;
        Ok(JwtRole {
            name: self.name.clone(),
            client_id: self.client_id.clone(),
            tenant: tenant.clone(),
            project: project.clone(),
            environment: environment.clone(),
            bound_issuer: self.bound_issuer.clone().unwrap_or_default(),
            jwks_url: self.jwks_url.clone(),
            jwks_ca_pem: self.jwks_ca_pem.clone(),
            jwt_validation_pubkeys: self.jwt_validation_pubkeys.clone(),
            jwt_supported_algs: checked.algs,
            bound_audiences: self.bound_audiences.clone(),
            bound_subject: self.bound_subject.clone(),
            bound_claims: self.bound_claims.clone(),
            bound_claims_type: checked.claim_match,
            user_claim: self.user_claim.clone().unwrap_or_else(|| "sub".to_owned()),
            token_ttl: self.token_ttl,
            clock_skew_leeway,
            expiration_leeway,
            not_before_leeway,
            created: now,
            updated: now,
        })
    }
}

/// Whether the caller manages an existing role: it must be allowed to
/// manage the role's client (as it was when the role was written, so a
/// role whose client is gone still has owners).
fn manages(gate: &dyn ApplyGate, role: &JwtRole) -> bool {
    gate.may_grant(&role.client_id, &role.client_kind(), &[])
        .is_ok()
}

/// The kind a service client's id names (`svc.<tenant>.<project>.<environment>.<name>`).
fn service_kind_of(client_id: &str) -> Option<ClientKind> {
    let mut parts = client_id.split('.');
    let (Some("svc"), Some(t), Some(p), Some(e), Some(_), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let kind = ClientKind::Service {
        tenant: t.to_owned(),
        project: p.to_owned(),
        environment: e.to_owned(),
    };
    kind.scope().map(|_| kind)
}

fn role_write(role: &JwtRole, expect: Expect) -> Result<BarrierWrite, JwtAuthError> {
    let bytes = serde_json::to_vec(role).map_err(|e| JwtAuthError::Internal(e.to_string()))?;
    Ok(BarrierWrite {
        key: format!("{JWT_ROLES}{}", role.name),
        value: Some(SecretBytes::new(bytes)),
        expect,
    })
}

fn refused(message: impl Into<String>) -> JwtAuthError {
    JwtAuthError::Refused(message.into())
}

impl Authority {
    /// Reads a role.
    pub async fn jwt_role(&self, b: &Barrier, name: &str) -> Result<JwtRole, JwtAuthError> {
        Ok(self.jwt_role_versioned(b, name).await?.0)
    }

    async fn jwt_role_versioned(
        &self,
        b: &Barrier,
        name: &str,
    ) -> Result<(JwtRole, u64), JwtAuthError> {
        if check_name(name).is_err() {
            return Err(JwtAuthError::NoRole(jwks::printable(name)));
        }
        let plain = view(b)?
            .get(&format!("{JWT_ROLES}{name}"))
            .await?
            .ok_or_else(|| JwtAuthError::NoRole(name.to_owned()))?;
        let role = serde_json::from_slice(plain.value.expose())
            .map_err(|_| SealError::Corrupt(format!("JWT role {name}")))?;
        Ok((role, plain.version))
    }

    /// Every role's name.
    pub async fn jwt_role_names(&self, b: &Barrier) -> Result<Vec<String>, JwtAuthError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = view(b)?.list(JWT_ROLES, after.as_deref(), 1000).await?;
            let Some(last) = page.last().cloned() else {
                break;
            };
            out.extend(
                page.iter()
                    .filter_map(|k| k.strip_prefix(JWT_ROLES).map(str::to_owned)),
            );
            if page.len() < 1000 {
                break;
            }
            after = Some(last);
        }
        Ok(out)
    }

    /// Creates or replaces a role on behalf of a caller whose reach is
    /// `gate`: its client must exist, be a service, and be one the caller
    /// may make ([`ApplyGate::may_grant`]); a role that exists must be the
    /// caller's to change.
    pub async fn write_jwt_role(
        &self,
        b: &Barrier,
        spec: &JwtRoleSpec,
        gate: &dyn ApplyGate,
    ) -> Result<JwtRole, JwtAuthError> {
        let checked = spec.check(self.config.max_ttl)?;
        let id = jwks::printable(&spec.client_id);
        let not_a_service = || {
            invalid(format!(
                "client `{id}` is not an existing service client; a JWT role maps to one"
            ))
        };
        let client = match self.client(b, &spec.client_id).await {
            Ok(c) if c.kind.scope().is_some() => c,
            // An operator reads exactly like a client that does not exist,
            // so the answer says nothing about operators.
            Ok(_) => return Err(not_a_service()),
            Err(AuthError::NoClient(_)) => {
                // A missing service is reported as missing only to a caller
                // who could manage it; others get the refusal they would get
                // if it existed, so they learn nothing about other tenants.
                let kind = service_kind_of(&spec.client_id).ok_or_else(not_a_service)?;
                gate.may_grant(&spec.client_id, &kind, &[])
                    .map_err(JwtAuthError::Forbidden)?;
                return Err(invalid(format!("client `{id}` does not exist")));
            }
            Err(e) => return Err(e.into()),
        };
        gate.may_grant(&client.client_id, &client.kind, &client.scopes)
            .map_err(JwtAuthError::Forbidden)?;
        let mut role = spec.role(checked, &client.kind, self.now())?;
        let expect = match self.jwt_role_versioned(b, &spec.name).await {
            Ok((existing, version)) => {
                if !manages(gate, &existing) {
                    return Err(JwtAuthError::Forbidden(format!(
                        "role `{}` exists and is not yours to change",
                        spec.name
                    )));
                }
                role.created = existing.created;
                Expect::Version(version)
            }
            Err(JwtAuthError::NoRole(_)) => Expect::Absent,
            Err(e) => return Err(e),
        };
        view(b)?
            .commit(vec![role_write(&role, expect)?])
            .await
            .map_err(|e| match e {
                SealError::Conflict { .. } => JwtAuthError::Conflict(format!(
                    "role `{}` changed while it was written; write it again",
                    spec.name
                )),
                other => other.into(),
            })?;
        tracing::info!(role = %role.name, client_id = %role.client_id, "JWT role written.");
        Ok(role)
    }

    /// Deletes a role the caller manages.
    pub async fn delete_jwt_role(
        &self,
        b: &Barrier,
        name: &str,
        gate: &dyn ApplyGate,
    ) -> Result<(), JwtAuthError> {
        let (role, version) = self.jwt_role_versioned(b, name).await?;
        if !manages(gate, &role) {
            return Err(JwtAuthError::Forbidden(format!(
                "role `{name}` is not yours to delete"
            )));
        }
        view(b)?
            .commit(vec![BarrierWrite {
                key: format!("{JWT_ROLES}{name}"),
                value: None,
                expect: Expect::Version(version),
            }])
            .await
            .map_err(|e| match e {
                SealError::Conflict { .. } => JwtAuthError::Conflict(format!(
                    "role `{name}` changed while it was deleted; try again"
                )),
                other => other.into(),
            })?;
        tracing::info!(role = %name, "JWT role deleted.");
        Ok(())
    }

    /// Plans the roles of an apply: `specs` is the whole declared set,
    /// `client_after` the client each role names as it will be after the
    /// apply (kind and scopes; `None` when it will not exist). Every role
    /// is checked before anything is written; the writes are returned for
    /// the caller's one batch.
    pub(crate) async fn plan_jwt_roles(
        &self,
        b: &Barrier,
        specs: &[JwtRoleSpec],
        client_after: &BTreeMap<String, Option<(ClientKind, Vec<String>)>>,
        prune: bool,
        gate: &dyn ApplyGate,
    ) -> Result<(JwtRolePlan, Vec<BarrierWrite>), JwtAuthError> {
        let mut plan = JwtRolePlan::default();
        let mut writes = Vec::new();
        let mut declared = std::collections::BTreeSet::new();
        let now = self.now();
        for spec in specs {
            let checked = spec
                .check(self.config.max_ttl)
                .map_err(|e| invalid(format!("JWT role `{}`: {e}", jwks::printable(&spec.name))))?;
            if !declared.insert(spec.name.clone()) {
                return Err(invalid(format!(
                    "JWT role `{}` is declared twice",
                    spec.name
                )));
            }
            let Some(Some((kind, scopes))) = client_after.get(&spec.client_id) else {
                return Err(invalid(format!(
                    "JWT role `{}`: client `{}` does not exist after this apply",
                    spec.name,
                    jwks::printable(&spec.client_id)
                )));
            };
            gate.may_grant(&spec.client_id, kind, scopes)
                .map_err(|e| JwtAuthError::Forbidden(format!("JWT role `{}`: {e}", spec.name)))?;
            let mut role = spec
                .role(checked, kind, now)
                .map_err(|e| invalid(format!("JWT role `{}`: {e}", spec.name)))?;
            match self.jwt_role_versioned(b, &spec.name).await {
                Ok((existing, version)) => {
                    if !manages(gate, &existing) {
                        return Err(JwtAuthError::Forbidden(format!(
                            "JWT role `{}` exists and is not yours to change",
                            spec.name
                        )));
                    }
                    role.created = existing.created;
                    if role.same_settings(&existing) {
                        plan.unchanged.push(spec.name.clone());
                    } else {
                        writes.push(role_write(&role, Expect::Version(version))?);
                        plan.update.push(spec.name.clone());
                    }
                }
                Err(JwtAuthError::NoRole(_)) => {
                    writes.push(role_write(&role, Expect::Absent)?);
                    plan.create.push(spec.name.clone());
                }
                Err(e) => return Err(e),
            }
        }
        for name in self.jwt_role_names(b).await? {
            if declared.contains(&name) {
                continue;
            }
            let (existing, version) = self.jwt_role_versioned(b, &name).await?;
            if prune && manages(gate, &existing) {
                writes.push(BarrierWrite {
                    key: format!("{JWT_ROLES}{name}"),
                    value: None,
                    expect: Expect::Version(version),
                });
                plan.delete.push(name);
            } else {
                plan.kept.push(name);
            }
        }
        Ok((plan, writes))
    }

    /// Logs in with `jwt` through `role` (as read with
    /// [`Authority::jwt_role`]): verifies the JWT with the issuer's keys and
    /// checks it against the role, then reads the role's client. The
    /// caller issues the token.
    pub async fn jwt_login<F: JwksFetch>(
        &self,
        b: &Barrier,
        role: &JwtRole,
        jwt: &str,
        fetch: &F,
    ) -> Result<JwtLogin, JwtAuthError> {
        let token = Unverified::parse_within(jwt, MAX_EXTERNAL_JWT_LEN)
            .map_err(|e| refused(format!("the JWT is malformed: {e}")))?;
        self.check_signature(role, &token, fetch).await?;
        let user = check_claims(role, &token, self.now())?;
        let client = match self.client(b, &role.client_id).await {
            Ok(c) => c,
            Err(AuthError::NoClient(_)) => {
                return Err(refused("the role's client no longer exists"))
            }
            Err(e) => return Err(e.into()),
        };
        if client.kind.scope().is_none() {
            return Err(refused("the role's client is no longer a service"));
        }
        let max = self.config.max_ttl;
        let ttl = role
            .token_ttl
            .or(client.token_ttl)
            .unwrap_or(self.config.default_ttl)
            .min(client.token_ttl.unwrap_or(max))
            .min(max);
        Ok(JwtLogin { client, user, ttl })
    }

    /// Verifies the JWT's signature with a key of the role's issuer, under
    /// an algorithm the role allows.
    async fn check_signature<F: JwksFetch>(
        &self,
        role: &JwtRole,
        token: &Unverified,
        fetch: &F,
    ) -> Result<(), JwtAuthError> {
        let alg_name = token.header_str("alg").unwrap_or("");
        let alg = JwtAlg::parse(alg_name)
            .filter(|a| role.jwt_supported_algs.iter().any(|n| n == a.name()))
            .ok_or_else(|| {
                refused(format!(
                    "the JWT's algorithm `{}` is not accepted by this role",
                    jwks::printable(alg_name)
                ))
            })?;
        let kid = token.header_str("kid");
        let candidates: Vec<keys::ExternalKey> = match &role.jwks_url {
            Some(url) => {
                let url = JwksUrl::parse(url).map_err(JwtAuthError::Internal)?;
                let set = self
                    .jwks
                    .keys(&url, role.jwks_ca_pem.as_deref(), kid, fetch, self.clock())
                    .await?;
                match kid {
                    Some(kid) => {
                        if let Some((_, why)) = set.refused.iter().find(|(k, _)| k == kid) {
                            return Err(refused(format!(
                                "the issuer's key `{}` is unusable: {why}",
                                jwks::printable(kid)
                            )));
                        }
                        let found: Vec<_> = set
                            .keys
                            .iter()
                            .filter(|k| k.kid.as_deref() == Some(kid))
                            .cloned()
                            .collect();
                        if found.is_empty() {
                            return Err(refused(format!(
                                "the issuer publishes no key `{}`",
                                jwks::printable(kid)
                            )));
                        }
                        found
                    }
                    None => set.keys.clone(),
                }
            }
            None => role
                .jwt_validation_pubkeys
                .iter()
                .filter_map(|pem| keys::ExternalKey::from_pem(pem).ok())
                .collect(),
        };
        let fitting: Vec<_> = candidates.iter().filter(|k| k.fits(alg)).collect();
        if fitting.is_empty() {
            return Err(refused(format!(
                "no key of the issuer verifies {} signatures",
                alg.name()
            )));
        }
        if fitting
            .iter()
            .any(|k| k.verifies(alg, token.signing_input(), token.signature()))
        {
            Ok(())
        } else {
            Err(refused("the JWT's signature does not verify"))
        }
    }
}

/// The claim checks of a signature-verified JWT against its role; returns
/// the value of the role's `user_claim`. Times come from the token, so
/// all arithmetic saturates.
fn check_claims(role: &JwtRole, token: &Unverified, now: u64) -> Result<String, JwtAuthError> {
    let claims = &token.claims;
    if claims.get("iss").and_then(Value::as_str) != Some(role.bound_issuer.as_str()) {
        return Err(refused(
            "the JWT's issuer (`iss`) is not the role's bound issuer",
        ));
    }
    let audiences: Vec<&str> = role.bound_audiences.iter().map(String::as_str).collect();
    if !audience_has(claims.get("aud"), &audiences) {
        return Err(refused(
            "the JWT's audience (`aud`) names none of the role's bound audiences",
        ));
    }
    let date = |name: &str| {
        numeric_date(token, name).map_err(|_| {
            refused(format!(
                "the JWT's `{name}` must be a whole, non-negative number of seconds since 1970"
            ))
        })
    };
    let exp = date("exp")?.ok_or_else(|| refused("the JWT has no expiry (`exp`)"))?;
    let skew = role.clock_skew_leeway;
    if now
        > exp
            .saturating_add(role.expiration_leeway)
            .saturating_add(skew)
    {
        return Err(refused("the JWT has expired"));
    }
    if let Some(nbf) = date("nbf")? {
        if nbf
            > now
                .saturating_add(role.not_before_leeway)
                .saturating_add(skew)
        {
            return Err(refused("the JWT is not valid yet (`nbf`)"));
        }
    }
    if let Some(iat) = date("iat")? {
        if iat > now.saturating_add(skew) {
            return Err(refused("the JWT was issued in the future (`iat`)"));
        }
    }
    if let Some(sub) = &role.bound_subject {
        if claims.get("sub").and_then(Value::as_str) != Some(sub.as_str()) {
            return Err(refused(
                "the JWT's subject (`sub`) is not the role's bound subject",
            ));
        }
    }
    bounds::check(claims, &role.bound_claims, role.bound_claims_type).map_err(|m| match m {
        bounds::Mismatch::Missing(c) => refused(format!(
            "the JWT lacks the bound claim `{}`",
            jwks::printable(&c)
        )),
        bounds::Mismatch::Differs(c) => refused(format!(
            "the JWT's claim `{}` matches none of the role's values",
            jwks::printable(&c)
        )),
    })?;
    match bounds::claim_values(claims, &role.user_claim).as_deref() {
        Some([one]) => Ok(one.clone()),
        _ => Err(refused(format!(
            "the JWT's `{}` claim (the role's user_claim) is missing or not a single value",
            jwks::printable(&role.user_claim)
        ))),
    }
}
