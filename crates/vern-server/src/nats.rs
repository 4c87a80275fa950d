//! The NATS auth callout service and the revocation kick.
//!
//! Started by `vern serve --nats-url`, it waits until Vern is unsealed,
//! reads the NATS keys behind the barrier, and connects to nats-server as
//! the callout user (account `AUTH`) and as the system user (account `SYS`),
//! retrying until the server is up. Each request on `$SYS.REQ.USER.AUTH`
//! is opened with Vern's xkey, checked to be signed by the server it names,
//! and decided: the client's Vern access token (its NATS `auth_token`) is
//! verified as the HTTP API verifies it (revocation and client changes
//! included), each subject the client declares is decided by Cedar
//! (`nats.publish` / `nats.subscribe`), and the answer is a user JWT for the
//! tenant's account that expires with the token. Every decision is an audit
//! record; a decision that cannot be recorded is not given.
//!
//! Fail closed: when Vern is sealed the service drops its keys and its
//! connections and answers nothing, so nats-server times the request out
//! and refuses the client; a malformed or unsigned request gets no answer.
//!
//! Revocation: `/oauth2/revoke`, revoking one's own token and deleting or
//! changing a client publish a notice on `vern.nats.revoked` in the `AUTH`
//! account, so every Vern replica hears it; each kicks, through the system
//! account (`$SYS.REQ.SERVER.<id>.KICK`), the live connections it
//! authorized with that token or for that client.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use vern_audit::{Actor, Event, TokenRef, Verdict};
use vern_authority::{AccessClaims, ClientKind, Presented};
use vern_core::RequestId;
use vern_nats::callout::{self, Grant, Request};
use vern_nats::perms::{self, Declared, Direction};
use vern_nats::{NatsKeys, CALLOUT_USER, SYSTEM_USER};
use vern_policy::{Binding, Query, Resource, Subject as PolicySubject, SubjectKind};
use vern_seal::Barrier;

use crate::limits::{retry_after_secs, Attempt, CredentialId, Refused, Source};
use crate::state::AppState;

/// Where nats-server sends callout requests.
const AUTH_SUBJECT: &str = "$SYS.REQ.USER.AUTH";
/// Where replicas tell each other about revocations (in `AUTH`).
const REVOKED_SUBJECT: &str = "vern.nats.revoked";
/// The queue group of the replicas' callout subscriptions: one answers.
const QUEUE: &str = "vern";
/// Longest wait between connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the service checks that Vern is still unsealed.
const SEAL_CHECK: Duration = Duration::from_millis(500);

/// What to disconnect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Revocation {
    /// Connections opened with a token (SHA-256 of it, hex).
    Token(String),
    /// Connections of a client.
    Client(String),
}

impl Revocation {
    /// The notice for `token`.
    pub(crate) fn token(token: &str) -> Self {
        Self::Token(token_digest(token))
    }
}

/// How a token is named between replicas: its SHA-256, never itself.
fn token_digest(token: &str) -> String {
    hex::encode(vern_crypto::sha256(token.as_bytes()))
}

/// The live side of NATS: revocation notices from the HTTP handlers.
pub(crate) struct NatsHub {
    revoked: broadcast::Sender<Revocation>,
}

impl NatsHub {
    pub(crate) fn new() -> Self {
        Self {
            revoked: broadcast::channel(256).0,
        }
    }

    /// Tells the callout service (if one runs) to kick what `r` names.
    pub(crate) fn revoke(&self, r: Revocation) {
        // No receiver means no callout service runs: nothing to kick.
        let _ = self.revoked.send(r);
    }
}

/// A connection this process authorized.
#[derive(Debug, Clone)]
struct Live {
    token: String,
    client_id: String,
    server_id: String,
    cid: u64,
    expires: u64,
}

/// Starts the callout service for `url` for the life of the process.
pub(crate) fn spawn(state: AppState, url: String) {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        loop {
            match serve_once(&state, &url).await {
                Ok(()) => backoff = Duration::from_millis(200),
                Err(e) => {
                    tracing::warn!(error = %e, url = %url, "The NATS callout is not connected; retrying.");
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            tokio::time::sleep(backoff).await;
        }
    });
}

