//! Artifact trust over HTTP: the published signing keys and their
//! rotation, signing a statement about an artifact by digest, reading and
//! importing the evidence store, promotion gates (declared through the
//! apply route, read back one by one) and promotion decisions.
//!
//! Who checks what when signing: the server never sees the artifact, so it
//! signs the digest the request states (`subject`, `NAME@sha256:HEX`) and
//! nothing else; the client states the digest it computed from the
//! artifact (`vern attest sign` does, and refuses a mismatch before
//! sending). The server checks the digest's form, that the statement is an
//! in-toto Statement v1 about it, and that the caller may sign for the
//! environment (`attest.sign`); it signs with that environment's tenant
//! key, verifies the envelope against the tenant's published keys, stores
//! it, and puts the envelope's address, the signer and the key id in the
//! request's audit record.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};
use vern_attest::gates::{self, Counted};
use vern_attest::statement::PROMOTION_V1;
use vern_attest::{
    verify_envelope, Envelope, Evidence, EvidenceStore, Gate, GatePlan, GateStore, KeyOwner,
    KeyStore, Provenance, Requirement, Sha256Digest, Statement, SubjectRef, TrustedKey,
};
use vern_core::{EnvironmentId, PrincipalKind, ProjectId, RequestId, Scope, TenantId};
use vern_policy::Resource;

use crate::auth::Caller;
use crate::authz::{allows_action, authorize_on};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;

/// The signing keys: new ones of the configured algorithm, published as
/// soon as they are made (an envelope is verified against keys fetched
/// after it was signed, so no publish delay is needed).
fn keystore(state: &AppState) -> KeyStore {
    KeyStore {
        alg: state.inner.config.attest_key_type,
        publish_delay: 0,
    }
}

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(e.to_string())
}

/// Query of `GET /v1/attest/keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeysQuery {
    tenant: Option<String>,
    format: Option<String>,
}

/// `GET /v1/attest/keys`: a tenant's published keys (`?tenant=T`) or the
/// platform's, current and retired, as a JWKS with each key's owner and
/// validity window, or (`?format=pem`) as concatenated PEM blocks. Public
/// keys are public: no token, and reading creates no key.
pub(crate) async fn keys(
    State(state): State<AppState>,
    query: Result<Query<KeysQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let owner = match &q.tenant {
        Some(t) => KeyOwner::Tenant(TenantId::parse(t).map_err(bad)?),
        None => KeyOwner::Platform,
    };
    let barrier = state.inner.seal.barrier()?;
    let keys = keystore(&state).existing(&barrier, &owner).await?;
    match q.format.as_deref() {
        None | Some("jwks" | "json") => {
            let jwks: Vec<Value> = keys.iter().map(vern_attest::TrustedKey::to_jwk).collect();
            Ok(Json(json!({ "keys": jwks })).into_response())
        }
        Some("pem") => {
            let mut pem = String::new();
            for k in &keys {
                pem.push_str(&k.public.to_pem()?);
            }
            let mut resp = pem.into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-pem-file"),
            );
            Ok(resp)
        }
        Some(other) => Err(ApiError::bad_request(format!(
            "format `{}` must be jwks or pem",
            crate::audit::printable(other)
        ))),
    }
}

/// Body of `POST /v1/attest/sign`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignBody {
    /// `NAME@sha256:HEX`: the digest the client checked.
    subject: String,
    predicate_type: String,
    predicate: Value,
    /// `tenant/project/environment`; a service's own when absent.
    environment: Option<String>,
}

fn parse_scope(s: &str) -> Result<Scope, ApiError> {
    let parts: Vec<&str> = s.split('/').collect();
    let [tenant, project, environment] = parts.as_slice() else {
        return Err(ApiError::bad_request(format!(
            "environment `{}` is not tenant/project/environment",
            crate::audit::printable(s)
        )));
    };
    Ok(Scope {
        tenant: TenantId::parse(tenant).map_err(bad)?,
        project: ProjectId::parse(project).map_err(bad)?,
        environment: EnvironmentId::parse(environment).map_err(bad)?,
    })
}

