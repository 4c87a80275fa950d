//! The client's address, resolved once per request: the TCP peer, or, when
//! the peer is a trusted proxy, the address that proxy reports in
//! `X-Forwarded-For`. Limits, lockouts, audit records (`source`) and Cedar
//! (`context.source_ip`) all read this one value, so they cannot disagree,
//! and an untrusted caller cannot choose the address it is counted under.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap};
use axum::middleware::Next;
use axum::response::Response;

use crate::limits::Source;
use crate::state::AppState;

/// An IPv4 or IPv6 network in CIDR notation (`10.0.0.0/8`, `fd00::/8`); a
/// bare address is a network of that one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why a CIDR was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The address part is not an IPv4 or IPv6 address.
    #[error("`{0}` is not a network in CIDR notation such as 10.0.0.0/8 or fd00::/8")]
    Address(String),
    /// The prefix length is not a number within the address family's size.
    #[error("`{input}` has an invalid prefix length: it must be a number from 0 to {max}")]
    Prefix {
        /// The text given.
        input: String,
        /// 32 for IPv4, 128 for IPv6.
        max: u8,
    },
    /// Bits beyond the prefix are set, which usually means a typo.
    #[error("`{input}` has host bits set beyond the prefix; did you mean {network}?")]
    HostBits {
        /// The text given.
        input: String,
        /// The network the prefix describes.
        network: String,
    },
}

impl Cidr {
    /// Parses `ADDRESS/PREFIX` or a bare address.
    pub fn parse(s: &str) -> Result<Self, CidrError> {
        let text = s.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network = IpAddr::from_str(addr).map_err(|_| CidrError::Address(text.to_owned()))?;
        let max = match network {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let prefix = match prefix {
            None => max,
            Some(p) => {
                p.parse::<u8>()
                    .ok()
                    .filter(|p| *p <= max)
                    .ok_or_else(|| CidrError::Prefix {
                        input: text.to_owned(),
                        max,
                    })?
            }
        };
        let cidr = Self { network, prefix };
        let masked = cidr.masked(network);
        if masked != network {
            return Err(CidrError::HostBits {
                input: text.to_owned(),
                network: format!("{masked}/{prefix}"),
            });
        }
        Ok(cidr)
    }

    /// Whether `ip` is inside this network. An IPv4-mapped IPv6 address
    /// (`::ffff:10.1.2.3`) counts as the IPv4 address it carries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match (self.network, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                self.masked(ip) == self.network
            }
            _ => false,
        }
    }

    /// `ip` with the bits beyond the prefix cleared (same family assumed).
    fn masked(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((a.to_bits() & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((a.to_bits() & mask).into())
            }
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, CidrError> {
        Self::parse(s)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The resolved client address of a request (`None` when the request came
/// without connection information, as in in-process tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientAddr(pub(crate) Option<IpAddr>);

impl ClientAddr {
    /// Resolves the client address from the TCP peer and the request's
    /// `X-Forwarded-For` headers. The header is read only when the peer is
    /// a trusted proxy; it is walked from the right (the hop nearest to
    /// us), skipping trusted proxies, and the first untrusted address is
    /// the client. If every hop is trusted the leftmost is the client. A
    /// malformed list (an entry that is not a bare IP address) is ignored
    /// as a whole: the peer is the client.
    pub(crate) fn resolve(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[Cidr]) -> Self {
        let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
        let Some(peer) = peer.map(|p| p.to_canonical()) else {
            return Self(None);
        };
        if !is_trusted(peer) {
            return Self(Some(peer));
        }
        let mut hops = Vec::new();
        for value in headers.get_all("x-forwarded-for") {
            let Ok(value) = value.to_str() else {
                return Self(Some(peer));
            };
            hops.extend(value.split(','));
        }
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Ok(ip) = IpAddr::from_str(hop.trim()) else {
                return Self(Some(peer));
            };
            client = ip.to_canonical();
            if !is_trusted(client) {
                break;
            }
        }
        Self(Some(client))
    }

    /// The address resolved for this request by [`resolve`]; without it
    /// (a router used without that layer), the TCP peer.
    pub(crate) fn of(extensions: &Extensions) -> Self {
        extensions.get::<Self>().copied().unwrap_or_else(|| {
            Self(
                extensions
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|c| c.0.ip().to_canonical()),
            )
        })
    }

    /// The key limits and lockouts count this address under.
    pub(crate) fn source(&self) -> Source {
        Source::of(self.0)
    }
}

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(ip) => ip.fmt(f),
            None => f.write_str("unknown"),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::of(&parts.extensions))
    }
}

