//! Binding and serving: plain HTTP (dev mode, or an explicit insecure
//! listener) or TLS through rustls, optionally requiring client
//! certificates; both shut down gracefully, letting in-flight requests
//! finish.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use vern_pki::ClientAuth;

/// How long in-flight requests may run after shutdown is asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// PEM files of a TLS listener's identity, and optionally the client
/// certificates it demands.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA bundle for client certificates; when set, clients must present one.
    pub client_ca: Option<PathBuf>,
    /// DNS or URI SANs of which a client certificate must name one (empty:
    /// any certificate from `client_ca`).
    pub allowed_clients: Vec<String>,
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// TLS files are missing or unusable.
    #[error("TLS configuration is unusable: {0}")]
    Tls(#[from] vern_pki::TlsError),
    /// Serving failed.
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A bound socket, ready to serve.
pub struct Listener {
    socket: std::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Listener {
    /// Binds `addr`, loading the TLS identity first when given, so that a
    /// bad certificate fails start-up rather than the first connection.
    pub fn bind(addr: SocketAddr, tls: Option<&TlsFiles>) -> Result<Self, ServeError> {
        let tls = tls
            .map(|t| {
                let client_auth = t.client_ca.as_deref().map(|ca| ClientAuth {
                    ca,
                    allowed: &t.allowed_clients,
                });
                vern_pki::server_config(&t.cert, &t.key, client_auth)
            })
            .transpose()?;
        let socket = std::net::TcpListener::bind(addr)
            .map_err(|source| ServeError::Bind { addr, source })?;
        socket.set_nonblocking(true)?;
        Ok(Self { socket, tls })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, ServeError> {
        Ok(self.socket.local_addr()?)
    }

    /// Whether connections are TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then drains.
pub async fn serve(
    listener: Listener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    match listener.tls {
        None => {
            let socket = tokio::net::TcpListener::from_std(listener.socket)?;
            axum::serve(socket, service)
                .with_graceful_shutdown(shutdown)
                .await?;
        }
        Some(config) => {
            let handle = axum_server::Handle::new();
            let drain = handle.clone();
            tokio::spawn(async move {
                shutdown.await;
                drain.graceful_shutdown(Some(DRAIN_TIMEOUT));
            });
            let config = axum_server::tls_rustls::RustlsConfig::from_config(config);
            axum_server::from_tcp_rustls(listener.socket, config)
                .handle(handle)
                .serve(service)
                .await?;
        }
    }
    Ok(())
}
