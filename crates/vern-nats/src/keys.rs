//! The NATS keys, behind the barrier in the view `nats/` (key `keys`): the
//! issuer account nkey that signs callout responses and user JWTs, the
//! xkey that opens sealed requests, and the passwords of the two users
//! that bypass the callout (`auth_users`): the callout user in the `AUTH`
//! account and the system user in `SYS` that kicks revoked connections.
//! Made once, on first use; never leave the process except in the
//! rendered server configuration an authorized operator asks for.

use nkeys::{KeyPair, XKey};
use serde::{Deserialize, Serialize};
use vern_crypto::SecretBytes;
use vern_seal::{Barrier, BarrierWrite, Expect, SealError};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::{view, NatsError, VIEW_PREFIX};

/// The storage key of the keys inside the view.
const KEYS: &str = "keys";

/// The callout user's name in the `AUTH` account.
pub const CALLOUT_USER: &str = "vern-callout";
/// The system user's name in the `SYS` account.
pub const SYSTEM_USER: &str = "vern-system";

#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct KeyDoc {
    issuer_seed: String,
    xkey_seed: String,
    callout_password: String,
    system_password: String,
}

/// The NATS keys, opened.
pub struct NatsKeys {
    issuer: KeyPair,
    xkey: XKey,
    callout_password: SecretBytes,
    system_password: SecretBytes,
}

impl std::fmt::Debug for NatsKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsKeys")
            .field("issuer", &self.issuer.public_key())
            .field("xkey", &self.xkey.public_key())
            .finish_non_exhaustive()
    }
}

impl NatsKeys {
    /// Reads the keys, making and storing them on first use. Two servers
    /// racing to make them settle on the one stored first.
    pub async fn load_or_create(barrier: &Barrier) -> Result<Self, NatsError> {
        if let Some(k) = Self::read(barrier).await? {
            return Ok(k);
        }
        let password = || {
            let raw = vern_crypto::random_token("");
            String::from_utf8_lossy(raw.expose()).into_owned()
        };
        let doc = KeyDoc {
            issuer_seed: KeyPair::new_account()
                .seed()
                .map_err(|e| NatsError::Internal(e.to_string()))?,
            xkey_seed: XKey::new()
                .seed()
                .map_err(|e| NatsError::Internal(e.to_string()))?,
            callout_password: password(),
            system_password: password(),
        };
        let bytes = SecretBytes::new(
            serde_json::to_vec(&doc).map_err(|e| NatsError::Internal(e.to_string()))?,
        );
        let written = view(barrier)?
            .commit(vec![BarrierWrite {
                key: KEYS.to_owned(),
                value: Some(bytes),
                expect: Expect::Absent,
            }])
            .await;
        match written {
            Ok(_) | Err(SealError::Conflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        Self::read(barrier).await?.ok_or_else(|| {
            NatsError::Internal("the NATS keys vanished after being written".to_owned())
        })
    }

    async fn read(barrier: &Barrier) -> Result<Option<Self>, NatsError> {
        let Some(plain) = view(barrier)?.get(KEYS).await? else {
            return Ok(None);
        };
        let corrupt = || NatsError::Seal(SealError::Corrupt(format!("{VIEW_PREFIX}{KEYS}")));
        let doc: KeyDoc = serde_json::from_slice(plain.value.expose()).map_err(|_| corrupt())?;
        Ok(Some(Self {
            issuer: KeyPair::from_seed(&doc.issuer_seed).map_err(|_| corrupt())?,
            xkey: XKey::from_seed(&doc.xkey_seed).map_err(|_| corrupt())?,
            callout_password: SecretBytes::new(doc.callout_password.as_bytes().to_vec()),
            system_password: SecretBytes::new(doc.system_password.as_bytes().to_vec()),
        }))
    }

    /// Keys made in memory, for tests and benchmarks.
    pub fn generate() -> Self {
        let password = || SecretBytes::new(vern_crypto::random_token("").expose().to_vec());
        Self {
            issuer: KeyPair::new_account(),
            xkey: XKey::new(),
            callout_password: password(),
            system_password: password(),
        }
    }

    /// The issuer's public account nkey (`auth_callout.issuer`).
    pub fn issuer_public(&self) -> String {
        self.issuer.public_key()
    }

    /// The public xkey (`auth_callout.xkey`).
    pub fn xkey_public(&self) -> String {
        self.xkey.public_key()
    }

    pub(crate) fn issuer(&self) -> &KeyPair {
        &self.issuer
    }

    pub(crate) fn xkey(&self) -> &XKey {
        &self.xkey
    }

    /// The callout user's password.
    pub fn callout_password(&self) -> &SecretBytes {
        &self.callout_password
    }

    /// The system user's password.
    pub fn system_password(&self) -> &SecretBytes {
        &self.system_password
    }
}
