//! Policy sets split by the tenant a policy's scope confines it to, so a
//! decision evaluates the global policies and those of the tenants its
//! request touches (its principal's and its resource's), not every
//! tenant's; and within each part by the actions a policy's scope names,
//! so a decision evaluates only the policies that can apply to its action.
//!
//! Why this is exact: the entities of a request (built in `model.rs`) are
//! the principal, the resource and their tenant → project → environment
//! chains, nothing else. So `principal in E` or `resource in E` (and `==`,
//! and `is … in E`) can hold only if `E` is the principal or the resource
//! itself or one of their ancestors. The [`tenant_key`] of every such `E`
//! is the principal's tenant, the resource's tenant, or the key of the
//! resource's own id, which are exactly the keys a request looks up
//! ([`Partitioned::sets`]). Likewise no action entity is ever in the
//! store, so `action in [A, B]` holds only if the action is `A` or `B`. A
//! policy whose scope is false is never satisfied and never errors,
//! because Cedar evaluates the scope first and `&&` short-circuits; leaving
//! it out changes neither the decision nor its reasons nor its errors.
//! Everything whose scope does not name such an entity stays global, and
//! everything whose action constraint is not a list of Vern's actions is
//! kept for every action.

use std::collections::HashMap;

use cedar_policy::{
    ActionConstraint, EntityUid, Policy, PolicySet, PrincipalConstraint, ResourceConstraint,
};
use vern_core::TenantId;

/// A policy set split into the policies every request evaluates and those
/// only requests touching one tenant evaluate.
#[derive(Debug, Default)]
pub(crate) struct Partitioned {
    global: ByAction,
    by_tenant: HashMap<String, ByAction>,
}

impl Partitioned {
    /// Splits `set`. Fails only if Cedar refuses a policy it has accepted
    /// once already (ids are unique in `set`, so they are in each part).
    pub(crate) fn new(set: &PolicySet) -> Result<Self, String> {
        let mut global = Vec::new();
        let mut by_tenant: HashMap<String, Vec<&Policy>> = HashMap::new();
        for p in set.policies() {
            match policy_tenant(p) {
                Some(t) => by_tenant.entry(t).or_default().push(p),
                None => global.push(p),
            }
        }
        Ok(Self {
            global: ByAction::new(&global)?,
            by_tenant: by_tenant
                .into_iter()
                .map(|(t, ps)| Ok((t, ByAction::new(&ps)?)))
                .collect::<Result<_, String>>()?,
        })
    }

    /// The non-empty sets a request for `action` must evaluate: the global
    /// policies and the policies of each tenant key of the request, each
    /// part once, each narrowed to the action.
    pub(crate) fn sets<'a>(&'a self, keys: &RequestKeys, action: &str) -> Vec<&'a PolicySet> {
        let mut out = Vec::with_capacity(4);
        let global = self.global.for_action(action);
        if !global.is_empty() {
            out.push(global);
        }
        for key in &keys.0 {
            if let Some(part) = self.by_tenant.get(key.as_str()) {
                let set = part.for_action(action);
                if !set.is_empty() {
                    out.push(set);
                }
            }
        }
        out
    }

    /// How many policies are global, and how many tenants have their own.
    pub(crate) fn shape(&self) -> (usize, usize) {
        (self.global.len, self.by_tenant.len())
    }
}

/// One part's policies by action, so no set holds a policy twice and a
/// request evaluates one set per part.
#[derive(Debug, Default)]
struct ByAction {
    /// The policies for an action no policy of the part names: those that
    /// do not constrain the action.
    any: PolicySet,
    /// For each action some policy of the part names: the policies naming
    /// it and those that do not constrain the action.
    named: HashMap<String, PolicySet>,
    /// Policies in the part.
    len: usize,
}

