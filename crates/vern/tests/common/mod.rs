//! Drives the real `vern` binary: start a server, find its address from its
//! JSON logs, talk to it over HTTP, stop it with a signal.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_vern");

/// A running `vern serve`.
pub struct Server {
    child: Option<Child>,
    pub addr: String,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

fn pump(
    stream: impl std::io::Read + Send + 'static,
    sink: Arc<Mutex<Vec<String>>>,
    tx: Option<mpsc::Sender<String>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Some(tx) = &tx {
                let _ = tx.send(line.clone());
            }
            sink.lock().unwrap().push(line);
        }
    });
}

impl Server {
    /// Starts `vern serve ARGS` with JSON logs and waits until it listens.
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Self {
        Self::try_start(args, envs).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Server::start`], but returns the server's output on failure.
    pub fn try_start(args: &[&str], envs: &[(&str, &str)]) -> Result<Self, String> {
        Self::spawn("serve", args, envs, "Vern is listening.")
    }

    /// Starts `vern keeper ARGS` and waits until it listens.
    pub fn keeper(args: &[&str]) -> Self {
        Self::spawn("keeper", args, &[], "Keeper is listening.").unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a listening subcommand; `ready` is the log message that
    /// carries its `address`.
    pub fn spawn(
        sub: &str,
        args: &[&str],
        envs: &[(&str, &str)],
        ready: &str,
    ) -> Result<Self, String> {
        let mut cmd = Command::new(BIN);
        cmd.arg(sub).args(args).arg("--log-format").arg("json");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.env_remove("VERN_ADDR").env_remove("VERN_TOKEN");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        pump(child.stdout.take().unwrap(), Arc::clone(&stdout), None);
        pump(child.stderr.take().unwrap(), Arc::clone(&stderr), Some(tx));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    if line.contains(ready) {
                        let v: Value = serde_json::from_str(&line).unwrap();
                        let addr = v["address"].as_str().unwrap().to_owned();
                        return Ok(Self {
                            child: Some(child),
                            addr,
                            stdout,
                            stderr,
                        });
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {}
            }
            if let Ok(Some(status)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                return Err(format!(
                    "vern {sub} exited with {status}: {}",
                    stderr.lock().unwrap().join("\n")
                ));
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                return Err(format!(
                    "vern {sub} did not start: {}",
                    stderr.lock().unwrap().join("\n")
                ));
            }
        }
    }

    pub fn http(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        signal(child.id(), "TERM");
        wait_timeout(&mut child, Duration::from_secs(30))
    }

    /// Kills with SIGKILL.
    pub fn kill(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn stdout_text(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The wall clock in Unix seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

pub fn wait_timeout(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a client command of the binary.
pub fn vern(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("VERN_ADDR")
        .env_remove("VERN_TOKEN");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null()).output().unwrap()
}

/// The report of `vern audit verify --storage` on the SQLite database
/// `db` (the audit log beside it), checked against `key`.
pub fn verify_audit_storage(db: &Path, key: &str) -> Value {
    let storage = format!("sqlite:{}", db.display());
    let out = vern(
        &[
            "audit",
            "verify",
            "--public-key",
            key,
            "--storage",
            &storage,
            "--output",
            "json",
        ],
        &[],
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
}

/// The audit log's segment files in the data directory `data`, in order,
/// concatenated.
pub fn audit_segments(data: &Path) -> String {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data.join("vern-audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect()
}

pub fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

pub fn data_dir_args(dir: &Path) -> Vec<String> {
    vec!["--data-dir".into(), dir.display().to_string()]
}

pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

pub fn temp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

pub fn join(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// Polls `check` every 100 ms until it returns true or `limit` passes.
pub async fn eventually(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The JSON a successful command printed; fails with its stderr otherwise.
pub fn ok_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "command failed: {}",
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The scopes a service needs for everything on its own secrets.
pub const SECRET_SCOPES: [&str; 3] = ["secrets:read", "secrets:write", "secrets:delete"];

/// The declaration of a service `name` of `tenant`'s `web/prod` holding
/// `scopes`.
pub fn service(tenant: &str, name: &str, scopes: &[&str]) -> Value {
    json!({"tenant": tenant, "project": "web", "environment": "prod", "name": name, "scopes": scopes})
}

/// The JSON body of the answer to `request`.
pub async fn json_of(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// The status of the answer to `request`.
pub async fn status_of(request: reqwest::RequestBuilder) -> u16 {
    request.send().await.unwrap().status().as_u16()
}

/// The status and the JSON body (`null` when there is none) of the answer
/// to `request`.
pub async fn status_and_json(request: reqwest::RequestBuilder) -> (u16, Value) {
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The JSON body of `GET path` with `token` as `X-Vault-Token`.
pub async fn get_as(s: &Server, token: &str, path: &str) -> Value {
    json_of(client().get(s.url(path)).header("x-vault-token", token)).await
}

/// `POST path` of the JSON `body` with `token` as `X-Vault-Token`: the
/// status and the JSON answer (`null` when there is none).
pub async fn post_as(s: &Server, token: &str, path: &str, body: &Value) -> (u16, Value) {
    status_and_json(
        client()
            .post(s.url(path))
            .header("x-vault-token", token)
            .json(body),
    )
    .await
}

/// Writes `data` to the secret at `path` (below `/v1/secret/data/`) with
/// `token`; returns the status.
pub async fn write_secret(s: &Server, token: &str, path: &str, data: Value) -> u16 {
    let path = format!("/v1/secret/data/{path}");
    post_as(s, token, &path, &json!({ "data": data })).await.0
}

/// The text of `/metrics`.
pub async fn metrics(s: &Server) -> String {
    client()
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The token endpoint the OAuth authorization server metadata names.
pub async fn token_endpoint(s: &Server) -> String {
    let meta = json_of(client().get(s.url("/.well-known/oauth-authorization-server"))).await;
    meta["token_endpoint"].as_str().unwrap().to_owned()
}

/// Creates a client through the root token `root`; returns its id and its
/// generated secret.
pub async fn create_client(s: &Server, spec: Value) -> (String, String) {
    let (_, created) = post_as(s, "root", "/v1/auth/clients", &spec).await;
    let id = created["data"]["client_id"].as_str().unwrap();
    let secret = created["data"]["client_secret"].as_str().unwrap();
    (id.to_owned(), secret.to_owned())
}

/// Creates a client through the root token `root` and returns an access
/// token for it (client credentials with its generated secret).
pub async fn client_token(s: &Server, spec: Value) -> String {
    let (id, secret) = create_client(s, spec).await;
    access_token(s, &id, &secret).await
}

/// An access token for client `id` with `secret` (client_secret_basic).
pub async fn access_token(s: &Server, id: &str, secret: &str) -> String {
    let t = json_of(
        client()
            .post(s.url("/oauth2/token"))
            .basic_auth(id, Some(secret))
            .form(&[("grant_type", "client_credentials")]),
    )
    .await;
    t["access_token"].as_str().unwrap().to_owned()
}

/// The audit records (up to 1000), read with the root token.
pub async fn audit_records(s: &Server) -> Vec<Value> {
    let v = get_as(s, "root", "/v1/audit/records?limit=1000").await;
    v["data"]["records"].as_array().unwrap().clone()
}

/// The audit records (up to 1000) of requests that sent `X-Request-Id:
/// client_request_id`, read with the root token.
pub async fn records_of(s: &Server, client_request_id: &str) -> Vec<Value> {
    audit_records(s)
        .await
        .into_iter()
        .filter(|r| r["event"]["client_request_id"] == client_request_id)
        .collect()
}

/// The arguments of `vern serve --dev` on a free loopback port with data
/// in `data_dir` and the root token `root`.
pub fn dev_args<'a>(data_dir: &'a str, root: &'a str) -> Vec<&'a str> {
    vec![
        "--dev",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data_dir,
        "--dev-root-token",
        root,
    ]
}

/// Starts `vern serve --dev` on a free loopback port with data in
/// `data_dir` and the root token `root`, plus `extra` arguments.
pub fn dev_server(data_dir: &str, extra: &[&str]) -> Server {
    let mut args = dev_args(data_dir, "root");
    args.extend_from_slice(extra);
    Server::start(&args, &[])
}

/// A self-signed certificate for `127.0.0.1` and `localhost`, written to
/// `dir` as `tls.crt` and `tls.key`: its PEM and the two paths.
pub fn self_signed_tls(dir: &Path) -> (String, String, String) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert_path, key_path) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    (cert.cert.pem(), path_str(&cert_path), path_str(&key_path))
}

