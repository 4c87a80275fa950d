//! Signing keys: one set per tenant and one for the platform, kept behind
//! the barrier view `attest/` (keys `keys/platform` and
//! `keys/tenant/<tenant>`), Ed25519 or ECDSA P-256.
//!
//! Rotation follows the token authority's approach: a new key is stored and
//! published at once but signs only from `signs_from` (after a publish
//! delay, so verifiers can fetch it first), and the whole set is written
//! with compare-and-set so replicas agree. Unlike token keys, which are
//! dropped once every token they signed expired, evidence lives on: a key
//! is never dropped, it is *retired* when its successor starts signing, and
//! it stays valid for verifying what it signed within its window
//! `[signs_from, retired_at)`.
//!
//! A key's id is its RFC 7638 JWK thumbprint (base64url SHA-256 of the
//! required members), stable for the key wherever it is exported.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePublicKey as _, EncodePublicKey as _};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};
use vern_core::TenantId;
use vern_crypto::SecretBytes;
use vern_seal::{Barrier, BarrierWrite, Expect, SealError};
use zeroize::Zeroizing;

use crate::dsse::Envelope;
use crate::statement::{Statement, IN_TOTO_PAYLOAD_TYPE};
use crate::{view, AttestError};

/// How often a write of a key set retries after losing to a replica.
const CAS_ATTEMPTS: usize = 5;

/// A signature algorithm of attestation keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyAlg {
    /// Ed25519 (RFC 8032); signatures are the raw 64 bytes.
    #[default]
    Ed25519,
    /// ECDSA over P-256 with SHA-256; signatures are DER, as
    /// securesystemslib's `ecdsa-sha2-nistp256` scheme makes and expects.
    EcdsaP256,
}

impl KeyAlg {
    /// The name used in storage and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ed25519 => "ed25519",
            Self::EcdsaP256 => "ecdsa-p256",
        }
    }

    /// Parses [`KeyAlg::name`].
    pub fn parse(s: &str) -> Result<Self, AttestError> {
        match s {
            "ed25519" => Ok(Self::Ed25519),
            "ecdsa-p256" => Ok(Self::EcdsaP256),
            _ => Err(AttestError::BadKey(format!(
                "key algorithm `{}` is not `ed25519` or `ecdsa-p256`",
                crate::digest::shown(s)
            ))),
        }
    }

    /// The JOSE `alg` of the key's JWK.
    fn jose(self) -> &'static str {
        match self {
            Self::Ed25519 => "EdDSA",
            Self::EcdsaP256 => "ES256",
        }
    }
}

/// Whose key: the platform's, or one tenant's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyOwner {
    /// The platform key, for statements Vern makes itself about the
    /// platform (such as promotion records across tenants).
    Platform,
    /// A tenant's key; its services sign with it.
    Tenant(TenantId),
}

impl KeyOwner {
    /// The storage segment: `platform` or `tenant/<tenant>`.
    pub(crate) fn segment(&self) -> String {
        match self {
            Self::Platform => "platform".to_owned(),
            Self::Tenant(t) => format!("tenant/{t}"),
        }
    }

    /// Parses [`fmt::Display`]'s form: `platform` or `tenant:<tenant>`.
    pub fn parse(s: &str) -> Result<Self, AttestError> {
        if s == "platform" {
            return Ok(Self::Platform);
        }
        s.strip_prefix("tenant:")
            .and_then(|t| TenantId::parse(t).ok())
            .map(Self::Tenant)
            .ok_or_else(|| {
                AttestError::BadKey(format!(
                    "key owner `{}` is not `platform` or `tenant:<tenant>`",
                    crate::digest::shown(s)
                ))
            })
    }
}

impl fmt::Display for KeyOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Platform => f.write_str("platform"),
            Self::Tenant(t) => write!(f, "tenant:{t}"),
        }
    }
}

/// A public key of either algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// Ed25519.
    Ed25519(ed25519_dalek::VerifyingKey),
    /// ECDSA P-256.
    EcdsaP256(p256::ecdsa::VerifyingKey),
}

impl PublicKey {
    /// The algorithm.
    pub fn alg(&self) -> KeyAlg {
        match self {
            Self::Ed25519(_) => KeyAlg::Ed25519,
            Self::EcdsaP256(_) => KeyAlg::EcdsaP256,
        }
    }

