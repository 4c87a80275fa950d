//! DNS names an SVID may carry besides its SPIFFE ID (for clients that
//! check a server's name rather than its SPIFFE ID).

use std::fmt;

/// The longest DNS name, in bytes.
const MAX_LEN: usize = 253;

/// A DNS name: lowercase letters, digits and `-` in dot-separated labels of
/// 1 to 63 bytes, no label starting or ending with `-`, at most 253 bytes.
/// Names are lowercased on the way in, so a policy that names
/// `api.example.com` also decides `API.example.com`. Wildcards, IP
/// addresses and a trailing dot are refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DnsName(String);

impl DnsName {
    /// Parses (and lowercases) a DNS name; the error says what is wrong.
    pub fn parse(s: &str) -> Result<Self, String> {
        let shown = || {
            s.chars()
                .take(64)
                .collect::<String>()
                .escape_default()
                .to_string()
        };
        let name = s.to_ascii_lowercase();
        if name.is_empty() || name.len() > MAX_LEN {
            return Err(format!(
                "DNS name `{}` must be 1 to {MAX_LEN} bytes long",
                shown()
            ));
        }
        if name.starts_with("*.") || name.contains('*') {
            return Err(format!(
                "DNS name `{}` is a wildcard; SVIDs carry exact names only",
                shown()
            ));
        }
        for label in name.split('.') {
            let ok = !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return Err(format!(
                    "DNS name `{}` has a bad label: use letters, digits and `-` in labels of 1 to 63 characters, not starting or ending with `-`",
                    shown()
                ));
            }
        }
        if name
            .rsplit('.')
            .next()
            .is_some_and(|top| top.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(format!(
                "`{}` looks like an IP address; SVIDs carry DNS names only",
                shown()
            ));
        }
        Ok(Self(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        assert_eq!(
            DnsName::parse("API.Example.com").unwrap().as_str(),
            "api.example.com"
        );
        assert!(DnsName::parse("localhost").is_ok());
        assert!(DnsName::parse("a-1.b2.example").is_ok());
        for bad in [
            "",
            "*.example.com",
            "a.*.com",
            "example.com.",
            "-a.example",
            "a-.example",
            "a..b",
            "a_b.example",
            "127.0.0.1",
            "exa mple.com",
            &format!("{}.com", "a".repeat(64)),
            &"a.".repeat(127),
        ] {
            assert!(DnsName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
