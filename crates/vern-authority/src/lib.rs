//! The token authority: OAuth2 clients of the platform (services scoped to
//! a tenant's environment, operators with platform roles), short-lived
//! JWT access tokens (RFC 9068) signed with rotating Ed25519 keys,
//! sender-constraining with DPoP (RFC 9449), and the checks of RFC 8725:
//! the algorithm follows from the key, never from the token.
//!
//! Other services embed [`Verifier`] to check tokens offline against the
//! published JWKS.
//!
//! Everything persistent (signing keys, clients, revocations, assertion
//! replay markers) goes through the seal's barrier. No HTTP here:
//! `vern-server` maps the OAuth2 endpoints onto [`Authority`].
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod authority;
mod claims;
mod client_auth;
mod clients;
mod dpop;
pub mod jwk;
pub mod jws;
mod keys;
mod registry;
mod revocation;
mod verifier;

pub use authority::{Authority, AuthorityConfig, IssuedToken, Presented, TokenRequest};
pub use claims::{certificate_thumbprint, AccessClaims};
pub use client_auth::{ClientCredentials, JWT_BEARER_ASSERTION};
pub use clients::{ClientKind, ClientRecord, ClientSpec, CreatedClient};
pub use dpop::{DpopCheck, NonceRule};
pub use jwk::{Alg, PublicJwk};
pub use registry::{ApplyGate, ApplyPlan};
pub use verifier::{JwksSource, Verifier, VerifierConfig};

/// Why an authority operation failed. Token and proof failures say what
/// was wrong without echoing secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Not a well-formed JWS/JWT.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The `alg` is not the key's algorithm (`none`, HMAC, …).
    #[error("algorithm `{0}` is not accepted for this key")]
    Algorithm(String),
    /// The signature does not verify.
    #[error("signature verification failed")]
    Signature,
    /// A key is unusable.
    #[error("invalid key: {0}")]
    BadKey(String),
    /// The `kid` names no known key.
    #[error("unknown signing key `{0}`")]
    UnknownKey(String),
    /// A claim or header is missing or wrong; the message names it.
    #[error("invalid token: {0}")]
    Claim(String),
    /// Past `exp`.
    #[error("the token has expired")]
    Expired,
    /// Before `nbf` (or `iat` in the future).
    #[error("the token is not yet valid")]
    NotYetValid,
    /// The token was revoked.
    #[error("the token was revoked")]
    Revoked,
    /// The token's client was deleted, or changed after the token was
    /// issued (roles, scopes, keys); a new token reflects the client as it
    /// is now.
    #[error("the token's client was deleted or changed after the token was issued")]
    ClientChanged,
    /// A DPoP proof failed a check; the message names it.
    #[error("invalid DPoP proof: {0}")]
    Dpop(String),
    /// The DPoP proof needs a fresh server nonce (RFC 9449 §8).
    #[error("a DPoP nonce is required")]
    UseDpopNonce,
    /// Client authentication failed (unknown client, wrong secret or
    /// assertion); deliberately not more specific.
    #[error("client authentication failed")]
    InvalidClient,
    /// A requested scope is not allowed for the client.
    #[error("scope `{0}` is not allowed for this client")]
    InvalidScope(String),
    /// The client may not use this grant or binding.
    #[error("{0}")]
    UnauthorizedClient(String),
    /// A request field is invalid.
    #[error("{0}")]
    Invalid(String),
    /// A client with this id exists already.
    #[error("client `{0}` already exists")]
    Exists(String),
    /// No such client.
    #[error("no client `{0}`")]
    NoClient(String),
    /// The caller may not make or change this client; the message says
    /// what it lacks.
    #[error("{0}")]
    Forbidden(String),
    /// The seal or storage failed.
    #[error(transparent)]
    Seal(#[from] vern_seal::SealError),
}
