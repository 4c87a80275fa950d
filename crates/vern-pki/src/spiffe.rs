//! SPIFFE identities: trust domains and SPIFFE IDs parsed per the SPIFFE
//! ID specification, and the SPIFFE ID each kind of Vern principal gets.
//!
//! The ID always comes from the verified principal, never from a request:
//! a service `svc.<tenant>.<project>.<env>.<name>` is
//! `spiffe://<td>/t/<tenant>/p/<project>/e/<env>/s/<name>`, a platform
//! operator `op.<name>` is `spiffe://<td>/operator/<name>`, a tenant
//! operator `op.<tenant>.<name>` is `spiffe://<td>/t/<tenant>/operator/<name>`,
//! and Vern's own components live under `spiffe://<td>/vern/`. The three
//! trees cannot meet: scope names never contain `/`, and no principal's
//! path starts with `vern`.

use std::fmt;

use vern_core::{Principal, PrincipalKind, Scope, TenantId};

/// The longest SPIFFE ID the specification allows, in bytes.
pub const MAX_ID_LEN: usize = 2048;
/// The longest trust domain name the specification allows, in bytes.
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;
const SCHEME: &str = "spiffe://";

/// Why a SPIFFE ID or trust domain was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    /// The ID does not start with `spiffe://`.
    #[error("a SPIFFE ID starts with `spiffe://` (lowercase)")]
    Scheme,
    /// The trust domain is empty.
    #[error("the trust domain is empty")]
    EmptyTrustDomain,
    /// The trust domain is longer than 255 bytes.
    #[error("the trust domain is {0} bytes long; the limit is 255")]
    TrustDomainTooLong(usize),
    /// The trust domain holds a character outside its alphabet.
    #[error("the trust domain holds {0:?}; use lowercase letters, digits, `.`, `-` and `_`")]
    TrustDomainChar(char),
    /// The ID is longer than 2048 bytes.
    #[error("the SPIFFE ID is {0} bytes long; the limit is 2048")]
    TooLong(usize),
    /// A path segment is empty (`//`, or a trailing `/`).
    #[error("the path has an empty segment (a `//` or a trailing `/`)")]
    EmptySegment,
    /// A path segment is `.` or `..`.
    #[error("the path has a `.` or `..` segment")]
    DotSegment,
    /// A path segment holds a character outside its alphabet.
    #[error("the path holds {0:?}; use letters, digits, `.`, `-` and `_`")]
    PathChar(char),
}

/// A trust domain name: lowercase letters, digits, `.`, `-` and `_`, at
/// most 255 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// The trust domain when none is configured.
    pub const DEFAULT: &'static str = "vern.internal";

    /// Parses a trust domain name (without `spiffe://`).
    pub fn parse(s: &str) -> Result<Self, SpiffeIdError> {
        if s.is_empty() {
            return Err(SpiffeIdError::EmptyTrustDomain);
        }
        if s.len() > MAX_TRUST_DOMAIN_LEN {
            return Err(SpiffeIdError::TrustDomainTooLong(s.len()));
        }
        if let Some(c) = s.chars().find(|c| !trust_domain_char(*c)) {
            return Err(SpiffeIdError::TrustDomainChar(c));
        }
        Ok(Self(s.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trust domain's own ID, `spiffe://<name>` (the URI SAN of CA
    /// certificates).
    pub fn id(&self) -> String {
        format!("{SCHEME}{}", self.0)
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn trust_domain_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')
}

fn path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}

/// A workload's SPIFFE ID: a trust domain and a non-empty path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: TrustDomain,
    /// The path, starting with `/`.
    path: String,
}

impl SpiffeId {
    /// Parses `spiffe://<trust domain><path>` with a non-empty path: no
    /// port, user info, query, fragment or percent-encoding; path segments
    /// non-empty, not `.` or `..`, of letters, digits, `.`, `-` and `_`.
    pub fn parse(s: &str) -> Result<Self, SpiffeIdError> {
        if s.len() > MAX_ID_LEN {
            return Err(SpiffeIdError::TooLong(s.len()));
        }
        let rest = s.strip_prefix(SCHEME).ok_or(SpiffeIdError::Scheme)?;
        let (td, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let trust_domain = TrustDomain::parse(td)?;
        if path.is_empty() {
            return Err(SpiffeIdError::EmptySegment);
        }
        Self::new(trust_domain, path)
    }

    /// `path` (starting with `/`) under `trust_domain`, checked.
    fn new(trust_domain: TrustDomain, path: &str) -> Result<Self, SpiffeIdError> {
        let Some(segments) = path.strip_prefix('/') else {
            return Err(SpiffeIdError::EmptySegment);
        };
        for segment in segments.split('/') {
            if segment.is_empty() {
                return Err(SpiffeIdError::EmptySegment);
            }
            if segment == "." || segment == ".." {
                return Err(SpiffeIdError::DotSegment);
            }
            if let Some(c) = segment.chars().find(|c| !path_char(*c)) {
                return Err(SpiffeIdError::PathChar(c));
            }
        }
        let len = SCHEME.len() + trust_domain.0.len() + path.len();
        if len > MAX_ID_LEN {
            return Err(SpiffeIdError::TooLong(len));
        }
        Ok(Self {
            trust_domain,
            path: path.to_owned(),
        })
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The path, starting with `/`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The service client (`svc.<tenant>.<project>.<env>.<name>`) this ID
    /// names, when it is a service's
    /// (`/t/<tenant>/p/<project>/e/<env>/s/<name>`); `None` for operators,
    /// nodes, Vern's components and anything else.
    pub fn service_client_id(&self) -> Option<String> {
        let segments: Vec<&str> = self.path.strip_prefix('/')?.split('/').collect();
        let ["t", tenant, "p", project, "e", environment, "s", name] = segments.as_slice() else {
            return None;
        };
        let scope = Scope {
            tenant: TenantId::parse(tenant).ok()?,
            project: vern_core::ProjectId::parse(project).ok()?,
            environment: vern_core::EnvironmentId::parse(environment).ok()?,
        };
        let name = checked_name(name)?;
        Some(format!(
            "svc.{}.{}.{}.{name}",
            scope.tenant, scope.project, scope.environment
        ))
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}{}", self.trust_domain.0, self.path)
    }
}

/// Why a principal has no SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The root token of init is break-glass access, not a workload.
    #[error("the root token has no SPIFFE ID; use a client of your own")]
    Root,
    /// The principal's id does not have the shape its kind gives it.
    #[error("principal `{0}` does not have the shape of its kind, so it has no SPIFFE ID")]
    Malformed(String),
}

/// What a SPIFFE ID names: a service, an operator, or one of Vern's own
/// components. Built from a verified principal, or for Vern itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Workload {
    /// A service client `svc.<tenant>.<project>.<env>.<name>`.
    Service {
        /// Its environment.
        scope: Scope,
        /// Its name within the environment.
        name: String,
    },
    /// An operator client: `op.<name>`, or `op.<tenant>.<name>` for a
    /// tenant operator.
    Operator {
        /// A tenant operator's tenant.
        tenant: Option<TenantId>,
        /// Its name.
        name: String,
    },
    /// One of Vern's own components, such as `server`.
    Component(String),
    /// A node running `vern agent`: `node.<name>`.
    Node {
        /// Its name.
        name: String,
    },
}