    /// Whether `sig` is this key's signature over `msg`: Ed25519 checked
    /// strictly (no small-order keys or malleable encodings), ECDSA as DER.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        match self {
            Self::Ed25519(k) => ed25519_dalek::Signature::from_slice(sig)
                .is_ok_and(|s| k.verify_strict(msg, &s).is_ok()),
            Self::EcdsaP256(k) => p256::ecdsa::Signature::from_der(sig).is_ok_and(|s| {
                use p256::ecdsa::signature::Verifier as _;
                k.verify(msg, &s).is_ok()
            }),
        }
    }

    /// The key's public JWK members (`kty`, `crv`, `x`, and `y` for EC).
    pub fn jwk(&self) -> Map<String, Value> {
        let v = match self {
            Self::Ed25519(k) => json!({
                "kty": "OKP", "crv": "Ed25519", "x": B64URL.encode(k.as_bytes()),
            }),
            Self::EcdsaP256(k) => {
                let point = k.to_encoded_point(false);
                json!({
                    "kty": "EC", "crv": "P-256",
                    "x": point.x().map(|x| B64URL.encode(x)).unwrap_or_default(),
                    "y": point.y().map(|y| B64URL.encode(y)).unwrap_or_default(),
                })
            }
        };
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    /// The RFC 7638 thumbprint: base64url SHA-256 of the required members
    /// in lexicographic order, without whitespace.
    pub fn thumbprint(&self) -> String {
        // Written out rather than serialized from a map: whether serde_json
        // sorts map keys depends on its `preserve_order` feature, which any
        // crate in the build may turn on (cedar-policy does), and the key id
        // must not change with the build. Base64url needs no escaping.
        let canonical = match self {
            Self::Ed25519(k) => format!(
                r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
                B64URL.encode(k.as_bytes())
            ),
            Self::EcdsaP256(k) => {
                let point = k.to_encoded_point(false);
                format!(
                    r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                    point.x().map(|x| B64URL.encode(x)).unwrap_or_default(),
                    point.y().map(|y| B64URL.encode(y)).unwrap_or_default()
                )
            }
        };
        B64URL.encode(Sha256::digest(canonical.as_bytes()))
    }

    /// The key as a SubjectPublicKeyInfo PEM block.
    pub fn to_pem(&self) -> Result<String, AttestError> {
        let pem = match self {
            Self::Ed25519(k) => k.to_public_key_pem(LineEnding::LF),
            Self::EcdsaP256(k) => k.to_public_key_pem(LineEnding::LF),
        };
        pem.map_err(|e| AttestError::Internal(format!("PEM encoding: {e}")))
    }

    /// Reads one SubjectPublicKeyInfo PEM block of an Ed25519 or P-256 key.
    pub fn from_pem(pem: &str) -> Result<Self, AttestError> {
        if let Ok(k) = ed25519_dalek::VerifyingKey::from_public_key_pem(pem) {
            return Ok(Self::Ed25519(k));
        }
        p256::ecdsa::VerifyingKey::from_public_key_pem(pem)
            .map(Self::EcdsaP256)
            .map_err(|_| {
                AttestError::BadKey("not a PEM public key of Ed25519 or ECDSA P-256".into())
            })
    }

    /// Reads a public JWK (`OKP`/`Ed25519` or `EC`/`P-256`); a JWK holding a
    /// private member (`d`) is refused.
    pub fn from_jwk(jwk: &Value) -> Result<Self, AttestError> {
        let bad = |why: &str| AttestError::BadKey(format!("JWK {why}"));
        if jwk.get("d").is_some() {
            return Err(bad("holds a private key (`d`); give the public key only"));
        }
        let field = |name: &str| -> Result<Vec<u8>, AttestError> {
            jwk.get(name)
                .and_then(Value::as_str)
                .and_then(|s| B64URL.decode(s).ok())
                .ok_or_else(|| bad(&format!("lacks a base64url `{name}`")))
        };
        let kty = jwk.get("kty").and_then(Value::as_str);
        let crv = jwk.get("crv").and_then(Value::as_str);
        match (kty, crv) {
            (Some("OKP"), Some("Ed25519")) => {
                let x: [u8; 32] = field("x")?
                    .try_into()
                    .map_err(|_| bad("`x` is not 32 bytes"))?;
                ed25519_dalek::VerifyingKey::from_bytes(&x)
                    .map(Self::Ed25519)
                    .map_err(|_| bad("`x` is not an Ed25519 point"))
            }
            (Some("EC"), Some("P-256")) => {
                let (x, y) = (field("x")?, field("y")?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(bad("coordinates are not 32 bytes"));
                }
                let point = p256::EncodedPoint::from_affine_coordinates(
                    x.as_slice().into(),
                    y.as_slice().into(),
                    false,
                );
                p256::ecdsa::VerifyingKey::from_encoded_point(&point)
                    .map(Self::EcdsaP256)
                    .map_err(|_| bad("is not a point on P-256"))
            }
            _ => Err(bad("is not an OKP Ed25519 or EC P-256 key")),
        }
    }
}

