//! Policy sets split by the tenant a policy's scope confines it to, so a
//! decision evaluates the global policies and those of the tenants its
//! request touches (its principal's and its resource's), not every
//! tenant's; and within each part by the actions and the kind of principal
//! (`principal is …`) a policy's scope names, so a decision evaluates only
//! the policies that can apply to its action and principal.
//!
//! Why this is exact: the entities of a request (built in `model.rs`) are
//! the principal, the resource and their tenant → project → environment
//! chains, nothing else. So `principal in E` or `resource in E` (and `==`,
//! and `is … in E`) can hold only if `E` is the principal or the resource
//! itself or one of their ancestors. The [`tenant_key`] of every such `E`
//! is the principal's tenant, the resource's tenant, or the key of the
//! resource's own id, which are exactly the keys a request looks up
//! ([`Partitioned::sets`]); and for `principal in E` it is the principal's
//! tenant (the principal itself has no key), so another tenant's policies
//! confined by their principal constraint are left out too. Likewise no action entity is ever in the
//! store, so `action in [A, B]` holds only if the action is `A` or `B`,
//! and the principal is a `Vern::Service`, a `Vern::Operator` or a
//! `Vern::Node` as the subject's kind says, so `principal is T` holds only for that kind. A
//! policy whose scope is false is never satisfied and never errors,
//! because Cedar evaluates the scope first and `&&` short-circuits; leaving
//! it out changes neither the decision nor its reasons nor its errors.
//! Everything whose scope does not name such an entity stays global, and
//! everything whose action constraint is not a list of Vern's actions is
//! kept for every action.

use std::collections::HashMap;

use cedar_policy::{
    ActionConstraint, EntityTypeName, EntityUid, Policy, PolicySet, PrincipalConstraint,
    ResourceConstraint,
};
use vern_core::TenantId;

use crate::model::{Subject, SubjectKind};

/// A policy set split into the policies every request evaluates and those
/// only requests touching one tenant evaluate.
#[derive(Debug, Default)]
pub(crate) struct Partitioned {
    global: Compact,
    /// Policies in `global`.
    global_len: usize,
    /// Boxed: a Cedar set is hundreds of bytes inline, and a table of
    /// 10,000 tenants sized for growth would hold twice that per tenant.
    by_tenant: HashMap<String, Box<TenantPart>>,
}

/// One tenant's policies: all of them, for requests whose principal is in
/// the tenant; and those confined by their resource constraint, the only
/// ones that can apply when only the resource is (a policy confined by its
/// principal constraint names an ancestor of the principal), kept apart
/// only when they differ from all of them. Each is narrowed by action and
/// kind of principal like the global policies, as a [`Compact`].
#[derive(Debug)]
struct TenantPart {
    all: Compact,
    by_resource: Option<Box<Compact>>,
}

impl TenantPart {
    fn by_resource(&self) -> &Compact {
        self.by_resource.as_deref().unwrap_or(&self.all)
    }
}

/// No set: no policy of the part can apply.
const NO_SET: u16 = u16::MAX;

/// A part's policies narrowed by action and kind of principal, so a request
/// evaluates one set per part holding only the policies that can apply to
/// it; each distinct non-empty subset is held once. One set per action and
/// kind for every tenant would cost hundreds of megabytes at 10,000
/// tenants; this way a tenant with one policy holds one set, and one with
/// ten typical policies a handful.
#[derive(Debug)]
struct Compact {
    /// The distinct subsets.
    sets: Vec<PolicySet>,
    /// For an action no policy names, the subset of each kind of principal
    /// (service, operator, node), or [`NO_SET`].
    any: [u16; 3],
    /// For each action some policy names (its index in `ACTIONS`), the
    /// subset of each kind.
    named: Box<[(u16, [u16; 3])]>,
}

impl Default for Compact {
    fn default() -> Self {
        Self {
            sets: Vec::new(),
            any: [NO_SET; 3],
            named: Box::default(),
        }
    }
}

