//! Memory at 10,000 tenants: one `vern serve --dev` (SQLite) process
//! given one service client per tenant, 100,000 secrets spread over the
//! tenants and one Cedar policy per tenant in its `--policy-dir`, then
//! exercised: a token for every client, and service-token reads by
//! tenants spread over the whole range. Reports the server's resident
//! memory (`VmRSS`, and the peak `VmHWM`, from `/proc/PID/status`) after
//! each step against the issue's bound of 150 MB, and how long each step
//! took.
//!
//! The policies are written to the directory and loaded
//! (`POST /v1/sys/policies/reload`) after the seeding: with 10,000
//! policies in force every authorized request costs tens of milliseconds
//! of CPU, which would stretch the seeding of 110,000 audited writes to
//! most of an hour. The reads are run before and after the load, so the
//! cost of the policies shows.
//!
//! `VERN_BENCH_TENANTS` (default 10,000; ten secrets each) and
//! `VERN_BENCH_READS` (default 2,000) scale it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod common;

use std::time::{Duration, Instant};

use common::{call_all, env_number, json_request, memory_kb, token_request, Reply, Server};
use serde_json::json;

const ROOT: &str = "bench-root";
const SECRETS_PER_TENANT: usize = 10;
/// Connections the seeding and exercise requests are spread over.
const CONCURRENCY: usize = 32;
/// The issue's bound on the server's resident memory, in bytes.
const BOUND_BYTES: f64 = 150e6;

fn mb(kb: u64) -> f64 {
    kb as f64 * 1024.0 / 1e6
}

fn line(what: &str, pid: u32) {
    let (rss, hwm) = memory_kb(pid);
    println!(
        "  {what:<46} VmRSS {:>7.1} MB   VmHWM {:>7.1} MB",
        mb(rss),
        mb(hwm)
    );
}

fn rate(n: usize, what: &str, d: Duration) -> String {
    format!(
        "{n} {what} in {:.1} s ({:.0}/s)",
        d.as_secs_f64(),
        n as f64 / d.as_secs_f64()
    )
}

fn all_ok(replies: &[Reply], what: &str) {
    if let Some(bad) = replies.iter().find(|r| r.status != 200) {
        panic!(
            "{what}: {} {}",
            bad.status,
            String::from_utf8_lossy(&bad.body)
        );
    }
}

/// The policy of tenant `n`: its secrets are readable by principals that
/// have a tenant (tenant isolation still confines them to their own).
fn policy(n: usize) -> String {
    format!(
        "@id(\"t{n}-secret-read\")\n\
         permit (principal, action == Vern::Action::\"secret.read\", resource in Vern::Tenant::\"t{n}\")\n\
         when {{ principal has tenant }};\n"
    )
}

/// `count` service-token reads by tenants spread evenly over the range,
/// each of one of its own secrets.
fn reads(addr: &str, tokens: &[String], count: usize) -> Vec<Vec<u8>> {
    let tenants = tokens.len();
    let step = (tenants / count.max(1)).max(1);
    (0..count.min(tenants))
        .map(|r| {
            let n = r * step;
            common::request(
                "GET",
                &format!("/v1/secret/data/t{n}/app/prod/s{}", r % SECRETS_PER_TENANT),
                addr,
                &[("Authorization", &format!("Bearer {}", tokens[n]))],
                None,
            )
        })
        .collect()
}

