//! Keepers' links from Vern's own CA (`vern serve --keeper-certs-from-ca`).
//!
//! Two kinds of certificate, both X.509-SVIDs of the trust domain:
//!
//! - the server's keeper-client identity, `spiffe://<td>/vern/server` (the
//!   component path of the server, the same as the `--tls-from-ca`
//!   listener's), issued with [`Pki::issue_component`];
//! - keeper *i*'s serving certificate, `spiffe://<td>/vern/keeper/<i>`,
//!   signed from a CSR the keeper made (its key never leaves it), with the
//!   host of the keeper's URL as DNS or IP SAN ([`Pki::issue_keeper`]).
//!
//! The server trusts a keeper through the operator's `--keeper-ca` bundle
//! as before, or through the CA's anchors **only** when the certificate
//! names exactly that keeper's SPIFFE ID ([`keeper_client_config`]): an
//! SVID of a service (even one whose DNS names a policy allowed to match
//! a keeper's host) or of another keeper does not pass for keeper *i*.
//! The keeper mirrors it ([`KeeperClientTrust`]): a client certificate
//! from its `--client-ca` bundle must name a pinned identity as a DNS or
//! URI SAN, as before; one from the CA's anchors must carry a pinned
//! identity as its one URI SAN, because DNS SANs in SVIDs are whatever a
//! policy allowed some service to ask for, while a SPIFFE ID is never
//! taken from a request.

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use x509_parser::extensions::GeneralName;
use zeroize::Zeroizing;

use crate::csr::check_csr;
use crate::dns::DnsName;
use crate::identity::peer_identities;
use crate::pki::{Pki, X509Svid};
use crate::rotating::RotatingIdentity;
use crate::spiffe::{SpiffeId, Workload};
use crate::{load_roots, provider, PkiError, TlsError};

/// The component whose SPIFFE ID the server presents to keepers.
pub const SERVER_COMPONENT: &str = "server";

/// How a keeper is reached: the host of its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeeperHost {
    /// A DNS name.
    Dns(DnsName),
    /// An IP address.
    Ip(IpAddr),
}

impl KeeperHost {
    /// The host of a URL (`[..]` around an IPv6 address is removed).
    pub fn parse(host: &str) -> Result<Self, String> {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        match bare.parse::<IpAddr>() {
            Ok(ip) => Ok(Self::Ip(ip)),
            Err(_) => DnsName::parse(bare).map(Self::Dns),
        }
    }
}

impl Pki {
    /// `spiffe://<td>/vern/keeper/<index>`: keeper `index` (the share it
    /// holds).
    pub fn keeper_spiffe_id(&self, index: u8) -> Result<SpiffeId, PkiError> {
        self.spiffe_id_for(&Workload::Component(format!("keeper/{index}")))
    }

    /// `spiffe://<td>/vern/server`, what the server presents to keepers.
    pub fn server_spiffe_id(&self) -> Result<SpiffeId, PkiError> {
        self.spiffe_id_for(&Workload::Component(SERVER_COMPONENT.to_owned()))
    }

    /// Signs keeper `index`'s serving certificate from its CSR (checked
    /// like any other: no foreign SAN, no CA flag, a strong key), with
    /// `host` as its only SAN besides the SPIFFE ID. The record is stored
    /// before the certificate is returned.
    pub async fn issue_keeper(
        &self,
        b: &vern_seal::Barrier,
        index: u8,
        host: &KeeperHost,
        csr_pem: &str,
        ttl: u64,
    ) -> Result<X509Svid, PkiError> {
        let id = self.keeper_spiffe_id(index)?;
        let (dns, ips) = match host {
            KeeperHost::Dns(d) => (vec![d.clone()], Vec::new()),
            KeeperHost::Ip(ip) => (Vec::new(), vec![*ip]),
        };
        let csr = check_csr(csr_pem, &id, &dns).map_err(PkiError::BadCsr)?;
        let ttl = ttl.clamp(1, self.config().max_ttl);
        self.sign(b, &id, &csr.spki, (&dns, &ips), ttl, "vern")
            .await
    }
}

/// A fresh P-256 key and a CSR for it that asks for nothing but the key
/// (Vern decides every name): the PEM CSR and the PKCS#8 key.
pub fn keeper_csr() -> Result<(String, Zeroizing<Vec<u8>>), PkiError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| PkiError::Internal(e.to_string()))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(|e| PkiError::Internal(e.to_string()))?;
    Ok((csr, Zeroizing::new(key.serialize_der())))
}

