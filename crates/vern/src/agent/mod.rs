//! `vern agent`, the node agent, and `vern svid fetch`, its command-line
//! client.
//!
//! The agent authenticates to Vern as its node (`node.<name>`): first by
//! client credentials (its secret), then, over HTTPS, by RFC 8705
//! `tls_client_auth` with its own X.509-SVID
//! (`spiffe://<td>/vern/agent/<name>`, key made here, renewed at
//! half-life), the secret staying the fallback once that SVID has expired
//! (`node.rs`). It keeps the node's registration entries and the trust
//! bundle, and serves the SPIFFE Workload API over gRPC on a Unix socket
//! (`service.rs`). Each call is attested from the socket peer's
//! credentials (`attest.rs`) and matched against the entries; a workload
//! matching none gets `PermissionDenied`. X.509-SVIDs are issued per
//! service from CSRs made here (the key never leaves the node), cached,
//! renewed at half-life and pushed on the open streams, as are bundle
//! changes. Vern decides, for every SVID, whether the node may have it.

mod attest;
mod authority;
mod fetch;
mod node;
mod proto;
mod service;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use serde_json::{json, Value};
use tokio::sync::{watch, Mutex};
use vern_pki::{AttestedWorkload, WorkloadEntry};
use zeroize::Zeroizing;

use crate::cli::AgentArgs;
use node::{IssuedX509, NodeClient};

pub(crate) use fetch::fetch;

/// The shortest wait between two rounds of upkeep, so an SVID with a
/// lifetime of seconds is still renewed on time without a busy loop.
const MIN_TICK: Duration = Duration::from_millis(200);

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs the agent until SIGINT or SIGTERM.
pub(crate) async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let _log = crate::logging::init(args.log_format);
    let secret = Zeroizing::new(
        std::fs::read_to_string(&args.client_secret_file)
            .with_context(|| format!("cannot read {}", args.client_secret_file.display()))?
            .trim()
            .to_owned(),
    );
    let refresh = Duration::from_secs(crate::serve::duration_secs("--refresh", &args.refresh)?)
        .max(Duration::from_secs(1));
    let svid_ttl = args
        .svid_ttl
        .as_deref()
        .map(|t| crate::serve::duration_secs("--svid-ttl", t))
        .transpose()?;
    let node = NodeClient::new(
        &args.address,
        args.ca_cert.as_deref(),
        args.client_id.clone(),
        secret,
    )?;
    // The first round trip fails fast on wrong credentials or address.
    let entries = node
        .entries()
        .await
        .context("cannot read the node's entries")?;
    let bundle = Bundle::parse(&node.bundle().await.context("cannot read the bundle")?)?;
    // From here on the node logs in with its own SVID; the secret stays the
    // fallback for when that SVID has expired.
    if let Err(e) = node.keep_own_svid().await {
        tracing::warn!(error = %format!("{e:#}"), "Cannot obtain the node's own SVID; using its secret.");
    }
    let agent = Arc::new(Agent::new(node, entries, bundle, svid_ttl));
    // `SPIFFE_ENDPOINT_SOCKET` is a `unix://` URL; a plain path works too.
    let socket = match args.socket.to_str().and_then(|s| s.strip_prefix("unix://")) {
        Some(path) => std::path::PathBuf::from(path),
        None => args.socket.clone(),
    };
    let listener = bind(&socket)?;
    tracing::info!(address = %socket.display(), node = %args.client_id, "Agent is listening.");
    let upkeep = tokio::spawn(Arc::clone(&agent).upkeep(refresh));
    let served = tonic::transport::Server::builder()
        .add_service(
            proto::spiffe_workload_api_server::SpiffeWorkloadApiServer::new(service::WorkloadApi {
                agent,
            }),
        )
        .serve_with_incoming_shutdown(
            futures_util::StreamExt::map(
                tokio_stream::wrappers::UnixListenerStream::new(listener),
                |conn| conn.map(authority::relay),
            ),
            shutdown(),
        )
        .await;
    upkeep.abort();
    let _ = std::fs::remove_file(&socket);
    served.context("the Workload API server failed")
}

