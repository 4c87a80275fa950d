//! In-process decision latency (p50, p99) and throughput as tenants and
//! their policies grow: 1, 100 and 1,000 tenants with 10 policies each,
//! and 10,000 tenants with one each, on top of the built-in and shipped
//! example policies. For each it measures
//!
//! * `unpartitioned`: every policy evaluated on every request, as before
//!   policies were split by tenant (the baseline; time-boxed, because at
//!   10,000 policies a decision takes milliseconds);
//! * `partitioned`: the global policies and those of the request's
//!   tenants, without the decision cache (every decision a miss);
//! * `cached`: `decide` as the server calls it, with a realistic repeat
//!   pattern: requests drawn from a pool of distinct queries with
//!   Zipf-like popularity (s = 1), measured after a warm-up of as many
//!   requests; the hit rate is printed.
//!
//! At the end it sets the uncached p99 at 1,000 and 10,000 tenants
//! against the bound of 50 µs.
//!
//! Each row is the median over several rounds (`VERN_BENCH_ROUNDS`, 5 by
//! default; `VERN_BENCH_TENANTS` picks one tenant count,
//! `VERN_BENCH_BASELINE=0` skips the baseline). Run with
//! `cargo bench -p vern-policy --bench decisions`. It allocates with
//! jemalloc, as the `vern` binary does.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss
)]

use std::time::{Duration, Instant};

use vern_core::{EnvironmentId, ProjectId, Scope, TenantId};
use vern_policy::{Binding, Decision, PolicyEngine, Query, Resource, Subject, SubjectKind};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Decisions per measured run.
const DECISIONS: usize = 20_000;
/// Distinct queries the cached workload draws from.
const POOL: usize = 5_000;
/// The most time one round of the unpartitioned baseline may take.
const BASELINE_BUDGET: Duration = Duration::from_secs(2);

fn scope(t: usize, project: &str, env: &str) -> Scope {
    Scope {
        tenant: TenantId::parse(&format!("t{t}")).unwrap(),
        project: ProjectId::parse(project).unwrap(),
        environment: EnvironmentId::parse(env).unwrap(),
    }
}

/// Tenant `t`'s own policies: the first `n` of ten typical ones (reader
/// and auditor roles, listing, a forbidden secret, binding rules, and a
/// cross-tenant grant to the next tenant's shared configuration).
fn tenant_policies(t: usize, tenants: usize, n: usize) -> String {
    let next = (t + 1) % tenants;
    let all = [
        format!("permit (principal is Vern::Operator, action == Vern::Action::\"secret.read\", resource in Vern::Tenant::\"t{t}\") when {{ principal.roles.contains(\"t{t}-reader\") }};"),
        format!("permit (principal in Vern::Environment::\"t{t}/web/prod\", action == Vern::Action::\"secret.list\", resource in Vern::Project::\"t{t}/web\");"),
        format!("forbid (principal in Vern::Tenant::\"t{t}\", action == Vern::Action::\"secret.delete\", resource in Vern::Environment::\"t{t}/web/prod\") when {{ context.binding == \"none\" }};"),
        format!("permit (principal is Vern::Service in Vern::Environment::\"t{t}/ci/prod\", action == Vern::Action::\"secret.write\", resource in Vern::Environment::\"t{t}/web/dev\") when {{ principal.scopes.contains(\"deploy\") }};"),
        format!("permit (principal is Vern::Operator in Vern::Tenant::\"t{t}\", action in [Vern::Action::\"secret.metadata.read\", Vern::Action::\"secret.list\"], resource in Vern::Tenant::\"t{t}\");"),
        format!("forbid (principal, action, resource == Vern::Secret::\"secret:t{t}/web/prod/root-ca\");"),
        format!("permit (principal is Vern::Operator in Vern::Tenant::\"t{t}\", action == Vern::Action::\"audit.read\", resource == Vern::Tenant::\"t{t}\") when {{ principal.roles.contains(\"auditor\") }};"),
        format!("permit (principal in Vern::Project::\"t{t}/web\", action == Vern::Action::\"secret.metadata.read\", resource in Vern::Project::\"t{t}/web\");"),
        format!("forbid (principal is Vern::Service in Vern::Tenant::\"t{t}\", action == Vern::Action::\"secret.write\", resource in Vern::Environment::\"t{t}/web/prod\") unless {{ context.binding == \"dpop\" || context.binding == \"mtls\" }};"),
        format!("@cross_tenant_grant(\"t{t} web/prod reads t{next} shared/prod\")\npermit (principal in Vern::Environment::\"t{t}/web/prod\", action == Vern::Action::\"secret.read\", resource in Vern::Environment::\"t{next}/shared/prod\");"),
    ];
    all.iter()
        .take(n)
        .enumerate()
        .map(|(i, p)| format!("@id(\"t{t}-{i}\")\n{p}\n"))
        .collect()
}

