//! The JWT auth method, in Vault's paths: `POST /v1/auth/jwt/login`, and
//! its roles at `/v1/auth/jwt/role/<name>` (read, write, delete) and
//! `LIST /v1/auth/jwt/role`. A role is a way to get its client's tokens,
//! so it is decided on as that client is: `client.read` to see it,
//! `client.manage` to write or delete it, on the client as the principal
//! it is (a service of one tenant), and nobody writes a role for a client
//! they could not create themselves.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use vern_authority::{ClientRecord, JwtAuthError, JwtRole, JwtRolePlan, JwtRoleSpec, LoginGrant};
use vern_core::RequestId;
use vern_policy::Resource;

use super::clients::{as_subject, Reach};
use super::vault_auth::{issue_login, LOGIN_ACTION};
use crate::audit::{printable, AuditSlot};
use crate::auth::Caller;
use crate::authz::allows;
use crate::client_addr::ClientAddr;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;

/// The body of a JWT login. No `Debug`: the JWT is a credential.
#[derive(Deserialize)]
pub(crate) struct LoginBody {
    role: Option<String>,
    jwt: Option<String>,
}

/// `POST /v1/auth/jwt/login`: `role` names a role, `jwt` is a token of the
/// issuer the role trusts. The attempt is admitted under the role's client
/// (the token endpoint's lockout and rate limits; an unknown role under its
/// own name), the JWT verified and checked by the authority, and the client
/// issued its token, with the role's lifetime capped by the client's.
pub(crate) async fn login(
    State(state): State<AppState>,
    audit: Option<Extension<AuditSlot>>,
    source: ClientAddr,
    Extension(id): Extension<RequestId>,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Response, ApiError> {
    let audit = audit.as_ref().map(|Extension(slot)| slot);
    let name = body
        .role
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing role"))?;
    let jwt = body
        .jwt
        .filter(|j| !j.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing jwt"))?;
    if let Some(slot) = audit {
        slot.action(LOGIN_ACTION, Some(format!("jwt_role:{}", printable(&name))));
        slot.sensitive("jwt", jwt.as_bytes());
    }
    let barrier = state.inner.seal.barrier()?;
    let authority = &state.inner.authority;
    let guard = &state.inner.guard;
    let role = match authority.jwt_role(&barrier, &name).await {
        Ok(role) => role,
        Err(JwtAuthError::NoRole(_)) => {
            let attempt = guard.admit_client(source.source(), &unknown_role(&name))?;
            guard.settle_client(&attempt, &unknown_role(&name), true)?;
            return Err(ApiError::bad_request(format!(
                "role \"{}\" could not be found",
                printable(&name)
            )));
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(slot) = audit {
        slot.resource_tenant(&role.tenant);
    }
    let attempt = guard.admit_client(source.source(), &role.client_id)?;
    let login = match authority
        .jwt_login(&barrier, &role, &jwt, &state.inner.jwks)
        .await
    {
        Ok(login) => login,
        Err(err) => {
            if matches!(err, JwtAuthError::Refused(_)) {
                guard.settle_client(&attempt, &role.client_id, true)?;
            }
            tracing::warn!(role = %role.name, error = %err, "JWT login refused.");
            return Err(err.into());
        }
    };
    tracing::info!(role = %role.name, user = %printable(&login.user), "JWT login verified.");
    // The client as this login sees it: its own record, with the role's
    // lifetime, which the authority capped by the client's.
    let client = ClientRecord {
        token_ttl: Some(login.ttl),
        ..login.client
    };
    let grant = LoginGrant {
        client: &client,
        method: "jwt",
        certificate: None,
    };
    issue_login(&state, &id, audit, &attempt, &grant, JWT_REFUSED).await
}

/// Vault's answer to a login the authority refused after verifying it
/// (none is expected: every JWT check happens before a token is issued).
const JWT_REFUSED: &str = "the JWT login was refused";

/// The lockout key of a login naming a role that does not exist.
fn unknown_role(name: &str) -> String {
    format!("jwt-role:{name}")
}

/// Fields Vault takes as a list or as one comma-separated string.
const LIST_FIELDS: [&str; 3] = [
    "bound_audiences",
    "jwt_validation_pubkeys",
    "jwt_supported_algs",
];
/// Fields Vault takes as seconds or as a duration string (`"1h"`).
const SECONDS_FIELDS: [&str; 4] = [
    "token_ttl",
    "clock_skew_leeway",
    "expiration_leeway",
    "not_before_leeway",
];

/// A duration field given as a string: whole seconds (`"90"`, `"-1"`) or
/// a duration (`"1h"`, `"90s"`).
fn seconds(field: &str, text: &str) -> Result<i64, ApiError> {
    let text = text.trim();
    if let Ok(n) = text.parse::<i64>() {
        return Ok(n);
    }
    humantime::parse_duration(text)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "{field} must be a number of seconds or a duration such as \"1h\""
            ))
        })
}

