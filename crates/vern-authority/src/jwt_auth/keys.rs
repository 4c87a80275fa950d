//! The keys of external token issuers (from a JWKS or PEM) and the
//! signature algorithms Vern accepts from them. Verification is `ring`'s
//! (already Vern's TLS provider through rustls): RSA PKCS#1 v1.5 and PSS
//! with 2048- to 8192-bit moduli, ECDSA P-256 and P-384, and Ed25519. The
//! algorithm must be allowed by the role and fit the key's type (and the
//! key's own `alg`, when the JWK names one): `none`, HMAC and anything
//! else have no variant here, so they can never verify.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Map, Value};

/// Smallest RSA modulus accepted, in bits (RFC 7518 §3.3 asks for 2048).
pub(crate) const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted, in bits (ring's verification limit).
pub(crate) const MAX_RSA_BITS: usize = 8192;

/// A signature algorithm of an external issuer's JWTs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum JwtAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (Kubernetes service-account tokens).
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    Rs384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    Rs512,
    /// RSASSA-PSS with SHA-256.
    Ps256,
    /// RSASSA-PSS with SHA-384.
    Ps384,
    /// RSASSA-PSS with SHA-512.
    Ps512,
    /// ECDSA P-256 with SHA-256.
    Es256,
    /// ECDSA P-384 with SHA-384.
    Es384,
    /// Ed25519 (`EdDSA`, or `Ed25519` as RFC 9864 names it).
    EdDsa,
}

impl JwtAlg {
    /// Every accepted algorithm: a role's default.
    pub const ALL: [JwtAlg; 9] = [
        Self::Rs256,
        Self::Rs384,
        Self::Rs512,
        Self::Ps256,
        Self::Ps384,
        Self::Ps512,
        Self::Es256,
        Self::Es384,
        Self::EdDsa,
    ];

    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Rs384 => "RS384",
            Self::Rs512 => "RS512",
            Self::Ps256 => "PS256",
            Self::Ps384 => "PS384",
            Self::Ps512 => "PS512",
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
            Self::EdDsa => "EdDSA",
        }
    }

    /// The algorithm a JOSE name stands for; `None` for `none`, HMAC and
    /// every other name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "Ed25519" => Some(Self::EdDsa),
            _ => Self::ALL.into_iter().find(|a| a.name() == name),
        }
    }
}

/// Key material by type.
#[derive(Clone, PartialEq, Eq)]
enum Material {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    P256(Vec<u8>),
    P384(Vec<u8>),
    Ed25519([u8; 32]),
}

/// A public key of an external issuer.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ExternalKey {
    /// The JWK's `kid`.
    pub(crate) kid: Option<String>,
    /// The JWK's `alg`: when given, the only algorithm the key verifies.
    alg: Option<JwtAlg>,
    material: Material,
}

impl std::fmt::Debug for ExternalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.material {
            Material::Rsa { n, .. } => format!("RSA-{}", bits(n)),
            Material::P256(_) => "P-256".to_owned(),
            Material::P384(_) => "P-384".to_owned(),
            Material::Ed25519(_) => "Ed25519".to_owned(),
        };
        write!(f, "ExternalKey({kind}, kid {:?})", self.kid)
    }
}

/// What became of one member of a JWK set.
#[derive(Debug)]
pub(crate) enum JwkOutcome {
    /// A signing key Vern can use.
    Key(ExternalKey),
    /// Not a signing key (`use: enc`) or of a type Vern does not verify
    /// (`oct` and others); ignored.
    Skipped,
}

/// The number of significant bits of a big-endian magnitude.
fn bits(n: &[u8]) -> usize {
    let n = strip_zeros(n);
    match n.first() {
        None => 0,
        Some(top) => (n.len() - 1)
            .saturating_mul(8)
            .saturating_add(8 - top.leading_zeros() as usize),
    }
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or_default()
}

/// Members only private keys carry.
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

fn member(map: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    let text = map
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("`{name}` is missing"))?;
    B64.decode(text)
        .map_err(|_| format!("`{name}` is not base64url"))
}

fn point(x: &[u8], y: &[u8], size: usize) -> Result<Vec<u8>, String> {
    if x.len() != size || y.len() != size {
        return Err(format!("the coordinates must be {size} bytes each"));
    }
    let mut out = Vec::with_capacity(1 + 2 * size);
    out.push(4);
    out.extend_from_slice(x);
    out.extend_from_slice(y);
    Ok(out)
}

