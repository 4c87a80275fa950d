//! The CA's signing material: CA certificates with their keys and the
//! JWT-SVID signing keys, kept as one document behind the barrier (view
//! `pki/`, key `authority`), and the rules that say which of them signs
//! and which are published.
//!
//! A generated CA is a self-signed root and an intermediate that signs
//! leaves; the root's key signs the intermediate once and is then dropped,
//! so it never rests anywhere. An imported CA is either a root with its key
//! (Vern then makes an intermediate under it the same way) or an
//! intermediate with its chain up to the root (it signs itself).
//!
//! Rotation works like the token authority's JWKS: a new CA and JWT key
//! are published at once and sign only after a delay, so relying parties
//! fetch the new trust anchor before they meet an SVID it signed; a
//! superseded one stays published until every SVID it can have signed has
//! expired (it stopped signing less than the maximum SVID lifetime ago).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rand::RngCore as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    Ia5String, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber, SignatureAlgorithm,
};
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use vern_crypto::SecretBytes;
use vern_seal::{Barrier, BarrierView, BarrierWrite, Expect};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use zeroize::{Zeroize as _, Zeroizing};

use crate::dns::DnsName;
use crate::jwt::{JwtKey, StoredJwtKey};
use crate::spiffe::{SpiffeId, TrustDomain};
use crate::PkiError;

/// The prefix of the PKI's view of the barrier: the CA document and the
/// issued-certificate records lie under it, and nothing else is in reach.
pub(crate) const VIEW: &str = "pki/";
/// The storage key (in the view) of the signing material.
const DOC: &str = "authority";
/// Certificates start this long before they are made, so a relying
/// party whose clock is a little behind already accepts them.
pub(crate) const BACKDATE: u64 = 30;

/// The PKI's view of the barrier; keys are relative to [`VIEW`].
pub(crate) fn view(b: &Barrier) -> Result<BarrierView<'_>, PkiError> {
    Ok(b.view(VIEW)?)
}

/// The key algorithm of CAs Vern generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// ECDSA on P-256 with SHA-256 (the default).
    P256,
    /// Ed25519.
    Ed25519,
}

impl KeyType {
    /// `p256` or `ed25519`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "p256" => Ok(Self::P256),
            "ed25519" => Ok(Self::Ed25519),
            other => Err(format!("CA key type `{other}` must be p256 or ed25519")),
        }
    }

    fn alg(self) -> &'static SignatureAlgorithm {
        match self {
            Self::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }
}

/// One CA as stored.
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredCa {
    /// The first 16 hex digits of the SHA-256 of the signing certificate.
    id: String,
    /// The trust domain it was made or imported for.
    trust_domain: String,
    /// The trust anchor, a self-signed root (DER, base64).
    root: String,
    /// The signing certificate first, then its issuers up to but excluding
    /// the root (DER, base64).
    chain: Vec<String>,
    /// The signing certificate's key, PKCS#8 DER, base64; only ever inside
    /// the barrier.
    key: String,
    /// It signs from this time (Unix seconds) until a newer CA does.
    signs_from: u64,
    /// Whether an operator imported it.
    imported: bool,
    /// When it was added.
    created: u64,
}

/// The stored document.
#[derive(Serialize, Deserialize, Default)]
struct Doc {
    /// Incremented with every change of the published set that a write
    /// makes; see [`Material::sequence`].
    sequence: u64,
    cas: Vec<StoredCa>,
    jwt_keys: Vec<StoredJwtKey>,
}

/// A loaded CA that can sign.
pub(crate) struct SigningCa {
    pub(crate) id: String,
    pub(crate) trust_domain: String,
    pub(crate) root_der: Vec<u8>,
    /// Signing certificate first, root excluded.
    pub(crate) chain_der: Vec<Vec<u8>>,
    pub(crate) signs_from: u64,
    /// When the signing certificate expires.
    pub(crate) not_after: u64,
    /// When the root expires.
    pub(crate) root_not_after: u64,
    pub(crate) imported: bool,
    created: u64,
    /// The signing certificate as rcgen's issuer.
    issuer: rcgen::Certificate,
    key: KeyPair,
}

impl Drop for SigningCa {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

/// What a leaf certificate says; the key comes from the CSR.
pub(crate) struct Leaf<'a> {
    pub(crate) spiffe_id: &'a SpiffeId,
    pub(crate) dns_names: &'a [DnsName],
    /// IP address SANs: only for the serving certificates Vern gives its
    /// keepers, which are reached by address.
    pub(crate) ip_addresses: &'a [std::net::IpAddr],
    pub(crate) serial: &'a [u8],
    pub(crate) not_before: u64,
    pub(crate) not_after: u64,
}

