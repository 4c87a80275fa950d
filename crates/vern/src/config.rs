//! The server's configuration file (TOML). Command-line flags and `VERN_*`
//! variables override it; it overrides the defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;

use crate::logging::LogFormat;

/// `vern.toml`. Unknown keys are refused so a typo cannot silently leave a
/// setting at its default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub(crate) listen: Option<SocketAddr>,
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) storage: Option<String>,
    pub(crate) insecure_listen: Option<bool>,
    pub(crate) max_request_bytes: Option<usize>,
    pub(crate) request_timeout: Option<u64>,
    pub(crate) header_timeout: Option<u64>,
    pub(crate) idle_timeout: Option<u64>,
    pub(crate) max_connections: Option<u32>,
    pub(crate) trusted_proxies: Option<Vec<String>>,
    pub(crate) storage_pool: Option<usize>,
    pub(crate) sqlite_locking: Option<crate::cli::SqliteLocking>,
    pub(crate) cluster_name: Option<String>,
    pub(crate) kv_mounts: Option<Vec<String>>,
    pub(crate) public_url: Option<String>,
    pub(crate) policy_dir: Option<PathBuf>,
    pub(crate) attest_trusted_keys: Option<PathBuf>,
    /// `ed25519` or `ecdsa-p256`.
    pub(crate) attest_key_type: Option<String>,
    pub(crate) token_signing_alg: Option<String>,
    pub(crate) insecure_dpop_without_nonce: Option<bool>,
    pub(crate) log_format: Option<LogFormat>,
    pub(crate) tls: Option<TlsSection>,
    pub(crate) keepers: Option<KeepersSection>,
    pub(crate) limits: Option<LimitsSection>,
    pub(crate) audit: Option<AuditSection>,
    /// The SPIFFE trust domain.
    pub(crate) trust_domain: Option<String>,
    pub(crate) pki: Option<PkiSection>,
    pub(crate) nats: Option<NatsSection>,
}

/// `[nats]`: the nats-server whose auth callout Vern serves.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NatsSection {
    /// `nats://HOST:PORT`.
    pub(crate) url: Option<String>,
    /// PEM file of the CA that signed nats-server's certificate.
    pub(crate) ca_cert: Option<std::path::PathBuf>,
}

/// `[pki]`: the CA. Durations as `"1h"` or seconds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PkiSection {
    /// `p256` or `ed25519`.
    pub(crate) ca_key_type: Option<String>,
    pub(crate) svid_ttl: Option<String>,
    pub(crate) svid_max_ttl: Option<String>,
    pub(crate) jwt_svid_ttl: Option<String>,
    /// How long a rotated CA is published before it signs.
    pub(crate) publish_delay: Option<String>,
    /// DNS names of the listener's certificate from Vern's own CA.
    pub(crate) tls_from_ca: Option<Vec<String>>,
}

/// `[audit]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditSection {
    /// Turning audit off is for benchmarks and throwaway servers only.
    pub(crate) enabled: Option<bool>,
    /// A JSON-lines copy of the log: a path, or `-` for standard output.
    pub(crate) file: Option<String>,
    /// Seconds between signed checkpoints.
    pub(crate) checkpoint_interval: Option<u64>,
    /// Bytes after which an embedded server starts a new segment file.
    pub(crate) segment_size: Option<u64>,
}

/// `[limits]`: rates as `"RATE"` or `"RATE:BURST"` requests per second.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsSection {
    pub(crate) token_client: Option<String>,
    pub(crate) token_address: Option<String>,
    pub(crate) api_principal: Option<String>,
    pub(crate) api_tenant: Option<String>,
    pub(crate) api_address: Option<String>,
    pub(crate) lockout_after: Option<u32>,
}

/// `[keepers]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeepersSection {
    pub(crate) urls: Vec<String>,
    pub(crate) ca: PathBuf,
    pub(crate) client_cert: PathBuf,
    pub(crate) client_key: PathBuf,
    pub(crate) sync_interval: Option<u64>,
    #[serde(default)]
    pub(crate) certs_from_ca: bool,
    pub(crate) cert_ttl: Option<String>,
}

/// `[tls]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsSection {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) client_ca: Option<PathBuf>,
}

impl FileConfig {
    pub(crate) fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let config: Self = toml::from_str(&text)
            .with_context(|| format!("config file {} is invalid", path.display()))?;
        // Relative paths in the file are relative to the file, not to
        // wherever the server happens to be started.
        let base = path.parent().unwrap_or(Path::new("."));
        Ok(config.rebase(base))
    }

    fn rebase(mut self, base: &Path) -> Self {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(d) = self.data_dir.as_mut() {
            fix(d);
        }
        if let Some(d) = self.policy_dir.as_mut() {
            fix(d);
        }
        if let Some(d) = self.attest_trusted_keys.as_mut() {
            fix(d);
        }
        if let Some(tls) = self.tls.as_mut() {
            fix(&mut tls.cert);
            fix(&mut tls.key);
            if let Some(ca) = tls.client_ca.as_mut() {
                fix(ca);
            }
        }
        if let Some(file) = self.audit.as_mut().and_then(|a| a.file.as_mut()) {
            if file != "-" && Path::new(file.as_str()).is_relative() {
                *file = base.join(file.as_str()).display().to_string();
            }
        }
        if let Some(k) = self.keepers.as_mut() {
            fix(&mut k.ca);
            fix(&mut k.client_cert);
            fix(&mut k.client_key);
        }
        self
    }
}
