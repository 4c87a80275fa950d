//! DPoP proof verification (RFC 9449 §4.3): the twelve checks, server
//! nonces, and a per-process replay cache of proof `jti`s.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::jwk::PublicJwk;
use crate::jws::Unverified;
use crate::AuthError;

/// How far a proof's `iat` may lie from the server's clock, in seconds.
pub(crate) const IAT_WINDOW: u64 = 60;
/// How long a server nonce stays valid, in seconds.
pub(crate) const NONCE_LIFETIME: u64 = 300;
/// Entries kept in the replay cache before expired ones are swept.
const REPLAY_SWEEP_AT: usize = 100_000;

/// Whether an endpoint demands a server-issued nonce in proofs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceRule {
    /// A valid nonce is required; without one the client is told to retry
    /// with the nonce in the `DPoP-Nonce` response header.
    Required,
    /// Nonces are not checked.
    NotRequired,
}

/// One proof to check. Its `Debug` leaves the access token out.
#[derive(Clone, Copy)]
pub struct DpopCheck<'a> {
    /// The `DPoP` header values (exactly one must be present).
    pub proofs: &'a [&'a str],
    /// The request method.
    pub method: &'a str,
    /// The request URL as the server is reached (no query or fragment).
    pub url: &'a str,
    /// The access token the proof accompanies, if any (adds `ath`).
    pub access_token: Option<&'a str>,
    /// The `cnf.jkt` the proof key must match, if any.
    pub expected_jkt: Option<&'a str>,
    /// The nonce rule of the endpoint.
    pub nonce: NonceRule,
}

impl std::fmt::Debug for DpopCheck<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpopCheck")
            .field("proofs", &self.proofs)
            .field("method", &self.method)
            .field("url", &self.url)
            .field("access_token", &self.access_token.map(|_| "[redacted]"))
            .field("expected_jkt", &self.expected_jkt)
            .field("nonce", &self.nonce)
            .finish()
    }
}

/// Seen proof `jti`s, until their acceptance window closes.
#[derive(Default)]
pub(crate) struct ReplayCache {
    seen: Mutex<HashMap<String, u64>>,
}

impl ReplayCache {
    /// Records `id`; false when it was already seen and is still in window.
    fn first_use(&self, id: String, until: u64, now: u64) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= REPLAY_SWEEP_AT {
            seen.retain(|_, exp| *exp > now);
        }
        match seen.get(&id) {
            Some(exp) if *exp > now => false,
            _ => {
                seen.insert(id, until);
                true
            }
        }
    }
}

/// Makes and checks stateless server nonces: a timestamp and its HMAC
/// under a key every replica shares, so any replica accepts any replica's
/// nonce.
pub(crate) struct NonceKey(pub(crate) vern_crypto::SecretBytes);

impl NonceKey {
    fn mac(&self, ts: u64) -> Option<[u8; 32]> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.expose()).ok()?;
        mac.update(b"vern/dpop-nonce/v1");
        mac.update(&ts.to_be_bytes());
        Some(mac.finalize().into_bytes().into())
    }

    pub(crate) fn issue(&self, now: u64) -> String {
        let mut raw = now.to_be_bytes().to_vec();
        raw.extend_from_slice(&self.mac(now).unwrap_or_default()[..16]);
        B64.encode(raw)
    }

    fn valid(&self, nonce: &str, now: u64) -> bool {
        let Ok(raw) = B64.decode(nonce) else {
            return false;
        };
        let Some((ts, tag)) = raw.split_first_chunk::<8>() else {
            return false;
        };
        let ts = u64::from_be_bytes(*ts);
        let Some(mac) = self.mac(ts) else {
            return false;
        };
        // A nonce from the future (checked_sub fails) is refused.
        tag.len() == 16
            && bool::from(mac[..16].ct_eq(tag))
            && now.checked_sub(ts).is_some_and(|age| age <= NONCE_LIFETIME)
    }
}

/// `htu` without query and fragment, scheme and host lowercased.
fn normalize_url(url: &str) -> String {
    let cut = url.find(['?', '#']).map_or(url, |i| &url[..i]);
    match cut.find("://") {
        Some(i) => {
            let rest = &cut[i + 3..];
            let (authority, path) = rest
                .find('/')
                .map_or((rest, "/"), |j| (&rest[..j], &rest[j..]));
            format!(
                "{}://{}{}",
                cut[..i].to_ascii_lowercase(),
                authority.to_ascii_lowercase(),
                path
            )
        }
        None => cut.to_owned(),
    }
}

/// The `ath` of an access token: base64url SHA-256 of its ASCII.
pub(crate) fn ath(token: &str) -> String {
    B64.encode(Sha256::digest(token.as_bytes()))
}

