//! JWT-SVIDs (SPIFFE JWT-SVID specification): ES256 tokens whose `sub` is
//! the holder's SPIFFE ID, with `aud`, `exp` and `iat`, the header naming
//! the key (`kid`) and `typ` `JWT`. The P-256 signing keys live in the CA
//! document behind the barrier and rotate with the CA.

use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use vern_crypto::SecretBytes;
use zeroize::Zeroizing;

use crate::PkiError;

/// A JWT-SVID signing key as stored.
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredJwtKey {
    kid: String,
    /// The P-256 scalar, base64; only ever inside the barrier.
    key: String,
    signs_from: u64,
    created: u64,
}

impl StoredJwtKey {
    /// The key id.
    pub(crate) fn kid(&self) -> &str {
        &self.kid
    }
}

/// A loaded JWT-SVID signing key.
pub(crate) struct JwtKey {
    pub(crate) kid: String,
    signing: SigningKey,
    pub(crate) signs_from: u64,
    created: u64,
}

impl JwtKey {
    /// A new key signing from `signs_from`.
    pub(crate) fn generate(now: u64, signs_from: u64) -> Result<StoredJwtKey, PkiError> {
        // A random 32-byte string is a valid scalar with overwhelming
        // probability; the loop only guards the astronomically rare miss.
        for _ in 0..8 {
            let seed = SecretBytes::random(32);
            if let Ok(signing) = SigningKey::from_slice(seed.expose()) {
                return Ok(StoredJwtKey {
                    kid: thumbprint(&signing),
                    key: B64.encode(seed.expose()),
                    signs_from,
                    created: now,
                });
            }
        }
        Err(PkiError::Internal(
            "no JWT-SVID key could be generated".to_owned(),
        ))
    }

    pub(crate) fn load(stored: &StoredJwtKey) -> Result<Self, PkiError> {
        let seed = Zeroizing::new(
            B64.decode(&stored.key)
                .map_err(|_| PkiError::corrupt("authority"))?,
        );
        let signing = SigningKey::from_slice(&seed).map_err(|_| PkiError::corrupt("authority"))?;
        Ok(Self {
            kid: stored.kid.clone(),
            signing,
            signs_from: stored.signs_from,
            created: stored.created,
        })
    }

    pub(crate) fn store(&self) -> StoredJwtKey {
        let seed = Zeroizing::new(self.signing.to_bytes().to_vec());
        StoredJwtKey {
            kid: self.kid.clone(),
            key: B64.encode(&*seed),
            signs_from: self.signs_from,
            created: self.created,
        }
    }

    /// The public key as a bundle entry (`use` `jwt-svid`).
    pub(crate) fn bundle_jwk(&self) -> Value {
        let (x, y) = coordinates(&self.signing);
        json!({
            "use": "jwt-svid",
            "kty": "EC",
            "crv": "P-256",
            "x": x,
            "y": y,
            "kid": self.kid,
        })
    }

    /// A compact JWS (ES256) of `claims`.
    pub(crate) fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": "ES256", "kid": self.kid, "typ": "JWT"});
        let input = format!(
            "{}.{}",
            B64URL.encode(header.to_string()),
            B64URL.encode(claims.to_string())
        );
        let signature: Signature = self.signing.sign(input.as_bytes());
        format!("{input}.{}", B64URL.encode(signature.to_bytes()))
    }
}

fn coordinates(key: &SigningKey) -> (String, String) {
    let point = key.verifying_key().to_encoded_point(false);
    let enc = |c: Option<&p256::FieldBytes>| c.map(|b| B64URL.encode(b)).unwrap_or_default();
    (enc(point.x()), enc(point.y()))
}

/// The RFC 7638 thumbprint of the public key: its key id.
fn thumbprint(key: &SigningKey) -> String {
    let (x, y) = coordinates(key);
    // RFC 7638 §3.2: the required members in lexicographic order, no
    // whitespace.
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    B64URL.encode(vern_crypto::sha256(canonical.as_bytes()))
}

/// A JWT-SVID that verified: its SPIFFE ID (`sub`) and all its claims.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedJwtSvid {
    /// The `sub` claim.
    pub spiffe_id: String,
    /// Every claim of the token.
    pub claims: serde_json::Map<String, Value>,
}

/// Longest JWT-SVID accepted for verification.
const MAX_TOKEN: usize = 16 * 1024;

