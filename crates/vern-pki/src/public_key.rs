//! Public keys and CA bundles given as PEM text rather than files: the
//! static keys of an external token issuer (`-----BEGIN PUBLIC KEY-----`,
//! an X.509 SubjectPublicKeyInfo) and the CA bundle that a JWKS URL's
//! certificate must chain to.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, SubjectPublicKeyInfoDer};
use rustls::RootCertStore;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer as _;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

/// Why PEM text holds no usable key or certificate. The messages name the
/// problem, never the text itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PemError {
    /// No PEM block of the expected kind, or one that does not decode.
    #[error("{0}")]
    Pem(String),
    /// The block decodes but is not a key of an accepted type.
    #[error("{0}")]
    Key(String),
}

/// A public key from a SubjectPublicKeyInfo, by type. The bytes are as the
/// signature verifiers take them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpkiKey {
    /// RSA: the big-endian modulus and public exponent.
    Rsa {
        /// The modulus `n`.
        modulus: Vec<u8>,
        /// The public exponent `e`.
        exponent: Vec<u8>,
    },
    /// An uncompressed P-256 point (65 bytes, `04 ‖ x ‖ y`).
    P256(Vec<u8>),
    /// An uncompressed P-384 point (97 bytes).
    P384(Vec<u8>),
    /// An Ed25519 key (32 bytes).
    Ed25519([u8; 32]),
}

/// Reads the one public key of PEM text (`-----BEGIN PUBLIC KEY-----`).
/// RSA, P-256, P-384 and Ed25519 keys are accepted; other types, private
/// keys and certificates are refused.
pub fn public_key_from_pem(pem: &str) -> Result<SpkiKey, PemError> {
    let der = SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes()).map_err(|_| {
        PemError::Pem("no `-----BEGIN PUBLIC KEY-----` block could be read".to_owned())
    })?;
    let (rest, spki) = SubjectPublicKeyInfo::from_der(der.as_ref())
        .map_err(|_| PemError::Key("the public key block is not a valid key".to_owned()))?;
    if !rest.is_empty() {
        return Err(PemError::Key(
            "the public key block has trailing bytes".to_owned(),
        ));
    }
    let algorithm = &spki.algorithm.algorithm;
    let bits = spki.subject_public_key.data.as_ref();
    if *algorithm == OID_PKCS1_RSAENCRYPTION {
        return match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => Ok(SpkiKey::Rsa {
                modulus: strip_zeros(rsa.modulus),
                exponent: strip_zeros(rsa.exponent),
            }),
            _ => Err(PemError::Key("the RSA public key is malformed".to_owned())),
        };
    }
    if *algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        return match (curve, bits.len(), bits.first()) {
            (Some(c), 65, Some(4)) if c == OID_EC_P256 => Ok(SpkiKey::P256(bits.to_vec())),
            (Some(c), 97, Some(4)) if c == OID_NIST_EC_P384 => Ok(SpkiKey::P384(bits.to_vec())),
            _ => Err(PemError::Key(
                "only uncompressed P-256 and P-384 EC keys are accepted".to_owned(),
            )),
        };
    }
    if *algorithm == OID_SIG_ED25519 {
        return bits
            .try_into()
            .map(SpkiKey::Ed25519)
            .map_err(|_| PemError::Key("an Ed25519 key is 32 bytes".to_owned()));
    }
    Err(PemError::Key(
        "only RSA, P-256, P-384 and Ed25519 public keys are accepted".to_owned(),
    ))
}

/// Reads every certificate of a PEM bundle into a root store, for a TLS
/// client that trusts exactly these CAs. At least one certificate is
/// required.
pub fn roots_from_pem(pem: &str) -> Result<RootCertStore, PemError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| PemError::Pem("the CA bundle is not valid PEM".to_owned()))?;
    if certs.is_empty() {
        return Err(PemError::Pem(
            "the CA bundle holds no `-----BEGIN CERTIFICATE-----` block".to_owned(),
        ));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|_| {
            PemError::Pem("a certificate of the CA bundle cannot be used as a CA".to_owned())
        })?;
    }
    Ok(roots)
}

/// DER integers may carry a leading zero byte (and, badly encoded,
/// several); verifiers want the plain big-endian magnitude.
fn strip_zeros(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or_default().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ec_and_ed25519_keys_and_refuses_others() {
        let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let SpkiKey::P256(point) = public_key_from_pem(&ec.public_key_pem()).unwrap() else {
            panic!("not a P-256 key");
        };
        assert_eq!(point, ec.public_key_raw());
        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        assert!(matches!(
            public_key_from_pem(&p384.public_key_pem()),
            Ok(SpkiKey::P384(_))
        ));
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        assert_eq!(
            public_key_from_pem(&ed.public_key_pem()).unwrap(),
            SpkiKey::Ed25519(ed.public_key_raw().try_into().unwrap())
        );
        // A private key, a certificate and garbage are not public keys.
        let cert = rcgen::generate_simple_self_signed(vec!["a.example".into()]).unwrap();
        for bad in [
            ec.serialize_pem(),
            cert.cert.pem(),
            "not pem".to_owned(),
            String::new(),
        ] {
            assert!(public_key_from_pem(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_ca_bundles() {
        let a = rcgen::generate_simple_self_signed(vec!["a.example".into()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b.example".into()]).unwrap();
        let bundle = format!("{}{}", a.cert.pem(), b.cert.pem());
        assert_eq!(roots_from_pem(&bundle).unwrap().len(), 2);
        assert!(roots_from_pem("").is_err());
        assert!(roots_from_pem(&a.key_pair.public_key_pem()).is_err());
    }
}
