//! The audit point of the request path: every request other than public
//! probes gets an [`AuditSlot`] that authentication and authorization fill
//! in, and after the handler the record is appended before the response
//! leaves. If the append fails the response is replaced by a 500, so no
//! data reaches a caller whose request is not on record.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt as _;
use tracing::Instrument as _;
use vern_audit::{Actor, Event, Session, TokenRef, Verdict};
use vern_core::{Principal, PrincipalKind, RequestId};
use vern_policy::{Binding, Decision, Resource};
use vern_store::CommitGate;

use crate::error::ApiError;
use crate::routes::Access;
use crate::state::AppState;

/// What is known of a request so far; filled in as it goes.
#[derive(Clone)]
pub(crate) struct AuditSlot {
    inner: Arc<Mutex<Slot>>,
}

struct Slot {
    event: Event,
    session: Option<Arc<Session>>,
}

impl AuditSlot {
    fn new(session: Option<Arc<Session>>) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Slot {
                event: Event::default(),
                session,
            })),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Slot) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The caller, once authenticated.
    pub(crate) fn principal(&self, principal: &Principal) {
        let actor = match &principal.kind {
            PrincipalKind::Service { scope } => Actor {
                kind: "service".to_owned(),
                id: principal.id.clone(),
                root: false,
                tenant: Some(scope.tenant.to_string()),
                project: Some(scope.project.to_string()),
                environment: Some(scope.environment.to_string()),
            },
            PrincipalKind::Operator { root, tenant } => Actor {
                kind: "operator".to_owned(),
                id: principal.id.clone(),
                root: *root,
                tenant: tenant.as_ref().map(ToString::to_string),
                project: None,
                environment: None,
            },
            PrincipalKind::Node => Actor {
                kind: "node".to_owned(),
                id: principal.id.clone(),
                root: false,
                tenant: None,
                project: None,
                environment: None,
            },
        };
        self.with(|s| s.event.principal = Some(actor));
    }

    /// The presented token, kept only as its HMAC.
    pub(crate) fn token(&self, token: &str) {
        self.with(|s| {
            let hmac = s
                .session
                .as_ref()
                .map_or_else(String::new, |k| k.hmac(token.as_bytes()));
            s.event.token = Some(TokenRef {
                hmac,
                id: None,
                binding: Binding::None.name().to_owned(),
            });
        });
    }

    /// The verified token's id and binding.
    pub(crate) fn token_details(&self, id: Option<String>, binding: Binding) {
        self.with(|s| {
            if let Some(t) = &mut s.event.token {
                t.id = id;
                t.binding = binding.name().to_owned();
            }
        });
    }

    /// A Cedar decision. The first one is the request's own; later ones
    /// (entries filtered out of a listing) do not replace it.
    pub(crate) fn decision(&self, action: &str, resource: &Resource, d: &Decision) {
        self.with(|s| {
            if s.event.decision.is_some() {
                return;
            }
            s.event.action = Some(action.to_owned());
            s.event.resource = Some(resource.spec());
            s.event.resource_tenant = resource.tenant().map(ToString::to_string);
            s.event.decision = Some(Verdict {
                allowed: d.allowed,
                policies: d.policies.clone(),
                grant: d.grant.clone(),
            });
        });
    }

    /// An operation no policy decides (unseal, token issuance).
    pub(crate) fn action(&self, action: &str, resource: Option<String>) {
        self.with(|s| {
            s.event.action = Some(action.to_owned());
            s.event.resource = resource;
        });
    }

    /// The action a request was refused before any decision named it
    /// (a request that could not even be asked about), with its resource.
    pub(crate) fn action_if_undecided(&self, action: &str, resource: Resource) {
        self.with(|s| {
            if s.event.decision.is_none() && s.event.action.is_none() {
                s.event.action = Some(action.to_owned());
                s.event.resource = Some(resource.spec());
                s.event.resource_tenant = resource.tenant().map(ToString::to_string);
            }
        });
    }

    /// The tenant whose resource an undecided operation concerns (the
    /// service a login obtained a token of), so that tenant's auditors see
    /// the record.
    pub(crate) fn resource_tenant(&self, tenant: &str) {
        self.with(|s| s.event.resource_tenant = Some(tenant.to_owned()));
    }

    /// Another sensitive value of the request, kept as its HMAC.
    pub(crate) fn sensitive(&self, name: &str, value: &[u8]) {
        self.with(|s| {
            if let Some(k) = &s.session {
                let hmac = k.hmac(value);
                s.event.hmacs.insert(name.to_owned(), hmac);
            }
        });
    }

    /// A fact of what the request did that is not secret, kept in clear as
    /// printable text so the chain anchors it (an issued certificate's
    /// serial, the address of stored evidence and who signed it, why a
    /// request was refused).
    pub(crate) fn detail(&self, name: &str, value: &str) {
        self.with(|s| {
            s.event
                .details
                .insert(name.to_owned(), printable_long(value));
        });
    }

    /// The HMAC of `value` under this request's audit key, if unsealed.
    pub(crate) fn hmac(&self, value: &[u8]) -> Option<String> {
        self.with(|s| s.session.as_ref().map(|k| k.hmac(value)))
    }

    fn finish(self, base: Event) -> Event {
        self.with(|s| {
            let mut event = std::mem::take(&mut s.event);
            event.request_id = base.request_id;
            event.client_request_id = base.client_request_id;
            event.operation = base.operation;
            event.status = base.status;
            event.source = base.source;
            event
        })
    }
}

