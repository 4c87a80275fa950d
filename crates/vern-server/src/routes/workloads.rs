//! Registration entries of `vern agent` nodes over HTTP:
//! `POST /v1/pki/workloads` registers one, `GET /v1/pki/workloads` lists
//! them, `DELETE /v1/pki/workloads/{id}` removes one. An entry is decided
//! on as the service it names (`workload.register`, `workload.read`), so a
//! tenant administrator manages entries of its own tenant's services only;
//! a node reads its own entries and nothing else. Every change is on
//! record with the node, the service and the selectors.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use vern_core::PrincipalKind;
use vern_pki::{Selector, WorkloadEntry, WorkloadSpec};
use vern_policy::{Holdings, Resource, SubjectKind};

use crate::auth::Caller;
use crate::authz::{allows, allows_action, authorize_on};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;

/// `POST /v1/pki/workloads`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegisterBody {
    /// The node: `node.<name>` or `<name>`.
    node: String,
    /// `unix:uid:N`, `unix:gid:N`, `unix:path:/PATH`, `unix:sha256:HEX`.
    selectors: Vec<String>,
    /// The service client id.
    service: String,
    /// Seconds, or a duration such as `1h`.
    #[serde(default)]
    ttl: Option<Value>,
}

impl RegisterBody {
    fn spec(self) -> Result<WorkloadSpec, ApiError> {
        let selectors = self
            .selectors
            .iter()
            .map(|s| Selector::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        let ttl = self
            .ttl
            .as_ref()
            .map(|t| super::duration_field("ttl", t).map(|d| d.as_secs()))
            .transpose()?;
        Ok(WorkloadSpec {
            node: self.node,
            selectors,
            service: self.service,
            ttl,
        })
    }
}

/// Plans the `workloads:` section of an apply: every declared entry must
/// be one the caller may register (`workload.register` on its service),
/// and pruning removes only entries it may. Writes nothing: the returned
/// batch is committed with the clients; a refused or malformed entry
/// refuses the whole apply.
pub(crate) async fn plan_declared(
    state: &AppState,
    caller: &Caller,
    barrier: &vern_seal::Barrier,
    declared: Vec<RegisterBody>,
    prune: bool,
) -> Result<(vern_pki::WorkloadPlan, vern_seal::ViewBatch), ApiError> {
    let mut specs = Vec::with_capacity(declared.len());
    for (i, body) in declared.into_iter().enumerate() {
        let at = |e: ApiError| {
            ApiError::new(e.status_code(), format!("workloads[{i}]: {}", e.message()))
        };
        let resource = service_resource(&body.service).map_err(at)?;
        if !allows_action(caller, "workload.register", resource) {
            return Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                format!(
                    "workloads[{i}]: you may not register workloads of {}",
                    body.service
                ),
            ));
        }
        specs.push(body.spec().map_err(at)?);
    }
    let may_manage = |e: &WorkloadEntry| {
        service_resource(&e.service).is_ok_and(|r| allows_action(caller, "workload.register", r))
    };
    Ok(state
        .inner
        .pki
        .plan_workloads(barrier, &specs, prune, &may_manage)
        .await?)
}

/// A plan as the apply's answer shows it.
pub(crate) fn plan_json(plan: &vern_pki::WorkloadPlan) -> Value {
    let list = |v: &[WorkloadEntry]| v.iter().map(entry_json).collect::<Vec<_>>();
    json!({
        "create": list(&plan.create),
        "delete": list(&plan.delete),
        "unchanged": list(&plan.unchanged),
        "kept": list(&plan.kept),
    })
}

/// Query of `GET /v1/pki/workloads`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    node: Option<String>,
}

/// The caller as a node, with the services its entries name: what Cedar
/// needs to let it obtain their SVIDs and read those entries.
pub(crate) fn node_caller(caller: &Caller, entries: &[WorkloadEntry]) -> Caller {
    let mut services: Vec<String> = entries.iter().map(|e| e.service.clone()).collect();
    services.sort();
    services.dedup();
    let mut out = caller.clone();
    out.subject.kind = SubjectKind::Node { services };
    out
}

