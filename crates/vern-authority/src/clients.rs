//! OAuth2 clients: services (one tenant's environment) and operators
//! (platform roles). Secrets are generated here with 256 bits of entropy,
//! returned once, and stored only as an HMAC under a per-deployment key.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use vern_core::{EnvironmentId, ProjectId, Scope, TenantId};

use crate::jwk::PublicJwk;
use crate::AuthError;

/// What kind of principal a client is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ClientKind {
    /// A workload in one environment.
    Service {
        /// Its tenant.
        tenant: TenantIdText,
        /// Its project.
        project: String,
        /// Its environment.
        environment: String,
    },
    /// An operator: of the platform, or (with a tenant) of one tenant.
    Operator {
        /// Roles.
        roles: Vec<String>,
        /// The tenant a tenant operator (such as a tenant administrator)
        /// is confined to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tenant: Option<TenantIdText>,
    },
    /// A node running `vern agent`: it may only fetch SVIDs for the
    /// services its registration entries name.
    Node,
}

/// A tenant name as stored (validated on the way in).
pub type TenantIdText = String;

impl ClientKind {
    /// The service's scope, re-checked on the way out of storage.
    pub fn scope(&self) -> Option<Scope> {
        match self {
            Self::Service {
                tenant,
                project,
                environment,
            } => Some(Scope {
                tenant: TenantId::parse(tenant).ok()?,
                project: ProjectId::parse(project).ok()?,
                environment: EnvironmentId::parse(environment).ok()?,
            }),
            Self::Operator { .. } | Self::Node => None,
        }
    }

    /// The claims that carry this kind in an access token and in
    /// introspection: a service's scope, or an operator's roles (and a
    /// tenant operator's tenant).
    pub fn claims(&self) -> Vec<(&'static str, Value)> {
        match self {
            Self::Service {
                tenant,
                project,
                environment,
            } => vec![
                ("tenant", Value::from(tenant.as_str())),
                ("project", Value::from(project.as_str())),
                ("environment", Value::from(environment.as_str())),
            ],
            Self::Operator { roles, tenant } => {
                let mut out = vec![("roles", Value::from(roles.clone()))];
                if let Some(t) = tenant {
                    out.push(("tenant", Value::from(t.as_str())));
                }
                out
            }
            Self::Node => vec![("node", Value::from(true))],
        }
    }

    /// A tenant operator's tenant, re-checked on the way out of storage.
    pub fn operator_tenant(&self) -> Option<TenantId> {
        match self {
            Self::Operator {
                tenant: Some(t), ..
            } => TenantId::parse(t).ok(),
            _ => None,
        }
    }
}

/// A client as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRecord {
    /// The client id.
    pub client_id: String,
    /// The short name within its scope.
    pub name: String,
    /// Service or operator.
    #[serde(flatten)]
    pub kind: ClientKind,
    /// HMAC-SHA256 of the secret (base64url), when the client has one.
    pub secret_hmac: Option<String>,
    /// Public JWKs for `private_key_jwt`.
    #[serde(default)]
    pub jwks: Vec<Value>,
    /// Scopes the client may request.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Whether every token must be DPoP-bound.
    #[serde(default)]
    pub dpop_bound: bool,
    /// Token lifetime in seconds, when not the default.
    pub token_ttl: Option<u64>,
    /// For `tls_client_auth` (RFC 8705): a DNS or URI SAN the client's
    /// certificate (from the configured client CA) must carry.
    #[serde(default)]
    pub tls_client_auth_san: Option<String>,
    /// Creation time (Unix seconds).
    pub created: u64,
    /// Time of the last change (Unix seconds), set at creation and by every
    /// apply that changes the record. Tokens issued before it are refused,
    /// so narrowed roles or scopes take effect at once. Records written
    /// before this field existed read 0; see [`ClientRecord::changed_at`].
    #[serde(default)]
    pub updated: u64,
    /// The NATS subjects the client declares, in its tenant's account.
    /// Absent when none, so records without it keep their shape.
    #[serde(default, skip_serializing_if = "NatsSubjects::is_empty")]
    pub nats: NatsSubjects,
}

/// The NATS subjects a client declares it publishes on and subscribes
/// to, relative to its tenant's account. Stored as given; `vern-server`
/// checks them as NATS subjects before they get here, and policies decide
/// at each connect what a connection finally gets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSubjects {
    /// Subjects it publishes on.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Subjects it subscribes to.
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// Subjects of other tenants' accounts it imports; each exists only
    /// while a policy grants it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub imports: Vec<NatsImport>,
}

/// A subject of another tenant's account a client imports into its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsImport {
    /// The tenant whose account exports it.
    pub tenant: String,
    /// The subject, as the exporting account names it.
    pub subject: String,
    /// `stream` (the client subscribes to the other tenant's messages) or
    /// `service` (the client sends requests the other tenant answers).
    #[serde(default = "stream")]
    pub kind: String,
}

fn stream() -> String {
    "stream".to_owned()
}

impl NatsSubjects {
    /// Whether nothing is declared.
    pub fn is_empty(&self) -> bool {
        self.publish.is_empty() && self.subscribe.is_empty() && self.imports.is_empty()
    }
}

impl ClientRecord {
    /// When the record last changed: `updated`, or `created` for records
    /// older than that field.
    pub fn changed_at(&self) -> u64 {
        self.updated.max(self.created)
    }
}

