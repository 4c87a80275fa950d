//! The CA over HTTP. `POST /v1/pki/svid` (an X.509-SVID from a CSR) and
//! `POST /v1/pki/jwt-svid` issue SVIDs of the caller's own SPIFFE ID, which
//! comes from its verified principal and never from the request; each is
//! decided as `svid.issue` on the caller itself, with the DNS names asked
//! for in the context. `GET /v1/pki/bundle` (the SPIFFE bundle) and `GET
//! /v1/pki/ca.pem` (the trust anchors) are public documents.
//! `POST /v1/pki/rotate`, `POST /v1/pki/import` and `GET /v1/pki/certs` are
//! the operators'. Every issuance and every refusal is on record with the
//! SPIFFE ID, the serial and the reason (never a key).

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use vern_pki::{CertFilter, DnsName, JwtRequest, X509Request, MAX_DNS_NAMES};
use zeroize::Zeroizing;

use crate::auth::Caller;
use crate::authz::authorize_svid;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;

/// `POST /v1/pki/svid`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SvidRequest {
    /// PEM CSR; the key never leaves the workload.
    csr: String,
    /// Seconds, or a duration such as `1h`.
    #[serde(default)]
    ttl: Option<Value>,
    /// DNS names besides the SPIFFE ID (a policy must allow them).
    #[serde(default)]
    dns_names: Vec<String>,
    /// For a node: the service of the workload it attested, which one of
    /// its registration entries must name.
    #[serde(default)]
    service: Option<String>,
}

/// `aud` as the SPIFFE JWT-SVID specification has it: one or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Audience {
    One(String),
    Many(Vec<String>),
}

/// `POST /v1/pki/jwt-svid`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JwtSvidRequest {
    audience: Audience,
    #[serde(default)]
    ttl: Option<Value>,
    /// For a node: the service of the workload it attested.
    #[serde(default)]
    service: Option<String>,
}

/// `POST /v1/pki/rotate`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateRequest {
    /// How long the new CA is published before it signs [default: the
    /// configured delay].
    #[serde(default)]
    signs_after: Option<Value>,
}

/// `POST /v1/pki/import`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImportRequest {
    /// PEM: the CA certificate, then its issuers up to and including the
    /// root.
    certificate: String,
    /// PEM PKCS#8 key of the CA certificate.
    key: String,
    #[serde(default)]
    signs_after: Option<Value>,
}

/// Query of `GET /v1/pki/certs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CertsQuery {
    expiring_within: Option<String>,
    include_expired: Option<bool>,
    limit: Option<usize>,
    after: Option<String>,
}

/// A number of seconds, or a duration such as `90s` or `1h`.
fn seconds(field: &str, v: &Value) -> Result<u64, ApiError> {
    Ok(super::duration_field(field, v)?.as_secs())
}

fn dns_names(names: &[String]) -> Result<Vec<DnsName>, ApiError> {
    if names.len() > MAX_DNS_NAMES {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_DNS_NAMES} DNS names"
        )));
    }
    let mut out: Vec<DnsName> = Vec::new();
    for name in names {
        let parsed = DnsName::parse(name).map_err(ApiError::bad_request)?;
        if !out.contains(&parsed) {
            out.push(parsed);
        }
    }
    out.sort();
    Ok(out)
}

/// Puts a refusal on record with its reason, and the action it refused
/// when no decision named it yet.
fn refused(caller: &Caller, err: ApiError) -> ApiError {
    if let Some(slot) = &caller.audit {
        slot.detail("refused", &err.message());
        slot.action_if_undecided(caller.route_action, caller.subject.as_resource());
    }
    err
}

fn detail(caller: &Caller, name: &str, value: &str) {
    if let Some(slot) = &caller.audit {
        slot.detail(name, value);
    }
}

/// Whose SVID a request obtains, and the caller that is decided on.
struct Target {
    /// The caller; for a node, with the services of its entries.
    caller: Caller,
    /// The principal whose SPIFFE ID the SVID carries.
    principal: vern_core::Principal,
    /// The lifetime the node's entry for the service sets.
    entry_ttl: Option<u64>,
}

impl Target {
    fn resource(&self) -> vern_policy::Resource {
        match &self.principal.kind {
            vern_core::PrincipalKind::Service { scope } => vern_policy::Resource::Service {
                id: self.principal.id.clone(),
                scope: scope.clone(),
            },
            _ => self.caller.subject.as_resource(),
        }
    }
}

