//! Set-up shared by the authority's integration tests: an authority over a
//! fresh, initialised and unsealed SQLite store, on a clock the test moves.
// Each test file uses only some of these.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use vern_authority::{
    AccessClaims, ApplyGate, AuthError, Authority, AuthorityConfig, ClientCredentials, ClientKind,
    ClientRecord, ClientSpec, NonceRule, Presented, TokenRequest,
};
use vern_core::ManualClock;
use vern_crypto::SecretBytes;
use vern_seal::{Barrier, Seal};
use vern_store::Store;

/// Where the tests' clocks start, in seconds since the Unix epoch.
pub const START: u64 = 1_800_000_000;

/// A clock at `secs` seconds since the Unix epoch.
pub fn clock_at(secs: u64) -> Arc<ManualClock> {
    Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(secs)))
}

/// A SQLite store in the file `name` of `dir`.
pub async fn sqlite(dir: &Path, name: &str) -> Arc<dyn Store> {
    vern_store::open(&format!("sqlite:{}", dir.join(name).display()), 2)
        .await
        .unwrap()
}

/// The barrier over `store`, initialised and unsealed with one key share.
pub async fn unsealed(store: Arc<dyn Store>, clock: Arc<ManualClock>) -> Arc<Barrier> {
    let seal = Seal::new(store, clock).await.unwrap();
    seal.init_unsealed(1, 1, &[], None).await.unwrap();
    seal.barrier().unwrap()
}

/// An authority issuing as `issuer` that asks for no DPoP nonce at the
/// token endpoint.
pub fn without_nonce(issuer: &str) -> AuthorityConfig {
    let mut config = AuthorityConfig::new(issuer);
    config.token_nonce = NonceRule::NotRequired;
    config
}

/// An authority with its barrier, its clock and the store under both.
pub struct Env {
    pub barrier: Arc<Barrier>,
    pub clock: Arc<ManualClock>,
    pub auth: Authority,
    pub store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

/// An authority with `config` over a fresh SQLite store, its clock at
/// [`START`].
pub async fn authority(config: AuthorityConfig) -> Env {
    authority_over(config, |store| store).await
}

/// Like [`authority`], with the store as `wrap` makes it.
pub async fn authority_over(
    config: AuthorityConfig,
    wrap: impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store>,
) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = wrap(sqlite(dir.path(), "a.db").await);
    let clock = clock_at(START);
    Env {
        barrier: unsealed(Arc::clone(&store), clock.clone()).await,
        auth: Authority::new(config, clock.clone()),
        clock,
        store,
        _dir: dir,
    }
}

/// The declaration of a service `name` of `acme/web/prod` holding `scopes`.
pub fn acme_service(name: &str, scopes: &[&str]) -> ClientSpec {
    ClientSpec {
        tenant: Some("acme".into()),
        project: Some("web".into()),
        environment: Some("prod".into()),
        name: name.into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        ..ClientSpec::default()
    }
}

/// Creates the client `spec`; returns its id and generated secret.
pub async fn create_with_secret(e: &Env, spec: &ClientSpec) -> (String, SecretBytes) {
    let created = e.auth.create_client(&e.barrier, spec).await.unwrap();
    (created.record.client_id, created.secret.unwrap())
}

/// Authentication with client `id`'s `secret`.
pub fn secret_credentials(id: &str, secret: &SecretBytes) -> ClientCredentials {
    ClientCredentials::Secret {
        client_id: id.to_owned(),
        secret: secret.clone(),
    }
}

/// A token request with `credentials`, for all the client's scopes and
/// without DPoP.
pub fn request<'a>(credentials: ClientCredentials) -> TokenRequest<'a> {
    TokenRequest {
        credentials,
        scope: None,
        dpop: None,
    }
}

/// Verifies `token` presented as a bearer token.
pub async fn verify_bearer(e: &Env, token: &str) -> Result<AccessClaims, AuthError> {
    e.auth
        .verify_access(&e.barrier, token, Presented::Bearer)
        .await
}

/// A caller that reaches every client.
pub struct Everything;

impl ApplyGate for Everything {
    fn manages(&self, _: &ClientRecord) -> bool {
        true
    }
    fn may_grant(&self, _: &str, _: &ClientKind, _: &[String]) -> Result<(), String> {
        Ok(())
    }
}
