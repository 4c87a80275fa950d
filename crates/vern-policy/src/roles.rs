//! Built-in operator roles and service scopes: what each one lets its
//! holder do, and so what its holder may hand on. The built-in Cedar
//! permits of roles and scopes are generated from these tables, so the
//! decisions and the no-escalation rule read one list.
//!
//! The rule: a principal may create or change a principal only if it holds
//! everything the new principal would hold ([`Holdings::covers`]). Holdings
//! come from these tables alone: a policy file may grant an operator more,
//! but such extra powers are never passed on, and roles that are not
//! built in (their power is whatever policy files say) are granted by the
//! root token only.

use std::collections::BTreeSet;

use vern_core::{Scope, TenantId};

use crate::model::{Subject, SubjectKind};

/// Where a role reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleReach {
    /// The whole platform; the operator must have no tenant.
    Platform,
    /// The operator's own tenant; the operator must have one.
    Tenant,
}

/// A built-in operator role.
#[derive(Debug)]
pub struct RoleDef {
    /// The role's name, as given to `--role`.
    pub name: &'static str,
    /// Whether it reaches the platform or the operator's tenant.
    pub reach: RoleReach,
    /// The actions it allows.
    pub actions: &'static [&'static str],
    /// One line for humans.
    pub summary: &'static str,
}

/// A service scope Vern itself understands.
#[derive(Debug)]
pub struct ScopeDef {
    /// The scope, as in a token's `scope`.
    pub name: &'static str,
    /// The actions it allows, on the service's own environment (or, for
    /// audit reading, its own tenant).
    pub actions: &'static [&'static str],
    /// Whether the actions reach the tenant rather than the environment.
    pub tenant_wide: bool,
    /// One line for humans.
    pub summary: &'static str,
}

/// The built-in operator roles.
pub const ROLES: &[RoleDef] = &[
    RoleDef {
        name: "platform-admin",
        reach: RoleReach::Platform,
        actions: &[
            "sys.seal",
            "sys.key-status",
            "sys.rotate-keyring",
            "sys.rotate-root",
            "kv.config",
            "client.manage",
            "client.read",
            "keys.rotate",
            "policy.reload",
            "policy.read",
            "authz.check",
            "secret.list",
            "secret.metadata.read",
            "kv.mount.read",
            "token.lookup",
            "pki.rotate",
            "pki.import",
            "pki.read",
            "evidence.import",
            "attest.gate",
            "attest.rotate",
            "nats.config",
            "nats.paths",
            "nats.site",
            "nats.mapping",
            "workload.register",
            "workload.read",
        ],
        summary:
            "seal and keys, clients and nodes, policies, metadata, lists and mounts, token lookups, the CA, artifact signing keys, promotion gates, workload registration entries, evidence imports, the NATS configuration, sites, subject mappings and path report; no secret values, no audit log",
    },
    RoleDef {
        name: "security-auditor",
        reach: RoleReach::Platform,
        actions: &[
            "audit.read",
            "audit.hash",
            "policy.read",
            "authz.check",
            "client.read",
            "token.lookup",
            "pki.read",
            "evidence.read",
            "nats.paths",
            "workload.read",
        ],
        summary: "reads the audit log and every tenant's evidence, hashes values to search the log, reads policies, clients, issued certificates and registration entries, looks up tokens, reads the NATS path report",
    },
    RoleDef {
        name: "operator",
        reach: RoleReach::Platform,
        actions: &[
            "sys.key-status",
            "secret.list",
            "secret.metadata.read",
            "client.read",
            "kv.mount.read",
            "pki.read",
        ],
        summary: "health, key status, secret metadata, lists and mounts, client lists, issued certificates; mints nothing",
    },
    RoleDef {
        name: "tenant-admin",
        reach: RoleReach::Tenant,
        actions: &[
            "client.manage",
            "client.read",
            "authz.check",
            "secret.read",
            "secret.write",
            "secret.delete",
            "secret.metadata.read",
            "secret.list",
            "audit.read",
            "kv.mount.read",
            "token.lookup",
            "attest.sign",
            "attest.promote",
            "attest.gate",
            "attest.rotate",
            "evidence.read",
            "evidence.import",
            "nats.paths",
            "nats.mapping",
            "workload.register",
            "workload.read",
        ],
summary: "its own tenant only: clients, secrets, the tenant's audit records and tokens, signing, promotion gates and promotion, the tenant's signing key, evidence (reading and importing it), workload registration entries for its services, the tenant's NATS subject mappings and path report",
    },
];

