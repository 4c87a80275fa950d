//! Access token claims: the verified claims of a token and the RFC 9068 /
//! RFC 8725 checks shared by the authority and the embeddable verifier.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::clients::ClientKind;
use crate::jws::Unverified;
use crate::AuthError;

/// The verified claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessClaims {
    /// `client_id` (= `sub`).
    pub client_id: String,
    /// The token's id.
    pub jti: String,
    /// Expiry (Unix seconds).
    pub exp: u64,
    /// Issued at.
    pub iat: u64,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Service scope or operator roles.
    pub kind: ClientKind,
    /// `cnf.jkt`, for DPoP-bound tokens.
    pub jkt: Option<String>,
    /// `cnf.x5t#S256`, for certificate-bound tokens.
    pub x5t: Option<String>,
    /// `auth_method`: the Vault auth method (`approle`, `cert`, …) of a
    /// token issued at a Vault login; none for the token endpoint's.
    pub auth_method: Option<String>,
}

/// The RFC 8705 thumbprint of a certificate: base64url SHA-256 of its DER.
pub fn certificate_thumbprint(der: &[u8]) -> String {
    B64.encode(vern_crypto::sha256(der))
}

/// The RFC 9068 / RFC 8725 claim checks of a signature-verified access
/// token: `iss`, `aud`, `exp`, `nbf`, `iat` (with leeway), a lifetime
/// (`exp - iat`) of at most `max_lifetime` seconds, and the shape of Vern's
/// claims. Shared by the authority and the embeddable verifier.
pub(crate) fn check_claims(
    jwt: &Unverified,
    issuer: &str,
    audience: &str,
    leeway: u64,
    max_lifetime: u64,
    now: u64,
) -> Result<AccessClaims, AuthError> {
    if claim_str(jwt, "iss")? != issuer {
        return Err(AuthError::Claim("iss is not this issuer".to_owned()));
    }
    if !audience_has(jwt.claims.get("aud"), &[audience]) {
        return Err(AuthError::Claim(
            "aud does not name this service".to_owned(),
        ));
    }
    let exp = required_date(jwt, "exp")?;
    let iat = required_date(jwt, "iat")?;
    let nbf = not_before(jwt)?.unwrap_or(iat);
    check_times(exp, nbf, iat, leeway, now)?;
    // Vern never issues a token living longer than its maximum lifetime;
    // one that claims to (an `exp` far beyond `iat`, up to `u64::MAX`) or
    // that expires before it was issued is not one of its tokens.
    if exp.checked_sub(iat).is_none_or(|life| life > max_lifetime) {
        return Err(AuthError::Claim(format!(
            "exp must lie after iat and at most {max_lifetime} s after it"
        )));
    }
    let client_id = claim_str(jwt, "client_id")?.to_owned();
    if claim_str(jwt, "sub")? != client_id {
        return Err(AuthError::Claim("sub and client_id differ".to_owned()));
    }
    // Operators carry roles (and a tenant operator its tenant); services
    // carry their scope and never roles.
    let kind = match (jwt.claims.get("tenant"), jwt.claims.get("roles")) {
        // A node carries neither a scope nor roles, only the node marker.
        (None, None) if jwt.claims.get("node") == Some(&Value::Bool(true)) => ClientKind::Node,
        (_, Some(Value::Array(roles))) => ClientKind::Operator {
            roles: roles
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            tenant: match jwt.claims.get("tenant") {
                Some(_) => Some(claim_str(jwt, "tenant")?.to_owned()),
                None => None,
            },
        },
        (Some(_), None) => ClientKind::Service {
            tenant: claim_str(jwt, "tenant")?.to_owned(),
            project: claim_str(jwt, "project")?.to_owned(),
            environment: claim_str(jwt, "environment")?.to_owned(),
        },
        _ => {
            return Err(AuthError::Claim(
                "neither a tenant scope nor roles".to_owned(),
            ))
        }
    };
    Ok(AccessClaims {
        client_id,
        jti: claim_str(jwt, "jti")?.to_owned(),
        exp,
        iat,
        scopes: claim_str(jwt, "scope")
            .unwrap_or("")
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        kind,
        jkt: confirmation(jwt, "jkt"),
        x5t: confirmation(jwt, "x5t#S256"),
        auth_method: match jwt.claims.get("auth_method") {
            Some(_) => Some(claim_str(jwt, "auth_method")?.to_owned()),
            None => None,
        },
    })
}

