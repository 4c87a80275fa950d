//! The typed request model, turned into Cedar entities per decision.

use std::collections::BTreeMap;
use std::sync::Arc;

use cedar_policy::{Context, Entities, EntityId, EntityTypeName, EntityUid};
use cedar_policy_core::ast::{self, PartialValue, Value};
use cedar_policy_core::entities::{self as ast_entities, NoEntitiesSchema, TCComputation};
use cedar_policy_core::extensions::Extensions;
use smol_str::SmolStr;
use vern_core::{ProjectId, Scope, TenantId};

/// Every action of the schema, as API operations name them.
pub const ACTIONS: &[&str] = &[
    "secret.read",
    "secret.write",
    "secret.delete",
    "secret.metadata.read",
    "secret.list",
    "sys.seal",
    "sys.key-status",
    "sys.rotate-keyring",
    "sys.rotate-root",
    "kv.config",
    "client.manage",
    "client.read",
    "keys.rotate",
    "authz.check",
    "policy.reload",
    "policy.read",
    "audit.read",
    "audit.hash",
    "token.lookup-self",
    "token.renew-self",
    "token.revoke-self",
    "token.lookup",
    "kv.mount.read",
    "svid.issue",
    "pki.rotate",
    "pki.import",
    "pki.read",
    "attest.sign",
    "attest.promote",
    "attest.gate",
    "attest.rotate",
    "evidence.read",
    "evidence.import",
    "nats.publish",
    "nats.subscribe",
    "nats.config",
    "nats.paths",
    "nats.site",
    "nats.mapping",
    "workload.register",
    "workload.read",
];

/// Who asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// Client id (or `root`).
    pub id: String,
    /// Service or operator.
    pub kind: SubjectKind,
}

/// The kinds of principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectKind {
    /// A workload in one environment, with its token's scopes.
    Service {
        /// Its environment.
        scope: Scope,
        /// Granted scopes.
        scopes: Vec<String>,
    },
    /// An operator: of the platform, or (with a tenant) of one tenant.
    Operator {
        /// Roles.
        roles: Vec<String>,
        /// The tenant a tenant operator is confined to.
        tenant: Option<TenantId>,
        /// Whether this is the root token of init.
        root: bool,
    },
    /// A node running `vern agent`, with the client ids of the services
    /// its registration entries name (filled in where a decision needs
    /// them: obtaining an SVID for a workload, reading its entries).
    Node {
        /// Services of the node's registration entries.
        services: Vec<String>,
    },
}

/// What is asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// The platform itself (sys, clients, policies).
    Platform,
    /// A tenant (a LIST folder).
    Tenant(TenantId),
    /// A project (a LIST folder).
    Project(TenantId, ProjectId),
    /// An environment (a LIST folder).
    Environment(Scope),
    /// A service, as the subject of client management or of a decision
    /// request.
    Service {
        /// Its client id.
        id: String,
        /// Its environment.
        scope: Scope,
    },
    /// An operator, as the subject of client management or of a decision
    /// request.
    Operator {
        /// Its client id.
        id: String,
        /// Its tenant, for a tenant operator.
        tenant: Option<TenantId>,
    },
    /// A node, as the subject of client management or of a decision
    /// request.
    Node {
        /// Its client id.
        id: String,
    },
    /// One secret.
    Secret {
        /// The KV mount.
        mount: String,
        /// The secret's path, `<tenant>/<project>/<environment>/<name…>`.
        path: String,
        /// Its environment.
        scope: Scope,
    },
    /// A NATS subject (or pattern) in a tenant's account; build it with
    /// [`Resource::nats_subject`], which marks privileged subjects.
    NatsSubject {
        /// The tenant whose account it is in.
        tenant: TenantId,
        /// The subject as declared.
        subject: String,
        /// The server's own `$` namespaces, or a leading wildcard.
        privileged: bool,
    },
}

/// How the caller's token was bound to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// A bearer token (or the root token).
    None,
    /// DPoP.
    Dpop,
    /// A client certificate (RFC 8705).
    Mtls,
}

impl Binding {
    /// `none`, `dpop` or `mtls`, as policies and audit records spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Dpop => "dpop",
            Self::Mtls => "mtls",
        }
    }
}

