//! Binding and serving: plain HTTP (dev mode, or an explicit insecure
//! listener) or TLS through rustls, optionally requiring client
//! certificates; both shut down gracefully, letting in-flight requests
//! finish.
//!
//! Every listener, plain or TLS, keeps the same connection hygiene, so a
//! client cannot hold the server's sockets hostage:
//!
//! - at most [`ConnectionLimits::max_connections`] connections are open at
//!   once; beyond that the server stops accepting, so new connections wait
//!   in the kernel's backlog (and are refused by it once that is full)
//!   until one closes;
//! - a connection must complete its TLS handshake and send the headers of
//!   its first request within the header timeout, and every later HTTP/1.1
//!   request head must arrive within it too (hyper starts that clock as
//!   soon as a keep-alive connection goes idle, so an idle HTTP/1.1
//!   connection also closes after it);
//! - a connection with no request in flight for the idle timeout is closed
//!   gracefully (this is what bounds idle HTTP/2 connections).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tower::ServiceExt as _;
use vern_pki::ClientAuth;

/// How long in-flight requests may run after shutdown is asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long to pause accepting after `accept` fails (for instance out of
/// file descriptors), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

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

/// Connection hygiene of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Time for the TLS handshake plus a request's headers (and for an
    /// idle HTTP/1.1 connection to start its next request).
    pub header_timeout: Duration,
    /// Time a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
    /// Connections open at once; more wait to be accepted.
    pub max_connections: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
        }
    }
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
    /// The connection limits cannot work (a zero timeout or cap).
    #[error("connection limits are unusable: {0}")]
    Limits(&'static str),
    /// Serving failed.
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A bound socket, ready to serve.
pub struct Listener {
    socket: std::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ConnectionLimits,
}

impl Listener {
    /// Binds `addr`, loading the TLS identity first when given, so that a
    /// bad certificate fails start-up rather than the first connection.
    /// The listener has the default [`ConnectionLimits`].
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
        Ok(Self {
            socket,
            tls,
            limits: ConnectionLimits::default(),
        })
    }

    /// Binds `addr` for TLS with a ready configuration (one whose
    /// certificate can change while it serves, for `--tls-from-ca`). The
    /// listener has the default [`ConnectionLimits`].
    pub fn bind_with_config(
        addr: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
    ) -> Result<Self, ServeError> {
        let socket = std::net::TcpListener::bind(addr)
            .map_err(|source| ServeError::Bind { addr, source })?;
        socket.set_nonblocking(true)?;
        Ok(Self {
            socket,
            tls: Some(tls),
            limits: ConnectionLimits::default(),
        })
    }

    /// Replaces the connection limits; zero timeouts or a zero cap are
    /// refused (they would make the listener useless, not safer).
    pub fn with_limits(mut self, limits: ConnectionLimits) -> Result<Self, ServeError> {
        if limits.header_timeout.is_zero() || limits.idle_timeout.is_zero() {
            return Err(ServeError::Limits(
                "the header and idle timeouts must be at least one second",
            ));
        }
        if limits.max_connections == 0 {
            return Err(ServeError::Limits(
                "the connection cap must be at least one",
            ));
        }
        self.limits = limits;
        Ok(self)
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

/// Serves `app` on `listener` until `shutdown` completes, then stops
/// accepting and lets open connections finish their requests (for at most
/// 30 s).
pub async fn serve(
    listener: Listener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let limits = listener.limits;
    let socket = tokio::net::TcpListener::from_std(listener.socket)?;
    let tls = listener.tls.map(tokio_rustls::TlsAcceptor::from);
    let permits = Arc::new(Semaphore::new(limits.max_connections as usize));
    let (stop, stopped) = watch::channel(false);
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    http.http2().timer(TokioTimer::new());
    let http = Arc::new(http);
    tokio::pin!(shutdown);
    loop {
        // A permit first, then accept: at the cap, connections stay in the
        // kernel's backlog instead of costing a descriptor and a task here.
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = socket.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "Accepting a connection failed.");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let conn = Conn {
            app: app.clone(),
            http: Arc::clone(&http),
            limits,
            stopped: stopped.clone(),
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            conn.run(stream, peer, tls).await;
            drop(permit);
        });
    }
    // No new connections; the open ones finish what they are doing.
    drop(socket);
    let _ = stop.send(true);
    if tokio::time::timeout(DRAIN_TIMEOUT, permits.acquire_many(limits.max_connections))
        .await
        .is_err()
    {
        tracing::warn!("Connections still open after the drain timeout are dropped.");
    }
    Ok(())
}

