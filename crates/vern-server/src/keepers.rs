//! The server's side of keepers (SPIKE's design): at start it fetches
//! shares from its keepers until it has a threshold and unseals itself; while
//! unsealed it checks every keeper at an interval and gives a keeper that
//! restarted empty its share again. Keeper i holds share i+1.
//!
//! With certificates from Vern's CA (`--keeper-certs-from-ca`), the same
//! loop, while unsealed, also keeps the links themselves:
//!
//! - the server's own keeper-client identity, `spiffe://<td>/vern/server`,
//!   issued with a fresh key, renewed at half its lifetime, and kept with
//!   the CA's anchors in a directory outside the barrier (`tls_state`), so
//!   that a restarted, sealed server presents it;
//! - each keeper's serving certificate, `spiffe://<td>/vern/keeper/<i>`,
//!   renewed over the mutual-TLS connection the keeper already passed: the
//!   keeper makes the key and a CSR, the server signs and sends back the
//!   chain, the anchors and the identity it presents.
//!
//! Keepers are verified against `--keeper-ca`, or against the CA's anchors
//! when their certificate names exactly their own keeper SPIFFE ID.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::RootCertStore;
use serde::Deserialize;
use tokio::sync::Notify;
use vern_crypto::{SecretBytes, Share};
use vern_pki::{KeeperHost, Pki, SpiffeId};
use vern_seal::{Barrier, Seal, SealError};

use crate::ca_tls::x509_anchors;
use crate::state::AppState;
use crate::tls_state::{self, Identity};

/// Where a server finds its keepers and how it talks to them.
#[derive(Debug, Clone)]
pub struct KeeperConfig {
    /// Base URLs (`https://host:port`), one per keeper, in share order.
    pub urls: Vec<String>,
    /// PEM bundle of the CA that signs the keepers' bootstrap certificates.
    pub ca: PathBuf,
    /// The server's bootstrap client certificate (PEM chain) and key.
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
    /// How often keepers are checked while unsealed.
    pub sync_interval: Duration,
    /// Certificates from Vern's CA for both ends, when set.
    pub certs_from_ca: Option<CertsFromCa>,
}

/// `--keeper-certs-from-ca`.
#[derive(Debug, Clone)]
pub struct CertsFromCa {
    /// Where the server keeps its keeper-client identity and the anchors.
    pub dir: PathBuf,
    /// Lifetime of the certificates issued for keeper links (seconds).
    pub ttl: u64,
}

/// First and longest wait between rounds of asking keepers for shares.
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Per-request limit for keeper calls.
const KEEPER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait before renewing a keeper's certificate again after a
/// failure (seconds); the wait doubles from the sync interval. A keeper
/// that keeps failing (its state directory unwritable, say) would
/// otherwise get a certificate, and an audit record, every round.
const RENEW_RETRY_CAP: u64 = 3600;

/// Why keepers could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum KeepersError {
    /// A file, a URL or the TLS configuration is unusable.
    #[error("{0}")]
    Config(String),
    /// The HTTP client could not be built.
    #[error("keeper client: {0}")]
    Client(#[from] reqwest::Error),
}

/// One keeper.
struct Keeper {
    url: String,
    /// Its SPIFFE ID, the only one its certificate from the CA may name.
    id: SpiffeId,
    /// The host of its URL, the SAN of its certificate from the CA.
    host: Option<KeeperHost>,
}

/// The server's side of the links: what it presents, what it trusts,
/// and the clients built from both.
struct Links {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// When the identity from the CA is due for renewal and when it
    /// expires; `None` for the bootstrap files.
    from_ca: Option<(u64, u64)>,
    anchors: Vec<Vec<u8>>,
    clients: Vec<reqwest::Client>,
    /// Clients presenting the bootstrap identity, tried when a keeper
    /// refuses the one from the CA because it has no anchors yet (the
    /// first round, or a keeper restarted without a state directory).
    fallback: Vec<reqwest::Client>,
}

/// A certificate chain and its key, as rustls takes them.
type ClientIdentity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// The keepers and the operator's files: what every set of links is
/// built from.
struct Dial {
    keepers: Vec<Keeper>,
    bootstrap_roots: RootCertStore,
    /// The bootstrap identity, `None` when its files are unusable (they
    /// are not needed while an identity from the CA is valid).
    bootstrap: Option<ClientIdentity>,
}