/// A public key trusted for verification, with its owner and the window in
/// which it signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    /// The key id (its thumbprint).
    pub kid: String,
    /// Whose key it is.
    pub owner: KeyOwner,
    /// The key.
    pub public: PublicKey,
    /// It signs from this time (Unix seconds) …
    pub valid_from: u64,
    /// … until this one, when its successor took over; `None` while current.
    pub valid_until: Option<u64>,
}

impl TrustedKey {
    /// Whether the key was valid for signing at `at`. The second of
    /// retirement is included: times are whole seconds, and an envelope
    /// signed in the second a rotation happened may carry either key.
    pub fn valid_at(&self, at: u64) -> bool {
        self.valid_from <= at && self.valid_until.is_none_or(|u| at <= u)
    }

    /// The key as a JWK with `kid`, `alg`, `use` and Vern's members
    /// `vern_owner`, `vern_valid_from` and (once retired)
    /// `vern_valid_until`.
    pub fn to_jwk(&self) -> Value {
        let mut jwk = self.public.jwk();
        jwk.insert("kid".into(), json!(self.kid));
        jwk.insert("alg".into(), json!(self.public.alg().jose()));
        jwk.insert("use".into(), json!("sig"));
        jwk.insert("vern_owner".into(), json!(self.owner.to_string()));
        jwk.insert("vern_valid_from".into(), json!(self.valid_from));
        if let Some(u) = self.valid_until {
            jwk.insert("vern_valid_until".into(), json!(u));
        }
        Value::Object(jwk)
    }