fn build_engine(tenants: usize, per_tenant: usize) -> (PolicyEngine, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    for f in ["operators.cedar", "grants.cedar"] {
        std::fs::copy(shipped.join(f), dir.path().join(f)).unwrap();
    }
    let text: String = (0..tenants)
        .map(|t| tenant_policies(t, tenants, per_tenant))
        .collect();
    std::fs::write(dir.path().join("tenants.cedar"), text).unwrap();
    let engine = PolicyEngine::from_dir(dir.path()).unwrap();
    (engine, dir)
}

/// A small xorshift generator: the same queries in every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 as usize
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

const NAMES: &[&str] = &[
    "db", "api-key", "tls", "root-ca", "smtp", "cfg-0", "cfg-1", "cfg-2", "cfg-3", "cfg-4",
];

fn secret(s: Scope, name: &str) -> Resource {
    Resource::Secret {
        mount: "secret".into(),
        path: format!("{s}/{name}"),
        scope: s,
    }
}

/// One request of a typical mix: mostly services reading and writing their
/// own tenant's secrets, some cross-tenant reads (granted or not),
/// platform and tenant operators.
fn query(rng: &mut Rng, tenants: usize) -> Query {
    let t = rng.next() % tenants;
    let name = NAMES[rng.next() % NAMES.len()];
    let service = |env: &str, scopes: &[&str]| Subject {
        id: format!("svc.t{t}.web.{env}.app"),
        kind: SubjectKind::Service {
            scope: scope(t, "web", env),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        },
    };
    let (subject, action, resource) = match rng.next() % 100 {
        0..=54 => {
            let env = if rng.next().is_multiple_of(4) {
                "dev"
            } else {
                "prod"
            };
            (
                service(env, &["secrets:read"]),
                "secret.read",
                secret(scope(t, "web", env), name),
            )
        }
        55..=64 => (
            service("prod", &["secrets:read", "secrets:write"]),
            "secret.write",
            secret(scope(t, "web", "prod"), name),
        ),
        65..=71 => (
            service("prod", &["secrets:read"]),
            "secret.list",
            Resource::Environment(scope(t, "web", "prod")),
        ),
        72..=79 => (
            service("prod", &["secrets:read"]),
            "secret.read",
            secret(scope((t + 1) % tenants, "shared", "prod"), "config"),
        ),
        80..=84 => (
            service("prod", &["secrets:read"]),
            "secret.read",
            secret(scope(rng.next() % tenants, "web", "prod"), name),
        ),
        85..=94 => (
            Subject {
                id: "op.oncall".into(),
                kind: SubjectKind::Operator {
                    roles: vec![format!("t{t}-reader")],
                    tenant: None,
                    root: false,
                },
            },
            "secret.read",
            secret(scope(t, "web", "prod"), name),
        ),
        _ => (
            Subject {
                id: format!("op.t{t}.admin"),
                kind: SubjectKind::Operator {
                    roles: vec!["auditor".into()],
                    tenant: Some(TenantId::parse(&format!("t{t}")).unwrap()),
                    root: false,
                },
            },
            "audit.read",
            Resource::Tenant(TenantId::parse(&format!("t{t}")).unwrap()),
        ),
    };
    Query {
        subject,
        action: action.into(),
        resource,
        source_ip: "10.0.0.1".into(),
        time: 0,
        binding: Binding::None,
        dns_names: Vec::new(),
    }
}

/// `n` requests drawn from `pool` with Zipf-like popularity (s = 1).
fn zipf_draws(rng: &mut Rng, pool: &[Query], n: usize) -> Vec<Query> {
    let weights: Vec<f64> = (1..=pool.len()).map(|k| 1.0 / k as f64).collect();
    let total: f64 = weights.iter().sum();
    let mut cdf = Vec::with_capacity(pool.len());
    let mut acc = 0.0;
    for w in weights {
        acc += w / total;
        cdf.push(acc);
    }
    (0..n)
        .map(|_| {
            let u = rng.unit();
            let i = cdf.partition_point(|c| *c < u).min(pool.len() - 1);
            pool[i].clone()
        })
        .collect()
}

struct Run {
    p50: f64,
    p99: f64,
    per_second: f64,
    allowed: usize,
    decisions: usize,
}

