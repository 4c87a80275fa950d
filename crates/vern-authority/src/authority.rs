//! The authority service: the `Authority` type and its configuration, token
//! issuance and verification, introspection, JWKS and metadata. Claim
//! checks live in `claims.rs`, client authentication in `client_auth.rs`,
//! revocation in `revocation.rs` and the client registry in `registry.rs`.

use std::sync::{Arc, RwLock};

use serde_json::{json, Value};
use vern_core::Clock;
use vern_crypto::SecretBytes;
use vern_seal::{Barrier, BarrierView, BarrierWrite, Expect, SealError};

use crate::claims::{
    access_header, certificate_thumbprint, check_certificate, check_claims, check_times,
    not_before, AccessClaims,
};
use crate::client_auth::ClientCredentials;
use crate::clients::ClientRecord;
use crate::dpop::{self, DpopCheck, NonceKey, NonceRule, ReplayCache};
use crate::jwk::ACCEPTED_ALGS;
use crate::jws::Unverified;
use crate::jwt_auth::JwksCache;
use crate::keys::KeySet;
use crate::AuthError;

const HMAC_KEY: &str = "hmac-key";
/// How long a loaded key set is trusted before it is read again; key
/// rotation publishes new keys longer than this before they sign, so every
/// replica knows a key before it sees a token signed by it.
const KEY_CACHE_SECS: u64 = 5;

/// Settings of the authority.
#[derive(Debug, Clone)]
pub struct AuthorityConfig {
    /// `iss` of tokens and the base URL of the OAuth2 endpoints.
    pub issuer: String,
    /// `aud` of tokens (Vern's own API by default: the issuer).
    pub audience: String,
    /// Token lifetime when the client sets none (seconds).
    pub default_ttl: u64,
    /// Hard maximum lifetime (seconds).
    pub max_ttl: u64,
    /// Clock leeway for `exp`, `nbf`, `iat` (seconds).
    pub leeway: u64,
    /// A new signing key is published this long before it signs (seconds).
    pub key_publish_delay: u64,
    /// Whether DPoP proofs at the token endpoint need a server nonce.
    pub token_nonce: NonceRule,
    /// The algorithm of new signing keys: EdDSA (default) or ES256.
    pub signing_alg: crate::jwk::Alg,
    /// The SPIFFE trust domain of Vern's CA, when nodes may authenticate
    /// by `tls_client_auth` with their own X.509-SVID
    /// (`spiffe://<td>/vern/agent/<name>`) besides their secret.
    pub node_trust_domain: Option<vern_pki::TrustDomain>,
}

impl AuthorityConfig {
    /// Defaults for an issuer URL: 5-minute tokens, 1-hour maximum, 30 s
    /// leeway, keys published a minute before they sign, nonces required
    /// at the token endpoint.
    pub fn new(issuer: &str) -> Self {
        let issuer = issuer.trim_end_matches('/').to_owned();
        Self {
            audience: issuer.clone(),
            issuer,
            default_ttl: 300,
            max_ttl: 3600,
            leeway: 30,
            key_publish_delay: 60,
            token_nonce: NonceRule::Required,
            signing_alg: crate::jwk::Alg::EdDsa,
            node_trust_domain: None,
        }
    }

    /// The token endpoint's URL.
    pub fn token_endpoint(&self) -> String {
        format!("{}/oauth2/token", self.issuer)
    }
}

/// A `client_credentials` token request.
#[derive(Debug)]
pub struct TokenRequest<'a> {
    /// Client authentication.
    pub credentials: ClientCredentials,
    /// The `scope` parameter.
    pub scope: Option<&'a str>,
    /// A DPoP proof check, when the request carried a `DPoP` header.
    pub dpop: Option<DpopCheck<'a>>,
}

/// A client that proved who it is some other way than at the token
/// endpoint: at a Vault login (an AppRole secret, a client certificate, an
/// external JWT mapped to the client). The login has checked the proof;
/// [`Authority::issue_for_login`] only issues.
#[derive(Debug, Clone, Copy)]
pub struct LoginGrant<'a> {
    /// The client the login resolved and authenticated, as read from the
    /// registry.
    pub client: &'a ClientRecord,
    /// The Vault auth method, as Vault names its mount (`approle`, `cert`,
    /// `jwt`). The token carries it (`auth_method`), so that a lookup can
    /// tell how the token was obtained.
    pub method: &'static str,
    /// The client certificate (DER) the login was made with, if any: the
    /// token is then bound to it (RFC 8705 `cnf.x5t#S256`), as a token of
    /// `tls_client_auth` at the token endpoint is.
    pub certificate: Option<&'a [u8]>,
}