    /// Reads [`TrustedKey::to_jwk`]'s form. The `kid` must be the key's
    /// thumbprint, so a key cannot be passed off under another's id.
    pub fn from_jwk(jwk: &Value) -> Result<Self, AttestError> {
        let public = PublicKey::from_jwk(jwk)?;
        let kid = public.thumbprint();
        if jwk.get("kid").and_then(Value::as_str) != Some(kid.as_str()) {
            return Err(AttestError::BadKey(format!(
                "JWK `kid` is not the key's thumbprint `{kid}`"
            )));
        }
        let owner = jwk
            .get("vern_owner")
            .and_then(Value::as_str)
            .ok_or_else(|| AttestError::BadKey("JWK lacks `vern_owner`".into()))?;
        let valid_from = jwk
            .get("vern_valid_from")
            .and_then(Value::as_u64)
            .ok_or_else(|| AttestError::BadKey("JWK lacks `vern_valid_from`".into()))?;
        let valid_until = match jwk.get("vern_valid_until") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                AttestError::BadKey("JWK `vern_valid_until` is not a time".into())
            })?),
        };
        Ok(Self {
            kid,
            owner: KeyOwner::parse(owner)?,
            public,
            valid_from,
            valid_until,
        })
    }

    /// A key given as bare PEM (as `vern attest verify --key` takes it): no
    /// owner or window is known, so it counts as always valid and owned by
    /// the platform.
    pub fn from_pem(pem: &str) -> Result<Self, AttestError> {
        let public = PublicKey::from_pem(pem)?;
        Ok(Self {
            kid: public.thumbprint(),
            owner: KeyOwner::Platform,
            public,
            valid_from: 0,
            valid_until: None,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    alg: String,
    /// The Ed25519 seed or P-256 scalar, base64url; only inside the barrier.
    secret: String,
    signs_from: u64,
    retired_at: Option<u64>,
}

#[derive(Serialize, Deserialize, Default)]
struct KeyDoc {
    keys: Vec<StoredKey>,
}

/// A private signing key.
enum Signer {
    Ed(ed25519_dalek::SigningKey),
    Ec(p256::ecdsa::SigningKey),
}

impl Signer {
    fn from_secret(alg: KeyAlg, secret: &[u8]) -> Option<Self> {
        match alg {
            KeyAlg::Ed25519 => Some(Self::Ed(ed25519_dalek::SigningKey::from_bytes(
                secret.try_into().ok()?,
            ))),
            KeyAlg::EcdsaP256 => p256::ecdsa::SigningKey::from_slice(secret)
                .ok()
                .map(Self::Ec),
        }
    }

    fn generate(alg: KeyAlg) -> (Self, SecretBytes) {
        loop {
            // A random 32-byte string is a P-256 scalar unless it is zero or
            // beyond the group order (chance about 2^-32): draw again.
            let secret = SecretBytes::random(32);
            if let Some(s) = Self::from_secret(alg, secret.expose()) {
                return (s, secret);
            }
        }
    }

    fn public(&self) -> PublicKey {
        match self {
            Self::Ed(k) => PublicKey::Ed25519(k.verifying_key()),
            Self::Ec(k) => PublicKey::EcdsaP256(*k.verifying_key()),
        }
    }

    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        use p256::ecdsa::signature::Signer as _;
        match self {
            Self::Ed(k) => k.sign(msg).to_bytes().to_vec(),
            Self::Ec(k) => {
                let sig: p256::ecdsa::Signature = k.sign(msg);
                sig.to_der().as_bytes().to_vec()
            }
        }
    }
}

/// One owner's loaded key set, oldest first.
struct KeySet {
    keys: Vec<(StoredKey, Signer)>,
    version: Option<u64>,
}

/// The signing keys of every owner; see the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyStore {
    /// The algorithm of keys created from now on.
    pub alg: KeyAlg,
    /// Seconds a rotated-in key is published before it signs.
    pub publish_delay: u64,
}

impl KeyStore {
    /// The owner's published keys, the current and every retired one,
    /// oldest first; creates the first key when the owner has none.
    pub async fn published(
        &self,
        barrier: &Barrier,
        owner: &KeyOwner,
        now: u64,
    ) -> Result<Vec<TrustedKey>, AttestError> {
        Ok(trusted(owner, self.load(barrier, owner, now).await?))
    }

    /// The owner's keys as they are stored, without creating one: what
    /// anyone may read (the published key set of an owner that never
    /// signed is empty, and reading it writes nothing).
    pub async fn existing(
        &self,
        barrier: &Barrier,
        owner: &KeyOwner,
    ) -> Result<Vec<TrustedKey>, AttestError> {
        Ok(trusted(owner, read(barrier, owner).await?))
    }

    /// Signs `statement` with the owner's key that signs at `now`.
    pub async fn sign(
        &self,
        barrier: &Barrier,
        owner: &KeyOwner,
        statement: &Statement,
        now: u64,
    ) -> Result<(Envelope, String), AttestError> {
        let set = self.load(barrier, owner, now).await?;
        let (key, signer) = set
            .keys
            .iter()
            .rev()
            .find(|(k, _)| k.signs_from <= now && k.retired_at.is_none_or(|r| now < r))
            .ok_or_else(|| AttestError::Internal(format!("no key of {owner} signs now")))?;
        let mut envelope = Envelope::new(IN_TOTO_PAYLOAD_TYPE, &statement.to_bytes()?);
        let sig = signer.sign(&envelope.pae()?);
        envelope.push_signature(&key.kid, &sig);
        Ok((envelope, key.kid.clone()))
    }

