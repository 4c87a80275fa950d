//! The authority's signing keys: Ed25519 (default) or P-256, kept behind
//! the barrier, rotated
//! so that a new key is published in the JWKS before it signs and an old
//! key stays published until every token it signed has expired.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use vern_crypto::SecretBytes;
use vern_seal::{Barrier, BarrierWrite, Expect};
use zeroize::Zeroizing;

use crate::authority::view;
use crate::jwk::{Alg, PublicJwk};
use crate::AuthError;

/// Storage key of the key set.
const KEYS: &str = "signing-keys";

#[derive(Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    /// `EdDSA` or `ES256`.
    #[serde(default = "default_alg")]
    alg: String,
    /// The 32-byte Ed25519 seed or P-256 scalar, base64url; only ever
    /// inside the barrier.
    seed: String,
    created: u64,
    /// The key signs from this time (Unix seconds) until a newer key does.
    signs_from: u64,
}

#[derive(Serialize, Deserialize, Default)]
struct KeyDoc {
    keys: Vec<StoredKey>,
}

fn default_alg() -> String {
    Alg::EdDsa.name().to_owned()
}

/// A private signing key of either algorithm.
pub(crate) enum Signer {
    Ed(ed25519_dalek::SigningKey),
    Ec(p256::ecdsa::SigningKey),
}

impl Signer {
    fn from_seed(alg: &str, seed: &[u8]) -> Option<Self> {
        match alg {
            "EdDSA" => Some(Self::Ed(ed25519_dalek::SigningKey::from_bytes(
                seed.try_into().ok()?,
            ))),
            "ES256" => p256::ecdsa::SigningKey::from_slice(seed).ok().map(Self::Ec),
            _ => None,
        }
    }

    fn generate(alg: Alg) -> (Self, SecretBytes) {
        loop {
            let seed = SecretBytes::random(32);
            if let Some(s) = Self::from_seed(alg.name(), seed.expose()) {
                return (s, seed);
            }
        }
    }

    fn seed(&self) -> Zeroizing<Vec<u8>> {
        match self {
            Self::Ed(k) => Zeroizing::new(k.to_bytes().to_vec()),
            Self::Ec(k) => Zeroizing::new(k.to_bytes().to_vec()),
        }
    }

    pub(crate) fn public(&self) -> PublicJwk {
        match self {
            Self::Ed(k) => crate::jws::ed25519_public(k),
            Self::Ec(k) => crate::jws::p256_public(k),
        }
    }

    pub(crate) fn alg(&self) -> Alg {
        match self {
            Self::Ed(_) => Alg::EdDsa,
            Self::Ec(_) => Alg::Es256,
        }
    }

    /// Signs `claims` under `header` (to which `alg` is added).
    pub(crate) fn sign(
        &self,
        mut header: serde_json::Map<String, serde_json::Value>,
        claims: &serde_json::Value,
    ) -> String {
        header.insert("alg".to_owned(), serde_json::json!(self.alg().name()));
        let header = serde_json::Value::Object(header);
        match self {
            Self::Ed(k) => crate::jws::sign_ed25519(&header, claims, k),
            Self::Ec(k) => crate::jws::sign_es256(&header, claims, k),
        }
    }
}

/// One loaded key.
pub(crate) struct LoadedKey {
    pub(crate) kid: String,
    pub(crate) signing: Signer,
    pub(crate) public: PublicJwk,
    pub(crate) signs_from: u64,
}

/// The loaded key set, newest last.
pub(crate) struct KeySet {
    pub(crate) keys: Vec<LoadedKey>,
    /// Storage version of the key document, for compare-and-set.
    version: Option<u64>,
}

fn new_stored(now: u64, signs_from: u64, alg: Alg) -> StoredKey {
    let (signing, seed) = Signer::generate(alg);
    StoredKey {
        kid: signing.public().thumbprint(),
        alg: alg.name().to_owned(),
        seed: B64.encode(seed.expose()),
        created: now,
        signs_from,
    }
}

