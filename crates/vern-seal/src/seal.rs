//! The seal state machine: uninitialised → sealed → unsealed, plus root key
//! rotation (rekey), which needs a threshold of current shares.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tokio::sync::Mutex;
use vern_core::Clock;
use vern_crypto::{random_token, sha256, AgeRecipient, DataKey, SecretBytes, Share, KEY_LEN};
use vern_store::{Expect, Key, Store, StoreError, Write};

use crate::barrier::{keyring_key, load_keyring, seal_keyring, Barrier, KeyStatus, RawWrite};
use crate::keyring::Keyring;
use crate::layout::{ROOT_TOKEN, SEAL_CONFIG};
use crate::SealError;

/// Default number of unseal shares, as in Vault.
pub const DEFAULT_SHARES: u8 = 5;
/// Default number of shares needed to unseal, as in Vault.
pub const DEFAULT_THRESHOLD: u8 = 3;

/// Prefix of generated root tokens.
const ROOT_TOKEN_PREFIX: &str = "vern.r.";

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct SealConfig {
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

/// A share as handed to an operator: in clear, or encrypted to the
/// operator's age recipient as an ASCII-armored age file whose plaintext is
/// the share in hex.
#[derive(Debug)]
pub enum IssuedShare {
    /// The share itself.
    Clear(Share),
    /// The armored age file.
    Encrypted(String),
}

/// The result of init: shown once, never stored.
#[derive(Debug)]
pub struct InitOutput {
    /// The unseal shares, in share order.
    pub shares: Vec<IssuedShare>,
    /// The root token.
    pub root_token: SecretBytes,
}

/// Progress of a root key rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RekeyStatus {
    /// Whether a rotation is in progress.
    pub started: bool,
    /// Identifies the rotation; every share given must quote it.
    pub nonce: String,
    /// Threshold of the new share set.
    pub threshold: u8,
    /// Size of the new share set.
    pub shares: u8,
    /// Current shares given so far.
    pub progress: u8,
    /// Current shares needed (the current threshold).
    pub required: u8,
    /// Whether the new shares are encrypted to age recipients.
    pub encrypted: bool,
}

/// What a rekey update leads to.
#[derive(Debug)]
pub enum RekeyOutcome {
    /// More current shares are needed.
    Pending(RekeyStatus),
    /// The root key was replaced; here are the new shares, shown once.
    Complete {
        /// The rotation's nonce.
        nonce: String,
        /// The new shares.
        shares: Vec<IssuedShare>,
    },
}

#[derive(Debug, Default)]
struct Progress {
    shares: Vec<Share>,
    nonce: String,
}

#[derive(Debug)]
struct Rekey {
    nonce: String,
    shares: u8,
    threshold: u8,
    recipients: Vec<AgeRecipient>,
    given: Vec<Share>,
}

