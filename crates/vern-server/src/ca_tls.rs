//! `--tls-from-ca`: the API listener's certificate from Vern's own CA.
//!
//! While Vern is unsealed, a task issues the listener an X.509-SVID of the
//! component `server` (`spiffe://<td>/vern/server`) with the configured
//! DNS names and a fresh key kept in memory only, installs it, and renews
//! it at half its lifetime; every issuance has its issued-certificate
//! record and its audit record, and a certificate whose audit record
//! cannot be written is not used. The listener also accepts client
//! certificates chaining to the CA's published trust anchors (besides a
//! `--tls-client-ca` bundle), so SVIDs work for RFC 8705
//! `tls_client_auth`. While sealed nothing can be issued: the installed
//! certificate is kept until it expires, then the bootstrap certificate
//! (`--tls-cert`), if any, is presented again.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use vern_audit::{Actor, Event};
use vern_core::RequestId;
use vern_pki::{DnsName, RotatingClientTrust, RotatingIdentity, TlsError};
use vern_seal::Barrier;

use crate::listen::ServeError;
use crate::state::AppState;

/// How often the task looks at the certificate and the anchors.
const TICK: Duration = Duration::from_secs(5);
/// The listener certificate's lifetime, at most (the CA's maximum SVID
/// lifetime may cut it further).
const LIFETIME: u64 = 24 * 3600;

/// The listener's identity from the CA and the client trust beside it.
pub struct CaTls {
    identity: Arc<RotatingIdentity>,
    clients: Arc<RotatingClientTrust>,
    dns_names: Vec<DnsName>,
}

impl CaTls {
    /// For `dns_names`, presenting `bootstrap` (certificate and key files)
    /// until the CA has issued, and accepting client certificates from the
    /// `client_ca` bundle besides the CA's own.
    pub fn new(
        dns_names: &[String],
        bootstrap: Option<(&Path, &Path)>,
        client_ca: Option<&Path>,
    ) -> Result<Self, ServeError> {
        let dns_names = dns_names
            .iter()
            .map(|n| DnsName::parse(n).map_err(|e| ServeError::Tls(TlsError::Config(e))))
            .collect::<Result<Vec<_>, _>>()?;
        if dns_names.is_empty() {
            return Err(ServeError::Tls(TlsError::Config(
                "--tls-from-ca needs at least one DNS name".to_owned(),
            )));
        }
        Ok(Self {
            identity: Arc::new(RotatingIdentity::new(bootstrap)?),
            clients: Arc::new(RotatingClientTrust::new(client_ca)?),
            dns_names,
        })
    }

    /// The listener's TLS configuration.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, ServeError> {
        Ok(vern_pki::rotating_server_config(
            Arc::clone(&self.identity),
            Arc::clone(&self.clients),
        )?)
    }
}

/// What the task has installed.
#[derive(Default)]
struct Installed {
    /// When to renew (half the lifetime) and when it expires.
    renew_at: u64,
    not_after: u64,
    anchors: Vec<Vec<u8>>,
}

