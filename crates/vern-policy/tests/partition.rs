//! Splitting policies by tenant never changes a decision: for random mixes
//! of tenant-, project-, environment- and secret-scoped, unscoped, forbid
//! and grant policies across several tenants, and random queries (also
//! odd ones: a secret whose path names another tenant than its scope, a
//! principal asking about a same-named principal elsewhere), the
//! partitioned decision, uncached and cached, equals the decision over one
//! unpartitioned set.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use proptest::prelude::*;
use vern_core::{EnvironmentId, ProjectId, Scope, TenantId};
use vern_policy::{Binding, PolicyEngine, Query, Resource, Subject, SubjectKind, ACTIONS};

const TENANTS: [&str; 3] = ["acme", "globex", "initech"];
const PROJECTS: [&str; 2] = ["web", "shared"];
const ENVS: [&str; 2] = ["prod", "dev"];

fn scope(t: usize, p: usize, e: usize) -> Scope {
    Scope {
        tenant: TenantId::parse(TENANTS[t]).unwrap(),
        project: ProjectId::parse(PROJECTS[p]).unwrap(),
        environment: EnvironmentId::parse(ENVS[e]).unwrap(),
    }
}

fn env_of() -> impl Strategy<Value = (usize, usize, usize)> {
    (0..3usize, 0..2usize, 0..2usize)
}

fn env_id((t, p, e): (usize, usize, usize)) -> String {
    format!("{}/{}/{}", TENANTS[t], PROJECTS[p], ENVS[e])
}

/// A principal scope, and whether it fixes the principal to a service (so
/// a condition may read service attributes).
fn principal_scope() -> impl Strategy<Value = (String, bool)> {
    prop_oneof![
        Just(("principal".to_owned(), false)),
        Just(("principal is Vern::Service".to_owned(), true)),
        Just(("principal is Vern::Operator".to_owned(), false)),
        Just(("principal is Vern::Node".to_owned(), false)),
        (0..3usize).prop_map(|t| (
            format!("principal in Vern::Tenant::\"{}\"", TENANTS[t]),
            false
        )),
        (0..3usize, 0..2usize).prop_map(|(t, p)| (
            format!(
                "principal in Vern::Project::\"{}/{}\"",
                TENANTS[t], PROJECTS[p]
            ),
            false
        )),
        env_of().prop_map(|e| (
            format!("principal in Vern::Environment::\"{}\"", env_id(e)),
            false
        )),
        env_of().prop_map(|e| (
            format!(
                "principal is Vern::Service in Vern::Environment::\"{}\"",
                env_id(e)
            ),
            true
        )),
        (0..3usize).prop_map(|t| (
            format!(
                "principal is Vern::Operator in Vern::Tenant::\"{}\"",
                TENANTS[t]
            ),
            false
        )),
        env_of().prop_map(|e| (
            format!(
                "principal == Vern::Service::\"svc.{}\"",
                env_id(e).replace('/', ".")
            ),
            true
        )),
        (0..3usize).prop_map(|t| (
            format!("principal == Vern::Operator::\"op.{}\"", TENANTS[t]),
            false
        )),
    ]
}

/// A resource scope, and whether it admits secrets (so `secret.read`
/// applies to it and validation accepts it).
fn resource_scope() -> impl Strategy<Value = (String, bool)> {
    prop_oneof![
        Just(("resource".to_owned(), true)),
        Just(("resource is Vern::Secret".to_owned(), true)),
        (0..3usize).prop_map(|t| (
            format!("resource in Vern::Tenant::\"{}\"", TENANTS[t]),
            true
        )),
        (0..3usize, 0..2usize).prop_map(|(t, p)| (
            format!(
                "resource in Vern::Project::\"{}/{}\"",
                TENANTS[t], PROJECTS[p]
            ),
            true
        )),
        env_of().prop_map(|e| (
            format!("resource in Vern::Environment::\"{}\"", env_id(e)),
            true
        )),
        env_of().prop_map(|e| (
            format!(
                "resource is Vern::Secret in Vern::Environment::\"{}\"",
                env_id(e)
            ),
            true
        )),
        (env_of(), 0..2usize).prop_map(|(e, n)| (
            format!("resource == Vern::Secret::\"secret:{}/s{n}\"", env_id(e)),
            true
        )),
        (0..3usize).prop_map(|t| (
            format!("resource == Vern::Tenant::\"{}\"", TENANTS[t]),
            false
        )),
        Just(("resource == Vern::Platform::\"vern\"".to_owned(), false)),
    ]
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Permit,
    Forbid,
    Grant,
}

/// One generated policy.
#[derive(Debug, Clone)]
struct Spec {
    kind: Kind,
    principal: String,
    action: &'static str,
    resource: String,
    condition: &'static str,
}

