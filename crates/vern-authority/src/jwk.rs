//! Public JSON Web Keys (RFC 7517) of the two algorithms Vern accepts,
//! parsed strictly, with RFC 7638 thumbprints.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::AuthError;

/// A signature algorithm Vern accepts. The algorithm always follows from
/// the key; a token's `alg` header must match it, never choose it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// Ed25519 (`EdDSA`).
    EdDsa,
    /// ECDSA P-256 with SHA-256 (`ES256`).
    Es256,
}

impl Alg {
    /// The JOSE name Vern signs with.
    pub fn name(self) -> &'static str {
        match self {
            Self::EdDsa => "EdDSA",
            Self::Es256 => "ES256",
        }
    }

    /// Every JOSE name a signature by this algorithm may carry: Ed25519
    /// under the polymorphic `EdDSA` and its fully specified name `Ed25519`
    /// (RFC 9864), both naming this one algorithm.
    pub fn names(self) -> &'static [&'static str] {
        match self {
            Self::EdDsa => &["EdDSA", "Ed25519"],
            Self::Es256 => &["ES256"],
        }
    }
}

/// The `alg` values Vern accepts on client assertions and DPoP proofs, as
/// its metadata advertises them.
pub const ACCEPTED_ALGS: &[&str] = &["EdDSA", "Ed25519", "ES256"];

/// A public key in JWK form.
#[derive(Clone, PartialEq, Eq)]
pub enum PublicJwk {
    /// `{"kty":"OKP","crv":"Ed25519","x":…}`.
    Ed25519([u8; 32]),
    /// `{"kty":"EC","crv":"P-256","x":…,"y":…}`.
    P256 {
        /// The x coordinate.
        x: [u8; 32],
        /// The y coordinate.
        y: [u8; 32],
    },
}

impl std::fmt::Debug for PublicJwk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicJwk({})", self.thumbprint())
    }
}

fn coord(map: &Map<String, Value>, name: &str) -> Result<[u8; 32], AuthError> {
    let text = map
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| AuthError::BadKey(format!("`{name}` is missing")))?;
    let bytes = B64
        .decode(text)
        .map_err(|_| AuthError::BadKey(format!("`{name}` is not base64url")))?;
    bytes
        .try_into()
        .map_err(|_| AuthError::BadKey(format!("`{name}` must be 32 bytes")))
}

/// Members that only private keys carry: a JWK with any of them is refused
/// wherever a public key is expected (RFC 9449 check: no private key).
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

impl PublicJwk {
    /// Parses a public JWK; private members, unknown key types and curves
    /// are refused.
    pub fn parse(value: &Value) -> Result<Self, AuthError> {
        let map = value
            .as_object()
            .ok_or_else(|| AuthError::BadKey("a JWK must be a JSON object".to_owned()))?;
        if let Some(m) = PRIVATE_MEMBERS.iter().find(|m| map.contains_key(**m)) {
            return Err(AuthError::BadKey(format!(
                "the JWK holds the private member `{m}`"
            )));
        }
        let kty = map.get("kty").and_then(Value::as_str);
        let crv = map.get("crv").and_then(Value::as_str);
        let key = match (kty, crv) {
            (Some("OKP"), Some("Ed25519")) => Self::Ed25519(coord(map, "x")?),
            (Some("EC"), Some("P-256")) => Self::P256 {
                x: coord(map, "x")?,
                y: coord(map, "y")?,
            },
            _ => {
                return Err(AuthError::BadKey(
                    "only Ed25519 (OKP) and P-256 (EC) keys are accepted".to_owned(),
                ))
            }
        };
        key.check()?;
        Ok(key)
    }

    /// Checks the key is a valid point.
    fn check(&self) -> Result<(), AuthError> {
        match self {
            Self::Ed25519(x) => ed25519_dalek::VerifyingKey::from_bytes(x)
                .map(|_| ())
                .map_err(|_| AuthError::BadKey("not a valid Ed25519 public key".to_owned())),
            Self::P256 { .. } => self.p256().map(|_| ()),
        }
    }

    pub(crate) fn p256(&self) -> Result<p256::ecdsa::VerifyingKey, AuthError> {
        let Self::P256 { x, y } = self else {
            return Err(AuthError::BadKey("not a P-256 key".to_owned()));
        };
        let mut sec1 = [0u8; 65];
        sec1[0] = 4;
        sec1[1..33].copy_from_slice(x);
        sec1[33..].copy_from_slice(y);
        p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
            .map_err(|_| AuthError::BadKey("not a valid P-256 public key".to_owned()))
    }

    /// The algorithm this key verifies.
    pub fn alg(&self) -> Alg {
        match self {
            Self::Ed25519(_) => Alg::EdDsa,
            Self::P256 { .. } => Alg::Es256,
        }
    }

    /// The required members only, in RFC 7638's lexicographic order.
    fn canonical(&self) -> String {
        match self {
            Self::Ed25519(x) => {
                format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, B64.encode(x))
            }
            Self::P256 { x, y } => format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                B64.encode(x),
                B64.encode(y)
            ),
        }
    }

    /// The RFC 7638 SHA-256 thumbprint, base64url.
    pub fn thumbprint(&self) -> String {
        B64.encode(Sha256::digest(self.canonical().as_bytes()))
    }

    /// The JWK as JSON, with `kid`, `alg` and `use` when a kid is given.
    pub fn to_json(&self, kid: Option<&str>) -> Value {
        let mut v: Value = serde_json::from_str(&self.canonical()).unwrap_or_else(|_| json!({}));
        if let (Some(kid), Some(map)) = (kid, v.as_object_mut()) {
            map.insert("kid".to_owned(), json!(kid));
            map.insert("alg".to_owned(), json!(self.alg().name()));
            map.insert("use".to_owned(), json!("sig"));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_8037_ed25519_thumbprint() {
        // RFC 8037, appendix A.3.
        let jwk =
            json!({"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
        let key = PublicJwk::parse(&jwk).unwrap();
        assert_eq!(
            key.thumbprint(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
        assert_eq!(key.alg(), Alg::EdDsa);
    }

    #[test]
    fn private_and_foreign_keys_are_refused() {
        let with_d = json!({"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"});
        assert!(PublicJwk::parse(&with_d)
            .unwrap_err()
            .to_string()
            .contains("private member `d`"));
        for bad in [
            json!({"kty":"RSA","n":"AQAB","e":"AQAB"}),
            json!({"kty":"oct","k":"c2VjcmV0"}),
            json!({"kty":"EC","crv":"P-384","x":"AA","y":"AA"}),
            json!({"kty":"OKP","crv":"Ed25519","x":"short"}),
            json!("not an object"),
        ] {
            assert!(PublicJwk::parse(&bad).is_err(), "{bad}");
        }
    }
}