fn rcgen_err(what: &str) -> impl Fn(rcgen::Error) -> PkiError + '_ {
    move |e| PkiError::Internal(format!("{what}: {e}"))
}

fn time(secs: u64) -> Result<time::OffsetDateTime, PkiError> {
    i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .ok_or_else(|| PkiError::Internal(format!("time {secs} is out of range")))
}

/// A fresh serial number: 20 bytes from the operating system's CSPRNG,
/// positive (top bit clear) and with no leading zero byte, so its DER
/// encoding is exactly 20 bytes: at least 152 random bits, more than the
/// 128 the CA/Browser Forum and SPIFFE ask for.
pub(crate) fn random_serial() -> [u8; 20] {
    let mut serial = [0u8; 20];
    rand::rngs::OsRng.fill_bytes(&mut serial);
    serial[0] = (serial[0] & 0x7f).max(1);
    serial
}

fn ca_id(der: &[u8]) -> String {
    hex::encode(vern_crypto::sha256(der).get(..8).unwrap_or_default())
}

fn decode(what: &str, b64: &str) -> Result<Vec<u8>, PkiError> {
    B64.decode(b64).map_err(|_| PkiError::corrupt(what))
}

/// Parameters of a CA certificate of Vern's making.
fn ca_params(
    trust_domain: &TrustDomain,
    role: &str,
    tag: &str,
    not_before: u64,
    not_after: u64,
    path_len: u8,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Vern");
    dn.push(
        DnType::CommonName,
        format!("Vern {role} CA {trust_domain} {tag}"),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.subject_alt_names = vec![SanType::URI(
        Ia5String::try_from(trust_domain.id()).map_err(|e| PkiError::Internal(e.to_string()))?,
    )];
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    params.not_before = time(not_before.saturating_sub(BACKDATE))?;
    params.not_after = time(not_after)?;
    Ok(params)
}

/// When a new CA is made, until when it is valid, and from when it signs.
#[derive(Clone, Copy)]
struct Span {
    now: u64,
    not_after: u64,
    signs_from: u64,
}

/// A new intermediate under `root_der` (whose key is `root_key`).
fn intermediate_under(
    trust_domain: &TrustDomain,
    key_type: KeyType,
    (root_der, root_key): (&[u8], &KeyPair),
    span: Span,
    imported: bool,
) -> Result<StoredCa, PkiError> {
    let Span {
        now,
        not_after,
        signs_from,
    } = span;
    let root = CertificateParams::from_ca_cert_der(&CertificateDer::from(root_der))
        .map_err(rcgen_err("the root cannot act as an issuer"))?
        .self_signed(root_key)
        .map_err(rcgen_err("the root cannot act as an issuer"))?;
    let key = KeyPair::generate_for(key_type.alg()).map_err(rcgen_err("key generation"))?;
    let tag = hex::encode(random_serial().get(..4).unwrap_or_default());
    let mut params = ca_params(trust_domain, "intermediate", &tag, now, not_after, 0)?;
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(&key, &root, root_key)
        .map_err(rcgen_err("signing the intermediate"))?;
    if !chains_to(cert.der(), root_der) {
        // rcgen rebuilds the issuer's name from its parts; an imported
        // root whose name does not survive that cannot be used.
        return Err(PkiError::InvalidCa(
            "certificates signed under this root would not chain to it (its subject name cannot be reproduced exactly)".to_owned(),
        ));
    }
    let key_der = Zeroizing::new(key.serialize_der());
    Ok(StoredCa {
        id: ca_id(cert.der()),
        trust_domain: trust_domain.as_str().to_owned(),
        root: B64.encode(root_der),
        chain: vec![B64.encode(cert.der())],
        key: B64.encode(&*key_der),
        signs_from,
        imported,
        created: now,
    })
}

/// Whether `cert` (DER) names `issuer` (DER) as its issuer byte for byte
/// and carries a signature that the issuer's key verifies.
pub(crate) fn chains_to(cert: &[u8], issuer: &[u8]) -> bool {
    match (
        x509_parser::parse_x509_certificate(cert),
        x509_parser::parse_x509_certificate(issuer),
    ) {
        (Ok((_, cert)), Ok((_, issuer))) => {
            cert.issuer().as_raw() == issuer.subject().as_raw()
                && cert.verify_signature(Some(issuer.public_key())).is_ok()
        }
        _ => false,
    }
}

/// A new root and intermediate, valid for `ttl` seconds from `now`.
pub(crate) fn generate_ca(
    trust_domain: &TrustDomain,
    key_type: KeyType,
    now: u64,
    ttl: u64,
    signs_from: u64,
) -> Result<StoredCa, PkiError> {
    let root_key = KeyPair::generate_for(key_type.alg()).map_err(rcgen_err("key generation"))?;
    let not_after = now.saturating_add(ttl);
    let tag = hex::encode(random_serial().get(..4).unwrap_or_default());
    let root = ca_params(trust_domain, "root", &tag, now, not_after, 1)?
        .self_signed(&root_key)
        .map_err(rcgen_err("signing the root"))?;
    intermediate_under(
        trust_domain,
        key_type,
        (root.der(), &root_key),
        Span {
            now,
            not_after,
            signs_from,
        },
        false,
    )
}

/// Seconds since the Unix epoch of an ASN.1 time, clamped at zero.
fn unix(t: x509_parser::time::ASN1Time) -> u64 {
    u64::try_from(t.timestamp()).unwrap_or(0)
}

fn parse_cert<'a>(what: &str, der: &'a [u8]) -> Result<X509Certificate<'a>, String> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(format!("{what} has bytes after its end")),
        Err(e) => Err(format!("{what} cannot be parsed: {e}")),
    }
}

