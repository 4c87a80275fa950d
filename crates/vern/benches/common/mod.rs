//! Shared by the HTTP load and memory benchmarks: a `vern serve` child
//! process, and a minimal HTTP/1.1 keep-alive client.
//!
//! The client shares the machine with the server, so it is kept as lean as
//! wrk's: a request is a pre-built byte string written to one TCP
//! connection, and the response is read until its `Content-Length` is
//! complete (headers parsed with `httparse`, no chunked bodies, no
//! pipelining). Nothing is allocated per request in the measured loop.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A running `vern serve`, killed on drop.
pub struct Server {
    child: Child,
    /// `host:port` it listens on.
    pub addr: String,
}

impl Server {
    /// Starts `vern serve ARGS` on a free loopback port with the API and
    /// token endpoint rate limits lifted (the load comes from a handful of
    /// principals and one address on purpose), and waits until it listens.
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vern"))
            .arg("serve")
            .args(args)
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(["--limit-api-principal", "0", "--limit-api-tenant", "0"])
            .args(["--limit-token-client", "0", "--limit-token-address", "0"])
            .args(["--limit-api-address", "0"])
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
            if line.contains("\"ERROR\"") {
                eprintln!("{line}");
            }
        };
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if line.contains("\"ERROR\"") {
                    eprintln!("server: {line}");
                }
            }
        });
        Self { child, addr }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://host:port`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The bytes of one HTTP/1.1 request to `host`: `headers` as given, and a
/// body with its content type when there is one.
pub fn request(
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    let mut out = out.into_bytes();
    match body {
        Some((content_type, body)) => {
            out.extend_from_slice(
                format!(
                    "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            out.extend_from_slice(body);
        }
        None => out.extend_from_slice(b"\r\n"),
    }
    out
}

/// A JSON request.
pub fn json_request(
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> Vec<u8> {
    let body = serde_json::to_vec(body).unwrap();
    request(
        method,
        path,
        host,
        headers,
        Some(("application/json", &body)),
    )
}

/// A `client_credentials` token request authenticated with
/// `client_secret_basic`, with extra `headers` (a DPoP proof).
pub fn token_request(host: &str, id: &str, secret: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let basic = format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")));
    let mut all = vec![("Authorization", basic.as_str())];
    all.extend_from_slice(headers);
    request(
        "POST",
        "/oauth2/token",
        host,
        &all,
        Some((
            "application/x-www-form-urlencoded",
            b"grant_type=client_credentials",
        )),
    )
}

fn broken(what: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.into())
}

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    head: usize,
}

/// A whole response, for set-up calls.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON (`null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Conn {
    pub async fn connect(addr: &str) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(16 * 1024),
            head: 0,
        })
    }

    /// Sends one request and reads its whole response; returns the status.
    /// The response stays in the connection's buffer until the next call.
    pub async fn send(&mut self, req: &[u8]) -> std::io::Result<u16> {
        self.stream.write_all(req).await?;
        self.buf.clear();
        loop {
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(broken("the server closed the connection"));
            }
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            let httparse::Status::Complete(head) =
                resp.parse(&self.buf).map_err(|e| broken(e.to_string()))?
            else {
                continue;
            };
            let status = resp.code.unwrap_or(0);
            let mut length = None;
            for h in resp.headers.iter() {
                if h.name.eq_ignore_ascii_case("content-length") {
                    length = std::str::from_utf8(h.value)
                        .ok()
                        .and_then(|v| v.trim().parse::<usize>().ok());
                } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                    return Err(broken("chunked responses are not supported"));
                }
            }
            let length = match length {
                Some(n) => n,
                None if status == 204 || status == 304 || status < 200 => 0,
                None => return Err(broken("a response without Content-Length")),
            };
            self.head = head;
            let total = head + length;
            while self.buf.len() < total {
                if self.stream.read_buf(&mut self.buf).await? == 0 {
                    return Err(broken("the server closed the connection mid-body"));
                }
            }
            if self.buf.len() > total {
                return Err(broken("more bytes than the response"));
            }
            return Ok(status);
        }
    }

    /// The body of the last response.
    pub fn body(&self) -> &[u8] {
        self.buf.get(self.head..).unwrap_or_default()
    }

    /// Sends one request and returns its whole response.
    pub async fn call(&mut self, req: &[u8]) -> std::io::Result<Reply> {
        let status = self.send(req).await?;
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        resp.parse(&self.buf).map_err(|e| broken(e.to_string()))?;
        let headers = resp
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        Ok(Reply {
            status,
            headers,
            body: self.buf[self.head..].to_vec(),
        })
    }
}

/// Sends one request on a new connection.
pub async fn call(addr: &str, req: &[u8]) -> Reply {
    Conn::connect(addr).await.unwrap().call(req).await.unwrap()
}

