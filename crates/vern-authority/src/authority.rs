//! The authority service: clients, token issuance and verification,
//! introspection, revocation, JWKS and metadata.

use std::sync::{Arc, RwLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use vern_core::Clock;
use vern_crypto::{random_token, SecretBytes};
use vern_seal::{Barrier, BarrierWrite, SealError};
use vern_store::{Expect, Key, StoreError};

use crate::clients::{ClientKind, ClientRecord, ClientSpec, CreatedClient};
use crate::dpop::{self, DpopCheck, NonceKey, NonceRule, ReplayCache};
use crate::jwk::PublicJwk;
use crate::jws::Unverified;
use crate::keys::KeySet;
use crate::AuthError;

const CLIENTS: &str = "authority/clients/";
const REVOKED: &str = "authority/revoked/";
const ASSERTIONS: &str = "authority/assertion-jti/";
const HMAC_KEY: &str = "authority/hmac-key";
/// `client_assertion_type` of RFC 7523 client authentication.
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
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
        }
    }

    /// The token endpoint's URL.
    pub fn token_endpoint(&self) -> String {
        format!("{}/oauth2/token", self.issuer)
    }
}

/// How the client authenticates at the token endpoint.
#[derive(Debug)]
pub enum ClientCredentials {
    /// `client_secret_basic` or `client_secret_post`.
    Secret {
        /// The client id.
        client_id: String,
        /// The secret.
        secret: SecretBytes,
    },
    /// `tls_client_auth` (RFC 8705): the verified client certificate of the
    /// connection.
    Tls {
        /// The `client_id` form field.
        client_id: String,
        /// The certificate, DER.
        certificate: Vec<u8>,
    },
    /// `private_key_jwt` (RFC 7523).
    Assertion {
        /// The `client_id` form field, when sent (must match the assertion).
        client_id: Option<String>,
        /// The signed assertion.
        assertion: String,
    },
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

/// An issued access token.
#[derive(Debug)]
pub struct IssuedToken {
    /// The JWT.
    pub access_token: String,
    /// `DPoP` or `Bearer`.
    pub token_type: &'static str,
    /// Lifetime in seconds.
    pub expires_in: u64,
    /// Granted scopes, space-separated.
    pub scope: String,
}

/// How a token reached the API.
#[derive(Debug, Clone, Copy)]
pub enum Presented<'a> {
    /// `Authorization: Bearer` or `X-Vault-Token`.
    Bearer,
    /// `Authorization: DPoP` with this proof check.
    Dpop(DpopCheck<'a>),
}

/// The reach of whoever applies a client set: which existing clients it
/// may change or prune, and which clients it may create.
pub trait ApplyGate: Sync {
    /// Whether the caller manages this existing client.
    fn manages(&self, existing: &ClientRecord) -> bool;
    /// Whether the caller may make a client like this one (created, or the
    /// new state of a changed one); the error says what it lacks.
    fn may_grant(
        &self,
        client_id: &str,
        kind: &ClientKind,
        scopes: &[String],
    ) -> Result<(), String>;
}

/// The reach of a caller trusted with every client: the platform's own
/// set-up and tests, never a request.
struct Unrestricted;

impl ApplyGate for Unrestricted {
    fn manages(&self, _: &ClientRecord) -> bool {
        true
    }
    fn may_grant(&self, _: &str, _: &ClientKind, _: &[String]) -> Result<(), String> {
        Ok(())
    }
}

/// The verified claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessClaims {
    /// `client_id` (= `sub`).
    pub client_id: String,
    /// The token's id.
    pub jti: String,
    /// Expiry (Unix seconds).
    pub exp: u64,
    /// Issued at.
    pub iat: u64,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Service scope or operator roles.
    pub kind: ClientKind,
    /// `cnf.jkt`, for DPoP-bound tokens.
    pub jkt: Option<String>,
    /// `cnf.x5t#S256`, for certificate-bound tokens.
    pub x5t: Option<String>,
}

/// The RFC 8705 thumbprint of a certificate: base64url SHA-256 of its DER.
pub fn certificate_thumbprint(der: &[u8]) -> String {
    B64.encode(vern_crypto::sha256(der))
}

