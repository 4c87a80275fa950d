//! Client management: `POST /v1/auth/clients`, `GET|LIST /v1/auth/clients`,
//! `GET|DELETE /v1/auth/clients/:id`, `POST /v1/auth/apply`, and signing key
//! rotation. Each client is decided on as the principal it is, and nobody
//! creates or changes a client that would hold more than the caller holds.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use vern_authority::{ApplyGate, ClientKind, ClientRecord, ClientSpec, Declaration};
use vern_policy::{Holdings, Resource, Subject, SubjectKind};

use crate::auth::Caller;
use crate::authz::{allows, allows_action};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;

fn record_json(r: &ClientRecord) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or_else(|_| json!({}));
    if let Some(map) = v.as_object_mut() {
        map.remove("secret_hmac");
        map.insert("has_secret".to_owned(), json!(r.secret_hmac.is_some()));
    }
    v
}

/// The client as the principal it is (or would be), with the scopes or
/// roles it holds.
pub(crate) fn as_subject(client_id: &str, kind: &ClientKind, scopes: &[String]) -> Option<Subject> {
    let kind = match kind {
        ClientKind::Service { .. } => SubjectKind::Service {
            scope: kind.scope()?,
            scopes: scopes.to_vec(),
        },
        ClientKind::Operator { roles, tenant } => SubjectKind::Operator {
            roles: roles.clone(),
            tenant: match tenant {
                Some(_) => Some(kind.operator_tenant()?),
                None => None,
            },
            root: false,
        },
        ClientKind::Node => SubjectKind::Node {
            services: Vec::new(),
        },
    };
    Some(Subject {
        id: client_id.to_owned(),
        kind,
    })
}

/// The caller's reach over clients: a Cedar decision on the client as a
/// principal, and the rule that nobody makes a principal holding more than
/// it holds itself.
pub(crate) struct Reach<'a> {
    caller: &'a Caller,
    holdings: Holdings,
}

impl<'a> Reach<'a> {
    pub(crate) fn of(caller: &'a Caller) -> Self {
        Self {
            caller,
            holdings: Holdings::of(&caller.subject),
        }
    }

    fn decides(&self, record: &ClientRecord) -> bool {
        as_subject(&record.client_id, &record.kind, &record.scopes)
            .is_some_and(|s| allows(self.caller, s.as_resource()))
    }
}

impl ApplyGate for Reach<'_> {
    fn manages(&self, existing: &ClientRecord) -> bool {
        self.decides(existing)
    }

    fn may_grant(
        &self,
        client_id: &str,
        kind: &ClientKind,
        scopes: &[String],
    ) -> Result<(), String> {
        let subject = as_subject(client_id, kind, scopes)
            .ok_or_else(|| format!("client `{client_id}` is malformed"))?;
        if let ClientKind::Operator { roles, tenant } = kind {
            // A built-in role outside its reach would silently allow
            // nothing; refuse it instead.
            for r in roles.iter().filter_map(|r| vern_policy::roles::role(r)) {
                let tenant_role = r.reach == vern_policy::roles::RoleReach::Tenant;
                if tenant_role != tenant.is_some() {
                    return Err(if tenant_role {
                        format!("role `{}` needs a tenant (--tenant)", r.name)
                    } else {
                        format!("role `{}` is a platform role and takes no tenant", r.name)
                    });
                }
            }
        }
        if !allows(self.caller, subject.as_resource()) {
            return Err(format!("you may not manage client `{client_id}`"));
        }
        self.holdings
            .covers(&Holdings::of(&subject))
            .map_err(|lack| {
                format!("client `{client_id}` would hold {lack}, which you do not hold")
            })
    }
}

/// `POST /v1/auth/clients`.
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(spec): ApiJson<ClientSpec>,
) -> Result<Response, ApiError> {
    check_nats(&spec)?;
    let barrier = state.inner.seal.barrier()?;
    let authority = &state.inner.authority;
    let reach = Reach::of(&caller);
    let created = authority
        .create_client_with(&barrier, &spec, &reach)
        .await?;
    let mut body = record_json(&created.record);
    if let Some(secret) = &created.secret {
        if let Some(slot) = &caller.audit {
            slot.sensitive("client_secret", secret.expose());
        }
        // `record_json` always returns an object.
        if let Some(map) = body.as_object_mut() {
            map.insert(
                "client_secret".to_owned(),
                json!(String::from_utf8_lossy(secret.expose())),
            );
        }
    }
    Ok((StatusCode::OK, Json(json!({ "data": body }))).into_response())
}

/// Refuses a client whose NATS subjects are not NATS subjects (400).
fn check_nats(spec: &ClientSpec) -> Result<(), ApiError> {
    crate::nats::declared_of(&spec.nats)
        .map(|_| ())
        .map_err(|e| ApiError::bad_request(format!("client `{}`: {e}", spec.name)))
}

