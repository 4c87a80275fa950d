//! Client authentication at the token, introspection and revocation
//! endpoints: client secrets (compared as HMACs), `private_key_jwt`
//! assertions (RFC 7523) with storage-backed `jti` replay markers, and
//! `tls_client_auth` (RFC 8705).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use vern_crypto::SecretBytes;
use vern_seal::{Barrier, BarrierWrite, Expect, SealError};

use crate::authority::{view, Authority};
use crate::claims::{audience_has, claim_str, numeric_date, required_date};
use crate::clients::{ClientKind, ClientRecord};
use crate::jwk::PublicJwk;
use crate::jws::Unverified;
use crate::AuthError;

pub(crate) const ASSERTIONS: &str = "assertion-jti/";
/// At most this many SANs of a login certificate are looked up.
const MAX_CERTIFICATE_NAMES: usize = 16;
/// `client_assertion_type` of RFC 7523 client authentication.
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How the client authenticates at the token endpoint. Its `Debug` leaves
/// the secret and the assertion out.
pub enum ClientCredentials {
    /// `client_secret_basic` or `client_secret_post`.
    Secret {
        /// The client id.
        client_id: String,
        /// The secret.
        secret: SecretBytes,
    },
    /// `tls_client_auth` (RFC 8705): the verified client certificate of the
    /// connection.
    Tls {
        /// The `client_id` form field.
        client_id: String,
        /// The certificate, DER.
        certificate: Vec<u8>,
    },
    /// `private_key_jwt` (RFC 7523).
    Assertion {
        /// The `client_id` form field, when sent (must match the assertion).
        client_id: Option<String>,
        /// The signed assertion.
        assertion: String,
    },
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Secret { client_id, secret } => f
                .debug_struct("Secret")
                .field("client_id", client_id)
                .field("secret", secret)
                .finish(),
            Self::Tls {
                client_id,
                certificate,
            } => f
                .debug_struct("Tls")
                .field("client_id", client_id)
                .field("certificate", &format_args!("{} bytes", certificate.len()))
                .finish(),
            Self::Assertion { client_id, .. } => f
                .debug_struct("Assertion")
                .field("client_id", client_id)
                .field("assertion", &"[redacted]")
                .finish(),
        }
    }
}

impl Authority {
    pub(crate) async fn secret_hmac(
        &self,
        b: &Barrier,
        secret: &[u8],
    ) -> Result<String, AuthError> {
        let k = self.hmac_key(b).await?;
        let mut mac = Hmac::<Sha256>::new_from_slice(k.expose())
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        mac.update(b"vern/client-secret/v1");
        mac.update(secret);
        Ok(B64.encode(mac.finalize().into_bytes()))
    }

    pub(crate) async fn authenticate(
        &self,
        b: &Barrier,
        creds: &ClientCredentials,
    ) -> Result<ClientRecord, AuthError> {
        match creds {
            ClientCredentials::Secret { client_id, secret } => {
                let client = self.claimed_client(b, client_id).await?;
                let presented = self.secret_hmac(b, secret.expose()).await?;
                let ok = client
                    .secret_hmac
                    .as_ref()
                    .is_some_and(|h| bool::from(h.as_bytes().ct_eq(presented.as_bytes())));
                if ok {
                    Ok(client)
                } else {
                    Err(AuthError::InvalidClient)
                }
            }
            ClientCredentials::Assertion {
                client_id,
                assertion,
            } => {
                self.check_assertion(b, client_id.as_deref(), assertion)
                    .await
            }
            ClientCredentials::Tls {
                client_id,
                certificate,
            } => {
                let client = self.claimed_client(b, client_id).await?;
                // The chain was verified against the client CA during the
                // handshake; here the certificate must name this client.
                let names = vern_pki::peer_identities(&certificate.as_slice().into());
                match self.tls_name_of(&client) {
                    Some(san) if names.contains(&san) => Ok(client),
                    _ => Err(AuthError::InvalidClient),
                }
            }
        }
    }

    /// The SAN a client's certificate must carry: its `tls_client_auth_san`;
    /// for a node without one, its own SPIFFE ID, so that a node holds
    /// both a secret (its bootstrap) and a certificate login (its SVID).
    /// The node exception is for nodes only: every other client has one
    /// method or the other.
    fn tls_name_of(&self, client: &ClientRecord) -> Option<String> {
        if let Some(san) = &client.tls_client_auth_san {
            return Some(san.clone());
        }
        let td = self.config().node_trust_domain.as_ref()?;
        if !matches!(client.kind, ClientKind::Node) {
            return None;
        }
        node_spiffe_id(td, &client.client_id)
    }

    /// The client a credential names; an unknown one is just a failed
    /// authentication, so that ids cannot be probed.
    async fn claimed_client(
        &self,
        b: &Barrier,
        client_id: &str,
    ) -> Result<ClientRecord, AuthError> {
        self.client(b, client_id).await.map_err(|e| match e {
            AuthError::NoClient(_) => AuthError::InvalidClient,
            other => other,
        })
    }