/// Waits for the unsealed barrier, then serves until Vern seals or a
/// connection fails.
async fn serve_once(state: &AppState, url: &str) -> Result<(), String> {
    let barrier = loop {
        match state.inner.seal.barrier() {
            Ok(b) => break b,
            Err(_) => tokio::time::sleep(SEAL_CHECK).await,
        }
    };
    let keys = NatsKeys::load_or_create(&barrier)
        .await
        .map_err(|e| e.to_string())?;
    drop(barrier);
    let password = |p: &vern_crypto::SecretBytes| String::from_utf8_lossy(p.expose()).into_owned();
    let callout = async_nats::ConnectOptions::with_user_and_password(
        CALLOUT_USER.to_owned(),
        password(keys.callout_password()),
    )
    .name("vern-callout")
    .connect(url)
    .await
    .map_err(|e| format!("connecting as {CALLOUT_USER}: {e}"))?;
    let system = async_nats::ConnectOptions::with_user_and_password(
        SYSTEM_USER.to_owned(),
        password(keys.system_password()),
    )
    .name("vern-system")
    .connect(url)
    .await
    .map_err(|e| format!("connecting as {SYSTEM_USER}: {e}"))?;
    let mut requests = callout
        .queue_subscribe(AUTH_SUBJECT, QUEUE.to_owned())
        .await
        .map_err(|e| e.to_string())?;
    let mut notices = callout
        .subscribe(REVOKED_SUBJECT)
        .await
        .map_err(|e| e.to_string())?;
    let mut revoked = state.inner.nats.revoked.subscribe();
    let live: Arc<Mutex<Vec<Live>>> = Arc::default();
    let keys = Arc::new(keys);
    tracing::info!(url = %url, "The NATS callout is serving.");
    let mut tick = tokio::time::interval(SEAL_CHECK);
    loop {
        tokio::select! {
            msg = requests.next() => {
                let Some(msg) = msg else { return Err("the callout subscription ended".to_owned()) };
                let Ok(barrier) = state.inner.seal.barrier() else {
                    tracing::warn!("Vern sealed: the NATS callout stops answering.");
                    return Ok(());
                };
                let state = state.clone();
                let keys = Arc::clone(&keys);
                let live = Arc::clone(&live);
                let client = callout.clone();
                // Each request on its own task: one slow token check does
                // not hold up other connects.
                tokio::spawn(async move {
                    let Some(reply) = msg.reply.clone() else { return };
                    let xkey = msg
                        .headers
                        .as_ref()
                        .and_then(|h| h.get(callout::SERVER_XKEY_HEADER))
                        .map(|v| v.as_str().to_owned());
                    if let Some(answer) = handle(&state, &barrier, &keys, &live, &msg.payload, xkey.as_deref()).await {
                        if let Err(e) = client.publish(reply, answer.into()).await {
                            tracing::warn!(error = %e, "Answering a NATS callout request failed.");
                        }
                    }
                });
            }
            notice = notices.next() => {
                let Some(notice) = notice else { return Err("the revocation subscription ended".to_owned()) };
                if let Ok(r) = serde_json::from_slice::<Revocation>(&notice.payload) {
                    kick(&system, &live, &r).await;
                }
            }
            r = revoked.recv() => {
                if let Ok(r) = r {
                    let body = serde_json::to_vec(&r).map_err(|e| e.to_string())?;
                    if let Err(e) = callout.publish(REVOKED_SUBJECT, body.into()).await {
                        tracing::warn!(error = %e, "Telling replicas about a revocation failed; kicking locally.");
                        kick(&system, &live, &r).await;
                    }
                }
            }
            _ = tick.tick() => {
                if state.inner.seal.barrier().is_err() {
                    tracing::warn!("Vern sealed: the NATS callout stops answering.");
                    return Ok(());
                }
            }
        }
    }
}

