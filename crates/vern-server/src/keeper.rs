//! The keeper: a stateless process that holds one unseal share in memory
//! and hands it only to the Vern server it was configured for. Mutual TLS
//! with identity pinning (see `vern-pki`) decides who may connect at all;
//! everyone who gets through is that server.
//!
//! The same server may renew the keeper's serving certificate from Vern's
//! CA (`vern serve --keeper-certs-from-ca`): it asks for a CSR (the key is
//! made here and never leaves), then sends the signed chain, the CA's
//! anchors and the identity it presents. The keeper swaps its listener's
//! certificate and adds the anchors to its client trust for the next
//! handshake; the pin on `--server-identity` never changes, so the anchors
//! let in nobody but a certificate naming that identity. With a state
//! directory both are kept on disk for the next start.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;
use vern_crypto::{SecretBytes, KEY_LEN};
use vern_pki::{KeeperClientTrust, RotatingClientTrust, RotatingIdentity, TlsError};
use zeroize::Zeroizing;

use crate::error::ApiError;
use crate::extract::{ApiJson, BodyLimit};
use crate::listen::ServeError;
use crate::middleware;
use crate::tls_state::{self, Identity};

/// Largest body a keeper accepts: a certificate chain and the CA anchors
/// (a few certificates of PEM), or one share.
const KEEPER_BODY_LIMIT: usize = 64 * 1024;

/// What a keeper holds.
#[derive(Clone)]
pub struct KeeperState {
    share: Arc<RwLock<Option<SecretBytes>>>,
    tls: Arc<KeeperTls>,
}

impl KeeperState {
    /// A keeper whose listener is `tls`, so its server can renew its
    /// certificate.
    pub fn with_tls(tls: Arc<KeeperTls>) -> Self {
        Self {
            share: Arc::default(),
            tls,
        }
    }
}

/// A keeper's listener identity and client trust, both replaceable while
/// it serves.
pub struct KeeperTls {
    identity: Arc<RotatingIdentity>,
    clients: Arc<KeeperClientTrust>,
    pins: Vec<String>,
    state_dir: Option<PathBuf>,
    /// The key of the last CSR handed out, until its certificate arrives.
    pending: Mutex<Option<Zeroizing<Vec<u8>>>>,
    /// `notAfter` of the installed certificate from Vern's CA; 0 for none.
    installed_until: Mutex<u64>,
}

/// The keeper's files: its bootstrap certificate and key, and the CA
/// bundle of its server's bootstrap client certificate.
pub struct KeeperFiles<'a> {
    /// Certificate chain (PEM).
    pub cert: &'a Path,
    /// Its key.
    pub key: &'a Path,
    /// CA bundle for the server's client certificate.
    pub client_ca: &'a Path,
}

impl KeeperTls {
    /// The keeper's TLS: its `files`, the server `pins` it accepts, and
    /// what `state_dir` kept from the last run. A certificate kept there
    /// and still valid is presented at once; the bootstrap files are then
    /// only a fallback, and a bootstrap identity that no longer loads is
    /// logged, not fatal. `now` is the current Unix time.
    pub fn new(
        files: &KeeperFiles<'_>,
        pins: Vec<String>,
        state_dir: Option<PathBuf>,
        now: u64,
    ) -> Result<Self, ServeError> {
        let stored = match &state_dir {
            Some(dir) => {
                Some(tls_state::load(dir).map_err(|e| ServeError::Tls(TlsError::Config(e)))?)
            }
            None => None,
        };
        let (kept, anchors) = match stored {
            Some(s) => (s.identity, s.anchors),
            None => (None, Vec::new()),
        };
        let kept = match kept {
            Some(k) if now < k.not_after => Some(k),
            Some(k) => {
                tracing::warn!(not_after = k.not_after, "The certificate from Vern's CA in the state directory has expired; presenting --tls-cert.");
                None
            }
            None => None,
        };
        let identity = match RotatingIdentity::new(Some((files.cert, files.key))) {
            Ok(i) => i,
            Err(e) if kept.is_some() => {
                tracing::warn!(error = %e, "The bootstrap certificate is unusable; presenting the one from Vern's CA.");
                RotatingIdentity::new(None)?
            }
            Err(e) => return Err(e.into()),
        };
        let clients = KeeperClientTrust::new(files.client_ca, pins.clone())?;
        clients.set_anchors(&anchors)?;
        let mut installed_until = 0;
        if let Some(k) = kept {
            identity.install(&k.chain, &k.key)?;
            installed_until = k.not_after;
            tracing::info!(
                not_after = k.not_after,
                "Presenting the certificate from Vern's CA kept in the state directory."
            );
        }
        Ok(Self {
            identity: Arc::new(identity),
            clients: Arc::new(clients),
            pins,
            state_dir,
            pending: Mutex::new(None),
            installed_until: Mutex::new(installed_until),
        })
    }

