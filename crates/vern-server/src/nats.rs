//! The NATS auth callout service and the revocation kick.
//!
//! Started by `vern serve --nats-url`, it waits until Vern is unsealed,
//! reads the NATS keys behind the barrier, and connects to nats-server as
//! the callout user (account `AUTH`) and as the system user (account `SYS`),
//! retrying until the server is up. Each request on `$SYS.REQ.USER.AUTH`
//! is opened with Vern's xkey, checked to be signed by the server it names,
//! and decided: the client's Vern access token (its NATS `auth_token`) is
//! verified as the HTTP API verifies it (revocation and client changes
//! included), and its X.509-SVID presented over TLS, if any, is verified
//! against Vern's own CAs and must name a live service (the same one as the
//! token, when both are given); each subject the client declares is decided
//! by Cedar (`nats.publish` / `nats.subscribe`), and the answer is a user
//! JWT for the tenant's account that expires with the token or the
//! certificate. Every decision is an audit record; a decision that cannot
//! be recorded is not given. With a `tls://` URL or a CA for nats-server's
//! certificate, the callout connects over TLS with an SVID of its own.
//!
//! Fail closed: when Vern is sealed the service drops its keys and its
//! connections and answers nothing, so nats-server times the request out
//! and refuses the client; a malformed or unsigned request gets no answer.
//!
//! Revocation: `/oauth2/revoke`, revoking one's own token and deleting or
//! changing a client publish a notice on `vern.nats.revoked` in the `AUTH`
//! account, so every Vern replica hears it; each kicks, through the system
//! account (`$SYS.REQ.SERVER.<id>.KICK`), the live connections it
//! authorized with that token or for that client. Notices missed while the
//! callout was not connected are made up for on its return: every
//! connection it authorized is checked again and kicked if it no longer
//! stands.

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
    /// The token's digest; none for a connection its SVID alone opened.
    token: Option<String>,
    /// The token's claims, to check again after a reconnection.
    claims: Option<AccessClaims>,
    client_id: String,
    server_id: String,
    cid: u64,
    expires: u64,
    /// When Vern allowed it: a client changed since no longer stands
    /// behind it.
    authorized_at: u64,
}

impl Live {
    fn same(&self, other: &Self) -> bool {
        self.server_id == other.server_id && self.cid == other.cid
    }
}

/// The callout's TLS client configuration: its SVID from Vern's CA, the
/// roots nats-server's certificate is checked against, and when to make a
/// new one (half the SVID's lifetime).
struct CalloutTls {
    config: rustls::ClientConfig,
    renew_at: u64,
}

/// The SPIFFE ID component of the callout's own SVID
/// (`spiffe://<td>/vern/nats-callout`).
const CALLOUT_COMPONENT: &str = "nats-callout";
/// The callout SVID's lifetime, at most (the CA's maximum may cut it).
const CALLOUT_SVID_LIFETIME: u64 = 3600;

/// Whether the callout connects over TLS: a `tls://` URL or a CA for
/// nats-server's certificate says the server requires it.
fn wants_tls(state: &AppState, url: &str) -> bool {
    state.inner.config.nats_ca_pem.is_some() || url.split(',').any(|u| u.starts_with("tls://"))
}

/// Issues the callout an SVID and builds its TLS configuration, trusting
/// Vern's anchors and the configured NATS CA for the server's certificate.
async fn callout_tls(state: &AppState, barrier: &Arc<Barrier>) -> Result<CalloutTls, String> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let pki = &state.inner.pki;
    let ttl = CALLOUT_SVID_LIFETIME.min(pki.config().max_ttl);
    let issued = pki
        .issue_component(barrier, CALLOUT_COMPONENT, &[], ttl)
        .await
        .map_err(|e| e.to_string())?;
    let record = &issued.svid.record;
    state
        .audit_own_issue(
            barrier,
            record,
            "NATS CALLOUT TLS",
            CALLOUT_COMPONENT,
            std::collections::BTreeMap::new(),
        )
        .await?;
    let mut roots_pem = pki
        .trust_anchors_pem(barrier)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(extra) = &state.inner.config.nats_ca_pem {
        roots_pem.push('\n');
        roots_pem.push_str(extra);
    }
    let roots = vern_pki::roots_from_pem(&roots_pem).map_err(|e| e.to_string())?;
    let mut chain = vec![CertificateDer::from(issued.svid.certificate_der.clone())];
    chain.extend(
        issued
            .svid
            .chain_pem
            .iter()
            .flat_map(|p| crate::ca_tls::x509_anchors(p))
            .map(CertificateDer::from),
    );
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(issued.key_der.to_vec()));
    let config =
        vern_pki::client_config_with_identity(roots, chain, key).map_err(|e| e.to_string())?;
    Ok(CalloutTls {
        config,
        renew_at: record
            .not_before
            .saturating_add(record.not_after.saturating_sub(record.not_before) / 2),
    })
}