/// Disconnects the live connections `r` names.
async fn kick(system: &async_nats::Client, live: &Mutex<Vec<Live>>, r: &Revocation) {
    let targets: Vec<Live> = {
        let mut l = live.lock().unwrap_or_else(|e| e.into_inner());
        let (hit, keep): (Vec<Live>, Vec<Live>) = l.drain(..).partition(|c| match r {
            Revocation::Token(t) => &c.token == t,
            Revocation::Client(id) => &c.client_id == id,
        });
        *l = keep;
        hit
    };
    for c in targets {
        let subject = format!("$SYS.REQ.SERVER.{}.KICK", c.server_id);
        let body = serde_json::json!({ "cid": c.cid }).to_string();
        match tokio::time::timeout(Duration::from_secs(2), system.request(subject, body.into()))
            .await
        {
            Ok(Ok(_)) => {
                tracing::info!(client = %c.client_id, cid = c.cid, "Kicked a NATS connection after revocation.");
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, cid = c.cid, "Kicking a NATS connection failed.")
            }
            Err(_) => tracing::warn!(cid = c.cid, "Kicking a NATS connection timed out."),
        }
    }
}

/// Why a connect was refused, and what the audit record says.
struct Refusal {
    reason: String,
    policies: Vec<String>,
}

impl Refusal {
    fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            policies: Vec::new(),
        }
    }
}

/// Decides one request; `None` means no answer (a request Vern cannot
/// trust, or one whose decision could not be recorded).
async fn handle(
    state: &AppState,
    barrier: &Arc<Barrier>,
    keys: &NatsKeys,
    live: &Mutex<Vec<Live>>,
    payload: &[u8],
    xkey: Option<&str>,
) -> Option<Vec<u8>> {
    let now = state
        .inner
        .clock
        .now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let request = match callout::open(keys, payload, xkey) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "A NATS callout request was refused unanswered.");
            let _ = record(
                state,
                barrier,
                None,
                None,
                "unknown",
                Err(&Refusal::new(e.to_string())),
                None,
            )
            .await;
            return None;
        }
    };
    let source = request.client_host().to_owned();
    let Decided { claims, result } = decide(state, barrier, &request, now).await;
    let token = request.token();
    let recorded = record(
        state,
        barrier,
        claims.as_ref(),
        token,
        &source,
        result.as_ref().map(|(g, _)| g),
        result.as_ref().ok().map(|(_, d)| d),
    )
    .await;
    if let Err(e) = recorded {
        tracing::error!(error = %e, "A NATS callout decision could not be recorded; no answer given.");
        return None;
    }
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    let answer = match &result {
        Ok((grant, _)) => callout::respond(keys, &request, Ok(grant), now),
        Err(refusal) => callout::respond(keys, &request, Err(&refusal.reason), now),
    };
    match answer {
        Ok(bytes) => {
            if let (Ok((grant, _)), Some(token)) = (&result, token) {
                let mut l = live.lock().unwrap_or_else(|e| e.into_inner());
                let now = u64::try_from(now).unwrap_or_default();
                l.retain(|c| c.expires > now);
                l.push(Live {
                    token: token_digest(token),
                    client_id: grant.name.clone(),
                    server_id: request.claims.nats.server_id.id.clone(),
                    cid: request.claims.nats.client_info.id,
                    expires: u64::try_from(grant.expires).unwrap_or_default(),
                });
            }
            Some(bytes)
        }
        Err(e) => {
            tracing::error!(error = %e, "A NATS callout answer could not be made.");
            None
        }
    }
}

/// A decision: the token's claims when it verified, and the grant or the
/// refusal.
struct Decided {
    claims: Option<AccessClaims>,
    result: Result<(Grant, Details), Refusal>,
}

impl Decided {
    fn refused(claims: Option<AccessClaims>, why: impl Into<String>) -> Self {
        Self {
            claims,
            result: Err(Refusal::new(why)),
        }
    }
}

/// What an allowed connect's record says besides the decision.
struct Details {
    policies: Vec<String>,
    granted: BTreeMap<String, String>,
}

/// The reason given for a connection a limit refused.
fn limited(r: &Refused) -> String {
    format!(
        "refused by the `{}` limit; retry in {} s",
        r.scope,
        retry_after_secs(r.wait)
    )
}