/// Whether the certificate `cert_der` certifies the public key of the
/// PKCS#8 key `key_der`.
pub fn certifies_key(cert_der: &[u8], key_der: &[u8]) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(cert_der) else {
        return false;
    };
    let Ok(key) = rcgen::KeyPair::try_from(key_der) else {
        return false;
    };
    cert.public_key().raw == key.public_key_der().as_slice()
}

/// A certificate's validity as (`notBefore`, `notAfter`), Unix seconds.
pub fn validity(cert_der: &[u8]) -> Option<(u64, u64)> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let v = cert.validity();
    Some((
        u64::try_from(v.not_before.timestamp()).ok()?,
        u64::try_from(v.not_after.timestamp()).ok()?,
    ))
}

/// The DER certificates of a PEM text; an error when there is none or a
/// block does not decode.
pub fn certs_from_pem(pem: &str) -> Result<Vec<Vec<u8>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("holds no certificate".to_owned());
    }
    Ok(certs)
}

/// The URI SANs of a certificate.
fn uri_sans(cert: &[u8]) -> Vec<String> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert) else {
        return Vec::new();
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some((*u).to_owned()),
            _ => None,
        })
        .collect()
}

/// Verifies keeper *i*'s serving certificate: by the operator's bundle,
/// or by the CA's anchors when its only URI SAN is keeper *i*'s SPIFFE ID.
#[derive(Debug)]
struct KeeperServerVerifier {
    bootstrap: Arc<WebPkiServerVerifier>,
    ca: Option<Arc<WebPkiServerVerifier>>,
    keeper_id: String,
}

impl ServerCertVerifier for KeeperServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let by_bootstrap = self.bootstrap.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        let Err(refused) = by_bootstrap else {
            return by_bootstrap;
        };
        let Some(ca) = &self.ca else {
            return Err(refused);
        };
        let verified =
            ca.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        if uri_sans(end_entity.as_ref()) == [self.keeper_id.as_str()] {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.bootstrap.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.bootstrap.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.bootstrap.supported_verify_schemes()
    }
}

/// The server's client configuration for keeper `keeper_id`: trusts the
/// operator's `bootstrap` roots, and the CA `anchors` (DER) for that
/// keeper's own SVID only; presents `chain` (leaf first) with `key`.
pub fn keeper_client_config(
    bootstrap: RootCertStore,
    anchors: &[Vec<u8>],
    keeper_id: &SpiffeId,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ClientConfig, TlsError> {
    let build = |roots: RootCertStore| {
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))
    };
    let mut ca_roots = RootCertStore::empty();
    for anchor in anchors {
        ca_roots
            .add(CertificateDer::from(anchor.clone()))
            .map_err(|e| TlsError::Config(format!("a CA anchor is unusable: {e}")))?;
    }
    let verifier = KeeperServerVerifier {
        bootstrap: build(bootstrap)?,
        ca: if ca_roots.is_empty() {
            None
        } else {
            Some(build(ca_roots)?)
        },
        keeper_id: keeper_id.to_string(),
    };
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))
}

/// Which client certificates a keeper accepts: one from its `--client-ca`
/// bundle naming a pinned identity (DNS or URI SAN), or one from the CA
/// anchors its server gave it whose one URI SAN is a pinned identity.
/// A certificate is required.
#[derive(Debug)]
pub struct KeeperClientTrust {
    bootstrap: Arc<dyn ClientCertVerifier>,
    anchors: RwLock<Option<Arc<dyn ClientCertVerifier>>>,
    pins: Vec<String>,
}

fn client_verifier(roots: RootCertStore) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))
}

impl KeeperClientTrust {
    /// Trust in the PEM bundle `client_ca` for the identities `pins`.
    pub fn new(client_ca: &Path, pins: Vec<String>) -> Result<Self, TlsError> {
        Ok(Self {
            bootstrap: client_verifier(load_roots(client_ca)?)?,
            anchors: RwLock::new(None),
            pins,
        })
    }

    /// Also accepts the pinned SPIFFE IDs from the CA `anchors` (DER),
    /// from the next handshake on; the anchors set before are replaced.
    pub fn set_anchors(&self, anchors: &[Vec<u8>]) -> Result<(), TlsError> {
        let mut roots = RootCertStore::empty();
        for anchor in anchors {
            roots
                .add(CertificateDer::from(anchor.clone()))
                .map_err(|e| TlsError::Config(format!("a CA anchor is unusable: {e}")))?;
        }
        let verifier = if roots.is_empty() {
            None
        } else {
            Some(client_verifier(roots)?)
        };
        *self.anchors.write().unwrap_or_else(|e| e.into_inner()) = verifier;
        Ok(())
    }