/// An issued access token. Its `Debug` leaves the token out.
pub struct IssuedToken {
    /// The JWT.
    pub access_token: String,
    /// The token's id (`jti`): not secret, and no way back to the token;
    /// it names the token in lookups and revocations.
    pub jti: String,
    /// `DPoP` or `Bearer`.
    pub token_type: &'static str,
    /// Lifetime in seconds.
    pub expires_in: u64,
    /// Granted scopes, space-separated.
    pub scope: String,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("access_token", &"[redacted]")
            .field("jti", &self.jti)
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish()
    }
}

/// What a token is bound to: a DPoP key (`cnf.jkt`), a client
/// certificate (`cnf.x5t#S256`), or nothing.
#[derive(Clone, Copy)]
struct Binding<'a> {
    jkt: Option<&'a str>,
    x5t: Option<&'a str>,
}

/// How a token reached the API.
#[derive(Debug, Clone, Copy)]
pub enum Presented<'a> {
    /// `Authorization: Bearer` or `X-Vault-Token`.
    Bearer,
    /// `Authorization: DPoP` with this proof check.
    Dpop(DpopCheck<'a>),
}

/// The token authority of one Vern process.
pub struct Authority {
    pub(crate) config: AuthorityConfig,
    clock: Arc<dyn Clock>,
    replay: ReplayCache,
    keys: RwLock<Option<(Arc<KeySet>, u64)>>,
    hmac_key: RwLock<Option<Arc<SecretBytes>>>,
    verified: VerifiedTokens,
    /// JWK sets of external issuers (the JWT auth method).
    pub(crate) jwks: JwksCache,
}

/// How many verified tokens are remembered: at one to two kilobytes each
/// with the allocator's overhead (the memory benchmark's measure), about
/// 15 MB at most; a token pushed out is verified in full again.
const VERIFIED_TOKENS: usize = 8_192;

/// Access tokens whose signature and claims were verified, keyed by the
/// SHA-256 of the token's exact bytes, so a repeated token skips the JSON
/// parse and the signature check (the largest share of a request's CPU).
/// A hit is still checked against the current signing keys and the clock,
/// and revocation and the client record are read on every request, so a
/// revocation or a deleted client takes effect at once on every replica.
/// Any other bytes, a forged signature among them, miss and are verified in
/// full.
struct VerifiedTokens(quick_cache::sync::Cache<[u8; 32], Arc<Verified>>);

struct Verified {
    claims: AccessClaims,
    kid: String,
    nbf: u64,
}

impl VerifiedTokens {
    fn new() -> Self {
        Self(quick_cache::sync::Cache::new(VERIFIED_TOKENS))
    }
}

/// The prefix of the authority's view of the barrier: everything it stores
/// (clients, signing keys, its HMAC key, revocation and assertion markers)
/// lies under it, and nothing else is in its reach.
const VIEW: &str = "authority/";

/// The authority's view of the barrier; keys are relative to [`VIEW`].
pub(crate) fn view(b: &Barrier) -> Result<BarrierView<'_>, AuthError> {
    Ok(b.view(VIEW)?)
}

pub(crate) fn conflict(e: &AuthError) -> bool {
    matches!(e, AuthError::Seal(SealError::Conflict { .. }))
}

impl Authority {
    /// An authority with `config`, reading time from `clock`.
    pub fn new(config: AuthorityConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            config,
            clock,
            replay: ReplayCache::default(),
            keys: RwLock::new(None),
            hmac_key: RwLock::new(None),
            verified: VerifiedTokens::new(),
            jwks: JwksCache::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AuthorityConfig {
        &self.config
    }

    /// Drops cached key material; called when Vern seals.
    pub fn forget(&self) {
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = None;
        *self.hmac_key.write().unwrap_or_else(|e| e.into_inner()) = None;
        self.verified.0.clear();
    }

    pub(crate) fn now(&self) -> u64 {
        self.clock.unix_seconds()
    }

    pub(crate) fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    pub(crate) async fn key_set(&self, b: &Barrier, force: bool) -> Result<Arc<KeySet>, AuthError> {
        let now = self.now();
        if !force {
            if let Some((set, at)) = self.keys.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
                if now < at.saturating_add(KEY_CACHE_SECS) {
                    return Ok(Arc::clone(set));
                }
            }
        }
        let set = Arc::new(KeySet::load(b, now, self.config.signing_alg).await?);
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Some((Arc::clone(&set), now));
        Ok(set)
    }

