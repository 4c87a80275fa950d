//! `vern serve`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use vern_core::SystemClock;
use vern_crypto::{random_token, SecretBytes};
use vern_seal::{IssuedShare, Seal};
use vern_server::{
    AppState, CertsFromCa, Cidr, ConnectionLimits, KeeperConfig, Limits, Listener, Rate,
    ServerConfig, TlsFiles,
};

use crate::cli::ServeArgs;
use crate::config::{AuditSection, FileConfig, PkiSection};
use crate::logging::{self, LogFormat};

const DEFAULT_LISTEN: &str = "127.0.0.1:8200";
const DEFAULT_DATA_DIR: &str = "vern-data";
const DEFAULT_POOL: usize = 8;
/// Dev mode keeps its single unseal key here so a restarted dev server
/// unseals itself. The name says what it is: never use this outside dev.
const DEV_UNSEAL_KEY_FILE: &str = "dev-unseal-key.insecure";

/// The merged settings of one server start.
struct Settings {
    dev: bool,
    listen: SocketAddr,
    data_dir: PathBuf,
    /// Whether anything lives in `data_dir`: the default SQLite database
    /// or the dev unseal key. With storage elsewhere it is not created.
    data_dir_in_use: bool,
    storage: String,
    tls: Option<TlsFiles>,
    /// DNS names of a listener certificate from Vern's own CA (then `tls`
    /// is only the bootstrap identity).
    tls_from_ca: Vec<String>,
    client_ca: Option<PathBuf>,
    insecure_listen: bool,
    pool: usize,
    sqlite_locking: vern_store::Locking,
    server: ServerConfig,
    connections: ConnectionLimits,
    log_format: LogFormat,
    keepers: Option<KeeperConfig>,
    public_url: Option<String>,
}

const DEFAULT_KEEPER_SYNC: u64 = 30;

fn limit_settings(args: &ServeArgs, file: crate::config::LimitsSection) -> anyhow::Result<Limits> {
    let defaults = Limits::default();
    let rate =
        |flag: &Option<String>, file: Option<String>, default: Rate| -> anyhow::Result<Rate> {
            match flag.clone().or(file) {
                Some(s) => Rate::parse(&s).map_err(anyhow::Error::msg),
                None => Ok(default),
            }
        };
    Ok(Limits {
        token_per_client: rate(
            &args.limit_token_client,
            file.token_client,
            defaults.token_per_client,
        )?,
        token_per_address: rate(
            &args.limit_token_address,
            file.token_address,
            defaults.token_per_address,
        )?,
        api_per_principal: rate(
            &args.limit_api_principal,
            file.api_principal,
            defaults.api_per_principal,
        )?,
        api_per_tenant: rate(
            &args.limit_api_tenant,
            file.api_tenant,
            defaults.api_per_tenant,
        )?,
        api_per_address: rate(
            &args.limit_api_address,
            file.api_address,
            defaults.api_per_address,
        )?,
        lockout_after: args
            .lockout_after
            .or(file.lockout_after)
            .unwrap_or(defaults.lockout_after),
    })
}

/// The trusted proxies from `--trusted-proxy` (or `VERN_TRUSTED_PROXY`),
/// else from the file's `trusted_proxies`.
fn trusted_proxies(args: &ServeArgs, file: Option<Vec<String>>) -> anyhow::Result<Vec<Cidr>> {
    let (list, origin) = if args.trusted_proxies.is_empty() {
        (
            file.unwrap_or_default(),
            "trusted_proxies in the config file",
        )
    } else {
        (args.trusted_proxies.clone(), "--trusted-proxy")
    };
    list.iter()
        .map(|c| Cidr::parse(c).with_context(|| format!("invalid {origin}")))
        .collect()
}

