//! The KV v2 wire contract of Vault/OpenBao, mapped onto `vern-secrets`.
//! Paths are `/v1/<mount>/{config,data,metadata,delete,undelete,destroy,subkeys}/<path>`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use vern_core::RequestId;
use vern_secrets::{
    go_duration, KvConfig, KvEngine, ListPrefix, MetadataUpdate, MetadataView, Read, SecretData,
    SecretPath, VersionView, WriteOptions,
};

use crate::auth::Caller;
use crate::authz::{authorize_secret, may_list};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;

/// The mount and path of a KV request.
pub(crate) struct KvTarget {
    kv: Arc<KvEngine>,
    path: String,
}

impl FromRequestParts<AppState> for KvTarget {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let axum::extract::Path(params) =
            axum::extract::Path::<HashMap<String, String>>::from_request_parts(parts, state)
                .await
                .map_err(|e| ApiError::bad_request(format!("invalid path: {}", e.body_text())))?;
        let mount = params.get("mount").map(String::as_str).unwrap_or_default();
        let kv = state
            .inner
            .kv
            .get(mount)
            .cloned()
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no handler for this path"))?;
        Ok(Self {
            kv,
            path: params.get("path").cloned().unwrap_or_default(),
        })
    }
}

impl KvTarget {
    fn secret(&self) -> Result<SecretPath, ApiError> {
        Ok(SecretPath::parse(&self.path).map_err(vern_secrets::KvError::from)?)
    }
}

/// Vault's response envelope.
fn envelope(id: &RequestId, data: Value) -> Value {
    Value::Object(super::vault_envelope(id, "kv", data, Value::Null))
}

fn ok(id: &RequestId, data: Value) -> Response {
    Json(envelope(id, data)).into_response()
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn time(nanos: u64) -> String {
    humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_nanos(nanos)).to_string()
}

fn custom(map: &BTreeMap<String, String>) -> Value {
    if map.is_empty() {
        Value::Null
    } else {
        json!(map)
    }
}

fn version_json(v: &VersionView) -> Value {
    json!({
        "created_time": time(v.created),
        "custom_metadata": custom(&v.custom_metadata),
        "deletion_time": v.deleted.map(time).unwrap_or_default(),
        "destroyed": v.destroyed,
        "version": v.version,
    })
}

fn metadata_json(m: &MetadataView) -> Value {
    let versions: Map<String, Value> = m
        .versions
        .iter()
        .map(|(v, (created, deleted, destroyed))| {
            (
                v.to_string(),
                json!({
                    "created_time": time(*created),
                    "deletion_time": deleted.map(time).unwrap_or_default(),
                    "destroyed": destroyed,
                }),
            )
        })
        .collect();
    json!({
        "cas_required": m.cas_required,
        "created_time": time(m.created),
        "current_version": m.current_version,
        "custom_metadata": custom(&m.custom_metadata),
        "delete_version_after": go_duration(m.delete_version_after),
        "max_versions": m.max_versions,
        "oldest_version": m.oldest_version,
        "updated_time": time(m.updated),
        "versions": versions,
    })
}

fn query_u64(q: &HashMap<String, String>, name: &str) -> Result<Option<u64>, ApiError> {
    q.get(name)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!(
                    "`{name}` must be a non-negative integer, got {v:?}"
                ))
            })
        })
        .transpose()
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct WriteBody {
    data: Option<Value>,
    #[serde(default)]
    options: WriteBodyOptions,
}

#[derive(Debug, Default, Deserialize)]
struct WriteBodyOptions {
    cas: Option<u64>,
}

fn data_object(body: WriteBody) -> Result<(Map<String, Value>, WriteOptions), ApiError> {
    let data = match body.data {
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(ApiError::bad_request(
                "`data` must be a JSON object of keys and values",
            ))
        }
        None => {
            return Err(ApiError::bad_request(
                "no data provided: the body needs a `data` object",
            ))
        }
    };
    Ok((
        data,
        WriteOptions {
            cas: body.options.cas,
        },
    ))
}

/// `GET /v1/:mount/data/:path?version=N`.
pub(crate) async fn read_data(
    State(state): State<AppState>,
    caller: Caller,
    target: KvTarget,
    Extension(id): Extension<RequestId>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let path = target.secret()?;
    authorize_secret(&caller, target.kv.mount(), &path)?;
    let version = query_u64(&q, "version")?;
    let barrier = state.inner.seal.barrier()?;
    match target.kv.read(&barrier, &path, version).await? {
        Read::Live { data, version } => Ok(ok(
            &id,
            json!({ "data": Value::Object(data.into_inner()), "metadata": version_json(&version) }),
        )),
        // hvac looks at `deletion_time` in the body of this 404.
        Read::Deleted(v) | Read::Destroyed(v) => {
            let body = envelope(&id, json!({ "data": null, "metadata": version_json(&v) }));
            Ok((StatusCode::NOT_FOUND, Json(body)).into_response())
        }
    }
}

