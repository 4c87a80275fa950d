//! HTTP load generator against real `vern serve` processes: at 32
//! concurrent connections, per backend (the SQLite dev server, and
//! PostgreSQL when `VERN_TEST_POSTGRES_URL` is set, as `./scripts/bench`
//! does), the request rate, p50 and p99 latency of
//!
//! - `GET /v1/sys/health`, the machine's HTTP ceiling,
//! - audited secret reads with the root token, a service token and a
//!   DPoP-bound service token,
//! - audited secret writes with a service token,
//! - token issuance (`client_credentials`, `client_secret_basic`),
//! - `POST /v1/authz/check`,
//! - service-token reads on a second server with audit off,
//!
//! each as a ratio to the health ceiling measured in the same round, and
//! the raw Ed25519 signing rate in-process (one thread), of which token
//! issuance is reported as a ratio. Rounds interleave all scenarios on
//! both backends so the machine's drift hits all alike; the summary holds
//! the medians. `wrk` (when installed) measures the health ceiling too, as
//! a check that the load client is not the bottleneck.
//!
//! Client and server share the machine, so the client is lean (see
//! `common`): pre-built requests on keep-alive connections, two client
//! threads. DPoP proofs are single-use, so each DPoP run gets its own
//! proofs, signed before its warm-up starts: client-side signing is not in
//! the measured time.
//!
//! `VERN_BENCH_ROUNDS` (default 3) and `VERN_BENCH_SECONDS` (measured
//! seconds per run, default 5) shorten or lengthen a run.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod common;

use std::process::Command;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use common::{
    access_token, call, call_all, cpu_ticks, create_client, dpop_proof, env_number,
    init_and_unseal, json_request, machine_cpus, machine_ticks, now_secs, request,
    ticks_per_second, token_request, Conn, Server,
};
use ed25519_dalek::{Signer as _, SigningKey};
use serde_json::json;

/// Concurrent connections of every run.
const CONCURRENCY: usize = 32;
/// Threads of the load client, each with its own single-threaded runtime
/// and `CONCURRENCY / CLIENT_THREADS` connections (like `wrk -t2`).
const CLIENT_THREADS: usize = 2;
const WARMUP: Duration = Duration::from_secs(1);
/// Secrets read in turn by the read scenarios.
const SECRETS: usize = 100;
const ROOT: &str = "bench-root";
/// How long the raw signing rate is measured each round.
const SIGNING_TIME: Duration = Duration::from_secs(2);
/// The `wrk` command the health ceiling is checked with.
const WRK: [&str; 5] = ["-t2", "-c32", "-d8s", "--latency", "--timeout=5s"];

/// One connection's requests, sent in turn.
type Requests = Arc<Vec<Vec<u8>>>;

static TICKS: LazyLock<f64> = LazyLock::new(ticks_per_second);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Health,
    RootRead,
    ServiceRead,
    DpopRead,
    ServiceWrite,
    TokenIssue,
    AuthzCheck,
    ServiceReadAuditOff,
}

const SCENARIOS: [Scenario; 8] = [
    Scenario::Health,
    Scenario::RootRead,
    Scenario::ServiceRead,
    Scenario::DpopRead,
    Scenario::ServiceWrite,
    Scenario::TokenIssue,
    Scenario::AuthzCheck,
    Scenario::ServiceReadAuditOff,
];

impl Scenario {
    /// The name `VERN_BENCH_SCENARIOS` selects it by.
    fn key(self) -> &'static str {
        match self {
            Self::Health => "health",
            Self::RootRead => "root-read",
            Self::ServiceRead => "service-read",
            Self::DpopRead => "dpop-read",
            Self::ServiceWrite => "write",
            Self::TokenIssue => "token",
            Self::AuthzCheck => "authz",
            Self::ServiceReadAuditOff => "audit-off-read",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Health => "health (the ceiling)",
            Self::RootRead => "read, root token",
            Self::ServiceRead => "read, service token",
            Self::DpopRead => "read, DPoP-bound token",
            Self::ServiceWrite => "write, service token",
            Self::TokenIssue => "token issuance",
            Self::AuthzCheck => "authz check",
            Self::ServiceReadAuditOff => "read, service token, audit off",
        }
    }
}