/// An external CA offered for import, checked: `certs_pem` holds the CA
/// certificate first and then its issuers up to and including the root;
/// `key_pem` the CA certificate's key (PKCS#8).
pub(crate) fn import_ca(
    trust_domain: &TrustDomain,
    key_type: KeyType,
    certs_pem: &str,
    key_pem: &str,
    now: u64,
    ttl: u64,
    signs_from: u64,
) -> Result<StoredCa, PkiError> {
    let refuse = PkiError::InvalidCa;
    let mut ders = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(certs_pem.as_bytes()) {
        let block = block.map_err(|e| refuse(format!("the certificate file is not PEM: {e}")))?;
        if block.label != "CERTIFICATE" {
            return Err(refuse(format!(
                "the certificate file holds a `{}` block; give CERTIFICATE blocks only",
                block.label.chars().take(40).collect::<String>()
            )));
        }
        ders.push(block.contents);
    }
    if ders.is_empty() {
        return Err(refuse(
            "the certificate file holds no certificate".to_owned(),
        ));
    }
    if ders.len() > 8 {
        return Err(refuse("the chain is longer than 8 certificates".to_owned()));
    }
    let key = Zeroizing::new(key_pem.to_owned());
    let key = KeyPair::from_pem(&key).map_err(|_| {
        refuse("the key is not a PEM PKCS#8 private key of a supported type (convert with `openssl pkcs8 -topk8 -nocrypt`)".to_owned())
    })?;
    let certs = ders
        .iter()
        .enumerate()
        .map(|(i, der)| parse_cert(&format!("certificate {}", i + 1), der))
        .collect::<Result<Vec<_>, _>>()
        .map_err(refuse)?;
    let (Some(first), Some(last)) = (certs.first(), certs.last()) else {
        return Err(refuse(
            "the certificate file holds no certificate".to_owned(),
        ));
    };
    if first.public_key().raw != key.public_key_der().as_slice() {
        return Err(refuse(
            "the key does not belong to the first certificate".to_owned(),
        ));
    }
    for (i, cert) in certs.iter().enumerate() {
        let n = i + 1;
        if !cert.is_ca() {
            return Err(refuse(format!("certificate {n} is not a CA")));
        }
        // RFC 5280 §4.2.1.3: a CA certificate carries keyUsage with
        // keyCertSign; strict verifiers (OpenSSL's among them) refuse a
        // chain through one that does not.
        match cert.key_usage() {
            Ok(Some(ku)) if ku.value.key_cert_sign() => {}
            Ok(_) => {
                return Err(refuse(format!(
                    "certificate {n} may not sign certificates: it needs a keyUsage extension with keyCertSign"
                )))
            }
            Err(_) => return Err(refuse(format!("certificate {n} has an unreadable keyUsage"))),
        }
        let (from, until) = (
            unix(cert.validity().not_before),
            unix(cert.validity().not_after),
        );
        if now < from || now >= until {
            return Err(refuse(format!("certificate {n} is not valid now")));
        }
        crate::csr::check_key(cert.public_key()).map_err(|e| {
            refuse(format!(
                "certificate {n}: {}",
                e.replace("the CSR's", "its")
            ))
        })?;
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let GeneralName::URI(uri) = name {
                    if uri.starts_with("spiffe://") && *uri != trust_domain.id() {
                        return Err(refuse(format!(
                            "certificate {n} is for `{}`, not this trust domain ({})",
                            uri.chars().take(256).collect::<String>(),
                            trust_domain.id()
                        )));
                    }
                }
            }
        }
        let issuer = certs.get(i + 1).unwrap_or(cert);
        if cert.issuer().as_raw() != issuer.subject().as_raw()
            || cert.verify_signature(Some(issuer.public_key())).is_err()
        {
            return Err(refuse(if i + 1 == certs.len() {
                format!("certificate {n} is not a self-signed root; end the file with the root")
            } else {
                format!("certificate {n} is not signed by certificate {}", n + 1)
            }));
        }
    }
    let root_der = ders.last().cloned().unwrap_or_default();
    if certs.len() == 1 {
        // A root: Vern makes an intermediate under it with the root's key,
        // which it then drops like its own.
        let not_after = unix(last.validity().not_after).min(now.saturating_add(ttl));
        return intermediate_under(
            trust_domain,
            key_type,
            (&root_der, &key),
            Span {
                now,
                not_after,
                signs_from,
            },
            true,
        );
    }
    let key_der = Zeroizing::new(key.serialize_der());
    let chain: Vec<String> = ders
        .iter()
        .take(ders.len() - 1)
        .map(|d| B64.encode(d))
        .collect();
    Ok(StoredCa {
        id: ca_id(ders.first().map(Vec::as_slice).unwrap_or_default()),
        trust_domain: trust_domain.as_str().to_owned(),
        root: B64.encode(&root_der),
        chain,
        key: B64.encode(&*key_der),
        signs_from,
        imported: true,
        created: now,
    })
}