/// A caller-chosen name as it may appear in an audit record: at most 128
/// characters, control characters replaced.
pub(crate) fn printable(name: &str) -> String {
    name.chars()
        .take(128)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Text from a request or about it, such as a refusal naming what the
/// request asked for: at most 512 characters, control characters replaced.
fn printable_long(text: &str) -> String {
    text.chars()
        .take(512)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn fail_closed(err: &vern_audit::AuditError) -> Response {
    tracing::error!(error = %err, "The audit record could not be written; the request fails.");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the audit record of this request could not be written, so the request failed",
    )
    .into_response()
}

/// The middleware. While sealed nothing is decrypted and nothing recorded:
/// the keys that HMAC and sign records are behind the barrier.
pub(crate) async fn record(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(log) = state.inner.audit.clone() else {
        return next.run(req).await;
    };
    // Probes and public documents, as the route table declares them, are
    // not worth a record each.
    let access = crate::authz::access_of(&req);
    if access == Some(Access::Public) {
        return next.run(req).await;
    }
    let method = crate::authz::table_method(&req);
    let route = crate::middleware::route_template(&req);
    let seal = Arc::clone(&state.inner.seal);
    let mut session = match seal.barrier() {
        Ok(barrier) => match log.session(&barrier).await {
            Ok(s) => Some(s),
            Err(e) => return fail_closed(&e),
        },
        Err(_) => None,
    };
    let slot = AuditSlot::new(session.clone());
    // An open route's action is on its record from the start, so that a
    // request refused before its handler names what it tried (a body that
    // is not JSON, a cross-site request); the handler adds the resource.
    if let Some(Access::Open(action)) = access {
        slot.action(action, None);
    }
    req.extensions_mut().insert(slot.clone());
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.as_str().to_owned())
        .unwrap_or_default();
    let client_request_id = req
        .extensions()
        .get::<crate::middleware::ClientRequestId>()
        .map(|c| c.0.as_str().to_owned());
    let source = crate::client_addr::ClientAddr::of(req.extensions()).to_string();
    // The handler and the append run as their own task: a client that
    // hangs up drops this future, but never the record of what its
    // request already did.
    let limit = state.inner.config.request_timeout;
    let metrics = state.inner.metrics.clone();
    let span = tracing::Span::current();
    let work = tokio::spawn(
        async move {
            // A panic anywhere in the handler still ends in a 500 and a
            // record. The handler owns nothing this task reads afterwards
            // but its response, so unwinding past it leaves no broken state.
            let resp = match AssertUnwindSafe(next.run(req)).catch_unwind().await {
                Ok(resp) => resp,
                Err(_) => {
                    tracing::error!("A request handler panicked.");
                    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the request failed")
                        .into_response()
                }
            };
            if session.is_none() {
                // The request may have unsealed: its record opens the new log.
                if let Ok(barrier) = seal.barrier() {
                    match log.session(&barrier).await {
                        Ok(s) => session = Some(s),
                        Err(e) => return fail_closed(&e),
                    }
                }
            }
            if session.is_none() {
                return resp;
            }
            let event = slot.finish(Event {
                request_id,
                client_request_id,
                operation: format!("{method} {route}"),
                status: resp.status().as_u16(),
                source,
                ..Event::default()
            });
            // The record states the status the client gets: it is either
            // written and the response leaves, or withdrawn in time and the
            // client gets a 500 that no record contradicts.
            let gate = CommitGate::new();
            let append = log.append_gated(event, Arc::clone(&gate));
            tokio::pin!(append);
            let appended = tokio::select! {
                r = &mut append => r,
                () = tokio::time::sleep(limit) => {
                    if gate.abandon() {
                        Err(vern_audit::AuditError::Write(format!(
                            "not durable within {} s",
                            limit.as_secs_f64()
                        )))
                    } else {
                        append.await
                    }
                }
            };
            metrics.audited(appended.is_ok());
            if seal.is_sealed() {
                // This request sealed the server: sign the head, drop the keys.
                if let Err(e) = log.close().await {
                    tracing::error!(error = %e, "The closing audit checkpoint could not be written.");
                }
            }
            match appended {
                Ok(_) => resp,
                Err(e) => fail_closed(&e),
            }
        }
        // Keeps the request id on the handler's log lines.
        .instrument(span),
    );
    match work.await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::error!(error = %e, "A request task failed.");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the request failed").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt as _;
    use vern_core::SystemClock;
    use vern_seal::Seal;

    use super::*;
    use crate::state::ServerConfig;

    async fn boom() -> &'static str {
        panic!("a handler defect")
    }

    /// A handler that panics still answers 500, and its request is on
    /// record with that status.
    #[tokio::test]
    async fn a_panicking_handler_answers_500_and_leaves_a_record() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("vern.db").display());
        let store = vern_store::open(&url, 2).await.unwrap();
        let seal = Arc::new(
            Seal::new(Arc::clone(&store), Arc::new(SystemClock))
                .await
                .unwrap(),
        );
        seal.init_unsealed(1, 1, &[], None).await.unwrap();
        let state =
            AppState::new(Arc::clone(&store), store, seal, ServerConfig::default()).unwrap();
        let app: Router = Router::new()
            .route("/boom", get(boom))
            .layer(axum::middleware::from_fn_with_state(state.clone(), record))
            .with_state(state.clone());
        let resp = app
            .oneshot(
                axum::http::Request::get("/boom")
                    .header("x-request-id", "boom-1")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let log = state.inner.audit.as_ref().unwrap();
        let page = log
            .query(&vern_audit::Filter {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        let boom: Vec<_> = page
            .records
            .iter()
            .filter(|r| r.event.operation == "GET /boom")
            .collect();
        assert_eq!(boom.len(), 1, "{:?}", page.records);
        assert_eq!(boom[0].event.status, 500);
    }
}