    /// Adds a key of [`KeyStore::alg`] that signs from `now +
    /// publish_delay` and retires the current one then. Returns the new
    /// key's id.
    pub async fn rotate(
        &self,
        barrier: &Barrier,
        owner: &KeyOwner,
        now: u64,
    ) -> Result<String, AttestError> {
        for _ in 0..CAS_ATTEMPTS {
            let current = self.load(barrier, owner, now).await?;
            let signs_from = now.saturating_add(self.publish_delay);
            let mut doc = KeyDoc {
                keys: current
                    .keys
                    .into_iter()
                    .map(|(mut k, _)| {
                        if k.retired_at.is_none_or(|r| r > signs_from) {
                            k.retired_at = Some(signs_from.max(k.signs_from));
                        }
                        k
                    })
                    .collect(),
            };
            let fresh = new_key(self.alg, signs_from);
            let kid = fresh.kid.clone();
            doc.keys.push(fresh);
            let expect = current.version.map_or(Expect::Absent, Expect::Version);
            match write(barrier, owner, &doc, expect).await {
                Ok(()) => return Ok(kid),
                Err(AttestError::Seal(SealError::Conflict { .. })) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(AttestError::Conflict(format!(
            "rotating the keys of {owner} kept colliding with other writers; retry"
        )))
    }

    async fn load(
        &self,
        barrier: &Barrier,
        owner: &KeyOwner,
        now: u64,
    ) -> Result<KeySet, AttestError> {
        for _ in 0..CAS_ATTEMPTS {
            let set = read(barrier, owner).await?;
            if !set.keys.is_empty() {
                return Ok(set);
            }
            let doc = KeyDoc {
                keys: vec![new_key(self.alg, now)],
            };
            match write(barrier, owner, &doc, Expect::Absent).await {
                Ok(()) | Err(AttestError::Seal(SealError::Conflict { .. })) => {}
                Err(e) => return Err(e),
            }
        }
        Err(AttestError::Conflict(format!(
            "creating the first key of {owner} kept colliding with other writers; retry"
        )))
    }
}

fn trusted(owner: &KeyOwner, set: KeySet) -> Vec<TrustedKey> {
    set.keys
        .iter()
        .map(|(k, s)| TrustedKey {
            kid: k.kid.clone(),
            owner: owner.clone(),
            public: s.public(),
            valid_from: k.signs_from,
            valid_until: k.retired_at,
        })
        .collect()
}

fn new_key(alg: KeyAlg, signs_from: u64) -> StoredKey {
    let (signer, secret) = Signer::generate(alg);
    StoredKey {
        kid: signer.public().thumbprint(),
        alg: alg.name().to_owned(),
        secret: B64URL.encode(secret.expose()),
        signs_from,
        retired_at: None,
    }
}

fn storage_key(owner: &KeyOwner) -> String {
    format!("keys/{}", owner.segment())
}

async fn read(barrier: &Barrier, owner: &KeyOwner) -> Result<KeySet, AttestError> {
    let key = storage_key(owner);
    let Some(plain) = view(barrier)?.get(&key).await? else {
        return Ok(KeySet {
            keys: Vec::new(),
            version: None,
        });
    };
    let corrupt = || SealError::Corrupt(format!("{}{key}", crate::VIEW_PREFIX));
    let doc: KeyDoc = serde_json::from_slice(plain.value.expose()).map_err(|_| corrupt())?;
    let mut keys = Vec::with_capacity(doc.keys.len());
    for k in doc.keys {
        let secret = Zeroizing::new(B64URL.decode(&k.secret).map_err(|_| corrupt())?);
        let alg = KeyAlg::parse(&k.alg).map_err(|_| corrupt())?;
        let signer = Signer::from_secret(alg, &secret).ok_or_else(corrupt)?;
        keys.push((k, signer));
    }
    keys.sort_by_key(|(k, _)| k.signs_from);
    Ok(KeySet {
        keys,
        version: Some(plain.version),
    })
}

async fn write(
    barrier: &Barrier,
    owner: &KeyOwner,
    doc: &KeyDoc,
    expect: Expect,
) -> Result<(), AttestError> {
    let bytes =
        Zeroizing::new(serde_json::to_vec(doc).map_err(|e| AttestError::Internal(e.to_string()))?);
    view(barrier)?
        .commit(vec![BarrierWrite {
            key: storage_key(owner),
            value: Some(SecretBytes::new(bytes.to_vec())),
            expect,
        }])
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests;