/// The RFC 9068 / RFC 8725 claim checks of a signature-verified access
/// token: `iss`, `aud`, `exp`, `nbf`, `iat` (with leeway), and the shape of
/// Vern's claims. Shared by the authority and the embeddable verifier.
pub(crate) fn check_claims(
    jwt: &Unverified,
    issuer: &str,
    audience: &str,
    leeway: u64,
    now: u64,
) -> Result<AccessClaims, AuthError> {
    if claim_str(jwt, "iss")? != issuer {
        return Err(AuthError::Claim("iss is not this issuer".to_owned()));
    }
    if !audience_has(jwt.claims.get("aud"), &[audience]) {
        return Err(AuthError::Claim(
            "aud does not name this service".to_owned(),
        ));
    }
    let exp = claim_u64(jwt, "exp")?;
    if now > exp + leeway {
        return Err(AuthError::Expired);
    }
    let iat = claim_u64(jwt, "iat")?;
    let nbf = jwt.claims.get("nbf").and_then(Value::as_u64).unwrap_or(iat);
    if nbf > now + leeway || iat > now + leeway {
        return Err(AuthError::NotYetValid);
    }
    let client_id = claim_str(jwt, "client_id")?.to_owned();
    if claim_str(jwt, "sub")? != client_id {
        return Err(AuthError::Claim("sub and client_id differ".to_owned()));
    }
    // Operators carry roles (and a tenant operator its tenant); services
    // carry their scope and never roles.
    let kind = match (jwt.claims.get("tenant"), jwt.claims.get("roles")) {
        (_, Some(Value::Array(roles))) => ClientKind::Operator {
            roles: roles
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            tenant: match jwt.claims.get("tenant") {
                Some(_) => Some(claim_str(jwt, "tenant")?.to_owned()),
                None => None,
            },
        },
        (Some(_), None) => ClientKind::Service {
            tenant: claim_str(jwt, "tenant")?.to_owned(),
            project: claim_str(jwt, "project")?.to_owned(),
            environment: claim_str(jwt, "environment")?.to_owned(),
        },
        _ => {
            return Err(AuthError::Claim(
                "neither a tenant scope nor roles".to_owned(),
            ))
        }
    };
    Ok(AccessClaims {
        client_id,
        jti: claim_str(jwt, "jti")?.to_owned(),
        exp,
        iat,
        scopes: claim_str(jwt, "scope")
            .unwrap_or("")
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        kind,
        jkt: jwt
            .claims
            .get("cnf")
            .and_then(|c| c.get("jkt"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        x5t: jwt
            .claims
            .get("cnf")
            .and_then(|c| c.get("x5t#S256"))
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// RFC 8705 §3: a certificate-bound token is accepted only over a
/// connection authenticated with that certificate.
pub(crate) fn check_certificate(
    claims: &AccessClaims,
    peer: Option<&[u8]>,
) -> Result<(), AuthError> {
    let Some(expected) = &claims.x5t else {
        return Ok(());
    };
    let presented = peer.map(certificate_thumbprint);
    if presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(expected.as_bytes()))) {
        Ok(())
    } else {
        Err(AuthError::Claim(
            "the token is bound to a client certificate this connection did not present".to_owned(),
        ))
    }
}

/// Checks `typ` and `kid` of an access token header; returns the kid.
pub(crate) fn access_header(jwt: &Unverified) -> Result<&str, AuthError> {
    let typ = jwt.header_str("typ").unwrap_or("");
    if !typ.eq_ignore_ascii_case("at+jwt") && !typ.eq_ignore_ascii_case("application/at+jwt") {
        return Err(AuthError::Claim("typ must be at+jwt".to_owned()));
    }
    jwt.header_str("kid")
        .ok_or_else(|| AuthError::Claim("kid is missing".to_owned()))
}

/// What an apply did (or, dry, would do).
#[derive(Debug, Default)]
pub struct ApplyPlan {
    /// Clients created.
    pub create: Vec<String>,
    /// Clients updated, with the fields that changed.
    pub update: Vec<(String, Vec<String>)>,
    /// Clients deleted (only with prune).
    pub delete: Vec<String>,
    /// Clients already as declared.
    pub unchanged: Vec<String>,
    /// Clients that exist but are not declared, kept because prune was off.
    pub kept: Vec<String>,
    /// Secrets of created clients, shown once.
    pub secrets: Vec<(String, SecretBytes)>,
}

fn record_write(k: Key, record: &ClientRecord, expect: Expect) -> Result<BarrierWrite, AuthError> {
    let bytes = serde_json::to_vec(record).map_err(|e| AuthError::Invalid(e.to_string()))?;
    Ok(BarrierWrite {
        key: k,
        value: Some(SecretBytes::new(bytes)),
        expect,
    })
}

/// The token authority of one Vern process.
pub struct Authority {
    config: AuthorityConfig,
    clock: Arc<dyn Clock>,
    replay: ReplayCache,
    keys: RwLock<Option<(Arc<KeySet>, u64)>>,
    hmac_key: RwLock<Option<Arc<SecretBytes>>>,
}

fn key(s: String) -> Result<Key, AuthError> {
    Key::new(s).map_err(|e| AuthError::Invalid(e.to_string()))
}

fn conflict(e: &AuthError) -> bool {
    matches!(
        e,
        AuthError::Seal(SealError::Store(StoreError::Conflict { .. }))
    )
}

fn claim_str<'a>(jwt: &'a Unverified, name: &str) -> Result<&'a str, AuthError> {
    jwt.claims
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| AuthError::Claim(format!("`{name}` is missing")))
}