/// Times `decide` over `qs`, stopping early once `budget` is spent.
fn measure(qs: &[Query], budget: Duration, decide: impl Fn(&Query) -> Decision) -> Run {
    let mut lat = Vec::with_capacity(qs.len());
    let mut allowed = 0usize;
    let started = Instant::now();
    for q in qs {
        let t = Instant::now();
        allowed += usize::from(decide(q).allowed);
        lat.push(t.elapsed());
        if started.elapsed() > budget && lat.len() >= 100 {
            break;
        }
    }
    let total = started.elapsed();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64) * p) as usize].as_secs_f64() * 1e6;
    Run {
        p50: pct(0.50),
        p99: pct(0.99),
        per_second: lat.len() as f64 / total.as_secs_f64(),
        allowed,
        decisions: lat.len(),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn report(label: &str, mode: &str, runs: &[Run], note: &str) {
    let p50 = median(runs.iter().map(|r| r.p50).collect());
    let p99 = median(runs.iter().map(|r| r.p99).collect());
    let rate = median(runs.iter().map(|r| r.per_second).collect());
    println!("| {label:<18} | {mode:<13} | {p50:>9.1} | {p99:>9.1} | {rate:>11.0} | {note}");
}

/// The bound on an uncached decision's p99 at scale.
const P99_BOUND_US: f64 = 50.0;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rounds: usize = std::env::var("VERN_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5)
        .max(1);
    println!("medians of {rounds} rounds; {DECISIONS} decisions per round (baseline: at most {BASELINE_BUDGET:?})");
    println!("| tenants × policies | mode          |   p50 µs  |   p99 µs  | decisions/s | notes");
    println!("|--------------------|---------------|-----------|-----------|-------------|------");
    // `VERN_BENCH_TENANTS=1000` runs the scenarios of that many tenants only.
    let only: Option<usize> = std::env::var("VERN_BENCH_TENANTS")
        .ok()
        .and_then(|t| t.parse().ok());
    // `VERN_BENCH_BASELINE=0` skips the slow baseline (for profiling).
    let baseline = std::env::var("VERN_BENCH_BASELINE").map_or(true, |b| b != "0");
    let mut bounded = Vec::new();
    for (tenants, per_tenant) in [(1usize, 10usize), (100, 10), (1_000, 10), (10_000, 1)] {
        if only.is_some_and(|o| o != tenants) {
            continue;
        }
        let label = format!("{tenants} × {per_tenant}");
        let built = Instant::now();
        let (engine, dir) = build_engine(tenants, per_tenant);
        let load = built.elapsed();
        let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ tenants as u64);
        let uniform: Vec<Query> = (0..DECISIONS).map(|_| query(&mut rng, tenants)).collect();
        let pool: Vec<Query> = (0..POOL).map(|_| query(&mut rng, tenants)).collect();

        // The three modes must agree; checked once on a sample.
        for q in uniform.iter().take(300) {
            assert_eq!(
                engine.decide_uncached(q),
                engine.decide_unpartitioned(q),
                "{q:?}"
            );
        }

        let (mut base, mut part, mut cached, mut hit_rates) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            // The baseline starts at a different place each round so the
            // time-boxed sample is not always the same prefix.
            let offset = (round * 997) % uniform.len();
            let rotated: Vec<Query> = uniform[offset..]
                .iter()
                .chain(&uniform[..offset])
                .cloned()
                .collect();
            if baseline {
                base.push(measure(&rotated, BASELINE_BUDGET, |q| {
                    engine.decide_unpartitioned(q)
                }));
            }
            part.push(measure(&uniform, Duration::MAX, |q| {
                engine.decide_uncached(q)
            }));

            // A reload empties the cache; warm it, then measure.
            engine.reload(dir.path()).unwrap();
            let warm = zipf_draws(&mut rng, &pool, DECISIONS);
            let hot = zipf_draws(&mut rng, &pool, DECISIONS);
            for q in &warm {
                engine.decide(q);
            }
            let before = engine.cache_stats();
            cached.push(measure(&hot, Duration::MAX, |q| engine.decide(q)));
            let after = engine.cache_stats();
            let hits = after.hits - before.hits;
            let lookups = hits + after.misses - before.misses;
            hit_rates.push(hits as f64 / lookups.max(1) as f64);
        }
        let allowed = |runs: &[Run]| {
            let r = &runs[0];
            format!(
                "{:.0}% allowed",
                100.0 * r.allowed as f64 / r.decisions as f64
            )
        };
        if baseline {
            report(
                &label,
                "unpartitioned",
                &base,
                &format!(
                    "baseline, {} decisions/round; {}",
                    base[0].decisions,
                    allowed(&base)
                ),
            );
        }
        report(
            &label,
            "partitioned",
            &part,
            &format!(
                "uncached (every decision a miss); {}; load {load:.1?}",
                allowed(&part)
            ),
        );
        if tenants >= 1_000 {
            bounded.push((label.clone(), median(part.iter().map(|r| r.p99).collect())));
        }
        report(
            &label,
            "cached",
            &cached,
            &format!(
                "Zipf over {POOL} queries, hit rate {:.1}%; {}",
                100.0 * median(hit_rates),
                allowed(&cached)
            ),
        );
    }
    for (label, p99) in bounded {
        let verdict = if p99 < P99_BOUND_US { "met" } else { "misses" };
        println!(
            "{label}: uncached p99 {p99:.1} µs against the bound of {P99_BOUND_US} µs: {verdict}"
        );
    }
}
