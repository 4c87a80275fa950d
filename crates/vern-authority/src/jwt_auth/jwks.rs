//! The JWK sets of external issuers: where they may be fetched from, and
//! a cache per URL (and CA bundle). A set is fetched on first use, again
//! once it is older than [`MAX_AGE`], and early when a JWT names a key it
//! lacks (a rotation), but never more than once per [`MIN_REFRESH`] per
//! URL, whatever JWTs say. A failed fetch fails closed: a set too old to
//! use is dropped rather than trusted on.
//!
//! The fetching itself is behind [`JwksFetch`], implemented by the HTTP
//! edge (`vern-server`), so this crate keeps no HTTP client (the `tidy`
//! test holds every domain crate to that).

use std::collections::HashMap;
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use vern_core::Clock;

use super::keys::{ExternalKey, JwkOutcome};
use super::JwtAuthError;

/// A fetched set is used for at most this long before it is fetched again.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(300);
/// The shortest time between two fetches of one URL.
pub(crate) const MIN_REFRESH: Duration = Duration::from_secs(5);
/// Most keys a set may hold.
const MAX_KEYS: usize = 100;
/// Most URLs cached at once; beyond that the cache starts over (URLs come
/// from roles, which operators configure, so this is a backstop).
const MAX_URLS: usize = 1024;
/// Longest accepted URL.
const MAX_URL_LEN: usize = 2048;

/// Where a JWK set is fetched: an `https` URL, or `http` on the loopback
/// interface only (an issuer on the same host, such as tests or a local
/// sidecar); anything else could be read or changed on the way.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JwksUrl(String);

impl JwksUrl {
    /// Parses and checks a URL.
    pub fn parse(url: &str) -> Result<Self, String> {
        if url.len() > MAX_URL_LEN || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!(
                "jwks_url must be at most {MAX_URL_LEN} characters without spaces or control characters"
            ));
        }
        let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err("jwks_url must be an https:// URL".to_owned());
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.is_empty() || authority.contains('@') {
            return Err("jwks_url needs a host and takes no user name or password".to_owned());
        }
        if !https && !loopback(authority) {
            return Err(
                "jwks_url must use https (plain http only to 127.0.0.1, [::1] or localhost)"
                    .to_owned(),
            );
        }
        Ok(Self(url.to_owned()))
    }

    /// The URL.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether a URL's authority (`host[:port]`) is on the loopback interface.
fn loopback(authority: &str) -> bool {
    let host = if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next() == Some("::1");
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

/// Fetches a JWK set document. The implementation bounds the time and the
/// size of the answer, follows no redirect, and, with `ca_pem`, trusts only
/// those CAs for the server's certificate.
pub trait JwksFetch: Send + Sync {
    /// The JSON document at `url`, or why it could not be had (a message
    /// for logs and the caller; no secret in it).
    fn fetch(
        &self,
        url: &JwksUrl,
        ca_pem: Option<&str>,
    ) -> impl Future<Output = Result<Value, String>> + Send;
}

/// The usable keys of one fetched set, and the members refused with why.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    pub(crate) keys: Vec<ExternalKey>,
    /// `kid` (or position) and reason of every member that was refused,
    /// so a JWT signed by such a key is refused with the reason.
    pub(crate) refused: Vec<(String, String)>,
}