/// A running keeper set.
pub(crate) struct Keepers {
    dial: Dial,
    /// Per keeper: no renewal before this time, and the failures so far.
    renew_retry: std::sync::Mutex<Vec<(u64, u32)>>,
    sync_interval: Duration,
    certs_from_ca: Option<CertsFromCa>,
    links: RwLock<Arc<Links>>,
    /// Woken after init so shares reach keepers at once.
    pub(crate) wake: Notify,
}

#[derive(Deserialize)]
struct ShareBody {
    share: String,
}

#[derive(Deserialize)]
struct CsrBody {
    csr: String,
}

/// The bootstrap client identity from its files.
fn bootstrap_identity(files: &(PathBuf, PathBuf)) -> Result<ClientIdentity, KeepersError> {
    let chain = vern_pki::load_certs(&files.0).map_err(|e| KeepersError::Config(e.to_string()))?;
    let key = vern_pki::load_key(&files.1).map_err(|e| KeepersError::Config(e.to_string()))?;
    Ok((chain, key))
}

fn from_identity(identity: &Identity) -> ClientIdentity {
    (
        identity
            .chain
            .iter()
            .map(|c| CertificateDer::from(c.clone()))
            .collect(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key.to_vec())),
    )
}

impl Keepers {
    /// The keepers of `config`, their SPIFFE IDs in `pki`'s trust domain.
    /// With certificates from the CA, an identity kept from an earlier run
    /// and still valid at `now` is presented; otherwise (or when it
    /// expired) the bootstrap files, and the log says why.
    pub(crate) fn new(config: KeeperConfig, pki: &Pki, now: u64) -> Result<Self, KeepersError> {
        let bootstrap_roots =
            vern_pki::load_roots(&config.ca).map_err(|e| KeepersError::Config(e.to_string()))?;
        let mut keepers = Vec::new();
        for (i, url) in config.urls.iter().enumerate() {
            let index = u8::try_from(i + 1)
                .map_err(|_| KeepersError::Config("at most 255 keepers".to_owned()))?;
            let id = pki
                .keeper_spiffe_id(index)
                .map_err(|e| KeepersError::Config(e.to_string()))?;
            let host = match &config.certs_from_ca {
                None => None,
                Some(_) => {
                    let parsed = reqwest::Url::parse(url)
                        .map_err(|e| KeepersError::Config(format!("keeper URL `{url}`: {e}")))?;
                    let host = parsed.host_str().unwrap_or_default();
                    Some(
                        KeeperHost::parse(host).map_err(|e| {
                            KeepersError::Config(format!("keeper URL `{url}`: {e}"))
                        })?,
                    )
                }
            };
            keepers.push(Keeper {
                url: url.trim_end_matches('/').to_owned(),
                id,
                host,
            });
        }
        let bootstrap_files = (config.client_cert.clone(), config.client_key.clone());
        let stored = match &config.certs_from_ca {
            Some(c) => Some(tls_state::load(&c.dir).map_err(KeepersError::Config)?),
            None => None,
        };
        let (identity, anchors) = match stored {
            Some(s) => (s.identity, s.anchors),
            None => (None, Vec::new()),
        };
        let kept = match identity {
            Some(id) if now < id.not_after => {
                tracing::info!(
                    not_after = id.not_after,
                    "Presenting the keeper-client certificate from Vern's CA."
                );
                Some(id)
            }
            Some(id) => {
                tracing::warn!(
                    not_after = id.not_after,
                    "The keeper-client certificate from Vern's CA expired while Vern was down; presenting --keeper-client-cert until Vern is unsealed."
                );
                None
            }
            None => None,
        };
        let bootstrap = match bootstrap_identity(&bootstrap_files) {
            Ok(b) => Some(b),
            Err(e) if kept.is_some() => {
                tracing::warn!(error = %e, "The keeper client certificate files are unusable; only the certificate from Vern's CA is presented.");
                None
            }
            Err(e) => return Err(e),
        };
        let (chain, key, from_ca) = match (&kept, &bootstrap) {
            (Some(id), _) => {
                let (chain, key) = from_identity(id);
                (chain, key, Some((id.renew_at(), id.not_after)))
            }
            (None, Some((chain, key))) => (chain.clone(), key.clone_key(), None),
            (None, None) => {
                return Err(KeepersError::Config(
                    "no keeper client certificate is usable".to_owned(),
                ))
            }
        };
        let dial = Dial {
            keepers,
            bootstrap_roots,
            bootstrap,
        };
        let links = dial.links_for(chain, key, from_ca, anchors)?;
        Ok(Self {
            renew_retry: std::sync::Mutex::new(vec![(0, 0); dial.keepers.len()]),
            dial,
            sync_interval: config.sync_interval,
            certs_from_ca: config.certs_from_ca,
            links: RwLock::new(Arc::new(links)),
            wake: Notify::new(),
        })
    }
}