/// The service scopes Vern decides on. Other scopes are the tenant's own
/// vocabulary for other services; Vern passes them through in tokens.
pub const SCOPES: &[ScopeDef] = &[
    ScopeDef {
        name: "secrets:read",
        actions: &[
            "secret.read",
            "secret.metadata.read",
            "secret.list",
            "kv.mount.read",
        ],
        tenant_wide: false,
        summary: "read data, subkeys and metadata, list (GET data, subkeys, metadata; LIST)",
    },
    ScopeDef {
        name: "secrets:write",
        actions: &["secret.write", "kv.mount.read"],
        tenant_wide: false,
        summary: "write and patch data and metadata (POST/PUT/PATCH data and metadata)",
    },
    ScopeDef {
        name: "secrets:delete",
        actions: &["secret.delete", "kv.mount.read"],
        tenant_wide: false,
        summary: "delete, undelete and destroy versions, delete metadata",
    },
    ScopeDef {
        name: "audit:read",
        actions: &["audit.read"],
        tenant_wide: true,
        summary: "read the tenant's own audit records",
    },
    ScopeDef {
        name: "attest:sign",
        actions: &["attest.sign"],
        tenant_wide: false,
        summary: "sign statements about artifacts for its own environment with the tenant's key",
    },
    ScopeDef {
        name: "attest:promote",
        actions: &["attest.promote"],
        tenant_wide: false,
        summary: "promote artifacts into its own environment when its gates allow",
    },
    ScopeDef {
        name: "evidence:read",
        actions: &["evidence.read"],
        tenant_wide: true,
        summary: "read the tenant's own evidence",
    },
];

/// A built-in role by name.
pub fn role(name: &str) -> Option<&'static RoleDef> {
    ROLES.iter().find(|r| r.name == name)
}

/// A Vern scope by name.
pub fn scope(name: &str) -> Option<&'static ScopeDef> {
    SCOPES.iter().find(|s| s.name == name)
}