    /// The listener's configuration: the current certificate, and client
    /// certificates that chain to the client CA and name a pinned identity,
    /// or chain to the anchors and carry a pinned SPIFFE ID.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, ServeError> {
        Ok(vern_pki::keeper_server_config(
            Arc::clone(&self.identity),
            Arc::clone(&self.clients),
        )?)
    }

    /// Drops an installed certificate that has expired at `now`, so the
    /// bootstrap one is presented again; true when it did.
    pub fn expire(&self, now: u64) -> bool {
        let mut until = self
            .installed_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if *until != 0 && now >= *until {
            self.identity.clear();
            *until = 0;
            return true;
        }
        false
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct ShareBody {
    pub(crate) share: String,
}

/// The keeper's HTTP application.
pub fn keeper_app(state: KeeperState) -> Router {
    Router::new()
        .route("/v1/keeper/share", get(get_share).put(put_share))
        .route("/v1/keeper/health", get(health))
        .route("/v1/keeper/csr", post(post_csr))
        .route("/v1/keeper/certificate", put(put_certificate))
        .with_state(state)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no handler for this path") })
        .layer(axum::extract::DefaultBodyLimit::max(KEEPER_BODY_LIMIT))
        .layer(axum::middleware::from_fn(middleware::request_id))
}

async fn health(State(state): State<KeeperState>) -> Response {
    let holds = state.share.read().await.is_some();
    Json(serde_json::json!({ "holds_share": holds })).into_response()
}

async fn get_share(State(state): State<KeeperState>) -> Result<Response, ApiError> {
    let share = state.share.read().await;
    let Some(share) = share.as_ref() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "this keeper holds no share",
        ));
    };
    tracing::info!("Keeper handed out its share.");
    Ok(Json(ShareBody {
        share: hex::encode(share.expose()),
    })
    .into_response())
}

async fn put_share(
    State(state): State<KeeperState>,
    ApiJson(body): ApiJson<ShareBody>,
) -> Result<Response, ApiError> {
    let text = zeroize::Zeroizing::new(body.share);
    let bytes = hex::decode(text.trim()).map_err(|_| ApiError::bad_request("share must be hex"))?;
    let share = SecretBytes::new(bytes);
    if share.len() != KEY_LEN + 1 {
        return Err(ApiError::bad_request(format!(
            "a share is {} bytes; got {}",
            KEY_LEN + 1,
            share.len()
        )));
    }
    *state.share.write().await = Some(share);
    tracing::info!("Keeper stored a share.");
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CsrRequest {
    /// The identity the server will present with the certificate's anchors.
    server_identity: String,
}

/// Refuses a server identity this keeper does not pin: the anchors would
/// let it in under no name the operator chose.
fn check_pinned(tls: &KeeperTls, server_identity: &str) -> Result<(), ApiError> {
    if tls.pins.iter().any(|p| p == server_identity) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        format!(
            "this keeper accepts only the server identities it was started with (--server-identity), not `{}`; add it there to take certificates from Vern's CA",
            server_identity.chars().take(256).collect::<String>()
        ),
    ))
}

