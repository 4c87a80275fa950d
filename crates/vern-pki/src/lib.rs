//! Vern's PKI: the internal certificate authority of the platform's
//! SPIFFE trust domain, and the TLS identities of Vern's own connections.
//!
//! The CA (`pki.rs`, `ca.rs`) issues X.509-SVIDs from CSRs and JWT-SVIDs to
//! principals whose SPIFFE ID comes from their verified identity
//! (`spiffe.rs`), publishes the trust bundle (`bundle.rs`), rotates like
//! the token authority's JWKS, imports external CAs, and keeps a record of
//! every certificate it issued (`records.rs`), and keeps the registration
//! entries of `vern agent` nodes (`workloads.rs`). Its keys and records live
//! behind the barrier, through the view `pki/`; it knows no HTTP and makes
//! no policy decision (the server decides `svid.issue` before it asks).
//!
//! The TLS side loads PEM certificates and keys, builds rustls
//! configurations for servers (optionally requiring client certificates)
//! and for clients (optionally presenting one), and pins the peer's
//! identity: a mutual-TLS server that accepts only a client whose
//! certificate names an expected identity (DNS name or URI SAN, e.g. a
//! SPIFFE ID). Keepers' certificates can come from the CA too
//! (`keeper.rs`). All configurations use the `ring` provider and TLS 1.2/1.3
//! defaults.
#![forbid(unsafe_code)]

mod bundle;
mod ca;
mod csr;
mod dns;
mod error;
mod identity;
mod jwt;
mod keeper;
mod pki;
mod public_key;
mod records;
mod rotating;
mod spiffe;
mod workloads;

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

pub use ca::{CaInfo, KeyType};
pub use csr::{check_csr, CheckedCsr};
pub use dns::DnsName;
pub use error::PkiError;
pub use identity::{peer_identities, PinnedClientVerifier};
pub use jwt::{verify_jwt_svid, VerifiedJwtSvid};
pub use keeper::{
    certifies_key, certs_from_pem, keeper_client_config, keeper_csr, keeper_server_config,
    validity, KeeperClientTrust, KeeperHost, SERVER_COMPONENT,
};
pub use pki::{
    ComponentSvid, JwtRequest, JwtSvid, OwnSvid, Pki, PkiConfig, Rotation, SvidRejection,
    X509Request, X509Svid, MAX_DNS_NAMES,
};
pub use public_key::{public_key_from_pem, roots_from_pem, PemError, SpkiKey};
pub use records::{CertFilter, CertPage, IssuedCertificate};
pub use rotating::{rotating_server_config, RotatingClientTrust, RotatingIdentity};
pub use spiffe::{IdentityError, SpiffeId, SpiffeIdError, TrustDomain, Workload};
pub use workloads::{
    node_client_id, service_principal, AttestedWorkload, Selector, WorkloadEntry, WorkloadPlan,
    WorkloadSpec, MAX_SELECTORS,
};

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{what} {path}: {detail}")]
    File {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: String,
        /// What went wrong.
        detail: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration refused: {0}")]
    Config(String),
}

fn file_error(what: &'static str, path: &Path, detail: impl ToString) -> TlsError {
    TlsError::File {
        what,
        path: path.display().to_string(),
        detail: detail.to_string(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file, leaf first.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| file_error("certificate file", path, e))?;
    if certs.is_empty() {
        return Err(file_error("certificate file", path, "holds no certificate"));
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error("key file", path, e))
}

/// Reads a PEM bundle of CA certificates into a root store.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| file_error("CA file", path, e))?;
    }
    Ok(roots)
}

/// Client certificate requirements of a server.
#[derive(Debug, Clone)]
pub struct ClientAuth<'a> {
    /// PEM bundle of the CAs that sign acceptable client certificates.
    pub ca: &'a Path,
    /// Identities (DNS or URI SANs) of which a client certificate must name
    /// at least one; empty accepts any certificate from the CA.
    pub allowed: &'a [String],
    /// Whether clients may connect without a certificate (the API: OAuth
    /// mTLS clients present one, others do not); a certificate that is
    /// presented must still verify.
    pub optional: bool,
}

/// A server configuration from PEM files, advertising h2 and http/1.1.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_auth: Option<ClientAuth<'_>>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = load_certs(cert)?;
    let key = load_key(key)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_auth {
        None => builder.with_no_client_auth(),
        Some(auth) => {
            let roots = Arc::new(load_roots(auth.ca)?);
            let mut verifier = WebPkiClientVerifier::builder_with_provider(roots, provider());
            if auth.optional {
                verifier = verifier.allow_unauthenticated();
            }
            let inner = verifier
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(Arc::new(PinnedClientVerifier::new(
                inner,
                auth.allowed.to_vec(),
                auth.optional,
            )))
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration trusting only the CAs in `ca`, presenting the
/// given certificate and key when both are given.
pub fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, TlsError> {
    let builder = client_builder(load_roots(ca)?)?;
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| TlsError::Config(e.to_string())),
    }
}

/// A client configuration trusting only `roots` (for example a JWKS
/// server's CA given as PEM), presenting no certificate.
pub fn client_config_with_roots(roots: RootCertStore) -> Result<rustls::ClientConfig, TlsError> {
    Ok(client_builder(roots)?.with_no_client_auth())
}

/// A client configuration trusting only `roots` and presenting `chain`
/// (leaf first) with `key`: for instance one of Vern's own components
/// with an SVID from its CA.
pub fn client_config_with_identity(
    roots: RootCertStore,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ClientConfig, TlsError> {
    client_builder(roots)?
        .with_client_auth_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))
}

fn client_builder(
    roots: RootCertStore,
) -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>, TlsError>
{
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots))
}