impl SigningCa {
    pub(crate) fn load(stored: &StoredCa) -> Result<Self, PkiError> {
        let root_der = decode("authority", &stored.root)?;
        let chain_der = stored
            .chain
            .iter()
            .map(|c| decode("authority", c))
            .collect::<Result<Vec<_>, _>>()?;
        let key_der = Zeroizing::new(decode("authority", &stored.key)?);
        let key =
            KeyPair::try_from(key_der.as_slice()).map_err(|_| PkiError::corrupt("authority"))?;
        let signing = chain_der
            .first()
            .ok_or_else(|| PkiError::corrupt("authority"))?;
        let not_after = parse_cert("the CA", signing)
            .map(|c| unix(c.validity().not_after))
            .map_err(|_| PkiError::corrupt("authority"))?;
        let root_not_after = parse_cert("the root", &root_der)
            .map(|c| unix(c.validity().not_after))
            .map_err(|_| PkiError::corrupt("authority"))?;
        let issuer = CertificateParams::from_ca_cert_der(&CertificateDer::from(signing.as_slice()))
            .and_then(|p| p.self_signed(&key))
            .map_err(|_| PkiError::corrupt("authority"))?;
        Ok(Self {
            id: stored.id.clone(),
            trust_domain: stored.trust_domain.clone(),
            root_der,
            chain_der,
            signs_from: stored.signs_from,
            not_after,
            root_not_after,
            imported: stored.imported,
            created: stored.created,
            issuer,
            key,
        })
    }

    /// When it was added.
    pub(crate) fn created(&self) -> u64 {
        self.created
    }

    fn store(&self) -> StoredCa {
        let key_der = Zeroizing::new(self.key.serialize_der());
        StoredCa {
            id: self.id.clone(),
            trust_domain: self.trust_domain.clone(),
            root: B64.encode(&self.root_der),
            chain: self.chain_der.iter().map(|c| B64.encode(c)).collect(),
            key: B64.encode(&*key_der),
            signs_from: self.signs_from,
            imported: self.imported,
            created: self.created,
        }
    }

