//! One callout exchange without the network: open the server's request
//! (xkey-sealed when the server names its xkey), check that the server it
//! names signed it, and answer with an `authorization_response` that holds
//! a user JWT for the tenant's account, or an error.

use nkeys::XKey;

use crate::claims::{
    AuthorizationRequest, AuthorizationResponse, Claims, Permission, ResponsePermission, User,
    AUTHORIZATION_RESPONSE, USER,
};
use crate::keys::NatsKeys;
use crate::perms::Permissions;
use crate::{jwt, NatsError};

/// The header in which nats-server names its xkey when it seals requests.
pub const SERVER_XKEY_HEADER: &str = "Nats-Server-Xkey";

/// The audience nats-server gives its callout requests.
const REQUEST_AUDIENCE: &str = "nats-authorization-request";

/// A request whose signature and shape were checked.
#[derive(Debug, Clone)]
pub struct Request {
    /// The claims.
    pub claims: Claims<AuthorizationRequest>,
    /// The server's xkey, when it sealed the request: the answer is sealed
    /// to it.
    server_xkey: Option<String>,
}

impl Request {
    /// The Vern access token the client presented as its NATS token, if any.
    pub fn token(&self) -> Option<&str> {
        let t = self.claims.nats.connect_opts.auth_token.as_str();
        (!t.is_empty()).then_some(t)
    }

    /// The certificate the client presented over TLS (PEM, the leaf), if
    /// any. nats-server verified it against its `ca_file`; the callout
    /// verifies it again on its own.
    pub fn client_certificate(&self) -> Option<&str> {
        let tls = self.claims.nats.client_tls.as_ref()?;
        tls.certs
            .first()
            .or_else(|| tls.verified_chains.first().and_then(|c| c.first()))
            .map(String::as_str)
            .filter(|c| !c.is_empty())
    }

    /// The client's address.
    pub fn client_host(&self) -> &str {
        &self.claims.nats.client_info.host
    }
}

/// What the callout decided for one connection.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The tenant's account.
    pub account: String,
    /// A name for the user (the client id).
    pub name: String,
    /// The permissions.
    pub permissions: Permissions,
    /// Expiry (Unix seconds): never after the token's.
    pub expires: i64,
}

/// Opens a callout request. `server_xkey` is the value of the
/// [`SERVER_XKEY_HEADER`] header, when the message had one.
pub fn open(
    keys: &NatsKeys,
    payload: &[u8],
    server_xkey: Option<&str>,
) -> Result<Request, NatsError> {
    let plain = match server_xkey {
        Some(x) => {
            let sender = XKey::from_public_key(x)
                .map_err(|_| NatsError::BadRequest("the server's xkey is malformed".to_owned()))?;
            keys.xkey().open(payload, &sender).map_err(|_| {
                NatsError::BadRequest("the request does not open with Vern's xkey".to_owned())
            })?
        }
        None => payload.to_vec(),
    };
    let text = std::str::from_utf8(&plain)
        .map_err(|_| NatsError::BadRequest("the request is not a JWT".to_owned()))?;
    let claims: Claims<AuthorizationRequest> = jwt::decode(text)?;
    if claims.iss != claims.nats.server_id.id {
        return Err(NatsError::BadRequest(
            "the request is not signed by the server it names".to_owned(),
        ));
    }
    if claims.aud != REQUEST_AUDIENCE {
        return Err(NatsError::BadRequest(
            "the request is not addressed to a callout".to_owned(),
        ));
    }
    if claims.nats.user_nkey.is_empty() || !claims.nats.user_nkey.starts_with('U') {
        return Err(NatsError::BadRequest(
            "the request names no user nkey".to_owned(),
        ));
    }
    if let (Some(header), false) = (server_xkey, claims.nats.server_id.xkey.is_empty()) {
        if header != claims.nats.server_id.xkey {
            return Err(NatsError::BadRequest(
                "the request was sealed with another xkey than the server names".to_owned(),
            ));
        }
    }
    Ok(Request {
        claims,
        server_xkey: server_xkey.map(str::to_owned),
    })
}

/// The reply to `request`: a user JWT for `outcome`'s grant, or its error.
/// `now` is Unix seconds.
pub fn respond(
    keys: &NatsKeys,
    request: &Request,
    outcome: Result<&Grant, &str>,
    now: i64,
) -> Result<Vec<u8>, NatsError> {
    let mut response = AuthorizationResponse {
        claim_type: AUTHORIZATION_RESPONSE.to_owned(),
        version: 2,
        ..Default::default()
    };
    match outcome {
        Ok(grant) => response.jwt = user_jwt(keys, request, grant, now)?,
        Err(why) => response.error = why.to_owned(),
    }
    let mut claims = Claims {
        iat: now,
        iss: keys.issuer_public(),
        sub: request.claims.nats.user_nkey.clone(),
        aud: request.claims.nats.server_id.id.clone(),
        nats: response,
        ..Default::default()
    };
    let token = jwt::encode(&mut claims, keys.issuer())?;
    match &request.server_xkey {
        Some(x) => {
            let recipient = XKey::from_public_key(x)
                .map_err(|_| NatsError::BadRequest("the server's xkey is malformed".to_owned()))?;
            keys.xkey()
                .seal(token.as_bytes(), &recipient)
                .map_err(|e| NatsError::Internal(format!("sealing: {e}")))
        }
        None => Ok(token.into_bytes()),
    }
}

fn user_jwt(
    keys: &NatsKeys,
    request: &Request,
    grant: &Grant,
    now: i64,
) -> Result<String, NatsError> {
    let p = &grant.permissions;
    let direction = |allow: &[crate::Subject]| Permission {
        allow: allow.iter().map(|s| s.as_str().to_owned()).collect(),
        // An empty allow list means "everything" to nats-server: a user with
        // nothing allowed is denied everything instead.
        deny: if allow.is_empty() {
            vec![">".to_owned()]
        } else {
            Vec::new()
        },
    };
    let mut claims = Claims {
        iat: now,
        iss: keys.issuer_public(),
        name: grant.name.clone(),
        sub: request.claims.nats.user_nkey.clone(),
        aud: grant.account.clone(),
        exp: grant.expires,
        nats: User {
            publish: direction(&p.publish),
            subscribe: direction(&p.subscribe),
            resp: p.responses.then_some(ResponsePermission { max: 1, ttl: 0 }),
            subs: -1,
            data: -1,
            payload: -1,
            claim_type: USER.to_owned(),
            version: 2,
            ..Default::default()
        },
        ..Default::default()
    };
    jwt::encode(&mut claims, keys.issuer())
}

#[cfg(test)]
mod tests;