/// `POST /v1/attest/sign`: signs an in-toto Statement v1 about `subject`
/// with the tenant key of `environment` (see the module documentation for
/// who checks what), stores the envelope as evidence and answers its
/// exact bytes (`envelope`, a string) and address.
pub(crate) async fn sign(
    State(state): State<AppState>,
    caller: Caller,
    Extension(id): Extension<RequestId>,
    ApiJson(body): ApiJson<SignBody>,
) -> Result<Response, ApiError> {
    let scope = match (&body.environment, &caller.principal.kind) {
        (Some(e), _) => parse_scope(e)?,
        (None, PrincipalKind::Service { scope }) => scope.clone(),
        (None, PrincipalKind::Operator { .. } | PrincipalKind::Node) => {
            return Err(ApiError::bad_request(
                "an operator names the environment to sign for (`environment`)",
            ))
        }
    };
    authorize_on(&caller, Resource::Environment(scope.clone()))?;
    let subject = SubjectRef::parse(&body.subject)?;
    if !body.predicate.is_object() {
        return Err(ApiError::bad_request("`predicate` must be a JSON object"));
    }
    let statement = Statement::new(&subject, &body.predicate_type, body.predicate)?;
    let owner = KeyOwner::Tenant(scope.tenant.clone());
    let now = state.inner.clock.unix_seconds();
    let barrier = state.inner.seal.barrier()?;
    let (bytes, kid, stored) =
        sign_and_store(&state, &barrier, &owner, &statement, &caller, now).await?;
    // Signatures are deterministic, so the same statement signed again is
    // the same bytes, already stored: the store's first record stands, and
    // the answer says whose it is rather than claim this caller's.
    let (signer, signed_at) = if stored.created {
        (caller.principal.id.clone(), now)
    } else {
        EvidenceStore
            .get(&barrier, &owner, &stored.address)
            .await?
            .map_or((caller.principal.id.clone(), now), |e| {
                (e.signer, e.signed_at)
            })
    };
    if let Some(slot) = &caller.audit {
        slot.detail("evidence", &stored.address.to_string());
        slot.detail("signer", &caller.principal.id);
        slot.detail("kid", &kid);
        slot.detail("subject", &subject.digest.to_string());
        if !stored.created {
            slot.detail("already_stored_by", &signer);
        }
    }
    let envelope = String::from_utf8(bytes).map_err(|e| ApiError::internal(&e))?;
    Ok(Json(json!({
        "request_id": id.as_str(),
        "data": {
            "envelope": envelope,
            "address": stored.address,
            "kid": kid,
            "signer": signer,
            "owner": owner.to_string(),
            "signed_at": signed_at,
            "created": stored.created,
        },
    }))
    .into_response())
}

/// Query of the evidence reads: whose evidence, when not the caller's own
/// tenant's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EvidenceQuery {
    subject: Option<String>,
    tenant: Option<String>,
}

/// Whose evidence a read is about, decided as `evidence.read` on that
/// tenant: `?tenant=T`, else the caller's own tenant. An operator of no
/// tenant that names none reads every owner's (`None`), decided on the
/// platform.
fn reader_owner(caller: &Caller, tenant: Option<&str>) -> Result<Option<KeyOwner>, ApiError> {
    let tenant = match (tenant, &caller.principal.kind) {
        (Some(t), _) => Some(TenantId::parse(t).map_err(bad)?),
        (None, PrincipalKind::Service { scope }) => Some(scope.tenant.clone()),
        (None, PrincipalKind::Operator { tenant, .. }) => tenant.clone(),
        // A node reads nothing; the decision on the platform refuses it.
        (None, PrincipalKind::Node) => None,
    };
    authorize_on(
        caller,
        tenant
            .as_ref()
            .map_or(Resource::Platform, |t| Resource::Tenant(t.clone())),
    )?;
    Ok(tenant.map(KeyOwner::Tenant))
}

fn entry_json(e: &Evidence) -> Value {
    json!({
        "address": e.address,
        "owner": e.owner.to_string(),
        "signer": e.signer,
        "signed_at": e.signed_at,
        "kids": e.kids,
        "predicate_type": e.predicate_type,
        "subjects": e.subjects,
        "envelope": String::from_utf8_lossy(&e.bytes),
    })
}

