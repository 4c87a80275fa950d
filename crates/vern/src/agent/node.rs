//! The agent's side of the HTTP API: it authenticates as its node with
//! client credentials (a token, renewed before it expires), reads the
//! node's registration entries and the bundle, and asks for SVIDs of the
//! services its entries name, with CSRs whose keys never leave the node.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::Mutex;
use vern_pki::WorkloadEntry;
use zeroize::Zeroizing;

use crate::client::failure;

/// A token is renewed once less than this much of its life is left.
const TOKEN_MARGIN: Duration = Duration::from_secs(30);

/// An X.509-SVID as Vern issued it, with the key the agent made for it.
pub(crate) struct IssuedX509 {
    pub(crate) spiffe_id: String,
    /// The certificate, then its chain, DER, leaf first.
    pub(crate) chain_der: Vec<u8>,
    /// PKCS#8 DER of the private key.
    pub(crate) key_der: Zeroizing<Vec<u8>>,
    pub(crate) serial: String,
    pub(crate) issued_at: u64,
    pub(crate) expires_at: u64,
}

/// A JWT-SVID as Vern issued it.
pub(crate) struct IssuedJwt {
    pub(crate) spiffe_id: String,
    pub(crate) token: String,
}

pub(crate) struct NodeClient {
    http: reqwest::Client,
    base: String,
    client_id: String,
    secret: Zeroizing<String>,
    token: Mutex<Option<(Zeroizing<String>, Instant)>>,
}