/// Binds the socket, replacing a stale one, open to every local user:
/// which workload gets what is decided by attestation, not by who can
/// connect.
fn bind(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            anyhow::bail!("{} exists and is not a socket", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .with_context(|| format!("cannot open {} to workloads", path.display()))?;
    Ok(listener)
}

async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// The trust bundle as the agent hands it out.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Bundle {
    /// `spiffe://<trust domain>`.
    pub(crate) trust_domain_id: String,
    /// The trust domain's name.
    pub(crate) trust_domain: String,
    /// The root certificates, DER.
    pub(crate) roots: Vec<Vec<u8>>,
    /// The `jwt-svid` keys as a JWK set.
    pub(crate) jwt_keys: Value,
    /// The whole bundle, for JWT-SVID validation.
    pub(crate) document: Value,
}

impl Bundle {
    fn parse(v: &Value) -> anyhow::Result<Self> {
        let keys = v
            .get("keys")
            .and_then(Value::as_array)
            .context("the bundle has no keys")?;
        let mut roots = Vec::new();
        let mut jwt = Vec::new();
        for k in keys {
            match k.get("use").and_then(Value::as_str) {
                Some("x509-svid") => {
                    for c in k.get("x5c").and_then(Value::as_array).into_iter().flatten() {
                        let der = base64::engine::general_purpose::STANDARD
                            .decode(c.as_str().unwrap_or_default())
                            .context("a bundle certificate is not base64")?;
                        roots.push(der);
                    }
                }
                Some("jwt-svid") => jwt.push(k.clone()),
                _ => {}
            }
        }
        let trust_domain = roots
            .iter()
            .flat_map(|r| {
                vern_pki::peer_identities(&rustls::pki_types::CertificateDer::from(r.as_slice()))
                    .into_iter()
                    .filter_map(|id| id.strip_prefix("spiffe://").map(str::to_owned))
            })
            .find(|td| !td.is_empty() && !td.contains('/'))
            .context("no root of the bundle names the trust domain")?;
        Ok(Self {
            trust_domain_id: format!("spiffe://{trust_domain}"),
            trust_domain,
            roots,
            jwt_keys: json!({ "keys": jwt }),
            document: v.clone(),
        })
    }
}

/// What the agent knows and has issued.
pub(crate) struct Agent {
    node: NodeClient,
    svid_ttl: Option<u64>,
    entries: watch::Sender<Arc<Vec<WorkloadEntry>>>,
    bundle: watch::Sender<Arc<Bundle>>,
    /// The current X.509-SVID of each service, issued on first need.
    svids: Mutex<HashMap<String, Arc<IssuedX509>>>,
    /// Bumped on every renewal, so open streams push the new SVIDs.
    renewed: watch::Sender<u64>,
    /// Wakes the upkeep when an SVID was issued, so its renewal is
    /// scheduled.
    issued: tokio::sync::Notify,
    attest_cache: attest::HashCache,
}

impl Agent {
    fn new(
        node: NodeClient,
        entries: Vec<WorkloadEntry>,
        bundle: Bundle,
        svid_ttl: Option<u64>,
    ) -> Self {
        Self {
            node,
            svid_ttl,
            entries: watch::Sender::new(Arc::new(entries)),
            bundle: watch::Sender::new(Arc::new(bundle)),
            svids: Mutex::new(HashMap::new()),
            renewed: watch::Sender::new(0),
            issued: tokio::sync::Notify::new(),
            attest_cache: attest::HashCache::default(),
        }
    }

