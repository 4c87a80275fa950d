//! The NATS JWT claims Vern reads and writes, as nats-server's JWT v2
//! library spells them: the server's `authorization_request`, Vern's
//! `authorization_response`, and the `user` claims it embeds. Every field
//! has a default, so a server that adds or omits a field does not break
//! decoding; unknown fields are ignored.

use serde::{Deserialize, Serialize};

/// The claims every NATS JWT carries around its `nats` part.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Claims<T> {
    /// The JWT id: base32 of the SHA-256 of the claims without it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub jti: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// The issuer's public nkey.
    pub iss: String,
    /// A name for humans.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The subject: a public nkey.
    pub sub: String,
    /// The audience: the server id of a response, the account of a user.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub aud: String,
    /// Expiry (Unix seconds); 0 is none.
    #[serde(skip_serializing_if = "is_zero")]
    pub exp: i64,
    /// Not before (Unix seconds); 0 is none.
    #[serde(skip_serializing_if = "is_zero")]
    pub nbf: i64,
    /// The NATS-specific part.
    pub nats: T,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// The server that asks, as its request names it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerId {
    /// The server's name.
    pub name: String,
    /// Its host.
    pub host: String,
    /// Its id: the public nkey that signs the request.
    pub id: String,
    /// Its version.
    pub version: String,
    /// Its cluster.
    pub cluster: String,
    /// Its public xkey, when it encrypts callout requests.
    pub xkey: String,
}

/// The connecting client, as the server saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientInformation {
    /// The client's address.
    pub host: String,
    /// The server's connection id.
    pub id: u64,
    /// The user name given.
    pub user: String,
    /// The connection name given.
    pub name: String,
    /// `CLIENT`, `LEAF`, …
    pub kind: String,
    /// `nats`, `mqtt`, `websocket`.
    #[serde(rename = "type")]
    pub client_type: String,
}

/// The client's CONNECT options. Only `auth_token` carries a credential
/// Vern reads; the password is never looked at.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectOptions {
    /// A user JWT, when the client sent one.
    pub jwt: String,
    /// A public nkey, when the client sent one.
    pub nkey: String,
    /// The token (`nats.connect(token=…)`): a Vern access token.
    pub auth_token: String,
    /// A user name.
    pub user: String,
    /// A password.
    pub pass: String,
    /// The connection name.
    pub name: String,
    /// The client library's language.
    pub lang: String,
    /// The client library's version.
    pub version: String,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("user", &self.user)
            .field("name", &self.name)
            .field("lang", &self.lang)
            .field("auth_token", &"[redacted]")
            .field("pass", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// The TLS state of the client's connection, when it used TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientTls {
    /// The TLS version.
    pub version: String,
    /// The cipher suite.
    pub cipher: String,
    /// The client's certificates (PEM), when it presented some.
    pub certs: Vec<String>,
    /// The chains the server verified (PEM), leaf first.
    pub verified_chains: Vec<Vec<String>>,
}

/// An `authorization_request`: what the server asks the callout about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthorizationRequest {
    /// The asking server.
    pub server_id: ServerId,
    /// The public nkey the server made for this connection: the `sub` of
    /// the user JWT and of the response.
    pub user_nkey: String,
    /// The client.
    pub client_info: ClientInformation,
    /// Its CONNECT options.
    pub connect_opts: ConnectOptions,
    /// Its TLS state.
    pub client_tls: Option<ClientTls>,
    /// A nonce the server made for this request.
    pub request_nonce: String,
    /// `authorization_request`.
    #[serde(rename = "type")]
    pub claim_type: String,
    /// The claims' version (2).
    pub version: i64,
}

/// An `authorization_response`: the user JWT, or an error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthorizationResponse {
    /// The encoded user JWT, when the connection is allowed.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub jwt: String,
    /// Why the connection is refused.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// The account key that signed, when a signing key did.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub issuer_account: String,
    /// `authorization_response`.
    #[serde(rename = "type")]
    pub claim_type: String,
    /// The claims' version (2).
    pub version: i64,
}

/// Allowed and denied subjects of one direction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Permission {
    /// Subjects allowed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Subjects denied (for subscriptions, a delivery filter too).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

/// Response permissions: a subscriber may answer on the reply subject of a
/// request it received, without a publish permission on `_INBOX.>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResponsePermission {
    /// How many replies per request (0 is the server's default, 1).
    pub max: i64,
    /// How long the reply subject stays open, in nanoseconds (0: no limit).
    pub ttl: i64,
}

/// The `user` claims: the permissions and limits of one connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct User {
    /// Publish permissions.
    #[serde(rename = "pub")]
    pub publish: Permission,
    /// Subscribe permissions.
    #[serde(rename = "sub")]
    pub subscribe: Permission,
    /// Response permissions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resp: Option<ResponsePermission>,
    /// Most subscriptions (-1: no limit).
    pub subs: i64,
    /// Most bytes (-1: no limit).
    pub data: i64,
    /// Largest payload (-1: no limit).
    pub payload: i64,
    /// The signing account, when a signing key signed.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub issuer_account: String,
    /// `user`.
    #[serde(rename = "type")]
    pub claim_type: String,
    /// The claims' version (2).
    pub version: i64,
}

/// The claim type of a request.
pub const AUTHORIZATION_REQUEST: &str = "authorization_request";
/// The claim type of a response.
pub const AUTHORIZATION_RESPONSE: &str = "authorization_response";
/// The claim type of user claims.
pub const USER: &str = "user";