impl NodeClient {
    pub(crate) fn new(
        address: &str,
        ca_cert: Option<&std::path::Path>,
        client_id: String,
        secret: Zeroizing<String>,
    ) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("vern-agent/", env!("CARGO_PKG_VERSION")))
            .timeout(Duration::from_secs(30));
        if let Some(path) = ca_cert {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read CA file {}", path.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("{} is not a PEM certificate", path.display()))?;
            builder = builder.add_root_certificate(cert);
        }
        Ok(Self {
            http: builder.build().context("cannot build the HTTP client")?,
            base: address.trim_end_matches('/').to_owned(),
            client_id,
            secret,
            token: Mutex::new(None),
        })
    }

    /// An access token of the node, from the client credentials grant.
    async fn token(&self, fresh: bool) -> anyhow::Result<Zeroizing<String>> {
        let mut held = self.token.lock().await;
        if let Some((t, until)) = held.as_ref() {
            if !fresh && Instant::now() + TOKEN_MARGIN < *until {
                return Ok(t.clone());
            }
        }
        let resp = self
            .http
            .post(format!("{}/oauth2/token", self.base))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.secret.as_str()),
            ])
            .send()
            .await
            .with_context(|| format!("cannot reach Vern at {}", self.base))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!(
                "Vern refused the node's credentials ({status}): {}",
                body.get("error_description")
                    .or_else(|| body.get("error"))
                    .and_then(Value::as_str)
                    .unwrap_or("no reason given")
            );
        }
        let token = Zeroizing::new(
            body.get("access_token")
                .and_then(Value::as_str)
                .context("the token response has no access_token")?
                .to_owned(),
        );
        let life = body.get("expires_in").and_then(Value::as_u64).unwrap_or(60);
        *held = Some((token.clone(), Instant::now() + Duration::from_secs(life)));
        Ok(token)
    }

    /// Calls the API as the node; a 401 gets one retry with a new token
    /// (the client may have changed, which voids earlier tokens).
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        for attempt in 0..2 {
            let token = self.token(attempt > 0).await?;
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .bearer_auth(token.as_str());
            if let Some(b) = &body {
                req = req.json(b);
            }
            let resp = req
                .send()
                .await
                .with_context(|| format!("cannot reach Vern at {}", self.base))?;
            let status = resp.status();
            let value: Value = resp.json().await.unwrap_or(Value::Null);
            if status == StatusCode::UNAUTHORIZED && attempt == 0 {
                continue;
            }
            if !status.is_success() {
                return Err(failure(status, &value));
            }
            return Ok(value);
        }
        bail!("Vern refused the node's token")
    }

    /// The node's registration entries.
    pub(crate) async fn entries(&self) -> anyhow::Result<Vec<WorkloadEntry>> {
        let v = self.call(Method::GET, "/v1/pki/workloads", None).await?;
        let list = v
            .pointer("/data/entries")
            .cloned()
            .unwrap_or_else(|| json!([]));
        serde_json::from_value(list).context("Vern sent registration entries that do not parse")
    }

    /// The SPIFFE bundle (public).
    pub(crate) async fn bundle(&self) -> anyhow::Result<Value> {
        let resp = self
            .http
            .get(format!("{}/v1/pki/bundle", self.base))
            .send()
            .await
            .with_context(|| format!("cannot reach Vern at {}", self.base))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(failure(status, &v));
        }
        Ok(v)
    }

    /// An X.509-SVID of `service` for a new P-256 key made here.
    pub(crate) async fn issue_x509(
        &self,
        service: &str,
        ttl: Option<u64>,
    ) -> anyhow::Result<IssuedX509> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .context("cannot make a key")?;
        let csr = rcgen::CertificateParams::new(Vec::<String>::new())
            .context("cannot make a CSR")?
            .serialize_request(&key)
            .context("cannot sign the CSR")?
            .pem()
            .context("cannot encode the CSR")?;
        let v = self
            .call(
                Method::POST,
                "/v1/pki/svid",
                Some(json!({ "csr": csr, "service": service, "ttl": ttl })),
            )
            .await?;
        let data = v.get("data").context("the SVID response has no data")?;
        let text = |name: &str| -> anyhow::Result<String> {
            Ok(data
                .get(name)
                .and_then(Value::as_str)
                .with_context(|| format!("the SVID response has no {name}"))?
                .to_owned())
        };
        // The leaf, then the intermediates up to (not including) the root.
        let mut chain_pem = text("certificate")?;
        for pem in data
            .get("chain")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            chain_pem.push_str(pem);
        }
        let chain_der = pem_certificates(&chain_pem)?.concat();
        let expires_at = data
            .get("expires_at")
            .and_then(Value::as_u64)
            .context("the SVID response has no expires_at")?;
        Ok(IssuedX509 {
            spiffe_id: text("spiffe_id")?,
            chain_der,
            key_der: Zeroizing::new(key.serialize_der()),
            serial: text("serial")?,
            issued_at: super::unix_now(),
            expires_at,
        })
    }

    /// A JWT-SVID of `service` for `audience`.
    pub(crate) async fn issue_jwt(
        &self,
        service: &str,
        audience: &[String],
    ) -> anyhow::Result<IssuedJwt> {
        let v = self
            .call(
                Method::POST,
                "/v1/pki/jwt-svid",
                Some(json!({ "audience": audience, "service": service })),
            )
            .await?;
        let get = |name: &str| -> anyhow::Result<String> {
            Ok(v.pointer(&format!("/data/{name}"))
                .and_then(Value::as_str)
                .with_context(|| format!("the JWT-SVID response has no {name}"))?
                .to_owned())
        };
        Ok(IssuedJwt {
            spiffe_id: get("spiffe_id")?,
            token: get("token")?,
        })
    }
}

/// The DER certificates of a PEM text, in order.
pub(crate) fn pem_certificates(pem: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    use base64::Engine as _;
    let mut out = Vec::new();
    let mut inside: Option<String> = None;
    for line in pem.lines().map(str::trim) {
        match (line, inside.as_mut()) {
            ("-----BEGIN CERTIFICATE-----", None) => inside = Some(String::new()),
            ("-----END CERTIFICATE-----", Some(b64)) => {
                out.push(
                    base64::engine::general_purpose::STANDARD
                        .decode(b64.as_bytes())
                        .context("a PEM certificate is not base64")?,
                );
                inside = None;
            }
            (text, Some(b64)) => b64.push_str(text),
            _ => {}
        }
    }
    if out.is_empty() {
        bail!("no PEM certificate found");
    }
    Ok(out)
}
