//! HTTP load generator against a real `vern serve`: authenticated KV reads
//! and writes, reads with audit on against a server with audit off, next
//! to `GET /v1/sys/health` measured in the same run (the
//! machine's HTTP ceiling), on SQLite and, when `VERN_TEST_POSTGRES_URL` is
//! set (`./scripts/bench` sets it), PostgreSQL. Client and server share the
//! machine, so ratios to the health ceiling are the figures to compare.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Concurrent connections: a light and a heavy load.
const CONCURRENCY: [usize; 2] = [4, 16];
const WARMUP: Duration = Duration::from_secs(1);
const MEASURE: Duration = Duration::from_secs(5);
const SECRETS: u64 = 100;
const TOKEN: &str = "bench-root";
/// Alternating audit on/off runs per concurrency.
const AUDIT_ROUNDS: usize = 3;
/// Concurrent connections of the audit on/off comparison.
const AUDIT_CONCURRENCY: [usize; 3] = [4, 16, 64];

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(args: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vern"))
        .arg("serve")
        .args(args)
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        // The load generator is one principal on purpose; lift its limit.
        .args(["--limit-api-principal", "0"])
        .env("VERN_LOG", "warn,vern::serve=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("server exited").unwrap();
        if line.contains("Vern is listening.") {
            let v: Value = serde_json::from_str(&line).unwrap();
            break v["address"].as_str().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Server {
        child,
        base: format!("http://{addr}"),
    }
}

#[derive(Clone, Copy)]
enum Scenario {
    Health,
    Read,
    Write,
    AuthzCheck,
}

struct Result {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    errors: u64,
}

async fn run(base: &str, token: &str, scenario: Scenario, concurrency: usize) -> Result {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let errors = Arc::new(AtomicU64::new(0));
    let measure_from = Instant::now() + WARMUP;
    let stop = measure_from + MEASURE;
    let mut tasks = Vec::new();
    for worker in 0..concurrency as u64 {
        let (client, base, token, errors) = (
            client.clone(),
            base.to_owned(),
            token.to_owned(),
            Arc::clone(&errors),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = worker;
            loop {
                let started = Instant::now();
                if started >= stop {
                    break;
                }
                i = (i + 7) % SECRETS;
                let req = match scenario {
                    Scenario::Health => client.get(format!("{base}/v1/sys/health")),
                    Scenario::Read => client
                        .get(format!("{base}/v1/secret/data/bench/load/prod/s{i}"))
                        .header("x-vault-token", &token),
                    Scenario::Write => client
                        .post(format!("{base}/v1/secret/data/bench/load/prod/s{i}"))
                        .header("x-vault-token", &token)
                        .json(&json!({"data": {"value": format!("v-{worker}-{i}"), "n": i}})),
                    Scenario::AuthzCheck => client
                        .post(format!("{base}/v1/authz/check"))
                        .header("x-vault-token", &token)
                        .json(&json!({
                            "principal": format!("service:svc.t{i}.web.prod.app@t{i}/web/prod"),
                            "action": "secret.read",
                            "resource": format!("secret:t{}/web/prod/db", (i + worker) % SECRETS),
                        })),
                };
                let ok = req
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false);
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                if started >= measure_from {
                    latencies.push(started.elapsed());
                }
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    Result {
        rps: all.len() as f64 / MEASURE.as_secs_f64(),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        errors: errors.load(Ordering::Relaxed),
    }
}

async fn seed(base: &str, token: &str) {
    let client = reqwest::Client::new();
    for i in 0..SECRETS {
        let r = client
            .post(format!("{base}/v1/secret/data/bench/load/prod/s{i}"))
            .header("x-vault-token", token)
            .json(&json!({"data": {"value": "seed", "n": i}}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
}

async fn init_postgres(base: &str) -> String {
    let client = reqwest::Client::new();
    let init: Value = client
        .put(format!("{base}/v1/sys/init"))
        .json(&json!({"secret_shares": 1, "secret_threshold": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    client
        .put(format!("{base}/v1/sys/unseal"))
        .json(&json!({"key": init["keys"][0]}))
        .send()
        .await
        .unwrap();
    init["root_token"].as_str().unwrap().to_owned()
}

fn report(backend: &str, concurrency: usize, name: &str, r: &Result, ceiling: f64) {
    println!(
        "{backend:<9} c={concurrency:<3} {name:<7} {:>9.0} req/s  {:>6.1}% of health  p50 {:>7.0} µs  p99 {:>7.0} µs  errors {}",
        r.rps,
        100.0 * r.rps / ceiling,
        r.p50_us,
        r.p99_us,
        r.errors
    );
}

#[tokio::main]
async fn main() {
    // `cargo test --benches` passes no `--bench`; only run under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let off = dir.path().join("audit-off.toml");
    std::fs::write(&off, "[audit]\nenabled = false\n").unwrap();
    let off = off.display().to_string();
    let data = dir.path().join("on").display().to_string();
    let data_off = dir.path().join("off").display().to_string();
    let mut setups: Vec<(&str, Server, String, Server, String)> = Vec::new();
    let dev = |data: &str, extra: &[&str]| {
        let mut args = vec!["--dev", "--data-dir", data, "--dev-root-token", TOKEN];
        args.extend_from_slice(extra);
        start(&args)
    };
    setups.push((
        "sqlite",
        dev(&data, &[]),
        TOKEN.to_owned(),
        dev(&data_off, &["--config", &off]),
        TOKEN.to_owned(),
    ));
    if let Some(url) = vern_store::testing::fresh_postgres_url().await {
        let url_off = vern_store::testing::fresh_postgres_url().await.unwrap();
        let pg = start(&["--insecure-listen", "--storage", &url]);
        let token = init_postgres(&pg.base).await;
        let pg_off = start(&["--insecure-listen", "--storage", &url_off, "--config", &off]);
        let token_off = init_postgres(&pg_off.base).await;
        setups.push(("postgres", pg, token, pg_off, token_off));
    }
    println!(
        "{}s per scenario after {}s warm-up; c = concurrent connections",
        MEASURE.as_secs(),
        WARMUP.as_secs()
    );
    for (backend, server, token, off, token_off) in &setups {
        seed(&server.base, token).await;
        seed(&off.base, token_off).await;
        for c in CONCURRENCY {
            let health = run(&server.base, token, Scenario::Health, c).await;
            let read = run(&server.base, token, Scenario::Read, c).await;
            let write = run(&server.base, token, Scenario::Write, c).await;
            let authz = run(&server.base, token, Scenario::AuthzCheck, c).await;
            report(backend, c, "health", &health, health.rps);
            report(backend, c, "read", &read, health.rps);
            report(backend, c, "write", &write, health.rps);
            report(backend, c, "authz", &authz, health.rps);
        }
        // Audit's cost: authenticated reads with audit on and off,
        // alternating so drift in the machine's load hits both alike. Each
        // audited request waits for one group commit (an fsync), so the
        // cost falls as concurrency lets more requests share one.
        for c in AUDIT_CONCURRENCY {
            let (mut on, mut no) = (Vec::new(), Vec::new());
            for _ in 0..AUDIT_ROUNDS {
                on.push(run(&server.base, token, Scenario::Read, c).await.rps);
                no.push(run(&off.base, token_off, Scenario::Read, c).await.rps);
            }
            let (on, no) = (median(&mut on), median(&mut no));
            println!(
                "{backend:<9} c={c:<3} read audit on {on:>9.0} req/s, off {no:>9.0} req/s: audit costs {:>5.1}% (median of {AUDIT_ROUNDS} alternating runs)",
                100.0 * (1.0 - on / no)
            );
        }
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
