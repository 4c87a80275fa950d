//! Storage keys.

use std::fmt;

/// Longest storage key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 2048;

/// Why a storage key was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Empty key.
    #[error("storage key must not be empty")]
    Empty,
    /// Longer than [`MAX_KEY_LEN`].
    #[error("storage key is {0} bytes; the limit is {MAX_KEY_LEN}")]
    TooLong(usize),
    /// Contains a control character or U+10FFFF (reserved as the range end).
    #[error("storage key contains the forbidden character {0:?}")]
    BadChar(char),
}

/// A storage key: non-empty UTF-8 of at most 2048 bytes, without control
/// characters. Keys sort bytewise in every backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(String);

impl Key {
    /// Checks and wraps a key.
    pub fn new(s: impl Into<String>) -> Result<Self, KeyError> {
        let s = s.into();
        if s.is_empty() {
            return Err(KeyError::Empty);
        }
        if s.len() > MAX_KEY_LEN {
            return Err(KeyError::TooLong(s.len()));
        }
        if let Some(ch) = s.chars().find(|c| c.is_control() || *c == '\u{10FFFF}') {
            return Err(KeyError::BadChar(ch));
        }
        Ok(Self(s))
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert!(Key::new("core/keyring").is_ok());
        assert!(Key::new("ünïcode/ok").is_ok());
        assert_eq!(Key::new(""), Err(KeyError::Empty));
        assert_eq!(Key::new("a\0b"), Err(KeyError::BadChar('\0')));
        assert_eq!(Key::new("a\nb"), Err(KeyError::BadChar('\n')));
        assert_eq!(
            Key::new("a\u{10FFFF}"),
            Err(KeyError::BadChar('\u{10FFFF}'))
        );
        assert_eq!(Key::new("x".repeat(2049)), Err(KeyError::TooLong(2049)));
    }
}