    fn refused() -> rustls::Error {
        rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure)
    }
}

impl ClientCertVerifier for KeeperClientTrust {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let by_bootstrap = self
            .bootstrap
            .verify_client_cert(end_entity, intermediates, now);
        if let Ok(verified) = by_bootstrap {
            let names = peer_identities(end_entity);
            return if names.iter().any(|n| self.pins.contains(n)) {
                Ok(verified)
            } else {
                Err(Self::refused())
            };
        }
        let anchors = self
            .anchors
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let (Some(anchors), Err(refused)) = (anchors, by_bootstrap) else {
            return Err(Self::refused());
        };
        let verified = anchors
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(|_| refused)?;
        match uri_sans(end_entity.as_ref()).as_slice() {
            [id] if self.pins.contains(id) => Ok(verified),
            _ => Err(Self::refused()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.bootstrap.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.bootstrap.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.bootstrap.supported_verify_schemes()
    }
}

/// A keeper's server configuration: presenting `identity`, accepting
/// clients by `clients`, advertising h2 and http/1.1.
pub fn keeper_server_config(
    identity: Arc<RotatingIdentity>,
    clients: Arc<KeeperClientTrust>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(clients)
        .with_cert_resolver(identity);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_names_or_addresses() {
        assert_eq!(
            KeeperHost::parse("127.0.0.1").unwrap(),
            KeeperHost::Ip("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            KeeperHost::parse("[::1]").unwrap(),
            KeeperHost::Ip("::1".parse().unwrap())
        );
        assert!(matches!(
            KeeperHost::parse("Keeper-1.example").unwrap(),
            KeeperHost::Dns(d) if d.as_str() == "keeper-1.example"
        ));
        assert!(KeeperHost::parse("*.example").is_err());
    }

    #[test]
    fn a_keeper_csr_certifies_its_key() {
        let (csr, key) = keeper_csr().unwrap();
        assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        let kp = rcgen::KeyPair::try_from(key.as_slice()).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["k.test".to_owned()])
            .unwrap()
            .self_signed(&kp)
            .unwrap();
        assert!(certifies_key(cert.der(), &key));
        let (_, other) = keeper_csr().unwrap();
        assert!(!certifies_key(cert.der(), &other));
        assert!(validity(cert.der()).is_some());
        assert_eq!(certs_from_pem(&cert.pem()).unwrap().len(), 1);
        assert!(certs_from_pem("junk").is_err());
    }

    fn ca(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        (params.self_signed(&key).unwrap(), key)
    }

    fn leaf(issuer: &(rcgen::Certificate, rcgen::KeyPair), sans: Vec<rcgen::SanType>) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        params
            .signed_by(&key, &issuer.0, &issuer.1)
            .unwrap()
            .der()
            .to_vec()
    }

    #[test]
    fn a_keeper_takes_only_pinned_spiffe_ids_from_the_anchors() {
        let dir = tempfile::tempdir().unwrap();
        let operator = ca("operator");
        let vern = ca("vern");
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, operator.0.pem()).unwrap();
        let pins = vec![
            "vern.internal".to_owned(),
            "spiffe://td/vern/server".to_owned(),
        ];
        let trust = KeeperClientTrust::new(&file, pins).unwrap();
        let dns = |n: &str| rcgen::SanType::DnsName(n.try_into().unwrap());
        let uri = |u: &str| rcgen::SanType::URI(u.try_into().unwrap());
        let now = UnixTime::now();
        let check = |der: Vec<u8>| {
            trust
                .verify_client_cert(&CertificateDer::from(der), &[], now)
                .is_ok()
        };
        // The operator's CA: a pinned DNS or URI name.
        assert!(check(leaf(&operator, vec![dns("vern.internal")])));
        assert!(!check(leaf(&operator, vec![dns("other.internal")])));
        // Vern's CA, before its anchors arrive: nothing.
        let server = leaf(&vern, vec![uri("spiffe://td/vern/server")]);
        assert!(!check(server.clone()));
        trust.set_anchors(&[vern.0.der().to_vec()]).unwrap();
        assert!(check(server));
        // A pinned DNS name in an SVID does not count, nor another SPIFFE ID.
        assert!(!check(leaf(
            &vern,
            vec![uri("spiffe://td/t/a/p/b/e/c/s/api"), dns("vern.internal")]
        )));
        assert!(!check(leaf(&vern, vec![uri("spiffe://td/vern/keeper/1")])));
        assert!(!check(leaf(&vern, vec![dns("vern.internal")])));
    }
}
