//! Shared state handed to every handler.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use vern_audit::AuditLog;
use vern_authority::{Authority, AuthorityConfig, NonceRule};
use vern_core::{Clock, SystemClock};
use vern_pki::{Pki, PkiConfig, TrustDomain};
use vern_policy::PolicyEngine;
use vern_seal::Seal;
use vern_secrets::KvEngine;
use vern_store::Store;

use crate::client_addr::Cidr;
use crate::cluster::ClusterInfo;
use crate::jwks_fetch::HttpJwks;
use crate::keepers::{KeeperConfig, Keepers};
use crate::limits::{Guard, Limits};
use crate::metrics::Metrics;

/// Why the server state could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// A KV mount is misnamed.
    #[error(transparent)]
    Kv(#[from] vern_secrets::KvError),
    /// The policies are invalid.
    #[error(transparent)]
    Policy(#[from] vern_policy::PolicyError),
    /// The audit log could not be opened.
    #[error(transparent)]
    Audit(#[from] vern_audit::AuditError),
    /// The keeper client could not be built.
    #[error(transparent)]
    Keepers(#[from] crate::keepers::KeepersError),
    /// The HTTP client that fetches issuers' JWK sets could not be built.
    #[error("JWKS client: {0}")]
    Jwks(String),
}

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
    /// Names of the KV v2 mounts (`secret` by default).
    pub kv_mounts: Vec<String>,
    /// The URL clients reach this server at: the token issuer, and the
    /// base of DPoP `htu` checks. Defaults to the listener's address.
    pub public_url: String,
    /// Whether DPoP proofs at the token endpoint need a server nonce.
    pub dpop_nonce_required: bool,
    /// Rate limits and lockout.
    pub limits: Limits,
    /// Proxies whose `X-Forwarded-For` names the client (empty: the TCP
    /// peer is always the client).
    pub trusted_proxies: Vec<Cidr>,
    /// Algorithm of new token signing keys.
    pub token_signing_alg: vern_authority::Alg,
    /// Directory of `*.cedar` policy files (built-in policies only when
    /// not set).
    pub policy_dir: Option<std::path::PathBuf>,
    /// The audit log's settings; `None` turns audit off.
    pub audit: Option<vern_audit::AuditConfig>,
    /// The CA: trust domain, key type, SVID lifetimes, rotation.
    pub pki: PkiConfig,
    /// Public keys of other sites whose evidence this site imports, each
    /// with its owner and validity window (their `vern attest keys`).
    pub attest_trusted_keys: Vec<vern_attest::TrustedKey>,
    /// Algorithm of new artifact signing keys (existing keys keep theirs).
    pub attest_key_type: vern_attest::KeyAlg,
    /// The nats-server the auth callout serves (`nats://HOST:PORT`); no
    /// callout when not set.
    pub nats_url: Option<String>,
    /// CA certificates (PEM) nats-server's own certificate chains to,
    /// besides Vern's trust anchors. Given, or with a `tls://` URL, the
    /// callout connects over TLS presenting an SVID of its own.
    pub nats_ca_pem: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_request_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            cluster_name: None,
            kv_mounts: vec!["secret".to_owned()],
            public_url: "http://127.0.0.1:8200".to_owned(),
            dpop_nonce_required: true,
            limits: Limits::default(),
            trusted_proxies: Vec::new(),
            token_signing_alg: vern_authority::Alg::EdDsa,
            policy_dir: None,
            audit: Some(vern_audit::AuditConfig::default()),
            pki: PkiConfig::new(default_trust_domain()),
            attest_trusted_keys: Vec::new(),
            attest_key_type: vern_attest::KeyAlg::Ed25519,
            nats_url: None,
            nats_ca_pem: None,
        }
    }
}

/// The default trust domain, `vern.internal`.
fn default_trust_domain() -> TrustDomain {
    // PANIC SAFETY: the constant is a valid trust domain; a unit test
    // parses it.
    #[allow(clippy::expect_used)]
    TrustDomain::parse(TrustDomain::DEFAULT).expect("the default trust domain is valid")
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
    pub(crate) kv: BTreeMap<String, Arc<KvEngine>>,
    pub(crate) authority: Arc<Authority>,
    /// The CA of the trust domain.
    pub(crate) pki: Arc<Pki>,
    pub(crate) guard: Guard,
    pub(crate) policies: Arc<PolicyEngine>,
    pub(crate) audit: Option<AuditLog>,
    /// Fetches external issuers' JWK sets for the JWT auth method.
    pub(crate) jwks: HttpJwks,
    /// Revocation notices for the NATS callout.
    pub(crate) nats: crate::nats::NatsHub,
}

