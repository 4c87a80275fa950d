//! Digests as Vern names artifacts by them: SHA-256 only, lowercase hex,
//! parsed once so that code holding a [`Sha256Digest`] never re-checks it.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::AttestError;

/// A SHA-256 digest: 64 lowercase hex digits.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Digest(String);

impl Sha256Digest {
    /// Parses 64 lowercase hex digits, or the same after `sha256:`.
    pub fn parse(s: &str) -> Result<Self, AttestError> {
        let hex = s.strip_prefix("sha256:").unwrap_or(s);
        Self::parse_hex(hex).ok_or_else(|| {
            AttestError::BadDigest(format!(
                "digest `{}` is not `sha256:` followed by 64 lowercase hex digits",
                shown(s)
            ))
        })
    }

    /// Parses 64 lowercase hex digits (no algorithm prefix).
    pub fn parse_hex(hex: &str) -> Option<Self> {
        let ok = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| Self(hex.to_owned()))
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(hex::encode(Sha256::digest(bytes)))
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Sha256Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Sha256Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An artifact named for signing: `NAME@sha256:HEX`, such as
/// `registry.example/acme/web@sha256:…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectRef {
    /// The artifact's name (an image reference without tag, a file name).
    pub name: String,
    /// Its digest.
    pub digest: Sha256Digest,
}

impl SubjectRef {
    /// Parses `NAME@sha256:HEX`; the name is non-empty, at most 1024 bytes
    /// and free of whitespace and control characters.
    pub fn parse(s: &str) -> Result<Self, AttestError> {
        let bad = |why: &str| AttestError::BadDigest(format!("subject `{}` {why}", shown(s)));
        let Some((name, digest)) = s.rsplit_once('@') else {
            return Err(bad("is not NAME@sha256:DIGEST"));
        };
        if name.is_empty() || name.len() > 1024 {
            return Err(bad("needs a name of 1 to 1024 bytes before `@`"));
        }
        if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("has whitespace or a control character in its name"));
        }
        if !digest.starts_with("sha256:") {
            return Err(bad("must name its digest as `sha256:HEX`"));
        }
        Ok(Self {
            name: name.to_owned(),
            digest: Sha256Digest::parse(digest)?,
        })
    }
}

impl fmt::Display for SubjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.digest)
    }
}

/// Input echoed in an error, cut short and with control characters escaped.
pub(crate) fn shown(s: &str) -> String {
    s.chars().take(100).flat_map(char::escape_default).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests() {
        let hex = "a".repeat(64);
        assert_eq!(Sha256Digest::parse(&hex).unwrap().hex(), hex);
        assert_eq!(
            Sha256Digest::parse(&format!("sha256:{hex}"))
                .unwrap()
                .to_string(),
            format!("sha256:{hex}")
        );
        for bad in [
            String::new(),
            "A".repeat(64),
            "a".repeat(63),
            "a".repeat(65),
            format!("sha512:{hex}"),
            format!("sha256:{}", "g".repeat(64)),
        ] {
            assert!(
                matches!(Sha256Digest::parse(&bad), Err(AttestError::BadDigest(_))),
                "{bad}"
            );
        }
        assert_eq!(
            Sha256Digest::of(b"").hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn subjects() {
        let hex = "b".repeat(64);
        let s = SubjectRef::parse(&format!("reg.example/acme/web@sha256:{hex}")).unwrap();
        assert_eq!(s.name, "reg.example/acme/web");
        assert_eq!(s.digest.hex(), hex);
        for bad in [
            format!("@sha256:{hex}"),
            format!("web@{hex}"),
            "web@sha256:xyz".to_owned(),
            format!("we b@sha256:{hex}"),
            "web".to_owned(),
        ] {
            assert!(SubjectRef::parse(&bad).is_err(), "{bad}");
        }
    }
}