/// Starts `vern serve` over TLS with `cert` and `key` on a free loopback
/// port with data in `data_dir`, plus `extra` arguments.
pub fn tls_server(cert: &str, key: &str, data_dir: &str, extra: &[&str]) -> Server {
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
        "--data-dir",
        data_dir,
    ];
    args.extend_from_slice(extra);
    Server::start(&args, &[])
}

/// Two `vern serve` processes on one PostgreSQL database, initialised
/// through the first and unsealed on both; returns them and the root token.
pub async fn two_servers_on_postgres(url: &str) -> (Server, Server, String) {
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--insecure-listen",
        "--storage",
        url,
    ];
    let (a, b) = (Server::start(&args, &[]), Server::start(&args, &[]));
    let c = client();
    let init = json_of(
        c.put(a.url("/v1/sys/init"))
            .json(&json!({"secret_shares": 1, "secret_threshold": 1})),
    )
    .await;
    let key = init["keys"][0].as_str().unwrap();
    for s in [&a, &b] {
        c.put(s.url("/v1/sys/unseal"))
            .json(&json!({ "key": key }))
            .send()
            .await
            .unwrap();
    }
    (a, b, init["root_token"].as_str().unwrap().to_owned())
}

/// A certificate and its key, as PEM and the certificate as DER.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

/// A throwaway certificate authority: its certificate and key.
pub fn ca() -> (rcgen::Certificate, rcgen::KeyPair) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert, key)
}

/// A certificate from `ca` with the one SAN `san`, for `usage`.
pub fn issue(
    ca: &(rcgen::Certificate, rcgen::KeyPair),
    san: rcgen::SanType,
    usage: rcgen::ExtendedKeyUsagePurpose,
) -> Issued {
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![san];
    params.extended_key_usages = vec![usage];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.0, &ca.1).unwrap();
    Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

/// An HTTPS client trusting only `ca_pem`, presenting `identity` if given.
/// Initialises a server with one key share and unseals it, through `c`
/// at `base`; the root token.
pub async fn init_and_unseal_at(c: &reqwest::Client, base: &str) -> String {
    let init: Value = c
        .put(format!("{base}/v1/sys/init"))
        .json(&json!({"secret_shares": 1, "secret_threshold": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    c.put(format!("{base}/v1/sys/unseal"))
        .json(&json!({"key": init["keys"][0]}))
        .send()
        .await
        .unwrap();
    init["root_token"].as_str().unwrap().to_owned()
}

pub fn https(ca_pem: &str, identity: Option<&Issued>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap());
    if let Some(id) = identity {
        b = b.identity(
            reqwest::Identity::from_pem(format!("{}{}", id.cert_pem, id.key_pem).as_bytes())
                .unwrap(),
        );
    }
    b.build().unwrap()
}