/// The seal of one Vern process. Replicas sharing a database each hold
/// their own seal and are unsealed independently, as in Vault.
pub struct Seal {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    initialized: AtomicBool,
    barrier: RwLock<Option<Arc<Barrier>>>,
    progress: Mutex<Progress>,
    rekey: Mutex<Option<Rekey>>,
    /// SHA-256 of the root token, read once per unseal: the record never
    /// changes after init except through [`Seal::replace_root_token`] (dev
    /// mode, one process), so no other replica can make it stale. It saves
    /// a storage read and a decryption on every root-token request.
    root_hash: RwLock<Option<[u8; 32]>>,
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

fn parse_recipients(recipients: &[String], shares: u8) -> Result<Vec<AgeRecipient>, SealError> {
    if recipients.is_empty() {
        return Ok(Vec::new());
    }
    if recipients.len() != usize::from(shares) {
        return Err(SealError::InvalidParameters(format!(
            "{} share recipients were given for {shares} shares; give one age recipient per share",
            recipients.len()
        )));
    }
    recipients
        .iter()
        .map(|r| AgeRecipient::parse(r).map_err(|e| SealError::InvalidParameters(e.to_string())))
        .collect()
}

fn issue(shares: Vec<Share>, recipients: &[AgeRecipient]) -> Result<Vec<IssuedShare>, SealError> {
    if recipients.is_empty() {
        return Ok(shares.into_iter().map(IssuedShare::Clear).collect());
    }
    shares
        .iter()
        .zip(recipients)
        .map(|(share, r)| {
            let hex = zeroize::Zeroizing::new(hex::encode(share.expose()));
            r.encrypt_armored(hex.as_bytes())
                .map(IssuedShare::Encrypted)
                .map_err(|e| SealError::InvalidParameters(e.to_string()))
        })
        .collect()
}

fn split(root: &SecretBytes, threshold: u8, shares: u8) -> Result<Vec<Share>, SealError> {
    vern_crypto::split(root, threshold, shares)
        .map_err(|e| SealError::InvalidParameters(e.to_string()))
}

fn new_nonce() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Adds a share to a set unless its identifier is already there.
fn add_share(set: &mut Vec<Share>, share: Share) -> Result<(), SealError> {
    if set
        .iter()
        .any(|s| s.expose().first() == share.expose().first())
    {
        return Err(SealError::BadShare(
            "this unseal key was already given in the current attempt".to_owned(),
        ));
    }
    set.push(share);
    Ok(())
}

impl Seal {
    /// A seal over `store`, starting sealed.
    pub async fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Result<Self, SealError> {
        let seal = Self {
            store,
            clock,
            initialized: AtomicBool::new(false),
            barrier: RwLock::new(None),
            progress: Mutex::new(Progress::default()),
            rekey: Mutex::new(None),
            root_hash: RwLock::new(None),
        };
        seal.read_config().await?;
        Ok(seal)
    }

    async fn read_config(&self) -> Result<Option<(SealConfig, u64)>, SealError> {
        let Some(entry) = self.store.get(&key(SEAL_CONFIG)?).await? else {
            return Ok(None);
        };
        let config: SealConfig = serde_json::from_slice(&entry.value)
            .map_err(|_| SealError::Corrupt(SEAL_CONFIG.to_owned()))?;
        self.initialized.store(true, Ordering::Release);
        Ok(Some((config, entry.version)))
    }

    async fn config(&self) -> Result<(SealConfig, u64), SealError> {
        self.read_config().await?.ok_or(SealError::NotInitialized)
    }

    /// Whether init has run; once true it stays true, so it is cached.
    pub async fn is_initialized(&self) -> Result<bool, SealError> {
        if self.initialized.load(Ordering::Acquire) {
            return Ok(true);
        }
        Ok(self.read_config().await?.is_some())
    }

    /// Whether the barrier is down.
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

