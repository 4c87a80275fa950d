//! Artifact trust over HTTP: the published signing keys, signing a
//! statement about an artifact by digest, and reading the evidence store.
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
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};
use vern_attest::{
    verify_envelope, Envelope, Evidence, EvidenceStore, KeyOwner, KeyStore, Provenance,
    Sha256Digest, Statement, SubjectRef, TrustedKey,
};
use vern_core::{EnvironmentId, PrincipalKind, ProjectId, RequestId, Scope, TenantId};
use vern_policy::Resource;

use crate::auth::Caller;
use crate::authz::authorize_on;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;

/// Keys are Ed25519, published as soon as they are made.
const KEYS: KeyStore = KeyStore {
    alg: vern_attest::KeyAlg::Ed25519,
    publish_delay: 0,
};

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
    let keys = KEYS.existing(&barrier, &owner).await?;
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
    let (envelope, kid) = KEYS.sign(&barrier, &owner, &statement, now).await?;
    let bytes = envelope.to_bytes()?;
    let trusted = KEYS.published(&barrier, &owner, now).await?;
    let provenance = Provenance {
        signer: caller.principal.id.clone(),
        signed_at: now,
    };
    let (stored, _) = EvidenceStore
        .put(&barrier, &owner, &bytes, &trusted, &provenance, now)
        .await?;
    if let Some(slot) = &caller.audit {
        slot.detail("evidence", &stored.address.to_string());
        slot.detail("signer", &caller.principal.id);
        slot.detail("kid", &kid);
        slot.detail("subject", &subject.digest.to_string());
    }
    let envelope = String::from_utf8(bytes).map_err(|e| ApiError::internal(&e))?;
    Ok(Json(json!({
        "request_id": id.as_str(),
        "data": {
            "envelope": envelope,
            "address": stored.address,
            "kid": kid,
            "signer": caller.principal.id,
            "owner": owner.to_string(),
            "signed_at": now,
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
    if !address.starts_with("sha256:") {
        return Err(ApiError::bad_request(
            "an evidence address is `sha256:` followed by 64 lowercase hex digits",
        ));
    }
    let address = Sha256Digest::parse(&address)?;
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
    if !subject.starts_with("sha256:") {
        return Err(ApiError::bad_request(
            "`subject` is `sha256:` followed by 64 lowercase hex digits",
        ));
    }
    let subject = Sha256Digest::parse(&subject)?;
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

/// One entry of an evidence bundle (`vern evidence export`).
#[derive(Deserialize)]
pub(crate) struct BundleEntry {
    envelope: String,
    owner: String,
    signer: String,
    signed_at: u64,
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
    let mut keys = KEYS.existing(barrier, owner).await?;
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
/// envelope verified against this site's trusted keys at the time the
/// bundle says it was signed. One that is refused refuses the whole
/// bundle; the rest go in one batch, all or none. Each stored envelope
/// keeps the signer the bundle names; the audit record names the
/// importer and every address.
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
            .and_then(|env| verify_envelope(&env, keys, Some(e.signed_at), now, None))
            .map_err(refused)?;
        let provenance = Provenance {
            signer: e.signer,
            signed_at: e.signed_at,
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
