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
use vern_nats::perms::{self, Declared};
use vern_nats::NatsKeys;
use vern_policy::{Binding, Query as PolicyQuery, Resource, Subject, SubjectKind};

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
    let tenants: BTreeSet<String> = services(&state, &barrier)
        .await?
        .into_iter()
        .filter_map(|r| r.kind.scope().map(|s| s.tenant.to_string()))
        .collect();
    let rendered = vern_nats::config::render(&keys, &tenants)?;
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
    };
    authorize_on(
        &caller,
        tenant
            .as_ref()
            .map_or(Resource::Platform, |t| Resource::Tenant(t.clone())),
    )?;
    let barrier = state.inner.seal.barrier()?;
    let now = i64::try_from(caller.time).unwrap_or(i64::MAX);
    let mut principals = Vec::new();
    for record in services(&state, &barrier).await? {
        let Some(scope) = record.kind.scope() else {
            continue;
        };
        if tenant.as_ref().is_some_and(|t| *t != scope.tenant) || record.nats.is_empty() {
            continue;
        }
        let declared = Declared::parse(&record.nats.publish, &record.nats.subscribe)?;
        let subject = Subject {
            id: record.client_id.clone(),
            kind: SubjectKind::Service {
                scope: scope.clone(),
                scopes: record.scopes.clone(),
            },
        };
        let permissions = perms::derive(&record.client_id, &declared, |dir, s| {
            state
                .inner
                .policies
                .decide(&PolicyQuery {
                    subject: subject.clone(),
                    action: dir.action().to_owned(),
                    resource: Resource::nats_subject(scope.tenant.clone(), s.as_str()),
                    source_ip: String::new(),
                    time: now,
                    binding: Binding::None,
                    dns_names: Vec::new(),
                })
                .allowed
        })?;
        principals.push((
            scope.tenant.to_string(),
            record.client_id.clone(),
            permissions,
        ));
    }
    let mut report = PathReport::build(principals);
    if let Some(t) = &tenant {
        report = report.only_account(t.as_str());
    }
    Ok(Json(json!({ "data": report })).into_response())
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
