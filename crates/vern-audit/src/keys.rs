//! The audit keys: an HMAC key for sensitive values and an Ed25519 key for
//! checkpoints, one pair per deployment, stored behind the barrier.

use std::fmt;

use crate::backing::LogStore;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use vern_crypto::SecretBytes;
use vern_seal::{Barrier, BarrierWrite, Expect, SealError};
use zeroize::Zeroizing;

use crate::layout::{KEYS, KEYS_NAME, KEYS_VIEW};
use crate::record::Checkpoint;
use crate::AuditError;

const KEY_PREFIX: &str = "ed25519:";

/// The stored form; wiped when dropped.
#[derive(Serialize, Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
struct KeyDoc {
    hmac: String,
    signing: String,
}

/// The deployment's audit keys, in memory only while unsealed.
pub struct AuditKeys {
    hmac: SecretBytes,
    signing: SigningKey,
}

impl fmt::Debug for AuditKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditKeys")
            .field("public", &self.public_key().to_string())
            .finish_non_exhaustive()
    }
}

/// Whether any record is stored. Records are in clear, so this asks the
/// store itself (the one exception to reaching storage through a view).
impl AuditKeys {
    /// Fresh random keys, for tests and benchmarks that need no barrier.
    pub fn generate() -> Self {
        let seed = Zeroizing::new(rand::random::<[u8; 32]>());
        Self {
            hmac: SecretBytes::random(32),
            signing: SigningKey::from_bytes(&seed),
        }
    }

    /// Reads the keys through the audit's view of the barrier
    /// ([`KEYS_VIEW`]), creating them on first use. Two processes racing to
    /// create them settle on one pair (compare-and-set). `store` is the
    /// store of the (clear) records, asked only whether the log is empty.
    pub async fn load_or_create(barrier: &Barrier, store: &LogStore) -> Result<Self, AuditError> {
        let view = barrier.view(KEYS_VIEW)?;
        for _ in 0..3 {
            if let Some(plain) = view.get(KEYS_NAME).await? {
                return Self::decode(plain.value.expose());
            }
            // New keys only for a new log: keys that vanish under an
            // existing chain mean tampering, and fresh ones would sign
            // whatever the chain has been rewritten to.
            if store.has_records().await? {
                return Err(AuditError::Corrupt(format!(
                    "{KEYS} is missing but the audit log has records; restore it from a backup"
                )));
            }
            let fresh = Self::generate();
            let doc = KeyDoc {
                hmac: B64.encode(fresh.hmac.expose()),
                signing: B64.encode(fresh.signing.to_bytes()),
            };
            let bytes =
                serde_json::to_vec(&doc).map_err(|_| AuditError::Corrupt(KEYS.to_owned()))?;
            let write = BarrierWrite {
                key: KEYS_NAME.to_owned(),
                value: Some(SecretBytes::new(bytes)),
                expect: Expect::Absent,
            };
            match view.commit(vec![write]).await {
                Ok(_) => return Ok(fresh),
                Err(SealError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(AuditError::Contention(3))
    }

    fn decode(bytes: &[u8]) -> Result<Self, AuditError> {
        let corrupt = || AuditError::Corrupt(KEYS.to_owned());
        let doc: KeyDoc = serde_json::from_slice(bytes).map_err(|_| corrupt())?;
        let hmac = SecretBytes::new(B64.decode(doc.hmac.as_bytes()).map_err(|_| corrupt())?);
        let seed = Zeroizing::new(B64.decode(doc.signing.as_bytes()).map_err(|_| corrupt())?);
        let seed: Zeroizing<[u8; 32]> =
            Zeroizing::new(seed.as_slice().try_into().map_err(|_| corrupt())?);
        Ok(Self {
            hmac,
            signing: SigningKey::from_bytes(&seed),
        })
    }

    /// `hmac-sha256:<hex>` of `value` under the deployment's key.
    pub fn hmac(&self, value: &[u8]) -> String {
        // HMAC accepts keys of any length.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(self.hmac.expose()) else {
            return String::new();
        };
        mac.update(value);
        format!("hmac-sha256:{}", hex::encode(mac.finalize().into_bytes()))
    }

    /// The checkpoint verification key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key())
    }

    /// Signs `message`, returning base64url.
    fn sign(&self, message: &[u8]) -> String {
        B64.encode(self.signing.sign(message).to_bytes())
    }

    /// The signature of `checkpoint` under this key (base64url).
    pub fn sign_checkpoint(&self, checkpoint: &Checkpoint) -> String {
        self.sign(&checkpoint.signed_bytes())
    }
}

/// A checkpoint verification key, written `ed25519:<base64url>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses `ed25519:<base64url>` (the prefix is optional).
    pub fn parse(text: &str) -> Result<Self, AuditError> {
        let text = text.trim();
        let body = text.strip_prefix(KEY_PREFIX).unwrap_or(text);
        let bad = || {
            AuditError::Invalid(format!(
                "`{text}` is not an audit public key; expected {KEY_PREFIX}<32 bytes base64url>"
            ))
        };
        let bytes: [u8; 32] = B64
            .decode(body)
            .map_err(|_| bad())?
            .try_into()
            .map_err(|_| bad())?;
        VerifyingKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|_| bad())
    }

    /// Whether `signature` (base64url) is this key's signature of `message`.
    pub fn verifies(&self, message: &[u8], signature: &str) -> bool {
        let Ok(bytes) = B64.decode(signature) else {
            return false;
        };
        let Ok(sig) = ed25519_dalek::Signature::from_slice(&bytes) else {
            return false;
        };
        self.0.verify(message, &sig).is_ok()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{KEY_PREFIX}{}", B64.encode(self.0.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_keys_round_trip_and_signatures_verify() {
        let keys = AuditKeys::generate();
        let public = PublicKey::parse(&keys.public_key().to_string()).unwrap();
        assert_eq!(public, keys.public_key());
        let sig = keys.sign(b"message");
        assert!(public.verifies(b"message", &sig));
        assert!(!public.verifies(b"messagf", &sig));
        assert!(!AuditKeys::generate()
            .public_key()
            .verifies(b"message", &sig));
        assert!(PublicKey::parse("ed25519:short").is_err());
    }

    #[test]
    fn hmacs_are_keyed_and_debug_shows_no_secret() {
        let a = AuditKeys::generate();
        let b = AuditKeys::generate();
        assert_eq!(a.hmac(b"tok"), a.hmac(b"tok"));
        assert_ne!(a.hmac(b"tok"), b.hmac(b"tok"));
        assert!(a.hmac(b"tok").starts_with("hmac-sha256:"));
        let debug = format!("{a:?}");
        assert!(!debug.contains(&B64.encode(a.hmac.expose())));
    }
}
