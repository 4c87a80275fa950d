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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    let (status, _) = post_as(&s, &n1_token, "/v1/pki/svid", &json!({"csr": csr})).await;
    assert_eq!(status, 400);
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
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
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