/// A service client and a token of it.
struct Service {
    id: String,
    secret: String,
    token: String,
}

/// One backend: a server with audit on, one with audit off, and their
/// clients.
struct Backend {
    name: &'static str,
    on: Server,
    off: Server,
    root: String,
    reader: Service,
    off_reader: Service,
    dpop_key: SigningKey,
    dpop_token: String,
}

/// What one run measured.
struct Outcome {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    /// CPU time per request (warm-up included) of the load client and of
    /// the `vern` process.
    client_cpu_us: f64,
    server_cpu_us: f64,
    /// The machine's busy CPU time per request (client, vern, PostgreSQL,
    /// kernel) and the share of its CPU time left idle, warm-up included.
    machine_cpu_us: f64,
    idle_pct: f64,
    errors: u64,
    first_error: Option<String>,
    /// A single-use request list (DPoP proofs) ran out before the end.
    exhausted: bool,
}

fn secret_path(prefix: &str, i: usize) -> String {
    format!("/v1/secret/data/bench/load/prod/{prefix}{i}")
}

/// Writes the read scenarios' secrets, creates the service clients and
/// gets their tokens.
async fn prepare(
    name: &'static str,
    (on, root): (Server, String),
    (off, off_root): (Server, String),
) -> Backend {
    let seed = |addr: &str, root: &str| {
        (0..SECRETS)
            .map(|i| {
                json_request(
                    "POST",
                    &secret_path("s", i),
                    addr,
                    &[("X-Vault-Token", root)],
                    &json!({"data": {"value": format!("{i:04}-{}", "v".repeat(60)), "n": i}}),
                )
            })
            .collect::<Vec<_>>()
    };
    for (server, root) in [(&on, &root), (&off, &off_root)] {
        for r in call_all(&server.addr, seed(&server.addr, root), 8).await {
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        }
    }
    let spec = |name: &str, dpop: bool| {
        json!({"tenant": "bench", "project": "load", "environment": "prod", "name": name,
               "scopes": ["secrets:read", "secrets:write"], "token_ttl": 3600,
               "dpop_bound": dpop})
    };
    let service = |server: &Server, root: &str| {
        let (addr, root) = (server.addr.clone(), root.to_owned());
        async move {
            let (id, secret) = create_client(&addr, &root, &spec("reader", false)).await;
            let token = access_token(&call(&addr, &token_request(&addr, &id, &secret, &[])).await);
            Service { id, secret, token }
        }
    };
    let reader = service(&on, &root).await;
    let off_reader = service(&off, &off_root).await;

    // A DPoP-bound client: its token request carries a proof; the token
    // endpoint asks for a server nonce first (the servers run with the
    // default, nonce-required configuration; resource requests never
    // need one).
    let addr = on.addr.clone();
    let (id, secret) = create_client(&addr, &root, &spec("dpop-reader", true)).await;
    let dpop_key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let htu = format!("http://{addr}/oauth2/token");
    let mut nonce = None;
    let dpop_token = loop {
        let proof = dpop_proof(
            &dpop_key,
            "POST",
            &htu,
            &format!("token-{}", rand::random::<u64>()),
            now_secs(),
            None,
            nonce.as_deref(),
        );
        let r = call(
            &addr,
            &token_request(&addr, &id, &secret, &[("DPoP", &proof)]),
        )
        .await;
        match r.header("dpop-nonce") {
            Some(n) if r.status == 400 && nonce.is_none() => nonce = Some(n.to_owned()),
            _ => {
                assert_eq!(r.json()["token_type"], "DPoP");
                break access_token(&r);
            }
        }
    };
    Backend {
        name,
        on,
        off,
        root,
        reader,
        off_reader,
        dpop_key,
        dpop_token,
    }
}