impl Compact {
    fn new(policies: &[&Policy]) -> Result<Self, String> {
        let scopes: Vec<(Option<Vec<u16>>, Kinds)> = policies
            .iter()
            .map(|p| {
                let actions = policy_actions(p)
                    .map(|names| names.iter().filter_map(|n| action_index(n)).collect());
                (actions, principal_kinds(p))
            })
            .collect();
        let mut named: Vec<u16> = scopes
            .iter()
            .filter_map(|(a, _)| a.as_ref())
            .flatten()
            .copied()
            .collect();
        named.sort_unstable();
        named.dedup();
        let mut sets = Vec::new();
        let mut seen: HashMap<Vec<usize>, u16> = HashMap::new();
        let mut subset = |action: Option<u16>| -> Result<[u16; 3], String> {
            let mut out = [NO_SET; 3];
            for (slot, kind) in out.iter_mut().zip(PrincipalKind::ALL) {
                let members: Vec<usize> = scopes
                    .iter()
                    .enumerate()
                    .filter(|(_, (actions, kinds))| {
                        kinds.admit(kind)
                            && actions
                                .as_ref()
                                .is_none_or(|list| action.is_some_and(|a| list.contains(&a)))
                    })
                    .map(|(i, _)| i)
                    .collect();
                if members.is_empty() {
                    continue;
                }
                if let Some(&i) = seen.get(&members) {
                    *slot = i;
                    continue;
                }
                let i = u16::try_from(sets.len())
                    .ok()
                    .filter(|&i| i != NO_SET)
                    .ok_or("too many distinct policy subsets in one tenant")?;
                let chosen: Vec<&Policy> = members
                    .iter()
                    .filter_map(|&m| policies.get(m).copied())
                    .collect();
                sets.push(set_of(&chosen)?);
                seen.insert(members, i);
                *slot = i;
            }
            Ok(out)
        };
        let any = subset(None)?;
        let named = named
            .into_iter()
            .map(|a| subset(Some(a)).map(|kinds| (a, kinds)))
            .collect::<Result<Box<[_]>, String>>()?;
        sets.shrink_to_fit();
        Ok(Self { sets, any, named })
    }

    fn for_request(&self, action: Option<u16>, kind: PrincipalKind) -> Option<&PolicySet> {
        let by_kind = action
            .and_then(|a| {
                self.named
                    .binary_search_by_key(&a, |(n, _)| *n)
                    .ok()
                    .and_then(|i| self.named.get(i))
            })
            .map_or(&self.any, |(_, kinds)| kinds);
        let i = by_kind.get(kind.index()).copied().unwrap_or(NO_SET);
        self.sets.get(usize::from(i))
    }
}

/// An action's index in `ACTIONS`.
fn action_index(action: &str) -> Option<u16> {
    crate::model::ACTIONS
        .iter()
        .position(|a| *a == action)
        .and_then(|i| u16::try_from(i).ok())
}

fn set_of(policies: &[&Policy]) -> Result<PolicySet, String> {
    let mut set = PolicySet::new();
    for p in policies {
        set.add((*p).clone()).map_err(|e| e.to_string())?;
    }
    Ok(set)
}

/// Which constraint confines a policy to its tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Principal,
    Resource,
}

impl Partitioned {
    /// Splits `set`. Fails only if Cedar refuses a policy it has accepted
    /// once already (ids are unique in `set`, so they are in each part).
    pub(crate) fn new(set: &PolicySet) -> Result<Self, String> {
        let mut global = Vec::new();
        let mut by_tenant: HashMap<String, (Vec<&Policy>, Vec<&Policy>)> = HashMap::new();
        for p in set.policies() {
            match policy_tenant(p) {
                Some((t, side)) => {
                    let (all, by_resource) = by_tenant.entry(t).or_default();
                    all.push(p);
                    if side == Side::Resource {
                        by_resource.push(p);
                    }
                }
                None => global.push(p),
            }
        }
        // Sized once: growing by doubling would briefly hold two tables.
        let mut parts = HashMap::with_capacity(by_tenant.len());
        for (t, (all, by_resource)) in by_tenant {
            let part = TenantPart {
                by_resource: if by_resource.len() == all.len() {
                    None
                } else {
                    Some(Box::new(Compact::new(&by_resource)?))
                },
                all: Compact::new(&all)?,
            };
            parts.insert(t, Box::new(part));
        }
        Ok(Self {
            global: Compact::new(&global)?,
            global_len: global.len(),
            by_tenant: parts,
        })
    }

    /// The non-empty sets a request for `action` by a principal of `kind`
    /// must evaluate: the global policies, the principal's tenant's, and
    /// those of the resource's tenant keys that are confined by their
    /// resource constraint; each narrowed to the action and the kind of
    /// principal.
    pub(crate) fn sets<'a>(
        &'a self,
        keys: &RequestKeys,
        action: &str,
        kind: PrincipalKind,
    ) -> Vec<&'a PolicySet> {
        let mut out = Vec::with_capacity(4);
        let mut push = |set: &'a PolicySet| {
            if !set.is_empty() {
                out.push(set);
            }
        };
        let index = action_index(action);
        if let Some(set) = self.global.for_request(index, kind) {
            push(set);
        }
        if let Some(set) = keys
            .principal
            .as_ref()
            .and_then(|t| self.by_tenant.get(t.as_str()))
            .and_then(|part| part.all.for_request(index, kind))
        {
            push(set);
        }
        // Never the principal's own tenant again (`RequestKeys` leaves it
        // out), whose policies are in already, all of them.
        for key in &keys.resource {
            if let Some(set) = self
                .by_tenant
                .get(key.as_str())
                .and_then(|part| part.by_resource().for_request(index, kind))
            {
                push(set);
            }
        }
        out
    }

    /// How many policies are global, and how many tenants have their own.
    pub(crate) fn shape(&self) -> (usize, usize) {
        (self.global_len, self.by_tenant.len())
    }
}

