//! The barrier: the only code that encrypts or decrypts stored data.
//!
//! Every value is sealed with AES-256-GCM under the keyring's active term;
//! the associated data is the storage key itself, so a ciphertext copied to
//! another row (another tenant, path or version) fails to decrypt. The
//! stored form is `term (u32 BE) || nonce || ciphertext || tag`.
//!
//! The barrier also owns the keyring's life: it reloads the keyring when it
//! meets a term another replica added, and adds terms on rotation.

use std::sync::{Arc, RwLock};

use vern_crypto::{DataKey, SecretBytes};
use vern_store::{Expect, Key, Op, Store, StoreError, Write};

use crate::keyring::Keyring;
use crate::layout::{KEYRING, KEYRING_AAD, RESERVED_PREFIX};
use crate::view::BarrierView;
use crate::SealError;

/// Domain separation for barrier ciphertexts.
const AAD_CONTEXT: &[u8] = b"vern-barrier-v1\0";

/// How often a keyring rotation retries after losing a race to a replica.
const ROTATE_ATTEMPTS: usize = 5;

/// A decrypted value and the version it was read at.
#[derive(Debug)]
pub struct Plain {
    /// The plaintext, zeroized on drop.
    pub value: SecretBytes,
    /// The storage version, for compare-and-set on the next write.
    pub version: u64,
}

/// One write through the whole barrier, with an absolute storage key: for
/// the seal's own keys (the root token) and for views, which check their
/// keys before building one.
#[derive(Debug)]
pub(crate) struct RawWrite {
    /// The storage key.
    pub(crate) key: Key,
    /// The plaintext to encrypt, or `None` for a delete.
    pub(crate) value: Option<SecretBytes>,
    /// The compare-and-set precondition.
    pub(crate) expect: Expect,
}

/// The active keyring term, as `sys/key-status` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyStatus {
    /// The term new writes are encrypted under.
    pub term: u32,
    /// When that term was installed (Unix seconds).
    pub installed: u64,
    /// How many terms the keyring holds.
    pub terms: usize,
}

/// Encrypting access to the store; exists only while unsealed.
///
/// Outside this crate, storage is reached only through a [`BarrierView`]
/// ([`Barrier::view`]), scoped to one prefix: each domain reads and writes
/// its own keys and cannot name another's.
pub struct Barrier {
    store: Arc<dyn Store>,
    root: DataKey,
    keyring: RwLock<Arc<Keyring>>,
}

impl std::fmt::Debug for Barrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Barrier")
            .field("backend", &self.store.backend())
            .finish_non_exhaustive()
    }
}

fn aad(key: &Key) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_CONTEXT.len() + key.as_str().len());
    aad.extend_from_slice(AAD_CONTEXT);
    aad.extend_from_slice(key.as_str().as_bytes());
    aad
}

fn check_not_reserved(key: &Key) -> Result<(), SealError> {
    if key.as_str().starts_with(RESERVED_PREFIX) {
        return Err(SealError::Reserved(key.as_str().to_owned()));
    }
    Ok(())
}

pub(crate) fn keyring_key() -> Result<Key, SealError> {
    Key::new(KEYRING).map_err(|e| SealError::Corrupt(e.to_string()))
}

/// Encrypts a keyring under a root key for storage.
pub(crate) fn seal_keyring(root: &DataKey, keyring: &Keyring) -> Vec<u8> {
    root.seal(KEYRING_AAD, &keyring.encode())
}

enum OpenError {
    UnknownTerm,
    Corrupt,
}

impl Barrier {
    pub(crate) fn new(store: Arc<dyn Store>, root: DataKey, keyring: Keyring) -> Self {
        Self {
            store,
            root,
            keyring: RwLock::new(Arc::new(keyring)),
        }
    }

    /// Builds the barrier from a candidate root key: it must open the stored
    /// keyring, which is how wrong unseal shares are detected.
    pub(crate) async fn unlock(store: Arc<dyn Store>, root: DataKey) -> Result<Self, SealError> {
        let (keyring, _) = load_keyring(&*store, &root).await?;
        Ok(Self::new(store, root, keyring))
    }

    pub(crate) fn root(&self) -> &DataKey {
        &self.root
    }

    pub(crate) fn keyring(&self) -> Arc<Keyring> {
        Arc::clone(&self.keyring.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn install(&self, keyring: Keyring) {
        *self.keyring.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keyring);
    }

    /// Re-reads the keyring, to learn terms added by another replica.
    async fn reload(&self) -> Result<(), SealError> {
        let (keyring, _) = load_keyring(&*self.store, &self.root).await?;
        self.install(keyring);
        Ok(())
    }

    /// A view of the barrier scoped to `prefix` (such as `kv/secret/` or
    /// `authority/`): every key it takes is relative to the prefix and
    /// cannot leave it. A prefix must end with `/` and may not hold empty,
    /// `.` or `..` segments; the seal's own keys stay refused through any
    /// view.
    pub fn view(&self, prefix: &str) -> Result<BarrierView<'_>, SealError> {
        BarrierView::new(self, prefix)
    }

    /// The active term.
    pub fn key_status(&self) -> Result<KeyStatus, SealError> {
        let ring = self.keyring();
        let (term, entry) = ring
            .active()
            .ok_or_else(|| SealError::Corrupt(KEYRING.to_owned()))?;
        Ok(KeyStatus {
            term,
            installed: entry.installed,
            terms: ring.len(),
        })
    }