/// A fresh key kept in memory and a CSR for it, for a server identity
/// this keeper pins (asked first, so that nothing is issued for a keeper
/// that would refuse the certificate); a later CSR replaces the key of an
/// earlier one that got no certificate.
async fn post_csr(
    State(state): State<KeeperState>,
    ApiJson(body): ApiJson<CsrRequest>,
) -> Result<Response, ApiError> {
    let tls = &state.tls;
    check_pinned(tls, &body.server_identity)?;
    let (csr, key) = vern_pki::keeper_csr().map_err(|e| {
        tracing::error!(error = %e, "Cannot make a key.");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "cannot make a key")
    })?;
    *tls.pending.lock().unwrap_or_else(|e| e.into_inner()) = Some(key);
    Ok(Json(serde_json::json!({ "csr": csr })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificateBody {
    /// The chain, leaf first (PEM).
    certificate: String,
    /// The CA roots to trust for the server's client certificate (PEM).
    anchors: String,
    /// The identity the server presents.
    server_identity: String,
}

/// Installs the certificate for the pending key, and the anchors. Checked
/// in full before anything changes: the server identity must be one this
/// keeper pins, the certificate must certify the pending key and be
/// valid now; it is then stored (with a state directory) and installed.
async fn put_certificate(
    State(state): State<KeeperState>,
    ApiJson(body): ApiJson<CertificateBody>,
) -> Result<Response, ApiError> {
    let tls = &state.tls;
    check_pinned(tls, &body.server_identity)?;
    let chain = vern_pki::certs_from_pem(&body.certificate)
        .map_err(|e| ApiError::bad_request(format!("certificate: {e}")))?;
    let anchors = vern_pki::certs_from_pem(&body.anchors)
        .map_err(|e| ApiError::bad_request(format!("anchors: {e}")))?;
    let mut pending = tls.pending.lock().unwrap_or_else(|e| e.into_inner());
    let Some(key) = pending.as_ref() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no CSR is pending; ask for one first",
        ));
    };
    let fits = chain
        .first()
        .is_some_and(|leaf| vern_pki::certifies_key(leaf, key));
    if !fits {
        return Err(ApiError::bad_request(
            "the certificate is not for the key of this keeper's last CSR",
        ));
    }
    let identity = Identity::new(chain, key.clone())
        .ok_or_else(|| ApiError::bad_request("the certificate cannot be read"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if now < identity.not_before || now >= identity.not_after {
        return Err(ApiError::bad_request("the certificate is not valid now"));
    }
    // The anchors and the identity must load before anything is stored.
    let probe = RotatingClientTrust::new(None)
        .and_then(|t| t.set_anchors(&anchors))
        .and_then(|()| RotatingIdentity::new(None))
        .and_then(|i| i.install(&identity.chain, &identity.key));
    if let Err(e) = probe {
        return Err(ApiError::bad_request(format!("unusable: {e}")));
    }
    if let Some(dir) = &tls.state_dir {
        tls_state::save_anchors(dir, &anchors)
            .and_then(|()| tls_state::save_identity(dir, &identity))
            .map_err(|e| {
                tracing::error!(error = %e, "Cannot store the certificate from Vern's CA.");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cannot store the certificate",
                )
            })?;
    }
    let installed = tls
        .clients
        .set_anchors(&anchors)
        .and_then(|()| tls.identity.install(&identity.chain, &identity.key));
    if let Err(e) = installed {
        tracing::error!(error = %e, "Cannot install the certificate from Vern's CA.");
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot install the certificate",
        ));
    }
    *pending = None;
    *tls.installed_until
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = identity.not_after;
    tracing::info!(
        not_after = identity.not_after,
        "Keeper presents a certificate from Vern's CA."
    );
    Ok(StatusCode::NO_CONTENT.into_response())
}

impl BodyLimit for KeeperState {
    fn body_limit(&self) -> usize {
        KEEPER_BODY_LIMIT
    }
}