fn claim_u64(jwt: &Unverified, name: &str) -> Result<u64, AuthError> {
    jwt.claims
        .get(name)
        .and_then(Value::as_u64)
        .ok_or_else(|| AuthError::Claim(format!("`{name}` is missing")))
}

/// Whether `aud` (a string or an array) contains `want`.
fn audience_has(aud: Option<&Value>, want: &[&str]) -> bool {
    match aud {
        Some(Value::String(s)) => want.contains(&s.as_str()),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .any(|s| want.contains(&s)),
        _ => false,
    }
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
    }

    fn now(&self) -> u64 {
        self.clock.unix_seconds()
    }

    async fn key_set(&self, b: &Barrier, force: bool) -> Result<Arc<KeySet>, AuthError> {
        let now = self.now();
        if !force {
            if let Some((set, at)) = self.keys.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
                if now < at + KEY_CACHE_SECS {
                    return Ok(Arc::clone(set));
                }
            }
        }
        let set = Arc::new(KeySet::load(b, now, self.config.signing_alg).await?);
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Some((Arc::clone(&set), now));
        Ok(set)
    }

    /// The per-deployment HMAC key (client secrets, DPoP nonces).
    async fn hmac_key(&self, b: &Barrier) -> Result<Arc<SecretBytes>, AuthError> {
        if let Some(k) = self
            .hmac_key
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            return Ok(Arc::clone(k));
        }
        let k = key(HMAC_KEY.to_owned())?;
        for _ in 0..3 {
            if let Some(plain) = b.get(&k).await? {
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
            match b.commit(vec![write]).await {
                Ok(_) => {}
                Err(SealError::Store(StoreError::Conflict { .. })) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(AuthError::Invalid(
            "cannot establish the authority's HMAC key".to_owned(),
        ))
    }

    async fn secret_hmac(&self, b: &Barrier, secret: &[u8]) -> Result<String, AuthError> {
        let k = self.hmac_key(b).await?;
        let mut mac = Hmac::<Sha256>::new_from_slice(k.expose())
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        mac.update(b"vern/client-secret/v1");
        mac.update(secret);
        Ok(B64.encode(mac.finalize().into_bytes()))
    }

    /// A fresh DPoP nonce, valid on every replica for five minutes.
    pub async fn dpop_nonce(&self, b: &Barrier) -> Result<String, AuthError> {
        Ok(NonceKey(SecretBytes::new(self.hmac_key(b).await?.expose().to_vec())).issue(self.now()))
    }

    /// Creates a client with no caller's reach to respect: for the
    /// platform's own set-up and tests; requests use
    /// [`Authority::create_client_with`]. A client without keys gets a generated secret
    /// (256 bits), returned here once and stored only as an HMAC.
    pub async fn create_client(
        &self,
        b: &Barrier,
        spec: &ClientSpec,
    ) -> Result<CreatedClient, AuthError> {
        self.create_client_with(b, spec, &Unrestricted).await
    }

    /// Creates a client on behalf of a caller whose reach is `gate`: the
    /// client must pass [`ApplyGate::may_grant`].
    pub async fn create_client_with(
        &self,
        b: &Barrier,
        spec: &ClientSpec,
        gate: &dyn ApplyGate,
    ) -> Result<CreatedClient, AuthError> {
        let (client_id, kind) = spec.validate()?;
        gate.may_grant(&client_id, &kind, &spec.scopes)
            .map_err(AuthError::Forbidden)?;
        let (record, secret) = self.new_record(b, spec, &client_id, kind).await?;
        let bytes = serde_json::to_vec(&record).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let result = b
            .commit(vec![BarrierWrite {
                key: key(format!("{CLIENTS}{client_id}"))?,
                value: Some(SecretBytes::new(bytes)),
                expect: Expect::Absent,
            }])
            .await;
        match result {
            Ok(_) => {}
            Err(SealError::Store(StoreError::Conflict { .. })) => {
                return Err(AuthError::Exists(client_id))
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(client_id = %record.client_id, "Client created.");
        Ok(CreatedClient { record, secret })
    }

    /// A new client record and its generated secret (none for clients that
    /// authenticate with keys or a certificate).
    async fn new_record(
        &self,
        b: &Barrier,
        spec: &ClientSpec,
        client_id: &str,
        kind: ClientKind,
    ) -> Result<(ClientRecord, Option<SecretBytes>), AuthError> {
        let secret = (spec.jwks.is_empty() && spec.tls_client_auth_san.is_none())
            .then(|| random_token("vern.cs."));
        let secret_hmac = match &secret {
            Some(s) => Some(self.secret_hmac(b, s.expose()).await?),
            None => None,
        };
        let record = ClientRecord {
            client_id: client_id.to_owned(),
            name: spec.name.clone(),
            kind,
            secret_hmac,
            jwks: spec.jwks.clone(),
            scopes: spec.scopes.clone(),
            dpop_bound: spec.dpop_bound,
            token_ttl: spec.token_ttl,
            tls_client_auth_san: spec.tls_client_auth_san.clone(),
            created: self.now(),
        };
        Ok((record, secret))
    }

    /// Reads a client.
    pub async fn client(&self, b: &Barrier, client_id: &str) -> Result<ClientRecord, AuthError> {
        let k = key(format!("{CLIENTS}{client_id}"))
            .map_err(|_| AuthError::NoClient(client_id.to_owned()))?;
        let plain = b
            .get(&k)
            .await?
            .ok_or_else(|| AuthError::NoClient(client_id.to_owned()))?;
        serde_json::from_slice(plain.value.expose())
            .map_err(|_| AuthError::Seal(SealError::Corrupt(format!("client {client_id}"))))
    }

    /// Every client id.
    pub async fn client_ids(&self, b: &Barrier) -> Result<Vec<String>, AuthError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = b.list(CLIENTS, after.as_deref(), 1000).await?;
            let Some(last) = page.last().cloned() else {
                break;
            };
            out.extend(page.iter().map(|k| k[CLIENTS.len()..].to_owned()));
            if page.len() < 1000 {
                break;
            }
            after = Some(last);
        }
        Ok(out)
    }

    /// Brings the clients in line with `specs` (GitOps): creates missing
    /// ones, updates changed settings (secrets and keys of existing clients
    /// are kept unless the spec's keys changed), and deletes clients not in
    /// `specs` only when `prune`. Everything is one atomic, compare-and-set
    /// guarded batch: a concurrent change fails the whole apply, and a bad
    /// spec writes nothing. With `dry_run`, only the plan is returned.
    ///
    /// `gate` is the caller's reach: every client created or changed must
    /// pass [`ApplyGate::may_grant`], an existing client is changed only if
    /// the caller [`ApplyGate::manages`] it, and pruning deletes only such
    /// clients (the others are kept).
    pub async fn apply(
        &self,
        b: &Barrier,
        specs: &[ClientSpec],
        prune: bool,
        dry_run: bool,
        gate: &dyn ApplyGate,
    ) -> Result<ApplyPlan, AuthError> {
        let mut desired = std::collections::BTreeMap::new();
        for spec in specs {
            let (id, kind) = spec.validate()?;
            gate.may_grant(&id, &kind, &spec.scopes)
                .map_err(AuthError::Forbidden)?;
            if desired.insert(id.clone(), (spec, kind)).is_some() {
                return Err(AuthError::Invalid(format!(
                    "client `{id}` is declared twice"
                )));
            }
        }
        let existing = self.client_ids(b).await?;
        let mut plan = ApplyPlan::default();
        let mut writes = Vec::new();
        for (id, (spec, kind)) in &desired {
            let k = key(format!("{CLIENTS}{id}"))?;
            match b.get(&k).await? {
                None => {
                    plan.create.push(id.clone());
                    if !dry_run {
                        let (record, secret) = self.new_record(b, spec, id, kind.clone()).await?;
                        writes.push(record_write(k, &record, Expect::Absent)?);
                        if let Some(s) = secret {
                            plan.secrets.push((id.clone(), s));
                        }
                    }
                }
                Some(plain) => {
                    let mut record: ClientRecord = serde_json::from_slice(plain.value.expose())
                        .map_err(|_| AuthError::Seal(SealError::Corrupt(format!("client {id}"))))?;
                    if !gate.manages(&record) {
                        return Err(AuthError::Forbidden(format!(
                            "client `{id}` exists and is not yours to change"
                        )));
                    }
                    let mut changes = Vec::new();
                    if record.scopes != spec.scopes {
                        changes.push("scopes".to_owned());
                        record.scopes.clone_from(&spec.scopes);
                    }
                    if record.dpop_bound != spec.dpop_bound {
                        changes.push("dpop_bound".to_owned());
                        record.dpop_bound = spec.dpop_bound;
                    }
                    if record.token_ttl != spec.token_ttl {
                        changes.push("token_ttl".to_owned());
                        record.token_ttl = spec.token_ttl;
                    }
                    if record.jwks != spec.jwks {
                        changes.push("jwks".to_owned());
                        record.jwks.clone_from(&spec.jwks);
                    }
                    if record.tls_client_auth_san != spec.tls_client_auth_san {
                        changes.push("tls_client_auth_san".to_owned());
                        record
                            .tls_client_auth_san
                            .clone_from(&spec.tls_client_auth_san);
                    }
                    if record.kind != *kind {
                        changes.push("roles".to_owned());
                        record.kind = kind.clone();
                    }
                    if changes.is_empty() {
                        plan.unchanged.push(id.clone());
                    } else {
                        writes.push(record_write(k, &record, Expect::Version(plain.version))?);
                        plan.update.push((id.clone(), changes));
                    }
                }
            }
        }
        for id in existing.iter().filter(|id| !desired.contains_key(*id)) {
            if !prune {
                plan.kept.push(id.clone());
                continue;
            }
            let k = key(format!("{CLIENTS}{id}"))?;
            let Some(plain) = b.get(&k).await? else {
                continue;
            };
            let record: ClientRecord = serde_json::from_slice(plain.value.expose())
                .map_err(|_| AuthError::Seal(SealError::Corrupt(format!("client {id}"))))?;
            if gate.manages(&record) {
                writes.push(BarrierWrite {
                    key: k,
                    value: None,
                    expect: Expect::Version(plain.version),
                });
                plan.delete.push(id.clone());
            } else {
                plan.kept.push(id.clone());
            }
        }
        if !dry_run && !writes.is_empty() {
            b.commit(writes).await.map_err(|e| match e {
                SealError::Store(StoreError::Conflict { .. }) => {
                    AuthError::Invalid("clients changed while applying; run apply again".to_owned())
                }
                other => other.into(),
            })?;
            tracing::info!(
                created = plan.create.len(),
                updated = plan.update.len(),
                deleted = plan.delete.len(),
                "Clients applied."
            );
        }
        Ok(plan)
    }

    /// Deletes a client; its tokens stop working when they expire (revoke
    /// them to stop them at once).
    pub async fn delete_client(&self, b: &Barrier, client_id: &str) -> Result<(), AuthError> {
        self.client(b, client_id).await?;
        b.commit(vec![BarrierWrite {
            key: key(format!("{CLIENTS}{client_id}"))?,
            value: None,
            expect: Expect::Any,
        }])
        .await?;
        Ok(())
    }

    async fn authenticate(
        &self,
        b: &Barrier,
        creds: &ClientCredentials,
    ) -> Result<ClientRecord, AuthError> {
        match creds {
            ClientCredentials::Secret { client_id, secret } => {
                let client = self.claimed_client(b, client_id).await?;
                let presented = self.secret_hmac(b, secret.expose()).await?;
                let ok = client
                    .secret_hmac
                    .as_ref()
                    .is_some_and(|h| bool::from(h.as_bytes().ct_eq(presented.as_bytes())));
                if ok {
                    Ok(client)
                } else {
                    Err(AuthError::InvalidClient)
                }
            }
            ClientCredentials::Assertion {
                client_id,
                assertion,
            } => {
                self.check_assertion(b, client_id.as_deref(), assertion)
                    .await
            }
            ClientCredentials::Tls {
                client_id,
                certificate,
            } => {
                let client = self.claimed_client(b, client_id).await?;
                // The chain was verified against the client CA during the
                // handshake; here the certificate must name this client.
                let names = vern_pki::peer_identities(&certificate.as_slice().into());
                match &client.tls_client_auth_san {
                    Some(san) if names.iter().any(|n| n == san) => Ok(client),
                    _ => Err(AuthError::InvalidClient),
                }
            }
        }
    }

    /// The client a credential names; an unknown one is just a failed
    /// authentication, so that ids cannot be probed.
    async fn claimed_client(
        &self,
        b: &Barrier,
        client_id: &str,
    ) -> Result<ClientRecord, AuthError> {
        self.client(b, client_id).await.map_err(|e| match e {
            AuthError::NoClient(_) => AuthError::InvalidClient,
            other => other,
        })
    }

    /// RFC 7523 §3: `iss` = `sub` = the client, `aud` the token endpoint
    /// or issuer, `exp` in the future, a `jti` never seen before (checked
    /// in storage, so across replicas), signed by one of the client's keys.
    async fn check_assertion(
        &self,
        b: &Barrier,
        form_client: Option<&str>,
        assertion: &str,
    ) -> Result<ClientRecord, AuthError> {
        let jwt = Unverified::parse(assertion).map_err(|_| AuthError::InvalidClient)?;
        let iss = claim_str(&jwt, "iss").map_err(|_| AuthError::InvalidClient)?;
        let sub = claim_str(&jwt, "sub").map_err(|_| AuthError::InvalidClient)?;
        if iss != sub || form_client.is_some_and(|c| c != iss) {
            return Err(AuthError::InvalidClient);
        }
        let client = self
            .client(b, iss)
            .await
            .map_err(|_| AuthError::InvalidClient)?;
        let keys: Vec<PublicJwk> = client
            .jwks
            .iter()
            .filter_map(|j| PublicJwk::parse(j).ok())
            .collect();
        let kid = jwt.header_str("kid");
        let verified = keys
            .iter()
            .filter(|k| {
                kid.is_none_or(|kid| {
                    client
                        .jwks
                        .iter()
                        .any(|j| j.get("kid").and_then(Value::as_str) == Some(kid))
                        || k.thumbprint() == kid
                })
            })
            .any(|k| jwt.verify(k).is_ok());
        if !verified {
            return Err(AuthError::InvalidClient);
        }
        let endpoint = self.config.token_endpoint();
        if !audience_has(
            jwt.claims.get("aud"),
            &[endpoint.as_str(), self.config.issuer.as_str()],
        ) {
            return Err(AuthError::InvalidClient);
        }
        let now = self.now();
        let exp = claim_u64(&jwt, "exp").map_err(|_| AuthError::InvalidClient)?;
        if exp + self.config.leeway < now || exp > now + self.config.max_ttl {
            return Err(AuthError::InvalidClient);
        }
        if jwt
            .claims
            .get("nbf")
            .and_then(Value::as_u64)
            .is_some_and(|nbf| nbf > now + self.config.leeway)
        {
            return Err(AuthError::InvalidClient);
        }
        let jti = claim_str(&jwt, "jti").map_err(|_| AuthError::InvalidClient)?;
        let marker = B64.encode(vern_crypto::sha256(format!("{iss}\n{jti}").as_bytes()));
        let write = BarrierWrite {
            key: key(format!("{ASSERTIONS}{marker}"))?,
            value: Some(SecretBytes::new(exp.to_be_bytes().to_vec())),
            expect: Expect::Absent,
        };
        match b.commit(vec![write]).await {
            Ok(_) => Ok(client),
            Err(SealError::Store(StoreError::Conflict { .. })) => {
                tracing::warn!(client_id = %iss, "Client assertion replayed.");
                Err(AuthError::InvalidClient)
            }
            Err(e) => Err(e.into()),
        }
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
        let ttl = client
            .token_ttl
            .unwrap_or(self.config.default_ttl)
            .min(self.config.max_ttl);
        let keys = self.key_set(b, false).await?;
        let signer = keys
            .active(now)
            .ok_or_else(|| AuthError::Invalid("no signing key is active".to_owned()))?;
        let mut claims = json!({
            "iss": self.config.issuer,
            "sub": client.client_id,
            "aud": self.config.audience,
            "exp": now + ttl,
            "iat": now,
            "nbf": now,
            "jti": uuid::Uuid::new_v4().to_string(),
            "client_id": client.client_id,
            "scope": granted.join(" "),
        });
        match &client.kind {
            ClientKind::Service {
                tenant,
                project,
                environment,
            } => {
                claims["tenant"] = json!(tenant);
                claims["project"] = json!(project);
                claims["environment"] = json!(environment);
            }
            ClientKind::Operator { roles, tenant } => {
                claims["roles"] = json!(roles);
                if let Some(t) = tenant {
                    claims["tenant"] = json!(t);
                }
            }
        }
        let mut cnf = serde_json::Map::new();
        if let Some(jkt) = &jkt {
            cnf.insert("jkt".to_owned(), json!(jkt));
        }
        if let ClientCredentials::Tls { certificate, .. } = &req.credentials {
            cnf.insert(
                "x5t#S256".to_owned(),
                json!(certificate_thumbprint(certificate)),
            );
        }
        if !cnf.is_empty() {
            claims["cnf"] = Value::Object(cnf);
        }
        let header = json!({ "typ": "at+jwt", "kid": signer.kid });
        Ok(IssuedToken {
            access_token: signer.signing.sign(header, &claims),
            token_type: if jkt.is_some() { "DPoP" } else { "Bearer" },
            expires_in: ttl,
            scope: granted.join(" "),
        })
    }

    /// Verifies a token's signature and claims (RFC 9068, RFC 8725), but
    /// not revocation or sender binding.
    async fn verify_jwt(&self, b: &Barrier, token: &str) -> Result<AccessClaims, AuthError> {
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
        check_claims(
            &jwt,
            &self.config.issuer,
            &self.config.audience,
            self.config.leeway,
            self.now(),
        )
    }

    async fn is_revoked(&self, b: &Barrier, jti: &str) -> Result<bool, AuthError> {
        let k = key(format!(
            "{REVOKED}{}",
            B64.encode(vern_crypto::sha256(jti.as_bytes()))
        ))?;
        Ok(b.get(&k).await?.is_some())
    }

    /// Verifies an access token presented to Vern's API, with its sender
    /// binding: a DPoP-bound token needs the `DPoP` scheme and a valid
    /// proof by its key; an unbound one must not claim DPoP.
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
        if self.is_revoked(b, &claims.jti).await? {
            return Err(AuthError::Revoked);
        }
        Ok(claims)
    }

    /// RFC 7662: the claims of an active token, `None` for anything else.
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
        if self.is_revoked(b, &claims.jti).await? {
            return Ok(None);
        }
        Ok(Some(claims))
    }

    /// RFC 7009: revokes a token this authority issued to `client_id`
    /// (any client when `None`, for operators). Unknown or invalid tokens
    /// are not an error.
    pub async fn revoke(
        &self,
        b: &Barrier,
        token: &str,
        client_id: Option<&str>,
    ) -> Result<(), AuthError> {
        let Ok(claims) = self.verify_jwt(b, token).await else {
            return Ok(());
        };
        if client_id.is_some_and(|c| c != claims.client_id) {
            return Err(AuthError::UnauthorizedClient(
                "a client may revoke only its own tokens".to_owned(),
            ));
        }
        let k = key(format!(
            "{REVOKED}{}",
            B64.encode(vern_crypto::sha256(claims.jti.as_bytes()))
        ))?;
        let result = b
            .commit(vec![BarrierWrite {
                key: k,
                value: Some(SecretBytes::new(claims.exp.to_be_bytes().to_vec())),
                expect: Expect::Any,
            }])
            .await;
        match result {
            Ok(_) => {
                tracing::info!(client_id = %claims.client_id, "Token revoked.");
                Ok(())
            }
            Err(e) => {
                let e = AuthError::from(e);
                if conflict(&e) {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Deletes revocation markers and assertion `jti` markers whose tokens
    /// or assertions have expired (past the leeway): from then on, the
    /// expiry check alone refuses them. Returns how many were removed.
    pub async fn sweep(&self, b: &Barrier) -> Result<usize, AuthError> {
        let now = self.now();
        let mut removed = 0;
        for prefix in [REVOKED, ASSERTIONS] {
            let mut after: Option<String> = None;
            loop {
                let page = b.list(prefix, after.as_deref(), 500).await?;
                let Some(last) = page.last().cloned() else {
                    break;
                };
                let mut writes = Vec::new();
                for name in &page {
                    let k = key(name.clone())?;
                    let Some(plain) = b.get(&k).await? else {
                        continue;
                    };
                    let exp = <[u8; 8]>::try_from(plain.value.expose())
                        .map(u64::from_be_bytes)
                        .unwrap_or(0);
                    if exp.saturating_add(self.config.leeway) < now {
                        writes.push(BarrierWrite {
                            key: k,
                            value: None,
                            expect: Expect::Version(plain.version),
                        });
                    }
                }
                let n = writes.len();
                if n > 0 {
                    match b.commit(writes).await {
                        Ok(_) => removed += n,
                        // A concurrent sweep on another replica got there
                        // first; the next run picks up what is left.
                        Err(SealError::Store(StoreError::Conflict { .. })) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                if page.len() < 500 {
                    break;
                }
                after = Some(last);
            }
        }
        Ok(removed)
    }

    /// Authenticates a client for introspection or revocation.
    pub async fn authenticate_client(
        &self,
        b: &Barrier,
        creds: &ClientCredentials,
    ) -> Result<ClientRecord, AuthError> {
        self.authenticate(b, creds).await
    }

    /// The published keys (RFC 7517 JWK set).
    pub async fn jwks(&self, b: &Barrier) -> Result<Value, AuthError> {
        let keys = self.key_set(b, false).await?;
        let list: Vec<Value> = keys
            .published(self.now(), self.config.max_ttl + self.config.leeway)
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
            self.config.max_ttl + self.config.leeway,
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
            "token_endpoint_auth_signing_alg_values_supported": ["EdDSA", "ES256"],
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
            "dpop_signing_alg_values_supported": ["EdDSA", "ES256"],
            "scopes_supported": [],
        })
    }
}