fn rsa(n: &[u8], e: &[u8]) -> Result<Material, String> {
    let n = strip_zeros(n);
    let size = bits(n);
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&size) {
        return Err(format!(
            "an RSA key of {size} bits; {MIN_RSA_BITS} to {MAX_RSA_BITS} are accepted"
        ));
    }
    let e = strip_zeros(e);
    let odd = e.last().is_some_and(|b| b & 1 == 1);
    if e.len() > 4 || !odd || e == [1] {
        return Err(
            "the RSA public exponent must be odd, at least 3 and at most 32 bits".to_owned(),
        );
    }
    Ok(Material::Rsa {
        n: n.to_vec(),
        e: e.to_vec(),
    })
}

impl ExternalKey {
    /// Reads one member of a JWK set. Private keys and malformed or weak
    /// signing keys are errors (the message says why); keys for
    /// encryption and key types Vern does not verify are skipped.
    pub(crate) fn from_jwk(value: &Value) -> Result<JwkOutcome, String> {
        let map = value
            .as_object()
            .ok_or_else(|| "a JWK must be a JSON object".to_owned())?;
        if let Some(m) = PRIVATE_MEMBERS.iter().find(|m| map.contains_key(**m)) {
            return Err(format!("the JWK holds the private member `{m}`"));
        }
        if map
            .get("use")
            .and_then(Value::as_str)
            .is_some_and(|u| u != "sig")
        {
            return Ok(JwkOutcome::Skipped);
        }
        let alg = match map.get("alg").and_then(Value::as_str) {
            None => None,
            Some(name) => match JwtAlg::parse(name) {
                Some(a) => Some(a),
                None => return Ok(JwkOutcome::Skipped),
            },
        };
        let kty = map.get("kty").and_then(Value::as_str);
        let crv = map.get("crv").and_then(Value::as_str);
        let material = match (kty, crv) {
            (Some("RSA"), _) => rsa(&member(map, "n")?, &member(map, "e")?)?,
            (Some("EC"), Some("P-256")) => {
                Material::P256(point(&member(map, "x")?, &member(map, "y")?, 32)?)
            }
            (Some("EC"), Some("P-384")) => {
                Material::P384(point(&member(map, "x")?, &member(map, "y")?, 48)?)
            }
            (Some("OKP"), Some("Ed25519")) => Material::Ed25519(
                member(map, "x")?
                    .try_into()
                    .map_err(|_| "an Ed25519 key is 32 bytes".to_owned())?,
            ),
            _ => return Ok(JwkOutcome::Skipped),
        };
        let key = Self {
            kid: map.get("kid").and_then(Value::as_str).map(str::to_owned),
            alg,
            material,
        };
        if key.alg.is_some_and(|a| !key.fits(a)) {
            return Err("the JWK's `alg` does not fit its key type".to_owned());
        }
        Ok(JwkOutcome::Key(key))
    }

    /// Reads a PEM public key (`-----BEGIN PUBLIC KEY-----`), for issuers
    /// whose keys are configured statically (air-gapped clusters).
    pub(crate) fn from_pem(pem: &str) -> Result<Self, String> {
        let material = match vern_pki::public_key_from_pem(pem).map_err(|e| e.to_string())? {
            vern_pki::SpkiKey::Rsa { modulus, exponent } => rsa(&modulus, &exponent)?,
            vern_pki::SpkiKey::P256(p) => Material::P256(p),
            vern_pki::SpkiKey::P384(p) => Material::P384(p),
            vern_pki::SpkiKey::Ed25519(k) => Material::Ed25519(k),
        };
        Ok(Self {
            kid: None,
            alg: None,
            material,
        })
    }

    /// Whether this key verifies `alg` at all.
    pub(crate) fn fits(&self, alg: JwtAlg) -> bool {
        use JwtAlg::*;
        let by_type = matches!(
            (&self.material, alg),
            (
                Material::Rsa { .. },
                Rs256 | Rs384 | Rs512 | Ps256 | Ps384 | Ps512
            ) | (Material::P256(_), Es256)
                | (Material::P384(_), Es384)
                | (Material::Ed25519(_), EdDsa)
        );
        by_type && self.alg.is_none_or(|own| own == alg)
    }