/// Connection hygiene from flags and file; zero is refused because it
/// would switch the protection off rather than tighten it.
fn connection_settings(args: &ServeArgs, file: &FileConfig) -> anyhow::Result<ConnectionLimits> {
    let defaults = ConnectionLimits::default();
    let secs =
        |flag: Option<u64>, file: Option<u64>, default: Duration, name: &str| match flag.or(file) {
            Some(0) => bail!("{name} must be at least one second"),
            Some(s) => Ok(Duration::from_secs(s)),
            None => Ok(default),
        };
    let max_connections = args
        .max_connections
        .or(file.max_connections)
        .unwrap_or(defaults.max_connections);
    if max_connections == 0 {
        bail!("the connection cap (max_connections) must be at least one");
    }
    Ok(ConnectionLimits {
        header_timeout: secs(
            args.header_timeout,
            file.header_timeout,
            defaults.header_timeout,
            "the header timeout",
        )?,
        idle_timeout: secs(
            args.idle_timeout,
            file.idle_timeout,
            defaults.idle_timeout,
            "the idle timeout",
        )?,
        max_connections,
    })
}

fn keeper_settings(
    args: &ServeArgs,
    file: Option<crate::config::KeepersSection>,
    data_dir: &Path,
    max_ttl: u64,
) -> anyhow::Result<Option<KeeperConfig>> {
    let (urls, ca, cert, key, interval, from_ca, ttl) = if args.keepers.is_empty() {
        match file {
            None if args.keeper_certs_from_ca || args.keeper_cert_ttl.is_some() => {
                bail!("--keeper-certs-from-ca and --keeper-cert-ttl need keepers (--keeper)")
            }
            None => return Ok(None),
            Some(k) => (
                k.urls,
                Some(k.ca),
                Some(k.client_cert),
                Some(k.client_key),
                k.sync_interval,
                k.certs_from_ca || args.keeper_certs_from_ca,
                args.keeper_cert_ttl.clone().or(k.cert_ttl),
            ),
        }
    } else {
        (
            args.keepers.clone(),
            args.keeper_ca.clone(),
            args.keeper_client_cert.clone(),
            args.keeper_client_key.clone(),
            args.keeper_sync_interval,
            args.keeper_certs_from_ca,
            args.keeper_cert_ttl.clone(),
        )
    };
    if urls.is_empty() {
        if from_ca || ttl.is_some() {
            bail!("--keeper-certs-from-ca and --keeper-cert-ttl need keepers (--keeper)");
        }
        return Ok(None);
    }
    let (Some(ca), Some(cert), Some(key)) = (ca, cert, key) else {
        bail!("keepers need --keeper-ca, --keeper-client-cert and --keeper-client-key: keeper traffic is mutually authenticated TLS");
    };
    if let Some(bad) = urls.iter().find(|u| !u.starts_with("https://")) {
        bail!("keeper URL `{bad}` must start with https://");
    }
    // A CA superseded by a rotation stays published for svid_max_ttl, so a
    // longer-lived keeper certificate could outlive its issuer's anchor.
    let ttl = match ttl {
        None => max_ttl,
        Some(t) => match duration_secs("keeper_cert_ttl", &t)? {
            0 => bail!("keeper_cert_ttl must be at least one second"),
            n if n > max_ttl => bail!(
                "keeper_cert_ttl ({t}) exceeds the maximum SVID lifetime (svid_max_ttl, {max_ttl} s); raise svid_max_ttl"
            ),
            n => n,
        },
    };
    Ok(Some(KeeperConfig {
        urls,
        ca,
        client_cert: cert,
        client_key: key,
        sync_interval: Duration::from_secs(interval.unwrap_or(DEFAULT_KEEPER_SYNC).max(1)),
        certs_from_ca: from_ca.then(|| CertsFromCa {
            dir: data_dir.join("keeper-tls"),
            ttl,
        }),
    }))
}