/// The requests of `scenario`, one list per connection; the DPoP read's
/// lists hold `dpop_budget` requests in all, each with its own proof, to
/// be sent once.
fn plan(b: &Backend, scenario: Scenario, round: usize, dpop_budget: usize) -> Vec<Requests> {
    let host = match scenario {
        Scenario::ServiceReadAuditOff => b.off.addr.as_str(),
        _ => b.on.addr.as_str(),
    };
    let bearer = format!("Bearer {}", b.reader.token);
    let shared = |reqs: Vec<Vec<u8>>| {
        let reqs = Arc::new(reqs);
        vec![reqs; CONCURRENCY]
    };
    match scenario {
        Scenario::Health => shared(vec![request("GET", "/v1/sys/health", host, &[], None)]),
        Scenario::RootRead => shared(
            (0..SECRETS)
                .map(|i| {
                    let path = secret_path("s", i);
                    request("GET", &path, host, &[("X-Vault-Token", &b.root)], None)
                })
                .collect(),
        ),
        Scenario::ServiceRead | Scenario::ServiceReadAuditOff => {
            let token = match scenario {
                Scenario::ServiceRead => bearer,
                _ => format!("Bearer {}", b.off_reader.token),
            };
            shared(
                (0..SECRETS)
                    .map(|i| {
                        let path = secret_path("s", i);
                        request("GET", &path, host, &[("Authorization", &token)], None)
                    })
                    .collect(),
            )
        }
        Scenario::ServiceWrite => shared(
            (0..SECRETS)
                .map(|i| {
                    json_request(
                        "POST",
                        &secret_path("w", i),
                        host,
                        &[("Authorization", &bearer)],
                        &json!({"data": {"value": format!("{i:04}-{}", "w".repeat(60)), "n": i}}),
                    )
                })
                .collect(),
        ),
        Scenario::TokenIssue => shared(vec![token_request(
            host,
            &b.reader.id,
            &b.reader.secret,
            &[],
        )]),
        Scenario::AuthzCheck => shared(
            (0..SECRETS)
                .map(|i| {
                    json_request(
                        "POST",
                        "/v1/authz/check",
                        host,
                        &[("X-Vault-Token", &b.root)],
                        &json!({
                            "principal": format!("service:svc.t{i}.web.prod.app@t{i}/web/prod"),
                            "action": "secret.read",
                            "resource": format!("secret:t{}/web/prod/db", (i * 7) % SECRETS),
                        }),
                    )
                })
                .collect(),
        ),
        Scenario::DpopRead => {
            // Single-use proofs, signed now, on all cores, before the run.
            let per_conn = dpop_budget.div_ceil(CONCURRENCY);
            let auth = format!("DPoP {}", b.dpop_token);
            let run_id: u64 = rand::random();
            let iat = now_secs();
            let conns: Vec<usize> = (0..CONCURRENCY).collect();
            let mut lists: Vec<Requests> = Vec::new();
            std::thread::scope(|s| {
                let handles: Vec<_> = conns
                    .chunks(CONCURRENCY.div_ceil(CLIENT_THREADS))
                    .map(|chunk| {
                        let auth = &auth;
                        s.spawn(move || {
                            chunk
                                .iter()
                                .map(|&c| {
                                    let reqs = (0..per_conn)
                                        .map(|k| {
                                            let path = secret_path("s", (c * 7 + k) % SECRETS);
                                            let htu = format!("http://{host}{path}");
                                            let proof = dpop_proof(
                                                &b.dpop_key,
                                                "GET",
                                                &htu,
                                                &format!("{run_id:x}-{round}-{c}-{k}"),
                                                iat,
                                                Some(&b.dpop_token),
                                                None,
                                            );
                                            request(
                                                "GET",
                                                &path,
                                                host,
                                                &[("Authorization", auth), ("DPoP", &proof)],
                                                None,
                                            )
                                        })
                                        .collect::<Vec<_>>();
                                    Arc::new(reqs)
                                })
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                for h in handles {
                    lists.extend(h.join().unwrap());
                }
            });
            lists
        }
    }
}

/// One connection's loop: sends its requests in turn (each once when
/// `once`) until `stop`; records the latency of those started after
/// `measure_from`.
async fn connection(
    addr: String,
    reqs: Requests,
    once: bool,
    offset: usize,
    measure_from: Instant,
    stop: Instant,
) -> (Vec<u64>, u64, u64, Option<String>, bool) {
    let mut conn = Conn::connect(&addr).await.unwrap();
    let mut latencies = Vec::with_capacity(1 << 15);
    let (mut errors, mut first_error, mut exhausted) = (0, None, false);
    let mut k = if once { 0 } else { offset };
    let mut sent = 0u64;
    loop {
        let started = Instant::now();
        if started >= stop {
            break;
        }
        let req = if once {
            let Some(req) = reqs.get(k) else {
                exhausted = true;
                break;
            };
            req
        } else {
            &reqs[k % reqs.len()]
        };
        k += 1;
        sent += 1;
        match conn.send(req).await {
            Ok(status) if (200..300).contains(&status) => {}
            Ok(status) => {
                errors += 1;
                first_error.get_or_insert_with(|| {
                    format!("{status} {}", String::from_utf8_lossy(conn.body()))
                });
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| e.to_string());
                conn = Conn::connect(&addr).await.unwrap();
            }
        }
        if started >= measure_from {
            latencies.push(started.elapsed().as_nanos() as u64);
        }
    }
    (latencies, sent, errors, first_error, exhausted)
}

/// Runs `plan` against the server `pid` at `addr` for a warm-up and
/// `measure`.
fn run(addr: &str, pid: u32, plan: Vec<Requests>, once: bool, measure: Duration) -> Outcome {
    let (client_cpu, server_cpu) = (cpu_ticks("self").0, cpu_ticks(&pid.to_string()).0);
    let machine = machine_ticks();
    let measure_from = Instant::now() + WARMUP;
    let stop = measure_from + measure;
    let mut groups: Vec<Vec<(usize, Requests)>> = vec![Vec::new(); CLIENT_THREADS];
    for (c, reqs) in plan.into_iter().enumerate() {
        groups[c % CLIENT_THREADS].push((c, reqs));
    }
    let threads: Vec<_> = groups
        .into_iter()
        .map(|group| {
            let addr = addr.to_owned();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let mut tasks = tokio::task::JoinSet::new();
                    for (c, reqs) in group {
                        tasks.spawn(connection(
                            addr.clone(),
                            reqs,
                            once,
                            c * 7,
                            measure_from,
                            stop,
                        ));
                    }
                    let mut out = Vec::new();
                    while let Some(r) = tasks.join_next().await {
                        out.push(r.unwrap());
                    }
                    out
                })
            })
        })
        .collect();
    let (mut all, mut sent, mut errors, mut first_error, mut exhausted) =
        (Vec::new(), 0, 0, None, false);
    for t in threads {
        for (lat, n, e, first, ex) in t.join().unwrap() {
            all.extend(lat);
            sent += n;
            errors += e;
            first_error = first_error.or(first);
            exhausted |= ex;
        }
    }
    let per_request = |ticks: u64| ticks as f64 / *TICKS * 1e6 / sent.max(1) as f64;
    let client_cpu_us = per_request(cpu_ticks("self").0 - client_cpu);
    let server_cpu_us = per_request(cpu_ticks(&pid.to_string()).0 - server_cpu);
    let (machine_cpu_us, idle_pct) = machine_use(machine, sent.max(1) as f64);
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |ns| *ns as f64 / 1e3)
    };
    Outcome {
        rps: all.len() as f64 / measure.as_secs_f64(),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        client_cpu_us,
        server_cpu_us,
        machine_cpu_us,
        idle_pct,
        errors,
        first_error,
        exhausted,
    }
}

