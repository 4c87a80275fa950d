//! `vern keeper`.

use anyhow::Context as _;
use vern_server::{KeeperState, Listener, TlsFiles};

use crate::cli::KeeperArgs;
use crate::logging;

/// Runs a keeper until SIGINT or SIGTERM; its share dies with the process.
pub(crate) async fn run(args: KeeperArgs) -> anyhow::Result<()> {
    let _log = logging::init(args.log_format);
    let tls = TlsFiles {
        cert: args.tls_cert,
        key: args.tls_key,
        client_ca: Some(args.client_ca),
        allowed_clients: args.server_identities.clone(),
        client_cert_optional: false,
    };
    let listener = Listener::bind(args.listen, Some(&tls)).context("cannot start the keeper")?;
    let shutdown = crate::serve::shutdown_signal()?;
    tracing::info!(
        address = %listener.local_addr()?,
        server_identities = ?args.server_identities,
        "Keeper is listening."
    );
    let app = vern_server::keeper_app(KeeperState::default());
    vern_server::serve(listener, app, shutdown).await?;
    tracing::info!("Keeper stopped; its share is gone.");
    Ok(())
}
