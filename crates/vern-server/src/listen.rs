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
    /// Whether a client certificate is optional (the API) or required (a
    /// keeper).
    pub client_cert_optional: bool,
}

/// The verified client certificate of the connection a request came on
/// (DER), when the client presented one.
#[derive(Debug, Clone)]
pub(crate) struct PeerCertificate(pub(crate) Option<Arc<Vec<u8>>>);

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
                    optional: t.client_cert_optional,
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
            let acceptor = PeerCertAcceptor(axum_server::tls_rustls::RustlsAcceptor::new(config));
            axum_server::from_tcp(listener.socket)
                .acceptor(acceptor)
                .handle(handle)
                .serve(service)
                .await?;
        }
    }
    Ok(())
}

/// A TLS acceptor that hands each connection's verified client certificate
/// to the requests on it, for OAuth mutual-TLS client authentication and
/// certificate-bound tokens (RFC 8705).
#[derive(Clone)]
struct PeerCertAcceptor(axum_server::tls_rustls::RustlsAcceptor);

impl<I, S> axum_server::accept::Accept<I, S> for PeerCertAcceptor
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: Send + 'static,
{
    type Stream = tokio_rustls::server::TlsStream<I>;
    type Service = axum::middleware::AddExtension<S, PeerCertificate>;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = std::io::Result<(Self::Stream, Self::Service)>> + Send>,
    >;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move {
            let (stream, service) = inner.accept(stream, service).await?;
            let cert = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| Arc::new(c.as_ref().to_vec()));
            let service = tower::Layer::layer(&axum::Extension(PeerCertificate(cert)), service);
            Ok((stream, service))
        })
    }
}