fn audit_settings(
    args: &ServeArgs,
    file: AuditSection,
) -> anyhow::Result<Option<vern_audit::AuditConfig>> {
    let defaults = vern_audit::AuditConfig::default();
    let sink = args.audit_file.clone().or(file.file);
    let interval = args
        .audit_checkpoint_interval
        .or(file.checkpoint_interval)
        .map_or(defaults.checkpoint_interval, Duration::from_secs);
    if interval.is_zero() {
        bail!("the audit checkpoint interval must be at least one second");
    }
    let segment_bytes = file.segment_size.unwrap_or(defaults.segment_bytes);
    if segment_bytes < MIN_SEGMENT_BYTES {
        bail!("[audit] segment_size must be at least {MIN_SEGMENT_BYTES} bytes");
    }
    if file.enabled == Some(false) {
        if sink.is_some() {
            bail!("an audit file was given but [audit] enabled = false turns audit off");
        }
        return Ok(None);
    }
    Ok(Some(vern_audit::AuditConfig {
        checkpoint_interval: interval,
        sink: sink.as_deref().map(vern_audit::SinkTarget::parse),
        segment_bytes,
        ..defaults
    }))
}

/// The smallest `[audit] segment_size`: a page.
const MIN_SEGMENT_BYTES: u64 = 4096;

/// Seconds from a duration such as `1h` or a plain number of seconds.
pub(crate) fn duration_secs(what: &str, text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let secs = match text.parse::<u64>() {
        Ok(n) => n,
        Err(_) => humantime::parse_duration(text)
            .with_context(|| format!("{what} `{text}` is not a duration such as 1h or 90s"))?
            .as_secs(),
    };
    Ok(secs)
}

/// The CA's settings from flags and file.
fn pki_settings(
    args: &ServeArgs,
    trust_domain: Option<String>,
    file: PkiSection,
) -> anyhow::Result<vern_pki::PkiConfig> {
    let td = match args.trust_domain.clone().or(trust_domain) {
        Some(t) => vern_pki::TrustDomain::parse(&t)
            .map_err(|e| anyhow::anyhow!("trust domain `{t}` is invalid: {e}"))?,
        None => vern_pki::TrustDomain::parse(vern_pki::TrustDomain::DEFAULT)
            .map_err(|e| anyhow::anyhow!("the default trust domain is invalid: {e}"))?,
    };
    let mut config = vern_pki::PkiConfig::new(td);
    if let Some(k) = args.ca_key_type.clone().or(file.ca_key_type) {
        config.key_type = vern_pki::KeyType::parse(&k).map_err(anyhow::Error::msg)?;
    }
    let positive = |what: &str, text: Option<String>, default: u64| -> anyhow::Result<u64> {
        match text {
            None => Ok(default),
            Some(t) => match duration_secs(what, &t)? {
                0 => bail!("{what} must be at least one second"),
                n => Ok(n),
            },
        }
    };
    config.max_ttl = positive(
        "svid_max_ttl",
        args.svid_max_ttl.clone().or(file.svid_max_ttl),
        config.max_ttl,
    )?;
    // Default lifetimes left unset follow a lower maximum; one set above
    // it is a contradiction worth refusing.
    let svid_ttl = args.svid_ttl.clone().or(file.svid_ttl);
    let jwt_ttl = file.jwt_svid_ttl;
    for (what, given) in [("svid_ttl", &svid_ttl), ("jwt_svid_ttl", &jwt_ttl)] {
        if let Some(t) = given {
            if duration_secs(what, t)? > config.max_ttl {
                bail!(
                    "{what} ({t}) exceeds the maximum SVID lifetime (svid_max_ttl, {} s)",
                    config.max_ttl
                );
            }
        }
    }
    config.default_ttl = positive("svid_ttl", svid_ttl, config.default_ttl.min(config.max_ttl))?;
    config.jwt_default_ttl = positive(
        "jwt_svid_ttl",
        jwt_ttl,
        config.jwt_default_ttl.min(config.max_ttl),
    )?;
    config.publish_delay = match file.publish_delay {
        Some(t) => duration_secs("publish_delay", &t)?,
        None => config.publish_delay,
    };
    Ok(config)
}

