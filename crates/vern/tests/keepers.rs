//! Keepers end to end: three `vern keeper` processes hold the shares, the
//! server unseals itself from them after restarts, a keeper that restarted
//! empty is resupplied, and nobody but the configured server identity gets
//! a share.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType};
use serde_json::json;

const SERVER_ID: &str = "vern-server.test";

struct Pki {
    ca: rcgen::Certificate,
    ca_key: KeyPair,
    dir: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Vern test CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
        Self {
            ca,
            ca_key,
            dir: dir.to_owned(),
        }
    }

    fn ca_path(&self) -> String {
        path_str(&self.dir.join("ca.crt"))
    }

    /// Issues a certificate; returns the paths of its PEM cert and key.
    fn issue(
        &self,
        name: &str,
        sans: Vec<SanType>,
        usage: ExtendedKeyUsagePurpose,
    ) -> (String, String) {
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let (c, k) = (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (path_str(&c), path_str(&k))
    }
}

fn dns(name: &str) -> SanType {
    SanType::DnsName(name.try_into().unwrap())
}

fn start_keeper(pki: &Pki, cert: &(String, String), listen: &str) -> Server {
    Server::keeper(&[
        "--listen",
        listen,
        "--tls-cert",
        &cert.0,
        "--tls-key",
        &cert.1,
        "--client-ca",
        &pki.ca_path(),
        "--server-identity",
        SERVER_ID,
    ])
}

fn restored(server: &Server) -> usize {
    server
        .stderr_text()
        .matches("Keeper share restored.")
        .count()
}

