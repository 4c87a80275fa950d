//! JWT-SVIDs (SPIFFE JWT-SVID specification): ES256 tokens whose `sub` is
//! the holder's SPIFFE ID, with `aud`, `exp` and `iat`, the header naming
//! the key (`kid`) and `typ` `JWT`. The P-256 signing keys live in the CA
//! document behind the barrier and rotate with the CA.

use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use vern_crypto::SecretBytes;
use zeroize::Zeroizing;

use crate::PkiError;

/// A JWT-SVID signing key as stored.
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredJwtKey {
    kid: String,
    /// The P-256 scalar, base64; only ever inside the barrier.
    key: String,
    signs_from: u64,
    created: u64,
}

impl StoredJwtKey {
    /// The key id.
    pub(crate) fn kid(&self) -> &str {
        &self.kid
    }
}

/// A loaded JWT-SVID signing key.
pub(crate) struct JwtKey {
    pub(crate) kid: String,
    signing: SigningKey,
    pub(crate) signs_from: u64,
    created: u64,
}

impl JwtKey {
    /// A new key signing from `signs_from`.
    pub(crate) fn generate(now: u64, signs_from: u64) -> Result<StoredJwtKey, PkiError> {
        // A random 32-byte string is a valid scalar with overwhelming
        // probability; the loop only guards the astronomically rare miss.
        for _ in 0..8 {
            let seed = SecretBytes::random(32);
            if let Ok(signing) = SigningKey::from_slice(seed.expose()) {
                return Ok(StoredJwtKey {
                    kid: thumbprint(&signing),
                    key: B64.encode(seed.expose()),
                    signs_from,
                    created: now,
                });
            }
        }
        Err(PkiError::Internal(
            "no JWT-SVID key could be generated".to_owned(),
        ))
    }

    pub(crate) fn load(stored: &StoredJwtKey) -> Result<Self, PkiError> {
        let seed = Zeroizing::new(
            B64.decode(&stored.key)
                .map_err(|_| PkiError::corrupt("authority"))?,
        );
        let signing = SigningKey::from_slice(&seed).map_err(|_| PkiError::corrupt("authority"))?;
        Ok(Self {
            kid: stored.kid.clone(),
            signing,
            signs_from: stored.signs_from,
            created: stored.created,
        })
    }

    pub(crate) fn store(&self) -> StoredJwtKey {
        let seed = Zeroizing::new(self.signing.to_bytes().to_vec());
        StoredJwtKey {
            kid: self.kid.clone(),
            key: B64.encode(&*seed),
            signs_from: self.signs_from,
            created: self.created,
        }
    }

    /// The public key as a bundle entry (`use` `jwt-svid`).
    pub(crate) fn bundle_jwk(&self) -> Value {
        let (x, y) = coordinates(&self.signing);
        json!({
            "use": "jwt-svid",
            "kty": "EC",
            "crv": "P-256",
            "x": x,
            "y": y,
            "kid": self.kid,
        })
    }

    /// A compact JWS (ES256) of `claims`.
    pub(crate) fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": "ES256", "kid": self.kid, "typ": "JWT"});
        let input = format!(
            "{}.{}",
            B64URL.encode(header.to_string()),
            B64URL.encode(claims.to_string())
        );
        let signature: Signature = self.signing.sign(input.as_bytes());
        format!("{input}.{}", B64URL.encode(signature.to_bytes()))
    }
}

fn coordinates(key: &SigningKey) -> (String, String) {
    let point = key.verifying_key().to_encoded_point(false);
    let enc = |c: Option<&p256::FieldBytes>| c.map(|b| B64URL.encode(b)).unwrap_or_default();
    (enc(point.x()), enc(point.y()))
}

/// The RFC 7638 thumbprint of the public key: its key id.
fn thumbprint(key: &SigningKey) -> String {
    let (x, y) = coordinates(key);
    // RFC 7638 §3.2: the required members in lexicographic order, no
    // whitespace.
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    B64URL.encode(vern_crypto::sha256(canonical.as_bytes()))
}