/// Runs the RFC 9449 checks; returns the proof key's thumbprint (`jkt`).
pub(crate) fn verify(
    check: &DpopCheck<'_>,
    now: u64,
    nonces: &NonceKey,
    replay: &ReplayCache,
) -> Result<String, AuthError> {
    let fail = |m: &str| AuthError::Dpop(m.to_owned());
    // 1. Exactly one DPoP header.
    let proof = match check.proofs {
        [one] => *one,
        [] => return Err(fail("the DPoP header is missing")),
        _ => return Err(fail("more than one DPoP header")),
    };
    // 2. A well-formed JWT.
    let jwt = Unverified::parse(proof).map_err(|e| AuthError::Dpop(e.to_string()))?;
    // 4. typ.
    if jwt.header_str("typ") != Some("dpop+jwt") {
        return Err(fail("typ must be dpop+jwt"));
    }
    // 7. The jwk is a public key (private members are refused by parse).
    let jwk = PublicJwk::parse(
        jwt.header
            .get("jwk")
            .ok_or_else(|| fail("the jwk header is missing"))?,
    )
    .map_err(|e| AuthError::Dpop(e.to_string()))?;
    // 5 and 6. An asymmetric algorithm this server accepts, and a signature
    // by the embedded key; the algorithm is the key's, not the header's.
    jwt.verify(&jwk)
        .map_err(|e| AuthError::Dpop(e.to_string()))?;
    // 3. Required claims.
    let claim = |n: &str| jwt.claims.get(n).and_then(Value::as_str);
    let jti = claim("jti")
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or_else(|| fail("jti is missing"))?;
    let htm = claim("htm").ok_or_else(|| fail("htm is missing"))?;
    let htu = claim("htu").ok_or_else(|| fail("htu is missing"))?;
    // A whole, non-negative number of seconds; anything else (negative,
    // fractional, beyond u64) is refused, never read as some other time.
    let iat = match jwt.claims.get("iat") {
        None => return Err(fail("iat is missing")),
        Some(v) => v.as_u64().ok_or_else(|| {
            fail("iat must be a whole, non-negative number of seconds since 1970")
        })?,
    };
    // 8. htm.
    if htm != check.method {
        return Err(fail("htm does not match the request method"));
    }
    // 9. htu, ignoring query and fragment.
    if normalize_url(htu) != normalize_url(check.url) {
        return Err(fail("htu does not match the request URL"));
    }
    // 11. iat within the window.
    // `iat` is the caller's number: saturating arithmetic, so u64::MAX is
    // out of the window rather than an overflow.
    if iat > now.saturating_add(IAT_WINDOW) || now > iat.saturating_add(IAT_WINDOW) {
        return Err(fail("iat is outside the acceptance window"));
    }
    // 10. The server nonce.
    if check.nonce == NonceRule::Required && !claim("nonce").is_some_and(|n| nonces.valid(n, now)) {
        return Err(AuthError::UseDpopNonce);
    }
    let jkt = jwk.thumbprint();
    // 12. Bound to the access token and its key.
    if let Some(token) = check.access_token {
        let expected = ath(token);
        if !claim("ath").is_some_and(|a| bool::from(a.as_bytes().ct_eq(expected.as_bytes()))) {
            return Err(fail("ath does not match the access token"));
        }
    }
    if let Some(expected) = check.expected_jkt {
        if !bool::from(jkt.as_bytes().ct_eq(expected.as_bytes())) {
            return Err(fail("the proof key does not match the token's cnf.jkt"));
        }
    }
    // Replay: a proof is usable once within its window.
    if !replay.first_use(
        format!("{jkt}:{jti}"),
        iat.saturating_add(IAT_WINDOW + 1),
        now,
    ) {
        return Err(fail("the proof was already used (jti replay)"));
    }
    Ok(jkt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_compared_without_query_and_fragment() {
        assert_eq!(
            normalize_url("HTTPS://Vern.Example:8200/oauth2/token?x=1#f"),
            "https://vern.example:8200/oauth2/token"
        );
        assert_eq!(normalize_url("http://h"), "http://h/");
        assert_ne!(normalize_url("http://h/a"), normalize_url("http://h/b"));
    }

    #[test]
    fn nonces_expire_and_resist_forgery() {
        let key = NonceKey(vern_crypto::SecretBytes::random(32));
        let n = key.issue(1000);
        assert!(key.valid(&n, 1000));
        assert!(key.valid(&n, 1000 + NONCE_LIFETIME));
        assert!(!key.valid(&n, 1001 + NONCE_LIFETIME));
        assert!(!key.valid(&n, 999), "from the future");
        let other = NonceKey(vern_crypto::SecretBytes::random(32));
        assert!(!other.valid(&n, 1000));
        assert!(!key.valid("garbage", 1000));
    }

    #[test]
    fn replay_cache_refuses_a_second_use_in_window() {
        let cache = ReplayCache::default();
        assert!(cache.first_use("a".into(), 100, 50));
        assert!(!cache.first_use("a".into(), 100, 60));
        assert!(
            cache.first_use("a".into(), 200, 101),
            "after the window it is a new proof"
        );
    }
}
