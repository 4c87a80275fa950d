//! The SPIFFE Workload API on the agent's socket. Every call must carry
//! the `workload.spiffe.io: true` metadata (the specification's guard
//! against a server-side request forgery reaching the socket); without it
//! the call is refused with `InvalidArgument`. Every call is then
//! attested, and a workload that matches no entry of the node gets
//! `PermissionDenied` and nothing else. The streams push a new message
//! whenever an SVID is renewed, the node's entries change what the
//! workload gets, or the bundle changes.

// tonic's generated trait fixes `Status` as the error of every call, so the
// helpers that produce one return it as it is.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use vern_pki::AttestedWorkload;

use super::proto::spiffe_workload_api_server::SpiffeWorkloadApi;
use super::proto::{
    JwtBundlesRequest, JwtBundlesResponse, Jwtsvid, JwtsvidRequest, JwtsvidResponse,
    ValidateJwtsvidRequest, ValidateJwtsvidResponse, X509BundlesRequest, X509BundlesResponse,
    X509svid, X509svidRequest, X509svidResponse,
};
use super::{attest, unix_now, Agent, Bundle};

/// The metadata every Workload API call must carry.
const SECURITY_HEADER: &str = "workload.spiffe.io";

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

pub(crate) struct WorkloadApi {
    pub(crate) agent: Arc<Agent>,
}

fn check_header<T>(req: &Request<T>) -> Result<(), Status> {
    match req.metadata().get(SECURITY_HEADER).map(|v| v.to_str()) {
        Some(Ok("true")) => Ok(()),
        _ => Err(Status::invalid_argument(
            "security header missing from request",
        )),
    }
}

fn denied() -> Status {
    Status::permission_denied("no identity issued")
}

fn unavailable(e: &anyhow::Error) -> Status {
    tracing::warn!(error = %format!("{e:#}"), "Vern did not issue an SVID.");
    Status::unavailable("Vern cannot issue the SVID now")
}

impl WorkloadApi {
    /// The caller's attested properties and the services it gets; refused
    /// when it gets none.
    async fn attest<T>(&self, req: &Request<T>) -> Result<(AttestedWorkload, Vec<String>), Status> {
        check_header(req)?;
        let w = attest::peer(req, &self.agent.attest_cache, self.agent.needs_hash()).await?;
        let services = self.agent.services_for(&w);
        if services.is_empty() {
            tracing::info!(uid = w.uid, gid = w.gid, path = ?w.path, "A workload matching no entry was refused.");
            return Err(denied());
        }
        Ok((w, services))
    }

    async fn x509_response(&self, services: &[String]) -> Result<X509svidResponse, Status> {
        let svids = self
            .agent
            .svids(services)
            .await
            .map_err(|e| unavailable(&e))?;
        let bundle = self.agent.bundle.borrow().clone();
        let roots = bundle.roots.concat();
        Ok(X509svidResponse {
            svids: svids
                .iter()
                .map(|s| X509svid {
                    spiffe_id: s.spiffe_id.clone(),
                    x509_svid: s.chain_der.clone(),
                    x509_svid_key: s.key_der.to_vec(),
                    bundle: roots.clone(),
                    hint: String::new(),
                })
                .collect(),
            crl: Vec::new(),
            federated_bundles: HashMap::new(),
        })
    }
}

fn x509_bundles(b: &Bundle) -> X509BundlesResponse {
    X509BundlesResponse {
        crl: Vec::new(),
        bundles: HashMap::from([(b.trust_domain_id.clone(), b.roots.concat())]),
    }
}

fn jwt_bundles(b: &Bundle) -> JwtBundlesResponse {
    JwtBundlesResponse {
        bundles: HashMap::from([(
            b.trust_domain_id.clone(),
            b.jwt_keys.to_string().into_bytes(),
        )]),
    }
}