async fn health(server: &Server) -> u16 {
    client()
        .get(server.url("/v1/sys/health"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// A raw TLS client to a keeper, with an optional client certificate.
fn keeper_client(pki: &Pki, identity: Option<&(String, String)>) -> reqwest::Client {
    let ca = pki.dir.join("ca.crt");
    let id = identity.map(|(c, k)| (PathBuf::from(c), PathBuf::from(k)));
    let tls =
        vern_pki::client_config(&ca, id.as_ref().map(|(c, k)| (c.as_path(), k.as_path()))).unwrap();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepers_unseal_restarted_servers_and_get_their_shares_back() {
    let dir = temp();
    let pki = Pki::new(dir.path());
    let keeper_cert = pki.issue(
        "keeper",
        vec![SanType::IpAddress("127.0.0.1".parse().unwrap())],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let server_cert = pki.issue(
        "server",
        vec![dns(SERVER_ID)],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let impostor = pki.issue(
        "impostor",
        vec![dns("impostor.test")],
        ExtendedKeyUsagePurpose::ClientAuth,
    );

    let mut keepers: Vec<Server> = (0..3)
        .map(|_| start_keeper(&pki, &keeper_cert, "127.0.0.1:0"))
        .collect();
    let urls: Vec<String> = keepers
        .iter()
        .map(|k| format!("https://{}", k.addr))
        .collect();
    let data = path_str(&dir.path().join("data"));
    let mut args: Vec<String> = [
        "--listen",
        "127.0.0.1:0",
        "--insecure-listen",
        "--data-dir",
        &data,
        "--keeper-ca",
        &pki.ca_path(),
        "--keeper-client-cert",
        &server_cert.0,
        "--keeper-client-key",
        &server_cert.1,
        "--keeper-sync-interval",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for u in &urls {
        args.extend(["--keeper".to_owned(), u.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let server = Server::start(&args, &[]);
    assert_eq!(health(&server).await, 501);
    // Five shares, threshold three, three keepers: every keeper is needed.
    let init = client()
        .put(server.url("/v1/sys/init"))
        .json(&json!({"secret_shares": 5, "secret_threshold": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(init.status(), 200);
    let init: serde_json::Value = init.json().await.unwrap();
    let root = init["root_token"].as_str().unwrap().to_owned();
    assert_eq!(
        health(&server).await,
        200,
        "with keepers, init leaves Vern unsealed"
    );
    eventually(
        Duration::from_secs(20),
        "three keepers supplied",
        async || restored(&server) >= 3,
    )
    .await;

    // Only the configured server identity gets a share.
    let share_url = format!("{}/v1/keeper/share", urls[0]);
    let ok = keeper_client(&pki, Some(&server_cert))
        .get(&share_url)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let held: serde_json::Value = ok.json().await.unwrap();
    let held = held["share"].as_str().unwrap().to_owned();
    assert_eq!(
        held,
        init["keys"][0].as_str().unwrap(),
        "keeper 1 holds share 1"
    );
    assert!(
        keeper_client(&pki, Some(&impostor))
            .get(&share_url)
            .send()
            .await
            .is_err(),
        "wrong identity refused"
    );
    assert!(
        keeper_client(&pki, None)
            .get(&share_url)
            .send()
            .await
            .is_err(),
        "no client certificate refused"
    );

    // A restarted server unseals itself.
    assert!(server.terminate().success());
    let server = Server::start(&args, &[]);
    eventually(
        Duration::from_secs(20),
        "auto-unseal after restart",
        async || health(&server).await == 200,
    )
    .await;

    // Keeper 2 restarts empty on the same address; the server resupplies it.
    let addr = keepers[1].addr.clone();
    keepers.remove(1).kill();
    keepers.insert(1, start_keeper(&pki, &keeper_cert, &addr));
    let before = restored(&server);
    eventually(
        Duration::from_secs(20),
        "the restarted keeper resupplied",
        async || restored(&server) > before,
    )
    .await;

    // With all three keepers needed, this restart proves the resupply.
    assert!(server.terminate().success());
    let server = Server::start(&args, &[]);
    eventually(
        Duration::from_secs(20),
        "auto-unseal with the resupplied keeper",
        async || health(&server).await == 200,
    )
    .await;

    // An operator's seal holds: keepers do not unseal a running server.
    let sealed = client()
        .put(server.url("/v1/sys/seal"))
        .header("x-vault-token", &root)
        .send()
        .await
        .unwrap();
    assert_eq!(sealed.status(), 204);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(health(&server).await, 503);

    for k in &keepers {
        assert!(
            !k.stderr_text().contains(&held),
            "a keeper logged its share"
        );
    }
    assert!(
        !server.stderr_text().contains(&held),
        "the server logged a share"
    );
}

const SERVER_SPIFFE_ID: &str = "spiffe://vern.internal/vern/server";

fn start_keeper_with_state(
    pki: &Pki,
    cert: &(String, String),
    listen: &str,
    state_dir: Option<&Path>,
) -> Server {
    let pins = format!("{SERVER_ID},{SERVER_SPIFFE_ID}");
    let mut args = vec![
        "--listen".to_owned(),
        listen.to_owned(),
        "--tls-cert".to_owned(),
        cert.0.clone(),
        "--tls-key".to_owned(),
        cert.1.clone(),
        "--client-ca".to_owned(),
        pki.ca_path(),
        "--server-identity".to_owned(),
        pins,
    ];
    if let Some(d) = state_dir {
        args.extend(["--state-dir".to_owned(), path_str(d)]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::keeper(&args)
}

/// A TLS client that trusts only the CA roots in `anchors` and presents
/// `identity` (certificate and key files).
fn ca_client(anchors: &Path, identity: &(String, String)) -> reqwest::Client {
    let tls = vern_pki::client_config(
        anchors,
        Some((Path::new(&identity.0), Path::new(&identity.1))),
    )
    .unwrap();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .tls_info(true)
        .build()
        .unwrap()
}

/// The URI SANs of the certificate the keeper at `url` presents to a
/// client trusting only `anchors`; `None` when the handshake fails.
async fn served_ids(url: &str, anchors: &Path, identity: &(String, String)) -> Option<Vec<String>> {
    let resp = ca_client(anchors, identity)
        .get(format!("{url}/v1/keeper/health"))
        .send()
        .await
        .ok()?;
    let der = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()?
        .peer_certificate()?
        .to_vec();
    Some(uris_of(&der))
}

fn uris_of(der: &[u8]) -> Vec<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Some((*u).to_owned()),
            _ => None,
        })
        .collect()
}

fn pem_uris(path: &Path) -> Vec<String> {
    let pem = std::fs::read(path).unwrap();
    let (_, block) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    uris_of(&block.contents)
}

/// The notAfter (Unix seconds) of the first certificate in a PEM file.
fn pem_not_after(path: &Path) -> u64 {
    let pem = std::fs::read(path).unwrap();
    let (_, block) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&block.contents).unwrap();
    u64::try_from(cert.validity().not_after.timestamp()).unwrap()
}

fn renewed(server: &Server) -> usize {
    server
        .stderr_text()
        .matches("Keeper certificate renewed from Vern's CA.")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepers_take_their_certificates_from_verns_ca() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = temp();
    let pki = Pki::new(dir.path());
    let keeper_cert = pki.issue(
        "keeper",
        vec![SanType::IpAddress("127.0.0.1".parse().unwrap())],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    // The bootstrap certificate carries both names the keepers pin.
    let server_cert = pki.issue(
        "server",
        vec![
            dns(SERVER_ID),
            SanType::URI(SERVER_SPIFFE_ID.try_into().unwrap()),
        ],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let states: Vec<PathBuf> = (0..2)
        .map(|i| dir.path().join(format!("keeper{i}")))
        .collect();
    // Keepers 1 and 2 keep state; keeper 3 does not.
    let mut keepers: Vec<Server> = (0..3)
        .map(|i| {
            start_keeper_with_state(
                &pki,
                &keeper_cert,
                "127.0.0.1:0",
                states.get(i).map(PathBuf::as_path),
            )
        })
        .collect();
    let urls: Vec<String> = keepers
        .iter()
        .map(|k| format!("https://{}", k.addr))
        .collect();
    let data = dir.path().join("data");
    let mut args: Vec<String> = [
        "--listen",
        "127.0.0.1:0",
        "--insecure-listen",
        "--data-dir",
        &path_str(&data),
        "--keeper-ca",
        &pki.ca_path(),
        "--keeper-client-cert",
        &server_cert.0,
        "--keeper-client-key",
        &server_cert.1,
        "--keeper-sync-interval",
        "1",
        "--keeper-certs-from-ca",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for u in &urls {
        args.extend(["--keeper".to_owned(), u.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let server = Server::start(&args, &[]);
    let init = client()
        .put(server.url("/v1/sys/init"))
        .json(&json!({"secret_shares": 3, "secret_threshold": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(init.status(), 200);
    let init: serde_json::Value = init.json().await.unwrap();
    let root = init["root_token"].as_str().unwrap().to_owned();
    let kept = data.join("keeper-tls");
    eventually(
        Duration::from_secs(30),
        "the server's identity and three keepers' certificates from Vern's CA",
        async || kept.join("identity.pem").exists() && renewed(&server) >= 3,
    )
    .await;

    // The server's own keeper-client identity is an SVID from its CA, kept
    // beside the anchors, its key readable by the owner only.
    let own = (
        path_str(&kept.join("identity.pem")),
        path_str(&kept.join("identity.key")),
    );
    let anchors = kept.join("anchors.pem");
    assert_eq!(pem_uris(Path::new(&own.0)), [SERVER_SPIFFE_ID]);
    let mode = std::fs::metadata(&own.1).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let ca_pem = client()
        .get(server.url("/v1/pki/ca.pem"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(std::fs::read_to_string(&anchors)
        .unwrap()
        .contains(ca_pem.trim()));

    // Every keeper serves a certificate that chains to Vern's CA (a client
    // trusting nothing else completes the handshake) and names its own
    // keeper ID; the server's CA-issued identity gets the share.
    for (i, url) in urls.iter().enumerate() {
        let ids = served_ids(url, &anchors, &own).await;
        assert_eq!(
            ids,
            Some(vec![format!(
                "spiffe://vern.internal/vern/keeper/{}",
                i + 1
            )]),
            "keeper {i}"
        );
    }
    let share = ca_client(&anchors, &own)
        .get(format!("{}/v1/keeper/share", urls[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(share.status(), 200);
    let held = share.json::<serde_json::Value>().await.unwrap()["share"]
        .as_str()
        .unwrap()
        .to_owned();

    // The certificate route refuses bad input and changes nothing.
    let own_client = ca_client(&anchors, &own);
    let cert_url = format!("{}/v1/keeper/certificate", urls[0]);
    let own_pem = std::fs::read_to_string(&own.0).unwrap();
    let anchors_pem = std::fs::read_to_string(&anchors).unwrap();
    let put = async |certificate: &str, server_identity: &str| {
        own_client
            .put(&cert_url)
            .json(&json!({
                "certificate": certificate,
                "anchors": anchors_pem,
                "server_identity": server_identity,
            }))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(
        put(&own_pem, "spiffe://vern.internal/t/acme/p/web/e/prod/s/api").await,
        409,
        "an identity the keeper does not pin"
    );
    assert_eq!(put("junk", SERVER_SPIFFE_ID).await, 400);
    assert_eq!(put(&own_pem, SERVER_SPIFFE_ID).await, 409, "no CSR pending");
    let csr_url = format!("{}/v1/keeper/csr", urls[0]);
    let unpinned = own_client
        .post(&csr_url)
        .json(&json!({"server_identity": "spiffe://vern.internal/t/acme/p/web/e/prod/s/api"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        unpinned.status(),
        409,
        "a CSR for an identity the keeper does not pin"
    );
    let csr = own_client
        .post(&csr_url)
        .json(&json!({"server_identity": SERVER_SPIFFE_ID}))
        .send()
        .await
        .unwrap();
    assert_eq!(csr.status(), 200);
    let csr: serde_json::Value = csr.json().await.unwrap();
    assert!(csr["csr"].as_str().unwrap().contains("CERTIFICATE REQUEST"));
    assert_eq!(
        put(&own_pem, SERVER_SPIFFE_ID).await,
        400,
        "not for the keeper's key"
    );
    let unknown = own_client
        .put(&cert_url)
        .json(&json!({"certificate": own_pem, "anchors": anchors_pem, "server_identity": SERVER_SPIFFE_ID, "key": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16() / 100, 4, "unknown fields refused");
    assert_eq!(
        served_ids(&urls[0], &anchors, &own).await,
        Some(vec!["spiffe://vern.internal/vern/keeper/1".to_owned()]),
        "the keeper still presents its certificate"
    );

    // Certificates from the same CA with other SPIFFE IDs get nothing: a
    // service's SVID, and a keeper's own key (as an attacker holding an
    // old keeper key would present it).
    let (_, created) = post_as(
        &server,
        &root,
        "/v1/auth/clients",
        &service("acme", "api", &[]),
    )
    .await;
    let api = access_token(
        &server,
        created["data"]["client_id"].as_str().unwrap(),
        created["data"]["client_secret"].as_str().unwrap(),
    )
    .await;
    let service_key = KeyPair::generate().unwrap();
    let mut csr = CertificateParams::default();
    csr.subject_alt_names = vec![SanType::URI(
        "spiffe://vern.internal/t/acme/p/web/e/prod/s/api"
            .try_into()
            .unwrap(),
    )];
    let csr = csr.serialize_request(&service_key).unwrap().pem().unwrap();
    let (status, svid) = post_as(&server, &api, "/v1/pki/svid", &json!({ "csr": csr })).await;
    assert_eq!(status, 200, "{svid}");
    let service_cert = (
        path_str(&dir.path().join("svc.crt")),
        path_str(&dir.path().join("svc.key")),
    );
    std::fs::write(
        &service_cert.0,
        svid["data"]["certificate"].as_str().unwrap(),
    )
    .unwrap();
    std::fs::write(&service_cert.1, service_key.serialize_pem()).unwrap();
    let keeper_key = (
        path_str(&states[1].join("identity.pem")),
        path_str(&states[1].join("identity.key")),
    );
    for (who, identity) in [
        ("a service SVID", &service_cert),
        ("a keeper's key", &keeper_key),
    ] {
        for path in ["/v1/keeper/share", "/v1/keeper/csr"] {
            let url = format!("{}{path}", urls[0]);
            let answer = if path.ends_with("csr") {
                ca_client(&anchors, identity)
                    .post(&url)
                    .json(&json!({"server_identity": SERVER_SPIFFE_ID}))
                    .send()
                    .await
            } else {
                ca_client(&anchors, identity).get(&url).send().await
            };
            assert!(answer.is_err(), "{who} refused on {path}");
        }
    }

    // Keeper 2's key and certificate, on keeper 1's address, do not pass
    // for keeper 1: the server refuses the handshake and pushes no share.
    let impostor_state = dir.path().join("impostor");
    std::fs::create_dir_all(&impostor_state).unwrap();
    for f in ["identity.pem", "identity.key", "anchors.pem"] {
        std::fs::copy(states[1].join(f), impostor_state.join(f)).unwrap();
    }
    let first = keepers.remove(0);
    let first_addr = first.addr.clone();
    first.kill();
    let impostor = start_keeper_with_state(&pki, &keeper_cert, &first_addr, Some(&impostor_state));
    let refusals = |s: &Server| {
        s.stderr_text()
            .lines()
            .filter(|l| l.contains("Keeper unreachable.") && l.contains(&urls[0]))
            .count()
    };
    let before = refusals(&server);
    eventually(
        Duration::from_secs(20),
        "the impostor refused twice",
        async || refusals(&server) >= before + 2,
    )
    .await;
    assert!(
        !impostor.stderr_text().contains("Keeper stored a share."),
        "the impostor got a share"
    );
    impostor.kill();
    let before = restored(&server);
    keepers.insert(
        0,
        start_keeper_with_state(&pki, &keeper_cert, &first_addr, Some(&states[0])),
    );
    eventually(
        Duration::from_secs(20),
        "keeper 1 back from its state directory",
        async || restored(&server) > before,
    )
    .await;

    // Keeper 3 keeps nothing: restarted, it presents its bootstrap
    // certificate, gets its share back and a new certificate.
    let before = renewed(&server);
    let addr = keepers[2].addr.clone();
    keepers.remove(2).kill();
    keepers.push(start_keeper_with_state(&pki, &keeper_cert, &addr, None));
    eventually(
        Duration::from_secs(20),
        "the keeper without state renewed again",
        async || renewed(&server) > before,
    )
    .await;

    // Make the bootstrap files useless: the operator's CA replaced by an
    // unrelated one, the certificates and keys by junk. Keepers 1 and 2 (a
    // threshold) restart from their state directories and get their shares
    // back; keeper 3 stays down. Then the server restarts sealed and
    // unseals itself over certificates from its CA only.
    let addrs: Vec<String> = keepers.iter().map(|k| k.addr.clone()).collect();
    for k in keepers.drain(..) {
        k.kill();
    }
    let unrelated_dir = dir.path().join("unrelated");
    std::fs::create_dir_all(&unrelated_dir).unwrap();
    let unrelated = Pki::new(&unrelated_dir);
    std::fs::copy(unrelated.ca_path(), pki.ca_path()).unwrap();
    for f in [
        &keeper_cert.0,
        &keeper_cert.1,
        &server_cert.0,
        &server_cert.1,
    ] {
        std::fs::write(f, "junk").unwrap();
    }
    let before = restored(&server);
    let keepers: Vec<Server> = (0..2)
        .map(|i| start_keeper_with_state(&pki, &keeper_cert, &addrs[i], Some(&states[i])))
        .collect();
    eventually(
        Duration::from_secs(20),
        "keepers restarted from their state resupplied",
        async || restored(&server) >= before + 2,
    )
    .await;
    assert!(server.terminate().success());
    let server = Server::start(&args, &[]);
    eventually(
        Duration::from_secs(30),
        "auto-unseal over certificates from Vern's CA",
        async || health(&server).await == 200,
    )
    .await;

    let records = {
        let v: serde_json::Value = client()
            .get(server.url("/v1/audit/records?limit=1000"))
            .header("x-vault-token", &root)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["data"]["records"].as_array().unwrap().clone()
    };
    let issued: Vec<&serde_json::Value> = records
        .iter()
        .map(|r| &r["event"])
        .filter(|e| e["operation"] == "vern serve --keeper-certs-from-ca")
        .collect();
    assert!(
        issued
            .iter()
            .any(|e| e["resource"] == "spiffe://vern.internal/vern/keeper/1"
                && e["details"]["serial"].is_string()),
        "{issued:?}"
    );
    assert!(issued.iter().any(|e| e["resource"] == SERVER_SPIFFE_ID));
    let all = serde_json::to_string(&records).unwrap();
    assert!(!all.contains("PRIVATE KEY"), "no key in the audit log");

    for k in &keepers {
        assert!(
            !k.stderr_text().contains(&held),
            "a keeper logged its share"
        );
    }
    assert!(!server.stderr_text().contains(&held));
}

#[test]
fn keeper_certificate_options_are_checked() {
    let dir = temp();
    let data = path_str(&dir.path().join("data"));
    let junk = path_str(&dir.path().join("junk.pem"));
    std::fs::write(&junk, "junk").unwrap();
    let refused = |args: &[&str], says: &str| {
        let out = vern(args, &[]);
        assert!(!out.status.success(), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    };
    refused(
        &["serve", "--data-dir", &data, "--keeper-certs-from-ca"],
        "need keepers",
    );
    let keeper_args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--insecure-listen",
        "--data-dir",
        &data,
        "--keeper",
        "https://127.0.0.1:1",
        "--keeper-ca",
        &junk,
        "--keeper-client-cert",
        &junk,
        "--keeper-client-key",
        &junk,
        "--keeper-certs-from-ca",
    ];
    let mut too_long = keeper_args.to_vec();
    too_long.extend(["--keeper-cert-ttl", "48h"]);
    refused(&too_long, "exceeds the maximum SVID lifetime");
    // Nothing is kept yet: the operator's files must load.
    refused(&keeper_args, "junk.pem");
    // The same keys in the config file.
    let config = dir.path().join("vern.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ninsecure_listen = true\ndata_dir = \"{data}\"\n\
             [keepers]\nurls = [\"https://127.0.0.1:1\"]\nca = \"{junk}\"\n\
             client_cert = \"{junk}\"\nclient_key = \"{junk}\"\n\
             certs_from_ca = true\ncert_ttl = \"48h\"\n"
        ),
    )
    .unwrap();
    refused(
        &["serve", "--config", &path_str(&config)],
        "keeper_cert_ttl (48h) exceeds",
    );
    // A keeper without a kept certificate needs its own files.
    refused(
        &[
            "keeper",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            &junk,
            "--tls-key",
            &junk,
            "--client-ca",
            &junk,
            "--server-identity",
            SERVER_ID,
            "--state-dir",
            &path_str(&dir.path().join("state")),
        ],
        "cannot start the keeper",
    );
}

/// A keeper that does not pin the server's SPIFFE ID keeps its bootstrap
/// certificate: nothing is issued for it, and the server keeps reaching
/// it with its bootstrap certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keeper_that_does_not_pin_the_spiffe_id_keeps_its_files() {
    let dir = temp();
    let pki = Pki::new(dir.path());
    let keeper_cert = pki.issue(
        "keeper",
        vec![SanType::IpAddress("127.0.0.1".parse().unwrap())],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let server_cert = pki.issue(
        "server",
        vec![dns(SERVER_ID)],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let keeper = start_keeper(&pki, &keeper_cert, "127.0.0.1:0");
    let url = format!("https://{}", keeper.addr);
    let data = path_str(&dir.path().join("data"));
    let server = Server::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--insecure-listen",
            "--data-dir",
            &data,
            "--keeper-ca",
            &pki.ca_path(),
            "--keeper-client-cert",
            &server_cert.0,
            "--keeper-client-key",
            &server_cert.1,
            "--keeper-sync-interval",
            "1",
            "--keeper-certs-from-ca",
            "--keeper",
            &url,
        ],
        &[],
    );
    let init = client()
        .put(server.url("/v1/sys/init"))
        .json(&json!({"secret_shares": 1, "secret_threshold": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(init.status(), 200);
    eventually(
        Duration::from_secs(20),
        "the keeper refused the update twice",
        async || {
            server
                .stderr_text()
                .matches("answered 409 Conflict to the CSR request")
                .count()
                >= 2
        },
    )
    .await;
    assert_eq!(restored(&server), 1);
    assert_eq!(renewed(&server), 0);
    // The server's own identity comes from the CA; the keeper refuses it
    // and the server reaches it with its bootstrap certificate.
    let kept = dir.path().join("data").join("keeper-tls");
    assert_eq!(pem_uris(&kept.join("identity.pem")), [SERVER_SPIFFE_ID]);
    assert!(!server.stderr_text().contains("Keeper unreachable."));
    assert!(!keeper
        .stderr_text()
        .contains("Keeper presents a certificate"));
}

/// Certificates from the CA that expired while Vern was down give way to
/// the bootstrap files on both ends, and the log says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_certificates_fall_back_to_the_bootstrap_files() {
    let dir = temp();
    let pki = Pki::new(dir.path());
    let keeper_cert = pki.issue(
        "keeper",
        vec![SanType::IpAddress("127.0.0.1".parse().unwrap())],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let server_cert = pki.issue(
        "server",
        vec![dns(SERVER_ID)],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let state = dir.path().join("keeper");
    let keeper = start_keeper_with_state(&pki, &keeper_cert, "127.0.0.1:0", Some(&state));
    let url = format!("https://{}", keeper.addr);
    let data = path_str(&dir.path().join("data"));
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--insecure-listen",
        "--data-dir",
        &data,
        "--keeper-ca",
        &pki.ca_path(),
        "--keeper-client-cert",
        &server_cert.0,
        "--keeper-client-key",
        &server_cert.1,
        "--keeper-sync-interval",
        "1",
        "--keeper-certs-from-ca",
        "--svid-max-ttl",
        "6s",
        "--keeper",
        &url,
    ];
    let server = Server::start(&args, &[]);
    let init = client()
        .put(server.url("/v1/sys/init"))
        .json(&json!({"secret_shares": 1, "secret_threshold": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(init.status(), 200);
    let kept = dir
        .path()
        .join("data")
        .join("keeper-tls")
        .join("identity.pem");
    eventually(
        Duration::from_secs(20),
        "both ends on certificates from the CA",
        async || kept.exists() && renewed(&server) >= 1,
    )
    .await;
    assert!(server.terminate().success());
    // Both ends' certificates from the CA run out (six seconds at most).
    let expires = pem_not_after(&kept);
    eventually(
        Duration::from_secs(20),
        "the certificates from the CA to expire",
        async || {
            common::unix_now() > expires
                && keeper
                    .stderr_text()
                    .contains("The certificate from Vern's CA expired; presenting --tls-cert.")
        },
    )
    .await;
    let server = Server::start(&args, &[]);
    eventually(
        Duration::from_secs(20),
        "auto-unseal over the bootstrap files",
        async || health(&server).await == 200,
    )
    .await;
    assert!(server
        .stderr_text()
        .contains("expired while Vern was down; presenting --keeper-client-cert"));
    assert!(keeper
        .stderr_text()
        .contains("The certificate from Vern's CA expired; presenting --tls-cert."));
}