    /// Adds a keyring term; new writes use it, old terms still decrypt.
    /// Safe against concurrent rotation by other replicas (compare-and-set
    /// on the stored keyring, retried after a reload).
    pub async fn rotate(&self, now: u64) -> Result<KeyStatus, SealError> {
        for _ in 0..ROTATE_ATTEMPTS {
            let (current, version) = load_keyring(&*self.store, &self.root).await?;
            let next = current
                .rotated(now)
                .ok_or_else(|| SealError::Corrupt(KEYRING.to_owned()))?;
            let write = Write::put(keyring_key()?, seal_keyring(&self.root, &next))
                .expecting(Expect::Version(version));
            match self.store.commit(vec![write]).await {
                Ok(_) => {
                    self.install(next);
                    let status = self.key_status()?;
                    tracing::info!(term = status.term, "Keyring rotated.");
                    return Ok(status);
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(SealError::Conflict {
            key: KEYRING.to_owned(),
        })
    }

    /// Reads and decrypts one key.
    pub(crate) async fn get(&self, key: &Key) -> Result<Option<Plain>, SealError> {
        check_not_reserved(key)?;
        let Some(entry) = self.store.get(key).await? else {
            return Ok(None);
        };
        let value = match self.open(key, &entry.value) {
            Ok(v) => v,
            Err(OpenError::UnknownTerm) => {
                self.reload().await?;
                self.open(key, &entry.value)
                    .map_err(|_| SealError::Corrupt(key.as_str().to_owned()))?
            }
            Err(OpenError::Corrupt) => return Err(SealError::Corrupt(key.as_str().to_owned())),
        };
        Ok(Some(Plain {
            value,
            version: entry.version,
        }))
    }

    /// Reads and decrypts several keys from one snapshot; see
    /// [`Store::get_many`].
    pub(crate) async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Plain>>, SealError> {
        for key in keys {
            check_not_reserved(key)?;
        }
        let entries = self.store.get_many(keys).await?;
        let mut reloaded = false;
        let mut out = Vec::with_capacity(entries.len());
        for (key, entry) in keys.iter().zip(entries) {
            let Some(entry) = entry else {
                out.push(None);
                continue;
            };
            let value = match self.open(key, &entry.value) {
                Ok(v) => v,
                Err(OpenError::UnknownTerm) if !reloaded => {
                    reloaded = true;
                    self.reload().await?;
                    self.open(key, &entry.value)
                        .map_err(|_| SealError::Corrupt(key.as_str().to_owned()))?
                }
                Err(_) => return Err(SealError::Corrupt(key.as_str().to_owned())),
            };
            out.push(Some(Plain {
                value,
                version: entry.version,
            }));
        }
        Ok(out)
    }

    /// Lists keys under `prefix` (keys are not secret; values are).
    pub(crate) async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, SealError> {
        if prefix.starts_with(RESERVED_PREFIX) || RESERVED_PREFIX.starts_with(prefix) {
            // A prefix that would cover the seal's own keys lists only what
            // lies outside them.
            let keys = self.store.list(prefix, after, limit).await?;
            return Ok(keys
                .into_iter()
                .filter(|k| !k.starts_with(RESERVED_PREFIX))
                .collect());
        }
        Ok(self.store.list(prefix, after, limit).await?)
    }

    /// Encrypts and commits a batch atomically; see [`Store::commit`].
    pub(crate) async fn commit(&self, writes: Vec<RawWrite>) -> Result<Vec<u64>, SealError> {
        let sealed = writes
            .into_iter()
            .map(|w| self.prepare(w))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.store.commit(sealed).await?)
    }

    /// Commits the batches of several views in one atomic transaction: a
    /// lost compare-and-set anywhere is [`SealError::Conflict`] and nothing
    /// of any batch is written.
    pub async fn commit_batches(
        &self,
        batches: Vec<crate::view::ViewBatch>,
    ) -> Result<Vec<u64>, SealError> {
        self.commit(batches.into_iter().flat_map(|b| b.writes).collect())
            .await
    }

    /// Encrypts one write into the store's form.
    pub(crate) fn prepare(&self, w: RawWrite) -> Result<Write, SealError> {
        check_not_reserved(&w.key)?;
        let op = match w.value {
            Some(plain) => Op::Put(self.seal(&w.key, plain.expose())?),
            None => Op::Delete,
        };
        Ok(Write {
            key: w.key,
            op,
            expect: w.expect,
        })
    }

    fn seal(&self, key: &Key, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let ring = self.keyring();
        let (term, entry) = ring
            .active()
            .ok_or_else(|| SealError::Corrupt(KEYRING.to_owned()))?;
        let body = entry.key.seal(&aad(key), plaintext);
        let mut out = Vec::with_capacity(4 + body.len());
        out.extend_from_slice(&term.to_be_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    fn open(&self, key: &Key, stored: &[u8]) -> Result<SecretBytes, OpenError> {
        let (term, body) = stored.split_first_chunk::<4>().ok_or(OpenError::Corrupt)?;
        let ring = self.keyring();
        let data_key = ring
            .get(u32::from_be_bytes(*term))
            .ok_or(OpenError::UnknownTerm)?;
        data_key
            .open(&aad(key), body)
            .map_err(|_| OpenError::Corrupt)
    }
}

/// Reads the stored keyring and opens it with `root`; returns it with its
/// storage version. A root key that cannot open it is [`SealError::WrongShares`].
pub(crate) async fn load_keyring(
    store: &dyn Store,
    root: &DataKey,
) -> Result<(Keyring, u64), SealError> {
    let sealed = store
        .get(&keyring_key()?)
        .await?
        .ok_or_else(|| SealError::Corrupt(KEYRING.to_owned()))?;
    let plain = root
        .open(KEYRING_AAD, &sealed.value)
        .map_err(|_| SealError::WrongShares)?;
    let keyring =
        Keyring::decode(plain.expose()).ok_or_else(|| SealError::Corrupt(KEYRING.to_owned()))?;
    Ok((keyring, sealed.version))
}

#[cfg(test)]
mod tests;
