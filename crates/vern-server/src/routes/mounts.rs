//! Vault's mount discovery over Vern's KV mounts: `GET /v1/sys/mounts` and
//! `GET /v1/sys/internal/ui/mounts/<path>`, the preflight the `vault kv`
//! CLI and libraries make to learn a mount's KV version. Every Vern mount is
//! KV version 2 and holds the same tenant-scoped tree, so what a caller may
//! see is decided (`kv.mount.read`) on the part of that tree it asks about.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Map, Value};
use vern_core::{EnvironmentId, PrincipalKind, ProjectId, RequestId, TenantId};
use vern_policy::Resource;
use vern_secrets::ListPrefix;

use crate::auth::Caller;
use crate::authz::{allows, authorize_on, folder_resource};
use crate::error::ApiError;
use crate::state::AppState;

/// A mount as Vault describes it: type `kv`, `options.version` `"2"`, its
/// path with the trailing slash the `vault` CLI joins paths with.
fn mount_json(name: &str) -> Value {
    let digest = vern_crypto::sha256(name.as_bytes());
    let accessor: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    json!({
        "accessor": format!("kv_{accessor}"),
        "config": {"default_lease_ttl": 0, "force_no_cache": false, "max_lease_ttl": 0},
        "description": "key/value secret storage, version 2",
        "external_entropy_access": false,
        "local": false,
        "options": {"version": "2"},
        "path": format!("{name}/"),
        "plugin_version": "",
        "seal_wrap": false,
        "type": "kv",
    })
}

fn envelope(id: &RequestId, data: Value) -> Map<String, Value> {
    super::vault_envelope(id, "system", data, Value::Null)
}

/// A folder of the mounts' tree, as far as it reaches into a scope.
type Folder = (Option<TenantId>, Option<ProjectId>, Option<EnvironmentId>);

/// The caller's own part of the tree: a service's environment, a tenant
/// operator's tenant, the whole tree for a platform operator.
fn own_folder(caller: &Caller) -> Folder {
    match &caller.principal.kind {
        PrincipalKind::Service { scope } => (
            Some(scope.tenant.clone()),
            Some(scope.project.clone()),
            Some(scope.environment.clone()),
        ),
        PrincipalKind::Operator { tenant, .. } => (tenant.clone(), None, None),
        // A node has no part of the tree; Cedar refuses it every folder.
        PrincipalKind::Node => (None, None, None),
    }
}

/// A folder's segments, from the tenant down.
fn segments(folder: &Folder) -> Vec<&str> {
    [
        folder.0.as_ref().map(TenantId::as_str),
        folder.1.as_ref().map(ProjectId::as_str),
        folder.2.as_ref().map(EnvironmentId::as_str),
    ]
    .into_iter()
    .map_while(|segment| segment)
    .collect()
}

/// What seeing a mount at `folder` is decided on: the caller's own part of
/// the tree when the folder lies above it (a service sees the mount it
/// works in whether it names the mount alone or a path down to its
/// environment), the folder itself otherwise (another tenant's folder is
/// refused by tenant isolation).
fn visibility(caller: &Caller, folder: Folder) -> Resource {
    let own = own_folder(caller);
    let (tenant, project, environment) = if segments(&own).starts_with(&segments(&folder)) {
        own
    } else {
        folder
    };
    folder_resource(tenant, project, environment)
}

/// `GET /v1/sys/mounts`: every KV mount, to a caller that may see the mounts
/// in its own part of the tree; the mounts are also at the top level of the
/// answer, as Vault has them for older clients.
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Extension(id): Extension<RequestId>,
) -> Result<Response, ApiError> {
    authorize_on(&caller, visibility(&caller, (None, None, None)))?;
    let mounts: Map<String, Value> = state
        .inner
        .kv
        .keys()
        .map(|name| (format!("{name}/"), mount_json(name)))
        .collect();
    let mut body = envelope(&id, Value::Object(mounts.clone()));
    body.extend(mounts);
    Ok(Json(Value::Object(body)).into_response())
}

/// `GET /v1/sys/internal/ui/mounts/<path>`: the mount `path` lies in, if the
/// caller may see it there. A path in no mount and a path the caller may
/// not see get the same 403 as in Vault, so that mounts cannot be probed.
pub(crate) async fn preflight(
    State(state): State<AppState>,
    caller: Caller,
    Extension(id): Extension<RequestId>,
    Path(path): Path<String>,
) -> Result<Response, ApiError> {
    let (mount, rest) = path.split_once('/').unwrap_or((path.as_str(), ""));
    let refused = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "preflight capability check returned 403, please ensure client's policies grant access to path \"{}/\"",
                crate::audit::printable(mount)
            ),
        )
    };
    if !state.inner.kv.contains_key(mount) {
        return Err(refused());
    }
    let folder = ListPrefix::parse(rest).map_err(|_| refused())?;
    let resource = visibility(&caller, (folder.tenant, folder.project, folder.environment));
    if !allows(&caller, resource) {
        return Err(refused());
    }
    Ok(Json(Value::Object(envelope(&id, mount_json(mount)))).into_response())
}
