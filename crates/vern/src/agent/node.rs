//! The agent's side of the HTTP API: it authenticates as its node, first
//! with its client secret, then by `tls_client_auth` with the node's own
//! X.509-SVID (a token, renewed before it expires), reads the
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

/// After a failed renewal of the node's own SVID, the next try.
const OWN_RETRY_SECS: u64 = 2;

/// A token is renewed once less than this much of its life is left.
const TOKEN_MARGIN: Duration = Duration::from_secs(30);

/// An X.509-SVID as Vern issued it, with the key the agent made for it.
pub(crate) struct IssuedX509 {
    pub(crate) spiffe_id: String,
    /// The certificate, then its chain, DER, leaf first.
    pub(crate) chain_der: Vec<u8>,
    /// The same, PEM.
    pub(crate) chain_pem: String,
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

/// The node's own X.509-SVID (`spiffe://<td>/vern/agent/<name>`), as an
/// HTTP client that presents it.
struct OwnSvid {
    http: reqwest::Client,
    /// When it is renewed: half its lifetime.
    renew_at: u64,
    expires_at: u64,
}

/// An access token and the client it must be used with: a token obtained
/// by `tls_client_auth` is bound to the certificate (RFC 8705).
struct HeldToken {
    token: Zeroizing<String>,
    until: Instant,
    http: reqwest::Client,
}

pub(crate) struct NodeClient {
    http: reqwest::Client,
    base: String,
    client_id: String,
    secret: Zeroizing<String>,
    ca_pem: Option<Vec<u8>>,
    token: Mutex<Option<HeldToken>>,
    own: Mutex<Option<OwnSvid>>,
}

impl NodeClient {
    pub(crate) fn new(
        address: &str,
        ca_cert: Option<&std::path::Path>,
        client_id: String,
        secret: Zeroizing<String>,
    ) -> anyhow::Result<Self> {
        let ca_pem = ca_cert
            .map(|path| {
                std::fs::read(path)
                    .with_context(|| format!("cannot read CA file {}", path.display()))
            })
            .transpose()?;
        Ok(Self {
            http: http_client(ca_pem.as_deref(), None)?,
            base: address.trim_end_matches('/').to_owned(),
            client_id,
            secret,
            ca_pem,
            token: Mutex::new(None),
            own: Mutex::new(None),
        })
    }

    /// The client presenting the node's own SVID while it is valid.
    /// With the seconds it has left.
    async fn own_client(&self) -> Option<(reqwest::Client, u64)> {
        let now = super::unix_now();
        let own = self.own.lock().await;
        own.as_ref()
            .filter(|o| now < o.expires_at)
            .map(|o| (o.http.clone(), o.expires_at.saturating_sub(now)))
    }

    /// An access token of the node, from the client credentials grant:
    /// by `tls_client_auth` with the node's own SVID while it has a valid
    /// one, else (the bootstrap, or after the SVID expired) by its secret.
    async fn token(&self, fresh: bool) -> anyhow::Result<(Zeroizing<String>, reqwest::Client)> {
        let mut held = self.token.lock().await;
        if let Some(h) = held.as_ref() {
            if !fresh && Instant::now() + TOKEN_MARGIN < h.until {
                return Ok((h.token.clone(), h.http.clone()));
            }
        }
        let url = format!("{}/oauth2/token", self.base);
        let by_svid = match self.own_client().await {
            Some((http, left)) => {
                let sent = http
                    .post(&url)
                    .form(&[
                        ("grant_type", "client_credentials"),
                        ("client_id", self.client_id.as_str()),
                    ])
                    .send()
                    .await;
                match sent {
                    Ok(resp) if resp.status().is_success() => Some((resp, http, Some(left))),
                    Ok(resp) => {
                        tracing::warn!(status = %resp.status(), "Vern refused the node's SVID; using its secret.");
                        None
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "The SVID login failed; using the node's secret.");
                        None
                    }
                }
            }
            None => None,
        };
        let (resp, http, certificate_left) = match by_svid {
            Some(done) => done,
            None => (
                self.http
                    .post(&url)
                    .form(&[
                        ("grant_type", "client_credentials"),
                        ("client_id", self.client_id.as_str()),
                        ("client_secret", self.secret.as_str()),
                    ])
                    .send()
                    .await
                    .with_context(|| format!("cannot reach Vern at {}", self.base))?,
                self.http.clone(),
                None,
            ),
        };
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
        // A token bound to the SVID is of no use once the SVID has expired.
        let life = body
            .get("expires_in")
            .and_then(Value::as_u64)
            .unwrap_or(60)
            .min(certificate_left.unwrap_or(u64::MAX));
        *held = Some(HeldToken {
            token: token.clone(),
            until: Instant::now() + Duration::from_secs(life),
            http: http.clone(),
        });
        Ok((token, http))
    }