/// `GET /v1/evidence/sha256:HEX`: the envelope stored under that address,
/// exactly its bytes (their SHA-256 is the address), with who signed it in
/// `X-Vern-Signer`. Another tenant's evidence is not found.
pub(crate) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(address): Path<String>,
    query: Result<Query<EvidenceQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if q.subject.is_some() {
        return Err(ApiError::bad_request(
            "`subject` is a query of GET /v1/evidence",
        ));
    }
    let owner = reader_owner(&caller, q.tenant.as_deref())?.unwrap_or(KeyOwner::Platform);
    let address = prefixed_digest(&address, "an evidence address")?;
    let barrier = state.inner.seal.barrier()?;
    let entry = EvidenceStore
        .get(&barrier, &owner, &address)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let mut resp = Bytes::from(entry.bytes).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&entry.signer) {
        resp.headers_mut().insert("x-vern-signer", v);
    }
    Ok(resp)
}

/// A digest as the evidence routes take it: with its `sha256:` prefix,
/// which [`Sha256Digest::parse`] alone would let go missing.
fn prefixed_digest(text: &str, what: &str) -> Result<Sha256Digest, ApiError> {
    if !text.starts_with("sha256:") {
        return Err(ApiError::bad_request(format!(
            "{what} is `sha256:` followed by 64 lowercase hex digits"
        )));
    }
    Ok(Sha256Digest::parse(text)?)
}

/// `GET /v1/evidence?subject=sha256:HEX`: the stored envelopes about that
/// digest, of the caller's tenant (or `?tenant=T`), or of every owner for
/// platform auditors naming no tenant.
pub(crate) async fn by_subject(
    State(state): State<AppState>,
    caller: Caller,
    Extension(id): Extension<RequestId>,
    query: Result<Query<EvidenceQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let owner = reader_owner(&caller, q.tenant.as_deref())?;
    let subject = q
        .subject
        .ok_or_else(|| ApiError::bad_request("`subject=sha256:HEX` is required"))?;
    let subject = prefixed_digest(&subject, "`subject`")?;
    let barrier = state.inner.seal.barrier()?;
    let entries = EvidenceStore
        .by_subject(&barrier, owner.as_ref(), &subject)
        .await?;
    let list: Vec<Value> = entries.iter().map(entry_json).collect();
    Ok(Json(json!({
        "request_id": id.as_str(),
        "data": { "subject": subject, "evidence": list },
    }))
    .into_response())
}

/// The most envelopes one import takes.
const MAX_IMPORT: usize = 1000;

/// One entry of an evidence bundle (`vern evidence export`). Its `signer`
/// and `signed_at`, and any other member, are read by nobody: they are not
/// covered by the envelope's signature, so anyone could have written them.
#[derive(Deserialize)]
pub(crate) struct BundleEntry {
    envelope: String,
    owner: String,
}

/// Body of `POST /v1/evidence/import`: a bundle as `vern evidence export`
/// writes it. Its `keys` are not trusted (anyone can put keys beside an
/// envelope); the importing site's own are.
#[derive(Deserialize)]
pub(crate) struct ImportBody {
    evidence: Vec<BundleEntry>,
}

/// The keys this site trusts for `owner`'s evidence: the owner's own
/// published keys here and the configured keys of other sites with that
/// owner.
async fn trusted_for(
    state: &AppState,
    barrier: &vern_seal::Barrier,
    owner: &KeyOwner,
) -> Result<Vec<TrustedKey>, ApiError> {
    let mut keys = keystore(state).existing(barrier, owner).await?;
    keys.extend(
        state
            .inner
            .config
            .attest_trusted_keys
            .iter()
            .filter(|k| k.owner == *owner)
            .cloned(),
    );
    Ok(keys)
}