    /// Whether `signature` by this key under `alg` covers `message`. A key
    /// that does not fit `alg` verifies nothing.
    pub(crate) fn verifies(&self, alg: JwtAlg, message: &[u8], signature: &[u8]) -> bool {
        if !self.fits(alg) {
            return false;
        }
        let rsa_params: Option<&'static signature::RsaParameters> = match alg {
            JwtAlg::Rs256 => Some(&signature::RSA_PKCS1_2048_8192_SHA256),
            JwtAlg::Rs384 => Some(&signature::RSA_PKCS1_2048_8192_SHA384),
            JwtAlg::Rs512 => Some(&signature::RSA_PKCS1_2048_8192_SHA512),
            JwtAlg::Ps256 => Some(&signature::RSA_PSS_2048_8192_SHA256),
            JwtAlg::Ps384 => Some(&signature::RSA_PSS_2048_8192_SHA384),
            JwtAlg::Ps512 => Some(&signature::RSA_PSS_2048_8192_SHA512),
            JwtAlg::Es256 | JwtAlg::Es384 | JwtAlg::EdDsa => None,
        };
        match (&self.material, rsa_params) {
            (Material::Rsa { n, e }, Some(params)) => RsaPublicKeyComponents { n, e }
                .verify(params, message, signature)
                .is_ok(),
            (Material::P256(p), None) => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, p)
                    .verify(message, signature)
                    .is_ok()
            }
            (Material::P384(p), None) => {
                UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, p)
                    .verify(message, signature)
                    .is_ok()
            }
            (Material::Ed25519(k), None) => UnparsedPublicKey::new(&signature::ED25519, k)
                .verify(message, signature)
                .is_ok(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// RFC 7515 appendix A.2: a JWS signed with RS256 by a 2048-bit key.
    const RFC7515_A2_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
    const RFC7515_A2_JWS: &str = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";

    fn rfc_key() -> ExternalKey {
        match ExternalKey::from_jwk(&json!({"kty": "RSA", "n": RFC7515_A2_N, "e": "AQAB"})) {
            Ok(JwkOutcome::Key(k)) => k,
            other => panic!("{other:?}"),
        }
    }

    fn parts(jws: &str) -> (Vec<u8>, Vec<u8>) {
        let (input, sig) = jws.rsplit_once('.').unwrap();
        (input.as_bytes().to_vec(), B64.decode(sig).unwrap())
    }

    #[test]
    fn rfc_7515_rs256_vector_verifies_only_as_rs256() {
        let key = rfc_key();
        let (input, sig) = parts(RFC7515_A2_JWS);
        assert!(key.verifies(JwtAlg::Rs256, &input, &sig));
        assert!(!key.verifies(JwtAlg::Rs512, &input, &sig));
        assert!(!key.verifies(JwtAlg::Ps256, &input, &sig));
        assert!(!key.verifies(JwtAlg::Es256, &input, &sig));
        let mut tampered = input.clone();
        tampered[5] ^= 1;
        assert!(!key.verifies(JwtAlg::Rs256, &tampered, &sig));
    }

    #[test]
    fn a_jwk_alg_pins_the_algorithm() {
        let pinned = json!({"kty": "RSA", "n": RFC7515_A2_N, "e": "AQAB", "alg": "PS256"});
        let JwkOutcome::Key(key) = ExternalKey::from_jwk(&pinned).unwrap() else {
            panic!("skipped");
        };
        let (input, sig) = parts(RFC7515_A2_JWS);
        assert!(!key.verifies(JwtAlg::Rs256, &input, &sig));
        let mismatched = json!({"kty": "RSA", "n": RFC7515_A2_N, "e": "AQAB", "alg": "ES256"});
        assert!(ExternalKey::from_jwk(&mismatched).is_err());
    }

    #[test]
    fn weak_private_and_foreign_keys() {
        // A 1024-bit modulus.
        let short = B64.encode([0xffu8; 128]);
        let err =
            ExternalKey::from_jwk(&json!({"kty": "RSA", "n": short, "e": "AQAB"})).unwrap_err();
        assert!(err.contains("1024 bits"), "{err}");
        let even_e = ExternalKey::from_jwk(&json!({"kty": "RSA", "n": RFC7515_A2_N, "e": "AAI"}));
        assert!(even_e.is_err());
        let private = json!({"kty": "RSA", "n": RFC7515_A2_N, "e": "AQAB", "d": "AQAB"});
        assert!(ExternalKey::from_jwk(&private).unwrap_err().contains("`d`"));
        for skipped in [
            json!({"kty": "oct", "kid": "h"}),
            json!({"kty": "RSA", "n": RFC7515_A2_N, "e": "AQAB", "use": "enc"}),
            json!({"kty": "RSA", "n": RFC7515_A2_N, "e": "AQAB", "alg": "HS256"}),
            json!({"kty": "EC", "crv": "secp256k1", "x": "AA", "y": "AA"}),
        ] {
            assert!(
                matches!(ExternalKey::from_jwk(&skipped), Ok(JwkOutcome::Skipped)),
                "{skipped}"
            );
        }
        assert!(
            ExternalKey::from_jwk(&json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}))
                .is_err()
        );
    }

    #[test]
    fn no_symmetric_or_unsigned_algorithm_exists() {
        for name in [
            "none", "None", "HS256", "HS384", "HS512", "RS1", "", "rs256",
        ] {
            assert_eq!(JwtAlg::parse(name), None, "{name}");
        }
        assert_eq!(JwtAlg::parse("Ed25519"), Some(JwtAlg::EdDsa));
        for a in JwtAlg::ALL {
            assert_eq!(JwtAlg::parse(a.name()), Some(a));
        }
    }
}