/// What a connection task needs.
struct Conn {
    app: Router,
    http: Arc<auto::Builder<TokioExecutor>>,
    limits: ConnectionLimits,
    stopped: watch::Receiver<bool>,
}

impl Conn {
    async fn run(
        self,
        stream: TcpStream,
        peer: SocketAddr,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) {
        let first_request_by = Instant::now() + self.limits.header_timeout;
        let _ = stream.set_nodelay(true);
        match tls {
            None => self.drive(stream, peer, None, first_request_by).await,
            Some(acceptor) => {
                let stream = match tokio::time::timeout_at(
                    first_request_by,
                    acceptor.accept(stream),
                )
                .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %peer, error = %e, "TLS handshake failed.");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(peer = %peer, "TLS handshake timed out.");
                        return;
                    }
                };
                let cert = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| Arc::new(c.as_ref().to_vec()));
                self.drive(stream, peer, Some(PeerCertificate(cert)), first_request_by)
                    .await;
            }
        }
    }

    /// Serves HTTP on one connection, closing it when its first request
    /// does not arrive in time, when it stays idle too long, or (after its
    /// in-flight requests) when the server shuts down.
    async fn drive<I>(
        mut self,
        io: I,
        peer: SocketAddr,
        cert: Option<PeerCertificate>,
        first_request_by: Instant,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::new(Activity::default());
        let service = ConnService {
            app: self.app.clone(),
            peer,
            cert,
            activity: Arc::clone(&activity),
        };
        let conn = self.http.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let mut closing = *self.stopped.borrow();
        if closing {
            conn.as_mut().graceful_shutdown();
        }
        loop {
            let wake = match activity.state() {
                State::Fresh => {
                    Some(first_request_by.min(Instant::now() + self.limits.idle_timeout))
                }
                State::Busy => Some(Instant::now() + self.limits.idle_timeout),
                State::IdleSince(t) => Some(t + self.limits.idle_timeout),
            }
            .filter(|_| !closing);
            tokio::select! {
                done = conn.as_mut() => {
                    if let Err(e) = done {
                        tracing::debug!(peer = %peer, error = %e, "Connection ended with an error.");
                    }
                    return;
                }
                changed = self.stopped.changed(), if !closing => {
                    // A closed channel means the server is gone: stop too.
                    let _ = changed;
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                () = sleep_until(wake) => match activity.state() {
                    State::Fresh if Instant::now() >= first_request_by => {
                        tracing::debug!(peer = %peer, "No request within the header timeout; connection closed.");
                        return;
                    }
                    State::IdleSince(t) if t + self.limits.idle_timeout <= Instant::now() => {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    State::Fresh | State::Busy | State::IdleSince(_) => {}
                },
            }
        }
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Whether a connection has requests in flight.
/// The connection task is not woken per request: it sleeps until the
/// deadline it computed and, when that passes while requests ran, computes
/// the next one from when the last of them finished.
#[derive(Default)]
struct Activity {
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    started: bool,
    in_flight: usize,
    idle_since: Option<Instant>,
}

enum State {
    /// No request has arrived yet.
    Fresh,
    /// At least one request is being handled.
    Busy,
    /// The last request finished at this instant.
    IdleSince(Instant),
}

impl Activity {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn state(&self) -> State {
        let c = self.lock();
        match (c.started, c.in_flight, c.idle_since) {
            (false, _, _) => State::Fresh,
            (true, 0, Some(t)) => State::IdleSince(t),
            _ => State::Busy,
        }
    }

    fn begin(self: &Arc<Self>) -> Busy {
        let mut c = self.lock();
        c.started = true;
        c.in_flight += 1;
        Busy(Arc::clone(self))
    }
}

/// A request in flight; when dropped, the connection may become idle.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut c = self.0.lock();
        c.in_flight = c.in_flight.saturating_sub(1);
        if c.in_flight == 0 {
            c.idle_since = Some(Instant::now());
        }
    }
}

/// The application as one connection's hyper service: each request gets
/// the connection's peer address (and client certificate, on TLS) and
/// counts as activity while it is handled.
#[derive(Clone)]
struct ConnService {
    app: Router,
    peer: SocketAddr,
    cert: Option<PeerCertificate>,
    activity: Arc<Activity>,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(ConnectInfo(self.peer));
        if let Some(cert) = &self.cert {
            req.extensions_mut().insert(cert.clone());
        }
        let busy = self.activity.begin();
        let app = self.app.clone();
        Box::pin(async move {
            let resp = app.oneshot(req.map(Body::new)).await;
            drop(busy);
            resp
        })
    }
}