    /// The per-deployment HMAC key (client secrets, DPoP nonces).
    pub(crate) async fn hmac_key(&self, b: &Barrier) -> Result<Arc<SecretBytes>, AuthError> {
        if let Some(k) = self
            .hmac_key
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            return Ok(Arc::clone(k));
        }
        let k = HMAC_KEY.to_owned();
        for _ in 0..3 {
            if let Some(plain) = view(b)?.get(&k).await? {
                let value = Arc::new(plain.value);
                *self.hmac_key.write().unwrap_or_else(|e| e.into_inner()) =
                    Some(Arc::clone(&value));
                return Ok(value);
            }
            let write = BarrierWrite {
                key: k.clone(),
                value: Some(SecretBytes::random(32)),
                expect: Expect::Absent,
            };
            match view(b)?.commit(vec![write]).await {
                Ok(_) => {}
                Err(SealError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(AuthError::Internal(
            "cannot establish the authority's HMAC key".to_owned(),
        ))
    }

    /// A fresh DPoP nonce, valid on every replica for five minutes.
    pub async fn dpop_nonce(&self, b: &Barrier) -> Result<String, AuthError> {
        Ok(NonceKey(SecretBytes::new(self.hmac_key(b).await?.expose().to_vec())).issue(self.now()))
    }

    /// The `client_credentials` grant.
    pub async fn issue(
        &self,
        b: &Barrier,
        req: &TokenRequest<'_>,
    ) -> Result<IssuedToken, AuthError> {
        let client = self.authenticate(b, &req.credentials).await?;
        let granted: Vec<String> = match req.scope.map(str::trim).filter(|s| !s.is_empty()) {
            None => client.scopes.clone(),
            Some(s) => {
                let wanted: Vec<String> = s
                    .split(' ')
                    .filter(|x| !x.is_empty())
                    .map(str::to_owned)
                    .collect();
                if let Some(bad) = wanted.iter().find(|w| !client.scopes.contains(w)) {
                    return Err(AuthError::InvalidScope(bad.clone()));
                }
                wanted
            }
        };
        let now = self.now();
        let jkt = match &req.dpop {
            Some(check) => {
                let nonces = NonceKey(SecretBytes::new(self.hmac_key(b).await?.expose().to_vec()));
                Some(dpop::verify(check, now, &nonces, &self.replay)?)
            }
            None if client.dpop_bound => {
                return Err(AuthError::UnauthorizedClient(
                    "this client must bind its tokens with DPoP".to_owned(),
                ))
            }
            None => None,
        };
        let x5t = match &req.credentials {
            ClientCredentials::Tls { certificate, .. } => Some(certificate_thumbprint(certificate)),
            _ => None,
        };
        self.mint(
            b,
            &client,
            &granted,
            Binding {
                jkt: jkt.as_deref(),
                x5t: x5t.as_deref(),
            },
            None,
        )
        .await
    }

    /// Issues an access token to a client that authenticated at a login
    /// other than the token endpoint (see [`LoginGrant`]): every scope the
    /// client holds, its usual lifetime, bound to the login's certificate
    /// if it had one. **The caller must have authenticated the client**;
    /// this only refuses what no login can satisfy: a client whose tokens
    /// must be DPoP-bound gets none here, since a Vault login carries no
    /// proof of possession, and a weaker token than the client's own
    /// must not be had by logging in another way.
    pub async fn issue_for_login(
        &self,
        b: &Barrier,
        grant: &LoginGrant<'_>,
    ) -> Result<IssuedToken, AuthError> {
        let client = grant.client;
        if client.dpop_bound {
            return Err(AuthError::UnauthorizedClient(
                "this client must bind its tokens with DPoP, which a Vault login cannot; use the token endpoint".to_owned(),
            ));
        }
        let x5t = grant.certificate.map(certificate_thumbprint);
        self.mint(
            b,
            client,
            &client.scopes,
            Binding {
                jkt: None,
                x5t: x5t.as_deref(),
            },
            Some(grant.method),
        )
        .await
    }

    /// Signs an access token for `client` with `granted` scopes, its sender
    /// binding and, for tokens of a Vault login, the auth method.
    async fn mint(
        &self,
        b: &Barrier,
        client: &ClientRecord,
        granted: &[String],
        binding: Binding<'_>,
        auth_method: Option<&str>,
    ) -> Result<IssuedToken, AuthError> {
        let now = self.now();
        let ttl = client
            .token_ttl
            .unwrap_or(self.config.default_ttl)
            .min(self.config.max_ttl);
        let keys = self.key_set(b, false).await?;
        let signer = keys
            .active(now)
            .ok_or_else(|| AuthError::Internal("no signing key is active".to_owned()))?;
        let jti = uuid::Uuid::new_v4().to_string();
        let mut claims = serde_json::Map::new();
        let mut claim = |name: &str, value: Value| {
            claims.insert(name.to_owned(), value);
        };
        claim("iss", json!(self.config.issuer));
        claim("sub", json!(client.client_id));
        claim("aud", json!(self.config.audience));
        claim("exp", json!(now.saturating_add(ttl)));
        claim("iat", json!(now));
        claim("nbf", json!(now));
        claim("jti", json!(jti));
        claim("client_id", json!(client.client_id));
        claim("scope", json!(granted.join(" ")));
        for (name, value) in client.kind.claims() {
            claim(name, value);
        }
        if let Some(method) = auth_method {
            claim("auth_method", json!(method));
        }
        let mut cnf = serde_json::Map::new();
        if let Some(jkt) = binding.jkt {
            cnf.insert("jkt".to_owned(), json!(jkt));
        }
        if let Some(x5t) = binding.x5t {
            cnf.insert("x5t#S256".to_owned(), json!(x5t));
        }
        if !cnf.is_empty() {
            claim("cnf", Value::Object(cnf));
        }
        let claims = Value::Object(claims);
        let mut header = serde_json::Map::new();
        header.insert("typ".to_owned(), json!("at+jwt"));
        header.insert("kid".to_owned(), json!(signer.kid));
        Ok(IssuedToken {
            access_token: signer.signing.sign(header, &claims),
            jti,
            token_type: if binding.jkt.is_some() {
                "DPoP"
            } else {
                "Bearer"
            },
            expires_in: ttl,
            scope: granted.join(" "),
        })
    }

    /// Verifies a token's signature and claims (RFC 9068, RFC 8725), but
    /// not revocation or sender binding.
    pub(crate) async fn verify_jwt(
        &self,
        b: &Barrier,
        token: &str,
    ) -> Result<AccessClaims, AuthError> {
        let digest = vern_crypto::sha256(token.as_bytes());
        if let Some(hit) = self.verified.0.get(&digest) {
            // The key that signed it must still be one this authority
            // trusts, and the token must still be within its times.
            if self.key_set(b, false).await?.find(&hit.kid).is_some() {
                check_times(
                    hit.claims.exp,
                    hit.nbf,
                    hit.claims.iat,
                    self.config.leeway,
                    self.now(),
                )?;
                return Ok(hit.claims.clone());
            }
            self.verified.0.remove(&digest);
        }
        let jwt = Unverified::parse(token)?;
        let kid = access_header(&jwt)?;
        let mut keys = self.key_set(b, false).await?;
        if keys.find(kid).is_none() {
            keys = self.key_set(b, true).await?;
        }
        let signer = keys
            .find(kid)
            .ok_or_else(|| AuthError::UnknownKey(kid.chars().take(64).collect()))?;
        jwt.verify(&signer.public)?;
        let claims = check_claims(
            &jwt,
            &self.config.issuer,
            &self.config.audience,
            self.config.leeway,
            self.config.max_ttl,
            self.now(),
        )?;
        let nbf = not_before(&jwt)?.unwrap_or(claims.iat);
        self.verified.0.insert(
            digest,
            Arc::new(Verified {
                claims: claims.clone(),
                kid: kid.to_owned(),
                nbf,
            }),
        );
        Ok(claims)
    }

    /// Verifies an access token presented to Vern's API, with its sender
    /// binding: a DPoP-bound token needs the `DPoP` scheme and a valid
    /// proof by its key; an unbound one must not claim DPoP. A revoked
    /// token is refused, and so is one whose client was deleted or changed
    /// after the token was issued (one read of the client record).
    pub async fn verify_access(
        &self,
        b: &Barrier,
        token: &str,
        presented: Presented<'_>,
    ) -> Result<AccessClaims, AuthError> {
        self.verify_access_with_certificate(b, token, presented, None)
            .await
    }

    /// Like [`Authority::verify_access`], for a request on a connection
    /// that presented `peer` (DER) as its client certificate: a
    /// certificate-bound token needs exactly that certificate.
    pub async fn verify_access_with_certificate(
        &self,
        b: &Barrier,
        token: &str,
        presented: Presented<'_>,
        peer: Option<&[u8]>,
    ) -> Result<AccessClaims, AuthError> {
        let claims = self.verify_jwt(b, token).await?;
        check_certificate(&claims, peer)?;
        match (&claims.jkt, presented) {
            (Some(_), Presented::Bearer) => {
                return Err(AuthError::Dpop(
                    "a DPoP-bound token must be presented with the DPoP scheme and a proof"
                        .to_owned(),
                ))
            }
            (Some(jkt), Presented::Dpop(check)) => {
                let check = DpopCheck {
                    access_token: Some(token),
                    expected_jkt: Some(jkt),
                    ..check
                };
                let nonces = NonceKey(SecretBytes::new(self.hmac_key(b).await?.expose().to_vec()));
                dpop::verify(&check, self.now(), &nonces, &self.replay)?;
            }
            (None, Presented::Dpop(_)) => {
                return Err(AuthError::Dpop("the token is not DPoP-bound".to_owned()));
            }
            (None, Presented::Bearer) => {}
        }
        self.check_live(b, &claims).await?;
        Ok(claims)
    }

    /// RFC 7662: the claims of an active token, `None` for anything else
    /// (including a token whose client was deleted or changed since).
    pub async fn introspect(
        &self,
        b: &Barrier,
        token: &str,
    ) -> Result<Option<AccessClaims>, AuthError> {
        let claims = match self.verify_jwt(b, token).await {
            Ok(c) => c,
            Err(AuthError::Seal(e)) => return Err(e.into()),
            Err(_) => return Ok(None),
        };
        match self.check_live(b, &claims).await {
            Ok(()) => Ok(Some(claims)),
            Err(AuthError::Revoked | AuthError::ClientChanged) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The published keys (RFC 7517 JWK set).
    pub async fn jwks(&self, b: &Barrier) -> Result<Value, AuthError> {
        let keys = self.key_set(b, false).await?;
        let list: Vec<Value> = keys
            .published(
                self.now(),
                self.config.max_ttl.saturating_add(self.config.leeway),
            )
            .map(|k| k.public.to_json(Some(&k.kid)))
            .collect();
        Ok(json!({ "keys": list }))
    }

    /// Starts a signing key rotation; returns the new key's id.
    pub async fn rotate_keys(&self, b: &Barrier) -> Result<String, AuthError> {
        let kid = KeySet::rotate(
            b,
            self.now(),
            self.config.key_publish_delay.max(KEY_CACHE_SECS + 1),
            self.config.max_ttl.saturating_add(self.config.leeway),
            self.config.signing_alg,
        )
        .await?;
        self.key_set(b, true).await?;
        tracing::warn!(kid = %kid, "Signing key rotation started.");
        Ok(kid)
    }

    /// RFC 8414 authorization server metadata.
    pub fn metadata(&self) -> Value {
        let i = &self.config.issuer;
        json!({
            "issuer": i,
            "token_endpoint": self.config.token_endpoint(),
            "jwks_uri": format!("{i}/oauth2/jwks"),
            "introspection_endpoint": format!("{i}/oauth2/introspect"),
            "revocation_endpoint": format!("{i}/oauth2/revoke"),
            "grant_types_supported": ["client_credentials"],
            "response_types_supported": [],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "tls_client_auth"],
            "tls_client_certificate_bound_access_tokens": true,
            "token_endpoint_auth_signing_alg_values_supported": ACCEPTED_ALGS,
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
            // RFC 8414 §2: required whenever the endpoint lists private_key_jwt.
            "introspection_endpoint_auth_signing_alg_values_supported": ACCEPTED_ALGS,
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
            "revocation_endpoint_auth_signing_alg_values_supported": ACCEPTED_ALGS,
            "dpop_signing_alg_values_supported": ACCEPTED_ALGS,
            "scopes_supported": [],
        })
    }
}