/// The other sites' artifact signing keys to trust for imports: a JWKS
/// as `vern attest keys` prints it, each key with its owner and window.
fn trusted_keys(path: &Path) -> anyhow::Result<Vec<vern_attest::TrustedKey>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read the trusted keys {}", path.display()))?;
    let jwks: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("the trusted keys {} are not JSON", path.display()))?;
    jwks.get("keys")
        .and_then(serde_json::Value::as_array)
        .with_context(|| format!("the trusted keys {} are not a JWKS", path.display()))?
        .iter()
        .map(|k| {
            vern_attest::TrustedKey::from_jwk(k)
                .with_context(|| format!("in the trusted keys {}", path.display()))
        })
        .collect()
}

fn settings(args: ServeArgs) -> anyhow::Result<Settings> {
    let mut file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let keepers_file = file.keepers.take();
    let limits = limit_settings(&args, file.limits.take().unwrap_or_default())?;
    let audit = audit_settings(&args, file.audit.take().unwrap_or_default())?;
    let trusted_proxies = trusted_proxies(&args, file.trusted_proxies.take())?;
    let mut pki_file = file.pki.take().unwrap_or_default();
    let tls_from_ca = if args.tls_from_ca.is_empty() {
        pki_file.tls_from_ca.take().unwrap_or_default()
    } else {
        args.tls_from_ca.clone()
    };
    let pki = pki_settings(&args, file.trust_domain.take(), pki_file)?;
    let connections = connection_settings(&args, &file)?;
    let listen = match args.listen.or(file.listen) {
        Some(a) => a,
        None => DEFAULT_LISTEN.parse().context("default listen address")?,
    };
    let data_dir = args
        .data_dir
        .clone()
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let keepers = keeper_settings(&args, keepers_file, &data_dir, pki.max_ttl)?;
    let default_storage = args.storage.is_none() && file.storage.is_none();
    let storage = args
        .storage
        .or(file.storage)
        .unwrap_or_else(|| format!("sqlite:{}", data_dir.join("vern.db").display()));
    let file_client_ca = file.tls.as_ref().and_then(|t| t.client_ca.clone());
    let client_ca = args.tls_client_ca.clone().or(file_client_ca);
    let tls = match (args.tls_cert, args.tls_key, file.tls) {
        (Some(cert), Some(key), _) => Some(TlsFiles {
            cert,
            key,
            client_ca: client_ca.clone(),
            allowed_clients: Vec::new(),
            client_cert_optional: true,
        }),
        (None, None, Some(t)) => Some(TlsFiles {
            cert: t.cert,
            key: t.key,
            client_ca: client_ca.clone(),
            allowed_clients: Vec::new(),
            client_cert_optional: true,
        }),
        (None, None, None) => None,
        _ => bail!("--tls-cert and --tls-key must be given together"),
    };
    let defaults = ServerConfig::default();
    let server = ServerConfig {
        max_request_bytes: args
            .max_request_bytes
            .or(file.max_request_bytes)
            .unwrap_or(defaults.max_request_bytes),
        request_timeout: args
            .request_timeout
            .or(file.request_timeout)
            .map_or(defaults.request_timeout, Duration::from_secs),
        cluster_name: args.cluster_name.or(file.cluster_name),
        dpop_nonce_required: !(args.insecure_dpop_without_nonce
            || file.insecure_dpop_without_nonce.unwrap_or(false)),
        public_url: String::new(),
        policy_dir: args.policy_dir.clone().or(file.policy_dir.clone()),
        attest_trusted_keys: match args
            .attest_trusted_keys
            .as_deref()
            .or(file.attest_trusted_keys.as_deref())
        {
            Some(path) => trusted_keys(path)?,
            None => Vec::new(),
        },
        attest_key_type: match args
            .attest_key_type
            .as_deref()
            .or(file.attest_key_type.as_deref())
        {
            Some(k) => vern_attest::KeyAlg::parse(k)?,
            None => vern_attest::KeyAlg::Ed25519,
        },
        limits,
        trusted_proxies,
        audit,
        pki,
        token_signing_alg: match args
            .token_signing_alg
            .clone()
            .or(file.token_signing_alg.clone())
            .as_deref()
        {
            None | Some("eddsa") => vern_authority::Alg::EdDsa,
            Some("es256") => vern_authority::Alg::Es256,
            Some(other) => bail!("token_signing_alg `{other}` must be eddsa or es256"),
        },
        kv_mounts: if !args.kv_mounts.is_empty() {
            args.kv_mounts.clone()
        } else {
            file.kv_mounts.clone().unwrap_or(defaults.kv_mounts)
        },
        nats_url: match args
            .nats_url
            .clone()
            .or(file.nats.as_mut().and_then(|n| n.url.take()))
        {
            Some(url) => Some(nats_url(&url)?),
            None => None,
        },
        nats_ca_pem: match args
            .nats_ca_cert
            .clone()
            .or(file.nats.take().and_then(|n| n.ca_cert))
        {
            Some(path) => {
                let pem = std::fs::read_to_string(&path).with_context(|| {
                    format!("cannot read the NATS CA certificate {}", path.display())
                })?;
                vern_pki::roots_from_pem(&pem).with_context(|| {
                    format!("the NATS CA certificate {} is unusable", path.display())
                })?;
                Some(pem)
            }
            None => None,
        },
    };
    if server.max_request_bytes == 0 || server.request_timeout.is_zero() {
        bail!("max request bytes and request timeout must be greater than zero");
    }
    Ok(Settings {
        dev: args.dev,
        listen,
        data_dir,
        data_dir_in_use: args.dev || default_storage,
        storage,
        tls,
        tls_from_ca,
        client_ca,
        insecure_listen: args.insecure_listen || file.insecure_listen.unwrap_or(false),
        pool: args
            .storage_pool
            .or(file.storage_pool)
            .unwrap_or(DEFAULT_POOL),
        sqlite_locking: args
            .sqlite_locking
            .or(file.sqlite_locking)
            .unwrap_or(crate::cli::SqliteLocking::Exclusive)
            .into(),
        server,
        connections,
        log_format: args
            .log_format
            .or(file.log_format)
            .unwrap_or(LogFormat::Auto),
        keepers,
        public_url: args.public_url.or(file.public_url),
    })
}