impl Dial {
    /// One client per keeper: each trusts the CA's anchors only for that
    /// keeper's own SPIFFE ID.
    fn clients(
        &self,
        anchors: &[Vec<u8>],
        chain: &[CertificateDer<'static>],
        key: &PrivateKeyDer<'static>,
    ) -> Result<Vec<reqwest::Client>, KeepersError> {
        self.keepers
            .iter()
            .map(|k| {
                let tls = vern_pki::keeper_client_config(
                    self.bootstrap_roots.clone(),
                    anchors,
                    &k.id,
                    chain.to_vec(),
                    key.clone_key(),
                )
                .map_err(|e| KeepersError::Config(format!("keeper TLS configuration: {e}")))?;
                Ok(reqwest::Client::builder()
                    .use_preconfigured_tls(tls)
                    .tls_info(true)
                    .timeout(KEEPER_TIMEOUT)
                    .build()?)
            })
            .collect()
    }

    /// The links presenting `chain` and `key` and trusting `anchors`.
    fn links_for(
        &self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        from_ca: Option<(u64, u64)>,
        anchors: Vec<Vec<u8>>,
    ) -> Result<Links, KeepersError> {
        let clients = self.clients(&anchors, &chain, &key)?;
        let fallback = match (&from_ca, &self.bootstrap) {
            (Some(_), Some((b_chain, b_key))) => self.clients(&anchors, b_chain, b_key)?,
            _ => Vec::new(),
        };
        Ok(Links {
            chain,
            key,
            from_ca,
            anchors,
            clients,
            fallback,
        })
    }
}

impl Keepers {
    fn links(&self) -> Arc<Links> {
        Arc::clone(&self.links.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Presents `chain` and `key` and trusts `anchors` from the next
    /// request on.
    fn install(
        &self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        from_ca: Option<(u64, u64)>,
        anchors: Vec<Vec<u8>>,
    ) -> Result<(), KeepersError> {
        let links = self.dial.links_for(chain, key, from_ca, anchors)?;
        *self.links.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(links);
        Ok(())
    }

    /// Sends the request `make` builds to keeper `i`, presenting the
    /// current identity, then the bootstrap one if that failed.
    async fn send(
        &self,
        i: usize,
        make: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, String> {
        let links = self.links();
        let (Some(keeper), Some(http)) = (self.dial.keepers.get(i), links.clients.get(i)) else {
            return Err("no such keeper".to_owned());
        };
        match make(http, &keeper.url).send().await {
            Ok(resp) => Ok(resp),
            Err(e) => match links.fallback.get(i) {
                Some(bootstrap) => make(bootstrap, &keeper.url)
                    .send()
                    .await
                    .map_err(|b| format!("{e}; presenting --keeper-client-cert instead: {b}")),
                None => Err(e.to_string()),
            },
        }
    }

    fn share_url(base: &str) -> String {
        format!("{base}/v1/keeper/share")
    }

    /// The keeper's share (`None` when it holds none) and the certificate
    /// it presented.
    async fn fetch(&self, i: usize) -> Result<(Option<Share>, Option<Vec<u8>>), String> {
        let resp = self
            .send(i, |http, url| http.get(Self::share_url(url)))
            .await?;
        let peer = resp
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|t| t.peer_certificate())
            .map(<[u8]>::to_vec);
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok((None, peer));
        }
        if !resp.status().is_success() {
            return Err(format!("keeper answered {}", resp.status()));
        }
        let body: ShareBody = resp.json().await.map_err(|e| e.to_string())?;
        let bytes = zeroize::Zeroizing::new(body.share);
        hex::decode(bytes.as_str())
            .map(|b| (Some(SecretBytes::new(b)), peer))
            .map_err(|_| "keeper returned a malformed share".to_owned())
    }

    async fn push(&self, i: usize, share: &Share) -> Result<(), String> {
        let body =
            zeroize::Zeroizing::new(format!("{{\"share\":\"{}\"}}", hex::encode(share.expose())));
        let resp = self
            .send(i, |http, url| {
                http.put(Self::share_url(url))
                    .header("content-type", "application/json")
                    .body(body.as_bytes().to_vec())
            })
            .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("keeper answered {}", resp.status()))
        }
    }