/// `POST /v1/evidence/import`: stores a bundle's envelopes, each for its
/// owner, after `evidence.import` is decided on every owner and every
/// envelope verified against this site's trusted keys. One that is refused
/// refuses the whole bundle; the rest go in one batch, all or none.
///
/// Only signed data and this site's own view are believed. A DSSE
/// signature covers neither a signing time nor who asked for it, and the
/// bundle's claims of both are unsigned, so each key must be valid now, in
/// this site's view of its window (a key the exporting site has retired
/// stops importing once this site's trusted keys say so), and each stored
/// envelope records this import: the importer as its signer and now as its
/// time. A promotion gate naming a signer is met by imported evidence
/// only through its importer. The audit record names the importer and
/// every address.
pub(crate) async fn import(
    State(state): State<AppState>,
    caller: Caller,
    Extension(id): Extension<RequestId>,
    ApiJson(body): ApiJson<ImportBody>,
) -> Result<Response, ApiError> {
    if body.evidence.is_empty() || body.evidence.len() > MAX_IMPORT {
        return Err(ApiError::bad_request(format!(
            "a bundle holds 1 to {MAX_IMPORT} envelopes"
        )));
    }
    let mut owners = Vec::new();
    for e in &body.evidence {
        let owner = KeyOwner::parse(&e.owner)?;
        if !owners.contains(&owner) {
            owners.push(owner);
        }
    }
    for owner in &owners {
        authorize_on(
            &caller,
            match owner {
                KeyOwner::Platform => Resource::Platform,
                KeyOwner::Tenant(t) => Resource::Tenant(t.clone()),
            },
        )?;
    }
    let now = state.inner.clock.unix_seconds();
    let barrier = state.inner.seal.barrier()?;
    let mut trusted = Vec::with_capacity(owners.len());
    for owner in &owners {
        trusted.push((owner.clone(), trusted_for(&state, &barrier, owner).await?));
    }
    let mut items = Vec::with_capacity(body.evidence.len());
    for (i, e) in body.evidence.into_iter().enumerate() {
        let owner = KeyOwner::parse(&e.owner)?;
        let keys = trusted
            .iter()
            .find(|(o, _)| *o == owner)
            .map(|(_, k)| k.as_slice())
            .unwrap_or_default();
        let bytes = e.envelope.into_bytes();
        let refused = |err: vern_attest::AttestError| {
            ApiError::bad_request(format!(
                "envelope {} ({}) is refused, so nothing is imported: {err}",
                i + 1,
                Sha256Digest::of(&bytes)
            ))
        };
        let verified = Envelope::parse(&bytes)
            .and_then(|env| verify_envelope(&env, keys, None, now, None))
            .map_err(refused)?;
        let provenance = Provenance {
            signer: caller.principal.id.clone(),
            signed_at: now,
        };
        items.push((owner, bytes, verified, provenance));
    }
    let stored = EvidenceStore.put_all(&barrier, &items).await?;
    let addresses: Vec<String> = stored.iter().map(|s| s.address.to_string()).collect();
    if let Some(slot) = &caller.audit {
        slot.detail("evidence", &addresses.join(","));
        slot.detail("importer", &caller.principal.id);
    }
    let created = stored.iter().filter(|s| s.created).count();
    Ok(Json(json!({
        "request_id": id.as_str(),
        "data": { "imported": addresses, "created": created },
    }))
    .into_response())
}

/// Body of `POST /v1/attest/rotate`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateBody {
    /// The tenant whose key rotates; the caller's own tenant when absent,
    /// and the platform's key for an operator of no tenant.
    tenant: Option<String>,
}

/// `POST /v1/attest/rotate`: a new signing key for a tenant or the
/// platform (`attest.rotate` on it), of the configured algorithm. It signs
/// from now on; the old key is retired now and stays published with its
/// window, so what it signed still verifies.
pub(crate) async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    Extension(id): Extension<RequestId>,
    ApiJson(body): ApiJson<RotateBody>,
) -> Result<Response, ApiError> {
    let tenant = match (&body.tenant, &caller.principal.kind) {
        (Some(t), _) => Some(TenantId::parse(t).map_err(bad)?),
        (None, PrincipalKind::Service { scope }) => Some(scope.tenant.clone()),
        (None, PrincipalKind::Operator { tenant, .. }) => tenant.clone(),
        // A node rotates nothing; the decision on the platform refuses it.
        (None, PrincipalKind::Node) => None,
    };
    let (owner, resource) = match tenant {
        Some(t) => (KeyOwner::Tenant(t.clone()), Resource::Tenant(t)),
        None => (KeyOwner::Platform, Resource::Platform),
    };
    authorize_on(&caller, resource)?;
    let now = state.inner.clock.unix_seconds();
    let barrier = state.inner.seal.barrier()?;
    let keys = keystore(&state);
    let kid = keys.rotate(&barrier, &owner, now).await?;
    if let Some(slot) = &caller.audit {
        slot.detail("kid", &kid);
        slot.detail("owner", &owner.to_string());
    }
    let published = keys.existing(&barrier, &owner).await?;
    Ok(Json(json!({
        "request_id": id.as_str(),
        "data": {
            "kid": kid,
            "owner": owner.to_string(),
            "alg": keys.alg.name(),
            "keys": published.iter().map(TrustedKey::to_jwk).collect::<Vec<_>>(),
        },
    }))
    .into_response())
}