/// The service an entry names, as the resource of a decision.
fn service_resource(service: &str) -> Result<Resource, ApiError> {
    let principal = vern_pki::service_principal(service)?;
    match principal.kind {
        PrincipalKind::Service { scope } => Ok(Resource::Service {
            id: principal.id,
            scope,
        }),
        _ => Err(ApiError::bad_request("not a service")),
    }
}

fn entry_json(e: &WorkloadEntry) -> Value {
    serde_json::to_value(e).unwrap_or_else(|_| json!({}))
}

fn detail(caller: &Caller, name: &str, value: &str) {
    if let Some(slot) = &caller.audit {
        slot.detail(name, value);
    }
}

/// `POST /v1/pki/workloads`: registers an entry for a service the caller
/// may register workloads of.
pub(crate) async fn register(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<RegisterBody>,
) -> Result<Response, ApiError> {
    let barrier = state.inner.seal.barrier()?;
    let resource = service_resource(&body.service)?;
    authorize_on(&caller, resource)?;
    let spec = body.spec()?;
    let entry = state.inner.pki.register_workload(&barrier, &spec).await?;
    detail(&caller, "entry", &entry.id);
    detail(&caller, "node", &entry.node);
    let selectors: Vec<String> = entry.selectors.iter().map(ToString::to_string).collect();
    detail(&caller, "selectors", &selectors.join(","));
    Ok(Json(json!({ "data": entry_json(&entry) })).into_response())
}

/// `GET /v1/pki/workloads`: the entries the caller may read; a node's own
/// for a node.
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let barrier = state.inner.seal.barrier()?;
    let pki = &state.inner.pki;
    let node_filter = q
        .node
        .as_deref()
        .map(vern_pki::node_client_id)
        .transpose()?;
    let is_node = matches!(caller.principal.kind, PrincipalKind::Node);
    let (caller, entries) = if is_node {
        if node_filter
            .as_ref()
            .is_some_and(|n| *n != caller.principal.id)
        {
            return Err(ApiError::forbidden());
        }
        let entries = pki.workloads(&barrier, Some(&caller.principal.id)).await?;
        (node_caller(&caller, &entries), entries)
    } else {
        let entries = pki.workloads(&barrier, node_filter.as_deref()).await?;
        (caller, entries)
    };
    // Platform readers see every entry; everyone else, entry by entry,
    // those of services a policy lets them read.
    let all = allows(&caller, Resource::Platform);
    let mut visible = Vec::new();
    for e in &entries {
        if all || allows(&caller, service_resource(&e.service)?) {
            visible.push(entry_json(e));
        }
    }
    if !all
        && !is_node
        && visible.is_empty()
        && !Holdings::of(&caller.subject).holds_anywhere("workload.read")
    {
        return Err(ApiError::forbidden());
    }
    Ok(Json(json!({ "data": { "entries": visible } })).into_response())
}

/// `DELETE /v1/pki/workloads/{id}`: removes an entry of a service the
/// caller may register workloads of. One it may not see is a 404, like one
/// that does not exist.
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let barrier = state.inner.seal.barrier()?;
    let pki = &state.inner.pki;
    let Some(entry) = pki.workload(&barrier, &id).await? else {
        if let Some(slot) = &caller.audit {
            slot.action_if_undecided(caller.route_action, caller.subject.as_resource());
        }
        return Err(ApiError::not_found());
    };
    if !allows(&caller, service_resource(&entry.service)?) {
        return Err(ApiError::not_found());
    }
    pki.delete_workload(&barrier, &entry).await?;
    detail(&caller, "entry", &entry.id);
    detail(&caller, "node", &entry.node);
    detail(&caller, "service", &entry.service);
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}
