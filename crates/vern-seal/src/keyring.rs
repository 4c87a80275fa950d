//! The keyring: numbered data keys ("terms"). New data is encrypted under
//! the newest term; older terms stay to decrypt what they wrote.

use std::collections::BTreeMap;

use vern_crypto::{DataKey, SecretBytes, KEY_LEN};
use zeroize::Zeroizing;

/// One data key and when it was installed (Unix seconds).
#[derive(Debug, Clone)]
pub(crate) struct Term {
    pub(crate) key: DataKey,
    pub(crate) installed: u64,
}

/// The keyring held in memory while unsealed.
#[derive(Debug, Clone)]
pub(crate) struct Keyring {
    terms: BTreeMap<u32, Term>,
}

/// Encoded entry: term (u32 BE) ‖ install time (u64 BE) ‖ key.
const ENTRY_LEN: usize = 4 + 8 + KEY_LEN;

impl Keyring {
    /// A keyring with one fresh key at term 1.
    pub(crate) fn generate(now: u64) -> Self {
        let term = Term {
            key: DataKey::generate(),
            installed: now,
        };
        Self {
            terms: BTreeMap::from([(1, term)]),
        }
    }

    /// The newest term number and its entry.
    pub(crate) fn active(&self) -> Option<(u32, &Term)> {
        self.terms.iter().next_back().map(|(t, k)| (*t, k))
    }

    pub(crate) fn get(&self, term: u32) -> Option<&DataKey> {
        self.terms.get(&term).map(|t| &t.key)
    }

    /// Number of terms held.
    pub(crate) fn len(&self) -> usize {
        self.terms.len()
    }

    /// A copy with a fresh key added as the next term.
    pub(crate) fn rotated(&self, now: u64) -> Option<Self> {
        let next = self.active().map_or(Some(1), |(t, _)| t.checked_add(1))?;
        let mut terms = self.terms.clone();
        terms.insert(
            next,
            Term {
                key: DataKey::generate(),
                installed: now,
            },
        );
        Some(Self { terms })
    }

    /// Serialises into a buffer that is wiped when dropped.
    pub(crate) fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(self.terms.len() * ENTRY_LEN));
        for (term, entry) in &self.terms {
            out.extend_from_slice(&term.to_be_bytes());
            out.extend_from_slice(&entry.installed.to_be_bytes());
            out.extend_from_slice(entry.key.secret().expose());
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.is_empty() || !bytes.len().is_multiple_of(ENTRY_LEN) {
            return None;
        }
        let mut terms = BTreeMap::new();
        for chunk in bytes.chunks_exact(ENTRY_LEN) {
            let (term, rest) = chunk.split_first_chunk::<4>()?;
            let (installed, key) = rest.split_first_chunk::<8>()?;
            let term = u32::from_be_bytes(*term);
            let installed = u64::from_be_bytes(*installed);
            let key = DataKey::from_bytes(SecretBytes::new(key.to_vec())).ok()?;
            if terms.insert(term, Term { key, installed }).is_some() {
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
    fn encode_decode_and_rotate() {
        let ring = Keyring::generate(100);
        let decoded = Keyring::decode(&ring.encode()).unwrap();
        let (term, entry) = decoded.active().unwrap();
        assert_eq!((term, entry.installed), (1, 100));
        assert_eq!(
            decoded.get(1).unwrap().secret(),
            ring.get(1).unwrap().secret()
        );

        let rotated = decoded.rotated(200).unwrap();
        assert_eq!(rotated.active().unwrap().0, 2);
        assert_eq!(rotated.len(), 2);
        let again = Keyring::decode(&rotated.encode()).unwrap();
        assert_eq!(again.active().unwrap().1.installed, 200);
        assert_eq!(
            again.get(1).unwrap().secret(),
            ring.get(1).unwrap().secret()
        );

        assert!(Keyring::decode(&[]).is_none());
        assert!(Keyring::decode(&[0; ENTRY_LEN + 1]).is_none());
        let mut dup = ring.encode().to_vec();
        dup.extend_from_slice(&ring.encode());
        assert!(
            Keyring::decode(&dup).is_none(),
            "duplicate terms are refused"
        );
    }
}
