//! JWS compact serialization (RFC 7515) for the two accepted algorithms.
//! The framing lives here; signing and verification are ed25519-dalek's
//! and p256's.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use ed25519_dalek::Signer as _;
use p256::ecdsa::signature::Verifier as _;
use serde_json::{Map, Value};

use crate::jwk::{Alg, PublicJwk};
use crate::AuthError;

/// Longest compact JWS accepted, in bytes; anything longer is refused
/// before any parsing.
pub const MAX_JWS_LEN: usize = 8192;

/// A parsed, not yet verified, compact JWS.
#[derive(Debug)]
pub struct Unverified {
    /// The protected header.
    pub header: Map<String, Value>,
    /// The claims.
    pub claims: Map<String, Value>,
    signing_input: String,
    signature: Vec<u8>,
}

fn decode_json(part: &str, what: &str) -> Result<Map<String, Value>, AuthError> {
    let bytes = B64
        .decode(part)
        .map_err(|_| AuthError::Malformed(format!("the {what} is not base64url")))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(AuthError::Malformed(format!(
            "the {what} is not a JSON object"
        ))),
    }
}

impl Unverified {
    /// Splits and decodes a compact JWS. Refuses anything but exactly three
    /// parts, JSON-object header and payload, and a non-empty signature.
    pub fn parse(token: &str) -> Result<Self, AuthError> {
        Self::parse_within(token, MAX_JWS_LEN)
    }

    /// Like [`Unverified::parse`], for tokens of other issuers whose size
    /// Vern does not control: refuses anything longer than `max` bytes.
    pub fn parse_within(token: &str, max: usize) -> Result<Self, AuthError> {
        if token.len() > max {
            return Err(AuthError::Malformed(format!("longer than {max} bytes")));
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed(
                "a JWS has exactly three dot-separated parts".to_owned(),
            ));
        };
        let header = decode_json(h, "header")?;
        let claims = decode_json(p, "payload")?;
        let signature = B64
            .decode(s)
            .map_err(|_| AuthError::Malformed("the signature is not base64url".to_owned()))?;
        if signature.is_empty() {
            return Err(AuthError::Malformed("the signature is empty".to_owned()));
        }
        if header.contains_key("crit") {
            return Err(AuthError::Malformed(
                "critical header parameters are not supported".to_owned(),
            ));
        }
        Ok(Self {
            header,
            claims,
            signing_input: format!("{h}.{p}"),
            signature,
        })
    }

    /// The bytes the signature covers: `header.payload` as sent.
    pub fn signing_input(&self) -> &[u8] {
        self.signing_input.as_bytes()
    }

    /// The signature's bytes.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// A string header member.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header.get(name).and_then(Value::as_str)
    }

    /// Verifies the signature with `key`. The header's `alg` must name the
    /// key's algorithm (for an Ed25519 key `EdDSA` or `Ed25519`): `none`,
    /// HMAC and anything else are refused.
    pub fn verify(&self, key: &PublicJwk) -> Result<(), AuthError> {
        let alg = self.header_str("alg").unwrap_or("");
        if !key.alg().names().contains(&alg) {
            return Err(AuthError::Algorithm(alg.chars().take(16).collect()));
        }
        let msg = self.signing_input.as_bytes();
        let ok = match key {
            PublicJwk::Ed25519(x) => {
                let vk = ed25519_dalek::VerifyingKey::from_bytes(x)
                    .map_err(|_| AuthError::BadKey("invalid Ed25519 key".to_owned()))?;
                let sig = ed25519_dalek::Signature::from_slice(&self.signature)
                    .map_err(|_| AuthError::Signature)?;
                vk.verify_strict(msg, &sig).is_ok()
            }
            PublicJwk::P256 { .. } => {
                let vk = key.p256()?;
                let sig = p256::ecdsa::Signature::from_slice(&self.signature)
                    .map_err(|_| AuthError::Signature)?;
                vk.verify(msg, &sig).is_ok()
            }
        };
        if ok {
            Ok(())
        } else {
            Err(AuthError::Signature)
        }
    }
}

/// Signs `claims` under `header` (which must name `alg`) with an Ed25519
/// key; returns the compact serialization.
pub fn sign_ed25519(header: &Value, claims: &Value, key: &ed25519_dalek::SigningKey) -> String {
    let h = B64.encode(header.to_string());
    let p = B64.encode(claims.to_string());
    let input = format!("{h}.{p}");
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", B64.encode(sig.to_bytes()))
}

/// Signs with a P-256 key (ES256); used by tests and by clients built on
/// this crate.
pub fn sign_es256(header: &Value, claims: &Value, key: &p256::ecdsa::SigningKey) -> String {
    use p256::ecdsa::signature::Signer as _;
    let h = B64.encode(header.to_string());
    let p = B64.encode(claims.to_string());
    let input = format!("{h}.{p}");
    let sig: p256::ecdsa::Signature = key.sign(input.as_bytes());
    format!("{input}.{}", B64.encode(sig.to_bytes()))
}

/// The public JWK of an Ed25519 signing key.
pub fn ed25519_public(key: &ed25519_dalek::SigningKey) -> PublicJwk {
    PublicJwk::Ed25519(key.verifying_key().to_bytes())
}

/// The public JWK of a P-256 signing key.
pub fn p256_public(key: &p256::ecdsa::SigningKey) -> PublicJwk {
    let point = key.verifying_key().to_encoded_point(false);
    let mut x = [0u8; 32];
    let mut y = [0u8; 32];
    if let (Some(px), Some(py)) = (point.x(), point.y()) {
        x.copy_from_slice(px);
        y.copy_from_slice(py);
    }
    PublicJwk::P256 { x, y }
}

/// The algorithm named by a key, for headers.
pub fn alg_of(key: &PublicJwk) -> Alg {
    key.alg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_and_refuses_tampering_for_both_algorithms() {
        let ed = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let ec = p256::ecdsa::SigningKey::from_slice(&[9u8; 32]).unwrap();
        let claims = json!({"sub": "x"});
        let cases = [
            (
                sign_ed25519(&json!({"alg": "EdDSA"}), &claims, &ed),
                ed25519_public(&ed),
                p256_public(&ec),
            ),
            (
                sign_es256(&json!({"alg": "ES256"}), &claims, &ec),
                p256_public(&ec),
                ed25519_public(&ed),
            ),
        ];
        for (token, right, wrong) in cases {
            let parsed = Unverified::parse(&token).unwrap();
            parsed.verify(&right).unwrap();
            assert!(parsed.verify(&wrong).is_err(), "another key type");
            // Change one payload character.
            let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
            parts[1] = B64.encode(json!({"sub": "y"}).to_string());
            let tampered = Unverified::parse(&parts.join(".")).unwrap();
            assert!(matches!(tampered.verify(&right), Err(AuthError::Signature)));
        }
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bad in [
            "",
            "a",
            "a.b",
            "a.b.c.d",
            "!!.!!.!!",
            "e30.e30.",
            "e30.W10.AA",
            &"a".repeat(9000),
        ] {
            assert!(Unverified::parse(bad).is_err(), "{bad}");
        }
    }
}