/// A role declaration as Vault's clients send it, made into the domain's
/// spec: comma-separated lists and duration strings are accepted where
/// Vault accepts them, a single expected value of a bound claim stands for
/// a list of one, and the name comes from the path (a body naming another
/// role is refused). Unknown fields are refused, with their name.
pub(crate) fn role_spec(path_name: Option<&str>, mut body: Value) -> Result<JwtRoleSpec, ApiError> {
    let map = body
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("a JWT role is a JSON object"))?;
    for field in LIST_FIELDS {
        if let Some(Value::String(s)) = map.get(field) {
            let list: Vec<&str> = s
                .split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .collect();
            let list = json!(list);
            map.insert(field.to_owned(), list);
        }
    }
    for field in SECONDS_FIELDS {
        if let Some(Value::String(s)) = map.get(field) {
            let n = seconds(field, s)?;
            map.insert(field.to_owned(), json!(n));
        }
    }
    if let Some(Value::Object(claims)) = map.get_mut("bound_claims") {
        for v in claims.values_mut() {
            if v.is_string() {
                *v = Value::Array(vec![v.take()]);
            }
        }
    }
    if let Some(path_name) = path_name {
        match map.get("name") {
            None => {
                map.insert("name".to_owned(), json!(path_name));
            }
            Some(Value::String(n)) if n == path_name => {}
            Some(_) => {
                return Err(ApiError::bad_request(
                    "the body names another role than the path",
                ))
            }
        }
    }
    serde_json::from_value(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JWT role: {e}")))
}

/// The role as the principal its logins become, for decisions.
fn role_resource(role: &JwtRole) -> Option<Resource> {
    as_subject(&role.client_id, &role.client_kind(), &[]).map(|s| s.as_resource())
}

fn role_json(role: &JwtRole) -> Value {
    serde_json::to_value(role).unwrap_or_else(|_| json!({}))
}

/// Reads a role the caller may see (the route's action on its client);
/// one it may not see is a 404, like one that does not exist.
async fn visible(
    state: &AppState,
    caller: &Caller,
    barrier: &vern_seal::Barrier,
    name: &str,
) -> Result<JwtRole, ApiError> {
    match state.inner.authority.jwt_role(barrier, name).await {
        Ok(r) if role_resource(&r).is_some_and(|res| allows(caller, res)) => Ok(r),
        Ok(_) | Err(JwtAuthError::NoRole(_)) => {
            // The decision on a role that does not exist, for the record.
            allows(caller, Resource::Platform);
            Err(ApiError::not_found())
        }
        Err(e) => Err(e.into()),
    }
}

/// `GET /v1/auth/jwt/role/:name`.
pub(crate) async fn read_role(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let barrier = state.inner.seal.barrier()?;
    let role = visible(&state, &caller, &barrier, &name).await?;
    Ok(Json(json!({ "data": role_json(&role) })).into_response())
}

/// `POST|PUT /v1/auth/jwt/role/:name`: creates or replaces the role.
pub(crate) async fn write_role(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let spec = role_spec(Some(&name), body)?;
    let barrier = state.inner.seal.barrier()?;
    let role = state
        .inner
        .authority
        .write_jwt_role(&barrier, &spec, &Reach::of(&caller))
        .await?;
    Ok(Json(json!({ "data": role_json(&role) })).into_response())
}

/// `DELETE /v1/auth/jwt/role/:name`.
pub(crate) async fn delete_role(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let barrier = state.inner.seal.barrier()?;
    visible(&state, &caller, &barrier, &name).await?;
    state
        .inner
        .authority
        .delete_jwt_role(&barrier, &name, &Reach::of(&caller))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `LIST /v1/auth/jwt/role` (or `GET ?list=true`): every role for those
/// who may read the platform's clients, else the roles of clients the
/// caller may read; 404 when there are none, as Vault answers.
pub(crate) async fn list_roles(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let barrier = state.inner.seal.barrier()?;
    let authority = &state.inner.authority;
    let names = authority.jwt_role_names(&barrier).await?;
    let keys = if allows(&caller, Resource::Platform) {
        names
    } else {
        let mut keys = Vec::new();
        for name in names {
            if let Ok(r) = authority.jwt_role(&barrier, &name).await {
                if role_resource(&r).is_some_and(|res| allows(&caller, res)) {
                    keys.push(name);
                }
            }
        }
        keys
    };
    if keys.is_empty() {
        return Err(ApiError::not_found());
    }
    Ok(Json(json!({ "data": { "keys": keys } })).into_response())
}

/// The `jwt_roles` part of an apply's answer.
pub(crate) fn plan_json(plan: &JwtRolePlan) -> Value {
    let mut m = Map::new();
    m.insert("create".to_owned(), json!(plan.create));
    m.insert("update".to_owned(), json!(plan.update));
    m.insert("delete".to_owned(), json!(plan.delete));
    m.insert("unchanged".to_owned(), json!(plan.unchanged));
    m.insert("kept".to_owned(), json!(plan.kept));
    Value::Object(m)
}