/// The Cedar permits of the built-in roles and scopes.
pub(crate) fn cedar() -> String {
    let list = |actions: &[&str]| {
        actions
            .iter()
            .map(|a| format!("Vern::Action::\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::new();
    for r in ROLES {
        let reach = match r.reach {
            RoleReach::Platform => "!(principal has tenant)".to_owned(),
            RoleReach::Tenant => "principal has tenant && resource in principal.tenant".to_owned(),
        };
        out.push_str(&format!(
            "@id(\"vern.role.{}\")\npermit (principal is Vern::Operator, action in [{}], resource)\nwhen {{ principal.roles.contains(\"{}\") && {reach} }};\n\n",
            r.name,
            list(r.actions),
            r.name
        ));
    }
    for s in SCOPES {
        let reach = if s.tenant_wide {
            "resource == principal.tenant"
        } else {
            "resource in principal.environment"
        };
        out.push_str(&format!(
            "@id(\"vern.scope.{}\")\npermit (principal is Vern::Service, action in [{}], resource)\nwhen {{ principal.scopes.contains(\"{}\") && {reach} }};\n\n",
            s.name,
            list(s.actions),
            s.name
        ));
    }
    out
}

/// How far one held action reaches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reach {
    /// Every tenant and the platform.
    Platform,
    /// One tenant.
    Tenant(TenantId),
    /// One environment.
    Environment(Scope),
}

impl Reach {
    /// Whether this reach includes `other`.
    pub fn includes(&self, other: &Reach) -> bool {
        match (self, other) {
            (Self::Platform, _) => true,
            (Self::Tenant(t), Self::Tenant(u)) => t == u,
            (Self::Tenant(t), Self::Environment(s)) => *t == s.tenant,
            (Self::Environment(a), Self::Environment(b)) => a == b,
            _ => false,
        }
    }
}

/// What a principal holds: every action it may take and how far, or
/// everything (the root token).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holdings {
    all: bool,
    grants: BTreeSet<(String, Reach)>,
    /// Roles whose power no table bounds: only `all` covers them.
    unbounded: BTreeSet<String>,
}

impl Holdings {
    /// What `subject` holds.
    pub fn of(subject: &Subject) -> Self {
        let mut h = Self::default();
        match &subject.kind {
            SubjectKind::Operator { root: true, .. } => h.all = true,
            SubjectKind::Operator {
                roles,
                tenant,
                root: false,
            } => {
                for name in roles {
                    match (role(name), tenant) {
                        (Some(r), None) if r.reach == RoleReach::Platform => {
                            h.add(r.actions, &Reach::Platform);
                        }
                        (Some(r), Some(t)) if r.reach == RoleReach::Tenant => {
                            h.add(r.actions, &Reach::Tenant(t.clone()));
                        }
                        // A built-in role at the wrong reach allows nothing.
                        (Some(_), _) => {}
                        (None, _) => {
                            h.unbounded.insert(name.clone());
                        }
                    }
                }
            }
            SubjectKind::Service { scope: env, scopes } => {
                for s in scopes.iter().filter_map(|s| scope(s)) {
                    let reach = if s.tenant_wide {
                        Reach::Tenant(env.tenant.clone())
                    } else {
                        Reach::Environment(env.clone())
                    };
                    h.add(s.actions, &reach);
                }
            }
            // A node's power comes from the registration entries that name
            // it, which need `workload.register` of their own; the node
            // holds nothing it could hand on.
            SubjectKind::Node { .. } => {}
        }
        h
    }

    fn add(&mut self, actions: &[&str], reach: &Reach) {
        for a in actions {
            self.grants.insert(((*a).to_owned(), reach.clone()));
        }
    }

    /// Whether this holds `action` at `reach`.
    pub fn holds(&self, action: &str, reach: &Reach) -> bool {
        self.all
            || self
                .grants
                .iter()
                .any(|(a, r)| a == action && r.includes(reach))
    }

    /// Whether this holds `action` anywhere at all.
    pub fn holds_anywhere(&self, action: &str) -> bool {
        self.all || self.grants.iter().any(|(a, _)| a == action)
    }

    /// Whether this holds everything `other` holds. When it does not, the
    /// error names the first thing missing.
    pub fn covers(&self, other: &Holdings) -> Result<(), String> {
        if self.all {
            return Ok(());
        }
        if other.all {
            return Err("the root token's powers".to_owned());
        }
        if let Some(r) = other.unbounded.iter().next() {
            return Err(format!(
                "role `{r}` (not a built-in role: only the root token grants it)"
            ));
        }
        for (action, reach) in &other.grants {
            if !self.holds(action, reach) {
                let at = match reach {
                    Reach::Platform => "the platform".to_owned(),
                    Reach::Tenant(t) => format!("tenant {t}"),
                    Reach::Environment(s) => format!("environment {s}"),
                };
                return Err(format!("{action} on {at}"));
            }
        }
        Ok(())
    }

    /// Every held action and its reach, for explanations.
    pub fn describe(&self) -> Vec<String> {
        if self.all {
            return vec!["everything (root)".to_owned()];
        }
        let mut out: Vec<String> = self
            .grants
            .iter()
            .map(|(a, r)| match r {
                Reach::Platform => format!("{a} on the platform"),
                Reach::Tenant(t) => format!("{a} in tenant {t}"),
                Reach::Environment(s) => format!("{a} in environment {s}"),
            })
            .collect();
        out.extend(
            self.unbounded
                .iter()
                .map(|r| format!("role `{r}`: whatever policy files grant it")),
        );
        out
    }
}

#[cfg(test)]
mod tests;
