//! Encryption of unseal shares to operators' age recipients, so each share
//! leaves Vern readable only by its operator, with the standard `age` tool.

use std::str::FromStr;

/// Why an age recipient or encryption was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AgeError {
    /// The recipient string is not an X25519 age recipient.
    #[error("`{0}` is not an age recipient (expected `age1…`)")]
    Recipient(String),
    /// Encryption failed.
    #[error("age encryption failed: {0}")]
    Encrypt(String),
}

/// A parsed X25519 age recipient (`age1…`).
#[derive(Clone)]
pub struct AgeRecipient(age::x25519::Recipient);

impl AgeRecipient {
    /// Parses `age1…`.
    pub fn parse(s: &str) -> Result<Self, AgeError> {
        let trimmed = s.trim();
        age::x25519::Recipient::from_str(trimmed)
            .map(Self)
            .map_err(|_| AgeError::Recipient(trimmed.chars().take(80).collect()))
    }

    /// Encrypts `plaintext` to this recipient as an ASCII-armored age file.
    pub fn encrypt_armored(&self, plaintext: &[u8]) -> Result<String, AgeError> {
        age::encrypt_and_armor(&self.0, plaintext).map_err(|e| AgeError::Encrypt(e.to_string()))
    }
}

impl std::fmt::Debug for AgeRecipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AgeRecipient({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    #[test]
    fn round_trip_through_an_identity() {
        let identity = age::x25519::Identity::generate();
        let recipient = AgeRecipient::parse(&identity.to_public().to_string()).unwrap();
        let armored = recipient.encrypt_armored(b"share bytes").unwrap();
        assert!(armored.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
        let plain = age::decrypt(&identity, armored.as_bytes()).unwrap();
        assert_eq!(plain, b"share bytes");
        assert!(!identity.to_string().expose_secret().is_empty());
    }

    #[test]
    fn bad_recipients_are_refused() {
        for bad in ["", "age1", "ssh-ed25519 AAAA", "AGE-SECRET-KEY-1XYZ"] {
            assert!(AgeRecipient::parse(bad).is_err(), "{bad}");
        }
    }
}
