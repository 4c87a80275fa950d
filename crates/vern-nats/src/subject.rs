//! NATS subjects as Vern accepts them in declarations: dot-separated
//! tokens, `*` for one whole token, `>` for the rest as the last token.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::NatsError;

/// The longest subject accepted; nats-server's own default payload limits
/// leave far more room, but a declaration has no use for longer names.
const MAX_LEN: usize = 256;

/// A validated subject or subject pattern.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Subject(String);

impl Subject {
    /// Parses a subject: 1–256 visible ASCII characters, no empty token,
    /// `*` and `>` only as whole tokens, `>` only last.
    pub fn parse(s: &str) -> Result<Self, NatsError> {
        let bad =
            |why: &str| NatsError::BadSubject(format!("subject `{}` {why}", s.escape_default()));
        if s.is_empty() || s.len() > MAX_LEN {
            return Err(bad("must be 1–256 characters"));
        }
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad("may hold only visible ASCII characters, no spaces"));
        }
        let tokens: Vec<&str> = s.split('.').collect();
        let last = tokens.len().saturating_sub(1);
        for (i, t) in tokens.iter().enumerate() {
            if t.is_empty() {
                return Err(bad("has an empty token"));
            }
            if t.len() > 1 && (t.contains('*') || t.contains('>')) {
                return Err(bad(
                    "uses `*` or `>` inside a token; they stand for whole tokens",
                ));
            }
            if *t == ">" && i != last {
                return Err(bad("has `>` before its last token"));
            }
        }
        Ok(Self(s.to_owned()))
    }

    /// The subject as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the subject (or any subject the pattern covers) is a
    /// privileged one: every `$` namespace is the server's own (`$SYS.>`,
    /// the JetStream API `$JS.API.>`, `$KV`, …), and a pattern that starts
    /// with a wildcard covers them all. Vern's Cedar model applies the same
    /// rule to its `NatsSubject` resources.
    pub fn is_privileged(&self) -> bool {
        let first = self.0.split('.').next().unwrap_or_default();
        first == "*" || first == ">" || first.starts_with('$')
    }

    /// Whether a message published on some subject could be matched by both
    /// patterns: the question a path report asks of a publisher and a
    /// subscriber.
    pub fn overlaps(&self, other: &Subject) -> bool {
        let mut a = self.0.split('.');
        let mut b = other.0.split('.');
        loop {
            match (a.next(), b.next()) {
                (None, None) => return true,
                (Some(">"), _) | (_, Some(">")) => return true,
                (Some(x), Some(y)) => {
                    if x != y && x != "*" && y != "*" {
                        return false;
                    }
                }
                _ => return false,
            }
        }
    }

    /// Whether every subject `other` matches is matched by this pattern.
    pub fn covers(&self, other: &Subject) -> bool {
        let mut a = self.0.split('.');
        let mut b = other.0.split('.');
        loop {
            match (a.next(), b.next()) {
                (None, None) => return true,
                (Some(">"), Some(_)) => return true,
                (Some("*"), Some(y)) if y != ">" => {}
                (Some(x), Some(y)) if x == y => {}
                _ => return false,
            }
        }
    }
}

impl TryFrom<String> for Subject {
    type Error = NatsError;
    fn try_from(s: String) -> Result<Self, NatsError> {
        Self::parse(&s)
    }
}

impl From<Subject> for String {
    fn from(s: Subject) -> String {
        s.0
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        for ok in [
            "orders",
            "orders.>",
            "orders.*.created",
            "$SYS.>",
            ">",
            "_INBOX.a.>",
        ] {
            assert!(Subject::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a..b", ".a", "a.", "a.>.b", "a.b*", "a b", "a.>x", "ä"] {
            assert!(Subject::parse(bad).is_err(), "{bad}");
        }
        assert!(Subject::parse(&"a".repeat(257)).is_err());
    }

    #[test]
    fn privileged() {
        let p = |s: &str| Subject::parse(s).unwrap().is_privileged();
        assert!(p("$SYS.>"));
        assert!(p("$JS.API.>"));
        assert!(p(">"));
        assert!(p("*.x"));
        assert!(!p("orders.>"));
        assert!(!p("SYS.x"));
    }

    #[test]
    fn overlap_and_cover() {
        let s = |x: &str| Subject::parse(x).unwrap();
        assert!(s("orders.>").overlaps(&s("orders.created")));
        assert!(s("orders.*").overlaps(&s("*.created")));
        assert!(!s("orders.*").overlaps(&s("orders.a.b")));
        assert!(!s("orders").overlaps(&s("billing")));
        assert!(s("orders.>").covers(&s("orders.a.*")));
        assert!(!s("orders.*").covers(&s("orders.>")));
        assert!(!s("orders.a").covers(&s("orders.*")));
        assert!(s("*.a").covers(&s("x.a")));
    }
}
