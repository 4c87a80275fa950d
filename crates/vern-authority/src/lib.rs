//! The token authority: OAuth2 clients of the platform (services scoped to
//! a tenant's environment, operators with platform roles), short-lived
//! JWT access tokens (RFC 9068) signed with rotating Ed25519 keys,
//! sender-constraining with DPoP (RFC 9449), and the checks of RFC 8725:
//! the algorithm follows from the key, never from the token.
//!
//! Other services embed [`Verifier`] to check tokens offline against the
//! published JWKS.
//!
//! The JWT auth method (Vault's `auth/jwt`) lets workloads of external
//! issuers (Kubernetes service accounts, CI systems) log in as a service
//! client: roles name the issuer, its keys and the bounds a JWT must meet.
//!
//! Everything persistent (signing keys, clients, JWT roles, revocations,
//! assertion replay markers) goes through the authority's view of the
//! seal's barrier, scoped to `authority/`. No HTTP here: `vern-server`
//! maps the OAuth2 and Vault auth endpoints onto [`Authority`], and
//! fetches issuers' key sets for it through [`JwksFetch`].
#![forbid(unsafe_code)]

mod authority;
mod claims;
mod client_auth;
mod clients;
mod dpop;
pub mod jwk;
pub mod jws;
mod jwt_auth;
mod keys;
mod registry;
mod revocation;
mod verifier;

pub use authority::{Authority, AuthorityConfig, IssuedToken, LoginGrant, Presented, TokenRequest};
pub use claims::{certificate_thumbprint, AccessClaims};
pub use client_auth::{node_spiffe_id, ClientCredentials, JWT_BEARER_ASSERTION};
pub use clients::{ClientKind, ClientRecord, ClientSpec, CreatedClient, NatsImport, NatsSubjects};
pub use dpop::{DpopCheck, NonceRule};
pub use jwk::{Alg, PublicJwk};
pub use jwt_auth::{
    ClaimMatch, JwksFetch, JwksUrl, JwtAlg, JwtAuthError, JwtLogin, JwtRole, JwtRolePlan,
    JwtRoleSpec, MAX_EXTERNAL_JWT_LEN,
};
pub use registry::{ApplyGate, ApplyPlan, Declaration};
pub use verifier::{JwksSource, Verifier, VerifierConfig};

/// Why an authority operation failed. Token and proof failures say what
/// was wrong without echoing secrets.
///
/// The variants fall in three families, and the difference matters to the
/// one place that maps them to HTTP (`vern-server/src/error.rs`): the
/// caller's token or proof was refused (`Malformed` … `UseDpopNonce`); the
/// caller's request was refused (`InvalidClient` … `NoClient`); or Vern
/// itself failed (`Conflict`, `BadKey`, `JwksUnavailable`, `Internal`,
/// `Seal`), which is never reported as the caller's fault. Not
/// `#[non_exhaustive]`: a new variant must fail to compile until that
/// mapping handles it.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    // The presented token or proof.
    /// Not a well-formed JWS/JWT.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The `alg` is not the key's algorithm (`none`, HMAC, …).
    #[error("algorithm `{0}` is not accepted for this key")]
    Algorithm(String),
    /// The signature does not verify.
    #[error("signature verification failed")]
    Signature,
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

    // The caller's request.
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
    /// A client declaration (create or apply) is invalid: a bad name,
    /// scope, key, lifetime or combination; the message names the field.
    #[error("{0}")]
    InvalidClientSpec(String),
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

    // Vern's own faults.
    /// A concurrent change won (clients changed while applying, or a key
    /// rotation kept colliding with others); running the operation again
    /// is safe.
    #[error("{0}")]
    Conflict(String),
    /// A public key could not be used: one of Vern's own signing keys, or
    /// a key of the JWKS an offline verifier fetched. Callers' keys are
    /// reported in the caller's terms (`InvalidClientSpec`, `Dpop`,
    /// `InvalidClient`).
    #[error("invalid key: {0}")]
    BadKey(String),
    /// The offline verifier could not fetch the JWKS from its source.
    #[error("the JWK set is unavailable: {0}")]
    JwksUnavailable(String),
    /// An internal fault (no active signing key, the HMAC key cannot be
    /// established, a record cannot be encoded); the message is for the
    /// log and holds no secret.
    #[error("internal authority error: {0}")]
    Internal(String),
    /// The seal or storage failed.
    #[error(transparent)]
    Seal(#[from] vern_seal::SealError),
}