async fn decide(state: &AppState, barrier: &Arc<Barrier>, request: &Request, now: u64) -> Decided {
    let Some(token) = request.token() else {
        return Decided::refused(
            None,
            "no token: connect with a Vern access token as the NATS token",
        );
    };
    // The API's lockouts and budgets: a token that keeps failing from one
    // address is refused before it is checked, an address that keeps
    // failing is refused once its budget of failures is spent, and a
    // principal or tenant connecting too fast is refused like its API
    // calls would be. A connect flood so costs no more than an API flood.
    let guard = &state.inner.guard;
    let source = Source::of(request.client_host().parse().ok());
    let attempt = Attempt {
        identity: CredentialId::token(token.as_bytes()),
        source,
    };
    if let Err(r) = guard.api_attempt(Some(&attempt)) {
        return Decided::refused(None, limited(&r));
    }
    let authority = &state.inner.authority;
    let claims = match authority
        .verify_access(barrier, token, Presented::Bearer)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            let why = format!("the token was refused: {e}");
            // Wrong credentials count; an unavailable server does not.
            let credential = crate::error::ApiError::from(e).status_code()
                == axum::http::StatusCode::UNAUTHORIZED;
            if credential {
                if let Err(r) = guard.api_failed(Some(&attempt), source) {
                    return Decided::refused(None, limited(&r));
                }
            }
            return Decided::refused(None, why);
        }
    };
    let tenant = claims.kind.scope().map(|s| s.tenant.to_string());
    if let Err(r) = guard.api_succeeded(Some(&attempt), &claims.client_id, tenant.as_deref()) {
        return Decided::refused(Some(claims), limited(&r));
    }
    let refuse = |c: &AccessClaims, why: String| Decided::refused(Some(c.clone()), why);
    // The API allows a clock leeway past `exp`; a NATS connection ends at
    // `exp` exactly, so a token past it gets no connection at all.
    if claims.exp <= now {
        return refuse(&claims, "the token has expired".to_owned());
    }
    let scope = match (&claims.kind, claims.kind.scope()) {
        (ClientKind::Service { .. }, Some(s)) => s,
        _ => {
            return refuse(
                &claims,
                "only services have a NATS account; operators do not".to_owned(),
            )
        }
    };
    let record = match authority.client(barrier, &claims.client_id).await {
        Ok(r) => r,
        Err(e) => return refuse(&claims, format!("the client cannot be read: {e}")),
    };
    let declared = match declared_of(&record.nats) {
        Ok(d) => d,
        Err(e) => {
            return refuse(
                &claims,
                format!("the client's NATS subjects are unusable: {e}"),
            )
        }
    };
    let subject = PolicySubject {
        id: claims.client_id.clone(),
        kind: SubjectKind::Service {
            scope: scope.clone(),
            scopes: claims.scopes.clone(),
        },
    };
    let mut policies = Vec::new();
    let time = i64::try_from(now).unwrap_or(i64::MAX);
    let permissions = match decide_subjects(
        state,
        &subject,
        &scope,
        &declared,
        request.client_host(),
        time,
        &mut policies,
    ) {
        Ok(p) => p,
        Err(e) => return refuse(&claims, e.to_string()),
    };
    let list =
        |v: &[vern_nats::Subject]| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",");
    let mut granted = BTreeMap::from([
        ("publish".to_owned(), list(&permissions.publish)),
        ("subscribe".to_owned(), list(&permissions.subscribe)),
        (
            "server_id".to_owned(),
            request.claims.nats.server_id.id.clone(),
        ),
        ("expires".to_owned(), claims.exp.to_string()),
    ]);
    if !permissions.imports.is_empty() {
        let imports: Vec<String> = permissions
            .imports
            .iter()
            .map(|i| format!("{} {}:{}", i.kind.name(), i.tenant, i.subject))
            .collect();
        granted.insert("imports".to_owned(), imports.join(","));
    }
    if !permissions.refused_imports.is_empty() {
        let refused: Vec<String> = permissions
            .refused_imports
            .iter()
            .map(|i| format!("{} {}:{}", i.kind.name(), i.tenant, i.subject))
            .collect();
        granted.insert("imports_refused_by_policy".to_owned(), refused.join(","));
    }
    if !permissions.refused.is_empty() {
        let refused: Vec<String> = permissions
            .refused
            .iter()
            .map(|(d, s)| {
                format!(
                    "{} {s}",
                    match d {
                        Direction::Publish => "publish",
                        Direction::Subscribe => "subscribe",
                    }
                )
            })
            .collect();
        granted.insert("refused_by_policy".to_owned(), refused.join(","));
    }
    let grant = Grant {
        account: scope.tenant.to_string(),
        name: claims.client_id.clone(),
        permissions,
        expires: i64::try_from(claims.exp).unwrap_or(i64::MAX),
    };
    Decided {
        claims: Some(claims),
        result: Ok((grant, Details { policies, granted })),
    }
}

