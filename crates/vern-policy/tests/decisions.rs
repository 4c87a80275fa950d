//! Decisions of the built-in policies and of policy files, cross-tenant
//! isolation under generated requests, and reloads that keep the old set.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use proptest::prelude::*;
use vern_core::{EnvironmentId, ProjectId, Scope, TenantId};
use vern_policy::{Binding, PolicyEngine, Query, Resource, Subject, SubjectKind, ACTIONS};

fn scope(s: &str) -> Scope {
    let p: Vec<&str> = s.split('/').collect();
    Scope {
        tenant: TenantId::parse(p[0]).unwrap(),
        project: ProjectId::parse(p[1]).unwrap(),
        environment: EnvironmentId::parse(p[2]).unwrap(),
    }
}

fn service(env: &str) -> Subject {
    service_with(env, &["secrets:read", "secrets:write", "secrets:delete"])
}

fn service_with(env: &str, scopes: &[&str]) -> Subject {
    Subject {
        id: format!("svc.{}.app", env.replace('/', ".")),
        kind: SubjectKind::Service {
            scope: scope(env),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        },
    }
}

fn operator(root: bool) -> Subject {
    Subject {
        id: if root {
            "root".into()
        } else {
            "op.alice".into()
        },
        kind: SubjectKind::Operator {
            roles: vec!["oncall".into(), "platform-admin".into()],
            tenant: None,
            root,
        },
    }
}

fn secret(env: &str, name: &str) -> Resource {
    Resource::Secret {
        mount: "secret".into(),
        path: format!("{env}/{name}"),
        scope: scope(env),
    }
}

fn q(subject: &Subject, action: &str, resource: Resource) -> Query {
    Query {
        subject: subject.clone(),
        action: action.into(),
        resource,
        source_ip: "127.0.0.1".into(),
        time: 0,
        binding: Binding::None,
        dns_names: Vec::new(),
    }
}

fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

#[test]
fn built_in_policies() {
    let e = PolicyEngine::builtin().unwrap();
    let svc = service("acme/web/prod");
    for action in [
        "secret.read",
        "secret.write",
        "secret.delete",
        "secret.metadata.read",
        "secret.list",
    ] {
        let d = e.decide(&q(&svc, action, secret("acme/web/prod", "db")));
        assert!(d.allowed, "{action}: {d:?}");
        assert!(d.policies[0].starts_with("vern.scope.secrets:"), "{d:?}");
    }
    // Scopes decide: a read-only token reads and lists, nothing more; a
    // token without secret scopes does nothing to secrets.
    let reader = service_with("acme/web/prod", &["secrets:read"]);
    for (action, ok) in [
        ("secret.read", true),
        ("secret.metadata.read", true),
        ("secret.list", true),
        ("secret.write", false),
        ("secret.delete", false),
    ] {
        let d = e.decide(&q(&reader, action, secret("acme/web/prod", "db")));
        assert_eq!(d.allowed, ok, "{action}: {d:?}");
    }
    let bare = service_with("acme/web/prod", &[]);
    assert!(
        !e.decide(&q(&bare, "secret.read", secret("acme/web/prod", "db")))
            .allowed
    );
    assert!(
        !e.decide(&q(&bare, "secret.list", Resource::Platform))
            .allowed
    );
    // Another environment of the same tenant: nothing permits it.
    let d = e.decide(&q(&svc, "secret.read", secret("acme/web/dev", "db")));
    assert!(!d.allowed && d.policies.is_empty(), "{d:?}");
    // Another tenant: the isolation forbid decides.
    let d = e.decide(&q(&svc, "secret.read", secret("globex/web/prod", "db")));
    assert_eq!(
        (d.allowed, d.policies.as_slice()),
        (false, &["vern.tenant-isolation".to_owned()][..])
    );
    // LIST down to its environment, not beside it.
    for (r, ok) in [
        (Resource::Platform, true),
        (Resource::Tenant(TenantId::parse("acme").unwrap()), true),
        (
            Resource::Project(
                TenantId::parse("acme").unwrap(),
                ProjectId::parse("web").unwrap(),
            ),
            true,
        ),
        (Resource::Environment(scope("acme/web/prod")), true),
        (Resource::Environment(scope("acme/web/dev")), false),
        (Resource::Tenant(TenantId::parse("globex").unwrap()), false),
    ] {
        assert_eq!(
            e.decide(&q(&svc, "secret.list", r.clone())).allowed,
            ok,
            "{r:?}"
        );
    }
    // Services cannot touch the platform; they may ask about themselves
    // only.
    assert!(!e.decide(&q(&svc, "sys.seal", Resource::Platform)).allowed);
    assert!(
        !e.decide(&q(&svc, "client.manage", Resource::Platform))
            .allowed
    );
    assert!(
        !e.decide(&q(&svc, "authz.check", Resource::Platform))
            .allowed
    );
    assert!(e.decide(&q(&svc, "authz.check", svc.as_resource())).allowed);
    let other = service("acme/web/dev");
    assert!(
        !e.decide(&q(&svc, "authz.check", other.as_resource()))
            .allowed
    );
    // Platform administrators administer, but do not read secret values
    // without a policy.
    let op = operator(false);
    assert!(e.decide(&q(&op, "sys.seal", Resource::Platform)).allowed);
    assert!(
        e.decide(&q(&op, "secret.list", secret("acme/web/prod", "db")))
            .allowed
    );
    assert!(
        e.decide(&q(
            &op,
            "secret.metadata.read",
            secret("acme/web/prod", "db")
        ))
        .allowed
    );
    assert!(
        !e.decide(&q(&op, "secret.read", secret("acme/web/prod", "db")))
            .allowed
    );
    // Root is break-glass.
    let d = e.decide(&q(
        &operator(true),
        "secret.read",
        secret("acme/web/prod", "db"),
    ));
    assert_eq!(
        (d.allowed, d.policies.as_slice()),
        (true, &["vern.root".to_owned()][..])
    );
    // Unknown actions are denied with an error.
    let d = e.decide(&q(&svc, "secret.teleport", secret("acme/web/prod", "db")));
    assert!(!d.allowed && !d.errors.is_empty());
}