/// The kind of a request's principal: `model.rs` builds a principal as a
/// `Vern::Service`, `Vern::Operator` or `Vern::Node`, as the subject's
/// kind says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PrincipalKind {
    Service,
    Operator,
    Node,
}

impl PrincipalKind {
    /// In the order of [`Compact`]'s tables.
    const ALL: [Self; 3] = [Self::Service, Self::Operator, Self::Node];

    fn index(self) -> usize {
        match self {
            Self::Service => 0,
            Self::Operator => 1,
            Self::Node => 2,
        }
    }

    pub(crate) fn of(s: &Subject) -> Self {
        match s.kind {
            SubjectKind::Service { .. } => Self::Service,
            SubjectKind::Operator { .. } => Self::Operator,
            SubjectKind::Node { .. } => Self::Node,
        }
    }
}

/// Which kinds of principal a policy's scope admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Kinds {
    service: bool,
    operator: bool,
    node: bool,
}

impl Kinds {
    fn admit(self, kind: PrincipalKind) -> bool {
        match kind {
            PrincipalKind::Service => self.service,
            PrincipalKind::Operator => self.operator,
            PrincipalKind::Node => self.node,
        }
    }
}

/// `principal is T` (also `is T in E`) and `principal == E` admit only
/// principals of that type; anything else may admit every kind.
fn principal_kinds(p: &Policy) -> Kinds {
    let both = Kinds {
        service: true,
        operator: true,
        node: true,
    };
    let ty = match p.principal_constraint() {
        PrincipalConstraint::Is(t) | PrincipalConstraint::IsIn(t, _) => t,
        PrincipalConstraint::Eq(e) => e.type_name().clone(),
        PrincipalConstraint::Any | PrincipalConstraint::In(_) => return both,
    };
    match vern_type_name(&ty) {
        Some("Service") => Kinds {
            service: true,
            operator: false,
            node: false,
        },
        Some("Operator") => Kinds {
            service: false,
            operator: true,
            node: false,
        },
        Some("Node") => Kinds {
            service: false,
            operator: false,
            node: true,
        },
        _ => both,
    }
}

