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

/// `GET /v1/nats/config`: the nats-server configuration, one account per
/// tenant that has a service client.
pub(crate) async fn config(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
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
    let (rendered, keys, tenants) = tokio::task::spawn_blocking(move || {
        vern_nats::config::render(&keys, &tenants, &report.cross_account, &topology)
            .map(|rendered| (rendered, keys, tenants))
    })
    .await
    .map_err(|e| ApiError::internal(&e))??;
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