#[test]
fn no_permit_opens_another_tenant_but_an_explicit_grant_does() {
    let permit_all = dir_with(&[(
        "open.cedar",
        "@id(\"open-everything\")\npermit (principal, action, resource);\n",
    )]);
    let e = PolicyEngine::from_dir(permit_all.path()).unwrap();
    let svc = service("acme/web/prod");
    let d = e.decide(&q(&svc, "secret.read", secret("globex/web/prod", "db")));
    assert!(
        !d.allowed,
        "a permit cannot override tenant isolation: {d:?}"
    );
    assert!(d.policies.contains(&"vern.tenant-isolation".to_owned()));

    let grant = dir_with(&[(
        "shared.cedar",
        r#"@id("acme-reads-globex-shared")
@cross_tenant_grant("acme's web/prod reads globex's shared config")
permit (
  principal == Vern::Service::"svc.acme.web.prod.app",
  action == Vern::Action::"secret.read",
  resource in Vern::Environment::"globex/shared/prod"
);
"#,
    )]);
    let e = PolicyEngine::from_dir(grant.path()).unwrap();
    let d = e.decide(&q(
        &svc,
        "secret.read",
        secret("globex/shared/prod", "config"),
    ));
    assert!(d.allowed, "{d:?}");
    assert_eq!(d.grant.as_deref(), Some("acme-reads-globex-shared"));
    // Only what the grant names.
    assert!(
        !e.decide(&q(
            &svc,
            "secret.write",
            secret("globex/shared/prod", "config")
        ))
        .allowed
    );
    assert!(
        !e.decide(&q(&svc, "secret.read", secret("globex/web/prod", "config")))
            .allowed
    );
    assert!(
        !e.decide(&q(
            &service("acme/web/dev"),
            "secret.read",
            secret("globex/shared/prod", "config")
        ))
        .allowed
    );
}

#[test]
fn explicit_operator_policies_open_secret_values() {
    let dir = dir_with(&[(
        "oncall.cedar",
        r#"@id("oncall-reads-acme")
permit (principal is Vern::Operator, action == Vern::Action::"secret.read", resource in Vern::Tenant::"acme")
when { principal.roles.contains("oncall") };
"#,
    )]);
    let e = PolicyEngine::from_dir(dir.path()).unwrap();
    let d = e.decide(&q(
        &operator(false),
        "secret.read",
        secret("acme/web/prod", "db"),
    ));
    assert_eq!(
        (d.allowed, d.policies.as_slice()),
        (true, &["oncall-reads-acme".to_owned()][..])
    );
    assert!(
        !e.decide(&q(
            &operator(false),
            "secret.read",
            secret("globex/web/prod", "db")
        ))
        .allowed
    );
}

