//! Containers for secret bytes.

use std::fmt;

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Bytes that must never be logged or left in memory: zeroized on drop,
/// redacted in `Debug`, compared in constant time.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Takes ownership of `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// `len` bytes from the operating system's CSPRNG.
    pub fn random(len: usize) -> Self {
        let mut bytes = vec![0u8; len];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// The secret bytes; callers must not copy them into long-lived,
    /// non-zeroizing storage.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl PartialEq for SecretBytes {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for SecretBytes {}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A random bearer credential: `prefix` followed by 256 bits of CSPRNG
/// output in URL-safe base64, so tokens are self-describing in leaked logs
/// and secret scanners can find them.
pub fn random_token(prefix: &str) -> SecretBytes {
    use base64::Engine as _;
    let raw = SecretBytes::random(32);
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw.expose());
    let mut out = Vec::with_capacity(prefix.len() + encoded.len());
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(encoded.as_bytes());
    SecretBytes::new(out)
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = SecretBytes::new(b"hunter2".to_vec());
        assert_eq!(format!("{s:?}"), "[redacted]");
    }

    #[test]
    fn equality_compares_content() {
        assert_eq!(SecretBytes::new(vec![1, 2]), SecretBytes::new(vec![1, 2]));
        assert_ne!(SecretBytes::new(vec![1, 2]), SecretBytes::new(vec![1, 3]));
        assert_ne!(SecretBytes::new(vec![1]), SecretBytes::new(vec![1, 3]));
    }

    #[test]
    fn tokens_are_prefixed_and_distinct() {
        let a = random_token("vern.r.");
        let b = random_token("vern.r.");
        assert!(a.expose().starts_with(b"vern.r."));
        assert_eq!(a.len(), "vern.r.".len() + 43);
        assert_ne!(a, b);
    }
}
