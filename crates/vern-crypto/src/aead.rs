//! AES-256-GCM with a random 96-bit nonce per message and caller-supplied
//! associated data. The sealed form is `nonce || ciphertext || tag`.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use rand::RngCore;

use crate::secret::SecretBytes;
use crate::KEY_LEN;

/// Nonce length of the sealed form.
pub const NONCE_LEN: usize = 12;
/// Authentication tag length of the sealed form.
pub const TAG_LEN: usize = 16;

/// Why sealing or opening failed. Deliberately uninformative about the
/// cause of an authentication failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AeadError {
    /// The ciphertext is shorter than a nonce and a tag.
    #[error("ciphertext is truncated")]
    Truncated,
    /// Wrong key, wrong associated data, or modified ciphertext.
    #[error("ciphertext failed authentication")]
    Authentication,
    /// A key of the wrong length was supplied.
    #[error("a data key must be {KEY_LEN} bytes, got {0}")]
    KeyLength(usize),
}

/// A 256-bit AES-GCM key, zeroized on drop.
#[derive(Clone)]
pub struct DataKey {
    bytes: SecretBytes,
    cipher: Aes256Gcm,
}

impl DataKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        // PANIC SAFETY: `random(KEY_LEN)` always yields exactly KEY_LEN bytes.
        #[allow(clippy::expect_used)]
        Self::from_bytes(SecretBytes::random(KEY_LEN)).expect("key length is fixed")
    }

    /// Wraps existing key bytes, which must be 32 bytes long.
    pub fn from_bytes(bytes: SecretBytes) -> Result<Self, AeadError> {
        if bytes.len() != KEY_LEN {
            return Err(AeadError::KeyLength(bytes.len()));
        }
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(bytes.expose()));
        Ok(Self { bytes, cipher })
    }

    /// The key bytes, for wrapping under another key.
    pub fn secret(&self) -> &SecretBytes {
        &self.bytes
    }

    /// Encrypts `plaintext`, binding it to `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let payload = Payload {
            msg: plaintext,
            aad,
        };
        // AES-GCM encryption fails only for inputs beyond 64 GiB, which the
        // request body limits rule out long before this point.
        let ct = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Decrypts a sealed message, checking it was sealed with this key and
    /// exactly this `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<SecretBytes, AeadError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(AeadError::Truncated);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
            .map(SecretBytes::new)
            .map_err(|_| AeadError::Authentication)
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wrong_aad_fails() {
        let key = DataKey::generate();
        let sealed = key.seal(b"tenant-a/path/1", b"value");
        assert_eq!(
            key.open(b"tenant-b/path/1", &sealed),
            Err(AeadError::Authentication)
        );
        assert_eq!(
            key.open(b"tenant-a/path/1", &sealed).unwrap().expose(),
            b"value"
        );
    }

    #[test]
    fn wrong_key_and_truncation_fail() {
        let sealed = DataKey::generate().seal(b"", b"value");
        assert_eq!(
            DataKey::generate().open(b"", &sealed),
            Err(AeadError::Authentication)
        );
        assert_eq!(
            DataKey::generate().open(b"", &sealed[..10]),
            Err(AeadError::Truncated)
        );
        assert!(DataKey::from_bytes(SecretBytes::new(vec![0; 31])).is_err());
    }

    #[test]
    fn nonces_differ() {
        let key = DataKey::generate();
        assert_ne!(key.seal(b"", b"x"), key.seal(b"", b"x"));
    }

    proptest! {
        #[test]
        fn round_trip(aad in proptest::collection::vec(any::<u8>(), 0..64),
                      msg in proptest::collection::vec(any::<u8>(), 0..512),
                      flip in any::<usize>()) {
            let key = DataKey::generate();
            let mut sealed = key.seal(&aad, &msg);
            let opened = key.open(&aad, &sealed).unwrap();
            prop_assert_eq!(opened.expose(), &msg[..]);
            let i = flip % sealed.len();
            sealed[i] ^= 1;
            prop_assert!(key.open(&aad, &sealed).is_err());
        }
    }
}
