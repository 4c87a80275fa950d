//! Artifact trust through the real binary: published keys, signing by
//! digest, the evidence store by address and by subject, tenant isolation,
//! bad input refused with nothing stored, the audit record of each write,
//! and the `vern attest` / `vern evidence` commands (digest checks of files
//! and OCI layouts, offline verification, export).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;

use common::{
    client, client_token, dev_server, path_str, post_as, records_of, service, status_and_json,
    temp, text, vern, Server,
};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use vern_attest::{verify_envelope, Envelope, Sha256Digest, TrustedKey};

const SLSA: &str = "https://slsa.dev/provenance/v1";
const TEST_RESULT: &str = "https://in-toto.io/attestation/test-result/v0.1";

fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex_of(&Sha256::digest(bytes)))
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sign_body(subject: &str) -> Value {
    json!({
        "subject": subject,
        "predicate_type": SLSA,
        "predicate": {"buildDefinition": {"buildType": "https://example.com/build/v1"}},
    })
}

async fn sign(s: &Server, token: &str, body: &Value, request_id: &str) -> (u16, Value) {
    status_and_json(
        client()
            .post(s.url("/v1/attest/sign"))
            .header("x-vault-token", token)
            .header("x-request-id", request_id)
            .json(body),
    )
    .await
}

async fn get(s: &Server, token: &str, path: &str) -> reqwest::Response {
    client()
        .get(s.url(path))
        .header("x-vault-token", token)
        .send()
        .await
        .unwrap()
}

async fn lookup(s: &Server, token: &str, query: &str) -> (u16, Value) {
    let r = get(s, token, &format!("/v1/evidence?{query}")).await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn jwks(s: &Server, tenant: &str) -> Vec<TrustedKey> {
    let v: Value = client()
        .get(s.url(&format!("/v1/attest/keys?tenant={tenant}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| TrustedKey::from_jwk(k).unwrap())
        .collect()
}

fn server() -> (tempfile::TempDir, Server) {
    let dir = temp();
    let s = dev_server(&path_str(dir.path()), &[]);
    (dir, s)
}

#[tokio::test]
async fn sign_then_fetch_by_address_and_by_subject_and_verify_offline() {
    let (_dir, s) = server();
    // Reading keys creates none: an owner that never signed has none.
    assert!(jwks(&s, "acme").await.is_empty());
    let builder = client_token(
        &s,
        service("acme", "builder", &["attest:sign", "evidence:read"]),
    )
    .await;
    let artifact = b"the artifact's bytes";
    let digest = digest_of(artifact);
    let subject = format!("registry.example/acme/web@{digest}");
    let (status, signed) = sign(&s, &builder, &sign_body(&subject), "sign-ok-0001").await;
    assert_eq!(status, 200, "{signed}");
    let data = &signed["data"];
    let envelope = data["envelope"].as_str().unwrap();
    let address = data["address"].as_str().unwrap();
    assert_eq!(address, digest_of(envelope.as_bytes()));
    assert_eq!(data["signer"], "svc.acme.web.prod.builder");
    assert_eq!(data["owner"], "tenant:acme");

    // The published key verifies the envelope, offline, for this subject.
    let keys = jwks(&s, "acme").await;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].kid, data["kid"].as_str().unwrap());
    // The key id is the RFC 7638 thumbprint, computed here on its own.
    let jwk = keys[0].to_jwk();
    let canonical = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        jwk["x"].as_str().unwrap()
    );
    let thumbprint = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(canonical))
    };
    assert_eq!(keys[0].kid, thumbprint);
    let parsed = Envelope::parse(envelope.as_bytes()).unwrap();
    let want = Sha256Digest::parse(&digest).unwrap();
    let verified = verify_envelope(
        &parsed,
        &keys,
        None,
        data["signed_at"].as_u64().unwrap(),
        Some(&want),
    )
    .unwrap();
    assert_eq!(verified.statement.predicate_type, SLSA);
    assert_eq!(
        verified.statement.subject[0].name,
        "registry.example/acme/web"
    );
    let pem = client()
        .get(s.url("/v1/attest/keys?tenant=acme&format=pem"))
        .send()
        .await
        .unwrap();
    assert_eq!(pem.status(), 200);
    let pem = pem.text().await.unwrap();
    assert_eq!(TrustedKey::from_pem(&pem).unwrap().kid, keys[0].kid);

    // By address: exactly the bytes signed.
    let r = get(&s, &builder, &format!("/v1/evidence/{address}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-vern-signer"].to_str().unwrap(),
        "svc.acme.web.prod.builder"
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), envelope.as_bytes());

    // By subject: the one entry, with who signed it and with which key.
    let (status, found) = lookup(&s, &builder, &format!("subject={digest}")).await;
    assert_eq!(status, 200, "{found}");
    let list = found["data"]["evidence"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["address"], address);
    assert_eq!(list[0]["kids"], json!([data["kid"]]));
    assert_eq!(list[0]["envelope"], envelope);

    // Ed25519 is deterministic: signing the same statement again gives the
    // same bytes, stored once (idempotent), as a platform auditor sees.
    let (status, again) = sign(&s, &builder, &sign_body(&subject), "sign-ok-0002").await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["data"]["address"], address);
    let (status, all) = lookup(&s, "root", &format!("subject={digest}")).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(
        all["data"]["evidence"].as_array().unwrap().len(),
        1,
        "{all}"
    );
}