impl Spec {
    fn text(&self, i: usize) -> String {
        let (annotation, effect) = match self.kind {
            Kind::Permit => ("", "permit"),
            Kind::Forbid => ("", "forbid"),
            Kind::Grant => ("@cross_tenant_grant(\"generated\")\n", "permit"),
        };
        format!(
            "@id(\"p{i}\")\n{annotation}{effect} ({}, {}, {})\n{};\n",
            self.principal, self.action, self.resource, self.condition
        )
    }
}

fn policy() -> impl Strategy<Value = Spec> {
    (
        prop_oneof![Just(Kind::Permit), Just(Kind::Forbid), Just(Kind::Grant)],
        principal_scope(),
        resource_scope(),
        0..5usize,
        0..6usize,
    )
        .prop_map(|(kind, (principal, service), (resource, secrets), a, c)| {
            // Only combinations strict validation accepts: `secret.read`
            // applies to secrets only.
            let actions: &[&'static str] = if secrets {
                &[
                    "action",
                    "action == Vern::Action::\"secret.list\"",
                    "action == Vern::Action::\"secret.read\"",
                    "action in [Vern::Action::\"secret.read\", Vern::Action::\"secret.write\"]",
                    "action in [Vern::Action::\"secret.list\", Vern::Action::\"audit.read\", Vern::Action::\"secret.list\"]",
                ]
            } else {
                &[
                    "action",
                    "action == Vern::Action::\"secret.list\"",
                    "action in [Vern::Action::\"secret.list\", Vern::Action::\"audit.read\", Vern::Action::\"secret.list\"]",
                ]
            };
            // Conditions: none, the binding, one that errors when the
            // request time is not zero (a Long overflow), and for services
            // their attributes.
            let conditions: &[&'static str] = if service {
                &[
                    "",
                    "when { context.binding == \"dpop\" }",
                    "when { context.time + 9223372036854775807 > 0 }",
                    "unless { resource is Vern::Platform }",
                    "when { principal.scopes.contains(\"secrets:read\") }",
                    "when { resource in principal.environment }",
                ]
            } else {
                &[
                    "",
                    "when { context.binding == \"dpop\" }",
                    "when { context.time + 9223372036854775807 > 0 }",
                    "unless { resource is Vern::Platform }",
                ]
            };
            Spec {
                kind,
                principal,
                action: actions[a % actions.len()],
                resource,
                condition: conditions[c % conditions.len()],
            }
        })
}

fn subject() -> impl Strategy<Value = Subject> {
    let scopes =
        proptest::sample::subsequence(vec!["secrets:read", "secrets:write", "secrets:list"], 0..=3);
    prop_oneof![
        // A service, usually named after its environment, sometimes after
        // another one (ids and scopes are independent inputs).
        (env_of(), env_of(), any::<bool>(), scopes).prop_map(|(e, named, own, scopes)| {
            let id = env_id(if own { e } else { named }).replace('/', ".");
            Subject {
                id: format!("svc.{id}"),
                kind: SubjectKind::Service {
                    scope: scope(e.0, e.1, e.2),
                    scopes: scopes.into_iter().map(str::to_owned).collect(),
                },
            }
        }),
        // A tenant operator.
        (0..3usize, 0..3usize).prop_map(|(t, named)| Subject {
            id: format!("op.{}", TENANTS[named]),
            kind: SubjectKind::Operator {
                roles: vec!["secrets-reader".into()],
                tenant: Some(TenantId::parse(TENANTS[t]).unwrap()),
                root: false,
            },
        }),
        // A platform operator, or root.
        (0..3usize, any::<bool>()).prop_map(|(named, root)| Subject {
            id: format!("op.{}", TENANTS[named]),
            kind: SubjectKind::Operator {
                roles: vec!["platform-admin".into()],
                tenant: None,
                root,
            },
        }),
        // A node, with the services of its entries.
        (0..2usize, proptest::collection::vec(env_of(), 0..3)).prop_map(|(n, envs)| Subject {
            id: format!("node.n{n}"),
            kind: SubjectKind::Node {
                services: envs
                    .into_iter()
                    .map(|e| format!("svc.{}", env_id(e).replace('/', ".")))
                    .collect(),
            },
        }),
    ]
}