    /// RFC 7523 §3: `iss` = `sub` = the client, `aud` the token endpoint
    /// or issuer, `exp` in the future, a `jti` never seen before (checked
    /// in storage, so across replicas), signed by one of the client's keys.
    async fn check_assertion(
        &self,
        b: &Barrier,
        form_client: Option<&str>,
        assertion: &str,
    ) -> Result<ClientRecord, AuthError> {
        let jwt = Unverified::parse(assertion).map_err(|_| AuthError::InvalidClient)?;
        let iss = claim_str(&jwt, "iss").map_err(|_| AuthError::InvalidClient)?;
        let sub = claim_str(&jwt, "sub").map_err(|_| AuthError::InvalidClient)?;
        if iss != sub || form_client.is_some_and(|c| c != iss) {
            return Err(AuthError::InvalidClient);
        }
        let client = self
            .client(b, iss)
            .await
            .map_err(|_| AuthError::InvalidClient)?;
        let keys: Vec<PublicJwk> = client
            .jwks
            .iter()
            .filter_map(|j| PublicJwk::parse(j).ok())
            .collect();
        let kid = jwt.header_str("kid");
        let verified = keys
            .iter()
            .filter(|k| {
                kid.is_none_or(|kid| {
                    client
                        .jwks
                        .iter()
                        .any(|j| j.get("kid").and_then(Value::as_str) == Some(kid))
                        || k.thumbprint() == kid
                })
            })
            .any(|k| jwt.verify(k).is_ok());
        if !verified {
            return Err(AuthError::InvalidClient);
        }
        let endpoint = self.config.token_endpoint();
        if !audience_has(
            jwt.claims.get("aud"),
            &[endpoint.as_str(), self.config.issuer.as_str()],
        ) {
            return Err(AuthError::InvalidClient);
        }
        // `exp`, `nbf` and `iat` are the caller's numbers: compared with
        // saturating arithmetic (a hostile `exp` of `u64::MAX` must be a
        // refusal, not an overflow), and present but malformed ones refused.
        let now = self.now();
        let latest = now.saturating_add(self.config.leeway);
        let exp = required_date(&jwt, "exp").map_err(|_| AuthError::InvalidClient)?;
        if exp.saturating_add(self.config.leeway) < now
            || exp > now.saturating_add(self.config.max_ttl)
        {
            return Err(AuthError::InvalidClient);
        }
        for name in ["nbf", "iat"] {
            let date = numeric_date(&jwt, name).map_err(|_| AuthError::InvalidClient)?;
            if date.is_some_and(|d| d > latest) {
                return Err(AuthError::InvalidClient);
            }
        }
        let jti = claim_str(&jwt, "jti").map_err(|_| AuthError::InvalidClient)?;
        let marker = B64.encode(vern_crypto::sha256(format!("{iss}\n{jti}").as_bytes()));
        let write = BarrierWrite {
            key: format!("{ASSERTIONS}{marker}"),
            value: Some(SecretBytes::new(exp.to_be_bytes().to_vec())),
            expect: Expect::Absent,
        };
        match view(b)?.commit(vec![write]).await {
            Ok(_) => Ok(client),
            Err(SealError::Conflict { .. }) => {
                tracing::warn!(client_id = %iss, "Client assertion replayed.");
                Err(AuthError::InvalidClient)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The client a certificate logs in as, at a Vault certificate login:
    /// the client `name` (a client id) if given, otherwise the client
    /// registered with a SAN the certificate carries. Either way the
    /// client's `tls_client_auth_san` must be one of the certificate's DNS
    /// or URI SANs (a SPIFFE ID among them); the chain was verified against
    /// the client CA during the handshake. Anything else is
    /// `InvalidClient`; a certificate naming several clients, with no
    /// `name` to choose, is `UnauthorizedClient` asking for one.
    pub async fn certificate_client(
        &self,
        b: &Barrier,
        certificate: &[u8],
        name: Option<&str>,
    ) -> Result<ClientRecord, AuthError> {
        let names: Vec<String> = vern_pki::peer_identities(&certificate.into())
            .into_iter()
            .take(MAX_CERTIFICATE_NAMES)
            .collect();
        let named = |c: &ClientRecord| {
            c.tls_client_auth_san
                .as_ref()
                .is_some_and(|san| names.contains(san))
        };
        if let Some(id) = name {
            let client = self.claimed_client(b, id).await?;
            return if named(&client) {
                Ok(client)
            } else {
                Err(AuthError::InvalidClient)
            };
        }
        let mut found: Vec<ClientRecord> = Vec::new();
        for san in &names {
            for id in self.indexed_by_san(b, san).await? {
                if found.iter().any(|c| c.client_id == id) {
                    continue;
                }
                match self.client(b, &id).await {
                    Ok(client) if named(&client) => found.push(client),
                    // A stale index entry: the client was deleted or its
                    // SAN changed.
                    Ok(_) | Err(AuthError::NoClient(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let mut found = found.into_iter();
        match (found.next(), found.next()) {
            (Some(client), None) => Ok(client),
            (None, _) => Err(AuthError::InvalidClient),
            (Some(_), Some(_)) => Err(AuthError::UnauthorizedClient(
                "this certificate names several clients; give the one to log in as in `name`"
                    .to_owned(),
            )),
        }
    }

    /// Authenticates a client for introspection or revocation.
    pub async fn authenticate_client(
        &self,
        b: &Barrier,
        creds: &ClientCredentials,
    ) -> Result<ClientRecord, AuthError> {
        self.authenticate(b, creds).await
    }
}

/// The SPIFFE ID of the node client `client_id` (`node.<name>`) in `td`.
pub fn node_spiffe_id(td: &vern_pki::TrustDomain, client_id: &str) -> Option<String> {
    let name = client_id.strip_prefix("node.")?;
    vern_pki::Workload::Node {
        name: name.to_owned(),
    }
    .spiffe_id(td)
    .ok()
    .map(|id| id.to_string())
}