#[tokio::test]
async fn tenants_cannot_sign_for_or_read_each_other() {
    let (_dir, s) = server();
    let acme = client_token(
        &s,
        service("acme", "builder", &["attest:sign", "evidence:read"]),
    )
    .await;
    let globex = client_token(
        &s,
        service("globex", "builder", &["attest:sign", "evidence:read"]),
    )
    .await;
    let digest = digest_of(b"acme's image");
    let subject = format!("registry.example/acme/web@{digest}");
    let (status, signed) = sign(&s, &acme, &sign_body(&subject), "cross-0001").await;
    assert_eq!(status, 200, "{signed}");
    let address = signed["data"]["address"].as_str().unwrap().to_owned();

    // Globex cannot sign for acme's environment, with acme's key.
    let mut body = sign_body(&subject);
    body["environment"] = json!("acme/web/prod");
    let (status, _) = sign(&s, &globex, &body, "cross-0002").await;
    assert_eq!(status, 403);
    assert!(jwks(&s, "globex").await.is_empty());
    assert_eq!(jwks(&s, "acme").await.len(), 1);

    // Nor read acme's evidence: its own tenant has no such entry, and
    // naming acme is refused.
    let r = get(&s, &globex, &format!("/v1/evidence/{address}")).await;
    assert_eq!(r.status(), 404);
    let r = get(&s, &globex, &format!("/v1/evidence/{address}?tenant=acme")).await;
    assert_eq!(r.status(), 403);
    let (status, found) = lookup(&s, &globex, &format!("subject={digest}")).await;
    assert_eq!(status, 200);
    assert_eq!(found["data"]["evidence"], json!([]));
    let (status, _) = lookup(&s, &globex, &format!("subject={digest}&tenant=acme")).await;
    assert_eq!(status, 403);

    // Globex signing about the same digest stores globex's own evidence;
    // acme's lookup still shows only acme's.
    let (status, _) = sign(&s, &globex, &sign_body(&subject), "cross-0003").await;
    assert_eq!(status, 200);
    let (_, found) = lookup(&s, &acme, &format!("subject={digest}")).await;
    let list = found["data"]["evidence"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["owner"], "tenant:acme");

    // A service without the scopes signs and reads nothing, even its own.
    let plain = client_token(&s, service("acme", "web", &["secrets:read"])).await;
    let (status, _) = sign(&s, &plain, &sign_body(&subject), "cross-0004").await;
    assert_eq!(status, 403);
    let r = get(&s, &plain, &format!("/v1/evidence/{address}")).await;
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn bad_input_is_refused_clearly_and_stores_nothing() {
    let (_dir, s) = server();
    let token = client_token(
        &s,
        service("acme", "builder", &["attest:sign", "evidence:read"]),
    )
    .await;
    let good = digest_of(b"artifact");
    let upper = good.to_uppercase().replace("SHA256:", "sha256:");
    let cases: Vec<(Value, &str)> = vec![
        (sign_body("web@sha256:abc"), "64 lowercase hex"),
        (sign_body(&format!("web@{upper}")), "64 lowercase hex"),
        (sign_body(&format!("web@md5:{}", &good[7..])), "sha256:HEX"),
        (sign_body(&good), "NAME@sha256:DIGEST"),
        (sign_body(&format!("we b@{good}")), "whitespace"),
        (
            json!({"subject": format!("web@{good}"), "predicate_type": SLSA, "predicate": "x"}),
            "JSON object",
        ),
        (
            json!({"subject": format!("web@{good}"), "predicate_type": SLSA}),
            "predicate",
        ),
        (
            json!({"subject": format!("web@{good}"), "predicate_type": SLSA, "predicate": {}, "extra": 1}),
            "unknown field",
        ),
        (
            json!({"subject": format!("web@{good}"), "predicate_type": SLSA, "predicate": {}, "environment": "acme/web"}),
            "tenant/project/environment",
        ),
    ];
    for (i, (body, why)) in cases.iter().enumerate() {
        let (status, answer) = sign(&s, &token, body, &format!("bad-{i:04}")).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        let text = answer["errors"].to_string();
        assert!(text.contains(why), "{body}: {text} lacks {why}");
    }
    // Nothing was signed: acme has no key, and no evidence about the
    // digest exists anywhere.
    assert!(jwks(&s, "acme").await.is_empty());
    let (status, found) = lookup(&s, "root", &format!("subject={good}")).await;
    assert_eq!(status, 200);
    assert_eq!(found["data"]["evidence"], json!([]));

    // Reads refuse malformed addresses and subjects.
    for path in [
        "/v1/evidence/abc",
        "/v1/evidence/sha256:xyz",
        "/v1/evidence?subject=abc",
        "/v1/evidence",
        "/v1/evidence?subject=sha256:00&tenant=acme",
        "/v1/evidence?subject=sha256:00&tenant=Not%20A%20Tenant",
    ] {
        let r = get(&s, "root", path).await;
        assert_eq!(r.status(), 400, "{path}");
    }
    let r = client()
        .get(s.url("/v1/attest/keys?format=der"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let missing = format!("/v1/evidence/{good}?tenant=acme");
    assert_eq!(get(&s, "root", &missing).await.status(), 404);
}

#[tokio::test]
async fn each_write_is_an_audit_record_with_address_signer_and_key() {
    let (_dir, s) = server();
    let token = client_token(&s, service("acme", "builder", &["attest:sign"])).await;
    let digest = digest_of(b"audited");
    let subject = format!("web@{digest}");
    let (status, signed) = sign(&s, &token, &sign_body(&subject), "audited-0001").await;
    assert_eq!(status, 200, "{signed}");
    let records = records_of(&s, "audited-0001").await;
    assert_eq!(records.len(), 1, "{records:?}");
    let event = &records[0]["event"];
    assert_eq!(event["action"], "attest.sign");
    assert_eq!(event["resource_tenant"], "acme");
    assert_eq!(event["decision"]["allowed"], true);
    assert_eq!(event["details"]["evidence"], signed["data"]["address"]);
    assert_eq!(event["details"]["signer"], "svc.acme.web.prod.builder");
    assert_eq!(event["details"]["kid"], signed["data"]["kid"]);
    assert_eq!(event["details"]["subject"], digest);

    // A refused signing is on record too, with no evidence named.
    let (status, _) = post_as(
        &s,
        &token,
        "/v1/attest/sign",
        &json!({"subject": "web@sha256:0", "predicate_type": SLSA, "predicate": {}}),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = sign(&s, &token, &sign_body("web@sha256:1"), "audited-0002").await;
    assert_eq!(status, 400);
    let records = records_of(&s, "audited-0002").await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["event"]["status"], 400);
    assert!(records[0]["event"].get("details").is_none());
}

/// Runs `vern` against `s` with `token`; returns (success, stdout, stderr).
fn cli(s: &Server, token: &str, args: &[&str]) -> (bool, String, String) {
    let out = vern(args, &[("VERN_ADDR", &s.http()), ("VERN_TOKEN", token)]);
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path_str(&path)
}

#[tokio::test]
async fn cli_signs_checked_artifacts_verifies_offline_and_exports() {
    let (dir, s) = server();
    let token = client_token(
        &s,
        service("acme", "builder", &["attest:sign", "evidence:read"]),
    )
    .await;
    let d = dir.path();
    let artifact = write(d, "app.tar", b"release 1.0 contents");
    let digest = digest_of(b"release 1.0 contents");
    let predicate = write(
        d,
        "provenance.json",
        br#"{"buildDefinition":{"buildType":"x"}}"#,
    );
    let subject = format!("registry.example/acme/web@{digest}");
    let envelope = path_str(&d.join("envelope.json"));
    let sign_args = |subject: &str, file: &str, out: &str| {
        vec![
            "attest".to_owned(),
            "sign".to_owned(),
            "--subject".to_owned(),
            subject.to_owned(),
            "--predicate-type".to_owned(),
            SLSA.to_owned(),
            "--predicate".to_owned(),
            predicate.clone(),
            "--artifact".to_owned(),
            file.to_owned(),
            "--out".to_owned(),
            out.to_owned(),
        ]
    };
    let args = sign_args(&subject, &artifact, &envelope);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, _, err) = cli(&s, &token, &args);
    assert!(ok, "{err}");
    let bytes = std::fs::read(&envelope).unwrap();
    Envelope::parse(&bytes).unwrap();

    // A file whose digest is not the subject's is refused before anything
    // is sent: nothing is stored about either digest.
    let other = write(d, "other.tar", b"something else");
    let refused = path_str(&d.join("refused.json"));
    let wrong = format!("registry.example/acme/web@{}", digest_of(b"not it"));
    let args = sign_args(&wrong, &other, &refused);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, _, err) = cli(&s, &token, &args);
    assert!(!ok);
    assert!(err.contains("refusing to sign"), "{err}");
    assert!(!Path::new(&refused).exists());
    for d in [digest_of(b"not it"), digest_of(b"something else")] {
        let (_, found) = lookup(&s, "root", &format!("subject={d}")).await;
        assert_eq!(found["data"]["evidence"], json!([]), "{d}");
    }
    let (ok, _, err) = cli(
        &s,
        &token,
        &[
            "attest",
            "sign",
            "--subject",
            "web@sha256:12",
            "--predicate-type",
            SLSA,
            "--predicate",
            &predicate,
        ],
    );
    assert!(!ok);
    assert!(err.contains("64 lowercase hex"), "{err}");

    // Keys as PEM and as JWKS.
    let (ok, pem, err) = cli(
        &s,
        "",
        &["attest", "keys", "--tenant", "acme", "--output", "pem"],
    );
    assert!(ok, "{err}");
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
    let pem_file = write(d, "acme.pem", pem.as_bytes());
    let (ok, jwks_text, _) = cli(&s, "", &["attest", "keys", "--tenant", "acme"]);
    assert!(ok);
    let jwks: Value = serde_json::from_str(&jwks_text).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    let jwks_file = write(d, "acme.jwks", jwks_text.as_bytes());

    // Offline: no server reachable, the exported key suffices.
    let offline = |args: &[&str]| {
        let out = vern(args, &[("VERN_ADDR", "http://127.0.0.1:9")]);
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    for key in [&pem_file, &jwks_file] {
        let (ok, out, err) = offline(&[
            "attest",
            "verify",
            &envelope,
            "--key",
            key,
            "--subject",
            &digest,
        ]);
        assert!(ok, "{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["verified"], true);
        assert_eq!(v["predicate_type"], SLSA);
    }
    // Another subject, a tampered payload, another key: refused.
    let (ok, _, err) = offline(&[
        "attest",
        "verify",
        &envelope,
        "--key",
        &pem_file,
        "--subject",
        &digest_of(b"x"),
    ]);
    assert!(!ok);
    assert!(err.contains("does not name subject"), "{err}");
    let mut env: Value = serde_json::from_slice(&bytes).unwrap();
    let forged = json!({"_type": "https://in-toto.io/Statement/v1", "subject": [{"name": "web", "digest": {"sha256": &digest[7..]}}], "predicateType": SLSA, "predicate": {"forged": true}});
    env["payload"] = json!(base64_std(&serde_json::to_vec(&forged).unwrap()));
    let tampered = write(d, "tampered.json", &serde_json::to_vec(&env).unwrap());
    let (ok, _, err) = offline(&["attest", "verify", &tampered, "--key", &pem_file]);
    assert!(!ok);
    assert!(err.contains("does not verify"), "{err}");
    let (_, globex_pem, _) = cli(
        &s,
        "",
        &["attest", "keys", "--tenant", "globex", "--output", "pem"],
    );
    assert!(globex_pem.is_empty());
    let (ok, _, err) = offline(&[
        "attest",
        "verify",
        &envelope,
        "--key",
        &jwks_file.replace("acme.jwks", "missing.jwks"),
    ]);
    assert!(!ok);
    assert!(err.contains("cannot read"), "{err}");

    // Online: by the stored record, and every envelope about a subject.
    let (ok, out, err) = cli(&s, &token, &["attest", "verify", &envelope]);
    assert!(ok, "{err}");
    assert!(out.contains("\"verified\": true"), "{out}");
    let (ok, out, err) = cli(&s, &token, &["attest", "verify", "--subject", &digest]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["evidence"].as_array().unwrap().len(), 1);
    let (ok, _, err) = cli(&s, &token, &["attest", "verify", &tampered]);
    assert!(!ok);
    assert!(err.contains("not in the evidence store"), "{err}");

    // Export: the envelope as stored, its record and the key.
    let bundle = path_str(&d.join("bundle.json"));
    let (ok, _, err) = cli(
        &s,
        &token,
        &["evidence", "export", "--subject", &digest, "--out", &bundle],
    );
    assert!(ok, "{err}");
    let b: Value = serde_json::from_slice(&std::fs::read(&bundle).unwrap()).unwrap();
    assert_eq!(b["subject"], digest);
    assert_eq!(
        b["evidence"][0]["envelope"].as_str().unwrap().as_bytes(),
        bytes.as_slice()
    );
    assert_eq!(b["evidence"][0]["signer"], "svc.acme.web.prod.builder");
    assert_eq!(b["keys"], jwks["keys"]);
}

fn base64_std(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// An OCI image layout with one manifest, named `v1`.
fn oci_layout(dir: &Path, manifest: &[u8]) -> String {
    let hex = digest_of(manifest)[7..].to_owned();
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("blobs/sha256").join(&hex), manifest).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{hex}"),
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "v1"},
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    path_str(dir)
}

#[tokio::test]
async fn cli_checks_the_manifest_of_an_oci_layout_before_signing() {
    let (dir, s) = server();
    let token = client_token(&s, service("acme", "builder", &["attest:sign"])).await;
    let d = dir.path();
    let manifest = br#"{"schemaVersion":2,"config":{},"layers":[]}"#;
    let layout = oci_layout(&d.join("layout"), manifest);
    let digest = digest_of(manifest);
    let predicate = write(d, "scan.json", br#"{"scanner":{"result":[]}}"#);
    let run = |subject: &str, layout: &str| {
        cli(
            &s,
            &token,
            &[
                "attest",
                "sign",
                "--subject",
                subject,
                "--predicate-type",
                "https://in-toto.io/attestation/vulns/v0.1",
                "--predicate",
                &predicate,
                "--oci-layout",
                layout,
            ],
        )
    };
    // By digest, and by the name the index gives it.
    let (ok, out, err) = run(&format!("registry.example/acme/web@{digest}"), &layout);
    assert!(ok, "{err}");
    Envelope::parse(out.trim().as_bytes()).unwrap();
    // The name `v1` with another digest: refused.
    let (ok, _, err) = run(
        &format!("registry.example/acme/web:v1@{}", digest_of(b"other")),
        &layout,
    );
    assert!(!ok);
    assert!(err.contains("not the subject's"), "{err}");
    // Neither the digest nor the name: refused.
    let (ok, _, err) = run(&format!("web@{}", digest_of(b"other")), &layout);
    assert!(!ok);
    assert!(err.contains("no manifest"), "{err}");
    // A blob whose bytes are not its name's digest: refused.
    std::fs::write(d.join("layout/blobs/sha256").join(&digest[7..]), b"swapped").unwrap();
    let (ok, _, err) = run(&format!("web@{digest}"), &layout);
    assert!(!ok);
    assert!(err.contains("hashes to"), "{err}");
    // Not a layout at all.
    let (ok, _, err) = run(&format!("web@{digest}"), &path_str(d));
    assert!(!ok);
    assert!(err.contains("oci-layout"), "{err}");
}

#[tokio::test]
async fn evidence_moves_between_sites_verified_whole_or_not_at_all() {
    // Site A signs and exports.
    let (dir, a) = server();
    let d = dir.path();
    let builder = client_token(
        &a,
        service("acme", "builder", &["attest:sign", "evidence:read"]),
    )
    .await;
    let digest = digest_of(b"shipped image");
    for predicate in ["https://slsa.dev/provenance/v1", TEST_RESULT] {
        let body = json!({"subject": format!("web@{digest}"), "predicate_type": predicate, "predicate": {"result": "PASSED"}});
        assert_eq!(sign(&a, &builder, &body, "site-a").await.0, 200);
    }
    let bundle = path_str(&d.join("bundle.json"));
    let (ok, _, err) = cli(
        &a,
        &builder,
        &["evidence", "export", "--subject", &digest, "--out", &bundle],
    );
    assert!(ok, "{err}");
    let (ok, jwks, _) = cli(&a, "", &["attest", "keys", "--tenant", "acme"]);
    assert!(ok);
    let trusted = write(d, "site-a.jwks", jwks.as_bytes());

    // Site B trusts A's acme keys; an acme administrator imports there.
    let dir_b = temp();
    let b = dev_server(
        &path_str(dir_b.path()),
        &["--attest-trusted-keys", &trusted],
    );
    let admin = client_token(
        &b,
        json!({"tenant": "acme", "name": "admin", "roles": ["tenant-admin"]}),
    )
    .await;

    // One tampered envelope refuses the whole bundle: nothing is stored.
    let mut b_json: Value = serde_json::from_slice(&std::fs::read(&bundle).unwrap()).unwrap();
    let original = b_json.clone();
    let env = b_json["evidence"][1]["envelope"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut env: Value = serde_json::from_str(&env).unwrap();
    let sig = env["signatures"][0]["sig"].as_str().unwrap().to_owned();
    let flipped = if sig.starts_with('A') {
        sig.replacen('A', "B", 1)
    } else {
        format!("A{}", &sig[1..])
    };
    env["signatures"][0]["sig"] = json!(flipped);
    b_json["evidence"][1]["envelope"] = json!(serde_json::to_string(&env).unwrap());
    let tampered = write(
        d,
        "tampered-bundle.json",
        &serde_json::to_vec(&b_json).unwrap(),
    );
    let (ok, _, err) = cli(&b, &admin, &["evidence", "import", &tampered]);
    assert!(!ok);
    assert!(err.contains("nothing is imported"), "{err}");
    let (_, found) = lookup(&b, "root", &format!("subject={digest}")).await;
    assert_eq!(found["data"]["evidence"], json!([]));

    // A bundle verified only by keys it carries itself is refused too.
    let dir_c = temp();
    let c = dev_server(&path_str(dir_c.path()), &[]);
    let (ok, _, err) = cli(&c, "root", &["evidence", "import", &bundle]);
    assert!(!ok);
    assert!(err.contains("unknown key"), "{err}");

    // Another tenant's administrator cannot import acme's evidence.
    let globex = client_token(
        &b,
        json!({"tenant": "globex", "name": "admin", "roles": ["tenant-admin"]}),
    )
    .await;
    let (ok, _, err) = cli(&b, &globex, &["evidence", "import", &bundle]);
    assert!(!ok);
    assert!(err.contains("403"), "{err}");

    // The intact bundle imports whole, once; the envelopes keep their
    // bytes and verify offline with site A's keys.
    let (ok, out, err) = cli(&b, &admin, &["evidence", "import", &bundle]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["created"], 2);
    let (ok, out, _) = cli(&b, &admin, &["evidence", "import", &bundle]);
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["created"], 0);
    let (_, found) = lookup(&b, &admin, &format!("subject={digest}")).await;
    let list = found["data"]["evidence"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    for entry in list {
        // The bundle's signer is unsigned: this site records the importer.
        assert_eq!(entry["signer"], "op.acme.admin");
        assert!(original["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["envelope"] == entry["envelope"]));
    }
    let (ok, _, err) = cli(
        &b,
        &admin,
        &["attest", "verify", "--subject", &digest, "--key", &trusted],
    );
    assert!(ok, "{err}");
    let records = common::audit_records(&b).await;
    let import = records
        .iter()
        .find(|r| r["event"]["action"] == "evidence.import" && r["event"]["status"] == 200)
        .unwrap();
    assert_eq!(import["event"]["details"]["importer"], "op.acme.admin");
    let addresses = import["event"]["details"]["evidence"].as_str().unwrap();
    assert_eq!(addresses.split(',').count(), 2);
}
