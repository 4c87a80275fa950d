use proptest::prelude::*;
use vern_core::{EnvironmentId, ProjectId};

use super::*;
use crate::{Binding, PolicyEngine, Query, Resource};

fn tenant(t: &str) -> TenantId {
    TenantId::parse(t).unwrap()
}

fn env(t: &str, e: &str) -> Scope {
    Scope {
        tenant: tenant(t),
        project: ProjectId::parse("web").unwrap(),
        environment: EnvironmentId::parse(e).unwrap(),
    }
}

const ROLE_NAMES: &[&str] = &[
    "platform-admin",
    "security-auditor",
    "operator",
    "tenant-admin",
    "secrets-reader",
];
const SCOPE_NAMES: &[&str] = &[
    "secrets:read",
    "secrets:write",
    "secrets:delete",
    "audit:read",
    "attest:sign",
    "attest:promote",
    "evidence:read",
    "orders:write",
];

/// Any principal: root, a platform or tenant operator with some roles, or
/// a service in one of a few environments with some scopes.
fn subject() -> impl Strategy<Value = Subject> {
    let roles = proptest::sample::subsequence(ROLE_NAMES, 0..=ROLE_NAMES.len());
    let scopes = proptest::sample::subsequence(SCOPE_NAMES, 0..=SCOPE_NAMES.len());
    prop_oneof![
        1 => Just(Subject {
            id: "root".to_owned(),
            kind: SubjectKind::Operator { roles: Vec::new(), tenant: None, root: true },
        }),
        4 => (roles, proptest::option::of(prop_oneof![Just("acme"), Just("globex")]), 0..1000u32)
            .prop_map(|(roles, t, n)| Subject {
                id: format!("op.x{n}"),
                kind: SubjectKind::Operator {
                    roles: roles.into_iter().map(str::to_owned).collect(),
                    tenant: t.map(tenant),
                    root: false,
                },
            }),
        4 => (scopes, prop_oneof![Just(("acme", "prod")), Just(("acme", "dev")), Just(("globex", "prod"))], 0..1000u32)
            .prop_map(|(scopes, (t, e), n)| Subject {
                id: format!("svc.{t}.web.{e}.s{n}"),
                kind: SubjectKind::Service {
                    scope: env(t, e),
                    scopes: scopes.into_iter().map(str::to_owned).collect(),
                },
            }),
    ]
}

/// Resources and the reach they sit at, for every action they apply to.
fn probes() -> Vec<(Resource, Reach, &'static [&'static str])> {
    const SECRET: &[&str] = &[
        "secret.read",
        "secret.write",
        "secret.delete",
        "secret.metadata.read",
        "secret.list",
    ];
    const PRINCIPAL: &[&str] = &[
        "client.manage",
        "client.read",
        "authz.check",
        "token.lookup",
        "token.lookup-self",
        "token.renew-self",
        "token.revoke-self",
    ];
    const ENVIRONMENT: &[&str] = &[
        "kv.mount.read",
        "attest.sign",
        "attest.promote",
        "attest.gate",
    ];
    const PLATFORM: &[&str] = &[
        "sys.seal",
        "sys.key-status",
        "sys.rotate-keyring",
        "sys.rotate-root",
        "kv.config",
        "keys.rotate",
        "policy.reload",
        "policy.read",
        "audit.hash",
        "audit.read",
        "client.manage",
        "client.read",
        "authz.check",
        "kv.mount.read",
        "evidence.read",
        "evidence.import",
        "attest.rotate",
    ];
    let secret = |t: &str, e: &str| Resource::Secret {
        mount: "secret".to_owned(),
        path: format!("{t}/web/{e}/db"),
        scope: env(t, e),
    };
    vec![
        (Resource::Platform, Reach::Platform, PLATFORM),
        (
            Resource::Tenant(tenant("acme")),
            Reach::Tenant(tenant("acme")),
            &[
                "audit.read",
                "kv.mount.read",
                "evidence.read",
                "evidence.import",
                "attest.rotate",
            ],
        ),
        (
            Resource::Tenant(tenant("globex")),
            Reach::Tenant(tenant("globex")),
            &[
                "audit.read",
                "kv.mount.read",
                "evidence.read",
                "evidence.import",
                "attest.rotate",
            ],
        ),
        (
            Resource::Environment(env("acme", "prod")),
            Reach::Environment(env("acme", "prod")),
            ENVIRONMENT,
        ),
        (
            Resource::Environment(env("globex", "prod")),
            Reach::Environment(env("globex", "prod")),
            ENVIRONMENT,
        ),
        (
            secret("acme", "prod"),
            Reach::Environment(env("acme", "prod")),
            SECRET,
        ),
        (
            secret("acme", "dev"),
            Reach::Environment(env("acme", "dev")),
            SECRET,
        ),
        (
            secret("globex", "prod"),
            Reach::Environment(env("globex", "prod")),
            SECRET,
        ),
        (
            Resource::Service {
                id: "svc.acme.web.prod.other".to_owned(),
                scope: env("acme", "prod"),
            },
            Reach::Environment(env("acme", "prod")),
            PRINCIPAL,
        ),
        (
            Resource::Operator {
                id: "op.acme.other".to_owned(),
                tenant: Some(tenant("acme")),
            },
            Reach::Tenant(tenant("acme")),
            PRINCIPAL,
        ),
        (
            Resource::Operator {
                id: "op.other".to_owned(),
                tenant: None,
            },
            Reach::Platform,
            PRINCIPAL,
        ),
    ]
}

