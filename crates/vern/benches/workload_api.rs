//! Workload API latency through `vern agent`: a real `vern serve --dev`, a
//! node with an entry for this process's uid, and the agent on a Unix
//! socket; then, one call at a time from a gRPC client (tonic, the same
//! generated client `vern svid fetch` uses), the p50 and p99 latency of
//!
//! - `FetchX509SVID` (a new stream per call, up to its first message): the
//!   agent attests the caller (uid and the executable's SHA-256, hashed
//!   once, then cached by inode and modification time) and answers from
//!   its cache of SVIDs,
//! - `FetchJWTSVID`: attested, then one round trip to Vern, which decides
//!   and signs,
//! - `ValidateJWTSVID`: verified in the agent against its bundle.
//!
//! Each call opens its own connection, as a workload starting up would.
//! `VERN_BENCH_CALLS` (default 500) sets the calls per scenario.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod common;

mod proto {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    include!(concat!(env!("OUT_DIR"), "/_.rs"));
}

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use common::{env_number, Server};
use proto::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use serde_json::{json, Value};

const ROOT: &str = "bench-root";

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn post(base: &str, path: &str, body: &Value) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("X-Vault-Token", ROOT)
        .json(body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "POST {path} failed");
    resp.json().await.unwrap()
}

fn start_agent(base: &str, socket: &Path, id: &str, secret_file: &Path) -> Agent {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vern"))
        .args(["agent", "--log-format", "json", "--address", base])
        .arg("--socket")
        .arg(socket)
        .args(["--client-id", id])
        .arg("--client-secret-file")
        .arg(secret_file)
        .env("VERN_LOG", "warn,vern::agent=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("agent exited").unwrap();
        if line.contains("Agent is listening.") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    Agent(child)
}

async fn connect(socket: &Path) -> SpiffeWorkloadApiClient<tonic::transport::Channel> {
    let path = socket.to_path_buf();
    let channel = tonic::transport::Endpoint::try_from("http://[::]:0")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                tokio::net::UnixStream::connect(path)
                    .await
                    .map(hyper_util::rt::TokioIo::new)
            }
        }))
        .await
        .unwrap();
    SpiffeWorkloadApiClient::new(channel)
}

fn with_header<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("workload.spiffe.io", "true".parse().unwrap());
    req
}

/// Runs `call` `n` times after a warm-up; p50 and p99 in microseconds.
async fn measure<F, Fut>(n: usize, mut call: F) -> (f64, f64)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..n.min(20) {
        call().await;
    }
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        call().await;
        times.push(start.elapsed());
    }
    times.sort();
    let pct = |p: f64| {
        let i = ((times.len() as f64 - 1.0) * p).round() as usize;
        times[i].as_secs_f64() * 1e6
    };
    (pct(0.50), pct(0.99))
}

fn main() {
    let calls: usize = env_number("VERN_BENCH_CALLS", 500);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&[
        "--dev",
        "--dev-root-token",
        ROOT,
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let base = server.base();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let secret = dir.path().join("node.secret");
    rt.block_on(async {
        let node = post(
            &base,
            "/v1/auth/clients",
            &json!({"name": "bench", "node": true}),
        )
        .await;
        std::fs::write(&secret, node["data"]["client_secret"].as_str().unwrap()).unwrap();
        let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
        let exe = std::fs::read("/proc/self/exe").unwrap();
        let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&exe));
        post(
            &base,
            "/v1/pki/workloads",
            &json!({
                "node": "bench",
                "selectors": [format!("unix:uid:{uid}"), format!("unix:sha256:{hash}")],
                "service": "svc.acme.web.prod.api",
            }),
        )
        .await;
    });
    let socket = dir.path().join("agent.sock");
    let _agent = start_agent(&base, &socket, "node.bench", &secret);
    rt.block_on(async {
        let x509 = measure(calls, || async {
            let mut c = connect(&socket).await;
            let mut s = c
                .fetch_x509svid(with_header(proto::X509svidRequest {}))
                .await
                .unwrap()
                .into_inner();
            assert!(!s.message().await.unwrap().unwrap().svids.is_empty());
        })
        .await;
        let mut c = connect(&socket).await;
        let token = c
            .fetch_jwtsvid(with_header(proto::JwtsvidRequest {
                audience: vec!["bench".into()],
                spiffe_id: String::new(),
            }))
            .await
            .unwrap()
            .into_inner()
            .svids[0]
            .svid
            .clone();
        let jwt = measure(calls, || async {
            let mut c = connect(&socket).await;
            let r = c
                .fetch_jwtsvid(with_header(proto::JwtsvidRequest {
                    audience: vec!["bench".into()],
                    spiffe_id: String::new(),
                }))
                .await
                .unwrap();
            assert_eq!(r.into_inner().svids.len(), 1);
        })
        .await;
        let validate = measure(calls, || {
            let token = token.clone();
            let socket = socket.clone();
            async move {
                let mut c = connect(&socket).await;
                c.validate_jwtsvid(with_header(proto::ValidateJwtsvidRequest {
                    audience: "bench".into(),
                    svid: token,
                }))
                .await
                .unwrap();
            }
        })
        .await;
        println!("Workload API through vern agent, {calls} calls each, one at a time, a new connection per call:");
        for (name, (p50, p99)) in [
            ("FetchX509SVID (uid + sha256 selectors, cached SVID)", x509),
            ("FetchJWTSVID (one round trip to Vern)", jwt),
            ("ValidateJWTSVID (in the agent)", validate),
        ] {
            println!("  {name:<52} p50 {p50:>8.0} µs  p99 {p99:>8.0} µs");
        }
    });
    drop(server);
}
