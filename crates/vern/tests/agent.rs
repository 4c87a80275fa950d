//! The node agent through the real binary: nodes created with `vern client
//! create --node`, registration entries with `vern workload`, `vern agent`
//! serving the SPIFFE Workload API on a Unix socket, workloads attested by
//! their uid (children run under other uids), `vern svid fetch` writing
//! files, renewal pushed on the stream, the security header, and the
//! limits of a node and of a tenant administrator.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod common;

mod proto {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    include!(concat!(env!("OUT_DIR"), "/_.rs"));
}

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use proto::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use serde_json::{json, Value};

const API_ID: &str = "spiffe://vern.internal/t/acme/p/web/e/prod/s/api";
const WORKER_ID: &str = "spiffe://vern.internal/t/acme/p/web/e/prod/s/worker";
/// A uid with no entry anywhere.
const STRANGER: u32 = 1001;
/// A uid with an entry for the worker service.
const WORKER_UID: u32 = 1000;

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

fn my_uid() -> u32 {
    std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap())
}

fn as_root(s: &Server) -> Vec<(&'static str, String)> {
    vec![("VERN_ADDR", s.http()), ("VERN_TOKEN", "root".to_owned())]
}

fn run(args: &[&str], envs: &[(&'static str, String)]) -> std::process::Output {
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    vern(args, &envs)
}

/// Creates node `name` with the CLI; returns its id and writes its secret
/// to a file in `dir`.
fn create_node(s: &Server, dir: &Path, name: &str) -> (String, String) {
    let v = ok_json(&run(
        &["client", "create", "--node", name, "-o", "json"],
        &as_root(s),
    ));
    assert_eq!(v["kind"], "node");
    let id = v["client_id"].as_str().unwrap().to_owned();
    let secret = v["client_secret"].as_str().unwrap();
    let file = dir.join(format!("{name}.secret"));
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    (id, path_str(&file))
}

fn register(s: &Server, node: &str, selectors: &[&str], service: &str, ttl: Option<&str>) -> Value {
    let mut args = vec!["workload", "register", "--node", node, "--service", service];
    for sel in selectors {
        args.extend(["--selector", sel]);
    }
    if let Some(t) = ttl {
        args.extend(["--ttl", t]);
    }
    args.extend(["-o", "json"]);
    ok_json(&run(&args, &as_root(s)))
}

fn start_agent(s: &Server, socket: &Path, id: &str, secret_file: &str, extra: &[&str]) -> Server {
    let socket = path_str(socket);
    let addr = s.http();
    let mut args = vec![
        "--address",
        addr.as_str(),
        "--socket",
        socket.as_str(),
        "--client-id",
        id,
        "--client-secret-file",
        secret_file,
        "--refresh",
        "1s",
    ];
    args.extend(extra);
    Server::spawn("agent", &args, &[], "Agent is listening.").unwrap_or_else(|e| panic!("{e}"))
}

/// `vern svid fetch --write DIR`, as `uid` when given.
fn svid_fetch(socket: &Path, dir: &Path, uid: Option<u32>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vern"));
    cmd.args(["svid", "fetch", "--write", &path_str(dir)])
        .env(
            "SPIFFE_ENDPOINT_SOCKET",
            format!("unix://{}", path_str(socket)),
        )
        .stdin(Stdio::null());
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    cmd.output().unwrap()
}

/// The URI SAN of the first certificate of a PEM file.
fn spiffe_id_of_pem(path: &Path) -> String {
    let pem = std::fs::read(path).unwrap();
    let (_, block) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let cert = block.parse_x509().unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .find_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Some((*u).to_owned()),
            _ => None,
        })
        .unwrap()
}

fn not_after_of_der(chain: &[u8]) -> u64 {
    let (_, cert) = x509_parser::parse_x509_certificate(chain).unwrap();
    cert.validity().not_after.timestamp() as u64
}