/// Sends all `requests` over `concurrency` connections (on the current
/// runtime) and returns the replies in order.
pub async fn call_all(addr: &str, requests: Vec<Vec<u8>>, concurrency: usize) -> Vec<Reply> {
    let requests = Arc::new(requests);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (requests, next, addr) = (Arc::clone(&requests), Arc::clone(&next), addr.to_owned());
        tasks.spawn(async move {
            let mut conn = Conn::connect(&addr).await.unwrap();
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(req) = requests.get(i) else { break };
                out.push((i, conn.call(req).await.unwrap()));
            }
            out
        });
    }
    let mut all: Vec<Option<Reply>> = (0..requests.len()).map(|_| None).collect();
    while let Some(done) = tasks.join_next().await {
        for (i, reply) in done.unwrap() {
            all[i] = Some(reply);
        }
    }
    all.into_iter().map(Option::unwrap).collect()
}

/// Initialises and unseals a server that is not in dev mode (one key
/// share); returns its root token.
pub async fn init_and_unseal(addr: &str) -> String {
    let init = call(
        addr,
        &json_request(
            "PUT",
            "/v1/sys/init",
            addr,
            &[],
            &serde_json::json!({"secret_shares": 1, "secret_threshold": 1}),
        ),
    )
    .await;
    assert_eq!(
        init.status,
        200,
        "init: {}",
        String::from_utf8_lossy(&init.body)
    );
    let init = init.json();
    let unseal = call(
        addr,
        &json_request(
            "PUT",
            "/v1/sys/unseal",
            addr,
            &[],
            &serde_json::json!({"key": init["keys"][0]}),
        ),
    )
    .await;
    assert_eq!(unseal.status, 200);
    init["root_token"].as_str().unwrap().to_owned()
}

/// Creates a service client with `spec` through `root`; returns its id and
/// secret.
pub async fn create_client(addr: &str, root: &str, spec: &Value) -> (String, String) {
    let r = call(
        addr,
        &json_request(
            "POST",
            "/v1/auth/clients",
            addr,
            &[("X-Vault-Token", root)],
            spec,
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    (
        v["data"]["client_id"].as_str().unwrap().to_owned(),
        v["data"]["client_secret"].as_str().unwrap().to_owned(),
    )
}

/// The access token in a token endpoint reply.
pub fn access_token(r: &Reply) -> String {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["access_token"].as_str().unwrap().to_owned()
}

/// A DPoP proof (RFC 9449) by `key` for `htm` `htu`, with `ath` when it
/// accompanies an access token, and a server `nonce` when one is asked for.
pub fn dpop_proof(
    key: &ed25519_dalek::SigningKey,
    htm: &str,
    htu: &str,
    jti: &str,
    iat: u64,
    token: Option<&str>,
    nonce: Option<&str>,
) -> String {
    let mut claims = serde_json::json!({"htm": htm, "htu": htu, "iat": iat, "jti": jti});
    if let Some(t) = token {
        claims["ath"] = URL_SAFE_NO_PAD.encode(Sha256::digest(t.as_bytes())).into();
    }
    if let Some(n) = nonce {
        claims["nonce"] = n.into();
    }
    let header = serde_json::json!({
        "alg": "EdDSA",
        "typ": "dpop+jwt",
        "jwk": vern_authority::jws::ed25519_public(key).to_json(None),
    });
    vern_authority::jws::sign_ed25519(&header, &claims, key)
}

/// Seconds since the Unix epoch.
/// The number in environment variable `name`, or `default`.
pub fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `VmRSS` and `VmHWM` of process `pid`, in kB.
pub fn memory_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time of process `pid` (`"self"` for this one) so far, and of its
/// waited-for children, in clock ticks.
pub fn cpu_ticks(pid: &str) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name, which may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // utime, stime, cutime, cstime are fields 14 to 17 of the whole line.
    let at = |i: usize| f.get(i - 3).copied().unwrap_or(0);
    (at(14) + at(15), at(16) + at(17))
}

/// The whole machine's CPU time so far, from `/proc/stat`, in clock ticks:
/// busy (user, nice, system, irq, softirq: every process and the kernel)
/// and idle (idle, iowait).
pub fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .find_map(|l| l.strip_prefix("cpu "))
        .map(|l| {
            l.split_whitespace()
                .map(|v| v.parse().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default();
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    (at(0) + at(1) + at(2) + at(5) + at(6), at(3) + at(4))
}

/// The CPUs `/proc/stat` counts (its `cpuN` lines), which
/// [`machine_ticks`] adds up.
pub fn machine_cpus() -> usize {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count()
        .max(1)
}

/// Clock ticks per second (`getconf CLK_TCK`, else 100).
pub fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}