    /// Obtains the node's own X.509-SVID when it has none or the one it
    /// has is past half its life, over HTTPS only (a certificate login
    /// needs the TLS listener). The key is made here and stays in memory.
    pub(crate) async fn keep_own_svid(&self) -> anyhow::Result<()> {
        if !self.base.starts_with("https://") {
            return Ok(());
        }
        if self
            .own
            .lock()
            .await
            .as_ref()
            .is_some_and(|o| super::unix_now() < o.renew_at)
        {
            return Ok(());
        }
        let issued = match self.issue_x509(None, None).await {
            Ok(issued) => issued,
            Err(e) => {
                // Retry a little later, not on every tick of the upkeep.
                if let Some(own) = self.own.lock().await.as_mut() {
                    own.renew_at = super::unix_now().saturating_add(OWN_RETRY_SECS);
                }
                return Err(e);
            }
        };
        let identity_pem = &issued.chain_pem;
        let key_pem = Zeroizing::new(pem_block("PRIVATE KEY", &issued.key_der));
        let identity = reqwest::Identity::from_pem(
            Zeroizing::new(format!("{identity_pem}{}", key_pem.as_str())).as_bytes(),
        )
        .context("cannot use the node's SVID")?;
        let http = http_client(self.ca_pem.as_deref(), Some(identity))?;
        tracing::info!(spiffe_id = %issued.spiffe_id, serial = %issued.serial, expires_at = issued.expires_at, "The node's own SVID was issued.");
        let renew_at = issued
            .issued_at
            .saturating_add(issued.expires_at.saturating_sub(issued.issued_at) / 2);
        *self.own.lock().await = Some(OwnSvid {
            http,
            renew_at,
            expires_at: issued.expires_at,
        });
        // A token bound to the previous certificate is no use with the new one.
        *self.token.lock().await = None;
        Ok(())
    }

    /// Seconds until the node's own SVID is due for renewal, when it has one.
    pub(crate) async fn own_svid_due_in(&self) -> Option<u64> {
        self.own
            .lock()
            .await
            .as_ref()
            .map(|o| o.renew_at.saturating_sub(super::unix_now()))
    }

    /// Calls the API as the node; a 401 gets one retry with a new token
    /// (the client may have changed, which voids earlier tokens).
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        for attempt in 0..2 {
            let (token, http) = self.token(attempt > 0).await?;
            let mut req = http
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

    /// An X.509-SVID of `service` (of the node itself without one) for a
    /// new P-256 key made here.
    pub(crate) async fn issue_x509(
        &self,
        service: Option<&str>,
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
            chain_pem,
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

fn http_client(
    ca_pem: Option<&[u8]>,
    identity: Option<reqwest::Identity>,
) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("vern-agent/", env!("CARGO_PKG_VERSION")))
        .timeout(Duration::from_secs(30));
    if let Some(pem) = ca_pem {
        for der in pem_certificates(&String::from_utf8_lossy(pem))
            .context("the CA file has no PEM certificate")?
        {
            builder = builder.add_root_certificate(
                reqwest::Certificate::from_der(&der)
                    .context("the CA file has a bad certificate")?,
            );
        }
    }
    if let Some(identity) = identity {
        builder = builder.identity(identity);
    }
    builder.build().context("cannot build the HTTP client")
}

fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
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