/// Checks `--nats-url`: `nats://HOST:PORT` (or `tls://`), several
/// separated by commas.
fn nats_url(url: &str) -> anyhow::Result<String> {
    for one in url.split(',') {
        let rest = one
            .strip_prefix("nats://")
            .or_else(|| one.strip_prefix("tls://"))
            .with_context(|| format!("--nats-url `{one}` must start with nats:// or tls://"))?;
        if rest.is_empty() || rest.contains('/') || rest.contains(char::is_whitespace) {
            bail!("--nats-url `{one}` must be nats://HOST:PORT");
        }
    }
    Ok(url.to_owned())
}

/// The directory of an embedded server's audit log: beside the main
/// database file, named after it (`vern.db` → `vern-audit/`).
pub(crate) fn audit_dir(url: &str) -> Option<PathBuf> {
    let beside = vern_store::sibling_url(url, "audit")?;
    let path = PathBuf::from(beside.strip_prefix("sqlite:")?);
    Some(path.with_extension(""))
}

/// The storage of the audit log: for SQLite segment files of its own
/// beside the main database, for PostgreSQL the main store (replicas append
/// to one chain there). A log an older version kept in the main database,
/// or in a SQLite database of its own (`vern-audit.db`), is moved into the
/// files first.
async fn open_audit_store(
    url: &str,
    main: &Arc<dyn vern_store::Store>,
    pool: usize,
    segment_bytes: u64,
) -> anyhow::Result<vern_audit::LogStore> {
    let (Some(dir), Some(old_url)) = (audit_dir(url), vern_store::sibling_url(url, "audit")) else {
        return Ok(Arc::clone(main).into());
    };
    let old_path = PathBuf::from(old_url.trim_start_matches("sqlite:"));
    if old_path.exists() {
        let old = vern_store::open(&old_url, pool)
            .await
            .with_context(|| format!("cannot open the audit log's old database {old_url}"))?;
        // The oldest layout first: a log still in the main database joins
        // the old audit database, then both move to the files together.
        moved(
            vern_audit::relocate(main.as_ref(), old.as_ref()).await,
            "the main database",
            &old_url,
        )?;
        moved(
            vern_audit::import(old.as_ref(), &dir).await,
            &old_url,
            &dir.display().to_string(),
        )?;
        let empty = old.list("", None, 1).await?.is_empty();
        drop(old);
        if empty {
            for suffix in ["", "-wal", "-shm"] {
                let mut file = old_path.clone().into_os_string();
                file.push(suffix);
                match std::fs::remove_file(&file) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(file = %PathBuf::from(file).display(), error = %e, "Cannot remove the emptied old audit database.")
                    }
                }
            }
        }
    } else {
        moved(
            vern_audit::import(main.as_ref(), &dir).await,
            "the main database",
            &dir.display().to_string(),
        )?;
    }
    let log = vern_audit::SegmentLog::open_with(&dir, segment_bytes)
        .with_context(|| format!("cannot open the audit log in {}", dir.display()))?;
    Ok(log.into())
}

