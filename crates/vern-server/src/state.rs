//! Shared state handed to every handler.

use std::sync::Arc;
use std::time::Duration;

use vern_core::{Clock, SystemClock};
use vern_seal::Seal;
use vern_store::Store;

use crate::cluster::ClusterInfo;
use crate::keepers::{KeeperConfig, Keepers};
use crate::metrics::Metrics;

/// Tunables of the HTTP edge.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest accepted request body; larger ones get 413.
    pub max_request_bytes: usize,
    /// Requests running longer than this get 503.
    pub request_timeout: Duration,
    /// The cluster name reported by health and seal status; generated on
    /// first unseal when not configured.
    pub cluster_name: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_request_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            cluster_name: None,
        }
    }
}

/// Everything a handler may reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) seal: Arc<Seal>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) config: ServerConfig,
    pub(crate) metrics: Metrics,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) cluster: tokio::sync::RwLock<Option<ClusterInfo>>,
    pub(crate) keepers: Option<Arc<Keepers>>,
}

impl AppState {
    /// State over an opened store and its seal.
    pub fn new(store: Arc<dyn Store>, seal: Arc<Seal>, config: ServerConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                seal,
                store,
                config,
                metrics: Metrics::new(),
                clock: Arc::new(SystemClock),
                cluster: tokio::sync::RwLock::new(None),
                keepers: None,
            }),
        }
    }

    /// State whose seal is kept by keepers: starts the task that unseals
    /// from them and keeps them supplied. Must be called inside a Tokio
    /// runtime.
    pub fn with_keepers(
        store: Arc<dyn Store>,
        seal: Arc<Seal>,
        config: ServerConfig,
        keepers: KeeperConfig,
    ) -> Result<Self, reqwest::Error> {
        let keepers = Arc::new(Keepers::new(keepers)?);
        tokio::spawn(Arc::clone(&keepers).run(Arc::clone(&seal)));
        let mut state = Self::new(store, seal, config);
        if let Some(inner) = Arc::get_mut(&mut state.inner) {
            inner.keepers = Some(keepers);
        }
        Ok(state)
    }

    /// The seal, for the binary's start-up (dev auto-unseal).
    pub fn seal(&self) -> &Arc<Seal> {
        &self.inner.seal
    }
}