/// Starts the callout service for `url` for the life of the process.
pub(crate) fn spawn(state: AppState, url: String) {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        let mut tls: Option<CalloutTls> = None;
        // The connections this process authorized outlive one connection
        // to nats-server (and a seal): they are checked again on return.
        let live: Arc<Mutex<Vec<Live>>> = Arc::default();
        loop {
            match serve_once(&state, &url, &mut tls, &live).await {
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
async fn serve_once(
    state: &AppState,
    url: &str,
    tls: &mut Option<CalloutTls>,
    live: &Arc<Mutex<Vec<Live>>>,
) -> Result<(), String> {
    let barrier = loop {
        match state.inner.seal.barrier() {
            Ok(b) => break b,
            Err(_) => {
                // Sealed: the SVID's key goes with the other keys.
                *tls = None;
                tokio::time::sleep(SEAL_CHECK).await
            }
        }
    };
    let keys = NatsKeys::load_or_create(&barrier)
        .await
        .map_err(|e| e.to_string())?;
    // The SVID is kept across reconnection attempts until half its life
    // has passed, so a nats-server that is down costs no issuance per try.
    if wants_tls(state, url)
        && tls
            .as_ref()
            .is_none_or(|t| state.inner.clock.unix_seconds() >= t.renew_at)
    {
        *tls = Some(callout_tls(state, &barrier).await?);
    }
    drop(barrier);
    let renew_at = tls.as_ref().map(|t| t.renew_at);
    let password = |p: &vern_crypto::SecretBytes| String::from_utf8_lossy(p.expose()).into_owned();
    // The client reconnects on its own after a lost connection; each
    // reconnection (of either user) asks for a check of what was
    // authorized, since notices may have been missed meanwhile.
    let (reconnected_tx, mut reconnected) = tokio::sync::mpsc::channel::<()>(1);
    let options = |user: &str, secret: &vern_crypto::SecretBytes, name: &str| {
        let tx = reconnected_tx.clone();
        let o =
            async_nats::ConnectOptions::with_user_and_password(user.to_owned(), password(secret))
                .name(name)
                .event_callback(move |event| {
                    let tx = tx.clone();
                    async move {
                        if matches!(event, async_nats::Event::Connected) {
                            // A check already pending covers this one too.
                            let _ = tx.try_send(());
                        }
                    }
                });
        match tls.as_ref() {
            Some(t) => o.require_tls(true).tls_client_config(t.config.clone()),
            None => o,
        }
    };
    let callout = options(CALLOUT_USER, keys.callout_password(), "vern-callout")
        .connect(url)
        .await
        .map_err(|e| format!("connecting as {CALLOUT_USER}: {e}"))?;
    let system = options(SYSTEM_USER, keys.system_password(), "vern-system")
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
    let keys = Arc::new(keys);
    tracing::info!(url = %url, "The NATS callout is serving.");
    recheck(state, &system, live).await;
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
                let live = Arc::clone(live);
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
                    kick(&system, live, &r).await;
                }
            }
            r = revoked.recv() => {
                if let Ok(r) = r {
                    let body = serde_json::to_vec(&r).map_err(|e| e.to_string())?;
                    if let Err(e) = callout.publish(REVOKED_SUBJECT, body.into()).await {
                        tracing::warn!(error = %e, "Telling replicas about a revocation failed; kicking locally.");
                        kick(&system, live, &r).await;
                    }
                }
            }
            Some(()) = reconnected.recv() => {
                tracing::info!("The NATS callout reconnected; checking what it authorized.");
                recheck(state, &system, live).await;
            }
            _ = tick.tick() => {
                if state.inner.seal.barrier().is_err() {
                    tracing::warn!("Vern sealed: the NATS callout stops answering.");
                    return Ok(());
                }
                // A reconnection inside the client would present the SVID
                // it started with: past half its life, start afresh.
                if renew_at.is_some_and(|at| state.inner.clock.unix_seconds() >= at) {
                    tracing::info!("The NATS callout reconnects with a renewed SVID.");
                    return Ok(());
                }
            }
        }
    }
}

