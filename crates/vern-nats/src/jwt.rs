//! NATS JWTs: `{"typ":"JWT","alg":"ed25519-nkey"}`, base64url without
//! padding, signed by an nkey. Encoding fills in `jti`; decoding verifies
//! the signature with the key the `iss` claim names before anything in the
//! claims is believed.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use nkeys::KeyPair;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::claims::Claims;
use crate::NatsError;

/// The header of every JWT Vern signs.
const HEADER: &str = r#"{"typ":"JWT","alg":"ed25519-nkey"}"#;

/// The largest JWT decoded: a request carries the client's certificates,
/// so allow some room, but no more.
const MAX_JWT: usize = 64 * 1024;

#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    typ: String,
    #[serde(default)]
    alg: String,
}

/// Signs `claims` with `signer` (whose public key must be `claims.iss`),
/// setting `jti` from the other claims.
pub fn encode<T: Serialize>(claims: &mut Claims<T>, signer: &KeyPair) -> Result<String, NatsError> {
    claims.jti.clear();
    let body = serde_json::to_vec(&*claims).map_err(|e| NatsError::Internal(e.to_string()))?;
    claims.jti = data_encoding::BASE32_NOPAD.encode(&Sha256::digest(&body));
    let body = serde_json::to_vec(&*claims).map_err(|e| NatsError::Internal(e.to_string()))?;
    let signing_input = format!("{}.{}", B64.encode(HEADER), B64.encode(body));
    let sig = signer
        .sign(signing_input.as_bytes())
        .map_err(|e| NatsError::Internal(format!("signing: {e}")))?;
    Ok(format!("{signing_input}.{}", B64.encode(sig)))
}

/// Decodes a JWT whose signature verifies with the public nkey in its own
/// `iss`, and whose `type` is `claim_type`. Who may be the issuer is the
/// caller's question.
pub fn decode<T: DeserializeOwned + Default + ClaimType>(
    token: &str,
) -> Result<Claims<T>, NatsError> {
    let bad = |why: &str| NatsError::BadJwt(why.to_owned());
    if token.len() > MAX_JWT {
        return Err(bad("the JWT is too long"));
    }
    let mut parts = token.trim().split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("a JWT has three dot-separated parts"));
    };
    let header: Header = serde_json::from_slice(
        &B64.decode(h)
            .map_err(|_| bad("the header is not base64url"))?,
    )
    .map_err(|_| bad("the header is not JSON"))?;
    if !header.typ.eq_ignore_ascii_case("jwt")
        || !matches!(header.alg.as_str(), "ed25519-nkey" | "ed25519")
    {
        return Err(bad("the header is not an nkey-signed JWT"));
    }
    let body = B64
        .decode(p)
        .map_err(|_| bad("the claims are not base64url"))?;
    let sig = B64
        .decode(s)
        .map_err(|_| bad("the signature is not base64url"))?;
    #[derive(Deserialize)]
    struct Iss {
        #[serde(default)]
        iss: String,
    }
    let iss: Iss = serde_json::from_slice(&body).map_err(|_| bad("the claims are not JSON"))?;
    let key = KeyPair::from_public_key(&iss.iss).map_err(|_| bad("iss is not a public nkey"))?;
    let signing_input_len = h.len().saturating_add(1).saturating_add(p.len());
    let signing_input = token
        .trim()
        .get(..signing_input_len)
        .ok_or_else(|| bad("a JWT has three dot-separated parts"))?;
    key.verify(signing_input.as_bytes(), &sig)
        .map_err(|_| bad("the signature does not verify with the key iss names"))?;
    let claims: Claims<T> = serde_json::from_slice(&body)
        .map_err(|e| NatsError::BadJwt(format!("the claims are malformed: {e}")))?;
    if claims.nats.claim_type() != T::TYPE {
        return Err(NatsError::BadJwt(format!(
            "the claims are not of type {}",
            T::TYPE
        )));
    }
    Ok(claims)
}

/// The `type` a claims payload must carry.
pub trait ClaimType {
    /// The expected type.
    const TYPE: &'static str;
    /// The type the payload carries.
    fn claim_type(&self) -> &str;
}

impl ClaimType for crate::claims::AuthorizationRequest {
    const TYPE: &'static str = crate::claims::AUTHORIZATION_REQUEST;
    fn claim_type(&self) -> &str {
        &self.claim_type
    }
}

impl ClaimType for crate::claims::AuthorizationResponse {
    const TYPE: &'static str = crate::claims::AUTHORIZATION_RESPONSE;
    fn claim_type(&self) -> &str {
        &self.claim_type
    }
}

impl ClaimType for crate::claims::User {
    const TYPE: &'static str = crate::claims::USER;
    fn claim_type(&self) -> &str {
        &self.claim_type
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::{AuthorizationRequest, User};

    fn request(server: &KeyPair) -> Claims<AuthorizationRequest> {
        Claims {
            iss: server.public_key(),
            sub: "AUTH".to_owned(),
            iat: 1,
            nats: AuthorizationRequest {
                user_nkey: "UABC".to_owned(),
                claim_type: "authorization_request".to_owned(),
                version: 2,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn round_trip_and_tamper() {
        let server = KeyPair::new_server();
        let mut c = request(&server);
        let jwt = encode(&mut c, &server).unwrap();
        assert!(!c.jti.is_empty());
        let back: Claims<AuthorizationRequest> = decode(&jwt).unwrap();
        assert_eq!(back.nats.user_nkey, "UABC");
        // Another key claiming to be the server.
        let other = KeyPair::new_server();
        let mut forged = request(&server);
        let forged = encode(&mut forged, &other).unwrap();
        assert!(decode::<AuthorizationRequest>(&forged).is_err());
        // A changed payload.
        let mut parts: Vec<String> = jwt.split('.').map(str::to_owned).collect();
        parts[1] = B64.encode(br#"{"iss":"x","nats":{}}"#);
        assert!(decode::<AuthorizationRequest>(&parts.join(".")).is_err());
        // The wrong claim type.
        assert!(decode::<User>(&jwt).is_err());
        for junk in ["", "a.b", "a.b.c.d", "...", "e30.e30.e30"] {
            assert!(decode::<AuthorizationRequest>(junk).is_err(), "{junk}");
        }
    }
}