impl Workload {
    /// The workload an authenticated principal is. The root token is none.
    pub fn of(principal: &Principal) -> Result<Self, IdentityError> {
        let malformed = || IdentityError::Malformed(principal.id.chars().take(128).collect());
        match &principal.kind {
            PrincipalKind::Service { scope } => {
                let prefix = format!(
                    "svc.{}.{}.{}.",
                    scope.tenant, scope.project, scope.environment
                );
                let name = principal.id.strip_prefix(&prefix).ok_or_else(malformed)?;
                Ok(Self::Service {
                    scope: scope.clone(),
                    name: checked_name(name).ok_or_else(malformed)?,
                })
            }
            PrincipalKind::Operator { root: true, .. } => Err(IdentityError::Root),
            PrincipalKind::Operator { tenant, .. } => {
                let prefix = match tenant {
                    Some(t) => format!("op.{t}."),
                    None => "op.".to_owned(),
                };
                let name = principal.id.strip_prefix(&prefix).ok_or_else(malformed)?;
                Ok(Self::Operator {
                    tenant: tenant.clone(),
                    name: checked_name(name).ok_or_else(malformed)?,
                })
            }
            PrincipalKind::Node => {
                let name = principal.id.strip_prefix("node.").ok_or_else(malformed)?;
                Ok(Self::Node {
                    name: checked_name(name).ok_or_else(malformed)?,
                })
            }
        }
    }

    /// The workload's SPIFFE ID in `trust_domain`.
    pub fn spiffe_id(&self, trust_domain: &TrustDomain) -> Result<SpiffeId, SpiffeIdError> {
        let path = match self {
            Self::Service { scope, name } => format!(
                "/t/{}/p/{}/e/{}/s/{name}",
                scope.tenant, scope.project, scope.environment
            ),
            Self::Operator { tenant: None, name } => format!("/operator/{name}"),
            Self::Operator {
                tenant: Some(t),
                name,
            } => format!("/t/{t}/operator/{name}"),
            Self::Component(name) => format!("/vern/{name}"),
            Self::Node { name } => format!("/vern/agent/{name}"),
        };
        SpiffeId::new(trust_domain.clone(), &path)
    }
}

/// A client's short name: the alphabet of scope names (which keeps it a
/// single SPIFFE path segment), or nothing.
fn checked_name(name: &str) -> Option<String> {
    TenantId::parse(name).ok().map(|n| n.as_str().to_owned())
}

#[cfg(test)]
mod tests;