/// `GET /v1/auth/clients` (and `LIST`): every client for those who may
/// read the platform's list, else the clients the caller may read.
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let barrier = state.inner.seal.barrier()?;
    let authority = &state.inner.authority;
    let ids = authority.client_ids(&barrier).await?;
    if allows(&caller, Resource::Platform) {
        return Ok(Json(json!({ "data": { "keys": ids } })).into_response());
    }
    let reach = Reach::of(&caller);
    let mut keys = Vec::new();
    for id in ids {
        if let Ok(r) = authority.client(&barrier, &id).await {
            if reach.decides(&r) {
                keys.push(id);
            }
        }
    }
    if keys.is_empty() && !reach.holdings.holds_anywhere("client.read") {
        return Err(ApiError::forbidden());
    }
    Ok(Json(json!({ "data": { "keys": keys } })).into_response())
}

/// Reads a client the caller may see; one it may not is a 404, like one
/// that does not exist.
async fn visible(
    state: &AppState,
    caller: &Caller,
    barrier: &vern_seal::Barrier,
    id: &str,
) -> Result<ClientRecord, ApiError> {
    match state.inner.authority.client(barrier, id).await {
        Ok(r) if Reach::of(caller).decides(&r) => Ok(r),
        Ok(_) | Err(vern_authority::AuthError::NoClient(_)) => {
            // The decision on a client that does not exist, for the record.
            allows(caller, Resource::Platform);
            Err(ApiError::not_found())
        }
        Err(e) => Err(e.into()),
    }
}

/// `GET /v1/auth/clients/:id`.
pub(crate) async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let barrier = state.inner.seal.barrier()?;
    let r = visible(&state, &caller, &barrier, &id).await?;
    Ok(Json(json!({ "data": record_json(&r) })).into_response())
}

/// `DELETE /v1/auth/clients/:id`: also ends the client's live tokens.
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let barrier = state.inner.seal.barrier()?;
    let record = visible(&state, &caller, &barrier, &id).await?;
    // A node's registration entries go with it, in the same transaction:
    // a node created again under the same name starts with none.
    let mut also = Vec::new();
    if matches!(record.kind, vern_authority::ClientKind::Node) {
        also.push(
            state
                .inner
                .pki
                .node_workloads_removal(&barrier, &id)
                .await?,
        );
    }
    state
        .inner
        .authority
        .delete_client_with(&barrier, &id, also)
        .await?;
    state.inner.nats.revoke(crate::nats::Revocation::Client(id));
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApplyBody {
    /// The clients; without it, clients are left alone (never pruned).
    #[serde(default)]
    clients: Option<Vec<ClientSpec>>,
    /// The auth methods' declarations; without it, roles are left alone.
    #[serde(default)]
    auth: Option<AuthSection>,
    /// The promotion gates; without it, gates are left alone.
    #[serde(default)]
    promotion: Option<Vec<crate::routes::attest::GateBody>>,
    /// Registration entries of `vern agent` nodes; without it, entries are
    /// left alone.
    #[serde(default)]
    workloads: Option<Vec<crate::routes::workloads::RegisterBody>>,
    /// NATS sites and subject mappings; without it, they are left alone.
    #[serde(default)]
    nats: Option<vern_nats::sites::NatsSection>,
    #[serde(default)]
    prune: bool,
    #[serde(default)]
    dry_run: bool,
}

/// `auth:` of an apply: the auth methods' roles.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuthSection {
    #[serde(default)]
    jwt: Option<JwtSection>,
}

/// `auth.jwt:` of an apply: every JWT role, in Vault's names.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JwtSection {
    #[serde(default)]
    roles: Vec<Value>,
}

