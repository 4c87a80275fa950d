//! `vern keeper`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use vern_server::{KeeperFiles, KeeperState, KeeperTls, Listener};

use crate::cli::KeeperArgs;
use crate::logging;

/// How often an installed certificate's expiry is checked (a cheap check;
/// an expired certificate would fail every handshake until it runs).
const EXPIRY_CHECK: Duration = Duration::from_secs(1);

/// Runs a keeper until SIGINT or SIGTERM; its share dies with the process.
pub(crate) async fn run(args: KeeperArgs) -> anyhow::Result<()> {
    let _log = logging::init(args.log_format);
    let tls = KeeperTls::new(
        &KeeperFiles {
            cert: &args.tls_cert,
            key: &args.tls_key,
            client_ca: &args.client_ca,
        },
        args.server_identities.clone(),
        args.state_dir.clone(),
        unix_now(),
    )
    .context("cannot start the keeper")?;
    let tls = Arc::new(tls);
    let listener = Listener::bind_with_config(args.listen, tls.server_config()?)
        .context("cannot start the keeper")?;
    let shutdown = crate::serve::shutdown_signal()?;
    tracing::info!(
        address = %listener.local_addr()?,
        server_identities = ?args.server_identities,
        "Keeper is listening."
    );
    let watched = Arc::clone(&tls);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(EXPIRY_CHECK);
        loop {
            every.tick().await;
            if watched.expire(unix_now()) {
                tracing::warn!("The certificate from Vern's CA expired; presenting --tls-cert.");
            }
        }
    });
    let app = vern_server::keeper_app(KeeperState::with_tls(tls));
    vern_server::serve(listener, app, shutdown).await?;
    tracing::info!("Keeper stopped; its share is gone.");
    Ok(())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