    /// Runs for the life of the server: auto-unseal at start, then keep the
    /// keepers supplied. An operator's `sys/seal` is respected: once sealed
    /// after start, Vern stays sealed until unsealed by hand or restarted.
    pub(crate) async fn run(self: Arc<Self>, state: AppState) {
        let seal = Arc::clone(&state.inner.seal);
        self.auto_unseal(&state).await;
        loop {
            if seal.is_sealed() {
                self.fall_back_if_expired(&state);
            } else {
                if self.certs_from_ca.is_some() {
                    self.renew_own(&state).await;
                }
                self.sync(&state).await;
            }
            tokio::select! {
                () = tokio::time::sleep(self.sync_interval) => {}
                () = self.wake.notified() => {}
            }
        }
    }

    async fn auto_unseal(&self, state: &AppState) {
        let seal = &state.inner.seal;
        let mut wait = BACKOFF_START;
        loop {
            if !seal.is_sealed() {
                return;
            }
            self.fall_back_if_expired(state);
            match self.try_unseal(seal).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "Auto-unseal from keepers failed; retrying."),
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.wake.notified() => {}
            }
            wait = (wait * 2).min(BACKOFF_CAP);
        }
    }

    /// While sealed nothing can be issued: an identity from the CA that
    /// expires gives way to the bootstrap files.
    fn fall_back_if_expired(&self, state: &AppState) {
        let links = self.links();
        let Some((_, not_after)) = links.from_ca else {
            return;
        };
        if state.inner.clock.unix_seconds() < not_after {
            return;
        }
        let fallback = match &self.dial.bootstrap {
            Some((chain, key)) => {
                self.install(chain.clone(), key.clone_key(), None, links.anchors.clone())
            }
            None => Err(KeepersError::Config(
                "--keeper-client-cert is unusable".to_owned(),
            )),
        };
        match fallback {
            Ok(()) => tracing::warn!(
                not_after,
                "The keeper-client certificate from Vern's CA expired while sealed; presenting --keeper-client-cert."
            ),
            Err(e) => tracing::error!(error = %e, "The keeper-client certificate from Vern's CA expired and --keeper-client-cert is unusable."),
        }
    }

    /// One round: asks every keeper, unseals when a threshold answered.
    async fn try_unseal(&self, seal: &Seal) -> Result<bool, SealError> {
        if !seal.is_initialized().await? {
            return Ok(false);
        }
        let (_, threshold) = seal.share_parameters().await?;
        // Keepers are asked in turn: there are a handful, and an unreachable
        // one costs at most one request timeout per round.
        let mut shares: Vec<Share> = Vec::new();
        for (i, keeper) in self.dial.keepers.iter().enumerate() {
            match self.fetch(i).await {
                Ok((Some(share), _)) => {
                    if !shares
                        .iter()
                        .any(|s| s.expose().first() == share.expose().first())
                    {
                        shares.push(share);
                    }
                }
                Ok((None, _)) => tracing::info!(keeper = %keeper.url, "Keeper holds no share yet."),
                Err(e) => tracing::warn!(keeper = %keeper.url, error = %e, "Keeper unreachable."),
            }
        }
        if shares.len() < usize::from(threshold) {
            tracing::info!(
                have = shares.len(),
                need = threshold,
                "Waiting for more keepers."
            );
            return Ok(false);
        }
        shares.truncate(usize::from(threshold));
        seal.unseal_with(&shares).await?;
        tracing::info!("Unsealed with shares from keepers.");
        Ok(true)
    }

    /// Gives every keeper that lacks its share (or holds a stale one) the
    /// share it should hold, and renews a keeper's certificate from the CA
    /// when it is due.
    async fn sync(&self, state: &AppState) {
        let seal = &state.inner.seal;
        let Ok((shares, _)) = seal.share_parameters().await else {
            return;
        };
        for (i, keeper) in self.dial.keepers.iter().enumerate() {
            let url = &keeper.url;
            let Some(id) = u8::try_from(i + 1).ok().filter(|id| *id <= shares) else {
                tracing::warn!(keeper = %url, shares, "More keepers than shares; this keeper gets none.");
                continue;
            };
            let expected = match seal.share(id).await {
                Ok(s) => s,
                Err(SealError::Sealed) => return,
                Err(e) => {
                    tracing::error!(error = %e, "Cannot compute a keeper share.");
                    return;
                }
            };
            let peer = match self.fetch(i).await {
                Ok((Some(held), peer)) if held == expected => peer,
                Ok((_, peer)) => {
                    match self.push(i, &expected).await {
                        Ok(()) => {
                            tracing::info!(keeper = %url, share = id, "Keeper share restored.")
                        }
                        Err(e) => {
                            tracing::warn!(keeper = %url, error = %e, "Cannot give a keeper its share.")
                        }
                    }
                    peer
                }
                Err(e) => {
                    tracing::warn!(keeper = %url, error = %e, "Keeper unreachable.");
                    continue;
                }
            };
            if self.certs_from_ca.is_some() {
                let now = state.inner.clock.unix_seconds();
                if self.renewal_waits(i, now) {
                    continue;
                }
                let result = self.renew_keeper(state, i, id, peer.as_deref()).await;
                self.renewal_done(i, now, result.is_ok());
                if let Err(e) = result {
                    tracing::warn!(keeper = %url, error = %e, "Cannot renew the keeper's certificate from Vern's CA.");
                }
            }
        }
    }

    /// Whether keeper `i`'s renewal waits at `now` after failures.
    fn renewal_waits(&self, i: usize, now: u64) -> bool {
        self.renew_retry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(i)
            .is_some_and(|(not_before, _)| now < *not_before)
    }

    /// Records the outcome of keeper `i`'s renewal round started at `now`:
    /// a failure doubles the wait before the next one.
    fn renewal_done(&self, i: usize, now: u64, ok: bool) {
        let interval = self.sync_interval.as_secs().max(1);
        let mut retry = self.renew_retry.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = retry.get_mut(i) {
            *entry = if ok {
                (0, 0)
            } else {
                let failures = entry.1.saturating_add(1);
                let wait = interval
                    .saturating_mul(1 << failures.min(12))
                    .min(RENEW_RETRY_CAP);
                (now.saturating_add(wait), failures)
            };
        }
    }

    /// Issues the server's keeper-client identity when it is due (none
    /// from the CA yet, or half its lifetime gone), keeps it and the
    /// current anchors on disk, and presents them from the next request.
    async fn renew_own(&self, state: &AppState) {
        let Some(cfg) = &self.certs_from_ca else {
            return;
        };
        let Ok(barrier) = state.inner.seal.barrier() else {
            return;
        };
        let now = state.inner.clock.unix_seconds();
        // Init wakes this loop before the server has created the CA.
        if let Err(e) = state.inner.pki.ensure_ca(&barrier).await {
            tracing::warn!(error = %e, "Vern's CA is not ready for keepers.");
            return;
        }
        let anchors = match state.inner.pki.trust_anchors_pem(&barrier).await {
            Ok(pem) => x509_anchors(&pem),
            Err(e) => {
                tracing::warn!(error = %e, "Cannot read the CA's anchors for keepers.");
                return;
            }
        };
        let links = self.links();
        let due = links.from_ca.is_none_or(|(renew_at, _)| now >= renew_at);
        if !due && links.anchors == anchors {
            return;
        }
        if let Err(e) = tls_state::save_anchors(&cfg.dir, &anchors) {
            tracing::error!(error = %e, "Cannot keep the CA's anchors for keepers.");
            return;
        }
        let result = if due {
            match state.issue_keeper_client(&barrier, cfg).await {
                Ok(identity) => {
                    let (chain, key) = from_identity(&identity);
                    let window = Some((identity.renew_at(), identity.not_after));
                    self.install(chain, key, window, anchors).map(|()| {
                        tracing::info!(
                            not_after = identity.not_after,
                            "Keepers see a client certificate from Vern's CA."
                        )
                    })
                }
                Err(e) => Err(KeepersError::Config(e)),
            }
        } else {
            self.install(
                links.chain.clone(),
                links.key.clone_key(),
                links.from_ca,
                anchors,
            )
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "Cannot renew the keeper-client certificate from Vern's CA; retrying.");
        }
    }

    /// Renews keeper `i`'s serving certificate unless the one it
    /// presented (`peer`) is its own SVID from this CA with more than half
    /// its lifetime left.
    async fn renew_keeper(
        &self,
        state: &AppState,
        i: usize,
        share: u8,
        peer: Option<&[u8]>,
    ) -> Result<(), String> {
        let (Some(cfg), Some(keeper)) = (&self.certs_from_ca, self.dial.keepers.get(i)) else {
            return Ok(());
        };
        let Some(host) = &keeper.host else {
            return Ok(());
        };
        let barrier = state.inner.seal.barrier().map_err(|e| e.to_string())?;
        let pki = &state.inner.pki;
        let now = state.inner.clock.unix_seconds();
        if let Some(der) = peer {
            let own = pki
                .is_own_svid(&barrier, der, &keeper.id)
                .await
                .map_err(|e| e.to_string())?;
            let fresh = vern_pki::validity(der)
                .is_some_and(|(nb, na)| now < nb.saturating_add(na.saturating_sub(nb) / 2));
            if own && fresh {
                return Ok(());
            }
        }
        let server_identity = pki.server_spiffe_id().map_err(|e| e.to_string())?;
        let ask = serde_json::json!({ "server_identity": server_identity.to_string() });
        let resp = self
            .send(i, |http, url| {
                http.post(format!("{url}/v1/keeper/csr")).json(&ask)
            })
            .await?;
        if !resp.status().is_success() {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            return Err(format!(
                "keeper answered {status} to the CSR request: {}",
                text.chars().take(512).collect::<String>()
            ));
        }
        let csr: CsrBody = resp.json().await.map_err(|e| e.to_string())?;
        let svid = pki
            .issue_keeper(&barrier, share, host, &csr.csr, cfg.ttl)
            .await
            .map_err(|e| e.to_string())?;
        let record = &svid.record;
        state
            .audit_own_issue(
                &barrier,
                record,
                "vern serve --keeper-certs-from-ca",
                vern_pki::SERVER_COMPONENT,
                BTreeMap::from([
                    ("keeper".to_owned(), keeper.url.clone()),
                    ("dns_names".to_owned(), record.dns_names.join(",")),
                    ("ip_addresses".to_owned(), record.ip_addresses.join(",")),
                ]),
            )
            .await?;
        let anchors = pki
            .trust_anchors_pem(&barrier)
            .await
            .map_err(|e| e.to_string())?;
        let body = serde_json::json!({
            "certificate": format!("{}{}", svid.certificate_pem, svid.chain_pem.concat()),
            "anchors": anchors,
            "server_identity": server_identity.to_string(),
        });
        let resp = self
            .send(i, |http, url| {
                http.put(format!("{url}/v1/keeper/certificate")).json(&body)
            })
            .await?;
        if !resp.status().is_success() {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            return Err(format!(
                "keeper answered {status}: {}",
                text.chars().take(512).collect::<String>()
            ));
        }
        tracing::info!(keeper = %keeper.url, serial = %record.serial, not_after = record.not_after, "Keeper certificate renewed from Vern's CA.");
        Ok(())
    }
}