impl AppState {
    /// Starts the task that keeps the listener's certificate from the CA.
    /// Must be called inside a Tokio runtime.
    pub fn spawn_tls_from_ca(&self, tls: CaTls) {
        let state = self.clone();
        tokio::spawn(async move {
            let mut installed = Installed::default();
            let mut every = tokio::time::interval(TICK);
            loop {
                every.tick().await;
                let now = state.inner.clock.unix_seconds();
                let Ok(barrier) = state.inner.seal.barrier() else {
                    if installed.not_after != 0 && now >= installed.not_after {
                        tls.identity.clear();
                        installed.not_after = 0;
                        tracing::warn!(
                            "The listener's certificate from the CA expired while sealed."
                        );
                    }
                    continue;
                };
                if let Err(e) = state.refresh_anchors(&barrier, &tls, &mut installed).await {
                    tracing::warn!(error = %e, "Updating the trusted client CAs failed.");
                }
                if now >= installed.renew_at {
                    match state.issue_listener(&barrier, &tls).await {
                        Ok((not_before, not_after)) => {
                            installed.not_after = not_after;
                            installed.renew_at =
                                not_before.saturating_add(not_after.saturating_sub(not_before) / 2);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "The listener's certificate could not be issued; retrying.")
                        }
                    }
                }
            }
        });
    }

    async fn refresh_anchors(
        &self,
        barrier: &Barrier,
        tls: &CaTls,
        installed: &mut Installed,
    ) -> Result<(), String> {
        let pem = self
            .inner
            .pki
            .trust_anchors_pem(barrier)
            .await
            .map_err(|e| e.to_string())?;
        let anchors: Vec<Vec<u8>> = x509_anchors(&pem);
        if anchors != installed.anchors {
            tls.clients
                .set_anchors(&anchors)
                .map_err(|e| e.to_string())?;
            installed.anchors = anchors;
        }
        Ok(())
    }

    /// Issues and installs the listener's certificate; returns its
    /// `notBefore` and `notAfter`.
    async fn issue_listener(
        &self,
        barrier: &Arc<Barrier>,
        tls: &CaTls,
    ) -> Result<(u64, u64), String> {
        let pki = &self.inner.pki;
        let ttl = LIFETIME.min(pki.config().max_ttl);
        let issued = pki
            .issue_component(barrier, "server", &tls.dns_names, ttl)
            .await
            .map_err(|e| e.to_string())?;
        let record = &issued.svid.record;
        self.audit_own_issue(
            barrier,
            record,
            "vern serve --tls-from-ca",
            vern_pki::SERVER_COMPONENT,
            BTreeMap::from([("dns_names".to_owned(), record.dns_names.join(","))]),
        )
        .await?;
        let mut chain = vec![issued.svid.certificate_der.clone()];
        chain.extend(issued.svid.chain_pem.iter().flat_map(|p| x509_anchors(p)));
        tls.identity
            .install(&chain, &issued.key_der)
            .map_err(|e| e.to_string())?;
        tracing::info!(serial = %record.serial, not_after = record.not_after, "The listener presents a certificate from Vern's CA.");
        Ok((record.not_before, record.not_after))
    }
}

impl AppState {
    /// Writes the audit record of a certificate Vern issued for its own
    /// links (serial, SPIFFE ID, expiry and `details`; never a key), and
    /// counts it in the metrics. A certificate whose record cannot be
    /// written must not be used.
    pub(crate) async fn audit_own_issue(
        &self,
        barrier: &Arc<Barrier>,
        record: &vern_pki::IssuedCertificate,
        operation: &str,
        component: &str,
        mut details: BTreeMap<String, String>,
    ) -> Result<(), String> {
        if let Some(log) = &self.inner.audit {
            log.session(barrier).await.map_err(|e| e.to_string())?;
            details.extend([
                ("spiffe_id".to_owned(), record.spiffe_id.clone()),
                ("serial".to_owned(), record.serial.clone()),
                ("not_after".to_owned(), record.not_after.to_string()),
            ]);
            log.append(Event {
                request_id: RequestId::generate().to_string(),
                operation: operation.to_owned(),
                principal: Some(Actor {
                    kind: "component".to_owned(),
                    id: component.to_owned(),
                    root: false,
                    tenant: None,
                    project: None,
                    environment: None,
                }),
                action: Some("svid.issue".to_owned()),
                resource: Some(record.spiffe_id.clone()),
                status: 200,
                source: "vern".to_owned(),
                details,
                ..Event::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        }
        self.inner
            .metrics
            .certificate_issued(&record.spiffe_id, record.not_after);
        Ok(())
    }
}

/// The DER certificates of a PEM text.
pub(crate) fn x509_anchors(pem: &str) -> Vec<Vec<u8>> {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .map(|c| c.as_ref().to_vec())
        .collect()
}
