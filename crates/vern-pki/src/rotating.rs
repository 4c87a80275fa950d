//! TLS identities that change while a server runs: a listener whose
//! certificate comes from Vern's own CA (installed once Vern is unsealed,
//! renewed before it expires) and whose accepted client certificates are
//! those chaining to a fixed CA bundle or to the CA's current trust
//! anchors. rustls consults both on every handshake, so a swap takes
//! effect for the next connection without restarting the listener.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use crate::{load_certs, load_key, provider, TlsError};

/// The server certificate of a listener: the one installed last, else the
/// bootstrap identity given at start (if any). Without either, handshakes
/// fail: there is nothing to present.
#[derive(Debug)]
pub struct RotatingIdentity {
    current: RwLock<Option<Arc<CertifiedKey>>>,
    bootstrap: Option<Arc<CertifiedKey>>,
}

fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: &PrivateKeyDer<'_>,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let signing = provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

impl RotatingIdentity {
    /// An identity presenting the PEM files `bootstrap` (certificate chain,
    /// key) until a certificate is installed.
    pub fn new(bootstrap: Option<(&Path, &Path)>) -> Result<Self, TlsError> {
        let bootstrap = bootstrap
            .map(|(cert, key)| certified(load_certs(cert)?, &load_key(key)?))
            .transpose()?;
        Ok(Self {
            current: RwLock::new(None),
            bootstrap,
        })
    }

    /// Presents `chain` (leaf first, DER) with its PKCS#8 key from the next
    /// handshake on.
    pub fn install(&self, chain: &[Vec<u8>], pkcs8_key: &[u8]) -> Result<(), TlsError> {
        let chain = chain
            .iter()
            .map(|c| CertificateDer::from(c.clone()))
            .collect();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8_key.to_vec()));
        let certified = certified(chain, &key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(certified);
        Ok(())
    }

    /// Stops presenting the installed certificate (the bootstrap identity,
    /// if any, is presented again).
    pub fn clear(&self) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

impl ResolvesServerCert for RotatingIdentity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .or_else(|| self.bootstrap.clone())
    }
}

/// Which client certificates a listener accepts: those chaining to a
/// fixed CA bundle (`--tls-client-ca`) or to anchors set while it runs
/// (Vern's own CA). Client certificates stay optional, but one that is
/// presented must verify.
#[derive(Debug)]
pub struct RotatingClientTrust {
    fixed: Vec<CertificateDer<'static>>,
    current: RwLock<Option<Arc<dyn ClientCertVerifier>>>,
}

impl RotatingClientTrust {
    /// Trust in the PEM bundle `fixed`, if given, and nothing else yet.
    pub fn new(fixed: Option<&Path>) -> Result<Self, TlsError> {
        let fixed = match fixed {
            Some(path) => load_certs(path)?,
            None => Vec::new(),
        };
        let trust = Self {
            fixed,
            current: RwLock::new(None),
        };
        trust.set_anchors(&[])?;
        Ok(trust)
    }

    /// Accepts client certificates chaining to the fixed bundle or to
    /// `anchors` (DER) from the next handshake on.
    pub fn set_anchors(&self, anchors: &[Vec<u8>]) -> Result<(), TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in self
            .fixed
            .iter()
            .cloned()
            .chain(anchors.iter().map(|a| CertificateDer::from(a.clone())))
        {
            roots
                .add(cert)
                .map_err(|e| TlsError::Config(format!("a client CA is unusable: {e}")))?;
        }
        let verifier: Option<Arc<dyn ClientCertVerifier>> = if roots.is_empty() {
            None
        } else {
            Some(
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| TlsError::Config(e.to_string()))?,
            )
        };
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = verifier;
        Ok(())
    }

    fn verifier(&self) -> Option<Arc<dyn ClientCertVerifier>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ClientCertVerifier for RotatingClientTrust {
    /// Client certificates are asked for only while some CA is trusted.
    fn offer_client_auth(&self) -> bool {
        self.verifier().is_some()
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    /// No hints: the trusted set changes, and clients then offer whatever
    /// certificate they have.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self.verifier() {
            Some(v) => v.verify_client_cert(end_entity, intermediates, now),
            None => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A server configuration presenting `identity` and accepting client
/// certificates by `clients`, advertising h2 and http/1.1.
pub fn rotating_server_config(
    identity: Arc<RotatingIdentity>,
    clients: Arc<RotatingClientTrust>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(clients)
        .with_cert_resolver(identity);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