impl AppState {
    /// Issues the server's keeper-client identity: `spiffe://<td>/vern/server`
    /// with a fresh key, audited, and kept in `cfg.dir`. A certificate
    /// whose audit record or file cannot be written is not used.
    async fn issue_keeper_client(
        &self,
        barrier: &Arc<Barrier>,
        cfg: &CertsFromCa,
    ) -> Result<Identity, String> {
        let issued = self
            .inner
            .pki
            .issue_component(barrier, vern_pki::SERVER_COMPONENT, &[], cfg.ttl)
            .await
            .map_err(|e| e.to_string())?;
        let record = &issued.svid.record;
        self.audit_own_issue(
            barrier,
            record,
            "vern serve --keeper-certs-from-ca",
            vern_pki::SERVER_COMPONENT,
            BTreeMap::from([("purpose".to_owned(), "keeper client".to_owned())]),
        )
        .await?;
        let mut chain = vec![issued.svid.certificate_der.clone()];
        chain.extend(issued.svid.chain_pem.iter().flat_map(|p| x509_anchors(p)));
        let identity = Identity::new(chain, issued.key_der.clone())
            .ok_or_else(|| "the issued certificate does not read back".to_owned())?;
        tls_state::save_identity(&cfg.dir, &identity)?;
        Ok(identity)
    }
}