fn main() {
    // `cargo test --benches` passes no `--bench`; only run under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let tenants = env_number("VERN_BENCH_TENANTS", 10_000).max(1);
    let read_count = env_number("VERN_BENCH_READS", 2_000).min(tenants);
    let secrets = tenants * SECRETS_PER_TENANT;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    let data = dir.path().join("data").display().to_string();
    let policy_dir = policies.display().to_string();
    let server = Server::start(&[
        "--dev",
        "--data-dir",
        &data,
        "--dev-root-token",
        ROOT,
        "--policy-dir",
        &policy_dir,
    ]);
    let (pid, addr) = (server.pid(), server.addr.clone());
    // The server listens before its state is built; it answers once it is.
    let health = rt.block_on(common::call(
        &addr,
        &common::request("GET", "/v1/sys/health", &addr, &[], None),
    ));
    assert_eq!(health.status, 200);

    println!();
    println!(
        "Memory at {tenants} tenants: one vern serve --dev (SQLite) process; requests over {CONCURRENCY} connections"
    );
    line("serving, empty store and policy directory", pid);

    eprintln!("creating {tenants} service clients");
    let t = Instant::now();
    let creates = (0..tenants)
        .map(|n| {
            json_request(
                "POST",
                "/v1/auth/clients",
                &addr,
                &[("X-Vault-Token", ROOT)],
                &json!({"tenant": format!("t{n}"), "project": "app", "environment": "prod",
                        "name": "api", "scopes": ["secrets:read", "secrets:write"],
                        "token_ttl": 3600}),
            )
        })
        .collect();
    let created = rt.block_on(call_all(&addr, creates, CONCURRENCY));
    all_ok(&created, "create client");
    let clients_took = t.elapsed();
    let clients: Vec<(String, String)> = created
        .iter()
        .map(|r| {
            let v = r.json();
            (
                v["data"]["client_id"].as_str().unwrap().to_owned(),
                v["data"]["client_secret"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    drop(created);

    eprintln!("writing {secrets} secrets");
    let t = Instant::now();
    let writes = (0..secrets)
        .map(|i| {
            let (n, j) = (i % tenants, i / tenants);
            json_request(
                "POST",
                &format!("/v1/secret/data/t{n}/app/prod/s{j}"),
                &addr,
                &[("X-Vault-Token", ROOT)],
                &json!({"data": {"value": format!("{i:08}-{}", "v".repeat(56)), "n": i}}),
            )
        })
        .collect();
    let written = rt.block_on(call_all(&addr, writes, CONCURRENCY));
    all_ok(&written, "write secret");
    drop(written);
    let secrets_took = t.elapsed();
    println!(
        "  seeded (audited, each write committed): {}, {}",
        rate(tenants, "service clients", clients_took),
        rate(secrets, "secrets", secrets_took)
    );
    line("after seeding", pid);

    let issue = |what: &str| {
        eprintln!("issuing {tenants} tokens {what}");
        let t = Instant::now();
        let requests = clients
            .iter()
            .map(|(id, secret)| token_request(&addr, id, secret, &[]))
            .collect();
        let issued = rt.block_on(call_all(&addr, requests, CONCURRENCY));
        all_ok(&issued, "token");
        let tokens: Vec<String> = issued.iter().map(common::access_token).collect();
        (tokens, t.elapsed())
    };
    let read = |tokens: &[String], what: &str| {
        eprintln!("{read_count} reads {what}");
        let t = Instant::now();
        let replies = rt.block_on(call_all(
            &addr,
            reads(&addr, tokens, read_count),
            CONCURRENCY,
        ));
        all_ok(&replies, "read secret");
        t.elapsed()
    };
    // Issues a token per client, reads across the tenants, reports memory.
    let exercise = |what: &str| {
        let (tokens, took) = issue(what);
        let read_took = read(&tokens, what);
        println!(
            "  {what}: {} (one per client), {} (tenants spread over the range)",
            rate(tenants, "token issuances", took),
            rate(read_count, "service-token reads", read_took)
        );
        line("after that exercise", pid);
    };
    exercise("without tenant policies");

    eprintln!("loading {tenants} policies");
    for n in 0..tenants {
        std::fs::write(policies.join(format!("t{n}.cedar")), policy(n)).unwrap();
    }
    let t = Instant::now();
    let reload = rt.block_on(common::call(
        &addr,
        &common::request(
            "POST",
            "/v1/sys/policies/reload",
            &addr,
            &[("X-Vault-Token", ROOT)],
            None,
        ),
    ));
    assert_eq!(
        reload.status,
        200,
        "{}",
        String::from_utf8_lossy(&reload.body)
    );
    println!(
        "  {tenants} tenant policies (one .cedar file each) loaded from --policy-dir in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    line("after loading the policies", pid);

    exercise("with tenant policies");
    let (rss, hwm) = memory_kb(pid);
    let peak = mb(hwm.max(rss));
    println!(
        "  bound {:.0} MB: peak (VmHWM) {peak:.1} MB: {}",
        BOUND_BYTES / 1e6,
        if peak * 1e6 <= BOUND_BYTES {
            "within"
        } else {
            "over"
        }
    );
}