#[test]
fn broken_policies_are_refused_and_the_old_set_keeps_serving() {
    let dir = dir_with(&[("ok.cedar", "@id(\"oncall\")\npermit (principal is Vern::Operator, action == Vern::Action::\"secret.read\", resource);\n")]);
    let e = PolicyEngine::from_dir(dir.path()).unwrap();
    let read = q(
        &operator(false),
        "secret.read",
        secret("acme/web/prod", "db"),
    );
    assert!(e.decide(&read).allowed);
    for (name, text, needle) in [
        (
            "bad.cedar",
            "permit (principal, action, resource",
            "bad.cedar",
        ),
        (
            "typo.cedar",
            "permit (principal is Vern::Operater, action, resource);",
            "Operater",
        ),
        (
            "attr.cedar",
            "permit (principal is Vern::Service, action, resource) when { principal.nonexistent };",
            "nonexistent",
        ),
        (
            "reserved.cedar",
            "@id(\"vern.root\")\npermit (principal, action, resource);",
            "reserved",
        ),
        (
            "grant.cedar",
            "@cross_tenant_grant(\"x\")\nforbid (principal, action, resource);",
            "must be a permit",
        ),
    ] {
        std::fs::write(dir.path().join(name), text).unwrap();
        let err = e.reload(dir.path()).unwrap_err().to_string();
        assert!(err.contains(needle), "{name}: {err}");
        assert!(
            e.decide(&read).allowed,
            "the old set still serves after {name}"
        );
        std::fs::remove_file(dir.path().join(name)).unwrap();
    }
    std::fs::remove_file(dir.path().join("ok.cedar")).unwrap();
    assert_eq!(e.reload(dir.path()).unwrap(), 0);
    assert!(
        !e.decide(&read).allowed,
        "a good reload takes effect at once"
    );
}

const TENANTS: [&str; 3] = ["acme", "globex", "initech"];
const ENVS: [&str; 2] = ["web/prod", "web/dev"];

fn any_subject() -> impl Strategy<Value = Subject> {
    prop_oneof![
        (0..3usize, 0..2usize).prop_map(|(t, e)| service(&format!("{}/{}", TENANTS[t], ENVS[e]))),
        any::<bool>().prop_map(operator),
    ]
}

fn any_resource() -> impl Strategy<Value = Resource> {
    prop_oneof![
        Just(Resource::Platform),
        (0..3usize).prop_map(|t| Resource::Tenant(TenantId::parse(TENANTS[t]).unwrap())),
        (0..3usize, 0..2usize).prop_map(|(t, e)| Resource::Environment(scope(&format!(
            "{}/{}",
            TENANTS[t], ENVS[e]
        )))),
        (0..3usize, 0..2usize, 0..3usize)
            .prop_map(|(t, e, n)| secret(&format!("{}/{}", TENANTS[t], ENVS[e]), &format!("s{n}"))),
    ]
}

