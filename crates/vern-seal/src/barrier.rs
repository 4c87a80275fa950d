//! The barrier: the only code that encrypts or decrypts stored data.
//!
//! Every value is sealed with AES-256-GCM under the keyring's active term;
//! the associated data is the storage key itself, so a ciphertext copied to
//! another row (another tenant, path or version) fails to decrypt. The
//! stored form is `term (u32 BE) || nonce || ciphertext || tag`.

use std::sync::Arc;

use vern_crypto::SecretBytes;
use vern_store::{Expect, Key, Op, Store, Write};

use crate::keyring::Keyring;
use crate::SealError;

/// Keys under this prefix belong to the seal itself and never pass through
/// the barrier: they hold the seal configuration and the keyring, which the
/// barrier cannot decrypt without first having been built from them.
pub(crate) const RESERVED_PREFIX: &str = "core/seal/";

/// Domain separation for barrier ciphertexts.
const AAD_CONTEXT: &[u8] = b"vern-barrier-v1\0";

/// A decrypted value and the version it was read at.
#[derive(Debug)]
pub struct Plain {
    /// The plaintext, zeroized on drop.
    pub value: SecretBytes,
    /// The storage version, for compare-and-set on the next write.
    pub version: u64,
}

/// Encrypting access to the store; exists only while unsealed.
pub struct Barrier {
    store: Arc<dyn Store>,
    keyring: Keyring,
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

impl Barrier {
    pub(crate) fn new(store: Arc<dyn Store>, keyring: Keyring) -> Self {
        Self { store, keyring }
    }

    /// Reads and decrypts one key.
    pub async fn get(&self, key: &Key) -> Result<Option<Plain>, SealError> {
        check_not_reserved(key)?;
        let Some(entry) = self.store.get(key).await? else {
            return Ok(None);
        };
        let value = self.open(key, &entry.value)?;
        Ok(Some(Plain {
            value,
            version: entry.version,
        }))
    }

    /// Lists keys under `prefix` (keys are not secret; values are).
    pub async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, SealError> {
        if prefix.starts_with(RESERVED_PREFIX) {
            return Err(SealError::Reserved(prefix.to_owned()));
        }
        Ok(self.store.list(prefix, after, limit).await?)
    }

    /// Encrypts and commits a batch atomically; see [`Store::commit`].
    pub async fn commit(&self, writes: Vec<BarrierWrite>) -> Result<Vec<u64>, SealError> {
        let sealed = writes
            .into_iter()
            .map(|w| self.prepare(w))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.store.commit(sealed).await?)
    }

    /// Encrypts one write into the store's form.
    pub(crate) fn prepare(&self, w: BarrierWrite) -> Result<Write, SealError> {
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
        let (term, data_key) = self
            .keyring
            .active()
            .ok_or_else(|| SealError::Corrupt("keyring".to_owned()))?;
        let body = data_key.seal(&aad(key), plaintext);
        let mut out = Vec::with_capacity(4 + body.len());
        out.extend_from_slice(&term.to_be_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    fn open(&self, key: &Key, stored: &[u8]) -> Result<SecretBytes, SealError> {
        let corrupt = || SealError::Corrupt(key.as_str().to_owned());
        let (term, body) = stored.split_first_chunk::<4>().ok_or_else(corrupt)?;
        let data_key = self
            .keyring
            .get(u32::from_be_bytes(*term))
            .ok_or_else(corrupt)?;
        data_key.open(&aad(key), body).map_err(|_| corrupt())
    }
}

/// One write through the barrier: `Some(value)` to store, `None` to delete.
#[derive(Debug)]
pub struct BarrierWrite {
    /// The storage key.
    pub key: Key,
    /// The plaintext to encrypt, or `None` for a delete.
    pub value: Option<SecretBytes>,
    /// The compare-and-set precondition.
    pub expect: Expect,
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn barrier() -> (Barrier, Arc<dyn Store>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("db").display());
        let store = vern_store::open(&url, 1).await.unwrap();
        (
            Barrier::new(Arc::clone(&store), Keyring::generate()),
            store,
            dir,
        )
    }

    fn put(key: &str, value: &[u8]) -> BarrierWrite {
        BarrierWrite {
            key: Key::new(key).unwrap(),
            value: Some(SecretBytes::new(value.to_vec())),
            expect: Expect::Any,
        }
    }

    #[tokio::test]
    async fn ciphertext_moved_to_another_row_fails_to_decrypt() {
        let (b, store, _dir) = barrier().await;
        b.commit(vec![put(
            "secret/tenant-a/app/prod/db/1",
            b"alpha-password",
        )])
        .await
        .unwrap();
        let a = Key::new("secret/tenant-a/app/prod/db/1").unwrap();
        let raw = store.get(&a).await.unwrap().unwrap().value;
        assert!(!raw.windows(14).any(|w| w == b"alpha-password"));

        for target in [
            "secret/tenant-b/app/prod/db/1",
            "secret/tenant-a/app/prod/db/2",
        ] {
            let moved = Key::new(target).unwrap();
            store
                .commit(vec![Write::put(moved.clone(), raw.clone())])
                .await
                .unwrap();
            let err = b.get(&moved).await.unwrap_err();
            assert!(
                matches!(err, SealError::Corrupt(ref k) if k == target),
                "{err}"
            );
        }
        assert_eq!(
            b.get(&a).await.unwrap().unwrap().value.expose(),
            b"alpha-password"
        );
    }

    #[tokio::test]
    async fn tampering_and_unknown_terms_are_detected() {
        let (b, store, _dir) = barrier().await;
        b.commit(vec![put("x", b"value")]).await.unwrap();
        let k = Key::new("x").unwrap();
        let raw = store.get(&k).await.unwrap().unwrap().value;
        for i in 0..raw.len() {
            let mut bad = raw.clone();
            bad[i] ^= 0x01;
            store
                .commit(vec![Write::put(k.clone(), bad)])
                .await
                .unwrap();
            assert!(
                matches!(b.get(&k).await, Err(SealError::Corrupt(_))),
                "byte {i}"
            );
        }
        store
            .commit(vec![Write::put(k.clone(), vec![0, 0])])
            .await
            .unwrap();
        assert!(matches!(b.get(&k).await, Err(SealError::Corrupt(_))));
    }

    #[tokio::test]
    async fn reserved_keys_are_refused() {
        let (b, _store, _dir) = barrier().await;
        let err = b
            .commit(vec![put("core/seal/keyring", b"x")])
            .await
            .unwrap_err();
        assert!(matches!(err, SealError::Reserved(_)));
        assert!(b.get(&Key::new("core/seal/config").unwrap()).await.is_err());
        assert!(b.list("core/seal/", None, 10).await.is_err());
    }
}