/// `nbf`, if the token has one.
pub(crate) fn not_before(jwt: &Unverified) -> Result<Option<u64>, AuthError> {
    numeric_date(jwt, "nbf")
}

/// A token's times against `now`, with `leeway` either way. Times come from
/// the token: saturating arithmetic, so that a hostile `exp` near
/// `u64::MAX` is compared, not overflowed.
pub(crate) fn check_times(
    exp: u64,
    nbf: u64,
    iat: u64,
    leeway: u64,
    now: u64,
) -> Result<(), AuthError> {
    if now > exp.saturating_add(leeway) {
        return Err(AuthError::Expired);
    }
    let latest = now.saturating_add(leeway);
    if nbf > latest || iat > latest {
        return Err(AuthError::NotYetValid);
    }
    Ok(())
}

/// RFC 8705 §3: a certificate-bound token is accepted only over a
/// connection authenticated with that certificate.
pub(crate) fn check_certificate(
    claims: &AccessClaims,
    peer: Option<&[u8]>,
) -> Result<(), AuthError> {
    let Some(expected) = &claims.x5t else {
        return Ok(());
    };
    let presented = peer.map(certificate_thumbprint);
    if presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(expected.as_bytes()))) {
        Ok(())
    } else {
        Err(AuthError::Claim(
            "the token is bound to a client certificate this connection did not present".to_owned(),
        ))
    }
}

/// Checks `typ` and `kid` of an access token header; returns the kid.
pub(crate) fn access_header(jwt: &Unverified) -> Result<&str, AuthError> {
    let typ = jwt.header_str("typ").unwrap_or("");
    if !typ.eq_ignore_ascii_case("at+jwt") && !typ.eq_ignore_ascii_case("application/at+jwt") {
        return Err(AuthError::Claim("typ must be at+jwt".to_owned()));
    }
    jwt.header_str("kid")
        .ok_or_else(|| AuthError::Claim("kid is missing".to_owned()))
}

pub(crate) fn claim_str<'a>(jwt: &'a Unverified, name: &str) -> Result<&'a str, AuthError> {
    jwt.claims
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| AuthError::Claim(format!("`{name}` is missing")))
}

/// A NumericDate claim (RFC 7519 §2) that may be absent. Present, it must
/// be a whole, non-negative number of seconds that fits in a `u64`:
/// negative numbers, fractions, numbers beyond `u64::MAX` and other JSON
/// types are refused rather than ignored, so a malformed `nbf` cannot
/// switch its check off.
pub(crate) fn numeric_date(jwt: &Unverified, name: &str) -> Result<Option<u64>, AuthError> {
    match jwt.claims.get(name) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            AuthError::Claim(format!(
                "`{name}` must be a whole, non-negative number of seconds since 1970"
            ))
        }),
    }
}

/// A NumericDate claim that must be present (see [`numeric_date`]).
pub(crate) fn required_date(jwt: &Unverified, name: &str) -> Result<u64, AuthError> {
    numeric_date(jwt, name)?.ok_or_else(|| AuthError::Claim(format!("`{name}` is missing")))
}

/// Whether `aud` (a string or an array) contains `want`.
pub(crate) fn audience_has(aud: Option<&Value>, want: &[&str]) -> bool {
    match aud {
        Some(Value::String(s)) => want.contains(&s.as_str()),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .any(|s| want.contains(&s)),
        _ => false,
    }
}

/// A member of the token's `cnf` (confirmation) claim.
fn confirmation(jwt: &Unverified, member: &str) -> Option<String> {
    jwt.claims
        .get("cnf")
        .and_then(|c| c.get(member))
        .and_then(Value::as_str)
        .map(str::to_owned)
}