/// The machine's busy CPU time per request since `before` (from
/// [`machine_ticks`]) over `requests`, and the share left idle.
fn machine_use(before: (u64, u64), requests: f64) -> (f64, f64) {
    let (busy, idle) = machine_ticks();
    let (busy, idle) = (busy.saturating_sub(before.0), idle.saturating_sub(before.1));
    (
        busy as f64 / *TICKS * 1e6 / requests,
        idle as f64 * 100.0 / (busy + idle).max(1) as f64,
    )
}

/// Ed25519 signatures per second over `message`, on this thread.
fn raw_signing(message: &[u8]) -> f64 {
    let key = SigningKey::from_bytes(&[7; 32]);
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < SIGNING_TIME {
        for _ in 0..64 {
            std::hint::black_box(key.sign(std::hint::black_box(message)));
        }
        n += 64;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// What `wrk` measured on health.
struct Wrk {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    client_cpu_us: f64,
    server_cpu_us: f64,
    machine_cpu_us: f64,
    idle_pct: f64,
}

/// `wrk` on the health endpoint of the server `pid` at `addr`, if `wrk`
/// is installed.
fn wrk(addr: &str, pid: u32) -> Option<Wrk> {
    let (client_cpu, server_cpu) = (cpu_ticks("self").1, cpu_ticks(&pid.to_string()).0);
    let machine = machine_ticks();
    let out = Command::new("wrk")
        .args(WRK)
        .arg(format!("http://{addr}/v1/sys/health"))
        .output()
        .ok()?;
    let (client_cpu, server_cpu) = (
        cpu_ticks("self").1 - client_cpu,
        cpu_ticks(&pid.to_string()).0 - server_cpu,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let micros = |v: &str| {
        let split = v.find(|c: char| c.is_ascii_alphabetic())?;
        let (n, unit) = v.split_at(split);
        let n: f64 = n.parse().ok()?;
        Some(match unit {
            "us" => n,
            "ms" => n * 1e3,
            "s" => n * 1e6,
            _ => return None,
        })
    };
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(|v| v.trim().to_owned())
    };
    let sent: f64 = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))?
        .0
        .parse()
        .ok()?;
    let per_request = |ticks: u64| ticks as f64 / *TICKS * 1e6 / sent.max(1.0);
    let (machine_cpu_us, idle_pct) = machine_use(machine, sent.max(1.0));
    Some(Wrk {
        rps: field("Requests/sec:")?.parse().ok()?,
        p50_us: micros(&field("50%")?)?,
        p99_us: micros(&field("99%")?)?,
        client_cpu_us: per_request(client_cpu),
        server_cpu_us: per_request(server_cpu),
        machine_cpu_us,
        idle_pct,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn main() {
    // `cargo test --benches` passes no `--bench`; only run under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rounds = env_number::<usize>("VERN_BENCH_ROUNDS", 3).max(1);
    let measure = Duration::from_secs(env_number::<u64>("VERN_BENCH_SECONDS", 5).max(1));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let off = dir.path().join("audit-off.toml");
    std::fs::write(&off, "[audit]\nenabled = false\n").unwrap();
    let off = off.display().to_string();
    let dev = |name: &str, extra: &[&str]| {
        let data = dir.path().join(name).display().to_string();
        let mut args = vec!["--dev", "--data-dir", &data, "--dev-root-token", ROOT];
        args.extend_from_slice(extra);
        Server::start(&args)
    };
    let mut backends = vec![rt.block_on(prepare(
        "sqlite",
        (dev("on", &[]), ROOT.to_owned()),
        (dev("off", &["--config", &off]), ROOT.to_owned()),
    ))];
    if let Some(url) = rt.block_on(vern_store::testing::fresh_postgres_url()) {
        let url_off = rt
            .block_on(vern_store::testing::fresh_postgres_url())
            .unwrap();
        let on = Server::start(&["--insecure-listen", "--storage", &url]);
        let root = rt.block_on(init_and_unseal(&on.addr));
        let off_server =
            Server::start(&["--insecure-listen", "--storage", &url_off, "--config", &off]);
        let root_off = rt.block_on(init_and_unseal(&off_server.addr));
        backends.push(rt.block_on(prepare("postgres", (on, root), (off_server, root_off))));
    }
    // The message the raw signing rate is measured on: a real access
    // token's signing input (header and claims).
    let token = &backends[0].reader.token;
    let message = token.as_bytes()[..token.rfind('.').unwrap()].to_vec();

    // Scenarios to run (health always, as the ceiling).
    let only = std::env::var("VERN_BENCH_SCENARIOS").unwrap_or_default();
    let selected = |s: Scenario| {
        s == Scenario::Health || only.is_empty() || only.split(',').any(|k| k.trim() == s.key())
    };
    let mut m = Measured {
        rounds,
        measure,
        message,
        results: backends
            .iter()
            .map(|_| SCENARIOS.iter().map(|_| Vec::new()).collect())
            .collect(),
        wrk: backends.iter().map(|_| Vec::new()).collect(),
        signing: Vec::new(),
        proofs: Vec::new(),
    };
    // Per backend, the fastest bearer or DPoP read rate seen so far.
    let mut fastest_read = vec![0.0f64; backends.len()];
    for round in 0..rounds {
        for (bi, b) in backends.iter().enumerate() {
            // Without a read rate yet (reads not selected), a quarter of
            // this round's health rate.
            let mut fallback = 0.0;
            for (si, &scenario) in SCENARIOS.iter().enumerate() {
                if !selected(scenario) {
                    continue;
                }
                let (addr, pid) = match scenario {
                    Scenario::ServiceReadAuditOff => (&b.off.addr, b.off.pid()),
                    _ => (&b.on.addr, b.on.pid()),
                };
                // DPoP proofs for twice the fastest bearer or DPoP read
                // rate seen on this backend (a DPoP read does strictly more
                // work than a bearer read), at least 5,000.
                let estimate = if fastest_read[bi] > 0.0 {
                    fastest_read[bi]
                } else {
                    fallback
                };
                let budget =
                    ((estimate * (WARMUP + measure).as_secs_f64() * 2.0) as usize).max(5_000);
                let once = scenario == Scenario::DpopRead;
                let plan = plan(b, scenario, round, budget);
                if once {
                    m.proofs.push(budget);
                }
                let o = run(addr, pid, plan, once, measure);
                eprintln!(
                    "round {}/{rounds} {:<9} {:<32} {:>7.0} req/s  p50 {:>6.0} µs  p99 {:>6.0} µs  \
                     CPU/req client {:>4.1} µs vern {:>5.1} µs machine {:>5.1} µs  idle {:>4.1}%  errors {}{}",
                    round + 1,
                    b.name,
                    scenario.label(),
                    o.rps,
                    o.p50_us,
                    o.p99_us,
                    o.client_cpu_us,
                    o.server_cpu_us,
                    o.machine_cpu_us,
                    o.idle_pct,
                    o.errors,
                    o.first_error
                        .as_deref()
                        .map(|e| format!(" (first: {e})"))
                        .unwrap_or_default()
                );
                match scenario {
                    Scenario::Health => fallback = o.rps / 4.0,
                    Scenario::ServiceRead | Scenario::DpopRead => {
                        fastest_read[bi] = fastest_read[bi].max(o.rps);
                    }
                    _ => {}
                }
                m.results[bi][si].push(o);
            }
            if let Some(w) = wrk(&b.on.addr, b.on.pid()) {
                eprintln!(
                    "round {}/{rounds} {:<9} {:<32} {:>7.0} req/s  p50 {:>6.0} µs  p99 {:>6.0} µs  \
                     CPU/req client {:>4.1} µs vern {:>5.1} µs machine {:>5.1} µs  idle {:>4.1}%",
                    round + 1,
                    b.name,
                    "health by wrk",
                    w.rps,
                    w.p50_us,
                    w.p99_us,
                    w.client_cpu_us,
                    w.server_cpu_us,
                    w.machine_cpu_us,
                    w.idle_pct
                );
                m.wrk[bi].push(w);
            }
        }
        let s = raw_signing(&m.message);
        eprintln!("round {}/{rounds} raw Ed25519 signing {s:.0}/s", round + 1);
        m.signing.push(s);
    }
    report(&backends, &m);
}

/// Everything a run measured.
struct Measured {
    rounds: usize,
    measure: Duration,
    /// The message the raw signing rate was measured on.
    message: Vec<u8>,
    /// `[backend][scenario]`: one outcome per round.
    results: Vec<Vec<Vec<Outcome>>>,
    /// `[backend]`: one `wrk` health run per round.
    wrk: Vec<Vec<Wrk>>,
    /// Raw signatures per second, one per round.
    signing: Vec<f64>,
    /// DPoP proofs signed for each DPoP run.
    proofs: Vec<usize>,
}

fn index(scenario: Scenario) -> usize {
    SCENARIOS.iter().position(|s| *s == scenario).unwrap()
}

/// The median over the rounds of `scenario`'s rate divided by `per_round`
/// of the same round (the health rate, the raw signing rate).
fn ratio(outcomes: &[Vec<Outcome>], scenario: Scenario, per_round: &[f64]) -> Option<f64> {
    let o = &outcomes[index(scenario)];
    (!o.is_empty()).then(|| median(o.iter().zip(per_round).map(|(o, d)| o.rps / d).collect()))
}

fn to_health(outcomes: &[Vec<Outcome>], scenario: Scenario) -> Option<f64> {
    let health: Vec<f64> = outcomes[0].iter().map(|o| o.rps).collect();
    ratio(outcomes, scenario, &health)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "meets"
    } else {
        "misses"
    }
}

fn report(backends: &[Backend], m: &Measured) {
    println!();
    println!(
        "HTTP load: {CONCURRENCY} connections over {CLIENT_THREADS} client threads (pre-built requests, keep-alive), \
         {}s measured after {}s warm-up per run; {} rounds, each running every scenario on every backend in turn.",
        m.measure.as_secs(),
        WARMUP.as_secs(),
        m.rounds,
    );
    println!(
        "Figures are medians of the rounds; x health is the median of each round's ratio to that round's health; \
         client µs and vern µs are the CPU time per request of the load client and of the vern process; \
         machine µs is the whole machine's busy CPU time per request (client, vern, PostgreSQL, kernel) \
         and idle % the share of the machine's CPU time left idle during the run."
    );
    println!(
        "{:<9} {:<32} {:>8} {:>8} {:>7} {:>7} {:>9} {:>9} {:>10} {:>6} {:>6}  req/s per round",
        "backend",
        "scenario",
        "req/s",
        "x health",
        "p50 µs",
        "p99 µs",
        "client µs",
        "vern µs",
        "machine µs",
        "idle %",
        "errors",
    );
    let row = |backend: &str,
               label: &str,
               rps: Vec<f64>,
               x: f64,
               p50: Vec<f64>,
               p99: Vec<f64>,
               cpu: [Vec<f64>; 4],
               errors: String| {
        let per_round: Vec<String> = rps.iter().map(|r| format!("{r:.0}")).collect();
        let [client, vern, machine, idle] = cpu;
        println!(
            "{backend:<9} {label:<32} {:>8.0} {x:>8.2} {:>7.0} {:>7.0} {:>9.1} {:>9.1} {:>10.1} {:>6.1} {errors:>6}  {}",
            median(rps),
            median(p50),
            median(p99),
            median(client),
            median(vern),
            median(machine),
            median(idle),
            per_round.join(" ")
        );
    };
    for (bi, b) in backends.iter().enumerate() {
        for (si, scenario) in SCENARIOS.iter().enumerate() {
            let o = &m.results[bi][si];
            if o.is_empty() {
                continue;
            }
            row(
                b.name,
                scenario.label(),
                o.iter().map(|o| o.rps).collect(),
                to_health(&m.results[bi], *scenario).unwrap_or(0.0),
                o.iter().map(|o| o.p50_us).collect(),
                o.iter().map(|o| o.p99_us).collect(),
                [
                    o.iter().map(|o| o.client_cpu_us).collect(),
                    o.iter().map(|o| o.server_cpu_us).collect(),
                    o.iter().map(|o| o.machine_cpu_us).collect(),
                    o.iter().map(|o| o.idle_pct).collect(),
                ],
                o.iter().map(|o| o.errors).sum::<u64>().to_string(),
            );
            if let Some(e) = o.iter().find_map(|o| o.first_error.as_deref()) {
                println!("{:<9}   first error: {e}", "");
            }
            if o.iter().any(|o| o.exhausted) {
                println!(
                    "{:<9}   DPoP proofs ran out before the end of a run: its rate is a lower bound",
                    ""
                );
            }
        }
        let w = &m.wrk[bi];
        if !w.is_empty() {
            let health = &m.results[bi][0];
            row(
                b.name,
                &format!("health by wrk {}", WRK[..3].join(" ")),
                w.iter().map(|w| w.rps).collect(),
                median(w.iter().zip(health).map(|(w, h)| w.rps / h.rps).collect()),
                w.iter().map(|w| w.p50_us).collect(),
                w.iter().map(|w| w.p99_us).collect(),
                [
                    w.iter().map(|w| w.client_cpu_us).collect(),
                    w.iter().map(|w| w.server_cpu_us).collect(),
                    w.iter().map(|w| w.machine_cpu_us).collect(),
                    w.iter().map(|w| w.idle_pct).collect(),
                ],
                "-".to_owned(),
            );
        }
    }
    let per_round: Vec<String> = m.signing.iter().map(|s| format!("{s:.0}")).collect();
    println!(
        "raw Ed25519 signing, in-process, 1 thread, the {}-byte signing input of an access token: {:.0} signatures/s \
         (per round: {})",
        m.message.len(),
        median(m.signing.clone()),
        per_round.join(" ")
    );
    let issuance = |bi: usize| ratio(&m.results[bi], Scenario::TokenIssue, &m.signing);
    for (bi, b) in backends.iter().enumerate() {
        if let Some(x) = issuance(bi) {
            println!("{:<9} token issuance / raw Ed25519 signing: {x:.2}", b.name);
        }
    }
    if !m.proofs.is_empty() {
        println!(
            "DPoP reads: each request carries its own proof (single-use jti); each run's proofs ({} to {} per run, \
             twice the fastest read rate seen) were signed before its warm-up, outside the measured time.",
            m.proofs.iter().min().unwrap_or(&0),
            m.proofs.iter().max().unwrap_or(&0),
        );
    }

    println!();
    println!("Against the issue's requirements (x health as above):");
    let cpus = machine_cpus();
    for (bi, b) in backends.iter().enumerate() {
        let r = &m.results[bi];
        let p99 = |s: Scenario| median(r[index(s)].iter().map(|o| o.p99_us).collect());
        let health = median(r[index(Scenario::Health)].iter().map(|o| o.rps).collect());
        let budget = |s: Scenario, rate: f64| cpu_budget(r, s, rate, cpus);
        if b.name == "sqlite" {
            if let Some(x) = to_health(r, Scenario::ServiceRead) {
                let p = p99(Scenario::ServiceRead);
                println!(
                    "  sqlite service read >= 0.50 x health and p99 < 2 ms: {x:.2}, p99 {:.2} ms: {}",
                    p / 1e3,
                    verdict(x >= 0.5 && p < 2000.0)
                );
                budget(Scenario::ServiceRead, 0.5 * health);
            }
            if let Some(x) = to_health(r, Scenario::RootRead) {
                println!(
                    "  sqlite root read >= 0.60 x health: {x:.2}: {}",
                    verdict(x >= 0.6)
                );
                budget(Scenario::RootRead, 0.6 * health);
            }
        } else {
            let reads = [
                ("root", Scenario::RootRead),
                ("service", Scenario::ServiceRead),
                ("DPoP", Scenario::DpopRead),
            ];
            let xs: Vec<(&str, f64)> = reads
                .iter()
                .filter_map(|(n, s)| to_health(r, *s).map(|x| (*n, x)))
                .collect();
            if !xs.is_empty() {
                let text: Vec<String> = xs.iter().map(|(n, x)| format!("{n} {x:.2}")).collect();
                println!(
                    "  {} reads >= 0.30 x health: {}: {}",
                    b.name,
                    text.join(", "),
                    verdict(xs.iter().all(|(_, x)| *x >= 0.3))
                );
                for (_, s) in reads {
                    budget(s, 0.3 * health);
                }
            }
        }
        if let Some(x) = issuance(bi) {
            println!(
                "  {} token issuance >= 0.50 x raw Ed25519 signing: {x:.2}: {}",
                b.name,
                verdict(x >= 0.5)
            );
            budget(Scenario::TokenIssue, 0.5 * median(m.signing.clone()));
        }
    }
}

/// What a requirement's `rate` leaves of the machine's `cpus` per request
/// if none of them idled, against the busy CPU time per request the
/// scenario used and the idle share of its runs, and against the service
/// read with audit off, which does the same work without the audit append.
fn cpu_budget(r: &[Vec<Outcome>], scenario: Scenario, rate: f64, cpus: usize) {
    let o = &r[index(scenario)];
    if o.is_empty() || rate <= 0.0 {
        return;
    }
    let used = median(o.iter().map(|o| o.machine_cpu_us).collect());
    let idle = median(o.iter().map(|o| o.idle_pct).collect());
    let off = &r[index(Scenario::ServiceReadAuditOff)];
    let off = if off.is_empty() {
        String::new()
    } else {
        format!(
            "; the service read with audit off used {:.1} µs",
            median(off.iter().map(|o| o.machine_cpu_us).collect())
        )
    };
    println!(
        "    {}: {rate:.0} req/s leaves {:.1} µs of the machine's CPU per request on {cpus} CPUs with none idle; \
         this scenario used {used:.1} µs, with {idle:.0}% idle{off}",
        scenario.label(),
        cpus as f64 * 1e6 / rate,
    );
}
