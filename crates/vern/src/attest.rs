//! `vern attest` and `vern evidence`: signing keys, signing statements about
//! artifacts after checking their digest here (the server never sees the
//! artifact), verifying envelopes (offline with `--key`), and exporting the
//! evidence about a subject.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use vern_attest::{verify_envelope, Envelope, Sha256Digest, Statement, SubjectRef, TrustedKey};

use crate::cli::{
    AttestCommand, AttestSignArgs, AttestVerifyArgs, ClientArgs, EvidenceCommand, KeyOutput,
    Output, ServerArgs,
};
use crate::client::{at, failure, field, print_json, Client};

/// What an evidence bundle says it is.
const BUNDLE_TYPE: &str = "https://vern.dev/evidence-bundle/v1";

/// The OCI annotation naming a manifest in an image layout's index.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

pub(crate) async fn run(cmd: AttestCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AttestCommand::Keys {
            server,
            tenant,
            output,
        } => keys(&server, tenant.as_deref(), output).await,
        AttestCommand::Sign(args) => sign(&args).await,
        AttestCommand::Verify(args) => verify(&args).await,
        AttestCommand::Promote {
            client,
            subject,
            to,
        } => promote(&client, &subject, &to).await,
        AttestCommand::Rotate { client, tenant } => rotate(&client, tenant.as_deref()).await,
    }
}

/// Exit status of a denied promotion, apart from failures (1).
const EXIT_DENIED: u8 = 2;

async fn promote(client: &ClientArgs, subject: &str, to: &str) -> anyhow::Result<ExitCode> {
    let subject = SubjectRef::parse(subject)?;
    let body = json!({ "subject": subject.to_string(), "to": to });
    let v = Client::new(client)?
        .expect_ok(Method::POST, "/v1/attest/promote", Some(body))
        .await?;
    let d = at(&v, "/data");
    let allowed = d.get("allowed").and_then(Value::as_bool) == Some(true);
    if client.output == Output::Json {
        print_json(d)?;
    } else {
        let verdict = if allowed { "ALLOW" } else { "DENY" };
        println!(
            "{verdict}: {} into {}",
            field(d, "subject"),
            field(d, "environment")
        );
        for u in at(d, "/evidence").as_array().into_iter().flatten() {
            println!(
                "  requirement {} met by {} ({} signed by {})",
                field(u, "requirement"),
                field(u, "address"),
                field(u, "predicate_type"),
                field(u, "signer")
            );
        }
        for m in at(d, "/missing").as_array().into_iter().flatten() {
            println!("  missing: {}", m.as_str().unwrap_or_default());
        }
        for n in at(d, "/not_counted").as_array().into_iter().flatten() {
            println!(
                "  not counted: {} ({})",
                field(n, "address"),
                field(n, "reason")
            );
        }
        if allowed {
            println!(
                "Promotion recorded as {} (key {}).",
                field(at(d, "/record"), "address"),
                field(at(d, "/record"), "kid")
            );
        }
    }
    Ok(if allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DENIED)
    })
}

