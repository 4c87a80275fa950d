//! Added connect latency of the NATS auth callout: against one real
//! nats-server 2.15 running the configuration `vern nats config` renders,
//! with Vern's callout serving it, connections (connect, then one round
//! trip, then close) by a Vern access token through the callout, and by a
//! static user of the same server (`vern-system`, an auth user the callout
//! never sees), interleaved one by one so drift hits both alike. Prints
//! p50 and p99 of each and the difference.
//!
//! `VERN_BENCH_NATS_CONNECTS` (default 300) sets the connections of each
//! kind; `NATS_SERVER_BIN` names nats-server (`./scripts/bench` exports
//! the one in the test venv).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss
)]

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{access_token, call, create_client, env_number, token_request, Server};
use serde_json::json;

const ROOT: &str = "bench-root";

fn nats_server_bin() -> PathBuf {
    std::env::var("NATS_SERVER_BIN").map_or_else(
        |_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-venv/bin/nats-server")
        },
        PathBuf::from,
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn connect_once(url: &str, options: async_nats::ConnectOptions) -> Duration {
    let start = Instant::now();
    let client = options.connect(url).await.unwrap();
    client.flush().await.unwrap();
    let took = start.elapsed();
    drop(client);
    took
}

#[tokio::main]
async fn main() {
    let connects: usize = env_number("VERN_BENCH_NATS_CONNECTS", 300);
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let data = dir.path().join("vern");
    let vern = Server::start(&[
        "--dev",
        "--dev-root-token",
        ROOT,
        "--data-dir",
        data.to_str().unwrap(),
        "--nats-url",
        &url,
    ]);
    let (id, secret) = create_client(
        &vern.addr,
        ROOT,
        &json!({"tenant": "acme", "project": "web", "environment": "prod", "name": "bench",
                "nats": {"publish": ["orders.>"], "subscribe": ["orders.>"]}}),
    )
    .await;
    let token =
        access_token(&call(&vern.addr, &token_request(&vern.addr, &id, &secret, &[])).await);
    let conf = dir.path().join("nats.conf");
    let out = Command::new(env!("CARGO_BIN_EXE_vern"))
        .args([
            "nats",
            "config",
            "--address",
            &vern.base(),
            "--token",
            ROOT,
            "--out",
        ])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut nats = Command::new(nats_server_bin())
        .arg("-c")
        .arg(&conf)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server: set NATS_SERVER_BIN or run scripts/test once to make the venv");
    let conf_text = std::fs::read_to_string(&conf).unwrap();
    let password = conf_text
        .split("user: \"vern-system\", password: \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let with_token = || async_nats::ConnectOptions::with_token(token.clone());
    let with_password = || {
        async_nats::ConnectOptions::with_user_and_password(
            "vern-system".to_owned(),
            password.clone(),
        )
    };
    // The callout connects once nats-server is up; wait for it, then warm up.
    let deadline = Instant::now() + Duration::from_secs(30);
    while with_token().connect(url.as_str()).await.is_err() {
        assert!(Instant::now() < deadline, "the callout never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..20 {
        connect_once(&url, with_token()).await;
        connect_once(&url, with_password()).await;
    }
    let mut callout = Vec::with_capacity(connects);
    let mut fixed = Vec::with_capacity(connects);
    for _ in 0..connects {
        callout.push(connect_once(&url, with_token()).await);
        fixed.push(connect_once(&url, with_password()).await);
    }
    callout.sort();
    fixed.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("NATS connect latency, {connects} connections each (connect + one round trip):");
    for (name, v) in [("static user", &fixed), ("Vern callout", &callout)] {
        println!(
            "  {name:<13} p50 {:>7.3} ms   p99 {:>7.3} ms",
            ms(percentile(v, 0.5)),
            ms(percentile(v, 0.99))
        );
    }
    println!(
        "  added by the callout: p50 {:+.3} ms, p99 {:+.3} ms",
        ms(percentile(&callout, 0.5)) - ms(percentile(&fixed, 0.5)),
        ms(percentile(&callout, 0.99)) - ms(percentile(&fixed, 0.99))
    );
    let _ = nats.kill();
    let _ = nats.wait();
    drop(vern);
}