/// One requirement of a `promotion:` entry in an apply.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RequirementBody {
    predicate_type: String,
    #[serde(default)]
    signer: Option<String>,
    #[serde(default)]
    max_critical: Option<u64>,
}

/// One `promotion:` entry of an apply: an environment's gate.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GateBody {
    environment: String,
    require: Vec<RequirementBody>,
}

/// A gate's signer as a principal id: a principal id as given, or the
/// principal a SPIFFE ID of this site's trust domain names (the inverse of
/// `vern_pki::Workload::spiffe_id`), so either form matches the signer the
/// evidence store records.
fn signer_id(state: &AppState, signer: &str) -> Result<String, String> {
    if !signer.starts_with("spiffe://") {
        return Ok(signer.to_owned());
    }
    let shown = crate::audit::printable(signer);
    let id = vern_pki::SpiffeId::parse(signer)
        .map_err(|e| format!("signer `{shown}` is not a SPIFFE ID: {e}"))?;
    let ours = &state.inner.config.pki.trust_domain;
    if id.trust_domain() != ours {
        return Err(format!(
            "signer `{shown}` is of trust domain `{}`, not this site's `{}`",
            id.trust_domain().as_str(),
            ours.as_str()
        ));
    }
    let segments: Vec<&str> = id.path().trim_start_matches('/').split('/').collect();
    // Each name must be one a scope or client may have, so that the id
    // built from them names exactly one principal (no `.` to shift parts).
    if segments.iter().any(|s| TenantId::parse(s).is_err()) {
        return Err(format!(
            "signer `{shown}` names no service or operator of this site"
        ));
    }
    match segments.as_slice() {
        ["t", t, "p", p, "e", e, "s", name] => Ok(format!("svc.{t}.{p}.{e}.{name}")),
        ["t", t, "operator", name] => Ok(format!("op.{t}.{name}")),
        ["operator", name] => Ok(format!("op.{name}")),
        _ => Err(format!(
            "signer `{shown}` names no service or operator of this site"
        )),
    }
}

/// Plans the `promotion:` section of an apply: each gate parsed, its
/// signers read as principal ids, and `attest.gate` decided on its
/// environment (one refused refuses the whole apply); stored gates not
/// declared are pruned only where the caller may set them.
pub(crate) async fn plan_gates(
    state: &AppState,
    caller: &Caller,
    barrier: &vern_seal::Barrier,
    declared: Vec<GateBody>,
    prune: bool,
) -> Result<(GatePlan, vern_seal::ViewBatch), ApiError> {
    let mut gates = Vec::with_capacity(declared.len());
    for (i, g) in declared.into_iter().enumerate() {
        let at = |e: &dyn std::fmt::Display| ApiError::bad_request(format!("promotion[{i}]: {e}"));
        let environment = gates::parse_environment(&g.environment).map_err(|e| at(&e))?;
        let mut require = Vec::with_capacity(g.require.len());
        for r in g.require {
            require.push(Requirement {
                predicate_type: r.predicate_type,
                signer: r
                    .signer
                    .map(|s| signer_id(state, &s))
                    .transpose()
                    .map_err(|e| at(&e))?,
                max_critical: r.max_critical,
            });
        }
        let gate = Gate::new(environment, require).map_err(|e| at(&e))?;
        if !allows_action(
            caller,
            "attest.gate",
            Resource::Environment(gate.environment.clone()),
        ) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "promotion[{i}]: you may not set the promotion gate of {}",
                    gate.environment
                ),
            ));
        }
        gates.push(gate);
    }
    let manages =
        |env: &Scope| allows_action(caller, "attest.gate", Resource::Environment(env.clone()));
    Ok(GateStore.plan(barrier, &gates, prune, &manages).await?)
}