/// One authorization question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The principal.
    pub subject: Subject,
    /// The action, one of [`ACTIONS`].
    pub action: String,
    /// The resource.
    pub resource: Resource,
    /// The caller's address.
    pub source_ip: String,
    /// Unix seconds.
    pub time: i64,
    /// Token binding.
    pub binding: Binding,
    /// The DNS names an SVID request asks for (`svid.issue`), in the
    /// context as `dns_names`; empty for every other request.
    pub dns_names: Vec<String>,
}

/// The entity types of the schema.
const TYPES: [&str; 10] = [
    "Vern::Platform",
    "Vern::Tenant",
    "Vern::Project",
    "Vern::Environment",
    "Vern::Service",
    "Vern::Operator",
    "Vern::Node",
    "Vern::Secret",
    "Vern::NatsSubject",
    "Vern::Action",
];

/// Entity type names, parsed once: Cedar's parser is far slower than the
/// rest of a decision, and a scan of ten names is faster than hashing one.
fn type_name(ty: &str) -> Result<EntityTypeName, String> {
    use std::sync::OnceLock;
    static NAMES: OnceLock<Vec<Option<EntityTypeName>>> = OnceLock::new();
    let names = NAMES.get_or_init(|| TYPES.iter().map(|n| n.parse().ok()).collect());
    match TYPES
        .iter()
        .position(|t| *t == ty)
        .and_then(|i| names.get(i))
    {
        Some(Some(t)) => Ok(t.clone()),
        _ => ty.parse().map_err(|e| format!("{e}")),
    }
}

pub(crate) fn uid(ty: &str, id: &str) -> Result<EntityUid, String> {
    Ok(EntityUid::from_type_name_and_id(
        type_name(ty)?,
        EntityId::new(id),
    ))
}

/// The entities of one request, each built once: the principal's and the
/// resource's chains often share a tenant, project and environment, and
/// the first entity added under a uid wins, so a principal asking about
/// itself keeps its own attributes.
///
/// Every entity is built with all its ancestors, not only its parent: the
/// hierarchy of a request is a few chains (tenant → project → environment
/// → service or secret) that a uid names completely, so the transitive
/// closure is known when the entity is built. Handing Cedar closed
/// entities spares it computing the closure on every decision, which was
/// a quarter of an uncached decision; `closed_entities_match_cedars_closure`
/// holds the two equal.
#[derive(Default)]
struct Store {
    entities: Vec<ast::Entity>,
}

