//! The seal state machine.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tokio::sync::Mutex;
use vern_crypto::{random_token, sha256, DataKey, SecretBytes, Share, KEY_LEN};
use vern_store::{Expect, Key, Store, Write};

use crate::barrier::{Barrier, BarrierWrite};
use crate::keyring::Keyring;
use crate::SealError;

/// Default number of unseal shares, as in Vault.
pub const DEFAULT_SHARES: u8 = 5;
/// Default number of shares needed to unseal, as in Vault.
pub const DEFAULT_THRESHOLD: u8 = 3;

/// Seal configuration, stored in clear: it is read while sealed to report
/// `seal-status`, and holds nothing secret.
const SEAL_CONFIG: &str = "core/seal/config";
/// The keyring, encrypted under the root key (not the barrier, which the
/// keyring itself is needed to build).
const KEYRING: &str = "core/seal/keyring";
/// SHA-256 of the root token, stored behind the barrier.
const ROOT_TOKEN: &str = "core/auth/root-token";

/// Prefix of generated root tokens.
const ROOT_TOKEN_PREFIX: &str = "vern.r.";

#[derive(Debug, Serialize, Deserialize)]
struct SealConfig {
    #[serde(rename = "type")]
    kind: String,
    secret_shares: u8,
    secret_threshold: u8,
}

/// What `seal-status` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealStatus {
    /// Whether init has run.
    pub initialized: bool,
    /// Whether the root key is absent from memory.
    pub sealed: bool,
    /// Shares needed to unseal (0 before init).
    pub threshold: u8,
    /// Shares issued (0 before init).
    pub shares: u8,
    /// Shares given so far towards the next unseal.
    pub progress: u8,
    /// Identifies the current unseal attempt; empty when none is running.
    pub nonce: String,
}

/// The result of init: shown once, never stored.
#[derive(Debug)]
pub struct InitOutput {
    /// The unseal shares.
    pub shares: Vec<Share>,
    /// The root token.
    pub root_token: SecretBytes,
}

#[derive(Debug, Default)]
struct Progress {
    shares: Vec<Share>,
    nonce: String,
}

/// The seal of one Vern process. Replicas sharing a database each hold
/// their own seal and are unsealed independently, as in Vault.
pub struct Seal {
    store: Arc<dyn Store>,
    initialized: AtomicBool,
    barrier: RwLock<Option<Arc<Barrier>>>,
    progress: Mutex<Progress>,
}

fn key(s: &str) -> Result<Key, SealError> {
    Key::new(s).map_err(|e| SealError::Corrupt(e.to_string()))
}

/// Decodes an unseal key given as hex (Vault's `keys`) or base64
/// (`keys_base64`).
pub(crate) fn decode_share(text: &str) -> Result<Share, SealError> {
    let text = text.trim();
    let bytes = hex::decode(text)
        .ok()
        .or_else(|| base64::engine::general_purpose::STANDARD.decode(text).ok())
        .ok_or_else(|| SealError::BadShare("it is neither hex nor base64".to_owned()))?;
    let share = SecretBytes::new(bytes);
    if share.len() != KEY_LEN + 1 {
        return Err(SealError::BadShare(format!(
            "it decodes to {} bytes; unseal keys are {} bytes",
            share.len(),
            KEY_LEN + 1
        )));
    }
    Ok(share)
}

impl Seal {
    /// A seal over `store`, starting sealed.
    pub async fn new(store: Arc<dyn Store>) -> Result<Self, SealError> {
        let seal = Self {
            store,
            initialized: AtomicBool::new(false),
            barrier: RwLock::new(None),
            progress: Mutex::new(Progress::default()),
        };
        seal.read_config().await?;
        Ok(seal)
    }

    async fn read_config(&self) -> Result<Option<SealConfig>, SealError> {
        let Some(entry) = self.store.get(&key(SEAL_CONFIG)?).await? else {
            return Ok(None);
        };
        let config: SealConfig = serde_json::from_slice(&entry.value)
            .map_err(|_| SealError::Corrupt(SEAL_CONFIG.to_owned()))?;
        self.initialized.store(true, Ordering::Release);
        Ok(Some(config))
    }

    /// Whether init has run; once true it stays true, so it is cached.
    pub async fn is_initialized(&self) -> Result<bool, SealError> {
        if self.initialized.load(Ordering::Acquire) {
            return Ok(true);
        }
        Ok(self.read_config().await?.is_some())
    }

    /// Whether the barrier is up.
    pub fn is_sealed(&self) -> bool {
        self.barrier
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }

    /// The barrier, or [`SealError::Sealed`].
    pub fn barrier(&self) -> Result<Arc<Barrier>, SealError> {
        self.barrier
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(SealError::Sealed)
    }

    /// Current seal status.
    pub async fn status(&self) -> Result<SealStatus, SealError> {
        let config = self.read_config().await?;
        let progress = self.progress.lock().await;
        Ok(SealStatus {
            initialized: config.is_some(),
            sealed: self.is_sealed(),
            threshold: config.as_ref().map_or(0, |c| c.secret_threshold),
            shares: config.as_ref().map_or(0, |c| c.secret_shares),
            progress: u8::try_from(progress.shares.len()).unwrap_or(u8::MAX),
            nonce: progress.nonce.clone(),
        })
    }