fn resource() -> impl Strategy<Value = Resource> {
    prop_oneof![
        Just(Resource::Platform),
        (0..3usize).prop_map(|t| Resource::Tenant(TenantId::parse(TENANTS[t]).unwrap())),
        (0..3usize, 0..2usize).prop_map(|(t, p)| Resource::Project(
            TenantId::parse(TENANTS[t]).unwrap(),
            ProjectId::parse(PROJECTS[p]).unwrap()
        )),
        env_of().prop_map(|(t, p, e)| Resource::Environment(scope(t, p, e))),
        // A secret; sometimes its path names another environment than its
        // scope (the model does not forbid it).
        (env_of(), env_of(), any::<bool>(), 0..2usize).prop_map(|(e, at, own, n)| {
            Resource::Secret {
                mount: "secret".into(),
                path: format!("{}/s{n}", env_id(if own { e } else { at })),
                scope: scope(e.0, e.1, e.2),
            }
        }),
        (env_of(), env_of()).prop_map(|(e, named)| Resource::Service {
            id: format!("svc.{}", env_id(named).replace('/', ".")),
            scope: scope(e.0, e.1, e.2),
        }),
        (0..3usize, proptest::option::of(0..3usize)).prop_map(|(named, t)| {
            Resource::Operator {
                id: format!("op.{}", TENANTS[named]),
                tenant: t.map(|t| TenantId::parse(TENANTS[t]).unwrap()),
            }
        }),
        (0..3usize, 0..3usize).prop_map(|(t, s)| Resource::nats_subject(
            TenantId::parse(TENANTS[t]).unwrap(),
            ["orders.>", "$SYS.>", "billing.created"][s]
        )),
        (0..2usize).prop_map(|n| Resource::Node {
            id: format!("node.n{n}"),
        }),
    ]
}

/// The actions that apply to a resource (mostly), or any action (then the
/// request is invalid and denied with an error, which must match too).
fn action_for(resource: &Resource, pick: usize, any: bool) -> String {
    let fitting: &[&str] = match resource {
        Resource::Secret { .. } => &[
            "secret.read",
            "secret.write",
            "secret.delete",
            "secret.metadata.read",
            "secret.list",
        ],
        Resource::Platform => &[
            "secret.list",
            "audit.read",
            "sys.seal",
            "client.read",
            "authz.check",
        ],
        Resource::Tenant(_) => &["secret.list", "audit.read", "nats.paths"],
        Resource::NatsSubject { .. } => &["nats.publish", "nats.subscribe"],
        Resource::Project(..) | Resource::Environment(_) => &["secret.list"],
        Resource::Service { .. } => &[
            "client.manage",
            "client.read",
            "authz.check",
            "svid.issue",
            "workload.register",
            "workload.read",
        ],
        Resource::Operator { .. } | Resource::Node { .. } => {
            &["client.manage", "client.read", "authz.check"]
        }
    };
    if any {
        ACTIONS[pick % ACTIONS.len()].to_owned()
    } else {
        fitting[pick % fitting.len()].to_owned()
    }
}

fn query() -> impl Strategy<Value = Query> {
    (
        subject(),
        0..64usize,
        proptest::bool::weighted(0.1),
        resource(),
        prop_oneof![
            Just(Binding::None),
            Just(Binding::Dpop),
            Just(Binding::Mtls)
        ],
        0..2i64,
    )
        .prop_map(|(subject, pick, any, resource, binding, time)| Query {
            subject,
            action: action_for(&resource, pick, any),
            resource,
            source_ip: "10.0.0.1".into(),
            time,
            binding,
            dns_names: Vec::new(),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    #[test]
    fn partitioned_decisions_equal_unpartitioned_ones(
        policies in proptest::collection::vec(policy(), 0..14),
        queries in proptest::collection::vec(query(), 40),
    ) {
        let text: String = policies.iter().enumerate().map(|(i, p)| p.text(i)).collect();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("generated.cedar"), &text).unwrap();
        let engine = PolicyEngine::from_dir(dir.path())
            .unwrap_or_else(|e| panic!("generated policies must load: {e}\n{text}"));
        for q in &queries {
            let reference = engine.decide_unpartitioned(q);
            prop_assert_eq!(&engine.decide_uncached(q), &reference, "{:?}\n{}", q, text);
            // Twice: the first may fill the cache, the second may read it.
            prop_assert_eq!(&engine.decide(q), &reference, "{:?}\n{}", q, text);
            prop_assert_eq!(&engine.decide(q), &reference, "{:?}\n{}", q, text);
        }
    }
}

/// A secret whose path names another tenant than its scope: its entity id
/// names that tenant, so a policy naming the id is still evaluated.
#[test]
fn a_policy_naming_a_secret_reaches_it_whatever_its_scope_says() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("one.cedar"),
        "@id(\"one-secret\")\npermit (principal, action == Vern::Action::\"secret.read\", resource == Vern::Secret::\"secret:globex/web/prod/s0\");\n",
    )
    .unwrap();
    let engine = PolicyEngine::from_dir(dir.path()).unwrap();
    let q = Query {
        subject: Subject {
            id: "svc.acme".into(),
            kind: SubjectKind::Service {
                scope: scope(0, 0, 0),
                scopes: Vec::new(),
            },
        },
        action: "secret.read".into(),
        resource: Resource::Secret {
            mount: "secret".into(),
            path: "globex/web/prod/s0".into(),
            scope: scope(0, 0, 0),
        },
        source_ip: "10.0.0.1".into(),
        time: 0,
        binding: Binding::None,
        dns_names: Vec::new(),
    };
    let d = engine.decide_unpartitioned(&q);
    assert!(d.allowed, "{d:?}");
    assert_eq!(engine.decide_uncached(&q), d);
    assert_eq!(engine.decide(&q), d);
}