impl Store {
    /// Adds the entity `attrs` describes for `u`, under `chain` (its parent
    /// first, then the parent's ancestors), unless `u` is already here.
    fn add(
        &mut self,
        u: &ast::EntityUID,
        chain: &[&ast::EntityUID],
        attrs: impl FnOnce() -> Vec<(&'static str, Value)>,
    ) {
        if self.entities.iter().any(|e| e.uid() == u) {
            return;
        }
        let mut chain = chain.iter().map(|a| (*a).clone());
        let parents = chain.next().into_iter().collect();
        let indirect = chain.collect();
        self.entities.push(ast::Entity::new_with_attr_partial_value(
            u.clone(),
            attrs()
                .into_iter()
                .map(|(k, v)| (SmolStr::new_static(k), PartialValue::from(v))),
            indirect,
            parents,
            std::iter::empty(),
        ));
    }

    /// Adds an entity without attributes (a tenant, project, environment,
    /// the platform).
    fn plain(&mut self, u: &ast::EntityUID, chain: &[&ast::EntityUID]) {
        self.add(u, chain, Vec::new);
    }

    /// Hands the entities to Cedar as they are: closed, and built here from
    /// typed values, so checking them against the schema on every decision
    /// would only cost time (the request itself is still validated).
    fn into_entities(self) -> Result<Entities, String> {
        ast_entities::Entities::from_entities(
            self.entities,
            None::<&NoEntitiesSchema>,
            TCComputation::AssumeAlreadyComputed,
            Extensions::none(),
        )
        .map(Entities::from)
        .map_err(|e| e.to_string())
    }
}

fn core_uid(ty: &str, id: &str) -> Result<ast::EntityUID, String> {
    uid(ty, id).map(ast::EntityUID::from)
}

fn tenant_uid(t: &TenantId) -> Result<ast::EntityUID, String> {
    core_uid("Vern::Tenant", t.as_str())
}

fn project_uid(t: &TenantId, p: &ProjectId) -> Result<ast::EntityUID, String> {
    core_uid("Vern::Project", &format!("{t}/{p}"))
}

/// The tenant → project → environment chain of a scope, as
/// `[environment, project, tenant]`: an entity in the environment is under
/// all three, in that order.
fn scope_chain(s: &Scope, out: &mut Store) -> Result<[ast::EntityUID; 3], String> {
    let t = tenant_uid(&s.tenant)?;
    let p = project_uid(&s.tenant, &s.project)?;
    let e = core_uid("Vern::Environment", &s.to_string())?;
    out.plain(&t, &[]);
    out.plain(&p, &[&t]);
    out.plain(&e, &[&p, &t]);
    Ok([e, p, t])
}

fn strings_value(v: &[String]) -> Value {
    Value::set(v.iter().map(|s| Value::from(s.as_str())), None)
}

/// A service entity in its environment, with the tenant, project and
/// environment it needs.
fn service_entity(
    id: &str,
    scope: &Scope,
    scopes: &[String],
    out: &mut Store,
) -> Result<ast::EntityUID, String> {
    let [e, p, t] = scope_chain(scope, out)?;
    let u = core_uid("Vern::Service", id)?;
    out.add(&u, &[&e, &p, &t], || {
        vec![
            ("tenant", Value::from(t.clone())),
            ("environment", Value::from(e.clone())),
            ("scopes", strings_value(scopes)),
        ]
    });
    Ok(u)
}

/// An operator entity (a member of its tenant, for a tenant operator),
/// with the tenant it needs.
fn operator_entity(
    id: &str,
    roles: &[String],
    tenant: Option<&TenantId>,
    root: bool,
    out: &mut Store,
) -> Result<ast::EntityUID, String> {
    let u = core_uid("Vern::Operator", id)?;
    let tenant = tenant.map(tenant_uid).transpose()?;
    if let Some(t) = &tenant {
        out.plain(t, &[]);
    }
    let chain: Vec<&ast::EntityUID> = tenant.iter().collect();
    out.add(&u, &chain, || {
        let mut attrs = vec![("roles", strings_value(roles)), ("root", Value::from(root))];
        if let Some(t) = &tenant {
            attrs.push(("tenant", Value::from(t.clone())));
        }
        attrs
    });
    Ok(u)
}

/// A node entity; its `services` are entity references, so the services
/// themselves need not be in the store.
fn node_entity(id: &str, services: &[String], out: &mut Store) -> Result<ast::EntityUID, String> {
    let u = core_uid("Vern::Node", id)?;
    let refs = services
        .iter()
        .map(|s| core_uid("Vern::Service", s).map(Value::from))
        .collect::<Result<Vec<_>, _>>()?;
    out.add(&u, &[], || vec![("services", Value::set(refs, None))]);
    Ok(u)
}

/// The Cedar context of a request. Its attributes have the same types
/// whatever the values, which is what lets the engine check its shape
/// against the schema once instead of on every decision. Built as values,
/// not as expressions Cedar would evaluate into the same values.
pub(crate) fn context(
    source_ip: &str,
    time: i64,
    binding: Binding,
    dns_names: &[String],
    cross_tenant_grant: bool,
) -> Context {
    let attrs = BTreeMap::from([
        (SmolStr::new_static("source_ip"), Value::from(source_ip)),
        (SmolStr::new_static("time"), Value::from(time)),
        (SmolStr::new_static("binding"), Value::from(binding.name())),
        (SmolStr::new_static("dns_names"), strings_value(dns_names)),
        (
            SmolStr::new_static("cross_tenant_grant"),
            Value::from(cross_tenant_grant),
        ),
    ]);
    Context::from(ast::Context::Value(Arc::new(attrs)))
}

impl Query {
    /// Whether the request crosses tenants: only then can a cross-tenant
    /// grant matter.
    pub(crate) fn crosses_tenants(&self) -> bool {
        let Some(own) = self.subject.tenant() else {
            return false;
        };
        self.resource.tenant().is_some_and(|t| t != own)
    }