/// A stream that sends `first`, then runs `next` after every change the
/// agent announces (a renewal, new entries, a new bundle) and sends what it
/// makes when it differs from the last message; it ends when the client
/// goes away or `next` fails.
fn pushed<T, F, Fut>(agent: &Arc<Agent>, first: T, next: F) -> Stream_<T>
where
    T: Clone + PartialEq + Send + 'static,
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, Status>> + Send,
{
    let (tx, rx) = mpsc::channel(4);
    let mut renewed = agent.renewed.subscribe();
    let mut entries = agent.entries.subscribe();
    let mut bundle = agent.bundle.subscribe();
    tokio::spawn(async move {
        let mut last = first.clone();
        if tx.send(Ok(first)).await.is_err() {
            return;
        }
        loop {
            let changed = tokio::select! {
                r = renewed.changed() => r.is_ok(),
                r = entries.changed() => r.is_ok(),
                r = bundle.changed() => r.is_ok(),
                () = tx.closed() => false,
            };
            if !changed {
                return;
            }
            match next().await {
                Ok(msg) if msg == last => {}
                Ok(msg) => {
                    last = msg.clone();
                    if tx.send(Ok(msg)).await.is_err() {
                        return;
                    }
                }
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApi {
    type FetchX509SVIDStream = Stream_<X509svidResponse>;
    type FetchX509BundlesStream = Stream_<X509BundlesResponse>;
    type FetchJWTBundlesStream = Stream_<JwtBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        req: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        let (w, services) = self.attest(&req).await?;
        let first = self.x509_response(&services).await?;
        let api = WorkloadApi {
            agent: Arc::clone(&self.agent),
        };
        Ok(Response::new(pushed(&self.agent, first, move || {
            // The workload's entries may have changed: match again.
            let services = api.agent.services_for(&w);
            let api = WorkloadApi {
                agent: Arc::clone(&api.agent),
            };
            async move {
                if services.is_empty() {
                    return Err(denied());
                }
                api.x509_response(&services).await
            }
        })))
    }

    async fn fetch_x509_bundles(
        &self,
        req: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        self.attest(&req).await?;
        let first = x509_bundles(&self.agent.bundle.borrow());
        let agent = Arc::clone(&self.agent);
        Ok(Response::new(pushed(&self.agent, first, move || {
            let msg = x509_bundles(&agent.bundle.borrow());
            async move { Ok(msg) }
        })))
    }

    async fn fetch_jwtsvid(
        &self,
        req: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        let (_, services) = self.attest(&req).await?;
        let body = req.into_inner();
        if body.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        let mut svids = Vec::new();
        for service in &services {
            let jwt = self
                .agent
                .node
                .issue_jwt(service, &body.audience)
                .await
                .map_err(|e| unavailable(&e))?;
            if body.spiffe_id.is_empty() || body.spiffe_id == jwt.spiffe_id {
                svids.push(Jwtsvid {
                    spiffe_id: jwt.spiffe_id,
                    svid: jwt.token,
                    hint: String::new(),
                });
            }
        }
        if svids.is_empty() {
            return Err(denied());
        }
        Ok(Response::new(JwtsvidResponse { svids }))
    }

    async fn fetch_jwt_bundles(
        &self,
        req: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        self.attest(&req).await?;
        let first = jwt_bundles(&self.agent.bundle.borrow());
        let agent = Arc::clone(&self.agent);
        Ok(Response::new(pushed(&self.agent, first, move || {
            let msg = jwt_bundles(&agent.bundle.borrow());
            async move { Ok(msg) }
        })))
    }

    async fn validate_jwtsvid(
        &self,
        req: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        self.attest(&req).await?;
        let body = req.into_inner();
        if body.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if body.svid.is_empty() {
            return Err(Status::invalid_argument("svid must be specified"));
        }
        let bundle = self.agent.bundle.borrow().clone();
        let verified = vern_pki::verify_jwt_svid(
            &body.svid,
            &bundle.document,
            &bundle.trust_domain,
            &body.audience,
            unix_now(),
        )
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(ValidateJwtsvidResponse {
            spiffe_id: verified.spiffe_id,
            claims: Some(prost_types::Struct {
                fields: verified
                    .claims
                    .into_iter()
                    .map(|(k, v)| (k, proto_value(v)))
                    .collect(),
            }),
        }))
    }
}

/// A JSON value as a protobuf `Value`.
fn proto_value(v: Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.into_iter().map(proto_value).collect(),
        }),
        Value::Object(o) => Kind::StructValue(prost_types::Struct {
            fields: o.into_iter().map(|(k, v)| (k, proto_value(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}