/// The caller itself; or, for a node, the service it names, which Cedar
/// lets it have only when one of its registration entries names it
/// (`vern.node-workloads`). The SPIFFE ID comes from the entry's service,
/// never from anything else in the request.
async fn target(
    state: &AppState,
    caller: &Caller,
    barrier: &vern_seal::Barrier,
    service: Option<&str>,
) -> Result<Target, ApiError> {
    let node = matches!(caller.principal.kind, vern_core::PrincipalKind::Node);
    // Without a service, every caller (a node too: the agent's own SVID,
    // `spiffe://<td>/vern/agent/<name>`) obtains its own SVID.
    let Some(service) = service else {
        return Ok(Target {
            caller: caller.clone(),
            principal: caller.principal.clone(),
            entry_ttl: None,
        });
    };
    if !node {
        return Err(ApiError::bad_request(
            "only a node names a service; any other caller obtains its own SVID",
        ));
    }
    let principal = vern_pki::service_principal(service)?;
    let entries = state
        .inner
        .pki
        .workloads(barrier, Some(&caller.principal.id))
        .await?;
    let node_caller = super::workloads::node_caller(caller, &entries);
    detail(caller, "node", &caller.principal.id);
    detail(caller, "service", service);
    let entry_ttl = entries
        .iter()
        .filter(|e| e.service == service)
        .filter_map(|e| e.ttl)
        .max();
    Ok(Target {
        caller: node_caller,
        principal,
        entry_ttl,
    })
}

/// `POST /v1/pki/svid`: an X.509-SVID of the caller's SPIFFE ID from its
/// CSR (for a node, of the service of a workload it attested).
pub(crate) async fn issue_svid(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<SvidRequest>,
) -> Result<Response, ApiError> {
    issue_svid_for(&state, &caller, req)
        .await
        .map_err(|e| refused(&caller, e))
}

async fn issue_svid_for(
    state: &AppState,
    caller: &Caller,
    req: SvidRequest,
) -> Result<Response, ApiError> {
    let barrier = state.inner.seal.barrier()?;
    let dns = dns_names(&req.dns_names)?;
    let mut ttl = req.ttl.as_ref().map(|t| seconds("ttl", t)).transpose()?;
    let target = target(state, caller, &barrier, req.service.as_deref()).await?;
    authorize_svid(&target.caller, target.resource(), &dns)?;
    if let Some(cap) = target.entry_ttl {
        ttl = Some(ttl.map_or(cap, |t| t.min(cap)));
    }
    let pki = &state.inner.pki;
    let spiffe_id = pki.spiffe_id_of(&target.principal)?;
    detail(caller, "spiffe_id", &spiffe_id.to_string());
    if !dns.is_empty() {
        let names: Vec<&str> = dns.iter().map(DnsName::as_str).collect();
        detail(caller, "dns_names", &names.join(","));
    }
    let svid = pki
        .issue_x509(
            &barrier,
            &X509Request {
                spiffe_id: &spiffe_id,
                csr_pem: &req.csr,
                ttl,
                dns_names: &dns,
                principal: &caller.principal.id,
            },
        )
        .await?;
    detail(caller, "serial", &svid.record.serial);
    detail(caller, "not_after", &svid.record.not_after.to_string());
    state
        .inner
        .metrics
        .certificate_issued(&svid.spiffe_id, svid.record.not_after);
    Ok(Json(json!({ "data": {
        "certificate": svid.certificate_pem,
        "chain": svid.chain_pem,
        "spiffe_id": svid.spiffe_id,
        "dns_names": svid.record.dns_names,
        "serial": svid.record.serial,
        "expires_at": svid.record.not_after,
    }}))
    .into_response())
}

/// `POST /v1/pki/jwt-svid`: a JWT-SVID of the caller's SPIFFE ID.
pub(crate) async fn issue_jwt_svid(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<JwtSvidRequest>,
) -> Result<Response, ApiError> {
    issue_jwt_for(&state, &caller, req)
        .await
        .map_err(|e| refused(&caller, e))
}

