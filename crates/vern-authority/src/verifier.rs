//! A verifier for other platform services: checks Vern's access tokens
//! and their DPoP proofs with the published JWKS alone, no call to Vern per
//! request. The embedding service supplies the JWKS through [`JwksSource`]
//! (usually an HTTPS GET of `/oauth2/jwks`), so this crate stays free of
//! HTTP; keys are cached and re-fetched when a token names an unknown `kid`
//! (at most once per `min_refresh`) or when the cache is older than
//! `max_age`. Revocation is not visible offline, nor is the deletion or
//! narrowing of a token's client (Vern's own API and introspection refuse
//! such tokens at once): the verifier honours them until they expire.
//! Services that need either at once use introspection.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};

use serde_json::Value;
use vern_core::Clock;

use crate::authority::Presented;
use crate::claims::{access_header, check_certificate, check_claims, AccessClaims};
use crate::dpop::{self, DpopCheck, NonceKey, ReplayCache};
use crate::jwk::PublicJwk;
use crate::jws::Unverified;
use crate::AuthError;

/// Where the JWKS comes from.
pub trait JwksSource: Send + Sync {
    /// Fetches the current JWK set document.
    fn fetch(&self) -> impl Future<Output = Result<Value, String>> + Send;
}

/// Verifier settings.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// Expected `iss`.
    pub issuer: String,
    /// This service's audience.
    pub audience: String,
    /// Clock leeway in seconds.
    pub leeway: u64,
    /// Re-fetch the JWKS when older than this (seconds).
    pub max_age: u64,
    /// Never re-fetch more often than this (seconds), whatever tokens say.
    pub min_refresh: u64,
    /// The longest lifetime (`exp - iat`, seconds) a token may claim; a
    /// longer-lived one is refused. Vern issues tokens for at most an hour.
    pub max_lifetime: u64,
}

impl VerifierConfig {
    /// Defaults: 30 s leeway, refresh every 5 minutes, at most every 10 s,
    /// tokens living at most a day.
    pub fn new(issuer: &str, audience: &str) -> Self {
        Self {
            issuer: issuer.trim_end_matches('/').to_owned(),
            audience: audience.to_owned(),
            leeway: 30,
            max_age: 300,
            min_refresh: 10,
            max_lifetime: 86_400,
        }
    }
}

struct Cache {
    keys: HashMap<String, PublicJwk>,
    fetched: Option<u64>,
}

/// Verifies access tokens offline. It cannot see revocations, deleted
/// clients or clients whose roles or scopes were narrowed: their tokens
/// pass until they expire (at most an hour for Vern's tokens). Use
/// introspection where that matters.
pub struct Verifier<S> {
    config: VerifierConfig,
    source: S,
    clock: Arc<dyn Clock>,
    cache: RwLock<Cache>,
    replay: ReplayCache,
    /// DPoP proofs to this service carry no Vern nonce; a random key means
    /// no nonce is ever valid, and none is required.
    nonces: NonceKey,
}

impl<S: JwksSource> Verifier<S> {
    /// A verifier with an empty key cache.
    pub fn new(config: VerifierConfig, source: S, clock: Arc<dyn Clock>) -> Self {
        Self {
            config,
            source,
            clock,
            cache: RwLock::new(Cache {
                keys: HashMap::new(),
                fetched: None,
            }),
            replay: ReplayCache::default(),
            nonces: NonceKey(vern_crypto::SecretBytes::random(32)),
        }
    }

    /// Replaces the cached keys with a JWK set; keys of other types than
    /// Ed25519 and P-256, or without `kid`, are skipped. Returns how many
    /// were loaded.
    pub fn load(&self, jwks: &Value) -> Result<usize, AuthError> {
        let list = jwks
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| AuthError::BadKey("a JWK set has a `keys` array".to_owned()))?;
        let keys: HashMap<String, PublicJwk> = list
            .iter()
            .filter_map(|k| {
                let kid = k.get("kid")?.as_str()?.to_owned();
                Some((kid, PublicJwk::parse(k).ok()?))
            })
            .collect();
        let n = keys.len();
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        cache.keys = keys;
        cache.fetched = Some(self.clock.unix_seconds());
        Ok(n)
    }

    async fn refresh(&self) -> Result<(), AuthError> {
        let doc = self
            .source
            .fetch()
            .await
            .map_err(AuthError::JwksUnavailable)?;
        self.load(&doc).map(|_| ())
    }

    fn key(&self, kid: &str) -> (Option<PublicJwk>, Option<u64>) {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        (cache.keys.get(kid).cloned(), cache.fetched)
    }

    /// Verifies a token and its sender binding. Unbound tokens must come
    /// as bearer tokens; bound ones with the `DPoP` scheme and a proof.
    pub async fn verify(
        &self,
        token: &str,
        presented: Presented<'_>,
    ) -> Result<AccessClaims, AuthError> {
        self.verify_with_certificate(token, presented, None).await
    }

    /// Like [`Verifier::verify`], on a connection that presented `peer`
    /// (DER) as client certificate, for certificate-bound tokens.
    pub async fn verify_with_certificate(
        &self,
        token: &str,
        presented: Presented<'_>,
        peer: Option<&[u8]>,
    ) -> Result<AccessClaims, AuthError> {
        let jwt = Unverified::parse(token)?;
        let kid = access_header(&jwt)?;
        let now = self.clock.unix_seconds();
        let (mut key, fetched) = self.key(kid);
        let stale = fetched.is_none_or(|t| now >= t.saturating_add(self.config.max_age));
        let may_refresh = fetched.is_none_or(|t| now >= t.saturating_add(self.config.min_refresh));
        if (key.is_none() && may_refresh) || stale {
            self.refresh().await?;
            key = self.key(kid).0;
        }
        let key = key.ok_or_else(|| AuthError::UnknownKey(kid.chars().take(64).collect()))?;
        jwt.verify(&key)?;
        let claims = check_claims(
            &jwt,
            &self.config.issuer,
            &self.config.audience,
            self.config.leeway,
            self.config.max_lifetime,
            now,
        )?;
        check_certificate(&claims, peer)?;
        match (&claims.jkt, presented) {
            (Some(_), Presented::Bearer) => Err(AuthError::Dpop(
                "a DPoP-bound token must be presented with the DPoP scheme and a proof".to_owned(),
            )),
            (Some(jkt), Presented::Dpop(check)) => {
                let check = DpopCheck {
                    access_token: Some(token),
                    expected_jkt: Some(jkt),
                    nonce: dpop::NonceRule::NotRequired,
                    ..check
                };
                dpop::verify(&check, now, &self.nonces, &self.replay)?;
                Ok(claims)
            }
            (None, Presented::Dpop(_)) => {
                Err(AuthError::Dpop("the token is not DPoP-bound".to_owned()))
            }
            (None, Presented::Bearer) => Ok(claims),
        }
    }
}
