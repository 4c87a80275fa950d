//! `vern serve` and the client commands, driven as a user would: the real
//! binary, real HTTP, real signals.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn dev(dir: &std::path::Path, extra: &[&str]) -> Server {
    let d = path_str(dir);
    let mut args = vec!["--dev", "--listen", "127.0.0.1:0", "--data-dir", &d];
    args.extend_from_slice(extra);
    Server::start(&args, &[])
}

async fn get_json(url: &str) -> (u16, Value) {
    let r = client().get(url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn dev_mode_is_initialised_unsealed_and_prints_how_to_connect() {
    let dir = temp();
    let s = dev(dir.path(), &["--dev-root-token", "dev-root"]);
    let (status, body) = get_json(&s.url("/v1/sys/health")).await;
    assert_eq!(status, 200);
    assert_eq!(body["initialized"], true);
    assert_eq!(body["sealed"], false);
    assert_eq!(body["standby"], false);
    for field in ["server_time_utc", "version", "cluster_name", "cluster_id"] {
        assert!(!body[field].is_null(), "health lacks {field}: {body}");
    }
    let banner = s.stdout_text();
    assert!(
        banner.contains(&format!("export VERN_ADDR='{}'", s.http())),
        "{banner}"
    );
    assert!(banner.contains("export VERN_TOKEN='dev-root'"), "{banner}");
    // The root token is printed for the user, never logged.
    assert!(!s.stderr_text().contains("dev-root"));

    let head = client().head(s.url("/v1/sys/health")).send().await.unwrap();
    assert_eq!(head.status(), 200);

    let out = vern(&["status", "--output", "json"], &[("VERN_ADDR", &s.http())]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["type"].as_str(), v["sealed"].as_bool(), v["t"].as_u64()),
        (Some("shamir"), Some(false), Some(1))
    );
    let out = vern(&["status", "--address", &s.http()], &[]);
    assert!(
        text(&out.stdout).contains("Sealed          false"),
        "{}",
        text(&out.stdout)
    );
}

#[tokio::test]
async fn bad_input_gets_json_errors_and_the_server_keeps_serving() {
    let dir = temp();
    let s = dev(dir.path(), &["--max-request-bytes", "4096"]);
    let c = client();
    let unseal = s.url("/v1/sys/unseal");
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            c.put(&unseal)
                .header("content-type", "application/json")
                .body("{not json"),
            400,
            "not valid JSON",
        ),
        (
            c.put(&unseal)
                .header("content-type", "application/json")
                .body("[1,2]"),
            400,
            "not valid JSON",
        ),
        (
            c.put(&unseal)
                .header("content-type", "application/json")
                .body(r#"{"key": 5}"#),
            400,
            "invalid type",
        ),
        // The content type is ignored, as Vault ignores it; the body is
        // still JSON or nothing.
        (
            c.put(&unseal)
                .header("content-type", "text/plain")
                .body("{}"),
            400,
            "`key` is required",
        ),
        (
            c.put(&unseal)
                .header("content-type", "application/x-www-form-urlencoded")
                .body("key=1"),
            400,
            "not valid JSON",
        ),
        (
            c.put(&unseal)
                .header("content-type", "application/json")
                .body("x".repeat(5000)),
            413,
            "4096",
        ),
        (
            c.put(&unseal).json(&json!({"key": "zz"})),
            400,
            "neither hex nor base64",
        ),
        (c.put(&unseal).json(&json!({})), 400, "`key` is required"),
        (c.get(s.url("/v1/no/such/route")), 404, "no handler"),
        (c.delete(s.url("/v1/sys/health")), 405, "not allowed"),
        (
            c.get(s.url("/v1/sys/health?activecode=999")),
            400,
            "activecode",
        ),
        (
            c.put(s.url("/v1/sys/init"))
                .json(&json!({"secret_shares": 3, "secret_threshold": 2})),
            400,
            "already initialized",
        ),
        (
            c.put(s.url("/v1/sys/seal"))
                .header("authorization", "Basic abc"),
            400,
            "Authorization scheme",
        ),
    ];
    for (req, want, needle) in cases {
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status, want, "{body}");
        assert_eq!(ct, "application/json");
        let msg = body["errors"][0].as_str().unwrap();
        assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
    }

    // A body without Content-Length is cut off while read.
    let mut tcp = TcpStream::connect(&s.addr).unwrap();
    let chunk = "x".repeat(3000);
    let req = format!(
        "PUT /v1/sys/unseal HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{len:x}\r\n{chunk}\r\n{len:x}\r\n{chunk}\r\n0\r\n\r\n",
        len = chunk.len()
    );
    tcp.write_all(req.as_bytes()).unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    let (status, body) = get_json(&s.url("/v1/sys/health")).await;
    assert_eq!((status, body["sealed"].as_bool()), (200, Some(false)));
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let dir = temp();
    let s = dev(dir.path(), &[]);
    let c = client();
    let with_id = |id| {
        c.get(s.url("/v1/sys/health"))
            .header("x-request-id", id)
            .send()
    };
    let r = with_id("trace-abc-123").await.unwrap();
    // The server's own id is always fresh; the caller's is kept beside it.
    assert_eq!(r.headers()["x-client-request-id"], "trace-abc-123");
    let first = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(first.len(), 36, "a UUID");
    let r = with_id("trace-abc-123").await.unwrap();
    assert_ne!(
        r.headers()["x-request-id"].to_str().unwrap(),
        first,
        "a caller's repeated id never makes two requests share one id"
    );
    let bad = "has space";
    let r = with_id(bad).await.unwrap();
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(generated, bad);
    assert_eq!(generated.len(), 36, "a UUID");
    assert!(!r.headers().contains_key("x-client-request-id"));
    let r = c.get(s.url("/nowhere")).send().await.unwrap();
    assert!(
        r.headers().contains_key("x-request-id"),
        "errors carry ids too"
    );
    // The id appears in the server's log lines for that request.
    eventually(
        Duration::from_secs(10),
        "the access log line with the request id",
        async || {
            s.stderr_text()
                .lines()
                .any(|l| l.contains("trace-abc-123") && l.contains("Request handled."))
        },
    )
    .await;
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let dir = temp();
    let s = dev(dir.path(), &[]);
    for _ in 0..3 {
        client().get(s.url("/v1/sys/health")).send().await.unwrap();
    }
    client()
        .get(s.url("/v1/secret/tenant-a/x"))
        .send()
        .await
        .unwrap();
    let r = client().get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(
        body.contains(
            r#"vern_http_requests_total{method="GET",route="/v1/sys/health",status="200"} 3"#
        ),
        "{body}"
    );
    assert!(body.contains(r#"vern_http_request_duration_seconds_bucket{le="#));
    assert!(body.contains(r#"route="unmatched",status="404""#));
    assert!(
        !body.contains("tenant-a"),
        "raw paths must not become labels"
    );
}

#[tokio::test]
async fn sealing_needs_an_operator_token_and_makes_vern_unavailable() {
    let dir = temp();
    let s = dev(dir.path(), &["--dev-root-token", "root-1"]);
    let c = client();
    let seal = s.url("/v1/sys/seal");
    for refused in [
        c.put(&seal),
        c.put(&seal).header("x-vault-token", "guess"),
        c.put(&seal).bearer_auth("root-2"),
    ] {
        assert_eq!(status_of(refused).await, 403);
    }
    let (status, _) = get_json(&s.url("/v1/sys/health")).await;
    assert_eq!(status, 200, "failed attempts change nothing");

    let out = vern(
        &["operator", "seal"],
        &[("VERN_ADDR", &s.http()), ("VERN_TOKEN", "root-1")],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let (status, body) = get_json(&s.url("/v1/sys/health")).await;
    assert_eq!((status, body["sealed"].as_bool()), (503, Some(true)));
    assert!(body.get("cluster_id").is_none());
    let (status, _) = get_json(&s.url("/v1/sys/health?sealedcode=200")).await;
    assert_eq!(status, 200);
    // Sealed means the token cannot even be checked.
    assert_eq!(
        status_of(c.put(&seal).header("x-vault-token", "root-1")).await,
        503
    );
    let out = vern(&["status"], &[("VERN_ADDR", &s.http())]);
    assert_eq!(out.status.code(), Some(2), "sealed exits 2");
}

#[tokio::test]
async fn a_restarted_dev_server_keeps_its_data_and_unseals_itself() {
    let dir = temp();
    let s = dev(dir.path(), &[]);
    let (_, first) = get_json(&s.url("/v1/sys/health")).await;
    assert!(s.terminate().success());
    let s = dev(dir.path(), &["--dev-root-token", "again"]);
    let (status, second) = get_json(&s.url("/v1/sys/health")).await;
    assert_eq!(status, 200);
    assert_eq!(first["cluster_id"], second["cluster_id"]);
    let r = client()
        .put(s.url("/v1/sys/seal"))
        .header("x-vault-token", "again")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
}

/// The main SQLite database is the server's alone (its reads take no file
/// lock): a second server on the same data directory is refused with a
/// message naming the cause, and the first keeps serving. The audit log's
/// database stays open to other processes.
#[tokio::test]
async fn a_second_server_on_the_same_sqlite_database_is_refused() {
    let dir = temp();
    let s = dev(dir.path(), &[]);
    let d = path_str(dir.path());
    let second = vern(
        &[
            "serve",
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &d,
        ],
        &[],
    );
    assert!(!second.status.success());
    let err = text(&second.stderr);
    assert!(
        err.contains("is held by another process (a running Vern server?)"),
        "{err}"
    );
    let (status, _) = get_json(&s.url("/v1/sys/health")).await;
    assert_eq!(status, 200);
    // A refused read, which is recorded.
    let r = client()
        .get(s.url("/v1/secret/data/acme/web/prod/db"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        !dir.path().join("vern.db-shm").exists(),
        "the WAL index of the main database lives in the server's memory"
    );
    // The audit log's files are readable while the server runs.
    let segment = dir.path().join("vern-audit/00000000000000000001.jsonl");
    let records = std::fs::read_to_string(segment).unwrap();
    assert!(records.contains(r#""status":403"#), "{records}");
    assert!(s.terminate().success());

    // Shared locking opens the main file to other processes.
    let s = dev(dir.path(), &["--sqlite-locking", "shared"]);
    let main = rusqlite::Connection::open(dir.path().join("vern.db")).unwrap();
    let keys: i64 = main
        .query_row("SELECT count(*) FROM kv", [], |r| r.get(0))
        .unwrap();
    assert!(keys > 0);
    drop(main);
    let log = s.stderr_text();
    let stopped = s.terminate();
    assert!(stopped.success(), "{stopped:?} {log}");
}

#[tokio::test]
async fn unsafe_listen_configurations_are_refused() {
    let dir = temp();
    let d = path_str(dir.path());
    let err = Server::try_start(&["--dev", "--listen", "0.0.0.0:0", "--data-dir", &d], &[])
        .err()
        .unwrap();
    assert!(err.contains("loopback"), "{err}");
    let err = Server::try_start(&["--listen", "127.0.0.1:0", "--data-dir", &d], &[])
        .err()
        .unwrap();
    assert!(err.contains("TLS is required"), "{err}");
    // A start refused for its TLS files writes nothing: no data directory,
    // no database.
    let fresh = dir.path().join("fresh");
    let f = path_str(&fresh);
    let refused: [(&[&str], &str); 2] = [
        (
            &[
                "--tls-cert",
                "/nonexistent.pem",
                "--tls-key",
                "/nonexistent.key",
            ],
            "certificate file /nonexistent.pem",
        ),
        (&["--tls-cert", "/x.pem"], "together"),
    ];
    for (tls, why) in refused {
        let mut args = vec!["--listen", "127.0.0.1:0", "--data-dir", &f];
        args.extend_from_slice(tls);
        let err = Server::try_start(&args, &[]).err().unwrap();
        assert!(err.contains(why), "{err}");
    }
    assert!(
        !fresh.exists(),
        "a refused start created {}",
        fresh.display()
    );
}

#[tokio::test]
async fn settings_come_from_the_config_file_and_vern_environment_variables() {
    let dir = temp();
    let config = dir.path().join("vern.toml");
    std::fs::write(
        &config,
        "insecure_listen = true\ndata_dir = \"data\"\ncluster_name = \"from-file\"\n",
    )
    .unwrap();
    let cfg = path_str(&config);
    let s = Server::start(&["--config", &cfg], &[("VERN_LISTEN", "127.0.0.1:0")]);
    let (status, body) = get_json(&s.url("/v1/sys/health")).await;
    assert_eq!((status, body["initialized"].as_bool()), (501, Some(false)));
    assert!(
        dir.path().join("data/vern.db").exists(),
        "relative data_dir is relative to the file"
    );
    drop(s);

    std::fs::write(
        &config,
        "insecure_listen = true\nlisten_address = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let err = Server::try_start(&["--config", &cfg], &[]).err().unwrap();
    assert!(
        err.contains("listen_address"),
        "unknown keys are refused: {err}"
    );
}

#[tokio::test]
async fn init_and_unseal_over_tls_with_the_cli() {
    let dir = temp();
    let (_, c, k) = self_signed_tls(dir.path());
    let d = path_str(&dir.path().join("data"));
    let s = tls_server(&c, &k, &d, &[]);
    let addr = format!("https://{}", s.addr);
    let env = [("VERN_ADDR", addr.as_str()), ("VERN_CACERT", c.as_str())];

    // Without trusting the CA, the client refuses the connection.
    let out = vern(&["status"], &[("VERN_ADDR", &addr)]);
    assert_eq!(out.status.code(), Some(1));

    let out = vern(&["status"], &env);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = vern(
        &[
            "operator",
            "init",
            "--key-shares",
            "5",
            "--key-threshold",
            "3",
            "-o",
            "json",
        ],
        &env,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let init: Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys: Vec<String> = init["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    let b64: Vec<&str> = init["keys_base64"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!((keys.len(), b64.len()), (5, 5));
    let root = init["root_token"].as_str().unwrap().to_owned();

    let out = vern(&["operator", "unseal", &keys[3]], &env);
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("Unseal Progress    1/3"),
        "{}",
        text(&out.stdout)
    );
    vern(&["operator", "unseal", b64[0]], &env);
    let out = vern(&["operator", "unseal", "-o", "json", &keys[1]], &env);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sealed"], false);
    let out = vern(&["status"], &env);
    assert_eq!(out.status.code(), Some(0));

    // Restart: sealed again until a threshold of keys is given.
    assert!(s.terminate().success());
    let s = tls_server(&c, &k, &d, &[]);
    let addr = format!("https://{}", s.addr);
    let env = [
        ("VERN_ADDR", addr.as_str()),
        ("VERN_CACERT", c.as_str()),
        ("VERN_TOKEN", root.as_str()),
    ];
    assert_eq!(vern(&["status"], &env).status.code(), Some(2));
    for key in &keys[2..5] {
        assert!(vern(&["operator", "unseal", key], &env).status.success());
    }
    assert_eq!(vern(&["status"], &env).status.code(), Some(0));
    assert!(vern(&["operator", "seal"], &env).status.success());
    assert_eq!(vern(&["status"], &env).status.code(), Some(2));
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_request_finish() {
    let dir = temp();
    let s = dev(dir.path(), &[]);
    let body = r#"{"reset": true}"#;
    let mut tcp = TcpStream::connect(&s.addr).unwrap();
    let head = format!(
        "PUT /v1/sys/unseal HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).unwrap();
    // The server asks for the body once its handler reads it: from then on
    // the request is in flight, however loaded the machine.
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut interim = Vec::new();
    let mut byte = [0u8; 1];
    while !interim.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).unwrap();
        interim.push(byte[0]);
    }
    assert!(
        interim.starts_with(b"HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&interim)
    );
    tcp.write_all(&body.as_bytes()[..5]).unwrap();
    let pid = s.pid();
    signal(pid, "TERM");
    eventually(
        Duration::from_secs(10),
        "the server to start shutting down",
        async || s.stderr_text().contains("Shutdown requested"),
    )
    .await;
    tcp.write_all(&body.as_bytes()[5..]).unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(s.terminate().success());
}

#[tokio::test]
async fn slow_requests_time_out_with_a_json_error() {
    let dir = temp();
    let s = dev(dir.path(), &["--request-timeout", "1"]);
    let mut tcp = TcpStream::connect(&s.addr).unwrap();
    tcp.write_all(b"PUT /v1/sys/unseal HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{").unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains(r#"{"errors":["request did not complete within 1 s"]}"#),
        "{answer}"
    );
}

#[test]
fn shell_completions_are_printed() {
    let out = vern(&["completions", "bash"], &[]);
    assert!(out.status.success());
    let script = text(&out.stdout);
    assert!(script.contains("_vern()") && script.contains("serve") && script.contains("unseal"));
}

#[tokio::test]
async fn two_servers_share_one_postgresql() {
    let Some(url) = vern_store::testing::fresh_postgres_url().await else {
        return;
    };
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--insecure-listen",
        "--storage",
        url.as_str(),
    ];
    let (a, b) = (Server::start(&args, &[]), Server::start(&args, &[]));
    assert!(
        !a.stderr_text().contains("postgres://"),
        "storage URLs are not logged"
    );

    // Both race to initialise; exactly one wins.
    let init = |s: &Server| {
        client()
            .put(s.url("/v1/sys/init"))
            .json(&json!({"secret_shares": 3, "secret_threshold": 2}))
            .send()
    };
    let (ra, rb) = tokio::join!(init(&a), init(&b));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    let mut statuses = [ra.status().as_u16(), rb.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 400]);
    let winner: Value = if ra.status() == 200 {
        ra.json().await.unwrap()
    } else {
        rb.json().await.unwrap()
    };
    let keys = winner["keys"].as_array().unwrap();

    for s in [&a, &b] {
        for key in &keys[..2] {
            client()
                .put(s.url("/v1/sys/unseal"))
                .json(&json!({ "key": key }))
                .send()
                .await
                .unwrap();
        }
    }
    let (sa, ha) = get_json(&a.url("/v1/sys/health")).await;
    let (sb, hb) = get_json(&b.url("/v1/sys/health")).await;
    assert_eq!((sa, sb), (200, 200));
    assert_eq!(
        ha["cluster_id"], hb["cluster_id"],
        "one cluster identity across replicas"
    );
    let (_, st) = get_json(&a.url("/v1/sys/seal-status")).await;
    assert_eq!(st["storage_type"], "postgres");
}

/// Log lines are written by a thread of their own; every line a request
/// queued is still written when the server is stopped right after it.
#[tokio::test]
async fn no_log_line_is_lost_on_shutdown() {
    let dir = temp();
    let s = dev(dir.path(), &["--dev-root-token", "dev-root"]);
    let http = client();
    const REQUESTS: usize = 300;
    for _ in 0..REQUESTS {
        let r = http
            .get(s.url("/v1/secret/metadata/acme/web/prod/db"))
            .header("x-vault-token", "dev-root")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
    let stderr = std::sync::Arc::clone(&s.stderr);
    assert!(s.terminate().success());
    // The pipe is read by a thread of the test harness: wait for the end.
    eventually(Duration::from_secs(10), "the shutdown line", async || {
        stderr
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("Vern stopped."))
    })
    .await;
    let lines = stderr.lock().unwrap().clone();
    let handled = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "Request handled." && v["status"] == 404)
        .count();
    assert_eq!(handled, REQUESTS);
    assert!(lines.last().unwrap().contains("Vern stopped."));
}