    /// The Cedar context of this query.
    pub(crate) fn context(&self, cross_tenant_grant: bool) -> Context {
        context(
            &self.source_ip,
            self.time,
            self.binding,
            &self.dns_names,
            cross_tenant_grant,
        )
    }

    /// The Cedar principal, resource and entities of this query.
    pub(crate) fn to_cedar(&self) -> Result<(EntityUid, EntityUid, Entities), String> {
        let mut ents = Store::default();
        // The principal's entities come first (see `Store`).
        let principal = match &self.subject.kind {
            SubjectKind::Service { scope, scopes } => {
                service_entity(&self.subject.id, scope, scopes, &mut ents)?
            }
            SubjectKind::Operator {
                roles,
                tenant,
                root,
            } => operator_entity(&self.subject.id, roles, tenant.as_ref(), *root, &mut ents)?,
            SubjectKind::Node { services } => node_entity(&self.subject.id, services, &mut ents)?,
        };
        let resource = match &self.resource {
            Resource::Platform => {
                let u = core_uid("Vern::Platform", "vern")?;
                ents.plain(&u, &[]);
                u
            }
            Resource::Tenant(t) => {
                let u = tenant_uid(t)?;
                ents.plain(&u, &[]);
                u
            }
            Resource::Project(t, p) => {
                let tu = tenant_uid(t)?;
                ents.plain(&tu, &[]);
                let u = project_uid(t, p)?;
                ents.plain(&u, &[&tu]);
                u
            }
            Resource::Environment(s) => {
                let [e, _, _] = scope_chain(s, &mut ents)?;
                e
            }
            // The same entity as the principal when one asks about itself:
            // the principal's is kept.
            Resource::Service { id, scope } => service_entity(id, scope, &[], &mut ents)?,
            Resource::Operator { id, tenant } => {
                operator_entity(id, &[], tenant.as_ref(), false, &mut ents)?
            }
            Resource::NatsSubject {
                tenant,
                subject,
                privileged,
            } => {
                let t = tenant_uid(tenant)?;
                ents.plain(&t, &[]);
                let u = core_uid("Vern::NatsSubject", &format!("{tenant}:{subject}"))?;
                ents.add(&u, &[&t], || {
                    vec![
                        ("tenant", Value::from(t.clone())),
                        ("subject", Value::from(subject.as_str())),
                        ("privileged", Value::from(*privileged)),
                    ]
                });
                u
            }
            Resource::Node { id } => node_entity(id, &[], &mut ents)?,
            Resource::Secret { mount, path, scope } => {
                let [e, p, t] = scope_chain(scope, &mut ents)?;
                let u = core_uid("Vern::Secret", &format!("{mount}:{path}"))?;
                ents.add(&u, &[&e, &p, &t], || {
                    vec![
                        ("tenant", Value::from(t.clone())),
                        ("path", Value::from(path.as_str())),
                    ]
                });
                u
            }
        };
        Ok((principal.into(), resource.into(), ents.into_entities()?))
    }
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    let parts: Vec<&str> = s.split('/').collect();
    let [t, p, e] = parts[..] else {
        return Err(format!("`{s}` is not <tenant>/<project>/<environment>"));
    };
    Ok(Scope {
        tenant: TenantId::parse(t).map_err(|e| e.to_string())?,
        project: ProjectId::parse(p).map_err(|e| e.to_string())?,
        environment: vern_core::EnvironmentId::parse(e).map_err(|e| e.to_string())?,
    })
}

fn list(s: Option<&str>) -> Vec<String> {
    s.map(|l| {
        l.split(',')
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
            .collect()
    })
    .unwrap_or_default()
}

impl Subject {
    /// Parses the shorthand of `vern policy`: `root`,
    /// `operator:ID[@TENANT][#role,…]`,
    /// `service:ID@TENANT/PROJECT/ENV[#scope,…]` or `node:ID[#service,…]`.
    pub fn parse_spec(s: &str) -> Result<Self, String> {
        if s == "root" {
            return Ok(Self {
                id: "root".to_owned(),
                kind: SubjectKind::Operator {
                    roles: Vec::new(),
                    tenant: None,
                    root: true,
                },
            });
        }
        let (head, extra) = match s.split_once('#') {
            Some((h, x)) => (h, Some(x)),
            None => (s, None),
        };
        match head.split_once(':') {
            Some(("operator", rest)) if !rest.is_empty() => {
                let (id, tenant) = parse_operator(rest)?;
                Ok(Self {
                    id,
                    kind: SubjectKind::Operator {
                        roles: list(extra),
                        tenant,
                        root: false,
                    },
                })
            }
            Some(("node", id)) if !id.is_empty() => Ok(Self {
                id: id.to_owned(),
                kind: SubjectKind::Node {
                    services: list(extra),
                },
            }),
            Some(("service", rest)) => {
                let (id, env) = rest
                    .split_once('@')
                    .ok_or_else(|| format!("`{s}`: a service is service:ID@TENANT/PROJECT/ENV"))?;
                Ok(Self {
                    id: id.to_owned(),
                    kind: SubjectKind::Service { scope: parse_scope(env)?, scopes: list(extra) },
                })
            }
            _ => Err(format!(
                "principal `{s}` is not `root`, `operator:ID[@TENANT][#roles]`, `service:ID@TENANT/PROJECT/ENV[#scopes]` or `node:ID[#services]`"
            )),
        }
    }