impl KeySet {
    /// Reads a JWK set document.
    pub(crate) fn parse(doc: &Value) -> Result<Self, String> {
        let list = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| "the document is not a JWK set (no `keys` array)".to_owned())?;
        if list.len() > MAX_KEYS {
            return Err(format!("the JWK set holds more than {MAX_KEYS} keys"));
        }
        let mut set = Self::default();
        for (i, member) in list.iter().enumerate() {
            match ExternalKey::from_jwk(member) {
                Ok(JwkOutcome::Key(k)) => set.keys.push(k),
                Ok(JwkOutcome::Skipped) => {}
                Err(why) => {
                    let kid = member
                        .get("kid")
                        .and_then(Value::as_str)
                        .map_or_else(|| format!("#{i}"), printable);
                    set.refused.push((kid, why));
                }
            }
        }
        Ok(set)
    }

    /// Whether the set has a key with this `kid`.
    pub(crate) fn has(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

/// A name from the network as it may appear in a message: at most 64
/// characters, control characters replaced.
pub(crate) fn printable(s: &str) -> String {
    s.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[derive(Default)]
struct Slot {
    set: Option<Arc<KeySet>>,
    /// When the set was fetched (monotonic).
    fetched: Option<Duration>,
    /// When a fetch was last tried, successful or not (monotonic).
    tried: Option<Duration>,
}

/// A cached set's key: its URL and the SHA-256 of its CA bundle, if any.
type SlotKey = (JwksUrl, Option<[u8; 32]>);

/// The cache of JWK sets, keyed by URL and CA bundle. Each slot has an
/// async lock, held across its fetch.
#[derive(Default)]
pub(crate) struct JwksCache {
    slots: Mutex<HashMap<SlotKey, Arc<futures_util::lock::Mutex<Slot>>>>,
}

impl JwksCache {
    /// The set at `url` fit to verify a JWT naming `kid`: cached, or
    /// fetched as the rules above allow. One fetch per URL runs at a time;
    /// concurrent logins wait for it rather than fetching again.
    pub(crate) async fn keys<F: JwksFetch>(
        &self,
        url: &JwksUrl,
        ca_pem: Option<&str>,
        kid: Option<&str>,
        fetch: &F,
        clock: &dyn Clock,
    ) -> Result<Arc<KeySet>, JwtAuthError> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            if slots.len() >= MAX_URLS {
                slots.clear();
            }
            let key = (
                url.clone(),
                ca_pem.map(|p| vern_crypto::sha256(p.as_bytes())),
            );
            Arc::clone(slots.entry(key).or_default())
        };
        let mut slot = slot.lock().await;
        let now = clock.monotonic();
        let fresh = slot
            .fetched
            .is_some_and(|t| now < t.saturating_add(MAX_AGE));
        let lacks_kid = kid.is_some_and(|k| slot.set.as_ref().is_none_or(|s| !s.has(k)));
        let may_fetch = slot
            .tried
            .is_none_or(|t| now >= t.saturating_add(MIN_REFRESH));
        if !fresh {
            // Past its age, a set is not trusted whatever comes next.
            slot.set = None;
        }
        if (!fresh || lacks_kid) && may_fetch {
            slot.tried = Some(now);
            let fetched = fetch
                .fetch(url, ca_pem)
                .await
                .and_then(|doc| KeySet::parse(&doc));
            match fetched {
                Ok(set) => {
                    tracing::info!(url = %url.as_str(), keys = set.keys.len(), refused = set.refused.len(), "Fetched an issuer's JWK set.");
                    slot.set = Some(Arc::new(set));
                    slot.fetched = Some(now);
                }
                Err(why) => {
                    tracing::warn!(url = %url.as_str(), error = %why, "An issuer's JWK set could not be fetched.");
                    if !fresh {
                        return Err(JwtAuthError::KeysUnavailable(why));
                    }
                }
            }
        }
        slot.set.clone().ok_or_else(|| {
            JwtAuthError::KeysUnavailable(
                "the last fetch failed and the next is not due yet".to_owned(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::SystemTime;

    use serde_json::json;
    use vern_core::ManualClock;

    use super::*;

    #[test]
    fn urls_must_be_https_except_on_loopback() {
        for ok in [
            "https://kubernetes.default.svc/openid/v1/jwks",
            "https://issuer.example:8443/keys?x=1",
            "http://127.0.0.1:8080/jwks",
            "http://127.9.9.9/jwks",
            "http://localhost:1234/jwks",
            "http://[::1]:99/jwks",
        ] {
            assert!(JwksUrl::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://issuer.example/jwks",
            "http://10.0.0.1/jwks",
            "http://127.0.0.1.evil.example/jwks",
            "http://localhost.evil.example/jwks",
            "http://[::2]/jwks",
            "ftp://x/jwks",
            "https://",
            "https://user:pw@issuer.example/jwks",
            "http://evil.example@127.0.0.1/jwks",
            "https://issuer.example/ jwks",
            "file:///etc/passwd",
        ] {
            assert!(JwksUrl::parse(bad).is_err(), "{bad}");
        }
    }

    /// Serves a settable document and counts fetches.
    struct Fake {
        doc: Mutex<Result<Value, String>>,
        fetches: AtomicUsize,
    }

    impl JwksFetch for Fake {
        async fn fetch(&self, _: &JwksUrl, _: Option<&str>) -> Result<Value, String> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            self.doc.lock().unwrap().clone()
        }
    }

    fn ed_jwk(kid: &str, seed: u8) -> Value {
        let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        crate::jws::ed25519_public(&key).to_json(Some(kid))
    }

    #[tokio::test]
    async fn refetches_on_a_new_kid_at_most_every_min_refresh_and_fails_closed() {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let fake = Fake {
            doc: Mutex::new(Ok(json!({"keys": [ed_jwk("a", 1)]}))),
            fetches: AtomicUsize::new(0),
        };
        let cache = JwksCache::default();
        let url = JwksUrl::parse("https://issuer.example/jwks").unwrap();
        let get = |kid: &'static str| cache.keys(&url, None, Some(kid), &fake, &clock);
        assert!(get("a").await.unwrap().has("a"));
        assert!(get("a").await.unwrap().has("a"));
        assert_eq!(fake.fetches.load(Ordering::SeqCst), 1, "cached");

        // A rotation: a JWT names key b, which the cached set lacks. Right
        // after the last fetch no new fetch is made.
        *fake.doc.lock().unwrap() = Ok(json!({"keys": [ed_jwk("a", 1), ed_jwk("b", 2)]}));
        assert!(!get("b").await.unwrap().has("b"));
        assert_eq!(fake.fetches.load(Ordering::SeqCst), 1, "rate-limited");
        clock.advance(MIN_REFRESH);
        assert!(get("b").await.unwrap().has("b"));
        assert_eq!(fake.fetches.load(Ordering::SeqCst), 2);
        // Made-up kids cost at most one fetch per interval.
        for _ in 0..10 {
            assert!(!get("made-up").await.unwrap().has("made-up"));
        }
        assert_eq!(fake.fetches.load(Ordering::SeqCst), 2);

        // The issuer goes away: while the set is fresh it is used; once it
        // is too old, logins fail closed with the reason.
        *fake.doc.lock().unwrap() = Err("connection refused".to_owned());
        clock.advance(MIN_REFRESH);
        assert!(get("zzz").await.unwrap().has("a"));
        clock.advance(MAX_AGE);
        let err = get("a").await.unwrap_err();
        assert!(err.to_string().contains("connection refused"), "{err}");
        let err = get("a").await.unwrap_err();
        assert!(err.to_string().contains("not due yet"), "{err}");
    }

    #[test]
    fn sets_are_bounded_and_report_refused_keys() {
        let many: Vec<Value> = (0..101)
            .map(|i| json!({"kty": "oct", "kid": i.to_string()}))
            .collect();
        assert!(KeySet::parse(&json!({ "keys": many })).is_err());
        assert!(KeySet::parse(&json!({"not": "a set"})).is_err());
        let set = KeySet::parse(&json!({"keys": [
            ed_jwk("good", 3),
            {"kty": "RSA", "kid": "weak", "n": "AQAB", "e": "AQAB"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        ]}))
        .unwrap();
        assert!(set.has("good"));
        assert_eq!(set.refused.len(), 2, "{:?}", set.refused);
        assert_eq!(set.refused[0].0, "weak");
    }
}