async fn grpc(socket: &Path) -> SpiffeWorkloadApiClient<tonic::transport::Channel> {
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

#[tokio::test]
async fn workloads_get_the_svids_of_their_entries_and_nothing_else() {
    let dir = temp();
    let s = dev_server(&path_str(&dir.path().join("data")), &[]);
    let (n1, n1_secret) = create_node(&s, dir.path(), "n1");
    let (n2, _) = create_node(&s, dir.path(), "n2");
    assert_eq!(n1, "node.n1");
    let me = format!("unix:uid:{}", my_uid());
    let entry = register(&s, "n1", &[&me], "svc.acme.web.prod.api", None);
    assert_eq!(entry["node"], "node.n1");
    register(
        &s,
        "n1",
        &[&format!("unix:uid:{WORKER_UID}")],
        "svc.acme.web.prod.worker",
        Some("1h"),
    );
    register(&s, "node.n2", &[&me], "svc.globex.web.prod.db", None);

    // Bad selectors and services are refused, with nothing written.
    let bad = run(
        &[
            "workload",
            "register",
            "--node",
            "n1",
            "--selector",
            "unix:pid:1",
            "--service",
            "svc.acme.web.prod.api",
        ],
        &as_root(&s),
    );
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("unix:pid:1"),
        "{}",
        text(&bad.stderr)
    );
    let bad = run(
        &[
            "workload",
            "register",
            "--node",
            "n1",
            "--selector",
            &me,
            "--service",
            "op.acme",
        ],
        &as_root(&s),
    );
    assert!(!bad.status.success());
    let listed = ok_json(&run(
        &["workload", "list", "--node", "n1", "-o", "json"],
        &as_root(&s),
    ));
    assert_eq!(listed["entries"].as_array().unwrap().len(), 2);

    // Workloads under other uids must reach the socket in it.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.path().join("agent.sock");
    let agent = start_agent(&s, &socket, &n1, &n1_secret, &[]);

    // This process's uid gets the api service's SVID, written to files.
    let out_dir = dir.path().join("mine");
    let out = svid_fetch(&socket, &out_dir, None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(spiffe_id_of_pem(&out_dir.join("svid.pem")), API_ID);
    let key_mode = std::fs::metadata(out_dir.join("svid.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    let verify = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(out_dir.join("bundle.pem"))
        .arg("-untrusted")
        .arg(out_dir.join("svid.pem"))
        .arg(out_dir.join("svid.pem"))
        .output()
        .expect("the openssl tool is missing; ./scripts/test installs Debian's openssl");
    assert!(verify.status.success(), "{}", text(&verify.stdout));

    // Another uid with an entry gets its own SPIFFE ID; one without gets
    // PermissionDenied and no file.
    if is_root() {
        for (uid, expect) in [(WORKER_UID, Some(WORKER_ID)), (STRANGER, None)] {
            let d = dir.path().join(format!("uid{uid}"));
            std::fs::create_dir(&d).unwrap();
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
            let out = svid_fetch(&socket, &d, Some(uid));
            match expect {
                Some(id) => {
                    assert!(out.status.success(), "{}", text(&out.stderr));
                    assert_eq!(spiffe_id_of_pem(&d.join("svid.pem")), id);
                }
                None => {
                    assert!(!out.status.success());
                    assert!(
                        text(&out.stderr).contains("PermissionDenied"),
                        "{}",
                        text(&out.stderr)
                    );
                    assert!(!d.join("svid.pem").exists());
                }
            }
        }
    }

    // Without the security header every call is refused.
    let mut c = grpc(&socket).await;
    let err = c
        .fetch_x509svid(tonic::Request::new(proto::X509svidRequest {}))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = c
        .fetch_jwtsvid(tonic::Request::new(proto::JwtsvidRequest {
            audience: vec!["db".into()],
            spiffe_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // JWT-SVIDs: fetched for the audience, validated by the agent; another
    // audience or a forged token is refused.
    let jwt = c
        .fetch_jwtsvid(with_header(proto::JwtsvidRequest {
            audience: vec!["db".into()],
            spiffe_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(jwt.svids.len(), 1);
    assert_eq!(jwt.svids[0].spiffe_id, API_ID);
    let token = jwt.svids[0].svid.clone();
    let valid = c
        .validate_jwtsvid(with_header(proto::ValidateJwtsvidRequest {
            audience: "db".into(),
            svid: token.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(valid.spiffe_id, API_ID);
    assert!(valid.claims.unwrap().fields.contains_key("exp"));
    for (aud, svid) in [("other", token.clone()), ("db", format!("{token}x"))] {
        let err = c
            .validate_jwtsvid(with_header(proto::ValidateJwtsvidRequest {
                audience: aud.into(),
                svid,
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }
    let bundles = c
        .fetch_jwt_bundles(with_header(proto::JwtBundlesRequest {}))
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    let jwks: Value = serde_json::from_slice(&bundles.bundles["spiffe://vern.internal"]).unwrap();
    assert!(!jwks["keys"].as_array().unwrap().is_empty());
    let x509 = c
        .fetch_x509_bundles(with_header(proto::X509BundlesRequest {}))
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    assert!(!x509.bundles["spiffe://vern.internal"].is_empty());

    // The node itself: another node's service, DNS names, its own
    // credentials for anything else are all refused.
    let n1_token = access_token(&s, &n1, std::fs::read_to_string(&n1_secret).unwrap().trim()).await;
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let (status, _) = post_as(
        &s,
        &n1_token,
        "/v1/pki/svid",
        &json!({"csr": csr, "service": "svc.globex.web.prod.db"}),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = post_as(
        &s,
        &n1_token,
        "/v1/pki/svid",
        &json!({"csr": csr, "service": "svc.acme.web.prod.api", "dns_names": ["api.acme.test"]}),
    )
    .await;
    assert_eq!(status, 403);
    // Without a service, the node's own SVID, what the agent logs in with.
    let (status, v) = post_as(&s, &n1_token, "/v1/pki/svid", &json!({"csr": csr})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["data"]["spiffe_id"],
        "spiffe://vern.internal/vern/agent/n1"
    );
    let (status, v) = post_as(
        &s,
        &n1_token,
        "/v1/pki/svid",
        &json!({"csr": csr, "service": "svc.acme.web.prod.api"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["spiffe_id"], API_ID);
    let serial = v["data"]["serial"].as_str().unwrap().to_owned();
    let (status, _) = post_as(
        &s,
        &n1_token,
        "/v1/pki/workloads",
        &json!({"node": "n1", "selectors": ["unix:uid:0"], "service": "svc.globex.web.prod.db"}),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        write_secret(&s, &n1_token, "acme/web/prod/x", json!({"a": "b"})).await,
        403
    );
    let seen = get_as(&s, &n1_token, "/v1/pki/workloads").await;
    let services: Vec<&str> = seen["data"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["service"].as_str().unwrap())
        .collect();
    assert_eq!(services.len(), 2);
    assert!(
        services.iter().all(|s| s.starts_with("svc.acme.")),
        "{services:?}"
    );
    let (status, _) = status_and_json(
        client()
            .get(s.url("/v1/pki/workloads?node=n2"))
            .bearer_auth(&n1_token),
    )
    .await;
    assert_eq!(status, 403);
    let _ = n2;

    // The issuance is on record with the node, the service and the serial.
    let records = audit_records(&s).await;
    let issued = records
        .iter()
        .find(|r| r.to_string().contains(&serial))
        .expect("an audit record of the node's issuance");
    let text_of = issued.to_string();
    assert!(text_of.contains("node.n1"), "{text_of}");
    assert!(text_of.contains(API_ID), "{text_of}");
    drop(agent);
}

#[tokio::test]
async fn tenant_admins_register_entries_only_for_their_own_services() {
    let dir = temp();
    let s = dev_server(&path_str(&dir.path().join("data")), &[]);
    create_node(&s, dir.path(), "n1");
    let admin = client_token(
        &s,
        json!({"tenant": "acme", "name": "admin", "roles": ["tenant-admin"]}),
    )
    .await;
    let body = |service: &str| json!({"node": "n1", "selectors": ["unix:uid:1000"], "service": service, "ttl": "10m"});
    let (status, own) = post_as(
        &s,
        &admin,
        "/v1/pki/workloads",
        &body("svc.acme.web.prod.api"),
    )
    .await;
    assert_eq!(status, 200, "{own}");
    assert_eq!(own["data"]["ttl"], 600);
    let (status, _) = post_as(
        &s,
        &admin,
        "/v1/pki/workloads",
        &body("svc.globex.web.prod.api"),
    )
    .await;
    assert_eq!(status, 403);
    // The same entry twice is a conflict.
    let (status, _) = post_as(
        &s,
        &admin,
        "/v1/pki/workloads",
        &body("svc.acme.web.prod.api"),
    )
    .await;
    assert_eq!(status, 409);
    let (_, theirs) = post_as(
        &s,
        "root",
        "/v1/pki/workloads",
        &body("svc.globex.web.prod.api"),
    )
    .await;
    let theirs_id = theirs["data"]["id"].as_str().unwrap().to_owned();
    // The admin sees and deletes only its own tenant's entries.
    let seen = get_as(&s, &admin, "/v1/pki/workloads").await;
    assert_eq!(seen["data"]["entries"].as_array().unwrap().len(), 1);
    let delete = |id: String| {
        let s = &s;
        let admin = admin.clone();
        async move {
            status_of(
                client()
                    .delete(s.url(&format!("/v1/pki/workloads/{id}")))
                    .bearer_auth(admin),
            )
            .await
        }
    };
    assert_eq!(delete(theirs_id).await, 404);
    assert_eq!(
        delete(own["data"]["id"].as_str().unwrap().to_owned()).await,
        204
    );
    // A service of the tenant may not register entries at all.
    let svc = client_token(&s, service("acme", "api", &["secrets:read"])).await;
    let (status, _) = post_as(
        &s,
        &svc,
        "/v1/pki/workloads",
        &body("svc.acme.web.prod.api"),
    )
    .await;
    assert_eq!(status, 403);
    // Malformed bodies are refused before anything is written.
    for bad in [
        json!({"node": "n1", "selectors": [], "service": "svc.acme.web.prod.api"}),
        json!({"node": "n/1", "selectors": ["unix:uid:1"], "service": "svc.acme.web.prod.api"}),
        json!({"node": "n1", "selectors": ["unix:sha256:xyz"], "service": "svc.acme.web.prod.api"}),
        json!({"node": "n1", "selectors": ["unix:uid:1"], "service": "svc.acme.web.prod.api", "extra": 1}),
    ] {
        let (status, _) = post_as(&s, "root", "/v1/pki/workloads", &bad).await;
        assert_eq!(status, 400, "{bad}");
    }
    let all = get_as(&s, "root", "/v1/pki/workloads").await;
    assert_eq!(all["data"]["entries"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn renewed_svids_are_pushed_before_the_first_expires() {
    let dir = temp();
    let s = dev_server(&path_str(&dir.path().join("data")), &[]);
    let (n1, secret) = create_node(&s, dir.path(), "n1");
    register(
        &s,
        "n1",
        &[&format!("unix:uid:{}", my_uid())],
        "svc.acme.web.prod.api",
        Some("6s"),
    );
    let socket = dir.path().join("agent.sock");
    let _agent = start_agent(&s, &socket, &n1, &secret, &[]);

    // `vern svid fetch --watch` rewrites the files on renewal.
    let watch_dir = dir.path().join("watched");
    let mut watcher = Command::new(env!("CARGO_BIN_EXE_vern"))
        .args([
            "svid",
            "fetch",
            "--watch",
            "--socket",
            &path_str(&socket),
            "--write",
            &path_str(&watch_dir),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let mut c = grpc(&socket).await;
    let mut stream = c
        .fetch_x509svid(with_header(proto::X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let first_cert = first.svids[0].x509_svid.clone();
    let expires = not_after_of_der(&first_cert);
    let second = tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("no renewed SVID on the stream")
        .unwrap()
        .unwrap();
    let now = common::unix_now();
    assert!(
        now < expires,
        "the renewal came after the first SVID expired"
    );
    assert_ne!(second.svids[0].x509_svid, first_cert);
    assert_eq!(second.svids[0].spiffe_id, API_ID);
    assert!(not_after_of_der(&second.svids[0].x509_svid) > expires);

    let pem = watch_dir.join("svid.pem");
    eventually(Duration::from_secs(10), "the first SVID file", async || {
        pem.exists()
    })
    .await;
    let before = std::fs::read(&pem).unwrap();
    eventually(
        Duration::from_secs(20),
        "a rewritten SVID file",
        async || {
            std::fs::read(&pem)
                .map(|now| now != before)
                .unwrap_or(false)
        },
    )
    .await;
    watcher.kill().unwrap();
    watcher.wait().unwrap();

    // A CA rotation publishes a second root: the bundle streams push it.
    let mut bundles = c
        .fetch_x509_bundles(with_header(proto::X509BundlesRequest {}))
        .await
        .unwrap()
        .into_inner();
    let before =
        bundles.message().await.unwrap().unwrap().bundles["spiffe://vern.internal"].clone();
    let (status, _) = post_as(&s, "root", "/v1/pki/rotate", &json!({"signs_after": "1h"})).await;
    assert_eq!(status, 200);
    let after = tokio::time::timeout(Duration::from_secs(20), bundles.message())
        .await
        .expect("no new bundle on the stream")
        .unwrap()
        .unwrap();
    let after = after.bundles["spiffe://vern.internal"].clone();
    assert!(after.len() > before.len());
    assert!(after.windows(before.len()).any(|w| w == before.as_slice()));
}

#[tokio::test]
async fn apply_declares_nodes_and_entries_all_or_nothing() {
    let dir = temp();
    let s = dev_server(&path_str(&dir.path().join("data")), &[]);
    let env = as_root(&s);
    let file = dir.path().join("platform.yaml");
    let write = |text: &str| std::fs::write(&file, text).unwrap();
    let f = path_str(&file);
    write(
        "clients:\n  - name: n1\n    node: true\nworkloads:\n  - node: n1\n    selectors: [\"unix:uid:1000\", \"unix:path:/usr/bin/api\"]\n    service: svc.acme.web.prod.api\n    ttl: 30m\n",
    );
    let plan = ok_json(&run(&["apply", "-f", &f, "--dry-run", "-o", "json"], &env));
    assert_eq!(plan["workloads"]["create"].as_array().unwrap().len(), 1);
    assert!(
        get_as(&s, "root", "/v1/pki/workloads").await["data"]["entries"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let out = run(&["apply", "-f", &f], &env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(
            "+ workload unix:uid:1000 unix:path:/usr/bin/api on node.n1 for svc.acme.web.prod.api"
        ),
        "{}",
        text(&out.stdout)
    );
    let entries = get_as(&s, "root", "/v1/pki/workloads").await;
    assert_eq!(entries["data"]["entries"][0]["ttl"], 1800);
    // Applying again changes nothing.
    let again = ok_json(&run(&["apply", "-f", &f, "-o", "json"], &env));
    assert_eq!(again["workloads"]["unchanged"].as_array().unwrap().len(), 1);
    assert!(again["workloads"]["create"].as_array().unwrap().is_empty());

    // A bad entry refuses the whole file: the new client is not created.
    write(
        "clients:\n  - name: n1\n    node: true\n  - name: n2\n    node: true\nworkloads:\n  - node: n2\n    selectors: [\"unix:uid:x\"]\n    service: svc.acme.web.prod.api\n",
    );
    let out = run(&["apply", "-f", &f], &env);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("workloads[0]"),
        "{}",
        text(&out.stderr)
    );
    let (status, _) = status_and_json(
        client()
            .get(s.url("/v1/auth/clients/node.n2"))
            .header("X-Vault-Token", "root"),
    )
    .await;
    assert_eq!(status, 404);

    // A tenant administrator may declare entries of its own services only,
    // and its pruning leaves other tenants' entries alone.
    let (_, globex) = post_as(
        &s,
        "root",
        "/v1/pki/workloads",
        &json!({"node": "n1", "selectors": ["unix:uid:7"], "service": "svc.globex.web.prod.db"}),
    )
    .await;
    assert!(globex["data"]["id"].is_string());
    let admin = client_token(
        &s,
        json!({"tenant": "acme", "name": "admin", "roles": ["tenant-admin"]}),
    )
    .await;
    let admin_env = vec![("VERN_ADDR", s.http()), ("VERN_TOKEN", admin)];
    write("workloads:\n  - node: n1\n    selectors: [\"unix:uid:1\"]\n    service: svc.globex.web.prod.db\n");
    let out = run(&["apply", "-f", &f], &admin_env);
    assert!(!out.status.success());
    write("workloads:\n  - node: n1\n    selectors: [\"unix:uid:2\"]\n    service: svc.acme.web.prod.worker\n");
    let plan = ok_json(&run(
        &["apply", "-f", &f, "--prune", "-o", "json"],
        &admin_env,
    ));
    assert_eq!(plan["workloads"]["create"].as_array().unwrap().len(), 1);
    let deleted: Vec<&str> = plan["workloads"]["delete"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["service"].as_str().unwrap())
        .collect();
    assert_eq!(deleted, ["svc.acme.web.prod.api"]);
    let left: Vec<String> = get_as(&s, "root", "/v1/pki/workloads").await["data"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["service"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(left.len(), 2);
    assert!(left.contains(&"svc.globex.web.prod.db".to_owned()));
    assert!(left.contains(&"svc.acme.web.prod.worker".to_owned()));
}

/// An HTTPS client trusting only `ca_pem`, presenting `identity` (a
/// certificate chain and its key, PEM) if given.
fn https_with(ca_pem: &str, identity: Option<(&str, &str)>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false);
    for cert in reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes()).unwrap() {
        b = b.add_root_certificate(cert);
    }
    if let Some((chain, key)) = identity {
        b = b.identity(reqwest::Identity::from_pem(format!("{chain}{key}").as_bytes()).unwrap());
    }
    b.build().unwrap()
}

/// `client_id`'s token request by `tls_client_auth` over `client`: status.
async fn mtls_token(client: &reqwest::Client, base: &str, client_id: &str) -> u16 {
    client
        .post(format!("{base}/oauth2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
        ])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// An X.509-SVID of the caller of `token` (of itself: no service named),
/// as its chain and key, PEM.
async fn own_svid(vern: &reqwest::Client, base: &str, token: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let svid = json_of(
        vern.post(format!("{base}/v1/pki/svid"))
            .bearer_auth(token)
            .json(&json!({"csr": csr})),
    )
    .await;
    let chain = format!(
        "{}{}",
        svid["data"]["certificate"].as_str().unwrap(),
        svid["data"]["chain"][0].as_str().unwrap()
    );
    (chain, key.serialize_pem())
}

/// A token of `id` by its secret.
async fn secret_token(vern: &reqwest::Client, base: &str, id: &str, secret: &str) -> String {
    json_of(
        vern.post(format!("{base}/oauth2/token"))
            .basic_auth(id, Some(secret))
            .form(&[("grant_type", "client_credentials")]),
    )
    .await["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token for {id}"))
        .to_owned()
}

/// Against a TLS listener with certificates from Vern's CA, the agent logs
/// in with its secret once, obtains its own SVID
/// (`spiffe://<td>/vern/agent/<name>`), then gets its tokens by
/// `tls_client_auth` with it, renewing it at half-life; the audit records
/// name the method. A node's certificate login takes only its own SVID
/// from Vern's CA: not another node's, not a service's, not a certificate
/// with its SPIFFE ID from another CA the listener trusts.
#[tokio::test]
async fn the_agent_logs_in_with_its_own_svid() {
    let dir = temp();
    let (boot_pem, boot_cert, boot_key) = self_signed_tls(dir.path());
    let other_ca = ca();
    let other_ca_file = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca_file, other_ca.0.pem()).unwrap();
    let data = path_str(&dir.path().join("data"));
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
            "--tls-client-ca",
            &path_str(&other_ca_file),
            "--svid-ttl",
            "8s",
            "--data-dir",
            &data,
        ],
        &[],
    );
    let port = s.addr.rsplit(':').next().unwrap().to_owned();
    let base = format!("https://localhost:{port}");
    let boot = https_with(&boot_pem, None);
    let root = init_and_unseal_at(&boot, &base).await;
    let vern_ca = boot
        .get(format!("{base}/v1/pki/ca.pem"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let vern = https_with(&vern_ca, None);
    eventually(
        Duration::from_secs(20),
        "a listener certificate from the CA",
        async || {
            vern.get(format!("{base}/v1/sys/health"))
                .send()
                .await
                .is_ok()
        },
    )
    .await;
    let ca_file = dir.path().join("vern-ca.pem");
    std::fs::write(&ca_file, &vern_ca).unwrap();
    let cli_env = vec![
        ("VERN_ADDR", base.clone()),
        ("VERN_TOKEN", root.clone()),
        ("VERN_CACERT", path_str(&ca_file)),
    ];
    let mut secrets = Vec::new();
    for name in ["n1", "n2"] {
        let v = ok_json(&run(
            &["client", "create", "--node", name, "-o", "json"],
            &cli_env,
        ));
        let secret = v["client_secret"].as_str().unwrap().to_owned();
        let file = dir.path().join(format!("{name}.secret"));
        std::fs::write(&file, format!("{secret}\n")).unwrap();
        secrets.push((secret, path_str(&file)));
    }

    let socket = dir.path().join("agent.sock");
    let socket_arg = path_str(&socket);
    let agent = Server::spawn(
        "agent",
        &[
            "--address",
            &base,
            "--ca-cert",
            &path_str(&ca_file),
            "--socket",
            &socket_arg,
            "--client-id",
            "node.n1",
            "--client-secret-file",
            &secrets[0].1,
            "--refresh",
            "1s",
        ],
        &[],
        "Agent is listening.",
    )
    .unwrap_or_else(|e| panic!("{e}"));

    let audit = async || {
        json_of(
            vern.get(format!("{base}/v1/audit/records?limit=1000"))
                .header("x-vault-token", &root),
        )
        .await["data"]["records"]
            .as_array()
            .unwrap()
            .clone()
    };
    let own_id = "spiffe://vern.internal/vern/agent/n1";
    // The own SVID lives 8 s and is renewed at 4 s: two issued, and tokens
    // by certificate after each.
    let start = std::time::Instant::now();
    loop {
        {
            let records = audit().await;
            let issued = records
                .iter()
                .filter(|r| {
                    r["event"]["action"] == "svid.issue"
                        && r["event"]["status"] == 200
                        && r["event"]["details"]["spiffe_id"] == own_id
                })
                .count();
            let by_certificate = records
                .iter()
                .filter(|r| {
                    r["event"]["action"] == "token.issue"
                        && r["event"]["status"] == 200
                        && r["event"]["resource"] == "client:node.n1"
                        && r["event"]["details"]["auth_method"] == "tls_client_auth"
                })
                .count();
            if issued >= 2 && by_certificate >= 2 {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no renewed node SVID and certificate logins ({issued} issued, {by_certificate} by certificate); agent: {}",
                agent.stderr_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let records = audit().await;
    let node_logins: Vec<&Value> = records
        .iter()
        .filter(|r| {
            r["event"]["action"] == "token.issue"
                && r["event"]["status"] == 200
                && r["event"]["resource"] == "client:node.n1"
        })
        .collect();
    // The secret served once, for the bootstrap; every later login used the SVID.
    assert_eq!(
        node_logins
            .iter()
            .filter(|r| r["event"]["details"]["auth_method"] == "client_secret_post")
            .count(),
        1,
        "{node_logins:?}"
    );
    assert_eq!(
        node_logins[0]["event"]["details"]["auth_method"],
        "client_secret_post"
    );

    // Node n2's own SVID does not log in as n1 (it does as n2).
    let n2_token = secret_token(&vern, &base, "node.n2", &secrets[1].0).await;
    let (n2_chain, n2_key) = own_svid(&vern, &base, &n2_token).await;
    let as_n2 = https_with(&vern_ca, Some((&n2_chain, &n2_key)));
    assert_eq!(mtls_token(&as_n2, &base, "node.n1").await, 401);
    assert_eq!(mtls_token(&as_n2, &base, "node.n2").await, 200);

    // A service's SVID does not log in as a node.
    let (svc_id, svc_secret) = {
        let created = json_of(
            vern.post(format!("{base}/v1/auth/clients"))
                .header("x-vault-token", &root)
                .json(&service("acme", "api", &["secrets:read"])),
        )
        .await;
        (
            created["data"]["client_id"].as_str().unwrap().to_owned(),
            created["data"]["client_secret"]
                .as_str()
                .unwrap()
                .to_owned(),
        )
    };
    let svc_token = secret_token(&vern, &base, &svc_id, &svc_secret).await;
    let (svc_chain, svc_key) = own_svid(&vern, &base, &svc_token).await;
    let as_service = https_with(&vern_ca, Some((&svc_chain, &svc_key)));
    assert_eq!(mtls_token(&as_service, &base, "node.n1").await, 401);
    // A service keeps one method: its SVID is no login for it either.
    assert_eq!(mtls_token(&as_service, &base, &svc_id).await, 401);

    // A certificate naming n1's SPIFFE ID from the other CA the listener
    // trusts passes the handshake but is no SVID of Vern's: refused.
    let forged = issue(
        &other_ca,
        rcgen::SanType::URI(own_id.try_into().unwrap()),
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    );
    let as_forged = https_with(
        &vern_ca,
        Some((
            &format!("{}{}", forged.cert_pem, other_ca.0.pem()),
            &forged.key_pem,
        )),
    );
    assert_eq!(mtls_token(&as_forged, &base, "node.n1").await, 401);
    let refused = audit()
        .await
        .into_iter()
        .filter(|r| {
            r["event"]["action"] == "token.issue"
                && r["event"]["status"] == 401
                && r["event"]["resource"] == "client:node.n1"
        })
        .count();
    assert_eq!(refused, 3);
}

/// Deleting a node deletes its registration entries with it (one
/// transaction): a node created again under the same name has none, and
/// other nodes keep theirs.
#[tokio::test]
async fn deleting_a_node_deletes_its_entries() {
    let dir = temp();
    let s = dev_server(&path_str(&dir.path().join("data")), &[]);
    create_node(&s, dir.path(), "n1");
    create_node(&s, dir.path(), "n2");
    let me = format!("unix:uid:{}", my_uid());
    register(&s, "n1", &[&me], "svc.acme.web.prod.api", None);
    register(&s, "n1", &[&me], "svc.acme.web.prod.worker", None);
    register(&s, "n2", &[&me], "svc.acme.web.prod.api", None);
    let count = async |node: &str| {
        get_as(&s, "root", "/v1/pki/workloads").await["data"]["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["node"] == node)
            .count()
    };
    assert_eq!(count("node.n1").await, 2);
    let deleted = run(&["client", "delete", "node.n1"], &as_root(&s));
    assert!(deleted.status.success(), "{}", text(&deleted.stderr));
    assert_eq!(count("node.n1").await, 0);
    assert_eq!(count("node.n2").await, 1);
    // The same name again: a new node with nothing of the old one's.
    create_node(&s, dir.path(), "n1");
    assert_eq!(count("node.n1").await, 0);
    let listed = ok_json(&run(
        &["workload", "list", "--node", "n1", "-o", "json"],
        &as_root(&s),
    ));
    assert_eq!(listed["entries"].as_array().unwrap().len(), 0);

    // A node pruned by `vern apply --prune` from a file without a
    // `workloads:` section takes its entries along too.
    register(&s, "n1", &[&me], "svc.acme.web.prod.api", None);
    assert_eq!(count("node.n1").await, 1);
    let file = dir.path().join("nodes.yaml");
    std::fs::write(&file, "clients:\n  - name: n2\n    node: true\n").unwrap();
    let pruned = run(&["apply", "-f", &path_str(&file), "--prune"], &as_root(&s));
    assert!(pruned.status.success(), "{}", text(&pruned.stderr));
    assert_eq!(count("node.n1").await, 0);
    assert_eq!(count("node.n2").await, 1);
}