async fn issue_jwt_for(
    state: &AppState,
    caller: &Caller,
    req: JwtSvidRequest,
) -> Result<Response, ApiError> {
    let barrier = state.inner.seal.barrier()?;
    let audience = match req.audience {
        Audience::One(a) => vec![a],
        Audience::Many(list) => list,
    };
    let ttl = req.ttl.as_ref().map(|t| seconds("ttl", t)).transpose()?;
    let target = target(state, caller, &barrier, req.service.as_deref()).await?;
    authorize_svid(&target.caller, target.resource(), &[])?;
    let pki = &state.inner.pki;
    let spiffe_id = pki.spiffe_id_of(&target.principal)?;
    detail(caller, "spiffe_id", &spiffe_id.to_string());
    detail(caller, "audience", &audience.join(","));
    let svid = pki
        .issue_jwt(
            &barrier,
            &JwtRequest {
                spiffe_id: &spiffe_id,
                audience: &audience,
                ttl,
            },
        )
        .await?;
    if let Some(slot) = &caller.audit {
        slot.sensitive("jwt_svid", svid.token.as_bytes());
    }
    detail(caller, "kid", &svid.kid);
    detail(caller, "expires_at", &svid.expires_at.to_string());
    Ok(Json(json!({ "data": {
        "token": svid.token,
        "spiffe_id": svid.spiffe_id,
        "expires_at": svid.expires_at,
        "issued_at": svid.issued_at,
        "kid": svid.kid,
    }}))
    .into_response())
}

/// `GET /v1/pki/bundle`: the SPIFFE bundle of the trust domain.
pub(crate) async fn bundle(State(state): State<AppState>) -> Result<Response, ApiError> {
    let barrier = state.inner.seal.barrier()?;
    let bundle = state.inner.pki.bundle(&barrier).await?;
    Ok(Json(bundle).into_response())
}

/// `GET /v1/pki/ca.pem`: the trust anchors, PEM.
pub(crate) async fn ca_pem(State(state): State<AppState>) -> Result<Response, ApiError> {
    let barrier = state.inner.seal.barrier()?;
    let pem = state.inner.pki.trust_anchors_pem(&barrier).await?;
    let mut resp = pem.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-pem-file"),
    );
    Ok(resp)
}

fn rotation_json(r: &vern_pki::Rotation) -> Value {
    json!({ "data": {
        "ca": r.ca,
        "jwt_kid": r.jwt_kid,
        "sequence": r.sequence,
    }})
}

/// `POST /v1/pki/rotate`: a new CA and JWT-SVID key, published now and
/// signing after the delay.
pub(crate) async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<RotateRequest>,
) -> Result<Response, ApiError> {
    let run = async {
        let barrier = state.inner.seal.barrier()?;
        let delay = req
            .signs_after
            .as_ref()
            .map(|d| seconds("signs_after", d))
            .transpose()?;
        let rotation = state.inner.pki.rotate(&barrier, delay).await?;
        detail(&caller, "ca", &rotation.ca.id);
        detail(&caller, "signs_from", &rotation.ca.signs_from.to_string());
        Ok::<_, ApiError>(Json(rotation_json(&rotation)).into_response())
    };
    run.await.map_err(|e| refused(&caller, e))
}

/// `POST /v1/pki/import`: an external root or intermediate becomes the CA
/// after the delay.
pub(crate) async fn import(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<ImportRequest>,
) -> Result<Response, ApiError> {
    let key = Zeroizing::new(req.key);
    let run = async {
        let barrier = state.inner.seal.barrier()?;
        let delay = req
            .signs_after
            .as_ref()
            .map(|d| seconds("signs_after", d))
            .transpose()?;
        let rotation = state
            .inner
            .pki
            .import(&barrier, &req.certificate, &key, delay)
            .await?;
        detail(&caller, "ca", &rotation.ca.id);
        detail(&caller, "signs_from", &rotation.ca.signs_from.to_string());
        Ok::<_, ApiError>(Json(rotation_json(&rotation)).into_response())
    };
    run.await.map_err(|e| refused(&caller, e))
}

/// `GET /v1/pki/certs`: issued certificates, soonest expiry first.
pub(crate) async fn certs(
    State(state): State<AppState>,
    query: Result<Query<CertsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let barrier = state.inner.seal.barrier()?;
    let expiring_within = q
        .expiring_within
        .map(|w| seconds("expiring_within", &Value::String(w)))
        .transpose()?;
    let page = state
        .inner
        .pki
        .certificates(
            &barrier,
            &CertFilter {
                expiring_within,
                include_expired: q.include_expired.unwrap_or(false),
                after: q.after,
                limit: q.limit.unwrap_or(1000),
            },
        )
        .await?;
    Ok(Json(json!({ "data": {
        "certificates": page.certificates,
        "next": page.next,
    }}))
    .into_response())
}
