//! Promotion gates and signing key rotation through the real binary: gates
//! declared with `vern apply` (all or nothing, per-environment authority,
//! tenant crossing refused), `vern attest promote` and `POST
//! /v1/attest/promote` denying with the missing evidence named and allowing
//! once it is there, the signer and critical-findings constraints, stored
//! evidence altered under the barrier not counted, rotation keeping old
//! envelopes verifiable, ECDSA P-256 keys, and imports that believe only
//! signed data.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;

use common::{
    audit_records, client, client_token, dev_server, path_str, service, status_and_json, temp,
    text, vern, Server,
};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use vern_attest::{verify_envelope, Envelope, Sha256Digest, TrustedKey};

const SLSA: &str = "https://slsa.dev/provenance/v1";
const VULNS: &str = "https://in-toto.io/attestation/vulns/v0.1";
const PROMOTION: &str = "https://vern.dev/attestation/promotion/v1";

fn digest_of(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// Runs `vern` against `s` with `token`: (exit code, stdout, stderr).
fn cli(s: &Server, token: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = vern(args, &[("VERN_ADDR", &s.http()), ("VERN_TOKEN", token)]);
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path_str(&path)
}

/// A vulnerability scan predicate with `critical` critical results.
fn scan(critical: usize) -> Value {
    let mut result: Vec<Value> = (0..critical)
        .map(|i| json!({"id": format!("CVE-2026-{i}"), "severity": [{"method": "nvd", "score": "CRITICAL"}]}))
        .collect();
    result
        .push(json!({"id": "CVE-2026-9", "severity": [{"method": "cvss_score", "score": "5.0"}]}));
    json!({"scanner": {"uri": "pkg:github/aquasecurity/trivy", "result": result}})
}

async fn sign(
    s: &Server,
    token: &str,
    subject: &str,
    predicate_type: &str,
    predicate: Value,
) -> Value {
    let (status, v) = status_and_json(
        client()
            .post(s.url("/v1/attest/sign"))
            .header("x-vault-token", token)
            .json(&json!({"subject": subject, "predicate_type": predicate_type, "predicate": predicate})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    v["data"].clone()
}

async fn promote(s: &Server, token: &str, subject: &str, to: &str) -> (u16, Value) {
    status_and_json(
        client()
            .post(s.url("/v1/attest/promote"))
            .header("x-vault-token", token)
            .json(&json!({"subject": subject, "to": to})),
    )
    .await
}

async fn apply(s: &Server, token: &str, body: Value) -> (u16, Value) {
    status_and_json(
        client()
            .post(s.url("/v1/auth/apply"))
            .header("x-vault-token", token)
            .json(&body),
    )
    .await
}

async fn jwks(s: &Server, tenant: &str) -> Vec<Value> {
    let v: Value = client()
        .get(s.url(&format!("/v1/attest/keys?tenant={tenant}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["keys"].as_array().unwrap().clone()
}

/// Waits until the clock has moved past `second`, so that what is signed
/// next is strictly newer.
fn after_second(second: u64) {
    while common::unix_now() <= second {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

const GATES: &str = "promotion:
  - environment: acme/web/prod
    require:
      - predicate_type: https://slsa.dev/provenance/v1
        signer: svc.acme.web.prod.builder
      - predicate_type: https://in-toto.io/attestation/vulns/v0.1
        max_critical: 0
";

#[tokio::test]
async fn promotion_is_denied_naming_what_is_missing_then_allowed_and_recorded() {
    let dir = temp();
    let d = dir.path();
    let s = dev_server(&path_str(d), &[]);
    let file = write(d, "platform.yaml", GATES);

    // A dry run shows the gate and stores nothing.
    let (code, out, err) = cli(&s, "root", &["apply", "-f", &file, "--dry-run"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("+ promotion gate acme/web/prod"), "{out}");
    let deployer = client_token(&s, service("acme", "deployer", &["attest:promote"])).await;
    let subject = format!("registry.example/acme/web@{}", digest_of(b"web image"));
    let (status, v) = promote(&s, &deployer, &subject, "acme/web/prod").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["allowed"], false);
    assert_eq!(
        v["data"]["missing"],
        json!(["no promotion gate for acme/web/prod"])
    );

    let (code, out, err) = cli(&s, "root", &["apply", "-f", &file, "-o", "json"]);
    assert_eq!(code, Some(0), "{err}");
    let plan: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plan["promotion"]["create"], json!(["acme/web/prod"]));
    let (_, out, _) = cli(&s, "root", &["apply", "-f", &file, "-o", "json"]);
    let plan: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plan["promotion"]["unchanged"], json!(["acme/web/prod"]));

    // Nothing stored yet: denied, exit 2, each requirement named.
    let (code, out, _) = cli(
        &s,
        &deployer,
        &[
            "attest",
            "promote",
            "--subject",
            &subject,
            "--to",
            "acme/web/prod",
        ],
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(out.starts_with("DENY"), "{out}");
    assert!(
        out.contains(&format!(
            "missing: requirement 1 (`{SLSA}` signed by `svc.acme.web.prod.builder`)"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "missing: requirement 2 (`{VULNS}` with at most 0 critical findings)"
        )),
        "{out}"
    );

    // Provenance by another signer does not count.
    let intruder = client_token(&s, service("acme", "intruder", &["attest:sign"])).await;
    let builder = client_token(&s, service("acme", "builder", &["attest:sign"])).await;
    let scanner = client_token(&s, service("acme", "scanner", &["attest:sign"])).await;
    sign(
        &s,
        &intruder,
        &subject,
        SLSA,
        json!({"buildDefinition": {"by": "intruder"}}),
    )
    .await;
    let (_, v) = promote(&s, &deployer, &subject, "acme/web/prod").await;
    assert_eq!(v["data"]["allowed"], false);
    let missing = v["data"]["missing"].as_array().unwrap();
    assert!(
        missing[0]
            .as_str()
            .unwrap()
            .contains("1 signed by svc.acme.web.prod.intruder does not count"),
        "{missing:?}"
    );

    // The same statement signed again is the same bytes: the first record
    // stands, and the answer says so rather than credit the builder.
    let again = sign(
        &s,
        &builder,
        &subject,
        SLSA,
        json!({"buildDefinition": {"by": "intruder"}}),
    )
    .await;
    assert_eq!(again["created"], false);
    assert_eq!(again["signer"], "svc.acme.web.prod.intruder");
    let (_, v) = promote(&s, &deployer, &subject, "acme/web/prod").await;
    assert_eq!(v["data"]["allowed"], false);

    // The builder's provenance, and a scan with a critical finding.
    let prov = sign(&s, &builder, &subject, SLSA, json!({"buildDefinition": {}})).await;
    let dirty = sign(&s, &scanner, &subject, VULNS, scan(1)).await;
    let (_, v) = promote(&s, &deployer, &subject, "acme/web/prod").await;
    assert_eq!(v["data"]["allowed"], false);
    assert_eq!(v["data"]["missing"].as_array().unwrap().len(), 1, "{v}");
    let why = v["data"]["missing"][0].as_str().unwrap();
    assert!(
        why.contains("has 1 critical findings, more than the 0 allowed"),
        "{why}"
    );
    assert!(why.contains(dirty["address"].as_str().unwrap()), "{why}");
    assert_eq!(v["data"]["evidence"][0]["address"], prov["address"]);
    assert!(v["data"]["record"].is_null());

    // A newer, clean scan: allowed, through the CLI.
    after_second(dirty["signed_at"].as_u64().unwrap());
    let clean = sign(&s, &scanner, &subject, VULNS, scan(0)).await;
    let (code, out, err) = cli(
        &s,
        &deployer,
        &[
            "attest",
            "promote",
            "--subject",
            &subject,
            "--to",
            "acme/web/prod",
            "-o",
            "json",
        ],
    );
    assert_eq!(code, Some(0), "{out} {err}");
    let allowed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(allowed["allowed"], true);
    assert_eq!(allowed["missing"], json!([]));
    let used: Vec<&Value> = allowed["evidence"].as_array().unwrap().iter().collect();
    assert_eq!(used[0]["address"], prov["address"]);
    assert_eq!(used[0]["signer"], "svc.acme.web.prod.builder");
    assert_eq!(used[1]["address"], clean["address"]);
    assert_eq!(used[1]["critical"], 0);

    // The promotion record is signed with acme's key and stored as evidence.
    let record = &allowed["record"];
    let envelope = record["envelope"].as_str().unwrap();
    assert_eq!(record["address"], digest_of(envelope.as_bytes()));
    let keys: Vec<TrustedKey> = jwks(&s, "acme")
        .await
        .iter()
        .map(|k| TrustedKey::from_jwk(k).unwrap())
        .collect();
    let digest = Sha256Digest::parse(&digest_of(b"web image")).unwrap();
    let verified = verify_envelope(
        &Envelope::parse(envelope.as_bytes()).unwrap(),
        &keys,
        None,
        clean["signed_at"].as_u64().unwrap(),
        Some(&digest),
    )
    .unwrap();
    assert_eq!(verified.statement.predicate_type, PROMOTION);
    let p = &verified.statement.predicate;
    assert_eq!(p["environment"], "acme/web/prod");
    assert_eq!(p["decider"], "svc.acme.web.prod.deployer");
    assert_eq!(p["evidence"][0]["address"], prov["address"]);
    let (_, found) = status_and_json(
        client()
            .get(s.url(&format!("/v1/evidence?subject={digest}")))
            .header("x-vault-token", "root")
            .query(&[("tenant", "acme")]),
    )
    .await;
    assert!(found["data"]["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["address"] == record["address"] && e["predicate_type"] == PROMOTION));

    // The audit chain holds the decision, the evidence used and the record.
    let records = audit_records(&s).await;
    let promotions: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"]["action"] == "attest.promote" && r["event"]["status"] == 200)
        .collect();
    let last = promotions.last().unwrap();
    assert_eq!(last["event"]["details"]["promotion"], "allow");
    assert_eq!(last["event"]["details"]["evidence"], record["address"]);
    assert!(last["event"]["details"]["used"]
        .as_str()
        .unwrap()
        .contains(clean["address"].as_str().unwrap()));
    assert!(promotions
        .iter()
        .any(|r| r["event"]["details"]["promotion"] == "deny"));

    // Bad input is refused clearly.
    for (body, why) in [
        (
            json!({"subject": subject, "to": "acme/web"}),
            "tenant/project/environment",
        ),
        (
            json!({"subject": "web@sha256:abc", "to": "acme/web/prod"}),
            "64 lowercase hex",
        ),
        (
            json!({"subject": subject, "to": "acme/web/prod", "x": 1}),
            "unknown field",
        ),
    ] {
        let (status, v) = status_and_json(
            client()
                .post(s.url("/v1/attest/promote"))
                .header("x-vault-token", &deployer)
                .json(&body),
        )
        .await;
        assert_eq!(status, 400, "{body} {v}");
        assert!(v["errors"][0].as_str().unwrap().contains(why), "{v}");
    }
}

#[tokio::test]
async fn gates_and_promotions_stay_inside_their_tenant() {
    let dir = temp();
    let s = dev_server(&path_str(dir.path()), &[]);
    let acme = client_token(
        &s,
        json!({"tenant": "acme", "name": "admin", "roles": ["tenant-admin"]}),
    )
    .await;
    let globex = client_token(
        &s,
        json!({"tenant": "globex", "name": "admin", "roles": ["tenant-admin"]}),
    )
    .await;
    let gate = |env: &str| json!({"environment": env, "require": [{"predicate_type": SLSA}]});

    // acme cannot set globex's gate, and a file touching it is refused
    // whole: acme's own gate in the same file is not stored either.
    let (status, v) = apply(
        &s,
        &acme,
        json!({"promotion": [gate("acme/web/prod"), gate("globex/web/prod")]}),
    )
    .await;
    assert_eq!(status, 403, "{v}");
    assert!(
        v["errors"][0].as_str().unwrap().contains("promotion[1]"),
        "{v}"
    );
    let (_, v) = promote(
        &s,
        &acme,
        &format!("web@{}", digest_of(b"x")),
        "acme/web/prod",
    )
    .await;
    assert_eq!(
        v["data"]["missing"],
        json!(["no promotion gate for acme/web/prod"])
    );

    // Each administrator sets its own; neither prune touches the other's.
    let (status, v) = apply(&s, &acme, json!({"promotion": [gate("acme/web/prod")]})).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = apply(
        &s,
        &globex,
        // The file declares globex's clients too: prune reaches every
        // declared kind, and its administrator must stay.
        json!({
            "clients": [{"tenant": "globex", "name": "admin", "roles": ["tenant-admin"]}],
            "promotion": [gate("globex/web/prod")],
            "prune": true,
        }),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["promotion"]["kept"], json!(["acme/web/prod"]));
    assert_eq!(v["data"]["promotion"]["delete"], json!([]));

    // The apply's audit record names the gates it changed.
    let records = audit_records(&s).await;
    assert!(records
        .iter()
        .any(|r| r["event"]["principal"]["id"] == "op.acme.admin"
            && r["event"]["details"]["gates_created"] == "acme/web/prod"));

    // Those who may set a gate read it; nobody reads across tenants.
    let read = |token: &str, env: &str| {
        client()
            .get(s.url("/v1/attest/gates"))
            .header("x-vault-token", token)
            .query(&[("environment", env)])
    };
    let (status, v) = status_and_json(read(&acme, "acme/web/prod")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["require"], json!([{"predicate_type": SLSA}]));
    assert_eq!(status_and_json(read(&acme, "globex/web/prod")).await.0, 403);
    assert_eq!(status_and_json(read(&acme, "acme/web/dev")).await.0, 404);
    assert_eq!(status_and_json(read(&acme, "acme/web")).await.0, 400);

    // acme may not promote into globex, as an administrator or a service.
    let subject = format!("web@{}", digest_of(b"image"));
    let (status, _) = promote(&s, &acme, &subject, "globex/web/prod").await;
    assert_eq!(status, 403);
    let deployer = client_token(
        &s,
        service("acme", "deployer", &["attest:promote", "attest:sign"]),
    )
    .await;
    let (status, _) = promote(&s, &deployer, &subject, "globex/web/prod").await;
    assert_eq!(status, 403);
    // Nor into another environment of its own tenant, nor set gates.
    let (status, _) = promote(&s, &deployer, &subject, "acme/web/staging").await;
    assert_eq!(status, 403);
    let (status, _) = apply(&s, &deployer, json!({"promotion": [gate("acme/web/prod")]})).await;
    assert_eq!(status, 403);
    let (status, _) = status_and_json(
        client()
            .get(s.url("/v1/attest/gates"))
            .header("x-vault-token", &deployer)
            .query(&[("environment", "acme/web/prod")]),
    )
    .await;
    assert_eq!(status, 403);

    // Evidence signed in acme does not open globex: globex's gate sees only
    // globex's evidence.
    sign(&s, &deployer, &subject, SLSA, json!({})).await;
    let (status, v) = promote(&s, &globex, &subject, "globex/web/prod").await;
    assert_eq!(status, 200);
    assert_eq!(v["data"]["allowed"], false, "{v}");
    let (_, v) = promote(&s, &deployer, &subject, "acme/web/prod").await;
    assert_eq!(v["data"]["allowed"], true, "{v}");

    // A platform administrator sets any tenant's gates; pruning removes
    // only what is not declared.
    let platform = client_token(&s, json!({"name": "alice", "roles": ["platform-admin"]})).await;
    let (status, v) = apply(
        &s,
        &platform,
        json!({"promotion": [gate("globex/web/prod")], "prune": true, "dry_run": true}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["promotion"]["delete"], json!(["acme/web/prod"]));
    assert_eq!(
        v["data"]["promotion"]["unchanged"],
        json!(["globex/web/prod"])
    );

    // A SPIFFE ID of this trust domain names the same signer as its id.
    let spiffe = json!({"promotion": [{"environment": "acme/web/prod", "require": [
        {"predicate_type": SLSA, "signer": "spiffe://vern.internal/t/acme/p/web/e/prod/s/builder"}]}]});
    let (status, v) = apply(&s, &acme, spiffe).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["promotion"]["update"], json!(["acme/web/prod"]));
    let by_id = json!({"promotion": [{"environment": "acme/web/prod", "require": [
        {"predicate_type": SLSA, "signer": "svc.acme.web.prod.builder"}]}]});
    let (_, v) = apply(&s, &acme, by_id).await;
    assert_eq!(
        v["data"]["promotion"]["unchanged"],
        json!(["acme/web/prod"]),
        "{v}"
    );

    // Malformed gates are refused with the entry named, nothing stored.
    for (body, why) in [
        (
            json!({"promotion": [{"environment": "acme/web", "require": [{"predicate_type": SLSA}]}]}),
            "promotion[0]",
        ),
        (
            json!({"promotion": [{"environment": "acme/web/prod", "require": []}]}),
            "1 to 64 requirements",
        ),
        (
            json!({"promotion": [{"environment": "acme/web/prod", "require": [{"predicate_type": SLSA, "signr": "x"}]}]}),
            "unknown field",
        ),
        (
            json!({"promotion": [{"environment": "acme/web/prod", "require": [{"predicate_type": SLSA, "signer": "spiffe://other.example/t/acme/p/web/e/prod/s/b"}]}]}),
            "not this site's",
        ),
        (
            json!({"promotion": [{"environment": "acme/web/prod", "require": [{"predicate_type": SLSA, "signer": "spiffe://vern.internal/t/acme.web/p/prod/e/x/s/b"}]}]}),
            "names no service",
        ),
        (
            json!({"promotion": [gate("acme/web/prod"), gate("acme/web/prod")]}),
            "declared twice",
        ),
    ] {
        let (status, v) = apply(&s, &acme, body.clone()).await;
        assert_eq!(status, 400, "{body} {v}");
        assert!(v["errors"][0].as_str().unwrap().contains(why), "{why}: {v}");
    }
    let (_, v) = promote(&s, &deployer, &subject, "acme/web/prod").await;
    assert_eq!(
        v["data"]["allowed"], false,
        "the gate still needs the builder"
    );
}

#[tokio::test]
async fn evidence_altered_in_storage_is_not_counted() {
    let dir = temp();
    let d = dir.path();
    let s = dev_server(&path_str(d), &["--sqlite-locking", "shared"]);
    let (status, _) = apply(&s, "root", json!({"promotion": [{"environment": "acme/web/prod", "require": [{"predicate_type": SLSA}]}]})).await;
    assert_eq!(status, 200);
    let builder = client_token(
        &s,
        service("acme", "builder", &["attest:sign", "attest:promote"]),
    )
    .await;
    let subject = format!("web@{}", digest_of(b"image"));
    let prov = sign(&s, &builder, &subject, SLSA, json!({})).await;
    let (_, v) = promote(&s, &builder, &subject, "acme/web/prod").await;
    assert_eq!(v["data"]["allowed"], true, "{v}");

    // Flip one byte of the stored (encrypted) record: the barrier refuses
    // it, so the entry is named as not counted and the gate is not met.
    let address = prov["address"].as_str().unwrap();
    let key = format!(
        "attest/evidence/tenant/acme/{}",
        address.trim_start_matches("sha256:")
    );
    let db = rusqlite::Connection::open(d.join("vern.db")).unwrap();
    let mut value: Vec<u8> = db
        .query_row("SELECT value FROM kv WHERE key = ?1", [&key], |r| r.get(0))
        .unwrap();
    let last = value.len() - 1;
    value[last] ^= 1;
    db.execute(
        "UPDATE kv SET value = ?1 WHERE key = ?2",
        rusqlite::params![value, key],
    )
    .unwrap();
    drop(db);
    let (status, v) = promote(&s, &builder, &subject, "acme/web/prod").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["allowed"], false, "{v}");
    assert_eq!(v["data"]["not_counted"][0]["address"], address);
    assert_eq!(
        v["data"]["not_counted"][0]["reason"],
        "its stored record failed integrity checks"
    );
}

#[tokio::test]
async fn rotation_keeps_old_envelopes_verifying_and_signs_with_the_new_key() {
    let dir = temp();
    let s = dev_server(&path_str(dir.path()), &[]);
    let builder = client_token(
        &s,
        service("acme", "builder", &["attest:sign", "evidence:read"]),
    )
    .await;
    let admin = client_token(
        &s,
        json!({"tenant": "acme", "name": "admin", "roles": ["tenant-admin"]}),
    )
    .await;
    let globex = client_token(
        &s,
        json!({"tenant": "globex", "name": "admin", "roles": ["tenant-admin"]}),
    )
    .await;
    let digest = digest_of(b"rotated image");
    let subject = format!("web@{digest}");
    let old = sign(&s, &builder, &subject, SLSA, json!({})).await;

    // Tenant crossing and services are refused; acme's admin rotates acme.
    let (code, _, err) = cli(&s, &globex, &["attest", "rotate", "--tenant", "acme"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("403"), "{err}");
    let (code, _, err) = cli(&s, &builder, &["attest", "rotate"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("403"), "{err}");
    let (code, _, err) = cli(&s, &admin, &["attest", "rotate", "--tenant", "platform"]);
    assert_eq!(code, Some(1), "{err}");
    let (code, out, err) = cli(&s, &admin, &["attest", "rotate", "-o", "json"]);
    assert_eq!(code, Some(0), "{err}");
    let rotated: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rotated["owner"], "tenant:acme");
    assert_ne!(rotated["kid"], old["kid"]);

    // Both keys are published; the old one with the end of its window.
    let keys = jwks(&s, "acme").await;
    assert_eq!(keys.len(), 2);
    let old_key = keys.iter().find(|k| k["kid"] == old["kid"]).unwrap();
    assert!(old_key["vern_valid_until"].as_u64().unwrap() >= old["signed_at"].as_u64().unwrap());
    let new_key = keys.iter().find(|k| k["kid"] == rotated["kid"]).unwrap();
    assert!(new_key.get("vern_valid_until").is_none());

    // A new envelope carries the new key id; both verify against the
    // store's record of when they were signed.
    let new = sign(&s, &builder, &subject, SLSA, json!({"second": true})).await;
    assert_eq!(new["kid"], rotated["kid"]);
    let (code, out, err) = cli(&s, &builder, &["attest", "verify", "--subject", &digest]);
    assert_eq!(code, Some(0), "{err}");
    let verified: Value = serde_json::from_str(&out).unwrap();
    let kids: Vec<&Value> = verified["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["kids"][0])
        .collect();
    assert!(
        kids.contains(&&old["kid"]) && kids.contains(&&rotated["kid"]),
        "{verified}"
    );

    // The platform key rotates for a platform administrator, audited.
    let (code, out, err) = cli(&s, "root", &["attest", "rotate"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("of platform"), "{out}");
    let records = audit_records(&s).await;
    let audited: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"]["action"] == "attest.rotate" && r["event"]["status"] == 200)
        .collect();
    assert_eq!(audited.len(), 2);
    assert_eq!(audited[0]["event"]["details"]["kid"], rotated["kid"]);
    assert_eq!(audited[1]["event"]["details"]["owner"], "platform");
}

#[tokio::test]
async fn the_signing_key_algorithm_is_a_server_option() {
    let dir = temp();
    let s = dev_server(&path_str(dir.path()), &["--attest-key-type", "ecdsa-p256"]);
    let builder = client_token(&s, service("acme", "builder", &["attest:sign"])).await;
    let digest = digest_of(b"p256 image");
    let signed = sign(&s, &builder, &format!("web@{digest}"), SLSA, json!({})).await;
    let keys = jwks(&s, "acme").await;
    assert_eq!(keys[0]["kty"], "EC");
    assert_eq!(keys[0]["alg"], "ES256");
    let trusted: Vec<TrustedKey> = keys
        .iter()
        .map(|k| TrustedKey::from_jwk(k).unwrap())
        .collect();
    let envelope = Envelope::parse(signed["envelope"].as_str().unwrap().as_bytes()).unwrap();
    verify_envelope(
        &envelope,
        &trusted,
        None,
        signed["signed_at"].as_u64().unwrap(),
        Some(&Sha256Digest::parse(&digest).unwrap()),
    )
    .unwrap();

    // An unknown algorithm is refused at start.
    let out = vern(
        &[
            "serve",
            "--dev",
            "--attest-key-type",
            "rsa",
            "--data-dir",
            &path_str(dir.path()),
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("ecdsa-p256"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn imports_believe_only_signed_data_and_their_own_view() {
    // Site A signs with one key, rotates, signs with the next.
    let dir = temp();
    let d = dir.path();
    let a = dev_server(&path_str(d), &[]);
    let builder = client_token(
        &a,
        service("acme", "builder", &["attest:sign", "evidence:read"]),
    )
    .await;
    let admin_a = client_token(
        &a,
        json!({"tenant": "acme", "name": "admin", "roles": ["tenant-admin"]}),
    )
    .await;
    let digest = digest_of(b"shipped");
    let subject = format!("web@{digest}");
    sign(&a, &builder, &subject, SLSA, json!({})).await;
    let bundle = path_str(&d.join("bundle.json"));
    let (code, _, err) = cli(
        &a,
        &builder,
        &["evidence", "export", "--subject", &digest, "--out", &bundle],
    );
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = cli(&a, &admin_a, &["attest", "rotate"]);
    assert_eq!(code, Some(0), "{err}");
    let (_, jwks_now, _) = cli(&a, "", &["attest", "keys", "--tenant", "acme"]);
    let trusted = write(d, "a.jwks", &jwks_now);

    // Site B trusts A's keys as they are now: the first key is retired.
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
    // The bundle says the envelope was signed while that key was valid,
    // but nothing signed says so: it is refused.
    after_second(rotated_at(&jwks_now));
    let (code, _, err) = cli(&b, &admin, &["evidence", "import", &bundle]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("was not valid at"), "{err}");

    // Evidence of the current key imports; the signer and time it keeps
    // are this site's (the importer, now), not the bundle's claims.
    sign(
        &a,
        &builder,
        &subject,
        "https://in-toto.io/attestation/test-result/v0.1",
        json!({"result": "PASSED"}),
    )
    .await;
    let (code, _, err) = cli(
        &a,
        &builder,
        &["evidence", "export", "--subject", &digest, "--out", &bundle],
    );
    assert_eq!(code, Some(0), "{err}");
    let mut b_json: Value = serde_json::from_slice(&std::fs::read(&bundle).unwrap()).unwrap();
    let retired = retired_kid(&jwks_now);
    let fresh: Vec<Value> = b_json["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            let env: Value = serde_json::from_str(e["envelope"].as_str().unwrap()).unwrap();
            env["signatures"][0]["keyid"] != retired
        })
        .cloned()
        .map(|mut e| {
            e["signer"] = json!("svc.acme.ci.prod.builder");
            e["signed_at"] = json!(1);
            e
        })
        .collect();
    assert_eq!(fresh.len(), 1);
    b_json["evidence"] = json!(fresh);
    let forged = write(d, "forged.json", &b_json.to_string());
    let (code, _, err) = cli(&b, &admin, &["evidence", "import", &forged]);
    assert_eq!(code, Some(0), "{err}");
    let (_, found) = status_and_json(
        client()
            .get(b.url(&format!("/v1/evidence?subject={digest}")))
            .header("x-vault-token", &admin),
    )
    .await;
    let entry = &found["data"]["evidence"][0];
    assert_eq!(entry["signer"], "op.acme.admin");
    assert!(entry["signed_at"].as_u64().unwrap() > 1);
}

/// The id of the retired key in a JWKS.
fn retired_kid(jwks: &str) -> Value {
    let v: Value = serde_json::from_str(jwks).unwrap();
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k.get("vern_valid_until").is_some())
        .map(|k| k["kid"].clone())
        .unwrap()
}

/// When the retired key of a JWKS stopped signing.
fn rotated_at(jwks: &str) -> u64 {
    let v: Value = serde_json::from_str(jwks).unwrap();
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|k| k["vern_valid_until"].as_u64())
        .unwrap()
}