/// Verifies a JWT-SVID against the `jwt-svid` keys of a SPIFFE bundle (a
/// JWK set), offline, as the Workload API's `ValidateJWTSVID` does: ES256
/// only (the algorithm comes from the key, never from the token alone),
/// a `kid` naming a key of the bundle, `audience` among `aud`, `exp` after
/// `now`, and a `sub` that is a SPIFFE ID of `trust_domain`.
pub fn verify_jwt_svid(
    token: &str,
    bundle: &Value,
    trust_domain: &str,
    audience: &str,
    now: u64,
) -> Result<VerifiedJwtSvid, PkiError> {
    use p256::ecdsa::signature::Verifier as _;
    use p256::ecdsa::VerifyingKey;

    let refuse = |why: &str| PkiError::InvalidRequest(format!("JWT-SVID refused: {why}"));
    if token.len() > MAX_TOKEN {
        return Err(refuse("too long"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(refuse("not a compact JWS"));
    };
    let decode = |part: &str| B64URL.decode(part).map_err(|_| refuse("bad base64url"));
    let header: Value =
        serde_json::from_slice(&decode(h)?).map_err(|_| refuse("the header is not JSON"))?;
    if header.get("alg").and_then(Value::as_str) != Some("ES256") {
        return Err(refuse("alg must be ES256"));
    }
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or_else(|| refuse("no kid"))?;
    let jwk = bundle
        .get("keys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|k| {
            k.get("use").and_then(Value::as_str) == Some("jwt-svid")
                && k.get("kid").and_then(Value::as_str) == Some(kid)
        })
        .ok_or_else(|| refuse("no key of the bundle has its kid"))?;
    if jwk.get("kty").and_then(Value::as_str) != Some("EC")
        || jwk.get("crv").and_then(Value::as_str) != Some("P-256")
    {
        return Err(refuse("the bundle's key is not P-256"));
    }
    let coord = |name: &str| -> Result<Vec<u8>, PkiError> {
        let v = jwk
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| refuse("the bundle's key is malformed"))?;
        let bytes = B64URL
            .decode(v)
            .map_err(|_| refuse("the bundle's key is malformed"))?;
        if bytes.len() == 32 {
            Ok(bytes)
        } else {
            Err(refuse("the bundle's key is malformed"))
        }
    };
    let mut sec1 = vec![4u8];
    sec1.extend(coord("x")?);
    sec1.extend(coord("y")?);
    let key = VerifyingKey::from_sec1_bytes(&sec1)
        .map_err(|_| refuse("the bundle's key is malformed"))?;
    let sig = Signature::from_slice(&decode(s)?).map_err(|_| refuse("bad signature"))?;
    key.verify(format!("{h}.{c}").as_bytes(), &sig)
        .map_err(|_| refuse("the signature does not verify"))?;
    let claims: serde_json::Map<String, Value> =
        serde_json::from_slice(&decode(c)?).map_err(|_| refuse("the claims are not JSON"))?;
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == audience,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(audience)),
        _ => false,
    };
    if !aud_ok {
        return Err(refuse("the audience is not among aud"));
    }
    let exp = claims
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or_else(|| refuse("no exp"))?;
    if exp <= now {
        return Err(refuse("expired"));
    }
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .ok_or_else(|| refuse("no sub"))?;
    let id = crate::SpiffeId::parse(sub).map_err(|_| refuse("sub is not a SPIFFE ID"))?;
    if id.trust_domain().as_str() != trust_domain {
        return Err(refuse("sub is not a SPIFFE ID of the trust domain"));
    }
    Ok(VerifiedJwtSvid {
        spiffe_id: sub.to_owned(),
        claims,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(claims: &Value) -> (String, Value) {
        let key = JwtKey::load(&JwtKey::generate(0, 0).unwrap()).unwrap();
        let bundle = json!({ "keys": [key.bundle_jwk()] });
        (key.sign(claims), bundle)
    }

    #[test]
    fn a_jwt_svid_verifies_only_as_issued() {
        let claims =
            json!({"sub": "spiffe://td.example/s/api", "aud": ["db"], "exp": 1000, "iat": 10});
        let (token, bundle) = signed(&claims);
        let ok = verify_jwt_svid(&token, &bundle, "td.example", "db", 500).unwrap();
        assert_eq!(ok.spiffe_id, "spiffe://td.example/s/api");
        assert_eq!(ok.claims.get("iat"), Some(&json!(10)));
        // Another audience, an expired token, another trust domain.
        assert!(verify_jwt_svid(&token, &bundle, "td.example", "web", 500).is_err());
        assert!(verify_jwt_svid(&token, &bundle, "td.example", "db", 1000).is_err());
        assert!(verify_jwt_svid(&token, &bundle, "other.example", "db", 500).is_err());
        // A key the bundle does not hold, a changed payload, `alg: none`.
        let (_, other_bundle) = signed(&claims);
        assert!(verify_jwt_svid(&token, &other_bundle, "td.example", "db", 500).is_err());
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = B64URL.encode(
            json!({"sub": "spiffe://td.example/s/admin", "aud": "db", "exp": 1000}).to_string(),
        );
        parts[1] = &forged;
        assert!(verify_jwt_svid(&parts.join("."), &bundle, "td.example", "db", 500).is_err());
        let none = format!(
            "{}.{}.",
            B64URL.encode(r#"{"alg":"none"}"#),
            B64URL.encode(claims.to_string())
        );
        assert!(verify_jwt_svid(&none, &bundle, "td.example", "db", 500).is_err());
        assert!(verify_jwt_svid("not a token", &bundle, "td.example", "db", 500).is_err());
    }
}