/// The `promotion` part of an apply's answer.
pub(crate) fn gate_plan_json(plan: &GatePlan) -> Value {
    json!({
        "create": plan.create,
        "update": plan.update,
        "delete": plan.delete,
        "unchanged": plan.unchanged,
        "kept": plan.kept,
    })
}

/// Body of `POST /v1/attest/promote`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PromoteBody {
    /// `NAME@sha256:HEX`.
    subject: String,
    /// `tenant/project/environment`.
    to: String,
}

/// `POST /v1/attest/promote`: decides whether `subject` may be promoted
/// into the environment `to` (`attest.promote` on it decides who may ask).
///
/// The environment's gate is weighed against the tenant's stored evidence
/// about the subject's digest; an entry counts only if its stored record
/// reads back intact, its signatures verify with this site's keys of the
/// tenant (its own or trusted imported ones) valid when this site recorded
/// it signed, and its statement names the digest. Entries that do not
/// count are listed with why. No gate for the environment is a denial:
/// promoting where nobody declared what is required would make every
/// environment open by default. On allow, Vern signs a promotion record
/// (predicate `https://vern.dev/attestation/promotion/v1`) with the
/// tenant's key and stores it as evidence; the audit record names the
/// decision, the evidence used and the record.
pub(crate) async fn promote(
    State(state): State<AppState>,
    caller: Caller,
    Extension(id): Extension<RequestId>,
    ApiJson(body): ApiJson<PromoteBody>,
) -> Result<Response, ApiError> {
    let scope = parse_scope(&body.to)?;
    authorize_on(&caller, Resource::Environment(scope.clone()))?;
    let subject = SubjectRef::parse(&body.subject)?;
    let owner = KeyOwner::Tenant(scope.tenant.clone());
    let now = state.inner.clock.unix_seconds();
    let barrier = state.inner.seal.barrier()?;
    if let Some(slot) = &caller.audit {
        slot.detail("subject", &subject.to_string());
        slot.detail("environment", &scope.to_string());
    }
    let Some(gate) = GateStore.get(&barrier, &scope).await? else {
        let missing = vec![format!("no promotion gate for {scope}")];
        let answer = Answer {
            allowed: false,
            used: &[],
            missing: &missing,
            not_counted: &[],
            record: None,
        };
        return Ok(decision(&caller, &id, &subject, &scope, answer));
    };
    let trusted = trusted_for(&state, &barrier, &owner).await?;
    let entries = EvidenceStore
        .by_subject_each(&barrier, &owner, &subject.digest)
        .await?;
    if entries.len() >= vern_attest::evidence::MAX_LOOKUP {
        // Fail closed: a newer scan beyond the lookup could hide a finding.
        let missing = vec![format!(
            "more than {} stored envelopes about {}: too many to weigh them all",
            vern_attest::evidence::MAX_LOOKUP - 1,
            subject.digest
        )];
        let answer = Answer {
            allowed: false,
            used: &[],
            missing: &missing,
            not_counted: &[],
            record: None,
        };
        return Ok(decision(&caller, &id, &subject, &scope, answer));
    }
    let mut counted = Vec::new();
    let mut not_counted = Vec::new();
    for (address, entry) in entries {
        let checked = entry.and_then(|e| {
            let envelope = e.envelope()?;
            let v = verify_envelope(
                &envelope,
                &trusted,
                Some(e.signed_at),
                now,
                Some(&subject.digest),
            )?;
            Ok((e, v))
        });
        match checked {
            Ok((e, v)) => counted.push(Counted {
                address,
                signer: e.signer,
                signed_at: e.signed_at,
                statement: v.statement,
            }),
            Err(vern_attest::AttestError::Seal(vern_seal::SealError::Corrupt(_))) => {
                not_counted.push(json!({
                    "address": address,
                    "reason": "its stored record failed integrity checks",
                }));
            }
            Err(e @ vern_attest::AttestError::Seal(_)) => return Err(e.into()),
            Err(e) => not_counted.push(json!({ "address": address, "reason": e.to_string() })),
        }
    }
    let outcome = gates::evaluate(&gate, &counted);
    if !outcome.allowed {
        let answer = Answer {
            allowed: false,
            used: &outcome.used,
            missing: &outcome.missing,
            not_counted: &not_counted,
            record: None,
        };
        return Ok(decision(&caller, &id, &subject, &scope, answer));
    }
    let predicate = gates::promotion_predicate(&gate, &outcome, &caller.principal.id, now);
    let statement = Statement::new(&subject, PROMOTION_V1, predicate)?;
    let (bytes, kid, stored) =
        sign_and_store(&state, &barrier, &owner, &statement, &caller, now).await?;
    let record = json!({
        "address": stored.address,
        "kid": kid,
        "envelope": String::from_utf8_lossy(&bytes),
    });
    if let Some(slot) = &caller.audit {
        slot.detail("evidence", &stored.address.to_string());
        slot.detail("kid", &kid);
    }
    let answer = Answer {
        allowed: true,
        used: &outcome.used,
        missing: &[],
        not_counted: &not_counted,
        record: Some(record),
    };
    Ok(decision(&caller, &id, &subject, &scope, answer))
}