/// `POST|PUT /v1/:mount/data/:path`.
pub(crate) async fn write_data(
    State(state): State<AppState>,
    caller: Caller,
    target: KvTarget,
    Extension(id): Extension<RequestId>,
    ApiJson(body): ApiJson<WriteBody>,
) -> Result<Response, ApiError> {
    let path = target.secret()?;
    authorize_secret(&caller, target.kv.mount(), &path)?;
    let (data, options) = data_object(body)?;
    let barrier = state.inner.seal.barrier()?;
    let v = target
        .kv
        .write(&barrier, &path, SecretData::new(data), options)
        .await?;
    Ok(ok(&id, version_json(&v)))
}

/// `PATCH /v1/:mount/data/:path`: JSON merge patch over the latest version.
pub(crate) async fn patch_data(
    State(state): State<AppState>,
    caller: Caller,
    target: KvTarget,
    Extension(id): Extension<RequestId>,
    ApiJson(body): ApiJson<WriteBody>,
) -> Result<Response, ApiError> {
    let path = target.secret()?;
    authorize_secret(&caller, target.kv.mount(), &path)?;
    let (patch, options) = data_object(body)?;
    let barrier = state.inner.seal.barrier()?;
    let v = target.kv.patch(&barrier, &path, patch, options).await?;
    Ok(ok(&id, version_json(&v)))
}

/// `DELETE /v1/:mount/data/:path`: soft-deletes the latest version.
pub(crate) async fn delete_latest(
    State(state): State<AppState>,
    caller: Caller,
    target: KvTarget,
) -> Result<Response, ApiError> {
    let path = target.secret()?;
    authorize_secret(&caller, target.kv.mount(), &path)?;
    let barrier = state.inner.seal.barrier()?;
    target.kv.delete_latest(&barrier, &path).await?;
    Ok(no_content())
}

#[derive(Debug, Deserialize)]
pub(crate) struct VersionsBody {
    versions: Option<Vec<u64>>,
}

fn versions(body: VersionsBody) -> Result<Vec<u64>, ApiError> {
    match body.versions {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(ApiError::bad_request(
            "no versions provided: the body needs a non-empty `versions` list",
        )),
    }
}

macro_rules! versions_handler {
    ($name:ident, $method:ident, $doc:literal) => {
        #[doc = $doc]
        pub(crate) async fn $name(
            State(state): State<AppState>,
            caller: Caller,
            target: KvTarget,
            ApiJson(body): ApiJson<VersionsBody>,
        ) -> Result<Response, ApiError> {
            let path = target.secret()?;
            authorize_secret(&caller, target.kv.mount(), &path)?;
            let versions = versions(body)?;
            let barrier = state.inner.seal.barrier()?;
            target.kv.$method(&barrier, &path, &versions).await?;
            Ok(no_content())
        }
    };
}

versions_handler!(
    delete_versions,
    delete_versions,
    "`POST /v1/:mount/delete/:path`."
);
versions_handler!(
    undelete_versions,
    undelete_versions,
    "`POST /v1/:mount/undelete/:path`."
);
versions_handler!(
    destroy_versions,
    destroy_versions,
    "`PUT|POST /v1/:mount/destroy/:path`."
);

/// `GET /v1/:mount/subkeys/:path?version=N&depth=D`.
pub(crate) async fn subkeys(
    State(state): State<AppState>,
    caller: Caller,
    target: KvTarget,
    Extension(id): Extension<RequestId>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let path = target.secret()?;
    authorize_secret(&caller, target.kv.mount(), &path)?;
    let version = query_u64(&q, "version")?;
    let depth = query_u64(&q, "depth")?.unwrap_or(0);
    let barrier = state.inner.seal.barrier()?;
    let (subkeys, v) = target
        .kv
        .subkeys(
            &barrier,
            &path,
            version,
            usize::try_from(depth).unwrap_or(usize::MAX),
        )
        .await?;
    Ok(ok(
        &id,
        json!({ "subkeys": subkeys, "metadata": version_json(&v) }),
    ))
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct MetadataBody {
    max_versions: Option<u32>,
    cas_required: Option<bool>,
    delete_version_after: Option<Value>,
    custom_metadata: Option<Map<String, Value>>,
}

fn metadata_update(body: MetadataBody, patch: bool) -> Result<MetadataUpdate, ApiError> {
    let custom_metadata = body
        .custom_metadata
        .map(|m| {
            m.into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k, Some(s))),
                    Value::Null if patch => Ok((k, None)),
                    _ => Err(ApiError::bad_request(format!(
                        "custom_metadata value of `{k}` must be a string"
                    ))),
                })
                .collect::<Result<BTreeMap<_, _>, _>>()
        })
        .transpose()?;
    Ok(MetadataUpdate {
        max_versions: body.max_versions,
        cas_required: body.cas_required,
        delete_version_after: body
            .delete_version_after
            .as_ref()
            .map(|d| super::duration_field("delete_version_after", d))
            .transpose()?,
        custom_metadata,
    })
}