fn tenant_of(r: &Resource) -> Option<&str> {
    match r {
        Resource::Platform | Resource::Node { .. } => None,
        Resource::Tenant(t) | Resource::Project(t, _) | Resource::NatsSubject { tenant: t, .. } => {
            Some(t.as_str())
        }
        Resource::Environment(s)
        | Resource::Secret { scope: s, .. }
        | Resource::Service { scope: s, .. } => Some(s.tenant.as_str()),
        Resource::Operator { tenant, .. } => tenant.as_ref().map(TenantId::as_str),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// With any policy files but a grant, a service never reaches another
    /// tenant; with a grant from acme to globex, exactly that opens.
    #[test]
    fn no_cross_tenant_allow_without_an_explicit_grant(
        subject in any_subject(), action in 0..ACTIONS.len(), resource in any_resource()
    ) {
        thread_local! {
            static ENGINES: (PolicyEngine, PolicyEngine) = {
                let open = dir_with(&[("open.cedar", "permit (principal, action, resource);")]);
                let grant = dir_with(&[("g.cedar", "@cross_tenant_grant(\"acme to globex\")\npermit (principal in Vern::Tenant::\"acme\", action == Vern::Action::\"secret.read\", resource in Vern::Tenant::\"globex\");")]);
                (PolicyEngine::from_dir(open.path()).unwrap(), PolicyEngine::from_dir(grant.path()).unwrap())
            };
        }
        let query = q(&subject, ACTIONS[action], resource.clone());
        ENGINES.with(|(open, granted)| {
            if let SubjectKind::Service { scope, .. } = &subject.kind {
                let own = scope.tenant.as_str();
                let cross = tenant_of(&resource).is_some_and(|t| t != own);
                let d = open.decide(&query);
                prop_assert!(!(cross && d.allowed), "cross-tenant allow without a grant: {query:?} {d:?}");
                let g = granted.decide(&query);
                // secret.read applies to secrets only; on a folder the
                // request itself is invalid and denied.
                let granted_pair = own == "acme"
                    && tenant_of(&resource) == Some("globex")
                    && ACTIONS[action] == "secret.read"
                    && matches!(resource, Resource::Secret { .. });
                if cross {
                    prop_assert_eq!(g.allowed, granted_pair, "{:?} {:?}", query, g);
                }
            }
            Ok(())
        })?;
    }
}

/// `svid.issue`: a principal obtains an SVID of its own SPIFFE ID by
/// default, never one of another principal, and DNS names only where a
/// policy names them; tenant isolation holds even against such a policy.
#[test]
fn svids_for_oneself_and_dns_names_only_by_policy() {
    let asking = |e: &PolicyEngine, subject: &Subject, resource: Resource, dns: &[&str]| {
        let mut query = q(subject, "svid.issue", resource);
        query.dns_names = dns.iter().map(|d| (*d).to_owned()).collect();
        e.decide(&query)
    };
    let builtin = PolicyEngine::builtin().unwrap();
    let bare = service_with("acme/web/prod", &[]);
    let d = asking(&builtin, &bare, bare.as_resource(), &[]);
    assert_eq!(
        (d.allowed, d.policies.as_slice()),
        (true, &["vern.svid-self".to_owned()][..])
    );
    let alice = operator(false);
    assert!(asking(&builtin, &alice, alice.as_resource(), &[]).allowed);
    assert!(!asking(&builtin, &bare, bare.as_resource(), &["api.acme.example"]).allowed);
    let neighbour = service_with("acme/web/dev", &[]);
    assert!(!asking(&builtin, &bare, neighbour.as_resource(), &[]).allowed);
    assert!(!asking(&builtin, &alice, bare.as_resource(), &[]).allowed);

    let policy = r#"
        permit (principal, action == Vern::Action::"svid.issue", resource)
        when {
          resource == principal &&
          principal in Vern::Environment::"acme/web/prod" &&
          ["api.acme.example", "web.acme.example"].containsAll(context.dns_names)
        };
        // Too broad on purpose: isolation must still hold.
        permit (principal, action == Vern::Action::"svid.issue", resource);
    "#;
    let dir = dir_with(&[("svid.cedar", policy)]);
    let e = PolicyEngine::from_dir(dir.path()).unwrap();
    assert!(asking(&e, &bare, bare.as_resource(), &["api.acme.example"]).allowed);
    let other_tenant = service_with("globex/web/prod", &[]);
    let d = asking(&e, &bare, other_tenant.as_resource(), &[]);
    assert_eq!(
        (d.allowed, d.policies.as_slice()),
        (false, &["vern.tenant-isolation".to_owned()][..])
    );
    // The DNS names are part of the question: a cached answer for one set
    // of names is never given for another.
    let narrow = PolicyEngine::from_dir(
        dir_with(&[("svid.cedar", policy.split("// Too").next().unwrap())]).path(),
    )
    .unwrap();
    for _ in 0..2 {
        assert!(asking(&narrow, &bare, bare.as_resource(), &["api.acme.example"]).allowed);
        assert!(!asking(&narrow, &bare, bare.as_resource(), &["evil.example"]).allowed);
    }
    assert!(narrow.cache_stats().enabled);
}