impl KeySet {
    /// Loads the key set, creating the first key when there is none.
    pub(crate) async fn load(barrier: &Barrier, now: u64, alg: Alg) -> Result<Self, AuthError> {
        for _ in 0..3 {
            let set = Self::read(barrier).await?;
            if !set.keys.is_empty() {
                return Ok(set);
            }
            let doc = KeyDoc {
                keys: vec![new_stored(now, now, alg)],
            };
            match Self::write(barrier, &doc, Expect::Absent).await {
                Ok(()) => {}
                Err(AuthError::Seal(vern_seal::SealError::Conflict { .. })) => {}
                Err(e) => return Err(e),
            }
        }
        Self::read(barrier).await
    }

    async fn read(barrier: &Barrier) -> Result<Self, AuthError> {
        let Some(plain) = view(barrier)?.get(KEYS).await? else {
            return Ok(Self {
                keys: Vec::new(),
                version: None,
            });
        };
        let doc: KeyDoc = serde_json::from_slice(plain.value.expose())
            .map_err(|_| vern_seal::SealError::Corrupt(KEYS.to_owned()))?;
        let mut keys = Vec::new();
        for k in doc.keys {
            let seed = Zeroizing::new(
                B64.decode(&k.seed)
                    .map_err(|_| vern_seal::SealError::Corrupt(KEYS.to_owned()))?,
            );
            let signing = Signer::from_seed(&k.alg, &seed)
                .ok_or_else(|| vern_seal::SealError::Corrupt(KEYS.to_owned()))?;
            keys.push(LoadedKey {
                kid: k.kid,
                public: signing.public(),
                signing,
                signs_from: k.signs_from,
            });
        }
        keys.sort_by_key(|k| k.signs_from);
        Ok(Self {
            keys,
            version: Some(plain.version),
        })
    }

    async fn write(barrier: &Barrier, doc: &KeyDoc, expect: Expect) -> Result<(), AuthError> {
        let bytes = Zeroizing::new(
            serde_json::to_vec(doc).map_err(|e| AuthError::Internal(e.to_string()))?,
        );
        view(barrier)?
            .commit(vec![BarrierWrite {
                key: KEYS.to_owned(),
                value: Some(SecretBytes::new(bytes.to_vec())),
                expect,
            }])
            .await?;
        Ok(())
    }

    /// The key that signs now: the newest whose time has come.
    pub(crate) fn active(&self, now: u64) -> Option<&LoadedKey> {
        self.keys.iter().rev().find(|k| k.signs_from <= now)
    }

    /// Keys to publish: every key that will sign, signs, or signed a token
    /// that may still be valid (it stopped signing less than `max_ttl` ago).
    pub(crate) fn published(&self, now: u64, max_ttl: u64) -> impl Iterator<Item = &LoadedKey> {
        self.keys
            .iter()
            .enumerate()
            .filter(move |(i, _)| {
                match self.keys.get(i + 1) {
                    // Superseded once the next key started signing.
                    Some(next) if next.signs_from <= now => {
                        now < next.signs_from.saturating_add(max_ttl)
                    }
                    _ => true,
                }
            })
            .map(|(_, k)| k)
    }

    pub(crate) fn find(&self, kid: &str) -> Option<&LoadedKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// Adds a key that starts signing after `publish_delay`, and drops keys
    /// no longer published. Compare-and-set on the stored set.
    pub(crate) async fn rotate(
        barrier: &Barrier,
        now: u64,
        publish_delay: u64,
        max_ttl: u64,
        alg: Alg,
    ) -> Result<String, AuthError> {
        for _ in 0..5 {
            let current = Self::load(barrier, now, alg).await?;
            let keep: Vec<&LoadedKey> = current.published(now, max_ttl).collect();
            let mut doc = KeyDoc {
                keys: keep
                    .iter()
                    .map(|k| StoredKey {
                        kid: k.kid.clone(),
                        alg: k.signing.alg().name().to_owned(),
                        seed: B64.encode(k.signing.seed()),
                        created: k.signs_from,
                        signs_from: k.signs_from,
                    })
                    .collect(),
            };
            let fresh = new_stored(now, now.saturating_add(publish_delay), alg);
            let kid = fresh.kid.clone();
            doc.keys.push(fresh);
            let expect = current.version.map_or(Expect::Absent, Expect::Version);
            match Self::write(barrier, &doc, expect).await {
                Ok(()) => return Ok(kid),
                Err(AuthError::Seal(vern_seal::SealError::Conflict { .. })) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(AuthError::Conflict(
            "signing key rotation kept colliding; retry".to_owned(),
        ))
    }
}