/// Everything under `/v1/:mount/metadata/:path`, including Vault's `LIST`
/// verb (and `GET ?list=true`), which axum's method router cannot name.
pub(crate) async fn metadata(
    State(state): State<AppState>,
    caller: Caller,
    target: KvTarget,
    Extension(id): Extension<RequestId>,
    req: Request,
) -> Result<Response, ApiError> {
    let method = req.method().clone();
    let listing = method.as_str() == "LIST"
        || (method == Method::GET
            && crate::authz::list_query(req.uri().query()).map_err(ApiError::bad_request)?);
    if listing {
        return list(&state, &caller, &target, &id).await;
    }
    let barrier = || state.inner.seal.barrier();
    match method {
        Method::GET => {
            let path = target.secret()?;
            authorize_secret(&caller, target.kv.mount(), &path)?;
            let m = target.kv.read_metadata(&*barrier()?, &path).await?;
            Ok(ok(&id, metadata_json(&m)))
        }
        Method::POST | Method::PUT | Method::PATCH => {
            let path = target.secret()?;
            authorize_secret(&caller, target.kv.mount(), &path)?;
            let ApiJson(body) = ApiJson::<MetadataBody>::from_request(req, &state).await?;
            let patch = method == Method::PATCH;
            let update = metadata_update(body, patch)?;
            target
                .kv
                .write_metadata(&*barrier()?, &path, &update, !patch)
                .await?;
            Ok(no_content())
        }
        Method::DELETE => {
            let path = target.secret()?;
            authorize_secret(&caller, target.kv.mount(), &path)?;
            target.kv.delete_metadata(&*barrier()?, &path).await?;
            Ok(no_content())
        }
        _ => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed on this path",
        )),
    }
}

use axum::extract::FromRequest as _;

/// LIST: only the entries the caller may see; nothing visible is a 404,
/// exactly as for a folder that does not exist.
async fn list(
    state: &AppState,
    caller: &Caller,
    target: &KvTarget,
    id: &RequestId,
) -> Result<Response, ApiError> {
    let prefix = ListPrefix::parse(&target.path).map_err(vern_secrets::KvError::from)?;
    if !may_list(caller, &prefix) {
        return Err(ApiError::not_found());
    }
    let barrier = state.inner.seal.barrier()?;
    let children = target.kv.list(&barrier, &prefix).await?;
    let keys: Vec<String> = children
        .into_iter()
        .filter(|child| {
            let name = child.trim_end_matches('/');
            let full = if prefix.as_str().is_empty() {
                name.to_owned()
            } else {
                format!("{}/{name}", prefix.as_str())
            };
            ListPrefix::parse(&full).is_ok_and(|p| may_list(caller, &p))
        })
        .collect();
    if keys.is_empty() {
        return Err(ApiError::not_found());
    }
    Ok(ok(id, json!({ "keys": keys })))
}

/// `GET /v1/:mount/config`.
pub(crate) async fn read_config(
    State(state): State<AppState>,
    target: KvTarget,
    Extension(id): Extension<RequestId>,
) -> Result<Response, ApiError> {
    let c = target.kv.config(&*state.inner.seal.barrier()?).await?;
    Ok(ok(
        &id,
        json!({
            "max_versions": c.max_versions,
            "cas_required": c.cas_required,
            "delete_version_after": go_duration(Duration::from_nanos(c.delete_version_after_nanos)),
        }),
    ))
}

/// `POST|PUT /v1/:mount/config`.
pub(crate) async fn write_config(
    State(state): State<AppState>,
    target: KvTarget,
    ApiJson(body): ApiJson<MetadataBody>,
) -> Result<Response, ApiError> {
    if body.custom_metadata.is_some() {
        return Err(ApiError::bad_request(
            "custom_metadata belongs to a secret's metadata, not the mount config",
        ));
    }
    let barrier = state.inner.seal.barrier()?;
    let mut config: KvConfig = target.kv.config(&barrier).await?;
    if let Some(m) = body.max_versions {
        config.max_versions = m;
    }
    if let Some(c) = body.cas_required {
        config.cas_required = c;
    }
    if let Some(d) = body.delete_version_after.as_ref() {
        config.delete_version_after_nanos =
            u64::try_from(super::duration_field("delete_version_after", d)?.as_nanos())
                .map_err(|_| ApiError::bad_request("delete_version_after is too long"))?;
    }
    target.kv.set_config(&barrier, config).await?;
    Ok(no_content())
}