    /// The tenant the principal belongs to (none for a platform operator).
    pub(crate) fn tenant(&self) -> Option<&TenantId> {
        match &self.kind {
            SubjectKind::Service { scope, .. } => Some(&scope.tenant),
            SubjectKind::Operator { tenant, .. } => tenant.as_ref(),
            SubjectKind::Node { .. } => None,
        }
    }

    /// This principal as the resource of a decision about it.
    pub fn as_resource(&self) -> Resource {
        match &self.kind {
            SubjectKind::Service { scope, .. } => Resource::Service {
                id: self.id.clone(),
                scope: scope.clone(),
            },
            SubjectKind::Operator { tenant, .. } => Resource::Operator {
                id: self.id.clone(),
                tenant: tenant.clone(),
            },
            SubjectKind::Node { .. } => Resource::Node {
                id: self.id.clone(),
            },
        }
    }
}

/// `ID` or `ID@TENANT`.
fn parse_operator(s: &str) -> Result<(String, Option<TenantId>), String> {
    match s.split_once('@') {
        Some((id, t)) if !id.is_empty() => Ok((
            id.to_owned(),
            Some(TenantId::parse(t).map_err(|e| e.to_string())?),
        )),
        Some(_) => Err(format!("operator `{s}` has no id")),
        None => Ok((s.to_owned(), None)),
    }
}

impl Resource {
    /// The resource in the form [`Resource::parse_spec`] reads.
    pub fn spec(&self) -> String {
        match self {
            Self::Platform => "platform".to_owned(),
            Self::Tenant(t) => format!("tenant:{t}"),
            Self::Project(t, p) => format!("project:{t}/{p}"),
            Self::Environment(s) => {
                format!("environment:{}/{}/{}", s.tenant, s.project, s.environment)
            }
            Self::Service { id, scope } => format!("service:{id}@{scope}"),
            Self::Operator { id, tenant: None } => format!("operator:{id}"),
            Self::Operator {
                id,
                tenant: Some(t),
            } => format!("operator:{id}@{t}"),
            Self::Node { id } => format!("node:{id}"),
            Self::Secret { mount, path, .. } => format!("secret:{mount}:{path}"),
            Self::NatsSubject {
                tenant, subject, ..
            } => format!("nats:{tenant}:{subject}"),
        }
    }

    /// A NATS subject of `tenant`'s account, privileged when its first
    /// token is one of the server's `$` namespaces or a wildcard.
    pub fn nats_subject(tenant: TenantId, subject: &str) -> Self {
        let first = subject.split('.').next().unwrap_or_default();
        Self::NatsSubject {
            tenant,
            subject: subject.to_owned(),
            privileged: first == "*" || first == ">" || first.starts_with('$'),
        }
    }

