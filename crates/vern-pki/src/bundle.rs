//! The SPIFFE trust bundle: a JWK set whose `x509-svid` keys carry the
//! trust anchors (`x5c`) and whose `jwt-svid` keys verify JWT-SVIDs, with
//! `spiffe_sequence` and `spiffe_refresh_hint` (SPIFFE Trust Domain and
//! Bundle specification).

use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use base64::Engine as _;
use serde_json::{json, Value};
use x509_parser::public_key::PublicKey;

use crate::PkiError;

/// The `x509-svid` entry of a trust anchor (a root certificate, DER).
pub(crate) fn x509_jwk(root_der: &[u8]) -> Result<Value, PkiError> {
    let corrupt = || PkiError::corrupt("authority");
    let (_, cert) = x509_parser::parse_x509_certificate(root_der).map_err(|_| corrupt())?;
    let spki = cert.public_key();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    let mut jwk = match spki.parsed().map_err(|_| corrupt())? {
        PublicKey::EC(point) => {
            let (crv, len) = match curve.as_deref() {
                Some("1.2.840.10045.3.1.7") => ("P-256", 32),
                Some("1.3.132.0.34") => ("P-384", 48),
                _ => return Err(corrupt()),
            };
            let data = point.data();
            let (Some(x), Some(y)) = (data.get(1..=len), data.get(len + 1..=2 * len)) else {
                return Err(corrupt());
            };
            json!({"kty": "EC", "crv": crv, "x": B64URL.encode(x), "y": B64URL.encode(y)})
        }
        PublicKey::RSA(rsa) => json!({
            "kty": "RSA",
            "n": B64URL.encode(unsigned(rsa.modulus)),
            "e": B64URL.encode(unsigned(rsa.exponent)),
        }),
        _ if spki.algorithm.algorithm.to_id_string() == "1.3.101.112" => json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": B64URL.encode(spki.subject_public_key.data.as_ref()),
        }),
        _ => return Err(corrupt()),
    };
    if let Some(map) = jwk.as_object_mut() {
        map.insert("use".to_owned(), json!("x509-svid"));
        map.insert("x5c".to_owned(), json!([B64.encode(root_der)]));
    }
    Ok(jwk)
}

/// A big-endian unsigned integer without its leading zero bytes (JWK
/// integers are unsigned and minimal).
fn unsigned(bytes: &[u8]) -> &[u8] {
    let first = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    bytes.get(first..).unwrap_or(bytes)
}

/// PEM of DER certificates, one block each.
pub(crate) fn pem_of(ders: &[&[u8]]) -> String {
    let mut out = String::new();
    for der in ders {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let b64 = B64.encode(der);
        for line in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}