/// A client's declaration, parsed.
pub(crate) fn declared_of(
    n: &vern_authority::NatsSubjects,
) -> Result<Declared, vern_nats::NatsError> {
    let imports: Vec<(String, String, String)> = n
        .imports
        .iter()
        .map(|i| (i.tenant.clone(), i.subject.clone(), i.kind.clone()))
        .collect();
    Declared::parse_with_imports(&n.publish, &n.subscribe, &imports)
}

/// What `subject` (a service of `scope`) may do of what it declares, as
/// Cedar decides it now: `nats.publish` / `nats.subscribe` on each
/// subject of its own tenant's account, and on each imported subject of
/// the exporting tenant's (which only a cross-tenant grant opens). The
/// policies that decided are added to `policies`.
pub(crate) fn decide_subjects(
    state: &AppState,
    subject: &PolicySubject,
    scope: &vern_core::Scope,
    declared: &Declared,
    source_ip: &str,
    time: i64,
    policies: &mut Vec<String>,
) -> Result<perms::Permissions, vern_nats::NatsError> {
    perms::derive(&subject.id, declared, |dir, tenant, s| {
        let tenant = match tenant {
            None => scope.tenant.clone(),
            Some(t) => match vern_core::TenantId::parse(t) {
                Ok(t) => t,
                Err(_) => return false,
            },
        };
        let q = Query {
            subject: subject.clone(),
            action: dir.action().to_owned(),
            resource: Resource::nats_subject(tenant, s.as_str()),
            source_ip: source_ip.to_owned(),
            time,
            binding: Binding::None,
            dns_names: Vec::new(),
        };
        let d = state.inner.policies.decide(&q);
        for p in &d.policies {
            if !policies.contains(p) {
                policies.push(p.clone());
            }
        }
        d.allowed
    })
}

/// The audit record of one decision.
async fn record(
    state: &AppState,
    barrier: &Arc<Barrier>,
    claims: Option<&AccessClaims>,
    token: Option<&str>,
    source: &str,
    outcome: Result<&Grant, &Refusal>,
    details: Option<&Details>,
) -> Result<(), String> {
    let Some(log) = &state.inner.audit else {
        return Ok(());
    };
    let session = log.session(barrier).await.map_err(|e| e.to_string())?;
    let principal = claims.map(|c| {
        let scope = c.kind.scope();
        Actor {
            kind: match c.kind {
                ClientKind::Service { .. } => "service",
                ClientKind::Operator { .. } => "operator",
                ClientKind::Node => "node",
            }
            .to_owned(),
            id: c.client_id.clone(),
            root: false,
            tenant: scope.as_ref().map(|s| s.tenant.to_string()),
            project: scope.as_ref().map(|s| s.project.to_string()),
            environment: scope.as_ref().map(|s| s.environment.to_string()),
        }
    });
    let tenant = claims
        .and_then(|c| c.kind.scope())
        .map(|s| s.tenant.to_string());
    let mut event_details = BTreeMap::new();
    let (allowed, status, policies) = match outcome {
        Ok(_) => {
            if let Some(d) = details {
                event_details.extend(d.granted.clone());
            }
            (
                true,
                200,
                details.map(|d| d.policies.clone()).unwrap_or_default(),
            )
        }
        Err(r) => {
            event_details.insert("reason".to_owned(), r.reason.clone());
            (false, 403, r.policies.clone())
        }
    };
    log.append(Event {
        request_id: RequestId::generate().to_string(),
        operation: "NATS CONNECT".to_owned(),
        principal,
        action: Some("nats.connect".to_owned()),
        resource: tenant.as_ref().map(|t| format!("nats:{t}")),
        resource_tenant: tenant,
        decision: Some(Verdict {
            allowed,
            policies,
            grant: None,
        }),
        status,
        source: source.to_owned(),
        token: token.map(|t| TokenRef {
            hmac: session.hmac(t.as_bytes()),
            id: claims.map(|c| c.jti.clone()),
            binding: "none".to_owned(),
        }),
        details: event_details,
        ..Event::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    Ok(())
}