    /// The tenant that owns the resource (none for the platform).
    pub fn tenant(&self) -> Option<&TenantId> {
        match self {
            Self::Platform | Self::Operator { tenant: None, .. } | Self::Node { .. } => None,
            Self::Tenant(t)
            | Self::Project(t, _)
            | Self::NatsSubject { tenant: t, .. }
            | Self::Operator {
                tenant: Some(t), ..
            } => Some(t),
            Self::Environment(s)
            | Self::Service { scope: s, .. }
            | Self::Secret { scope: s, .. } => Some(&s.tenant),
        }
    }

    /// Parses `platform`, `tenant:T`, `project:T/P`, `environment:T/P/E`,
    /// `service:ID@T/P/E`, `operator:ID[@T]`, `node:ID`, `secret:[MOUNT:]T/P/E/NAME…`
    /// (mount `secret` by default), or `nats:T:SUBJECT`.
    pub fn parse_spec(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("resource `{s}` is not platform, tenant:T, project:T/P, environment:T/P/E, service:ID@T/P/E, operator:ID[@T], node:ID, secret:[MOUNT:]PATH or nats:T:SUBJECT")
        };
        if s == "platform" {
            return Ok(Self::Platform);
        }
        let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
        match kind {
            "tenant" => Ok(Self::Tenant(
                TenantId::parse(rest).map_err(|e| e.to_string())?,
            )),
            "project" => {
                let (t, p) = rest.split_once('/').ok_or_else(bad)?;
                Ok(Self::Project(
                    TenantId::parse(t).map_err(|e| e.to_string())?,
                    ProjectId::parse(p).map_err(|e| e.to_string())?,
                ))
            }
            "environment" => Ok(Self::Environment(parse_scope(rest)?)),
            "service" => {
                let (id, env) = rest.split_once('@').ok_or_else(bad)?;
                Ok(Self::Service {
                    id: id.to_owned(),
                    scope: parse_scope(env)?,
                })
            }
            "operator" => {
                let (id, tenant) = parse_operator(rest)?;
                Ok(Self::Operator { id, tenant })
            }
            "nats" => {
                let (t, subject) = rest.split_once(':').ok_or_else(bad)?;
                if subject.is_empty() {
                    return Err(bad());
                }
                Ok(Self::nats_subject(
                    TenantId::parse(t).map_err(|e| e.to_string())?,
                    subject,
                ))
            }
            "node" if !rest.is_empty() => Ok(Self::Node {
                id: rest.to_owned(),
            }),
            "secret" => {
                let (mount, path) = match rest.split_once(':') {
                    Some((m, p)) => (m, p),
                    None => ("secret", rest),
                };
                let bad_secret = |path: &str| {
                    format!("secret path `{path}` must be <tenant>/<project>/<environment>/<name>")
                };
                let parts: Vec<&str> = path.splitn(4, '/').collect();
                let [tenant, project, environment, name] = parts.as_slice() else {
                    return Err(bad_secret(path));
                };
                if name.is_empty() {
                    return Err(bad_secret(path));
                }
                Ok(Self::Secret {
                    mount: mount.to_owned(),
                    path: path.to_owned(),
                    scope: parse_scope(&format!("{tenant}/{project}/{environment}"))?,
                })
            }
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const SUBJECTS: &[&str] = &[
        "root",
        "operator:op.platform#admin",
        "operator:op.acme@acme#auditor",
        "service:svc.web@acme/web/prod#secrets:read",
        "node:node-1#svc.web,svc.api",
    ];

    const RESOURCES: &[&str] = &[
        "platform",
        "tenant:acme",
        "tenant:globex",
        "project:acme/web",
        "project:globex/web",
        "environment:acme/web/prod",
        "environment:acme/web/dev",
        "environment:globex/shared/prod",
        "service:svc.web@acme/web/prod",
        "service:svc.web@globex/web/prod",
        "service:svc.api@acme/api/prod",
        "operator:op.acme@acme",
        "operator:op.globex@globex",
        "operator:op.platform",
        "node:node-1",
        "node:node-2",
        "secret:acme/web/prod/db",
        "secret:kv:globex/shared/prod/config/tls",
        "nats:acme:orders.>",
        "nats:globex:$SYS.>",
    ];

    fn query(subject: &str, resource: &str) -> Query {
        Query {
            subject: Subject::parse_spec(subject).unwrap(),
            action: "secret.read".into(),
            resource: Resource::parse_spec(resource).unwrap(),
            source_ip: "10.0.0.1".into(),
            time: 0,
            binding: Binding::None,
            dns_names: Vec::new(),
        }
    }

    fn ancestors(e: &ast::Entity) -> HashSet<ast::EntityUID> {
        e.ancestors().cloned().collect()
    }

    /// The entities a decision hands Cedar as closed hold exactly the
    /// ancestors Cedar computes from their parents alone, for every kind of
    /// principal with every kind of resource, in its tenant and another.
    #[test]
    fn closed_entities_match_cedars_closure() {
        for subject in SUBJECTS {
            for resource in RESOURCES {
                let (_, _, entities) = query(subject, resource).to_cedar().unwrap();
                let ours: Vec<ast::Entity> = entities
                    .as_ref()
                    .iter()
                    .map(|e| {
                        let mut e = e.clone();
                        e.remove_all_indirect_ancestors();
                        e
                    })
                    .collect();
                let computed = ast_entities::Entities::from_entities(
                    ours,
                    None::<&NoEntitiesSchema>,
                    TCComputation::ComputeNow,
                    Extensions::none(),
                )
                .unwrap();
                assert_eq!(entities.as_ref().iter().count(), computed.iter().count());
                for e in entities.as_ref().iter() {
                    let reference = computed.entity(e.uid());
                    let ast_entities::Dereference::Data(reference) = reference else {
                        panic!("{} is missing from Cedar's closure", e.uid());
                    };
                    assert_eq!(
                        ancestors(e),
                        ancestors(reference),
                        "{subject} on {resource}: {}",
                        e.uid()
                    );
                    assert!(e.deep_eq(reference), "{subject} on {resource}: {}", e.uid());
                }
            }
        }
    }

    /// The hierarchy itself, spelled out: an entity in an environment is
    /// under the environment, its project and its tenant; a tenant
    /// operator and a NATS subject under their tenant.
    #[test]
    fn entities_sit_under_their_whole_scope() {
        let uid = |text: &str| ast::EntityUID::from(text.parse::<EntityUid>().unwrap());
        let expect = |subject: &str, resource: &str, entity: &str, under: &[&str]| {
            let (_, _, entities) = query(subject, resource).to_cedar().unwrap();
            let ast_entities::Dereference::Data(e) = entities.as_ref().entity(&uid(entity)) else {
                panic!("{entity} is missing");
            };
            let want: HashSet<_> = under.iter().map(|u| uid(u)).collect();
            assert_eq!(ancestors(e), want, "{entity}");
        };
        let chain = [
            r#"Vern::Environment::"acme/web/prod""#,
            r#"Vern::Project::"acme/web""#,
            r#"Vern::Tenant::"acme""#,
        ];
        let service = "service:svc.web@acme/web/prod";
        expect(service, "platform", r#"Vern::Service::"svc.web""#, &chain);
        expect(
            "root",
            "secret:acme/web/prod/db",
            r#"Vern::Secret::"secret:acme/web/prod/db""#,
            &chain,
        );
        expect(service, "tenant:acme", chain[0], &chain[1..]);
        expect(service, "tenant:acme", chain[1], &chain[2..]);
        expect(service, "tenant:acme", chain[2], &[]);
        expect(
            "operator:op.acme@acme",
            "platform",
            r#"Vern::Operator::"op.acme""#,
            &chain[2..],
        );
        expect(
            "root",
            "nats:acme:orders.>",
            r#"Vern::NatsSubject::"acme:orders.>""#,
            &chain[2..],
        );
        expect("root", "platform", r#"Vern::Operator::"root""#, &[]);
        // A principal asked about as a resource in another scope keeps its
        // own place.
        expect(
            service,
            "service:svc.web@globex/web/prod",
            r#"Vern::Service::"svc.web""#,
            &chain,
        );
    }
}
