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
