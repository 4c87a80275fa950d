//! Certificate signing requests: a PEM CSR read and checked before
//! anything is signed. The CSR proves possession of its key (its
//! signature) and carries that key; everything else in the certificate
//! comes from Vern, so the checks refuse what a CSR must not ask for
//! rather than copy what it asks for.

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::dns::DnsName;
use crate::spiffe::SpiffeId;

/// The largest CSR read, in bytes of PEM.
const MAX_CSR_BYTES: usize = 64 * 1024;

/// Smallest accepted RSA modulus, in bits.
const MIN_RSA_BITS: usize = 2048;
/// Largest accepted RSA modulus, in bits (larger ones cost the verifier
/// time for no gain).
const MAX_RSA_BITS: usize = 8192;

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_ED25519: &str = "1.3.101.112";
const OID_RSA: &str = "1.2.840.113549.1.1.1";

/// A CSR that passed every check: the public key to certify.
#[derive(Debug)]
pub struct CheckedCsr {
    /// The SubjectPublicKeyInfo, DER.
    pub(crate) spki: Vec<u8>,
}

/// Reads and checks a PEM CSR for an SVID of `spiffe_id` that may carry
/// `dns_names`. Refused, with a message saying why: anything but one PEM
/// CSR, a bad signature, a weak or unsupported key, a URI SAN other than
/// `spiffe_id` or more than one, a DNS SAN not among `dns_names`, any other
/// kind of SAN, a CA flag, the `keyCertSign` or `cRLSign` key usages, and
/// any other extension marked critical.
pub fn check_csr(
    pem: &str,
    spiffe_id: &SpiffeId,
    dns_names: &[DnsName],
) -> Result<CheckedCsr, String> {
    if pem.len() > MAX_CSR_BYTES {
        return Err(format!(
            "the CSR is {} bytes long; the limit is {MAX_CSR_BYTES}",
            pem.len()
        ));
    }
    let (rest, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|_| {
        "the CSR is not PEM; give one `-----BEGIN CERTIFICATE REQUEST-----` block".to_owned()
    })?;
    if !matches!(
        block.label.as_str(),
        "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST"
    ) {
        return Err(format!(
            "the PEM block is a `{}`, not a `CERTIFICATE REQUEST`",
            block.label.chars().take(40).collect::<String>()
        ));
    }
    if String::from_utf8_lossy(rest).contains("-----BEGIN") {
        return Err("give exactly one CSR; the PEM holds more blocks".to_owned());
    }
    let (trailing, csr) = X509CertificationRequest::from_der(&block.contents)
        .map_err(|e| format!("the CSR cannot be parsed: {e}"))?;
    if !trailing.is_empty() {
        return Err("the CSR has bytes after its end".to_owned());
    }
    let info = &csr.certification_request_info;
    check_key(&info.subject_pki)?;
    csr.verify_signature()
        .map_err(|_| "the CSR's signature does not verify with its own key".to_owned())?;
    for attribute in info.iter_attributes() {
        if let ParsedCriAttribute::ExtensionRequest(request) = attribute.parsed_attribute() {
            for ext in &request.extensions {
                check_extension(ext.critical, ext.parsed_extension(), spiffe_id, dns_names)?;
            }
        }
    }
    Ok(CheckedCsr {
        spki: info.subject_pki.raw.to_vec(),
    })
}

/// Accepts P-256, P-384, Ed25519 and RSA keys of 2048 to 8192 bits.
pub(crate) fn check_key(spki: &SubjectPublicKeyInfo<'_>) -> Result<(), String> {
    let alg = spki.algorithm.algorithm.to_id_string();
    match alg.as_str() {
        OID_EC_PUBLIC_KEY => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string());
            match curve.as_deref() {
                Some(OID_P256 | OID_P384) => Ok(()),
                Some(other) => Err(format!(
                    "the CSR's key is on curve {other}; use P-256 (or P-384, Ed25519, RSA of 2048 bits or more)"
                )),
                None => Err("the CSR's EC key names no curve".to_owned()),
            }
        }
        OID_ED25519 => Ok(()),
        OID_RSA => {
            let Ok(PublicKey::RSA(rsa)) = spki.parsed() else {
                return Err("the CSR's RSA key cannot be read".to_owned());
            };
            let modulus = rsa.modulus;
            let first = modulus
                .iter()
                .position(|b| *b != 0)
                .unwrap_or(modulus.len());
            let significant = modulus.get(first..).unwrap_or_default();
            let bits = significant.first().map_or(0, |b| {
                (significant.len() - 1) * 8 + (8 - b.leading_zeros() as usize)
            });
            if bits < MIN_RSA_BITS {
                Err(format!(
                    "the CSR's RSA key has {bits} bits, which is weak; use at least {MIN_RSA_BITS} (or P-256)"
                ))
            } else if bits > MAX_RSA_BITS {
                Err(format!(
                    "the CSR's RSA key has {bits} bits; the limit is {MAX_RSA_BITS}"
                ))
            } else {
                Ok(())
            }
        }
        other => Err(format!(
            "the CSR's key type ({other}) is not supported; use P-256, P-384, Ed25519 or RSA"
        )),
    }
}

fn check_extension(
    critical: bool,
    ext: &ParsedExtension<'_>,
    spiffe_id: &SpiffeId,
    dns_names: &[DnsName],
) -> Result<(), String> {
    match ext {
        ParsedExtension::SubjectAlternativeName(san) => {
            let wanted = spiffe_id.to_string();
            let mut uris = 0;
            for name in &san.general_names {
                match name {
                    GeneralName::URI(uri) => {
                        uris += 1;
                        if *uri != wanted {
                            return Err(format!(
                                "the CSR names `{}`, but your SPIFFE ID is {wanted}; an SVID carries only its holder's own",
                                uri.chars().take(256).collect::<String>()
                            ));
                        }
                    }
                    GeneralName::DNSName(dns) => {
                        let asked = DnsName::parse(dns).ok();
                        if !asked.is_some_and(|d| dns_names.contains(&d)) {
                            return Err(format!(
                                "the CSR names DNS name `{}`, which the request's `dns_names` does not ask for",
                                dns.chars().take(256).collect::<String>()
                            ));
                        }
                    }
                    _ => {
                        return Err(
                            "the CSR asks for a subject alternative name that is neither the SPIFFE ID nor a DNS name".to_owned(),
                        )
                    }
                }
            }
            if uris > 1 {
                return Err(format!(
                    "the CSR names {uris} URIs; an X.509-SVID has exactly one, its SPIFFE ID"
                ));
            }
            Ok(())
        }
        ParsedExtension::BasicConstraints(bc) if bc.ca => {
            Err("the CSR asks to be a CA; an SVID is never one".to_owned())
        }
        ParsedExtension::BasicConstraints(_) => Ok(()),
        ParsedExtension::KeyUsage(ku) if ku.key_cert_sign() || ku.crl_sign() => {
            Err("the CSR asks for keyCertSign or cRLSign; an SVID signs no certificates".to_owned())
        }
        ParsedExtension::KeyUsage(_) | ParsedExtension::ExtendedKeyUsage(_) => Ok(()),
        ParsedExtension::NameConstraints(_) => {
            Err("the CSR asks for name constraints, which only a CA carries".to_owned())
        }
        ParsedExtension::ParseError { .. } => {
            Err("the CSR requests an extension that cannot be parsed".to_owned())
        }
        _ if critical => {
            Err("the CSR asks for a critical extension Vern does not grant".to_owned())
        }
        // Vern writes an SVID's extensions itself; other non-critical
        // requests are simply not granted.
        _ => Ok(()),
    }
}