    /// The services of the entries `w` matches, each once, in order.
    pub(crate) fn services_for(&self, w: &AttestedWorkload) -> Vec<String> {
        let entries = self.entries.borrow();
        let mut out: Vec<String> = entries
            .iter()
            .filter(|e| e.matches(w))
            .map(|e| e.service.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Whether any entry needs the executable's hash.
    pub(crate) fn needs_hash(&self) -> bool {
        self.entries.borrow().iter().any(|e| {
            e.selectors
                .iter()
                .any(|s| matches!(s, vern_pki::Selector::Sha256(_)))
        })
    }

    /// The current SVIDs of `services`, issuing those missing or past
    /// half-life.
    pub(crate) async fn svids(&self, services: &[String]) -> anyhow::Result<Vec<Arc<IssuedX509>>> {
        let mut held = self.svids.lock().await;
        let now = unix_now();
        let mut out = Vec::with_capacity(services.len());
        for s in services {
            match held.get(s) {
                Some(svid) if !past_half_life(svid, now) => out.push(Arc::clone(svid)),
                _ => {
                    let svid = Arc::new(self.node.issue_x509(Some(s), self.svid_ttl).await?);
                    tracing::info!(service = %s, spiffe_id = %svid.spiffe_id, serial = %svid.serial, expires_at = svid.expires_at, "Issued an X.509-SVID.");
                    held.insert(s.clone(), Arc::clone(&svid));
                    out.push(svid);
                    self.issued.notify_one();
                }
            }
        }
        Ok(out)
    }

    /// Keeps entries and bundle current and renews SVIDs at half-life,
    /// forever.
    async fn upkeep(self: Arc<Self>, refresh: Duration) {
        let mut last_refresh = tokio::time::Instant::now();
        loop {
            let wait = self
                .next_renewal()
                .await
                .map_or(refresh, |d| d.min(refresh));
            tokio::select! {
                () = tokio::time::sleep(wait.max(MIN_TICK)) => {}
                () = self.issued.notified() => continue,
            }
            if last_refresh.elapsed() >= refresh {
                last_refresh = tokio::time::Instant::now();
                self.refresh().await;
            }
            if let Err(e) = self.node.keep_own_svid().await {
                tracing::warn!(error = %format!("{e:#}"), "Renewing the node's own SVID failed; retrying.");
            }
            if let Err(e) = self.renew().await {
                tracing::warn!(error = %format!("{e:#}"), "Renewing SVIDs failed; retrying.");
            }
        }
    }

    /// Time until the soonest half-life of a held SVID.
    async fn next_renewal(&self) -> Option<Duration> {
        let now = unix_now();
        let own = self.node.own_svid_due_in().await.map(Duration::from_secs);
        self.svids
            .lock()
            .await
            .values()
            .map(|s| Duration::from_secs(half_life(s).saturating_sub(now)))
            .chain(own)
            .min()
    }

    async fn refresh(&self) {
        match self.node.entries().await {
            Ok(entries) => {
                self.entries.send_if_modified(|held| {
                    let changed = **held != entries;
                    if changed {
                        *held = Arc::new(entries);
                    }
                    changed
                });
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "Cannot read the node's entries; keeping the last ones.");
            }
        }
        match self.node.bundle().await.and_then(|b| Bundle::parse(&b)) {
            Ok(bundle) => {
                self.bundle.send_if_modified(|held| {
                    let changed = **held != bundle;
                    if changed {
                        tracing::info!("The trust bundle changed.");
                        *held = Arc::new(bundle);
                    }
                    changed
                });
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "Cannot read the bundle; keeping the last one.");
            }
        }
    }

    /// Renews every held SVID past half-life whose service an entry still
    /// names, and forgets the others.
    async fn renew(&self) -> anyhow::Result<()> {
        let named: Vec<String> = self
            .entries
            .borrow()
            .iter()
            .map(|e| e.service.clone())
            .collect();
        let mut held = self.svids.lock().await;
        held.retain(|service, _| named.contains(service));
        let now = unix_now();
        let due: Vec<String> = held
            .iter()
            .filter(|(_, s)| past_half_life(s, now))
            .map(|(k, _)| k.clone())
            .collect();
        let mut renewed = false;
        for service in due {
            let svid = self.node.issue_x509(Some(&service), self.svid_ttl).await?;
            tracing::info!(service = %service, spiffe_id = %svid.spiffe_id, serial = %svid.serial, expires_at = svid.expires_at, "Renewed an X.509-SVID.");
            held.insert(service, Arc::new(svid));
            renewed = true;
        }
        drop(held);
        if renewed {
            self.renewed.send_modify(|n| *n = n.wrapping_add(1));
        }
        Ok(())
    }
}

fn half_life(s: &IssuedX509) -> u64 {
    s.issued_at
        .saturating_add(s.expires_at.saturating_sub(s.issued_at) / 2)
}

fn past_half_life(s: &IssuedX509, now: u64) -> bool {
    now >= half_life(s)
}