/// Signs `statement` with `owner`'s current key and stores the envelope
/// as signed by the caller now: the envelope's bytes, the key id, and
/// what the store did.
async fn sign_and_store(
    state: &AppState,
    barrier: &vern_seal::Barrier,
    owner: &KeyOwner,
    statement: &Statement,
    caller: &Caller,
    now: u64,
) -> Result<(Vec<u8>, String, vern_attest::Stored), ApiError> {
    let keys = keystore(state);
    let (envelope, kid) = keys.sign(barrier, owner, statement, now).await?;
    let bytes = envelope.to_bytes()?;
    let trusted = keys.published(barrier, owner, now).await?;
    let provenance = Provenance {
        signer: caller.principal.id.clone(),
        signed_at: now,
    };
    let (stored, _) = EvidenceStore
        .put(barrier, owner, &bytes, &trusted, &provenance, now)
        .await?;
    Ok((bytes, kid, stored))
}

/// What a promotion request is answered.
struct Answer<'a> {
    allowed: bool,
    used: &'a [gates::Used],
    missing: &'a [String],
    not_counted: &'a [Value],
    record: Option<Value>,
}

/// The answer to a promotion request, allowed or not, with its audit
/// details.
fn decision(
    caller: &Caller,
    id: &RequestId,
    subject: &SubjectRef,
    scope: &Scope,
    answer: Answer<'_>,
) -> Response {
    let Answer {
        allowed,
        used,
        missing,
        not_counted,
        record,
    } = answer;
    let used_json: Vec<Value> = used
        .iter()
        .map(|u| {
            json!({
                "requirement": u.requirement,
                "address": u.address,
                "predicate_type": u.predicate_type,
                "signer": u.signer,
                "critical": u.critical,
            })
        })
        .collect();
    if let Some(slot) = &caller.audit {
        slot.detail("promotion", if allowed { "allow" } else { "deny" });
        let addresses: Vec<String> = used.iter().map(|u| u.address.to_string()).collect();
        slot.detail("used", &addresses.join(","));
        if !missing.is_empty() {
            slot.detail("missing", &missing.join("; "));
        }
    }
    Json(json!({
        "request_id": id.as_str(),
        "data": {
            "allowed": allowed,
            "subject": subject.to_string(),
            "environment": scope.to_string(),
            "evidence": used_json,
            "missing": missing,
            "not_counted": not_counted,
            "record": record,
        },
    }))
    .into_response()
}

/// Query of `GET /v1/attest/gates`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GateQuery {
    environment: String,
}

/// `GET /v1/attest/gates?environment=T/P/E`: the environment's promotion
/// gate as it is stored (`attest.gate` on the environment: those who may
/// set it may read it); 404 when it has none.
pub(crate) async fn gate(
    State(state): State<AppState>,
    caller: Caller,
    Extension(id): Extension<RequestId>,
    query: Result<Query<GateQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let scope = parse_scope(&q.environment)?;
    authorize_on(&caller, Resource::Environment(scope.clone()))?;
    let barrier = state.inner.seal.barrier()?;
    let gate = GateStore
        .get(&barrier, &scope)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(json!({
        "request_id": id.as_str(),
        "data": { "environment": scope.to_string(), "require": gate.require },
    }))
    .into_response())
}
