//! The keyring: numbered data keys ("terms"). New data is encrypted under
//! the newest term; older terms stay to decrypt what they wrote.

use std::collections::BTreeMap;

use vern_crypto::{DataKey, SecretBytes, KEY_LEN};
use zeroize::Zeroizing;

/// The keyring held in memory while unsealed.
#[derive(Debug, Clone)]
pub(crate) struct Keyring {
    terms: BTreeMap<u32, DataKey>,
}

const ENTRY_LEN: usize = 4 + KEY_LEN;

impl Keyring {
    /// A keyring with one fresh key at term 1.
    pub(crate) fn generate() -> Self {
        Self {
            terms: BTreeMap::from([(1, DataKey::generate())]),
        }
    }

    /// The newest term and its key.
    pub(crate) fn active(&self) -> Option<(u32, &DataKey)> {
        self.terms.iter().next_back().map(|(t, k)| (*t, k))
    }

    pub(crate) fn get(&self, term: u32) -> Option<&DataKey> {
        self.terms.get(&term)
    }

    /// Serialises as repeated `term (u32 BE) || key`, in a buffer that is
    /// wiped when dropped.
    pub(crate) fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(self.terms.len() * ENTRY_LEN));
        for (term, key) in &self.terms {
            out.extend_from_slice(&term.to_be_bytes());
            out.extend_from_slice(key.secret().expose());
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.is_empty() || !bytes.len().is_multiple_of(ENTRY_LEN) {
            return None;
        }
        let mut terms = BTreeMap::new();
        for chunk in bytes.chunks_exact(ENTRY_LEN) {
            let term = u32::from_be_bytes(chunk[..4].try_into().ok()?);
            let key = DataKey::from_bytes(SecretBytes::new(chunk[4..].to_vec())).ok()?;
            if terms.insert(term, key).is_some() {
                return None;
            }
        }
        Some(Self { terms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode() {
        let ring = Keyring::generate();
        let decoded = Keyring::decode(&ring.encode()).unwrap();
        assert_eq!(decoded.active().unwrap().0, 1);
        assert_eq!(
            decoded.get(1).unwrap().secret(),
            ring.get(1).unwrap().secret()
        );
        assert!(Keyring::decode(&[]).is_none());
        assert!(Keyring::decode(&[0; 35]).is_none());
    }
}
