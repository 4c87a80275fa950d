//! Fetching external issuers' JWK sets for the JWT auth method: the HTTP
//! side of `vern_authority::JwksFetch`. The authority decides when to
//! fetch and has already checked the URL (`https`, or `http` on loopback);
//! here every fetch is bounded in time and size, follows no redirect (one
//! could lead off `https`), and, when the role gives a CA bundle, trusts
//! only those CAs for the server's certificate.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::header;
use serde_json::Value;
use vern_authority::{JwksFetch, JwksUrl};

/// Largest JWK set accepted, in bytes: a set of a hundred RSA keys is
/// well under this.
const MAX_BYTES: usize = 256 * 1024;
/// The whole fetch, connection included.
const TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Clients kept for distinct CA bundles; beyond that they are built again.
const MAX_CA_CLIENTS: usize = 64;

/// Fetches JWK sets over HTTPS (or loopback HTTP).
pub(crate) struct HttpJwks {
    /// For URLs whose certificate chains to the usual web roots.
    default: reqwest::Client,
    /// For each CA bundle seen (by SHA-256), a client trusting only it.
    by_ca: Mutex<HashMap<[u8; 32], reqwest::Client>>,
}

fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
}

impl HttpJwks {
    pub(crate) fn new() -> Result<Self, reqwest::Error> {
        Ok(Self {
            default: builder().build()?,
            by_ca: Mutex::new(HashMap::new()),
        })
    }

    fn client_for(&self, ca_pem: &str) -> Result<reqwest::Client, String> {
        let digest = vern_crypto::sha256(ca_pem.as_bytes());
        let mut clients = self.by_ca.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(&digest) {
            return Ok(c.clone());
        }
        let roots = vern_pki::roots_from_pem(ca_pem).map_err(|e| format!("jwks_ca_pem: {e}"))?;
        let tls = vern_pki::client_config_with_roots(roots).map_err(|e| e.to_string())?;
        let client = builder()
            .use_preconfigured_tls(tls)
            .build()
            .map_err(|e| format!("cannot build the JWKS client: {e}"))?;
        if clients.len() >= MAX_CA_CLIENTS {
            clients.clear();
        }
        clients.insert(digest, client.clone());
        Ok(client)
    }
}

/// What went wrong, in a few words: reqwest's own messages can be long
/// chains of causes.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        format!("the JWKS URL did not answer within {} s", TIMEOUT.as_secs())
    } else if e.is_connect() {
        "cannot connect to the JWKS URL (or its TLS certificate is not trusted)".to_owned()
    } else {
        "the request to the JWKS URL failed".to_owned()
    }
}

impl JwksFetch for HttpJwks {
    async fn fetch(&self, url: &JwksUrl, ca_pem: Option<&str>) -> Result<Value, String> {
        let client = match ca_pem {
            Some(pem) => self.client_for(pem)?,
            None => self.default.clone(),
        };
        let mut resp = client
            .get(url.as_str())
            .header(header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| describe(&e))?;
        if !resp.status().is_success() {
            return Err(format!("the JWKS URL answered {}", resp.status()));
        }
        let too_large = || format!("the JWK set is larger than {MAX_BYTES} bytes");
        if resp.content_length().is_some_and(|n| n > MAX_BYTES as u64) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| describe(&e))? {
            if body.len().saturating_add(chunk.len()) > MAX_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body)
            .map_err(|_| "the JWKS URL did not answer with JSON".to_owned())
    }
}
