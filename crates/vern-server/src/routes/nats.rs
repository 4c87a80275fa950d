//! NATS: the rendered nats-server configuration (`nats.config`, platform
//! administrators: it holds the callout and system users' passwords) and
//! the path report (`nats.paths`, on a tenant or the platform).

use std::collections::BTreeSet;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use vern_authority::ClientRecord;
use vern_core::{PrincipalKind, TenantId};
use vern_nats::paths::PathReport;
use vern_nats::sites::Topology;
use vern_nats::NatsKeys;
use vern_policy::{Resource, Subject, SubjectKind};

use crate::auth::Caller;
use crate::authz::authorize_on;
use crate::error::ApiError;
use crate::state::AppState;

/// Query of the configuration: nats-server's TLS files, all three or none.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigQuery {
    /// nats-server's certificate chain file.
    tls_cert: Option<String>,
    /// nats-server's key file.
    tls_key: Option<String>,
    /// Where the CA bundle (`ca_pem` of the answer) will be written.
    tls_ca: Option<String>,
}

/// `GET /v1/nats/config[?tls_cert=F&tls_key=F&tls_ca=F]`: the nats-server
/// configuration, one account per tenant that has a service client; with
/// TLS files, a `tls` block requiring client certificates that chain to
/// Vern's trust anchors, which the answer carries as `ca_pem`.
pub(crate) async fn config(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ConfigQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let tls = match (q.tls_cert, q.tls_key, q.tls_ca) {
        (None, None, None) => None,
        (Some(cert_file), Some(key_file), Some(ca_file)) => Some(vern_nats::config::TlsFiles {
            cert_file,
            key_file,
            ca_file,
        }),
        _ => {
            return Err(ApiError::bad_request(
                "tls_cert, tls_key and tls_ca go together: give all three or none",
            ))
        }
    };
    let tls_block = tls
        .as_ref()
        .map(vern_nats::config::render_tls)
        .transpose()?;
    let barrier = state.inner.seal.barrier()?;
    let keys = NatsKeys::load_or_create(&barrier).await?;
    let records = services(&state, &barrier).await?;
    let topology = Topology::load(&barrier).await?;
    let tenants: BTreeSet<String> = records
        .iter()
        .filter_map(|r| r.kind.scope().map(|s| s.tenant.to_string()))
        .collect();
    // Exports and imports exist only where a policy grants a declared
    // import now: the path report's cross-account paths.
    let report = PathReport::build(decided(&state, &records, now(&caller))?, &topology);
    // bcrypt is slow on purpose: hashing the users' passwords runs off the
    // async workers.
    let (mut rendered, keys, tenants) = tokio::task::spawn_blocking(move || {
        vern_nats::config::render(&keys, &tenants, &report.cross_account, &topology)
            .map(|rendered| (rendered, keys, tenants))
    })
    .await
    .map_err(|e| ApiError::internal(&e))??;
    let ca_pem = match tls_block {
        Some(block) => {
            rendered.push_str(&block);
            Some(state.inner.pki.trust_anchors_pem(&barrier).await?)
        }
        None => None,
    };
    if let Some(slot) = &caller.audit {
        slot.detail(
            "accounts",
            &tenants.iter().cloned().collect::<Vec<_>>().join(","),
        );
    }
    Ok(Json(json!({ "data": {
        "config": rendered,
        "accounts": tenants,
        "issuer": keys.issuer_public(),
        "xkey": keys.xkey_public(),
        "ca_pem": ca_pem,
    }}))
    .into_response())
}

/// Query of the path report.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PathsQuery {
    tenant: Option<String>,
}

/// `GET /v1/nats/paths[?tenant=T]`: who may publish and subscribe on
/// which subjects, as the policies decide now; the caller's own tenant by
/// default, every tenant for a platform operator.
pub(crate) async fn paths(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<PathsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let tenant = match (q.tenant.as_deref(), &caller.principal.kind) {
        (Some(t), _) => Some(TenantId::parse(t).map_err(|e| ApiError::bad_request(e.to_string()))?),
        (None, PrincipalKind::Service { scope }) => Some(scope.tenant.clone()),
        (None, PrincipalKind::Operator { tenant, .. }) => tenant.clone(),
        // A node belongs to no tenant: it asks about the platform, which
        // its policies never allow.
        (None, PrincipalKind::Node) => None,
    };
    authorize_on(
        &caller,
        tenant
            .as_ref()
            .map_or(Resource::Platform, |t| Resource::Tenant(t.clone())),
    )?;
    let barrier = state.inner.seal.barrier()?;
    let records = services(&state, &barrier).await?;
    // Every account's principals are decided, so that imports from the
    // tenant asked about appear too; the report is cut to it afterwards.
    let topology = Topology::load(&barrier).await?;
    let mut report = PathReport::build(decided(&state, &records, now(&caller))?, &topology);
    if let Some(t) = &tenant {
        report = report.only_account(t.as_str());
    }
    Ok(Json(json!({ "data": report })).into_response())
}

fn now(caller: &Caller) -> i64 {
    i64::try_from(caller.time).unwrap_or(i64::MAX)
}

/// Each service's account, id and permissions as the policies decide them
/// now, for every service that declares anything.
fn decided(
    state: &AppState,
    records: &[ClientRecord],
    time: i64,
) -> Result<Vec<(String, String, vern_nats::perms::Permissions)>, ApiError> {
    let mut out = Vec::new();
    for record in records {
        let Some(scope) = record.kind.scope() else {
            continue;
        };
        if record.nats.is_empty() {
            continue;
        }
        let declared = crate::nats::declared_of(&record.nats)?;
        let subject = Subject {
            id: record.client_id.clone(),
            kind: SubjectKind::Service {
                scope: scope.clone(),
                scopes: record.scopes.clone(),
            },
        };
        let permissions = crate::nats::decide_subjects(
            state,
            &subject,
            &scope,
            &declared,
            "",
            time,
            &mut Vec::new(),
        )?;
        out.push((
            scope.tenant.to_string(),
            record.client_id.clone(),
            permissions,
        ));
    }
    Ok(out)
}

/// Every service client.
async fn services(
    state: &AppState,
    barrier: &vern_seal::Barrier,
) -> Result<Vec<ClientRecord>, ApiError> {
    let authority = &state.inner.authority;
    let mut out = Vec::new();
    for id in authority.client_ids(barrier).await? {
        match authority.client(barrier, &id).await {
            Ok(r) if r.kind.scope().is_some() => out.push(r),
            Ok(_) | Err(vern_authority::AuthError::NoClient(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}