/// Reports a move of the audit log.
fn moved(
    outcome: Result<vern_audit::Relocation, vern_audit::AuditError>,
    from: &str,
    to: &str,
) -> anyhow::Result<()> {
    match outcome.with_context(|| format!("cannot move the audit log from {from} to {to}"))? {
        vern_audit::Relocation::Nothing => {}
        vern_audit::Relocation::Moved(keys) => {
            tracing::info!(keys, from, to, "Moved the audit log.");
        }
        vern_audit::Relocation::LeftInPlace(keys) => tracing::warn!(
            keys,
            from,
            to,
            "An older copy of the audit log holds entries beside the log in use; they are left \
             in place and no longer used."
        ),
    }
    Ok(())
}

/// Runs the server until SIGINT or SIGTERM.
pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let dev_root_token = args.dev_root_token.clone();
    let s = settings(args)?;
    let _log = logging::init(s.log_format);
    if s.server.audit.is_none() {
        tracing::warn!("Audit is turned off: requests leave no record.");
    }

    if s.dev {
        if !s.listen.ip().is_loopback() {
            bail!(
                "dev mode serves plain HTTP with a printed root token, so it only listens on loopback; {} is not a loopback address",
                s.listen
            );
        }
        if s.tls.is_some() || !s.tls_from_ca.is_empty() {
            bail!("dev mode serves plain HTTP; drop the TLS options or drop --dev");
        }
    } else if !s.tls_from_ca.is_empty() && s.insecure_listen {
        bail!("--tls-from-ca serves TLS; drop --insecure-listen");
    } else if !s.tls_from_ca.is_empty() {
        if s.tls.is_none() && s.keepers.is_none() {
            tracing::warn!("--tls-from-ca without --tls-cert: until Vern is unsealed the listener has no certificate, so only keepers can unseal it.");
        }
    } else if s.tls.is_none() && !s.insecure_listen {
        bail!("TLS is required: give --tls-cert and --tls-key (or [tls] in the config file), or --insecure-listen to serve plain HTTP deliberately");
    } else if s.tls.is_none() {
        tracing::warn!(listen = %s.listen, "Serving plain HTTP because --insecure-listen was given; tokens cross the network in clear.");
    }

    // The listener and its TLS files first: a start that fails on them
    // creates no data directory and no database.
    let ca_tls = if s.tls_from_ca.is_empty() {
        None
    } else {
        Some(
            vern_server::CaTls::new(
                &s.tls_from_ca,
                s.tls.as_ref().map(|t| (t.cert.as_path(), t.key.as_path())),
                s.client_ca.as_deref(),
            )
            .context("--tls-from-ca")?,
        )
    };
    let listener = match &ca_tls {
        Some(ca_tls) => Listener::bind_with_config(s.listen, ca_tls.server_config()?)?,
        None => Listener::bind(s.listen, s.tls.as_ref())?,
    }
    .with_limits(s.connections)?;

    if s.data_dir_in_use {
        prepare_data_dir(&s.data_dir)?;
    }
    // By default the main database is the server's alone, so reads of
    // secrets and clients take no file lock; the audit log's files stay
    // open to `vern audit verify`.
    let store = vern_store::open_with(&s.storage, s.pool, s.sqlite_locking)
        .await
        .with_context(|| format!("cannot open storage {}", vern_store::redact_url(&s.storage)))?;
    let segment_bytes = s
        .server
        .audit
        .as_ref()
        .map_or(vern_audit::DEFAULT_SEGMENT_BYTES, |a| a.segment_bytes);
    let audit_store = open_audit_store(&s.storage, &store, s.pool, segment_bytes).await?;
    let seal = Arc::new(Seal::new(Arc::clone(&store), Arc::new(SystemClock)).await?);
    let dev_token = if s.dev {
        Some(dev_unseal(&seal, &s.data_dir, dev_root_token).await?)
    } else {
        None
    };

    let shutdown = shutdown_signal()?;
    let addr = listener.local_addr()?;
    let scheme = if listener.is_tls() { "https" } else { "http" };
    tracing::info!(address = %addr, tls = listener.is_tls(), storage = store.backend(), "Vern is listening.");
    if !s.server.trusted_proxies.is_empty() {
        let proxies: Vec<String> = s
            .server
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        tracing::info!(trusted_proxies = %proxies.join(","), "X-Forwarded-For is read from these proxies only.");
    }
    if let Some(token) = &dev_token {
        print_dev_banner(&format!("{scheme}://{addr}"), token, &s);
    }

    let mut server = s.server;
    server.public_url = s
        .public_url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{addr}"));
    let state = match s.keepers {
        Some(keepers) if !s.dev => {
            AppState::with_keepers(store, audit_store, seal, server, keepers)
                .context("cannot set up the keeper client")?
        }
        Some(_) => bail!("dev mode unseals itself; drop the keeper options or drop --dev"),
        None => AppState::new(store, audit_store, seal, server)?,
    };
    // Unsealed already (dev mode, or a seal that needs no shares): the CA
    // exists before the first request, which the bundle read never creates.
    state.ensure_ca().await;
    state.spawn_maintenance();
    state.spawn_nats();
    if let Some(ca_tls) = ca_tls {
        state.spawn_tls_from_ca(ca_tls);
    }
    spawn_policy_reload_on_sighup(state.clone());
    let app = vern_server::app(state.clone());
    vern_server::serve(listener, app, shutdown).await?;
    state.shutdown().await;
    tracing::info!("Vern stopped.");
    Ok(())
}

