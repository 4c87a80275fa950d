//! Artifact trust through the real binary: published keys, signing by
//! digest, the evidence store by address and by subject, tenant isolation,
//! bad input refused with nothing stored, and the audit record of each
//! write.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{
    client, client_token, dev_server, path_str, post_as, records_of, service, status_and_json,
    temp, Server,
};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use vern_attest::{verify_envelope, Envelope, Sha256Digest, TrustedKey};

const SLSA: &str = "https://slsa.dev/provenance/v1";

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