/// Disconnects the live connections `r` names.
async fn kick(system: &async_nats::Client, live: &Mutex<Vec<Live>>, r: &Revocation) {
    let targets: Vec<Live> = live
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|c| match r {
            Revocation::Token(t) => c.token.as_ref() == Some(t),
            Revocation::Client(id) => &c.client_id == id,
        })
        .cloned()
        .collect();
    kick_all(system, live, targets).await;
}

/// Disconnects `targets` through the system account. A connection whose
/// kick was not delivered stays listed, so that the check after the next
/// reconnection tries again.
async fn kick_all(system: &async_nats::Client, live: &Mutex<Vec<Live>>, targets: Vec<Live>) {
    for c in targets {
        let subject = format!("$SYS.REQ.SERVER.{}.KICK", c.server_id);
        let body = serde_json::json!({ "cid": c.cid }).to_string();
        match tokio::time::timeout(Duration::from_secs(2), system.request(subject, body.into()))
            .await
        {
            Ok(Ok(_)) => {
                live.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .retain(|l| !l.same(&c));
                tracing::info!(client = %c.client_id, cid = c.cid, "Kicked a NATS connection after revocation.");
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, cid = c.cid, "Kicking a NATS connection failed.")
            }
            Err(_) => tracing::warn!(cid = c.cid, "Kicking a NATS connection timed out."),
        }
    }
}

