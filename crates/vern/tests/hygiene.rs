//! Connection hygiene of the listener and bounded metrics, through the real
//! binary: slow or idle connections are closed, connections beyond the cap
//! wait without hurting the server, and made-up HTTP methods do not grow
//! `/metrics`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

/// Reads until the server closes the connection; returns what it sent and
/// how long that took. Fails if the connection is still open after `limit`.
fn read_until_closed(tcp: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    tcp.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the connection was not closed within {limit:?}: {e}"),
        }
    }
    (
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    )
}

async fn health(s: &Server) -> bool {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
        .get(s.url("/v1/sys/health"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
}

#[tokio::test]
async fn slow_and_silent_connections_are_closed_after_the_header_timeout() {
    let dir = temp();
    let d = path_str(dir.path());
    let s = dev_server(&d, &["--header-timeout", "1"]);

    // Slowloris: part of a request head, then nothing.
    let mut slow = TcpStream::connect(&s.addr).unwrap();
    slow.write_all(b"GET /v1/sys/health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    // A connection that never sends a byte.
    let mut silent = TcpStream::connect(&s.addr).unwrap();
    let (_, waited) = read_until_closed(&mut slow, Duration::from_secs(10));
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    let (_, waited) = read_until_closed(&mut silent, Duration::from_secs(10));
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    assert!(health(&s).await, "the server keeps serving");
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let dir = temp();
    let d = path_str(dir.path());
    // The header timeout stays at its 10 s, so what closes the connection
    // well before that is the idle timeout.
    let s = dev_server(&d, &["--idle-timeout", "1"]);
    let mut idle = TcpStream::connect(&s.addr).unwrap();
    idle.write_all(b"GET /v1/sys/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (answer, waited) = read_until_closed(&mut idle, Duration::from_secs(9));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    assert!(health(&s).await, "the server keeps serving");
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_and_the_server_keeps_serving() {
    let dir = temp();
    let d = path_str(dir.path());
    let s = dev_server(&d, &["--max-connections", "2"]);
    assert!(health(&s).await);

    // Two idle connections take both places; a third is not served...
    let first = TcpStream::connect(&s.addr).unwrap();
    let _second = TcpStream::connect(&s.addr).unwrap();
    assert!(
        !health(&s).await,
        "a third connection is served beyond a cap of two"
    );
    // ...until a place is free again.
    drop(first);
    eventually(
        Duration::from_secs(10),
        "a request once a connection closed",
        async || health(&s).await,
    )
    .await;

    // Many more connections than the cap, opened and dropped while they
    // wait, cost nothing lasting.
    let many: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(&s.addr).unwrap())
        .collect();
    drop(many);
    eventually(
        Duration::from_secs(10),
        "a request after the crowd left",
        async || health(&s).await,
    )
    .await;
}

#[tokio::test]
async fn made_up_methods_do_not_grow_metrics() {
    let dir = temp();
    let d = path_str(dir.path());
    let s = dev_server(&d, &[]);
    let c = client();
    let paths = [
        "/metrics",
        "/v1/sys/health",
        "/nowhere",
        "/v1/secret/data/acme/web/prod/x",
    ];
    // Every path seen once with a real method, so the baseline has them.
    for p in paths {
        c.get(s.url(p)).send().await.unwrap();
    }
    let before = metrics(&s).await;
    for i in 0..200 {
        let method = reqwest::Method::from_bytes(format!("FUZZ{i}X").as_bytes()).unwrap();
        let path = paths[i % paths.len()];
        c.request(method, s.url(path)).send().await.unwrap();
    }
    let after = metrics(&s).await;
    assert!(!after.contains("FUZZ"), "{after}");
    assert!(after.contains(r#"method="other""#), "{after}");
    assert!(
        after.len() < before.len() + 32 * 1024,
        "/metrics grew from {} to {} bytes",
        before.len(),
        after.len()
    );
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_closed_after_the_header_timeout() {
    let dir = temp();
    let (pem, c, k) = self_signed_tls(dir.path());
    let d = path_str(&dir.path().join("data"));
    // One connection at most: the stalled handshake holds the only place.
    let s = tls_server(
        &c,
        &k,
        &d,
        &["--header-timeout", "1", "--max-connections", "1"],
    );
    let mut stalled = TcpStream::connect(&s.addr).unwrap();
    // The first bytes of a TLS record header, then nothing.
    stalled.write_all(&[0x16, 0x03, 0x01]).unwrap();
    let (_, waited) = read_until_closed(&mut stalled, Duration::from_secs(10));
    assert!(waited < Duration::from_secs(5), "{waited:?}");

    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let url = format!("https://{}/v1/sys/health", s.addr);
    eventually(
        Duration::from_secs(10),
        "an HTTPS request once the stalled handshake is gone",
        async || https.get(&url).send().await.is_ok(),
    )
    .await;
}
