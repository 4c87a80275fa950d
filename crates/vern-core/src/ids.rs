//! Identifiers that are parsed once and trusted afterwards: holding a
//! [`TenantId`] means the string was checked, so no code re-validates it.

use std::fmt;

use serde::Serialize;

/// Why an identifier was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The identifier was empty.
    #[error("{kind} must not be empty")]
    Empty {
        /// Which identifier.
        kind: &'static str,
    },
    /// The identifier was longer than allowed.
    #[error("{kind} is {len} bytes long; the limit is {max}")]
    TooLong {
        /// Which identifier.
        kind: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The identifier held a character outside its alphabet.
    #[error("{kind} `{shown}` contains {ch:?}; use lowercase letters, digits, `-` and `_`, starting with a letter or digit")]
    BadChar {
        /// Which identifier.
        kind: &'static str,
        /// The identifier, with control characters escaped.
        shown: String,
        /// The offending character.
        ch: char,
    },
}

const NAME_MAX: usize = 63;

/// Checks the shared alphabet of scope names: DNS-label-like, so a name is
/// safe in paths, NATS subjects, SPIFFE IDs and Kubernetes labels alike.
fn check_name(kind: &'static str, s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if s.len() > NAME_MAX {
        return Err(IdError::TooLong {
            kind,
            len: s.len(),
            max: NAME_MAX,
        });
    }
    for (i, ch) in s.chars().enumerate() {
        let ok =
            ch.is_ascii_lowercase() || ch.is_ascii_digit() || (i > 0 && (ch == '-' || ch == '_'));
        if !ok {
            return Err(IdError::BadChar {
                kind,
                shown: s.escape_default().to_string(),
                ch,
            });
        }
    }
    Ok(())
}

macro_rules! scope_name {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Parses a name, rejecting anything outside `[a-z0-9][a-z0-9_-]{0,62}`.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                check_name($kind, s)?;
                Ok(Self(s.to_owned()))
            }

            /// The name as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }
    };
}

scope_name!(
    /// A tenant: the unit of hard isolation.
    TenantId,
    "tenant name"
);
scope_name!(
    /// A project inside a tenant.
    ProjectId,
    "project name"
);
scope_name!(
    /// An environment (e.g. `prod`) inside a project.
    EnvironmentId,
    "environment name"
);

/// A fully qualified environment: the scope a service lives in and the scope
/// every tenant resource belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Scope {
    /// The tenant.
    pub tenant: TenantId,
    /// The project inside the tenant.
    pub project: ProjectId,
    /// The environment inside the project.
    pub environment: EnvironmentId,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.tenant, self.project, self.environment)
    }
}

/// The correlation id of one request, carried from the edge through logs and
/// audit records.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct RequestId(String);

impl RequestId {
    /// The longest caller-supplied id that is accepted.
    pub const MAX_LEN: usize = 128;

    /// Accepts a caller-supplied id if it is 1–128 visible ASCII characters,
    /// so it can be echoed in headers and logs without escaping.
    pub fn parse(s: &str) -> Option<Self> {
        let ok =
            !s.is_empty() && s.len() <= Self::MAX_LEN && s.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| Self(s.to_owned()))
    }

    /// A fresh random id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(input: &str, ok: bool) {
        assert_eq!(TenantId::parse(input).is_ok(), ok, "input {input:?}");
    }

    #[test]
    fn tenant_names() {
        for good in ["acme", "a", "team-1", "x_y", "0abc"] {
            check(good, true);
        }
        for bad in [
            "",
            "Acme",
            "-a",
            "_a",
            "a/b",
            "a b",
            "a..b",
            "é",
            &"a".repeat(64),
        ] {
            check(bad, false);
        }
    }

    #[test]
    fn errors_name_the_problem() {
        let err = ProjectId::parse("Bad").unwrap_err().to_string();
        assert!(err.contains("project name `Bad`"), "{err}");
        assert!(err.contains("'B'"), "{err}");
    }

    #[test]
    fn request_ids() {
        assert!(RequestId::parse("abc-123").is_some());
        assert!(RequestId::parse("").is_none());
        assert!(RequestId::parse("a b").is_none());
        assert!(RequestId::parse("a\nb").is_none());
        assert!(RequestId::parse(&"x".repeat(129)).is_none());
        assert_ne!(RequestId::generate(), RequestId::generate());
    }

    proptest! {
        #[test]
        fn parsed_names_round_trip_and_stay_in_alphabet(s in "\\PC{0,80}") {
            if let Ok(id) = TenantId::parse(&s) {
                prop_assert_eq!(id.as_str(), s.as_str());
                prop_assert!(s.len() <= 63);
                prop_assert!(s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'));
            }
        }
    }
}