    fn install(&self, barrier: Option<Arc<Barrier>>) {
        *self.barrier.write().unwrap_or_else(|e| e.into_inner()) = barrier;
        *self.root_hash.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Current seal status.
    pub async fn status(&self) -> Result<SealStatus, SealError> {
        let config = self.read_config().await?.map(|(c, _)| c);
        let progress = self.progress.lock().await;
        Ok(SealStatus {
            initialized: config.is_some(),
            sealed: self.is_sealed(),
            threshold: config.map_or(0, |c| c.secret_threshold),
            shares: config.map_or(0, |c| c.secret_shares),
            progress: u8::try_from(progress.shares.len()).unwrap_or(u8::MAX),
            nonce: progress.nonce.clone(),
        })
    }

    /// Initialises: creates the root key, splits it into `shares` shares
    /// with `threshold` (encrypted to `recipients`, one per share, when
    /// given), creates the keyring and the root token (the one given, or a
    /// fresh one), and leaves Vern sealed. Exactly one of several concurrent
    /// inits (also across replicas) succeeds. Nothing is written when any
    /// parameter is bad.
    pub async fn init(
        &self,
        shares: u8,
        threshold: u8,
        recipients: &[String],
        root_token: Option<SecretBytes>,
    ) -> Result<InitOutput, SealError> {
        self.init_inner(shares, threshold, recipients, root_token, false)
            .await
    }

    /// Like [`Seal::init`], but leaves Vern unsealed: for deployments whose
    /// keepers will hold the shares, as auto-unseal does in Vault.
    pub async fn init_unsealed(
        &self,
        shares: u8,
        threshold: u8,
        recipients: &[String],
        root_token: Option<SecretBytes>,
    ) -> Result<InitOutput, SealError> {
        self.init_inner(shares, threshold, recipients, root_token, true)
            .await
    }

    async fn init_inner(
        &self,
        shares: u8,
        threshold: u8,
        recipients: &[String],
        root_token: Option<SecretBytes>,
        unseal: bool,
    ) -> Result<InitOutput, SealError> {
        if self.is_initialized().await? {
            return Err(SealError::AlreadyInitialized);
        }
        let recipients = parse_recipients(recipients, shares)?;
        let root_key = SecretBytes::random(KEY_LEN);
        let issued = issue(split(&root_key, threshold, shares)?, &recipients)?;
        let root = DataKey::from_bytes(root_key)
            .map_err(|e| SealError::InvalidParameters(e.to_string()))?;
        let keyring = Keyring::generate(self.clock.unix_seconds());
        let sealed_keyring = seal_keyring(&root, &keyring);
        let config = serde_json::to_vec(&SealConfig {
            secret_shares: shares,
            secret_threshold: threshold,
        })
        .map_err(|_| SealError::InvalidParameters("unencodable seal config".to_owned()))?;
        let root_token = root_token.unwrap_or_else(|| random_token(ROOT_TOKEN_PREFIX));

        let barrier = Barrier::new(Arc::clone(&self.store), root, keyring);
        let token_write = barrier.prepare(RawWrite {
            key: key(ROOT_TOKEN)?,
            value: Some(SecretBytes::new(sha256(root_token.expose()).to_vec())),
            expect: Expect::Any,
        })?;
        let result = self
            .store
            .commit(vec![
                Write::put(key(SEAL_CONFIG)?, config).expecting(Expect::Absent),
                Write::put(keyring_key()?, sealed_keyring).expecting(Expect::Absent),
                token_write,
            ])
            .await;
        match result {
            Ok(_) => {}
            Err(StoreError::Conflict { .. }) => return Err(SealError::AlreadyInitialized),
            Err(e) => return Err(e.into()),
        }
        self.initialized.store(true, Ordering::Release);
        tracing::info!(
            shares,
            threshold,
            encrypted = !recipients.is_empty(),
            "Vern initialized."
        );
        if unseal {
            self.install(Some(Arc::new(barrier)));
            tracing::info!("Vern unsealed.");
        }
        Ok(InitOutput {
            shares: issued,
            root_token,
        })
    }

    /// Adds one unseal key (hex or base64). When the threshold is reached the
    /// root key is rebuilt and checked against the keyring; wrong shares
    /// reset the progress.
    pub async fn unseal(&self, share: &str) -> Result<SealStatus, SealError> {
        let (config, _) = self.config().await?;
        let share = decode_share(share)?;
        if !self.is_sealed() {
            return self.status().await;
        }
        let mut progress = self.progress.lock().await;
        add_share(&mut progress.shares, share)?;
        if progress.shares.len() == 1 {
            progress.nonce = new_nonce();
        }
        if progress.shares.len() >= usize::from(config.secret_threshold) {
            let shares = std::mem::take(&mut progress.shares);
            progress.nonce.clear();
            drop(progress);
            self.unseal_with(&shares).await?;
        } else {
            drop(progress);
        }
        self.status().await
    }

    /// Unseals at once from a complete set of shares (from keepers).
    pub async fn unseal_with(&self, shares: &[Share]) -> Result<(), SealError> {
        let root = vern_crypto::combine(shares).map_err(|e| SealError::BadShare(e.to_string()))?;
        let root = DataKey::from_bytes(root).map_err(|_| SealError::WrongShares)?;
        let barrier = Barrier::unlock(Arc::clone(&self.store), root).await?;
        self.install(Some(Arc::new(barrier)));
        tracing::info!("Vern unsealed.");
        Ok(())
    }

    /// Discards the current unseal attempt.
    pub async fn reset_unseal(&self) -> Result<SealStatus, SealError> {
        *self.progress.lock().await = Progress::default();
        self.status().await
    }

    /// Seals: drops the barrier so its keys zeroize once in-flight requests
    /// holding it finish. Any rekey in progress is abandoned.
    pub async fn seal(&self) {
        self.install(None);
        *self.progress.lock().await = Progress::default();
        *self.rekey.lock().await = None;
        tracing::warn!("Vern sealed.");
    }

    /// Checks a presented token against the root token, in constant time.
    pub async fn is_root_token(&self, token: &[u8]) -> Result<bool, SealError> {
        let barrier = self.barrier()?;
        let cached = *self.root_hash.read().unwrap_or_else(|e| e.into_inner());
        let expected = match cached {
            Some(hash) => hash,
            None => {
                let Some(stored) = barrier.get(&key(ROOT_TOKEN)?).await? else {
                    return Ok(false);
                };
                let hash: [u8; 32] = stored
                    .value
                    .expose()
                    .try_into()
                    .map_err(|_| SealError::Corrupt(ROOT_TOKEN.to_owned()))?;
                // Only cache while the barrier it was read through is current.
                if self.barrier().is_ok_and(|b| Arc::ptr_eq(&b, &barrier)) {
                    *self.root_hash.write().unwrap_or_else(|e| e.into_inner()) = Some(hash);
                }
                hash
            }
        };
        Ok(expected.ct_eq(&sha256(token)).into())
    }

    /// Replaces the root token; used by dev mode, which prints a known token.
    pub async fn replace_root_token(&self, token: &SecretBytes) -> Result<(), SealError> {
        self.barrier()?
            .commit(vec![RawWrite {
                key: key(ROOT_TOKEN)?,
                value: Some(SecretBytes::new(sha256(token.expose()).to_vec())),
                expect: Expect::Any,
            }])
            .await?;
        *self.root_hash.write().unwrap_or_else(|e| e.into_inner()) = None;
        Ok(())
    }

    /// The active keyring term.
    pub fn key_status(&self) -> Result<KeyStatus, SealError> {
        self.barrier()?.key_status()
    }

    /// Adds a keyring term.
    pub async fn rotate_keyring(&self) -> Result<KeyStatus, SealError> {
        self.barrier()?.rotate(self.clock.unix_seconds()).await
    }

    /// The share with 1-based `id` of the current share set, recomputed from
    /// the root key held while unsealed; how a keeper that restarted empty
    /// gets its share back.
    pub async fn share(&self, id: u8) -> Result<Share, SealError> {
        let barrier = self.barrier()?;
        let (config, _) = self.config().await?;
        let shares = split(
            barrier.root().secret(),
            config.secret_threshold,
            config.secret_shares,
        )?;
        shares
            .into_iter()
            .find(|s| s.expose().first() == Some(&id))
            .ok_or_else(|| SealError::InvalidParameters(format!("there is no share {id}")))
    }

    /// The current share set's size and threshold.
    pub async fn share_parameters(&self) -> Result<(u8, u8), SealError> {
        let (config, _) = self.config().await?;
        Ok((config.secret_shares, config.secret_threshold))
    }

    /// Current root key rotation progress.
    pub async fn rekey_status(&self) -> Result<RekeyStatus, SealError> {
        let (config, _) = self.config().await?;
        let rekey = self.rekey.lock().await;
        Ok(rekey_status(rekey.as_ref(), config))
    }

    /// Starts a root key rotation to a new share set of `shares` with
    /// `threshold`. Requires Vern unsealed; replaces any rotation running.
    pub async fn rekey_init(
        &self,
        shares: u8,
        threshold: u8,
        recipients: &[String],
    ) -> Result<RekeyStatus, SealError> {
        self.barrier()?;
        let (config, _) = self.config().await?;
        vern_crypto::split(&SecretBytes::new(vec![0; KEY_LEN]), threshold, shares)
            .map_err(|e| SealError::InvalidParameters(e.to_string()))?;
        let recipients = parse_recipients(recipients, shares)?;
        let mut rekey = self.rekey.lock().await;
        *rekey = Some(Rekey {
            nonce: new_nonce(),
            shares,
            threshold,
            recipients,
            given: Vec::new(),
        });
        tracing::warn!(shares, threshold, "Root key rotation started.");
        Ok(rekey_status(rekey.as_ref(), config))
    }

    /// Abandons a root key rotation.
    pub async fn rekey_cancel(&self) -> Result<RekeyStatus, SealError> {
        *self.rekey.lock().await = None;
        self.rekey_status().await
    }

    /// Gives one current share towards the rotation named by `nonce`. At the
    /// threshold the shares must rebuild the current root key; then a new
    /// root key re-encrypts the keyring and its new shares are returned.
    pub async fn rekey_update(&self, share: &str, nonce: &str) -> Result<RekeyOutcome, SealError> {
        let barrier = self.barrier()?;
        let (config, config_version) = self.config().await?;
        let share = decode_share(share)?;
        let mut guard = self.rekey.lock().await;
        let rekey = guard.as_mut().ok_or_else(|| {
            SealError::InvalidParameters("no root key rotation is in progress".to_owned())
        })?;
        if !bool::from(rekey.nonce.as_bytes().ct_eq(nonce.as_bytes())) {
            return Err(SealError::InvalidParameters(
                "the nonce does not match the root key rotation in progress".to_owned(),
            ));
        }
        add_share(&mut rekey.given, share)?;
        if rekey.given.len() < usize::from(config.secret_threshold) {
            return Ok(RekeyOutcome::Pending(rekey_status(Some(rekey), config)));
        }
        let Some(rekey) = guard.take() else {
            return Err(SealError::InvalidParameters(
                "no root key rotation is in progress".to_owned(),
            ));
        };
        drop(guard);

        let candidate =
            vern_crypto::combine(&rekey.given).map_err(|e| SealError::BadShare(e.to_string()))?;
        if !bool::from(candidate.expose().ct_eq(barrier.root().secret().expose())) {
            return Err(SealError::WrongShares);
        }
        let new_root_bytes = SecretBytes::random(KEY_LEN);
        let issued = issue(
            split(&new_root_bytes, rekey.threshold, rekey.shares)?,
            &rekey.recipients,
        )?;
        let new_root = DataKey::from_bytes(new_root_bytes)
            .map_err(|e| SealError::InvalidParameters(e.to_string()))?;
        let (keyring, keyring_version) = load_keyring(&*self.store, barrier.root()).await?;
        let config_bytes = serde_json::to_vec(&SealConfig {
            secret_shares: rekey.shares,
            secret_threshold: rekey.threshold,
        })
        .map_err(|_| SealError::InvalidParameters("unencodable seal config".to_owned()))?;
        self.store
            .commit(vec![
                Write::put(key(SEAL_CONFIG)?, config_bytes)
                    .expecting(Expect::Version(config_version)),
                Write::put(keyring_key()?, seal_keyring(&new_root, &keyring))
                    .expecting(Expect::Version(keyring_version)),
            ])
            .await?;
        self.install(Some(Arc::new(Barrier::new(
            Arc::clone(&self.store),
            new_root,
            keyring,
        ))));
        tracing::warn!(
            shares = rekey.shares,
            threshold = rekey.threshold,
            "Root key rotated."
        );
        Ok(RekeyOutcome::Complete {
            nonce: rekey.nonce,
            shares: issued,
        })
    }
}

fn rekey_status(rekey: Option<&Rekey>, config: SealConfig) -> RekeyStatus {
    match rekey {
        None => RekeyStatus {
            started: false,
            nonce: String::new(),
            threshold: 0,
            shares: 0,
            progress: 0,
            required: config.secret_threshold,
            encrypted: false,
        },
        Some(r) => RekeyStatus {
            started: true,
            nonce: r.nonce.clone(),
            threshold: r.threshold,
            shares: r.shares,
            progress: u8::try_from(r.given.len()).unwrap_or(u8::MAX),
            required: config.secret_threshold,
            encrypted: !r.recipients.is_empty(),
        },
    }
}

#[cfg(test)]
mod tests;