impl AppState {
    /// State over an opened store, the storage of the audit log (the same
    /// store, or for SQLite segment files of their own) and the seal. Fails on an invalid KV
    /// mount name, invalid policies, or an audit sink that cannot be
    /// opened. Must be called inside a Tokio runtime (the audit appender
    /// runs as a task).
    pub fn new(
        store: Arc<dyn Store>,
        audit_store: impl Into<vern_audit::LogStore>,
        seal: Arc<Seal>,
        config: ServerConfig,
    ) -> Result<Self, StateError> {
        let audit_store = audit_store.into();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let kv = config
            .kv_mounts
            .iter()
            .map(|m| Ok((m.clone(), Arc::new(KvEngine::new(m, Arc::clone(&clock))?))))
            .collect::<Result<_, vern_secrets::KvError>>()?;
        let mut authority = AuthorityConfig::new(&config.public_url);
        authority.token_nonce = if config.dpop_nonce_required {
            NonceRule::Required
        } else {
            NonceRule::NotRequired
        };
        authority.signing_alg = config.token_signing_alg;
        authority.node_trust_domain = Some(config.pki.trust_domain.clone());
        let authority = Arc::new(Authority::new(authority, Arc::clone(&clock)));
        let pki = Arc::new(Pki::new(config.pki.clone(), Arc::clone(&clock)));
        let policies = Arc::new(match &config.policy_dir {
            Some(dir) => PolicyEngine::from_dir(dir)?,
            None => PolicyEngine::builtin()?,
        });
        let audit = config
            .audit
            .clone()
            .map(|c| AuditLog::new(audit_store, Arc::clone(&clock), c))
            .transpose()?;
        let metrics = Metrics::new();
        let guard = Guard::new(&config.limits, &clock, metrics.clone());
        let jwks = HttpJwks::new().map_err(|e| StateError::Jwks(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                seal,
                store,
                config,
                metrics,
                clock,
                cluster: tokio::sync::RwLock::new(None),
                keepers: None,
                kv,
                authority,
                pki,
                guard,
                policies,
                audit,
                jwks,
                nats: crate::nats::NatsHub::new(),
            }),
        })
    }

    /// State whose seal is kept by keepers: starts the task that unseals
    /// from them and keeps them supplied. Must be called inside a Tokio
    /// runtime.
    pub fn with_keepers(
        store: Arc<dyn Store>,
        audit_store: impl Into<vern_audit::LogStore>,
        seal: Arc<Seal>,
        config: ServerConfig,
        keepers: KeeperConfig,
    ) -> Result<Self, StateError> {
        let mut state = Self::new(store, audit_store, seal, config)?;
        let now = state.inner.clock.unix_seconds();
        let keepers = Arc::new(Keepers::new(keepers, &state.inner.pki, now)?);
        if let Some(inner) = Arc::get_mut(&mut state.inner) {
            inner.keepers = Some(Arc::clone(&keepers));
        }
        tokio::spawn(keepers.run(state.clone()));
        Ok(state)
    }

    /// Starts the NATS auth callout when a NATS URL is configured: it
    /// connects once Vern is unsealed and retries until nats-server is
    /// up. Must be called inside a Tokio runtime.
    pub fn spawn_nats(&self) {
        if let Some(url) = &self.inner.config.nats_url {
            crate::nats::spawn(self.clone(), url.clone());
        }
    }

    /// Starts housekeeping for the life of the process, while unsealed:
    /// once, the CA is created unless it exists; every ten minutes, expired revocation and assertion markers are
    /// swept and records of certificates expired for more than a day are
    /// pruned; every minute, the identity expiries of `/metrics` are read
    /// afresh from the issued-certificate records. Must be called inside a
    /// Tokio runtime.
    pub fn spawn_maintenance(&self) {
        let state = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                every.tick().await;
                if state.ensure_ca().await {
                    break;
                }
            }
        });
        let state = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(600));
            loop {
                every.tick().await;
                let Ok(barrier) = state.inner.seal.barrier() else {
                    continue;
                };
                match state.inner.authority.sweep(&barrier).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(removed = n, "Swept expired token markers."),
                    Err(e) => tracing::warn!(error = %e, "Sweeping expired token markers failed."),
                }
                match state.inner.pki.prune(&barrier).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(removed = n, "Pruned records of expired certificates."),
                    Err(e) => tracing::warn!(error = %e, "Pruning certificate records failed."),
                }
            }
        });
        let state = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                every.tick().await;
                let Ok(barrier) = state.inner.seal.barrier() else {
                    continue;
                };
                match state
                    .inner
                    .pki
                    .identity_expiries(&barrier, crate::metrics::MAX_IDENTITIES)
                    .await
                {
                    Ok((shown, total)) => state.inner.metrics.identity_expiries(&shown, total),
                    Err(e) => tracing::warn!(error = %e, "Reading certificate expiries failed."),
                }
            }
        });
    }

    /// Creates the CA unless it exists, when unsealed: at unseal and from
    /// the maintenance task (keepers and dev mode unseal without a
    /// request), so that the public bundle and anchor reads never write.
    /// Whether the CA exists now.
    pub async fn ensure_ca(&self) -> bool {
        let Ok(barrier) = self.inner.seal.barrier() else {
            return false;
        };
        match self.inner.pki.ensure_ca(&barrier).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "The CA could not be created; retrying.");
                false
            }
        }
    }

    /// Reloads the policy directory as one atomic swap; on error the old
    /// policies keep serving. Returns the number of file policies in force.
    pub fn reload_policies(&self) -> Result<usize, vern_policy::PolicyError> {
        match &self.inner.config.policy_dir {
            Some(dir) => self.inner.policies.reload(dir),
            None => Ok(0),
        }
    }

    /// Signs a last audit checkpoint and drops the audit keys; call after
    /// the server has drained on shutdown.
    pub async fn shutdown(&self) {
        if let Some(log) = &self.inner.audit {
            match log.close().await {
                Ok(Some(cp)) => {
                    tracing::info!(seq = cp.seq, "Audit checkpoint signed at shutdown.")
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, "The shutdown audit checkpoint could not be written.")
                }
            }
        }
    }

    /// The seal, for the binary's start-up (dev auto-unseal).
    pub fn seal(&self) -> &Arc<Seal> {
        &self.inner.seal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_trust_domain_parses() {
        assert_eq!(
            ServerConfig::default().pki.trust_domain.as_str(),
            "vern.internal"
        );
    }
}