    /// Signs an X.509-SVID for the public key `spki` (DER): one URI SAN
    /// (the SPIFFE ID) and the DNS names, CA false, digitalSignature
    /// (critical), serverAuth and clientAuth.
    pub(crate) fn sign_leaf(&self, spki: &[u8], leaf: &Leaf<'_>) -> Result<Vec<u8>, PkiError> {
        let public = rcgen::SubjectPublicKeyInfo::from_der(spki)
            .map_err(|_| PkiError::BadCsr("the key's type is not supported".to_owned()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Vern");
        params.distinguished_name = dn;
        let uri = Ia5String::try_from(leaf.spiffe_id.to_string())
            .map_err(|e| PkiError::Internal(e.to_string()))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        for name in leaf.dns_names {
            params.subject_alt_names.push(SanType::DnsName(
                Ia5String::try_from(name.as_str())
                    .map_err(|e| PkiError::Internal(e.to_string()))?,
            ));
        }
        for ip in leaf.ip_addresses {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        // cA false, as DER has it: basicConstraints with an empty SEQUENCE
        // (a cA field equal to its default must be left out; rcgen's
        // explicit form writes it, which strict parsers refuse).
        params.is_ca = IsCa::NoCa;
        let mut basic_constraints =
            rcgen::CustomExtension::from_oid_content(&[2, 5, 29, 19], vec![0x30, 0x00]);
        basic_constraints.set_criticality(true);
        params.custom_extensions = vec![basic_constraints];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(SerialNumber::from_slice(leaf.serial));
        params.not_before = time(leaf.not_before)?;
        params.not_after = time(leaf.not_after)?;
        let cert = params
            .signed_by(&public, &self.issuer, &self.key)
            .map_err(rcgen_err("signing the SVID"))?;
        Ok(cert.der().to_vec())
    }
}

/// The loaded material, newest last in each list.
pub(crate) struct Material {
    stored_sequence: u64,
    pub(crate) cas: Vec<SigningCa>,
    pub(crate) jwt_keys: Vec<JwtKey>,
    /// Storage version of the document, for compare-and-set.
    version: Option<u64>,
}

/// Which of several keys, each signing from its time until the next one's
/// (sorted by it), are published at `now`: every one that will sign,
/// signs, or stopped signing less than `overlap` ago.
fn published(signs_from: &[u64], now: u64, overlap: u64) -> Vec<bool> {
    (0..signs_from.len())
        .map(|i| match signs_from.get(i + 1) {
            Some(next) if *next <= now => now < next.saturating_add(overlap),
            _ => true,
        })
        .collect()
}

impl Material {
    /// The CA that signs at `now`: the newest whose time has come.
    pub(crate) fn active_ca(&self, now: u64) -> Option<&SigningCa> {
        self.cas.iter().rev().find(|c| c.signs_from <= now)
    }

    /// The JWT key that signs at `now`.
    pub(crate) fn active_jwt(&self, now: u64) -> Option<&JwtKey> {
        self.jwt_keys.iter().rev().find(|k| k.signs_from <= now)
    }

    /// The CAs in the bundle at `now`: published by the rotation rule and
    /// with a root that has not expired.
    pub(crate) fn published_cas(&self, now: u64, overlap: u64) -> Vec<&SigningCa> {
        let from: Vec<u64> = self.cas.iter().map(|c| c.signs_from).collect();
        self.cas
            .iter()
            .zip(published(&from, now, overlap))
            .filter(|(c, p)| *p && c.root_not_after > now)
            .map(|(c, _)| c)
            .collect()
    }

    /// Whether the first CA and JWT key have been created.
    pub(crate) fn is_created(&self) -> bool {
        !self.cas.is_empty() && !self.jwt_keys.is_empty()
    }

    /// The JWT keys in the bundle at `now`.
    pub(crate) fn published_jwt(&self, now: u64, overlap: u64) -> Vec<&JwtKey> {
        let from: Vec<u64> = self.jwt_keys.iter().map(|k| k.signs_from).collect();
        self.jwt_keys
            .iter()
            .zip(published(&from, now, overlap))
            .filter(|(_, p)| *p)
            .map(|(k, _)| k)
            .collect()
    }

    /// The bundle's `spiffe_sequence`: the stored counter, which every
    /// write that changes the published set increments, plus the entries
    /// that have since left the bundle by the passing of time alone. Both
    /// only grow, so the number does, with every change of content.
    pub(crate) fn sequence(&self, now: u64, overlap: u64) -> u64 {
        let gone = (self.cas.len() - self.published_cas(now, overlap).len())
            + (self.jwt_keys.len() - self.published_jwt(now, overlap).len());
        self.stored_sequence.saturating_add(gone as u64)
    }

    /// Reads the material, creating the first CA and JWT key when there
    /// is none.
    pub(crate) async fn load(
        barrier: &Barrier,
        fresh: impl Fn() -> Result<(StoredCa, StoredJwtKey), PkiError>,
    ) -> Result<Self, PkiError> {
        for _ in 0..3 {
            let material = Self::read(barrier).await?;
            if !material.cas.is_empty() && !material.jwt_keys.is_empty() {
                return Ok(material);
            }
            let (ca, jwt) = fresh()?;
            let doc = Doc {
                sequence: material.stored_sequence.saturating_add(1),
                cas: material
                    .cas
                    .iter()
                    .map(SigningCa::store)
                    .chain(material.cas.is_empty().then_some(ca))
                    .collect(),
                jwt_keys: material
                    .jwt_keys
                    .iter()
                    .map(JwtKey::store)
                    .chain(material.jwt_keys.is_empty().then_some(jwt))
                    .collect(),
            };
            match Self::write(barrier, &doc, material.expect()).await {
                Ok(()) | Err(PkiError::Seal(vern_seal::SealError::Conflict { .. })) => {}
                Err(e) => return Err(e),
            }
        }
        Self::read(barrier).await
    }

    fn expect(&self) -> Expect {
        self.version.map_or(Expect::Absent, Expect::Version)
    }

    pub(crate) async fn read(barrier: &Barrier) -> Result<Self, PkiError> {
        let Some(plain) = view(barrier)?.get(DOC).await? else {
            return Ok(Self {
                stored_sequence: 0,
                cas: Vec::new(),
                jwt_keys: Vec::new(),
                version: None,
            });
        };
        let doc: Doc =
            serde_json::from_slice(plain.value.expose()).map_err(|_| PkiError::corrupt(DOC))?;
        let mut cas = doc
            .cas
            .iter()
            .map(SigningCa::load)
            .collect::<Result<Vec<_>, _>>()?;
        cas.sort_by_key(|c| c.signs_from);
        let mut jwt_keys = doc
            .jwt_keys
            .iter()
            .map(JwtKey::load)
            .collect::<Result<Vec<_>, _>>()?;
        jwt_keys.sort_by_key(|k| k.signs_from);
        Ok(Self {
            stored_sequence: doc.sequence,
            cas,
            jwt_keys,
            version: Some(plain.version),
        })
    }

    async fn write(barrier: &Barrier, doc: &Doc, expect: Expect) -> Result<(), PkiError> {
        let bytes =
            Zeroizing::new(serde_json::to_vec(doc).map_err(|e| PkiError::Internal(e.to_string()))?);
        view(barrier)?
            .commit(vec![BarrierWrite {
                key: DOC.to_owned(),
                value: Some(SecretBytes::new(bytes.to_vec())),
                expect,
            }])
            .await?;
        Ok(())
    }

    /// Adds a CA (and, when given, a JWT key), dropping what is no longer
    /// published at `now`; compare-and-set on the stored document, so a
    /// concurrent change makes this a conflict to retry.
    pub(crate) async fn add(
        &self,
        barrier: &Barrier,
        now: u64,
        overlap: u64,
        ca: StoredCa,
        jwt: Option<StoredJwtKey>,
    ) -> Result<(), PkiError> {
        let cas = self.published_cas(now, overlap);
        let jwt_keys = self.published_jwt(now, overlap);
        let doc = Doc {
            sequence: self.sequence(now, overlap).saturating_add(1),
            cas: cas
                .into_iter()
                .map(SigningCa::store)
                .chain(std::iter::once(ca))
                .collect(),
            jwt_keys: jwt_keys.into_iter().map(JwtKey::store).chain(jwt).collect(),
        };
        Self::write(barrier, &doc, self.expect()).await
    }
}

/// A CA as it is reported: never its key.
#[derive(Debug, Clone, Serialize)]
pub struct CaInfo {
    /// Its id: the first 16 hex digits of the SHA-256 of its signing
    /// certificate.
    pub id: String,
    /// It signs from this time (Unix seconds) until a newer CA does.
    pub signs_from: u64,
    /// When its signing certificate expires.
    pub not_after: u64,
    /// Whether an operator imported it.
    pub imported: bool,
}

impl From<&SigningCa> for CaInfo {
    fn from(ca: &SigningCa) -> Self {
        Self {
            id: ca.id.clone(),
            signs_from: ca.signs_from,
            not_after: ca.not_after,
            imported: ca.imported,
        }
    }
}
