//! The decision cache: a reload takes effect at once even for a cached
//! query, a set that reads the time is never cached, the caller's address
//! is part of the key exactly when a policy reads it, the cache stays
//! within its capacity, and concurrent use gives the uncached decisions.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use vern_core::{EnvironmentId, ProjectId, Scope, TenantId};
use vern_policy::{Binding, PolicyEngine, Query, Resource, Subject, SubjectKind};

fn scope(t: &str) -> Scope {
    Scope {
        tenant: TenantId::parse(t).unwrap(),
        project: ProjectId::parse("web").unwrap(),
        environment: EnvironmentId::parse("prod").unwrap(),
    }
}

/// An on-call operator reading one of acme's secrets.
fn read(name: &str) -> Query {
    Query {
        subject: Subject {
            id: "op.oncall".into(),
            kind: SubjectKind::Operator {
                roles: vec!["oncall".into()],
                tenant: None,
                root: false,
            },
        },
        action: "secret.read".into(),
        resource: Resource::Secret {
            mount: "secret".into(),
            path: format!("acme/web/prod/{name}"),
            scope: scope("acme"),
        },
        source_ip: "10.0.0.1".into(),
        time: 0,
        binding: Binding::None,
        dns_names: Vec::new(),
    }
}

const ONCALL: &str = "@id(\"oncall-reads-acme\")\npermit (principal is Vern::Operator, action == Vern::Action::\"secret.read\", resource in Vern::Tenant::\"acme\") when { principal.roles.contains(\"oncall\") };\n";
const FORBID: &str = "@id(\"no-db\")\nforbid (principal, action, resource == Vern::Secret::\"secret:acme/web/prod/db\");\n";

fn write(dir: &tempfile::TempDir, name: &str, text: &str) {
    std::fs::write(dir.path().join(name), text).unwrap();
}

#[test]
fn a_reload_takes_effect_at_once_for_a_cached_query() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir, "oncall.cedar", ONCALL);
    let e = PolicyEngine::from_dir(dir.path()).unwrap();
    let q = read("db");
    // Allowed, and the second answer came from the cache.
    assert!(e.decide(&q).allowed);
    assert!(e.decide(&q).allowed);
    let stats = e.cache_stats();
    assert!(stats.enabled);
    assert_eq!((stats.hits, stats.misses, stats.entries), (1, 1, 1));

    // allow → deny: a forbid arrives.
    write(&dir, "forbid.cedar", FORBID);
    e.reload(dir.path()).unwrap();
    let d = e.decide(&q);
    assert!(!d.allowed, "{d:?}");
    assert_eq!(d.policies, vec!["no-db".to_owned()]);
    assert!(!e.decide(&q).allowed, "and stays denied once cached");

    // deny → allow: the forbid goes again.
    std::fs::remove_file(dir.path().join("forbid.cedar")).unwrap();
    e.reload(dir.path()).unwrap();
    assert!(e.decide(&q).allowed);

    // allow → deny: the permit goes.
    std::fs::remove_file(dir.path().join("oncall.cedar")).unwrap();
    e.reload(dir.path()).unwrap();
    assert!(!e.decide(&q).allowed);
    assert_eq!(e.cache_stats().entries, 1, "a reload starts an empty cache");
}

#[test]
fn a_set_that_reads_the_time_is_never_served_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir,
        "hours.cedar",
        "@id(\"until-1000\")\npermit (principal is Vern::Operator, action == Vern::Action::\"secret.read\", resource in Vern::Tenant::\"acme\") when { context.time < 1000 };\n",
    );
    let e = PolicyEngine::from_dir(dir.path()).unwrap();
    assert!(!e.cache_stats().enabled);
    let early = read("db");
    let late = Query {
        time: 2000,
        ..early.clone()
    };
    // The same question before and after the deadline, twice each.
    for _ in 0..2 {
        assert!(e.decide(&early).allowed);
        assert!(!e.decide(&late).allowed);
    }
    let stats = e.cache_stats();
    assert_eq!((stats.entries, stats.hits), (0, 0));

    // Reading `context` as a whole may read the time too.
    write(
        &dir,
        "hours.cedar",
        "permit (principal, action, resource) when { context == context };\n",
    );
    e.reload(dir.path()).unwrap();
    assert!(!e.cache_stats().enabled);
    // Without such a policy the cache is back.
    std::fs::remove_file(dir.path().join("hours.cedar")).unwrap();
    e.reload(dir.path()).unwrap();
    assert!(e.cache_stats().enabled);
}

#[test]
fn the_source_address_is_in_the_key_only_when_a_policy_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir,
        "net.cedar",
        "@id(\"from-10-0-0-1\")\npermit (principal is Vern::Operator, action == Vern::Action::\"secret.read\", resource in Vern::Tenant::\"acme\") when { context.source_ip == \"10.0.0.1\" };\n",
    );
    let e = PolicyEngine::from_dir(dir.path()).unwrap();
    assert!(e.cache_stats().keyed_on_source_ip);
    let inside = read("db");
    let outside = Query {
        source_ip: "192.0.2.7".into(),
        ..inside.clone()
    };
    assert!(e.decide(&inside).allowed);
    assert!(
        !e.decide(&outside).allowed,
        "another address is another key"
    );
    assert!(e.decide(&inside).allowed);
    assert!(!e.decide(&outside).allowed);
    assert_eq!(e.cache_stats().entries, 2);

    // No policy reads the address: one entry serves every address.
    write(&dir, "net.cedar", ONCALL);
    e.reload(dir.path()).unwrap();
    assert!(!e.cache_stats().keyed_on_source_ip);
    assert!(e.decide(&inside).allowed);
    assert!(e.decide(&outside).allowed);
    let stats = e.cache_stats();
    assert_eq!((stats.entries, stats.hits), (1, 1));
}

#[test]
fn the_cache_stays_within_its_capacity() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir, "oncall.cedar", ONCALL);
    let e = PolicyEngine::from_dir(dir.path())
        .unwrap()
        .with_decision_cache_capacity(64)
        .unwrap();
    for i in 0..1000 {
        assert!(e.decide(&read(&format!("s{i}"))).allowed);
    }
    let stats = e.cache_stats();
    assert_eq!(stats.capacity, 64);
    assert!(stats.entries <= 64, "{stats:?}");
    assert_eq!(stats.misses, 1000);
    // The capacity holds across reloads; zero turns the cache off.
    e.reload(dir.path()).unwrap();
    assert_eq!(e.cache_stats().capacity, 64);
    let off = e.with_decision_cache_capacity(0).unwrap();
    assert!(!off.cache_stats().enabled);
    assert!(off.decide(&read("db")).allowed);
}

#[test]
fn concurrent_cached_decisions_equal_uncached_ones() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir, "oncall.cedar", ONCALL);
    write(&dir, "forbid.cedar", FORBID);
    let e = PolicyEngine::from_dir(dir.path())
        .unwrap()
        .with_decision_cache_capacity(32)
        .unwrap();
    let queries: Vec<Query> = (0..48)
        .map(|i| read(if i % 5 == 0 { "db" } else { "other" }))
        .chain((0..48).map(|i| read(&format!("s{i}"))))
        .collect();
    let expected: Vec<_> = queries.iter().map(|q| e.decide_uncached(q)).collect();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (e, queries, expected) = (&e, &queries, &expected);
            s.spawn(move || {
                for round in 0..20 {
                    for (i, q) in queries.iter().enumerate().skip((t + round) % 7) {
                        assert_eq!(e.decide(q), expected[i]);
                    }
                }
            });
        }
    });
    assert!(e.cache_stats().hits > 0);
}