/// The layer that resolves the client address once, before anything else
/// looks at it.
pub(crate) async fn resolve(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let addr = ClientAddr::resolve(peer, req.headers(), &state.inner.config.trusted_proxies);
    req.extensions_mut().insert(addr);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| Cidr::parse(c).unwrap()).collect()
    }

    #[test]
    fn cidrs_parse_and_match() {
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains("10.255.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(
            !net.contains("::a00:1".parse().unwrap()),
            "no family mixing"
        );
        let v6 = Cidr::parse("fd00::/8").unwrap();
        assert!(v6.contains("fd12:3456::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("192.0.2.1".parse().unwrap()));
        let host = Cidr::parse("127.0.0.1").unwrap();
        assert_eq!(host.to_string(), "127.0.0.1/32");
        assert!(host.contains("127.0.0.1".parse().unwrap()));
        assert!(!host.contains("127.0.0.2".parse().unwrap()));
        assert_eq!(Cidr::parse("::1/128").unwrap().to_string(), "::1/128");
    }

    #[test]
    fn bad_cidrs_are_refused_with_a_reason() {
        for (input, reason) in [
            ("10.0.0.0/33", "prefix length"),
            ("fd00::/129", "prefix length"),
            ("10.0.0.0/-1", "prefix length"),
            ("10.0.0.0/", "prefix length"),
            ("10.0.0/8", "CIDR notation"),
            ("example.com/8", "CIDR notation"),
            ("", "CIDR notation"),
            ("10.0.0.1/8", "did you mean 10.0.0.0/8"),
            ("fd00::1/8", "did you mean fd00::/8"),
        ] {
            let err = Cidr::parse(input).unwrap_err().to_string();
            assert!(err.contains(reason), "{input}: {err}");
        }
    }

    fn check(peer: &str, xff: &[&str], trusted: &[&str], expect: &str) {
        let mut headers = HeaderMap::new();
        for v in xff {
            headers.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        let got = ClientAddr::resolve(Some(peer.parse().unwrap()), &headers, &cidrs(trusted));
        assert_eq!(got.to_string(), expect, "peer {peer}, XFF {xff:?}");
    }

    #[test]
    fn forwarded_addresses_are_taken_only_from_trusted_proxies() {
        let proxies = &["10.0.0.0/8"];
        // Untrusted peer: the header is the caller's fiction.
        check("192.0.2.1", &["198.51.100.7"], proxies, "192.0.2.1");
        check("192.0.2.1", &["198.51.100.7"], &[], "192.0.2.1");
        // Trusted peer: the last untrusted hop, walking from the right.
        check("10.0.0.1", &["198.51.100.7"], proxies, "198.51.100.7");
        check(
            "10.0.0.1",
            &["6.6.6.6, 198.51.100.7, 10.0.0.2"],
            proxies,
            "198.51.100.7",
        );
        check(
            "10.0.0.1",
            &["6.6.6.6", "198.51.100.7, 10.0.0.2"],
            proxies,
            "198.51.100.7",
        );
        // Every hop trusted: the leftmost.
        check("10.0.0.1", &["10.0.0.3, 10.0.0.2"], proxies, "10.0.0.3");
        // No header: the peer.
        check("10.0.0.1", &[], proxies, "10.0.0.1");
        // Malformed: the peer, whatever else the list says.
        check("10.0.0.1", &["198.51.100.7, nonsense"], proxies, "10.0.0.1");
        check("10.0.0.1", &["198.51.100.7:443"], proxies, "10.0.0.1");
        check("10.0.0.1", &[""], proxies, "10.0.0.1");
        // Left of the first untrusted hop nothing is read, even garbage.
        check(
            "10.0.0.1",
            &["garbage, 198.51.100.7"],
            proxies,
            "198.51.100.7",
        );
        // IPv6 and mapped IPv4.
        check("::ffff:10.0.0.1", &["2001:db8::7"], proxies, "2001:db8::7");
        check("fd00::1", &["::ffff:192.0.2.9"], &["fd00::/8"], "192.0.2.9");
    }
}