async fn rotate(client: &ClientArgs, tenant: Option<&str>) -> anyhow::Result<ExitCode> {
    let body = match tenant {
        Some(t) => json!({ "tenant": t }),
        None => json!({}),
    };
    let v = Client::new(client)?
        .expect_ok(Method::POST, "/v1/attest/rotate", Some(body))
        .await?;
    let d = at(&v, "/data");
    if client.output == Output::Json {
        print_json(d)?;
    } else {
        println!(
            "New {} signing key {} of {} signs from now on; retired keys stay published.",
            field(d, "alg"),
            field(d, "kid"),
            field(d, "owner")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn evidence(cmd: EvidenceCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        EvidenceCommand::Export {
            server,
            subject,
            out,
        } => export(&server, &subject, out.as_deref()).await,
        EvidenceCommand::Import { server, file } => import(&server, &file).await,
    }
}

fn client(server: &ServerArgs) -> anyhow::Result<Client> {
    Client::new(&server.client_args())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn keys_path(owner: Option<&str>, pem: bool) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    if let Some(t) = owner {
        query.append_pair("tenant", t);
    }
    if pem {
        query.append_pair("format", "pem");
    }
    format!("/v1/attest/keys?{}", query.finish())
}

/// The published keys of `owner` (`platform` or `tenant:T`).
async fn fetch_keys(client: &Client, owner: &str) -> anyhow::Result<Vec<TrustedKey>> {
    let tenant = match owner {
        "platform" => None,
        other => Some(
            other
                .strip_prefix("tenant:")
                .with_context(|| format!("the server names an unknown key owner `{other}`"))?,
        ),
    };
    let v = client
        .expect_ok(Method::GET, &keys_path(tenant, false), None)
        .await?;
    jwks(&v)
}

fn jwks(v: &Value) -> anyhow::Result<Vec<TrustedKey>> {
    let keys = v
        .get("keys")
        .and_then(Value::as_array)
        .context("not a JWKS: no `keys` list")?;
    keys.iter()
        .map(|k| TrustedKey::from_jwk(k).map_err(anyhow::Error::from))
        .collect()
}

async fn keys(
    server: &ServerArgs,
    tenant: Option<&str>,
    output: KeyOutput,
) -> anyhow::Result<ExitCode> {
    let client = client(server)?;
    let pem = output == KeyOutput::Pem;
    let (status, text) = client
        .call_text(Method::GET, &keys_path(tenant, pem), None)
        .await?;
    if !status.is_success() {
        let v = serde_json::from_str(&text).unwrap_or(Value::Null);
        return Err(failure(status, &v));
    }
    if pem {
        print!("{text}");
    } else {
        let v: Value = serde_json::from_str(&text).context("the server's JWKS is not JSON")?;
        print_json(&v)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The SHA-256 of a file, read in pieces.
fn digest_file(path: &Path) -> anyhow::Result<Sha256Digest> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Sha256Digest::parse_hex(&hex).context("a SHA-256 is 64 hex digits")
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", path.display()))
}

/// Whether an index entry's `org.opencontainers.image.ref.name` names
/// the subject: its whole name, or its tag.
fn names(descriptor: &Value, name: &str) -> bool {
    let Some(r) = at(descriptor, "/annotations")
        .get(REF_NAME)
        .and_then(Value::as_str)
    else {
        return false;
    };
    let tag = name
        .rsplit_once(':')
        .filter(|(repo, tag)| !tag.contains('/') && !repo.is_empty())
        .map(|(_, tag)| tag);
    r == name || Some(r) == tag
}

/// Checks an OCI image layout holds the subject's manifest: found in
/// `index.json` by digest (or, by name, refused when its digest differs),
/// and its blob hashing to that digest, with the size the index states.
fn check_oci_layout(dir: &Path, subject: &SubjectRef) -> anyhow::Result<()> {
    let layout = read_json(&dir.join("oci-layout"))?;
    if layout.get("imageLayoutVersion").and_then(Value::as_str) != Some("1.0.0") {
        bail!(
            "{} is not an OCI image layout (oci-layout lacks imageLayoutVersion 1.0.0)",
            dir.display()
        );
    }
    let index = read_json(&dir.join("index.json"))?;
    let manifests = index
        .get("manifests")
        .and_then(Value::as_array)
        .context("index.json has no `manifests` list")?;
    let wanted = subject.digest.to_string();
    let by_digest = manifests
        .iter()
        .find(|m| m.get("digest").and_then(Value::as_str) == Some(wanted.as_str()));
    let descriptor = match by_digest {
        Some(d) => d,
        None => match manifests.iter().find(|m| names(m, &subject.name)) {
            Some(named) => bail!(
                "the OCI layout names {} with digest {}, not the subject's {wanted}: refusing to sign",
                subject.name,
                at(named, "/digest").as_str().unwrap_or("(none)")
            ),
            None => bail!(
                "the OCI layout {} has no manifest with digest {wanted} or named {}: refusing to sign",
                dir.display(),
                subject.name
            ),
        },
    };
    let blob = dir.join("blobs").join("sha256").join(subject.digest.hex());
    let actual = digest_file(&blob)?;
    if actual != subject.digest {
        bail!(
            "the manifest blob {} hashes to {actual}, not {wanted}: refusing to sign",
            blob.display()
        );
    }
    let len = std::fs::metadata(&blob)
        .with_context(|| format!("cannot read {}", blob.display()))?
        .len();
    if let Some(size) = descriptor.get("size").and_then(Value::as_u64) {
        if size != len {
            bail!(
                "the index gives the manifest {size} bytes, its blob has {len}: refusing to sign"
            );
        }
    }
    Ok(())
}

fn write_out(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

async fn sign(args: &AttestSignArgs) -> anyhow::Result<ExitCode> {
    let subject = SubjectRef::parse(&args.subject)?;
    let predicate = read_json(&args.predicate)?;
    if !predicate.is_object() {
        bail!(
            "the predicate in {} is not a JSON object",
            args.predicate.display()
        );
    }
    // Sign only what was checked: the digest is compared here, before
    // anything is sent, since the server cannot see the artifact.
    if let Some(file) = &args.artifact {
        let actual = digest_file(file)?;
        if actual != subject.digest {
            bail!(
                "{} has digest {actual}, not the subject's {}: refusing to sign",
                file.display(),
                subject.digest
            );
        }
    }
    if let Some(dir) = &args.oci_layout {
        check_oci_layout(dir, &subject)?;
    }
    let body = json!({
        "subject": subject.to_string(),
        "predicate_type": args.predicate_type,
        "predicate": predicate,
    });
    let v = client(&args.server)?
        .expect_ok(Method::POST, "/v1/attest/sign", Some(body))
        .await?;
    let envelope = at(&v, "/data/envelope")
        .as_str()
        .context("the server's answer has no envelope")?;
    match &args.out {
        Some(path) => {
            write_out(path, envelope.as_bytes())?;
            eprintln!(
                "Signed {} as {} with key {}; the envelope is stored as {}.",
                subject,
                at(&v, "/data/signer").as_str().unwrap_or("?"),
                at(&v, "/data/kid").as_str().unwrap_or("?"),
                at(&v, "/data/address").as_str().unwrap_or("?"),
            );
        }
        None => println!("{envelope}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Trusted keys from a file: a JWKS, or one or more PEM blocks (bare keys,
/// trusted at any time since PEM carries no window).
fn key_file(path: &Path) -> anyhow::Result<Vec<TrustedKey>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if text.trim_start().starts_with('{') {
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        return jwks(&v).with_context(|| format!("in {}", path.display()));
    }
    const END: &str = "-----END PUBLIC KEY-----";
    let mut keys = Vec::new();
    let mut rest = text.as_str();
    while let Some(end) = rest.find(END) {
        let (block, tail) = rest.split_at(end + END.len());
        keys.push(
            TrustedKey::from_pem(block.trim()).with_context(|| format!("in {}", path.display()))?,
        );
        rest = tail;
    }
    if keys.is_empty() {
        bail!("{} holds no JWKS and no PEM public key", path.display());
    }
    Ok(keys)
}

fn verified_json(address: &str, v: &vern_attest::Verified) -> Value {
    json!({
        "address": address,
        "verified": true,
        "kids": v.kids,
        "predicate_type": v.statement.predicate_type,
        "subjects": v.statement.subject_digests(),
    })
}

/// The stored entries about `subject` the token can read.
async fn lookup(client: &Client, subject: &Sha256Digest) -> anyhow::Result<Vec<Value>> {
    let v = client
        .expect_ok(
            Method::GET,
            &format!("/v1/evidence?subject={subject}"),
            None,
        )
        .await?;
    Ok(at(&v, "/data/evidence")
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// Verifies one stored entry against `keys` (or its owner's published
/// keys), at the time the store recorded it was signed.
async fn verify_entry(
    client: &Client,
    entry: &Value,
    keys: Option<&[TrustedKey]>,
    subject: &Sha256Digest,
) -> anyhow::Result<vern_attest::Verified> {
    let bytes = at(entry, "/envelope")
        .as_str()
        .context("a stored entry has no envelope")?;
    let owner = at(entry, "/owner").as_str().unwrap_or("platform");
    let signed_at = at(entry, "/signed_at")
        .as_u64()
        .context("a stored entry has no signing time")?;
    let fetched;
    let keys = match keys {
        Some(k) => k,
        None => {
            fetched = fetch_keys(client, owner).await?;
            &fetched
        }
    };
    let envelope = Envelope::parse(bytes.as_bytes())?;
    Ok(verify_envelope(
        &envelope,
        keys,
        Some(signed_at),
        now(),
        Some(subject),
    )?)
}

async fn verify(args: &AttestVerifyArgs) -> anyhow::Result<ExitCode> {
    let subject = args
        .subject
        .as_deref()
        .map(Sha256Digest::parse)
        .transpose()?;
    let trusted = args.key.as_deref().map(key_file).transpose()?;
    let Some(path) = &args.envelope else {
        let subject = subject.context("give an envelope file or --subject")?;
        return verify_subject(args, &subject, trusted.as_deref()).await;
    };
    let raw = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let bytes = raw.trim_ascii_end();
    let address = Sha256Digest::of(bytes).to_string();
    let envelope = Envelope::parse(bytes)?;
    let verified = match &trusted {
        // Offline: the file alone and the keys given; the signing time is
        // unknown, so each key must be valid now (PEM keys always are).
        Some(keys) => verify_envelope(&envelope, keys, None, now(), subject.as_ref())?,
        // Online: the store's record of this envelope gives its owner and
        // signing time, and the owner's published keys verify it.
        None => {
            let statement = Statement::parse(&envelope.payload_bytes()?)?;
            let client = client(&args.server)?;
            let mut found = None;
            for digest in statement.subject_digests() {
                let entries = lookup(&client, &digest).await?;
                if let Some(e) = entries.into_iter().find(|e| *at(e, "/address") == address) {
                    found = Some((e, digest));
                    break;
                }
            }
            let (entry, stored_under) = found.with_context(|| {
                format!(
                    "envelope {address} is not in the evidence store this token reads; \
                     give --key to verify it offline"
                )
            })?;
            let check = subject.as_ref().unwrap_or(&stored_under);
            verify_entry(&client, &entry, None, check).await?
        }
    };
    print_json(&verified_json(&address, &verified))?;
    Ok(ExitCode::SUCCESS)
}

/// Every stored envelope about `subject`, each verified; one that does not
/// verify fails the command, naming it.
async fn verify_subject(
    args: &AttestVerifyArgs,
    subject: &Sha256Digest,
    trusted: Option<&[TrustedKey]>,
) -> anyhow::Result<ExitCode> {
    let client = client(&args.server)?;
    let entries = lookup(&client, subject).await?;
    if entries.is_empty() {
        bail!("no stored evidence about {subject} that this token reads");
    }
    let mut out = Vec::with_capacity(entries.len());
    for entry in &entries {
        let address = at(entry, "/address").as_str().unwrap_or("?").to_owned();
        let verified = verify_entry(&client, entry, trusted, subject)
            .await
            .with_context(|| format!("envelope {address} does not verify"))?;
        out.push(verified_json(&address, &verified));
    }
    print_json(&json!({ "subject": subject, "evidence": out }))?;
    Ok(ExitCode::SUCCESS)
}

/// Writes the bundle of everything stored about `subject` that the token
/// reads: each envelope with its owner, signer and signing time, and the
/// published keys of every owner. Each envelope is verified before the
/// bundle is written.
async fn export(
    server: &ServerArgs,
    subject: &str,
    out: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let subject = Sha256Digest::parse(subject)?;
    let client = client(server)?;
    let entries = lookup(&client, &subject).await?;
    let mut owners: Vec<String> = entries
        .iter()
        .filter_map(|e| at(e, "/owner").as_str().map(str::to_owned))
        .collect();
    owners.sort();
    owners.dedup();
    let mut keys = Vec::new();
    for owner in &owners {
        keys.extend(fetch_keys(&client, owner).await?);
    }
    let mut evidence = Vec::with_capacity(entries.len());
    for entry in &entries {
        let address = at(entry, "/address").as_str().unwrap_or("?");
        verify_entry(&client, entry, Some(&keys), &subject)
            .await
            .with_context(|| format!("envelope {address} does not verify; nothing exported"))?;
        evidence.push(json!({
            "address": address,
            "owner": at(entry, "/owner"),
            "signer": at(entry, "/signer"),
            "signed_at": at(entry, "/signed_at"),
            "envelope": at(entry, "/envelope"),
        }));
    }
    let bundle = json!({
        "type": BUNDLE_TYPE,
        "subject": subject,
        "evidence": evidence,
        "keys": keys.iter().map(TrustedKey::to_jwk).collect::<Vec<_>>(),
    });
    let text = serde_json::to_string_pretty(&bundle)?;
    match out {
        Some(path) => write_out(path, text.as_bytes())?,
        None => {
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{text}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Sends a bundle to the server, which verifies every envelope against
/// the keys it trusts and stores all or none.
async fn import(server: &ServerArgs, file: &Path) -> anyhow::Result<ExitCode> {
    let bundle = read_json(file)?;
    if bundle.get("type").and_then(Value::as_str) != Some(BUNDLE_TYPE) {
        bail!(
            "{} is not an evidence bundle ({BUNDLE_TYPE})",
            file.display()
        );
    }
    let v = client(server)?
        .expect_ok(Method::POST, "/v1/evidence/import", Some(bundle))
        .await?;
    print_json(at(&v, "/data"))?;
    Ok(ExitCode::SUCCESS)
}