    /// Initialises: creates the root key, splits it into `shares` shares
    /// with `threshold`, creates the keyring and the root token (the one
    /// given, or a fresh one), and leaves Vern sealed. Exactly one of
    /// several concurrent inits (also across replicas) succeeds.
    pub async fn init(
        &self,
        shares: u8,
        threshold: u8,
        root_token: Option<SecretBytes>,
    ) -> Result<InitOutput, SealError> {
        if self.is_initialized().await? {
            return Err(SealError::AlreadyInitialized);
        }
        let root_key = SecretBytes::random(KEY_LEN);
        let split = vern_crypto::split(&root_key, threshold, shares)
            .map_err(|e| SealError::InvalidParameters(e.to_string()))?;
        let keyring = Keyring::generate();
        let root_cipher = DataKey::from_bytes(root_key)
            .map_err(|e| SealError::InvalidParameters(e.to_string()))?;
        let sealed_keyring = root_cipher.seal(KEYRING.as_bytes(), &keyring.encode());
        let config = SealConfig {
            kind: "shamir".to_owned(),
            secret_shares: shares,
            secret_threshold: threshold,
        };
        let config = serde_json::to_vec(&config)
            .map_err(|_| SealError::InvalidParameters("unencodable seal config".to_owned()))?;
        let root_token = root_token.unwrap_or_else(|| random_token(ROOT_TOKEN_PREFIX));

        let barrier = Barrier::new(Arc::clone(&self.store), keyring);
        let token_write = barrier.prepare(BarrierWrite {
            key: key(ROOT_TOKEN)?,
            value: Some(SecretBytes::new(sha256(root_token.expose()).to_vec())),
            expect: Expect::Any,
        })?;
        let result = self
            .store
            .commit(vec![
                Write::put(key(SEAL_CONFIG)?, config).expecting(Expect::Absent),
                Write::put(key(KEYRING)?, sealed_keyring).expecting(Expect::Absent),
                token_write,
            ])
            .await;
        match result {
            Ok(_) => {}
            Err(vern_store::StoreError::Conflict { .. }) => {
                return Err(SealError::AlreadyInitialized)
            }
            Err(e) => return Err(e.into()),
        }
        self.initialized.store(true, Ordering::Release);
        tracing::info!(shares, threshold, "Vern initialized.");
        Ok(InitOutput {
            shares: split,
            root_token,
        })
    }

    /// Adds one unseal key (hex or base64). When the threshold is reached the
    /// root key is rebuilt and checked against the keyring; wrong shares
    /// reset the progress.
    pub async fn unseal(&self, share: &str) -> Result<SealStatus, SealError> {
        let config = self.read_config().await?.ok_or(SealError::NotInitialized)?;
        let share = decode_share(share)?;
        if !self.is_sealed() {
            return self.status().await;
        }
        let mut progress = self.progress.lock().await;
        if progress
            .shares
            .iter()
            .any(|s| s.expose().first() == share.expose().first())
        {
            return Err(SealError::BadShare(
                "this unseal key was already given in the current attempt".to_owned(),
            ));
        }
        if progress.shares.is_empty() {
            progress.nonce = uuid::Uuid::new_v4().to_string();
        }
        progress.shares.push(share);
        if progress.shares.len() >= usize::from(config.secret_threshold) {
            let shares = std::mem::take(&mut progress.shares);
            progress.nonce.clear();
            drop(progress);
            self.open_with(&shares).await?;
            tracing::info!("Vern unsealed.");
        } else {
            drop(progress);
        }
        self.status().await
    }

    async fn open_with(&self, shares: &[Share]) -> Result<(), SealError> {
        let root_key =
            vern_crypto::combine(shares).map_err(|e| SealError::BadShare(e.to_string()))?;
        let root_cipher = DataKey::from_bytes(root_key).map_err(|_| SealError::WrongShares)?;
        let sealed = self
            .store
            .get(&key(KEYRING)?)
            .await?
            .ok_or_else(|| SealError::Corrupt(KEYRING.to_owned()))?;
        let plain = root_cipher
            .open(KEYRING.as_bytes(), &sealed.value)
            .map_err(|_| SealError::WrongShares)?;
        let keyring = Keyring::decode(plain.expose())
            .ok_or_else(|| SealError::Corrupt(KEYRING.to_owned()))?;
        let barrier = Arc::new(Barrier::new(Arc::clone(&self.store), keyring));
        *self.barrier.write().unwrap_or_else(|e| e.into_inner()) = Some(barrier);
        Ok(())
    }

    /// Discards the current unseal attempt.
    pub async fn reset_unseal(&self) -> Result<SealStatus, SealError> {
        *self.progress.lock().await = Progress::default();
        self.status().await
    }

    /// Seals: drops the barrier so its keys zeroize once in-flight requests
    /// holding it finish.
    pub async fn seal(&self) {
        self.barrier
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        *self.progress.lock().await = Progress::default();
        tracing::warn!("Vern sealed.");
    }

    /// Checks a presented token against the root token, in constant time.
    pub async fn is_root_token(&self, token: &[u8]) -> Result<bool, SealError> {
        let barrier = self.barrier()?;
        let Some(stored) = barrier.get(&key(ROOT_TOKEN)?).await? else {
            return Ok(false);
        };
        Ok(stored.value.expose().ct_eq(&sha256(token)).into())
    }

    /// Replaces the root token; used by dev mode, which prints a known token.
    pub async fn replace_root_token(&self, token: &SecretBytes) -> Result<(), SealError> {
        let barrier = self.barrier()?;
        barrier
            .commit(vec![BarrierWrite {
                key: key(ROOT_TOKEN)?,
                value: Some(SecretBytes::new(sha256(token.expose()).to_vec())),
                expect: Expect::Any,
            }])
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