impl ByAction {
    fn new(policies: &[&Policy]) -> Result<Self, String> {
        let mut any = Vec::new();
        let mut named: HashMap<String, Vec<&Policy>> = HashMap::new();
        for p in policies {
            match policy_actions(p) {
                Some(actions) => {
                    for a in actions {
                        named.entry(a).or_default().push(p);
                    }
                }
                None => any.push(*p),
            }
        }
        let set = |ps: &[&Policy]| -> Result<PolicySet, String> {
            let mut set = PolicySet::new();
            for p in ps {
                set.add((*p).clone()).map_err(|e| e.to_string())?;
            }
            Ok(set)
        };
        let mut by_name = HashMap::with_capacity(named.len());
        for (a, mut ps) in named {
            ps.extend(any.iter().copied());
            by_name.insert(a, set(&ps)?);
        }
        Ok(Self {
            any: set(&any)?,
            named: by_name,
            len: policies.len(),
        })
    }

    fn for_action(&self, action: &str) -> &PolicySet {
        self.named.get(action).unwrap_or(&self.any)
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

/// The tenant keys of one request, each once: its principal's tenant, its
/// resource's tenant, and the key of the resource's own entity id (the
/// same as the resource's tenant unless a caller built an inconsistent
/// resource; it is looked up anyway so exactness never rests on that).
#[derive(Debug, Default)]
pub(crate) struct RequestKeys(Vec<TenantId>);

impl RequestKeys {
    pub(crate) fn new(
        principal_tenant: Option<&TenantId>,
        resource_tenant: Option<&TenantId>,
        resource: &EntityUid,
    ) -> Self {
        let mut keys = Vec::with_capacity(3);
        for k in [
            principal_tenant.cloned(),
            resource_tenant.cloned(),
            tenant_key(resource),
        ]
        .into_iter()
        .flatten()
        {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        Self(keys)
    }
}

/// The tenant a policy's scope confines it to, if its principal or
/// resource constraint names an entity with a [`tenant_key`].
fn policy_tenant(p: &Policy) -> Option<String> {
    let principal = match p.principal_constraint() {
        // `is T in E` is `is T && in E`: the `in E` half confines it alike.
        PrincipalConstraint::In(e)
        | PrincipalConstraint::Eq(e)
        | PrincipalConstraint::IsIn(_, e) => tenant_key(&e),
        PrincipalConstraint::Any | PrincipalConstraint::Is(_) => None,
    };
    let resource = match p.resource_constraint() {
        ResourceConstraint::In(e) | ResourceConstraint::Eq(e) | ResourceConstraint::IsIn(_, e) => {
            tenant_key(&e)
        }
        ResourceConstraint::Any | ResourceConstraint::Is(_) => None,
    };
    // Either constraint alone confines the policy; the principal's is used
    // when both do (they are conjoined, so either is correct).
    principal.or(resource).map(|t| t.as_str().to_owned())
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

/// The name of an entity type in the `Vern` namespace (`Tenant` for
/// `Vern::Tenant`), without formatting the type name on every request.
fn vern_type(e: &EntityUid) -> Option<&str> {
    let ty = e.type_name();
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
        policy_tenant(p)
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
        // A part serves each action exactly the policies that may apply
        // (unconstrained `policy0`, `policy1` for reads, `policy2` for
        // reads and lists).
        let set = PolicySet::from_str(
            "permit (principal, action, resource);\n\
             permit (principal, action == Vern::Action::\"secret.read\", resource);\n\
             permit (principal, action in [Vern::Action::\"secret.read\", Vern::Action::\"secret.list\"], resource);",
        )
        .unwrap();
        let part = ByAction::new(&set.policies().collect::<Vec<_>>()).unwrap();
        let ids = |a: &str| {
            let mut ids: Vec<String> = part
                .for_action(a)
                .policies()
                .map(|p| p.id().to_string())
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(ids("secret.read"), ["policy0", "policy1", "policy2"]);
        assert_eq!(ids("secret.list"), ["policy0", "policy2"]);
        assert_eq!(ids("sys.seal"), ["policy0"]);
    }
}
