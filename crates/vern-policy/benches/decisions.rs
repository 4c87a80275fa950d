//! In-process decision latency (p50, p99) and throughput with requests
//! spread over 1, 100 and 10,000 tenants, with the shipped example policies
//! plus one operator policy per tenant (so the policy set grows with the
//! tenants too). Each decision builds only the entities it needs, so the
//! entity count per decision stays constant; the policy count does not.
//! Run with `cargo bench -p vern-policy`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use std::time::Instant;

use vern_core::{EnvironmentId, ProjectId, Scope, TenantId};
use vern_policy::{Binding, PolicyEngine, Query, Resource, Subject, SubjectKind};

const DECISIONS: usize = 20_000;

fn scope(t: usize, e: usize) -> Scope {
    Scope {
        tenant: TenantId::parse(&format!("t{t}")).unwrap(),
        project: ProjectId::parse("web").unwrap(),
        environment: EnvironmentId::parse(if e == 0 { "prod" } else { "dev" }).unwrap(),
    }
}

fn engine(tenants: usize, per_tenant_policies: bool) -> (PolicyEngine, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    for f in ["operators.cedar", "grants.cedar"] {
        std::fs::copy(shipped.join(f), dir.path().join(f)).unwrap();
    }
    if per_tenant_policies {
        let mut text = String::new();
        for t in 0..tenants {
            text.push_str(&format!(
                "permit (principal is Vern::Operator, action == Vern::Action::\"secret.read\", resource in Vern::Tenant::\"t{t}\") when {{ principal.roles.contains(\"t{t}-reader\") }};\n"
            ));
        }
        std::fs::write(dir.path().join("tenants.cedar"), text).unwrap();
    }
    (PolicyEngine::from_dir(dir.path()).unwrap(), dir)
}

fn queries(tenants: usize) -> Vec<Query> {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed as usize
    };
    (0..DECISIONS)
        .map(|_| {
            let (pt, rt) = (next() % tenants, next() % tenants);
            let subject = if next() % 4 == 0 {
                Subject {
                    id: "op.x".into(),
                    kind: SubjectKind::Operator {
                        roles: vec![format!("t{pt}-reader")],
                        tenant: None,
                        root: false,
                    },
                }
            } else {
                Subject {
                    id: format!("svc.t{pt}.web.prod.app"),
                    kind: SubjectKind::Service {
                        scope: scope(pt, 0),
                        scopes: vec!["secrets:read".into(), "secrets:write".into()],
                    },
                }
            };
            let s = scope(rt, next() % 2);
            Query {
                subject,
                action: if next() % 3 == 0 {
                    "secret.write".into()
                } else {
                    "secret.read".into()
                },
                resource: Resource::Secret {
                    mount: "secret".into(),
                    path: format!("{s}/db"),
                    scope: s,
                },
                source_ip: "10.0.0.1".into(),
                time: 0,
                binding: Binding::None,
            }
        })
        .collect()
}

fn measure(label: &str, engine: &PolicyEngine, qs: &[Query]) {
    for q in qs.iter().take(1000) {
        engine.decide(q);
    }
    let mut lat = Vec::with_capacity(qs.len());
    let started = Instant::now();
    let mut allowed = 0usize;
    for q in qs {
        let t = Instant::now();
        allowed += usize::from(engine.decide(q).allowed);
        lat.push(t.elapsed());
    }
    let total = started.elapsed();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64) * p) as usize].as_secs_f64() * 1e6;
    println!(
        "{label:<44} p50 {:>6.1} µs  p99 {:>6.1} µs  {:>8.0} decisions/s  ({allowed} allowed)",
        pct(0.50),
        pct(0.99),
        qs.len() as f64 / total.as_secs_f64()
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    for tenants in [1usize, 100, 10_000] {
        let qs = queries(tenants);
        let (shared, _d1) = engine(tenants, false);
        measure(&format!("{tenants} tenants, shared policies"), &shared, &qs);
        let (per_tenant, _d2) = engine(tenants, true);
        measure(
            &format!("{tenants} tenants, + one policy per tenant"),
            &per_tenant,
            &qs,
        );
    }
}