/// Dev mode: initialise with a single share on first start, keep that share
/// in the data directory, unseal, and set the root token.
async fn dev_unseal(
    seal: &Seal,
    data_dir: &Path,
    root_token: Option<String>,
) -> anyhow::Result<SecretBytes> {
    tracing::warn!("Dev mode: the unseal key is kept in the data directory and the root token is printed. Never use dev mode in production.");
    let token = root_token
        .map(|t| SecretBytes::new(t.into_bytes()))
        .unwrap_or_else(|| random_token("vern.r."));
    if token.is_empty() {
        bail!("--dev-root-token must not be empty");
    }
    let key_file = data_dir.join(DEV_UNSEAL_KEY_FILE);
    if !seal.is_initialized().await? {
        let out = seal.init(1, 1, &[], Some(token.clone())).await?;
        let Some(IssuedShare::Clear(share)) = out.shares.first() else {
            bail!("init returned no unseal key");
        };
        write_private(&key_file, hex::encode(share.expose()).as_bytes())?;
    }
    let key = std::fs::read_to_string(&key_file).with_context(|| {
        format!(
            "{} is missing; this data directory was not created by dev mode, so start with a fresh --data-dir",
            key_file.display()
        )
    })?;
    seal.unseal(key.trim()).await?;
    seal.replace_root_token(&token).await?;
    Ok(token)
}