/// `POST /v1/auth/apply`: declare the whole client set (GitOps), and with
/// `auth` and `promotion` the JWT roles and the promotion gates, all
/// committed in one transaction or not at all.
pub(crate) async fn apply(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<ApplyBody>,
) -> Result<Response, ApiError> {
    let barrier = state.inner.seal.barrier()?;
    let roles = match body.auth.and_then(|a| a.jwt) {
        Some(jwt) => Some(
            jwt.roles
                .into_iter()
                .enumerate()
                .map(|(i, r)| {
                    crate::routes::jwt_auth::role_spec(None, r).map_err(|e| {
                        ApiError::bad_request(format!("auth.jwt.roles[{i}]: {}", e.message()))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        None => None,
    };
    // The decision on the request itself; each client and role is then
    // decided on its own by the gate.
    allows(&caller, Resource::Platform);
    for spec in body.clients.iter().flatten() {
        check_nats(spec)?;
    }
    let (gates, mut also) = match body.promotion {
        Some(list) => {
            let (plan, writes) =
                crate::routes::attest::plan_gates(&state, &caller, &barrier, list, body.prune)
                    .await?;
            (Some(plan), vec![writes])
        }
        None => (None, Vec::new()),
    };
    // Entries are decided and planned before anything is written, and
    // committed in the clients' transaction: all of the file or none.
    let workloads = match body.workloads {
        Some(declared) => {
            let (plan, writes) = crate::routes::workloads::plan_declared(
                &state, &caller, &barrier, declared, body.prune,
            )
            .await?;
            also.push(writes);
            Some(plan)
        }
        None => None,
    };
    let nats = match &body.nats {
        Some(section) => {
            let (plan, writes) = plan_nats(&caller, &barrier, section, body.prune).await?;
            also.push(writes);
            Some(plan)
        }
        None => None,
    };
    // A node the apply prunes takes its registration entries with it, in
    // the same transaction (those the entries' own plan deletes aside), so
    // a node declared again under its name starts with none.
    let mut entries_of_nodes = if body.prune && body.clients.is_some() && !body.dry_run {
        let skip = workloads.as_ref().map_or(&[][..], |w| &w.delete[..]);
        state
            .inner
            .pki
            .workloads_removal_by_node(&barrier, skip)
            .await?
    } else {
        std::collections::BTreeMap::new()
    };
    let declared = Declaration {
        clients: body.clients.as_deref(),
        jwt_roles: roles.as_deref(),
    };
    let plan = state
        .inner
        .authority
        .apply_declared_with(
            &barrier,
            declared,
            body.prune,
            body.dry_run,
            &Reach::of(&caller),
            also,
            &mut |id| entries_of_nodes.remove(id),
        )
        .await?;
    if let (Some(g), Some(slot), false) = (&gates, &caller.audit, body.dry_run) {
        for (name, envs) in [
            ("gates_created", &g.create),
            ("gates_updated", &g.update),
            ("gates_deleted", &g.delete),
        ] {
            if !envs.is_empty() {
                slot.detail(name, &envs.join(","));
            }
        }
    }
    if let (Some(n), Some(slot), false) = (&nats, &caller.audit, body.dry_run) {
        for (name, items) in [
            ("nats_created", &n.create),
            ("nats_updated", &n.update),
            ("nats_deleted", &n.delete),
        ] {
            if !items.is_empty() {
                slot.detail(name, &items.join(","));
            }
        }
    }
    if !body.dry_run {
        // Changed clients' tokens are refused from now on; deleted
        // clients' too. Their live NATS connections end with them.
        for id in plan.update.iter().map(|(id, _)| id).chain(&plan.delete) {
            state
                .inner
                .nats
                .revoke(crate::nats::Revocation::Client(id.clone()));
        }
    }
    let secrets: serde_json::Map<String, Value> = plan
        .secrets
        .iter()
        .map(|(id, s)| (id.clone(), json!(String::from_utf8_lossy(s.expose()))))
        .collect();
    let update: Vec<Value> = plan
        .update
        .iter()
        .map(|(id, changes)| json!({ "client_id": id, "changes": changes }))
        .collect();
    Ok(Json(json!({ "data": {
        "dry_run": body.dry_run,
        "create": plan.create,
        "update": update,
        "delete": plan.delete,
        "unchanged": plan.unchanged,
        "kept": plan.kept,
        "secrets": secrets,
        "jwt_roles": crate::routes::jwt_auth::plan_json(&plan.jwt_roles),
        "promotion": gates.as_ref().map(crate::routes::attest::gate_plan_json),
        "workloads": workloads.as_ref().map(crate::routes::workloads::plan_json),
        "nats": nats,
    }}))
    .into_response())
}

/// Plans the `nats:` section: this site and the linked ones need
/// `nats.site` on the platform, each tenant's mappings `nats.mapping` on
/// that tenant; with prune, undeclared ones go only where the caller
/// would be allowed to declare them.
async fn plan_nats(
    caller: &Caller,
    barrier: &vern_seal::Barrier,
    section: &vern_nats::sites::NatsSection,
    prune: bool,
) -> Result<(vern_nats::sites::SitePlan, vern_seal::ViewBatch), ApiError> {
    section.check()?;
    let platform = allows_action(caller, "nats.site", Resource::Platform);
    if section.declares_sites() && !platform {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "nats: you may not declare NATS sites (nats.site on the platform)",
        ));
    }
    let tenant_of = |t: &str| vern_core::TenantId::parse(t).ok().map(Resource::Tenant);
    for t in section.mapping_tenants() {
        let allowed = tenant_of(t).is_some_and(|r| allows_action(caller, "nats.mapping", r));
        if !allowed {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("nats.mappings: you may not map subjects of tenant {t}"),
            ));
        }
    }
    let manages = |t: &str| tenant_of(t).is_some_and(|r| allows_action(caller, "nats.mapping", r));
    Ok(section.plan(barrier, prune, platform, &manages).await?)
}

/// `POST /v1/auth/keys/rotate`: a new signing key, published now, signing
/// after the publish delay.
pub(crate) async fn rotate_keys(State(state): State<AppState>) -> Result<Response, ApiError> {
    let barrier = state.inner.seal.barrier()?;
    let kid = state.inner.authority.rotate_keys(&barrier).await?;
    Ok(Json(json!({ "data": { "kid": kid } })).into_response())
}