/// The actions a policy's scope limits it to (each once), or none when it
/// does not limit them or names something other than one of Vern's actions.
fn policy_actions(p: &Policy) -> Option<Vec<String>> {
    let uids = match p.action_constraint() {
        ActionConstraint::Any => return None,
        ActionConstraint::Eq(a) => vec![a],
        ActionConstraint::In(list) => list,
    };
    let mut names: Vec<String> = Vec::with_capacity(uids.len());
    for u in uids {
        if vern_type(&u) != Some("Action") {
            return None;
        }
        let name = u.id().unescaped();
        if !crate::model::ACTIONS.contains(&name) {
            return None;
        }
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    Some(names)
}

/// The tenant keys of one request: its principal's tenant, and, other than
/// that one, its resource's tenant and the key of the resource's own entity
/// id (the same as the resource's tenant unless a caller built an
/// inconsistent resource; it is looked up anyway so exactness never rests
/// on that).
#[derive(Debug, Default)]
pub(crate) struct RequestKeys {
    principal: Option<TenantId>,
    resource: Vec<TenantId>,
}

impl RequestKeys {
    pub(crate) fn new(
        principal_tenant: Option<&TenantId>,
        resource_tenant: Option<&TenantId>,
        resource: &EntityUid,
    ) -> Self {
        let mut keys = Self {
            principal: principal_tenant.cloned(),
            resource: Vec::with_capacity(2),
        };
        for k in [resource_tenant.cloned(), tenant_key(resource)]
            .into_iter()
            .flatten()
        {
            if keys.principal.as_ref() != Some(&k) && !keys.resource.contains(&k) {
                keys.resource.push(k);
            }
        }
        keys
    }
}

/// The tenant a policy's scope confines it to, if its principal or
/// resource constraint names an entity with a [`tenant_key`], and which
/// constraint does.
fn policy_tenant(p: &Policy) -> Option<(String, Side)> {
    let principal = match p.principal_constraint() {
        // `is T in E` is `is T && in E`: the `in E` half confines it alike.
        PrincipalConstraint::In(e)
        | PrincipalConstraint::Eq(e)
        | PrincipalConstraint::IsIn(_, e) => tenant_key(&e),
        PrincipalConstraint::Any | PrincipalConstraint::Is(_) => None,
    };
    if let Some(t) = principal {
        // When both constraints confine it, either is correct (they are
        // conjoined); the principal's narrows it to fewer requests.
        return Some((t.as_str().to_owned(), Side::Principal));
    }
    let resource = match p.resource_constraint() {
        ResourceConstraint::In(e) | ResourceConstraint::Eq(e) | ResourceConstraint::IsIn(_, e) => {
            tenant_key(&e)
        }
        ResourceConstraint::Any | ResourceConstraint::Is(_) => None,
    };
    resource.map(|t| (t.as_str().to_owned(), Side::Resource))
}

/// The tenant an entity id belongs to, as `model.rs` spells ids: tenants
/// `T`, projects `T/p`, environments `T/p/e`, secrets `mount:T/p/e/name`.
/// Tenant names cannot hold `/` or `:` (see [`TenantId`]), so the tenant is
/// the text before the first `/` (after the first `:` for a secret). An id
/// that does not parse, or an entity of another type, has no key, and a
/// policy naming it stays global. For the argument in the module docs it
/// only matters that this is one function of the id, applied to a policy's
/// entity and to a request's resource alike.
pub(crate) fn tenant_key(e: &EntityUid) -> Option<TenantId> {
    let id = e.id().unescaped();
    let tenant = match vern_type(e)? {
        "Tenant" => id,
        "Project" | "Environment" => id.split('/').next()?,
        "Secret" => id.split_once(':')?.1.split('/').next()?,
        _ => return None,
    };
    TenantId::parse(tenant).ok()
}

/// The type name of an entity in the `Vern` namespace (`Tenant` for a
/// `Vern::Tenant`).
fn vern_type(e: &EntityUid) -> Option<&str> {
    vern_type_name(e.type_name())
}

/// The name of an entity type in the `Vern` namespace (`Tenant` for
/// `Vern::Tenant`), without formatting the type name on every request.
fn vern_type_name(ty: &EntityTypeName) -> Option<&str> {
    let mut ns = ty.namespace_components();
    (ns.next() == Some("Vern") && ns.next().is_none()).then(|| ty.basename())
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn key_of(text: &str) -> Option<String> {
        let set = PolicySet::from_str(text).unwrap();
        let p = set.policies().next().unwrap();
        policy_tenant(p).map(|(t, _)| t)
    }

    #[test]
    fn scopes_that_name_a_tenant_entity_are_keyed_and_others_are_global() {
        for (policy, want) in [
            ("permit (principal, action, resource in Vern::Tenant::\"acme\");", Some("acme")),
            ("permit (principal in Vern::Project::\"acme/web\", action, resource);", Some("acme")),
            ("permit (principal, action, resource == Vern::Environment::\"acme/web/prod\");", Some("acme")),
            ("permit (principal is Vern::Service in Vern::Environment::\"acme/web/prod\", action, resource);", Some("acme")),
            ("permit (principal, action, resource is Vern::Secret in Vern::Tenant::\"globex\");", Some("globex")),
            ("permit (principal, action, resource == Vern::Secret::\"secret:acme/web/prod/db\");", Some("acme")),
            ("permit (principal, action, resource == Vern::Secret::\"a:b:acme/web/prod/db\");", None),
            ("permit (principal in Vern::Tenant::\"acme\", action, resource in Vern::Tenant::\"globex\");", Some("acme")),
            ("permit (principal == Vern::Service::\"svc.acme\", action, resource);", None),
            ("permit (principal, action, resource in Vern::Tenant::\"Not A Tenant\");", None),
            ("permit (principal, action, resource in Vern::Tenant::\"acme/web\");", None),
            ("permit (principal is Vern::Operator, action, resource);", None),
            ("permit (principal, action, resource) when { resource in Vern::Tenant::\"acme\" };", None),
            ("permit (principal, action, resource == Vern::Platform::\"vern\");", None),
        ] {
            assert_eq!(key_of(policy).as_deref(), want, "{policy}");
        }
    }

    #[test]
    fn action_lists_narrow_a_policy_and_anything_else_keeps_it_for_every_action() {
        let actions = |text: &str| {
            let set = PolicySet::from_str(text).unwrap();
            let names = policy_actions(set.policies().next().unwrap());
            names
        };
        assert_eq!(actions("permit (principal, action, resource);"), None);
        assert_eq!(
            actions("permit (principal, action == Vern::Action::\"secret.read\", resource);"),
            Some(vec!["secret.read".to_owned()])
        );
        assert_eq!(
            actions("permit (principal, action in [Vern::Action::\"secret.read\", Vern::Action::\"secret.list\", Vern::Action::\"secret.read\"], resource);"),
            Some(vec!["secret.read".to_owned(), "secret.list".to_owned()])
        );
        assert_eq!(
            actions("permit (principal, action == Vern::Action::\"no.such\", resource);"),
            None
        );
        assert_eq!(
            actions("permit (principal, action in [Vern::Action::\"secret.read\", Other::Action::\"secret.read\"], resource);"),
            None
        );
        // A part serves each action and kind of principal exactly the
        // policies that may apply: unconstrained `policy0`, `policy1` for
        // reads, `policy2` for reads and lists, `policy3` for operators'
        // reads, `policy4` for one service's lists.
        let set = PolicySet::from_str(
            "permit (principal, action, resource);\n\
             permit (principal, action == Vern::Action::\"secret.read\", resource);\n\
             permit (principal, action in [Vern::Action::\"secret.read\", Vern::Action::\"secret.list\"], resource);\n\
             permit (principal is Vern::Operator in Vern::Tenant::\"acme\", action == Vern::Action::\"secret.read\", resource);\n\
             permit (principal == Vern::Service::\"svc\", action == Vern::Action::\"secret.list\", resource);",
        )
        .unwrap();
        let part = Compact::new(&set.policies().collect::<Vec<_>>()).unwrap();
        let ids = |a: &str, kind: PrincipalKind| {
            let mut ids: Vec<String> = part
                .for_request(action_index(a), kind)
                .map(|set| set.policies().map(|p| p.id().to_string()).collect())
                .unwrap_or_default();
            ids.sort();
            ids
        };
        use PrincipalKind::{Operator, Service};
        assert_eq!(
            ids("secret.read", Service),
            ["policy0", "policy1", "policy2"]
        );
        assert_eq!(
            ids("secret.read", Operator),
            ["policy0", "policy1", "policy2", "policy3"]
        );
        assert_eq!(
            ids("secret.list", Service),
            ["policy0", "policy2", "policy4"]
        );
        assert_eq!(ids("secret.list", Operator), ["policy0", "policy2"]);
        assert_eq!(ids("sys.seal", Operator), ["policy0"]);
    }

    #[test]
    fn another_tenants_policies_apply_through_the_resource_only() {
        // policy0 is global, policy1 acme's by its principal, policy2
        // acme's by its resource, policy3 globex's by its principal.
        let set = PolicySet::from_str(
            "permit (principal, action, resource);\n\
             permit (principal in Vern::Tenant::\"acme\", action, resource);\n\
             permit (principal, action, resource in Vern::Tenant::\"acme\");\n\
             permit (principal in Vern::Tenant::\"globex\", action, resource in Vern::Tenant::\"acme\");",
        )
        .unwrap();
        let parts = Partitioned::new(&set).unwrap();
        let tenant = |t: &str| TenantId::parse(t).unwrap();
        let secret = |t: &str| {
            EntityUid::from_type_name_and_id(
                "Vern::Secret".parse().unwrap(),
                cedar_policy::EntityId::new(format!("secret:{t}/web/prod/db")),
            )
        };
        let ids = |principal: Option<&str>, resource: &str| {
            let keys = RequestKeys::new(
                principal.map(tenant).as_ref(),
                Some(&tenant(resource)),
                &secret(resource),
            );
            let mut ids: Vec<String> = parts
                .sets(&keys, "secret.read", PrincipalKind::Service)
                .into_iter()
                .flat_map(|s| s.policies().map(|p| p.id().to_string()))
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(ids(Some("acme"), "acme"), ["policy0", "policy1", "policy2"]);
        assert_eq!(
            ids(Some("globex"), "acme"),
            ["policy0", "policy2", "policy3"]
        );
        assert_eq!(ids(Some("initech"), "acme"), ["policy0", "policy2"]);
        assert_eq!(ids(None, "acme"), ["policy0", "policy2"]);
        // The principal's own part is evaluated whole: a resource that is
        // the principal itself has the principal's ancestors.
        assert_eq!(
            ids(Some("acme"), "globex"),
            ["policy0", "policy1", "policy2"]
        );
    }
}