/// Creates `dir` (and missing parents) owner-only, 0700.
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// Creates the data directory owner-only, or tightens an existing one that
/// other users can enter, with a warning: it holds the database and, in dev
/// mode, the unseal key. A shared directory (sticky bit, like `/tmp`) is
/// never changed, only warned about: Vern needs a directory of its own.
fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    create_private_dir(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .permissions()
            .mode()
            & 0o7777;
        if mode & 0o077 == 0 {
            return Ok(());
        }
        let owner_only = mode & 0o700;
        if mode & 0o1000 != 0 {
            tracing::warn!(path = %dir.display(), mode = format!("{mode:o}"), "The data directory is shared with other users; give Vern a directory of its own (--data-dir).");
            return Ok(());
        }
        match std::fs::set_permissions(dir, std::fs::Permissions::from_mode(owner_only)) {
            Ok(()) => tracing::warn!(
                path = %dir.display(),
                was = format!("{mode:o}"),
                now = format!("{owner_only:o}"),
                "The data directory was open to other users; made it owner-only."
            ),
            Err(e) => tracing::warn!(
                path = %dir.display(),
                mode = format!("{mode:o}"),
                error = %e,
                "The data directory is open to other users and cannot be changed; make it owner-only (chmod 700)."
            ),
        }
    }
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    if let Some(dir) = path.parent() {
        create_private_dir(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

fn print_dev_banner(address: &str, token: &SecretBytes, s: &Settings) {
    let token = String::from_utf8_lossy(token.expose());
    let banner = format!(
        "\nVern is running in dev mode: plain HTTP, storage {storage}, initialised and unsealed.\n\
         Never use dev mode in production.\n\n\
         Set these to talk to it:\n\n    \
         export VERN_ADDR='{address}'\n    \
         export VERN_TOKEN='{token}'\n\n\
         Try: curl -s {address}/v1/sys/health\n",
        storage = vern_store::redact_url(&s.storage),
    );
    // With audit records on standard output, the banner (and its token)
    // must not end up in the record stream.
    let audit_on_stdout = s
        .server
        .audit
        .as_ref()
        .is_some_and(|a| a.sink == Some(vern_audit::SinkTarget::Stdout));
    if audit_on_stdout {
        eprintln!("{banner}");
    } else {
        println!("{banner}");
    }
}

/// SIGHUP reloads the policy directory; a broken set is refused and the
/// old one keeps serving.
fn spawn_policy_reload_on_sighup(state: AppState) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::error!("Cannot listen for SIGHUP; reload policies through the API.");
            return;
        };
        while hup.recv().await.is_some() {
            match state.reload_policies() {
                Ok(n) => tracing::info!(policies = n, "Policies reloaded on SIGHUP."),
                Err(e) => {
                    tracing::error!(error = %e, "Policy reload refused; the previous policies keep serving.")
                }
            }
        }
    });
    #[cfg(not(unix))]
    let _ = state;
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed here, before
/// the caller announces that it listens: a signal sent right after the
/// announcement must not find the default action (which ends the process
/// without the last audit checkpoint or the queued log lines).
#[cfg(unix)]
pub(crate) fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {},
            _ = term.recv() => {},
        }
        tracing::info!("Shutdown requested; finishing in-flight requests.");
    })
}

/// Resolves on Ctrl-C.
#[cfg(not(unix))]
pub(crate) fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        tracing::info!("Shutdown requested; finishing in-flight requests.");
    })
}
