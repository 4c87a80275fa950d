//! The server's side of keepers (SPIKE's design): at start it fetches
//! shares from its keepers until it has a threshold and unseals itself; while
//! unsealed it checks every keeper at an interval and gives a keeper that
//! restarted empty its share again. Keeper i holds share i+1.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Notify;
use vern_crypto::{SecretBytes, Share};
use vern_seal::{Seal, SealError};

/// Where a server finds its keepers and how it talks to them.
#[derive(Debug, Clone)]
pub struct KeeperConfig {
    /// Base URLs (`https://host:port`), one per keeper, in share order.
    pub urls: Vec<String>,
    /// TLS client configuration: trusts the keepers' CA and presents the
    /// server's client certificate.
    pub tls: rustls::ClientConfig,
    /// How often keepers are checked while unsealed.
    pub sync_interval: Duration,
}

/// First and longest wait between rounds of asking keepers for shares.
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Per-request limit for keeper calls.
const KEEPER_TIMEOUT: Duration = Duration::from_secs(5);

/// A running keeper set.
pub(crate) struct Keepers {
    urls: Vec<String>,
    http: reqwest::Client,
    sync_interval: Duration,
    /// Woken after init so shares reach keepers at once.
    pub(crate) wake: Notify,
}

#[derive(Deserialize)]
struct ShareBody {
    share: String,
}

impl Keepers {
    pub(crate) fn new(config: KeeperConfig) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(config.tls)
            .timeout(KEEPER_TIMEOUT)
            .build()?;
        Ok(Self {
            urls: config.urls,
            http,
            sync_interval: config.sync_interval,
            wake: Notify::new(),
        })
    }

    fn share_url(base: &str) -> String {
        format!("{}/v1/keeper/share", base.trim_end_matches('/'))
    }

    /// The keeper's share, `None` when it holds none.
    async fn fetch(&self, base: &str) -> Result<Option<Share>, String> {
        let resp = self
            .http
            .get(Self::share_url(base))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(format!("keeper answered {}", resp.status()));
        }
        let body: ShareBody = resp.json().await.map_err(|e| e.to_string())?;
        let bytes = zeroize::Zeroizing::new(body.share);
        hex::decode(bytes.as_str())
            .map(|b| Some(SecretBytes::new(b)))
            .map_err(|_| "keeper returned a malformed share".to_owned())
    }

    async fn push(&self, base: &str, share: &Share) -> Result<(), String> {
        let body =
            zeroize::Zeroizing::new(format!("{{\"share\":\"{}\"}}", hex::encode(share.expose())));
        let resp = self
            .http
            .put(Self::share_url(base))
            .header("content-type", "application/json")
            .body(body.as_bytes().to_vec())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("keeper answered {}", resp.status()))
        }
    }

    /// Runs for the life of the server: auto-unseal at start, then keep the
    /// keepers supplied. An operator's `sys/seal` is respected: once sealed
    /// after start, Vern stays sealed until unsealed by hand or restarted.
    pub(crate) async fn run(self: Arc<Self>, seal: Arc<Seal>) {
        self.auto_unseal(&seal).await;
        loop {
            if !seal.is_sealed() {
                self.sync(&seal).await;
            }
            tokio::select! {
                () = tokio::time::sleep(self.sync_interval) => {}
                () = self.wake.notified() => {}
            }
        }
    }

    async fn auto_unseal(&self, seal: &Seal) {
        let mut wait = BACKOFF_START;
        loop {
            if !seal.is_sealed() {
                return;
            }
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

    /// One round: asks every keeper, unseals when a threshold answered.
    async fn try_unseal(&self, seal: &Seal) -> Result<bool, SealError> {
        if !seal.is_initialized().await? {
            return Ok(false);
        }
        let (_, threshold) = seal.share_parameters().await?;
        // Keepers are asked in turn: there are a handful, and an unreachable
        // one costs at most one request timeout per round.
        let mut shares: Vec<Share> = Vec::new();
        for url in &self.urls {
            match self.fetch(url).await {
                Ok(Some(share)) => {
                    if !shares
                        .iter()
                        .any(|s| s.expose().first() == share.expose().first())
                    {
                        shares.push(share);
                    }
                }
                Ok(None) => tracing::info!(keeper = %url, "Keeper holds no share yet."),
                Err(e) => tracing::warn!(keeper = %url, error = %e, "Keeper unreachable."),
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
    /// share it should hold.
    async fn sync(&self, seal: &Seal) {
        let Ok((shares, _)) = seal.share_parameters().await else {
            return;
        };
        for (i, url) in self.urls.iter().enumerate() {
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
            match self.fetch(url).await {
                Ok(Some(held)) if held == expected => {}
                Ok(_) => match self.push(url, &expected).await {
                    Ok(()) => tracing::info!(keeper = %url, share = id, "Keeper share restored."),
                    Err(e) => {
                        tracing::warn!(keeper = %url, error = %e, "Cannot give a keeper its share.")
                    }
                },
                Err(e) => tracing::warn!(keeper = %url, error = %e, "Keeper unreachable."),
            }
        }
    }
}