/// What to create. Unknown fields are refused, so a typo cannot silently
/// drop a setting such as `dpop_bound`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSpec {
    /// Tenant (services).
    pub tenant: Option<String>,
    /// Project (services).
    pub project: Option<String>,
    /// Environment (services).
    pub environment: Option<String>,
    /// Name within the scope (or the operator's name).
    pub name: String,
    /// Operator roles; giving any makes an operator client.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Allowed scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Require DPoP-bound tokens.
    #[serde(default)]
    pub dpop_bound: bool,
    /// Public JWKs for `private_key_jwt`; a client with keys gets no secret.
    #[serde(default)]
    pub jwks: Vec<Value>,
    /// Token lifetime in seconds.
    pub token_ttl: Option<u64>,
    /// Authenticate with a client certificate carrying this DNS or URI SAN
    /// (RFC 8705 `tls_client_auth`); such a client gets no secret, and its
    /// tokens are bound to the certificate.
    pub tls_client_auth_san: Option<String>,
    /// NATS subjects (services only).
    #[serde(default)]
    pub nats: NatsSubjects,
    /// A node (`vern agent`): no tenant, no roles, no scopes.
    #[serde(default)]
    pub node: bool,
}

/// A created client and, when generated, its secret (shown once).
#[derive(Debug)]
pub struct CreatedClient {
    /// The stored record.
    pub record: ClientRecord,
    /// The secret, when one was generated.
    pub secret: Option<vern_crypto::SecretBytes>,
}

fn check_scope_name(s: &str) -> Result<(), AuthError> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
    if ok {
        Ok(())
    } else {
        Err(AuthError::InvalidClientSpec(format!(
            "scope `{}` must be 1–128 visible ASCII characters without quotes or backslashes",
            s.escape_default()
        )))
    }
}

impl ClientSpec {
    /// Validates the spec and derives the client id: `svc.<tenant>.<project>.<environment>.<name>`,
    /// `op.<name>` or `node.<name>`.
    pub(crate) fn validate(&self) -> Result<(String, ClientKind), AuthError> {
        let name = vern_core::TenantId::parse(&self.name).map_err(|e| {
            AuthError::InvalidClientSpec(e.to_string().replace("tenant name", "client name"))
        })?;
        for s in &self.scopes {
            check_scope_name(s)?;
        }
        for jwk in &self.jwks {
            PublicJwk::parse(jwk).map_err(|e| {
                AuthError::InvalidClientSpec(format!("a key in jwks is unusable: {e}"))
            })?;
        }
        if self
            .tls_client_auth_san
            .as_deref()
            .is_some_and(|s| s.is_empty() || s.len() > 255)
        {
            return Err(AuthError::InvalidClientSpec(
                "tls_client_auth_san must be 1–255 characters".to_owned(),
            ));
        }
        if self.tls_client_auth_san.is_some() && !self.jwks.is_empty() {
            return Err(AuthError::InvalidClientSpec(
                "a client authenticates either with keys or with a certificate".to_owned(),
            ));
        }
        if !self.nats.is_empty() && self.environment.is_none() {
            return Err(AuthError::InvalidClientSpec(
                "only services declare NATS subjects: operators have no NATS account".to_owned(),
            ));
        }
        if self.token_ttl == Some(0) {
            return Err(AuthError::InvalidClientSpec(
                "token_ttl must be positive".to_owned(),
            ));
        }
        if self.node {
            if self.tenant.is_some()
                || self.project.is_some()
                || self.environment.is_some()
                || !self.roles.is_empty()
                || !self.scopes.is_empty()
            {
                return Err(AuthError::InvalidClientSpec(
                    "a node has no tenant, project, environment, roles or scopes".to_owned(),
                ));
            }
            return Ok((format!("node.{name}"), ClientKind::Node));
        }
        match (&self.tenant, &self.project, &self.environment) {
            (Some(t), Some(p), Some(e)) => {
                if !self.roles.is_empty() {
                    return Err(AuthError::InvalidClientSpec(
                        "a service client has no operator roles".to_owned(),
                    ));
                }
                let scope = Scope {
                    tenant: TenantId::parse(t)
                        .map_err(|e| AuthError::InvalidClientSpec(e.to_string()))?,
                    project: ProjectId::parse(p)
                        .map_err(|e| AuthError::InvalidClientSpec(e.to_string()))?,
                    environment: EnvironmentId::parse(e)
                        .map_err(|e| AuthError::InvalidClientSpec(e.to_string()))?,
                };
                let id = format!(
                    "svc.{}.{}.{}.{name}",
                    scope.tenant, scope.project, scope.environment
                );
                Ok((
                    id,
                    ClientKind::Service {
                        tenant: scope.tenant.to_string(),
                        project: scope.project.to_string(),
                        environment: scope.environment.to_string(),
                    },
                ))
            }
            (tenant, None, None) if tenant.is_none() || !self.roles.is_empty() => {
                if self.roles.is_empty() {
                    return Err(AuthError::InvalidClientSpec(
                        "give --tenant, --project and --env for a service, or roles for an operator (with --tenant alone for a tenant operator)".to_owned(),
                    ));
                }
                for r in &self.roles {
                    check_scope_name(r)?;
                }
                let tenant = tenant
                    .as_deref()
                    .map(TenantId::parse)
                    .transpose()
                    .map_err(|e| AuthError::InvalidClientSpec(e.to_string()))?;
                // Tenant operators live in their tenant's part of the id
                // space, so no tenant can claim a platform operator's name.
                let id = match &tenant {
                    Some(t) => format!("op.{t}.{name}"),
                    None => format!("op.{name}"),
                };
                Ok((
                    id,
                    ClientKind::Operator {
                        roles: self.roles.clone(),
                        tenant: tenant.map(|t| t.to_string()),
                    },
                ))
            }
            _ => Err(AuthError::InvalidClientSpec(
                "a service client needs all of tenant, project and environment; a tenant operator only a tenant".to_owned(),
            )),
        }
    }
}
