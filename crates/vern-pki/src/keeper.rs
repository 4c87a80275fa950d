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

use std::net::IpAddr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use x509_parser::extensions::GeneralName;
use zeroize::Zeroizing;

use crate::csr::check_csr;
use crate::dns::DnsName;
use crate::pki::{Pki, X509Svid};
use crate::spiffe::{SpiffeId, Workload};
use crate::{provider, PkiError, TlsError};

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

/// A certificate's `notAfter` (Unix seconds), `None` when it does not parse.
pub fn not_after(cert_der: &[u8]) -> Option<u64> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    u64::try_from(cert.validity().not_after.timestamp()).ok()
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
        assert!(not_after(cert.der()).is_some());
        assert_eq!(certs_from_pem(&cert.pem()).unwrap().len(), 1);
        assert!(certs_from_pem("junk").is_err());
    }
}