/// After the callout (re)connects: revocations and client changes made
/// while it could not hear or send notices are found by checking every
/// connection this process authorized again, as a new connect would be
/// checked, and those no longer standing are kicked. A check Vern cannot
/// make now (sealed, storage down) keeps the connection listed.
async fn recheck(state: &AppState, system: &async_nats::Client, live: &Mutex<Vec<Live>>) {
    let Ok(barrier) = state.inner.seal.barrier() else {
        return;
    };
    let authority = &state.inner.authority;
    let entries: Vec<Live> = live.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut gone = Vec::new();
    for c in entries {
        let standing = match &c.claims {
            Some(claims) => !matches!(
                authority.check_live(&barrier, claims).await,
                Err(vern_authority::AuthError::Revoked | vern_authority::AuthError::ClientChanged)
            ),
            None => match authority.client(&barrier, &c.client_id).await {
                Ok(r) => r.changed_at() <= c.authorized_at,
                Err(vern_authority::AuthError::NoClient(_)) => false,
                Err(_) => true,
            },
        };
        if !standing {
            gone.push(c);
        }
    }
    if !gone.is_empty() {
        tracing::info!(
            connections = gone.len(),
            "Kicking NATS connections revoked while the callout was disconnected."
        );
        kick_all(system, live, gone).await;
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
    let Decided {
        who,
        claims,
        result,
    } = decide(state, barrier, &request, now).await;
    let token = request.token();
    let recorded = record(
        state,
        barrier,
        who.as_ref(),
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
            if let Ok((grant, _)) = &result {
                let mut l = live.lock().unwrap_or_else(|e| e.into_inner());
                let now = u64::try_from(now).unwrap_or_default();
                l.retain(|c| c.expires > now);
                l.push(Live {
                    token: token.map(token_digest),
                    claims: claims.clone(),
                    authorized_at: now,
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

/// Who a decision is about: the principal a verified token or SVID
/// named.
struct Who {
    client_id: String,
    kind: ClientKind,
    /// The token's id, when a token named the principal.
    jti: Option<String>,
}

impl From<&AccessClaims> for Who {
    fn from(c: &AccessClaims) -> Self {
        Self {
            client_id: c.client_id.clone(),
            kind: c.kind.clone(),
            jti: Some(c.jti.clone()),
        }
    }
}

/// A decision: the principal when a credential verified, and the grant or
/// the refusal.
struct Decided {
    who: Option<Who>,
    /// The token's claims, when a token was verified.
    claims: Option<AccessClaims>,
    result: Result<(Grant, Details), Refusal>,
}

impl Decided {
    fn refused(who: Option<Who>, why: impl Into<String>) -> Self {
        Self {
            who,
            claims: None,
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

/// A service's X.509-SVID, verified by Vern itself.
struct ServiceSvid {
    client_id: String,
    spiffe_id: String,
    not_after: u64,
}

/// Verifies the client's certificate as an X.509-SVID of this
/// deployment naming a service, whatever nats-server's `ca_file` trusts:
/// that bundle may hold other CAs, and Vern never takes the server's word
/// for an identity.
async fn service_svid(
    state: &AppState,
    barrier: &Barrier,
    der: &[u8],
) -> Result<ServiceSvid, String> {
    let svid = match state.inner.pki.verify_own_svid(barrier, der).await {
        Ok(Ok(svid)) => svid,
        Ok(Err(rejected)) => return Err(format!("the client certificate was refused: {rejected}")),
        Err(e) => return Err(format!("the client certificate cannot be checked: {e}")),
    };
    let Some(client_id) = svid.spiffe_id.service_client_id() else {
        return Err(format!(
            "the client certificate's SPIFFE ID `{}` names no service: only services have a NATS account",
            svid.spiffe_id
        ));
    };
    Ok(ServiceSvid {
        client_id,
        spiffe_id: svid.spiffe_id.to_string(),
        not_after: svid.not_after,
    })
}

async fn decide(state: &AppState, barrier: &Arc<Barrier>, request: &Request, now: u64) -> Decided {
    let token = request.token();
    let certificate = request.client_certificate();
    let presented = match (token, certificate) {
        (Some(t), _) => t.as_bytes(),
        (None, Some(c)) => c.as_bytes(),
        (None, None) => {
            return Decided::refused(
                None,
                "no credential: connect with a Vern access token as the NATS token, \
                 or over TLS with the service's X.509-SVID",
            )
        }
    };
    // The API's lockouts and budgets: a credential that keeps failing
    // from one address is refused before it is checked, an address that
    // keeps failing is refused once its budget of failures is spent, and
    // a principal or tenant connecting too fast is refused like its API
    // calls would be. A connect flood so costs no more than an API flood.
    let guard = &state.inner.guard;
    let source = Source::of(request.client_host().parse().ok());
    let attempt = Attempt {
        identity: CredentialId::token(presented),
        source,
    };
    if let Err(r) = guard.api_attempt(Some(&attempt)) {
        return Decided::refused(None, limited(&r));
    }
    let der = match certificate {
        None => None,
        Some(pem) => {
            use rustls::pki_types::pem::PemObject as _;
            match rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()) {
                Ok(d) => Some(d),
                Err(_) => return Decided::refused(None, "the client certificate is not PEM"),
            }
        }
    };
    let svid = match &der {
        None => None,
        Some(der) => match service_svid(state, barrier, der).await {
            Ok(s) => Some(s),
            Err(why) => {
                if let Err(r) = guard.api_failed(Some(&attempt), source) {
                    return Decided::refused(None, limited(&r));
                }
                return Decided::refused(None, why);
            }
        },
    };
    let authority = &state.inner.authority;
    let claims = match token {
        None => None,
        Some(token) => match authority
            // The certificate of the TLS handshake is the proof of
            // possession of a certificate-bound token (RFC 8705).
            .verify_access_with_certificate(
                barrier,
                token,
                Presented::Bearer,
                der.as_ref().map(|d| d.as_ref()),
            )
            .await
        {
            Ok(c) => Some(c),
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
        },
    };
    // The principal, and when its connection must end: the token's
    // expiry, the certificate's, or the sooner of both.
    let (who, expires) = match (&claims, &svid) {
        (Some(c), None) => (Who::from(c), c.exp),
        (Some(c), Some(s)) => {
            if c.client_id != s.client_id {
                return Decided::refused(
                    Some(Who::from(c)),
                    format!(
                        "the token names `{}` but the certificate names `{}`: both must name the same principal",
                        c.client_id, s.client_id
                    ),
                );
            }
            (Who::from(c), c.exp.min(s.not_after))
        }
        (None, Some(s)) => match authority.client(barrier, &s.client_id).await {
            Ok(r) => (
                Who {
                    client_id: r.client_id,
                    kind: r.kind,
                    jti: None,
                },
                s.not_after,
            ),
            Err(e) => {
                return Decided::refused(
                    None,
                    format!("the certificate names `{}`: {e}", s.client_id),
                )
            }
        },
        (None, None) => return Decided::refused(None, "no credential was verified"),
    };
    let tenant = who.kind.scope().map(|s| s.tenant.to_string());
    if let Err(r) = guard.api_succeeded(Some(&attempt), &who.client_id, tenant.as_deref()) {
        return Decided::refused(Some(who), limited(&r));
    }
    // The API allows a clock leeway past `exp`; a NATS connection ends at
    // `exp` exactly, so a credential past it gets no connection at all.
    if expires <= now {
        return Decided::refused(Some(who), "the credential has expired");
    }
    let scope = match (&who.kind, who.kind.scope()) {
        (ClientKind::Service { .. }, Some(s)) => s,
        _ => {
            return Decided::refused(
                Some(who),
                "only services have a NATS account; operators do not",
            )
        }
    };
    // The client must exist now: a deleted client's SVID opens nothing,
    // like its revoked tokens.
    let record = match authority.client(barrier, &who.client_id).await {
        Ok(r) => r,
        Err(e) => return Decided::refused(Some(who), format!("the client cannot be read: {e}")),
    };
    let declared = match declared_of(&record.nats) {
        Ok(d) => d,
        Err(e) => {
            return Decided::refused(
                Some(who),
                format!("the client's NATS subjects are unusable: {e}"),
            )
        }
    };
    let subject = PolicySubject {
        id: who.client_id.clone(),
        kind: SubjectKind::Service {
            scope: scope.clone(),
            // A token carries the scopes it was granted; an SVID stands
            // for the client itself, with the scopes it may be granted.
            scopes: claims
                .as_ref()
                .map_or_else(|| record.scopes.clone(), |c| c.scopes.clone()),
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
        Err(e) => return Decided::refused(Some(who), e.to_string()),
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
        ("expires".to_owned(), expires.to_string()),
        (
            "authenticated_by".to_owned(),
            match (&claims, &svid) {
                (Some(_), Some(_)) => "token+svid",
                (Some(_), None) => "token",
                _ => "svid",
            }
            .to_owned(),
        ),
    ]);
    if let Some(s) = &svid {
        granted.insert("spiffe_id".to_owned(), s.spiffe_id.clone());
    }
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
        name: who.client_id.clone(),
        permissions,
        expires: i64::try_from(expires).unwrap_or(i64::MAX),
    };
    Decided {
        who: Some(who),
        claims,
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
    who: Option<&Who>,
    token: Option<&str>,
    source: &str,
    outcome: Result<&Grant, &Refusal>,
    details: Option<&Details>,
) -> Result<(), String> {
    let Some(log) = &state.inner.audit else {
        return Ok(());
    };
    let session = log.session(barrier).await.map_err(|e| e.to_string())?;
    let principal = who.map(|c| {
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
    let tenant = who
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
            id: who.and_then(|c| c.jti.clone()),
            binding: "none".to_owned(),
        }),
        details: event_details,
        ..Event::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    Ok(())
}