fn cedar_allows(engine: &PolicyEngine, s: &Subject, action: &str, resource: &Resource) -> bool {
    engine
        .decide(&Query {
            subject: s.clone(),
            action: action.to_owned(),
            resource: resource.clone(),
            source_ip: "127.0.0.1".to_owned(),
            time: 0,
            binding: Binding::None,
            dns_names: Vec::new(),
        })
        .allowed
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The built-in policies allow exactly what the tables say a principal
    /// holds: the Cedar permits and the no-escalation rule read one list.
    /// (Unbounded custom roles allow nothing without policy files.)
    #[test]
    fn built_in_decisions_match_the_tables(s in subject()) {
        let engine = PolicyEngine::builtin().unwrap();
        let held = Holdings::of(&s);
        for (resource, reach, actions) in probes() {
            for action in actions {
                prop_assert_eq!(
                    cedar_allows(&engine, &s, action, &resource),
                    held.holds(action, &reach),
                    "{:?} {} {:?}", s, action, resource
                );
            }
        }
    }

    /// No chain of management calls yields a principal holding more than
    /// its creator: each step is allowed only when the creator covers the
    /// new principal, and then everything the new one holds, the creator
    /// holds too, so the first principal of the chain holds everything
    /// the last one does.
    #[test]
    fn no_chain_of_creations_escalates(chain in proptest::collection::vec(subject(), 2..6)) {
        let mut creator = chain[0].clone();
        let first = Holdings::of(&creator);
        for next in &chain[1..] {
            let (have, want) = (Holdings::of(&creator), Holdings::of(next));
            if have.covers(&want).is_err() {
                continue;
            }
            for (_, reach, actions) in probes() {
                for action in actions {
                    if want.holds(action, &reach) {
                        prop_assert!(have.holds(action, &reach), "{} at {:?}", action, reach);
                        prop_assert!(first.holds(action, &reach), "{} at {:?}", action, reach);
                    }
                }
            }
            creator = next.clone();
        }
    }
}

/// Every principal may look up, renew and revoke its own token, and no
/// other principal's: the resource of those actions is the caller itself.
#[test]
fn own_token_actions_reach_only_oneself() {
    let engine = PolicyEngine::builtin().unwrap();
    for spec in [
        "service:svc.acme.web.prod.a@acme/web/prod",
        "operator:op.acme.a@acme",
        "operator:op.a",
        "operator:op.b#platform-admin",
    ] {
        let me = Subject::parse_spec(spec).unwrap();
        let other = Subject::parse_spec("service:svc.acme.web.prod.b@acme/web/prod").unwrap();
        for action in ["token.lookup-self", "token.renew-self", "token.revoke-self"] {
            assert!(
                cedar_allows(&engine, &me, action, &me.as_resource()),
                "{spec} {action}"
            );
            assert!(
                !cedar_allows(&engine, &me, action, &other.as_resource()),
                "{spec} {action} on another"
            );
        }
    }
}

#[test]
fn covers_names_what_is_missing() {
    let admin = Holdings::of(&Subject::parse_spec("operator:op.a#platform-admin").unwrap());
    let auditor = Holdings::of(&Subject::parse_spec("operator:op.b#security-auditor").unwrap());
    assert_eq!(
        admin.covers(&auditor).unwrap_err(),
        "audit.hash on the platform"
    );
    let reader = Holdings::of(
        &Subject::parse_spec("service:svc.acme.web.prod.a@acme/web/prod#secrets:read").unwrap(),
    );
    assert_eq!(
        admin.covers(&reader).unwrap_err(),
        "secret.read on environment acme/web/prod"
    );
    let tenant_admin =
        Holdings::of(&Subject::parse_spec("operator:op.acme.a@acme#tenant-admin").unwrap());
    assert!(tenant_admin.covers(&reader).is_ok());
    let other = Holdings::of(
        &Subject::parse_spec("service:svc.globex.web.prod.a@globex/web/prod#secrets:read").unwrap(),
    );
    assert!(tenant_admin.covers(&other).is_err());
    let custom = Holdings::of(&Subject::parse_spec("operator:op.c#secrets-reader").unwrap());
    assert!(admin
        .covers(&custom)
        .unwrap_err()
        .contains("secrets-reader"));
    assert!(Holdings::of(&Subject::parse_spec("root").unwrap())
        .covers(&custom)
        .is_ok());
}
