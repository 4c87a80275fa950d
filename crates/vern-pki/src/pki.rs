//! The `Pki` service: SVID issuance (X.509 from a CSR, JWT), the trust
//! bundle, rotation and import, and the issued-certificate records.
//!
//! Two questions are kept apart, so that a node agent can later obtain
//! SVIDs for the services its registration entries name: which SPIFFE ID
//! a caller gets ([`Pki::spiffe_id_of`], from the verified principal and
//! nothing else), and issuing an SVID for a SPIFFE ID to a caller the
//! server's policy already allowed to obtain it ([`Pki::issue_x509`],
//! [`Pki::issue_jwt`]). This crate makes no policy decision itself.

use std::sync::{Arc, RwLock};

use serde::Serialize;
use serde_json::{json, Value};
use vern_core::{Clock, Principal};
use vern_seal::Barrier;
use zeroize::Zeroizing;

use crate::bundle::{pem_of, x509_jwk};
use crate::ca::{self, generate_ca, import_ca, random_serial, CaInfo, KeyType, Leaf, Material};
use crate::csr::check_csr;
use crate::dns::DnsName;
use crate::jwt::{JwtKey, StoredJwtKey};
use crate::records::{self, CertFilter, CertPage, IssuedCertificate};
use crate::spiffe::{SpiffeId, TrustDomain, Workload};
use crate::PkiError;

/// How long loaded material is trusted before it is read again. Rotation
/// publishes new material longer than this before it signs, so every
/// replica knows a CA before anyone meets an SVID it signed.
const CACHE_SECS: u64 = 5;
/// Most audiences a JWT-SVID names.
const MAX_AUDIENCES: usize = 16;
/// Longest audience, in bytes.
const MAX_AUDIENCE_LEN: usize = 512;
/// Most DNS names an X.509-SVID carries.
pub const MAX_DNS_NAMES: usize = 32;

/// An X.509-SVID [`Pki::verify_own_svid`] accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnSvid {
    /// The SPIFFE ID it carries.
    pub spiffe_id: SpiffeId,
    /// Its `notAfter` (Unix seconds).
    pub not_after: u64,
}

/// Why a certificate is not an X.509-SVID of this deployment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SvidRejection {
    /// Not a DER X.509 certificate.
    #[error("the certificate cannot be parsed")]
    Unparsable,
    /// Its `notBefore` is in the future.
    #[error("the certificate is not valid yet")]
    NotYetValid,
    /// Its `notAfter` has passed.
    #[error("the certificate has expired")]
    Expired,
    /// A CA certificate, which an X.509-SVID never is.
    #[error("the certificate is a CA certificate, not an X.509-SVID")]
    Ca,
    /// No URI SAN, several, or one that is not a SPIFFE ID.
    #[error("the certificate does not carry exactly one SPIFFE ID")]
    NoSpiffeId,
    /// A SPIFFE ID of another trust domain.
    #[error("SPIFFE ID `{0}` is of another trust domain")]
    ForeignTrustDomain(String),
    /// No CA of this deployment signed it.
    #[error("no CA of this deployment signed the certificate")]
    NotSigned,
}

/// Settings of the CA.
#[derive(Debug, Clone)]
pub struct PkiConfig {
    /// The trust domain of every SPIFFE ID issued.
    pub trust_domain: TrustDomain,
    /// The key algorithm of CAs Vern generates.
    pub key_type: KeyType,
    /// X.509-SVID lifetime when the request names none (seconds).
    pub default_ttl: u64,
    /// Hard maximum lifetime of any SVID (seconds); longer requests are
    /// cut to it.
    pub max_ttl: u64,
    /// JWT-SVID lifetime when the request names none (seconds).
    pub jwt_default_ttl: u64,
    /// Lifetime of CAs Vern generates (seconds).
    pub ca_ttl: u64,
    /// How long a new CA is published before it signs (seconds), when a
    /// rotation names no delay.
    pub publish_delay: u64,
    /// `spiffe_refresh_hint` of the bundle (seconds).
    pub refresh_hint: u64,
}

impl PkiConfig {
    /// Defaults for `trust_domain`: P-256 CAs valid ten years, X.509-SVIDs
    /// of one hour and JWT-SVIDs of five minutes, at most one day; new CAs
    /// published ten minutes before they sign; bundles refreshed every
    /// five minutes.
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self {
            trust_domain,
            key_type: KeyType::P256,
            default_ttl: 3600,
            max_ttl: 24 * 3600,
            jwt_default_ttl: 300,
            ca_ttl: 10 * 365 * 24 * 3600,
            publish_delay: 600,
            refresh_hint: 300,
        }
    }

    /// How long a superseded CA or key stays published: the longest SVID
    /// it can have signed, plus the backdating of its start.
    fn overlap(&self) -> u64 {
        self.max_ttl.saturating_add(ca::BACKDATE)
    }
}

/// An X.509-SVID request, for a SPIFFE ID the caller was allowed to obtain.
#[derive(Debug, Clone, Copy)]
pub struct X509Request<'a> {
    /// The SPIFFE ID the SVID carries.
    pub spiffe_id: &'a SpiffeId,
    /// The PEM CSR; only its key is certified.
    pub csr_pem: &'a str,
    /// The lifetime asked for (seconds), cut to the maximum.
    pub ttl: Option<u64>,
    /// DNS names the SVID carries besides the SPIFFE ID.
    pub dns_names: &'a [DnsName],
    /// Who obtains it, for the record.
    pub principal: &'a str,
}

/// An issued X.509-SVID.
#[derive(Debug, Clone)]
pub struct X509Svid {
    /// The SPIFFE ID.
    pub spiffe_id: String,
    /// The leaf certificate, PEM.
    pub certificate_pem: String,
    /// The leaf certificate, DER.
    pub certificate_der: Vec<u8>,
    /// The intermediates from the signing CA up to but excluding the root,
    /// PEM each.
    pub chain_pem: Vec<String>,
    /// The record stored for it.
    pub record: IssuedCertificate,
}

/// A JWT-SVID request, for a SPIFFE ID the caller was allowed to obtain.
#[derive(Debug, Clone, Copy)]
pub struct JwtRequest<'a> {
    /// The SPIFFE ID (`sub`).
    pub spiffe_id: &'a SpiffeId,
    /// The audiences (`aud`), at least one.
    pub audience: &'a [String],
    /// The lifetime asked for (seconds), cut to the maximum.
    pub ttl: Option<u64>,
}

/// An issued JWT-SVID.
#[derive(Debug, Clone)]
pub struct JwtSvid {
    /// The token.
    pub token: String,
    /// `sub`.
    pub spiffe_id: String,
    /// `exp` (Unix seconds).
    pub expires_at: u64,
    /// `iat` (Unix seconds).
    pub issued_at: u64,
    /// The key id (`kid`).
    pub kid: String,
}

/// A started rotation or import.
#[derive(Debug, Clone, Serialize)]
pub struct Rotation {
    /// The new CA.
    pub ca: CaInfo,
    /// The new JWT-SVID key, when one was added.
    pub jwt_kid: Option<String>,
    /// The bundle's sequence number after the change.
    pub sequence: u64,
}

/// A certificate and key Vern issued to one of its own components.
pub struct ComponentSvid {
    /// The X.509-SVID.
    pub svid: X509Svid,
    /// Its private key, PKCS#8 DER.
    pub key_der: Zeroizing<Vec<u8>>,
}

/// The certificate authority of one Vern process.
pub struct Pki {
    config: PkiConfig,
    clock: Arc<dyn Clock>,
    material: RwLock<Option<(Arc<Material>, u64)>>,
}

impl Pki {
    /// A CA with `config`, reading time from `clock`.
    pub fn new(config: PkiConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            config,
            clock,
            material: RwLock::new(None),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &PkiConfig {
        &self.config
    }

    /// Drops cached key material; called when Vern seals.
    pub fn forget(&self) {
        *self.material.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn now(&self) -> u64 {
        self.clock.unix_seconds()
    }

    /// The SPIFFE ID of an authenticated principal: from its kind, scope
    /// and name, never from anything the request says.
    pub fn spiffe_id_of(&self, principal: &Principal) -> Result<SpiffeId, PkiError> {
        self.spiffe_id_for(&Workload::of(principal)?)
    }

    /// The SPIFFE ID of `workload` in this trust domain.
    pub fn spiffe_id_for(&self, workload: &Workload) -> Result<SpiffeId, PkiError> {
        workload
            .spiffe_id(&self.config.trust_domain)
            .map_err(|e| PkiError::Internal(format!("a principal's SPIFFE ID is invalid: {e}")))
    }

    async fn material(&self, b: &Barrier, force: bool) -> Result<Arc<Material>, PkiError> {
        let now = self.now();
        if !force {
            if let Some((m, at)) = self
                .material
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
            {
                if now < at.saturating_add(CACHE_SECS) {
                    return Ok(Arc::clone(m));
                }
            }
        }
        let config = &self.config;
        let loaded = Arc::new(
            Material::load(b, || {
                Ok((
                    generate_ca(
                        &config.trust_domain,
                        config.key_type,
                        now,
                        config.ca_ttl,
                        now,
                    )?,
                    JwtKey::generate(now, now)?,
                ))
            })
            .await?,
        );
        *self.material.write().unwrap_or_else(|e| e.into_inner()) =
            Some((Arc::clone(&loaded), now));
        Ok(loaded)
    }

    /// The material for the public reads (the bundle, the anchors), which
    /// never write: before [`Pki::ensure_ca`] has created the first CA it
    /// is [`PkiError::Unavailable`].
    async fn published_material(&self, b: &Barrier) -> Result<Arc<Material>, PkiError> {
        let now = self.now();
        if let Some((m, at)) = self
            .material
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            if now < at.saturating_add(CACHE_SECS) {
                return Ok(Arc::clone(m));
            }
        }
        let loaded = Material::read(b).await?;
        if !loaded.is_created() {
            return Err(PkiError::Unavailable(
                "the CA is created when Vern is unsealed; retry shortly".to_owned(),
            ));
        }
        let loaded = Arc::new(loaded);
        *self.material.write().unwrap_or_else(|e| e.into_inner()) =
            Some((Arc::clone(&loaded), now));
        Ok(loaded)
    }

    /// Creates the first CA and JWT-SVID key unless they exist (once per
    /// deployment, whichever replica is first; the server calls it when
    /// unsealed, so that public reads never write).
    pub async fn ensure_ca(&self, b: &Barrier) -> Result<(), PkiError> {
        self.material(b, false).await.map(|_| ())
    }

    /// The lifetime to grant: the one asked for (or the default), cut to
    /// the hard maximum; zero is refused.
    fn ttl(&self, asked: Option<u64>, default: u64) -> Result<u64, PkiError> {
        match asked {
            Some(0) => Err(PkiError::InvalidRequest(
                "ttl must be at least one second".to_owned(),
            )),
            Some(t) => Ok(t.min(self.config.max_ttl)),
            None => Ok(default.min(self.config.max_ttl)),
        }
    }

    /// Issues an X.509-SVID for `req.spiffe_id` from the CSR, **for a
    /// caller the server's policy allowed to obtain that SPIFFE ID with
    /// those DNS names**. The CSR is checked first ([`check_csr`]); the
    /// certificate lives until the earliest of the lifetime asked for, the
    /// maximum and the signing CA's own expiry. Its record is stored before
    /// it is returned; if that fails, the certificate is never handed out.
    pub async fn issue_x509(
        &self,
        b: &Barrier,
        req: &X509Request<'_>,
    ) -> Result<X509Svid, PkiError> {
        if req.dns_names.len() > MAX_DNS_NAMES {
            return Err(PkiError::InvalidRequest(format!(
                "at most {MAX_DNS_NAMES} DNS names"
            )));
        }
        let csr = check_csr(req.csr_pem, req.spiffe_id, req.dns_names).map_err(PkiError::BadCsr)?;
        let ttl = self.ttl(req.ttl, self.config.default_ttl)?;
        self.sign(
            b,
            req.spiffe_id,
            &csr.spki,
            (req.dns_names, &[]),
            ttl,
            req.principal,
        )
        .await
    }

    /// Issues an X.509-SVID with a fresh P-256 key to one of Vern's own
    /// components (such as the server's TLS listener).
    pub async fn issue_component(
        &self,
        b: &Barrier,
        component: &str,
        dns_names: &[DnsName],
        ttl: u64,
    ) -> Result<ComponentSvid, PkiError> {
        let spiffe_id = self.spiffe_id_for(&Workload::Component(component.to_owned()))?;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| PkiError::Internal(e.to_string()))?;
        let ttl = self.ttl(Some(ttl), ttl)?;
        let svid = self
            .sign(
                b,
                &spiffe_id,
                &key.public_key_der(),
                (dns_names, &[]),
                ttl,
                "vern",
            )
            .await?;
        Ok(ComponentSvid {
            svid,
            key_der: Zeroizing::new(key.serialize_der()),
        })
    }

    pub(crate) async fn sign(
        &self,
        b: &Barrier,
        spiffe_id: &SpiffeId,
        spki: &[u8],
        (dns_names, ip_addresses): (&[DnsName], &[std::net::IpAddr]),
        ttl: u64,
        principal: &str,
    ) -> Result<X509Svid, PkiError> {
        let now = self.now();
        let material = self.material(b, false).await?;
        let ca = material
            .active_ca(now)
            .ok_or_else(|| PkiError::Internal("no CA is active".to_owned()))?;
        if ca.trust_domain != self.config.trust_domain.as_str() {
            return Err(PkiError::Unavailable(format!(
                "the active CA was made for trust domain `{}`, not `{}`; run `vern pki rotate`",
                ca.trust_domain, self.config.trust_domain
            )));
        }
        let not_after = now.saturating_add(ttl).min(ca.not_after);
        if not_after <= now {
            return Err(PkiError::Unavailable(
                "the signing CA has expired; run `vern pki rotate` or import a CA".to_owned(),
            ));
        }
        let serial = random_serial();
        let not_before = now.saturating_sub(ca::BACKDATE);
        let der = ca.sign_leaf(
            spki,
            &Leaf {
                spiffe_id,
                dns_names,
                ip_addresses,
                serial: &serial,
                not_before,
                not_after,
            },
        )?;
        let record = IssuedCertificate {
            serial: hex::encode(serial),
            spiffe_id: spiffe_id.to_string(),
            dns_names: dns_names.iter().map(|d| d.as_str().to_owned()).collect(),
            ip_addresses: ip_addresses.iter().map(ToString::to_string).collect(),
            principal: principal.to_owned(),
            ca: ca.id.clone(),
            issued_at: now,
            not_before,
            not_after,
        };
        ca::view(b)?
            .commit(vec![records::write_of(&record)?])
            .await?;
        Ok(X509Svid {
            spiffe_id: record.spiffe_id.clone(),
            certificate_pem: pem_of(&[&der]),
            chain_pem: ca.chain_der.iter().map(|c| pem_of(&[c])).collect(),
            certificate_der: der,
            record,
        })
    }

    /// Issues a JWT-SVID for `req.spiffe_id`, **for a caller the server's
    /// policy allowed to obtain that SPIFFE ID**.
    pub async fn issue_jwt(&self, b: &Barrier, req: &JwtRequest<'_>) -> Result<JwtSvid, PkiError> {
        if req.audience.is_empty() || req.audience.len() > MAX_AUDIENCES {
            return Err(PkiError::InvalidRequest(format!(
                "audience must name 1 to {MAX_AUDIENCES} audiences"
            )));
        }
        if let Some(bad) = req
            .audience
            .iter()
            .find(|a| a.is_empty() || a.len() > MAX_AUDIENCE_LEN || a.chars().any(char::is_control))
        {
            return Err(PkiError::InvalidRequest(format!(
                "audience `{}` must be 1 to {MAX_AUDIENCE_LEN} bytes without control characters",
                bad.chars().take(64).collect::<String>().escape_default()
            )));
        }
        let ttl = self.ttl(req.ttl, self.config.jwt_default_ttl)?;
        let now = self.now();
        let material = self.material(b, false).await?;
        let key = material
            .active_jwt(now)
            .ok_or_else(|| PkiError::Internal("no JWT-SVID key is active".to_owned()))?;
        let exp = now.saturating_add(ttl);
        let claims = json!({
            "sub": req.spiffe_id.to_string(),
            "aud": req.audience,
            "exp": exp,
            "iat": now,
        });
        Ok(JwtSvid {
            token: key.sign(&claims),
            spiffe_id: req.spiffe_id.to_string(),
            expires_at: exp,
            issued_at: now,
            kid: key.kid.clone(),
        })
    }

    /// Registers a workload entry, **for a caller the server's policy
    /// allowed to register one for its service**.
    pub async fn register_workload(
        &self,
        b: &Barrier,
        spec: &crate::WorkloadSpec,
    ) -> Result<crate::WorkloadEntry, PkiError> {
        crate::workloads::register(b, spec, self.now()).await
    }

    /// Registration entries: every one, or one node's (by client id).
    pub async fn workloads(
        &self,
        b: &Barrier,
        node: Option<&str>,
    ) -> Result<Vec<crate::WorkloadEntry>, PkiError> {
        crate::workloads::list(b, node).await
    }

    /// One registration entry by id.
    pub async fn workload(
        &self,
        b: &Barrier,
        id: &str,
    ) -> Result<Option<crate::WorkloadEntry>, PkiError> {
        crate::workloads::get(b, id).await
    }

    /// Plans a declared set of registration entries (`vern apply`) and
    /// returns its writes as a batch for the caller to commit in the same
    /// transaction as the rest of the declaration; writes nothing itself.
    pub async fn plan_workloads(
        &self,
        b: &Barrier,
        declared: &[crate::WorkloadSpec],
        prune: bool,
        may_manage: &(dyn Fn(&crate::WorkloadEntry) -> bool + Sync),
    ) -> Result<(crate::WorkloadPlan, vern_seal::ViewBatch), PkiError> {
        let plan = crate::workloads::plan(b, declared, prune, may_manage, self.now()).await?;
        let batch = crate::workloads::plan_batch(b, &plan)?;
        Ok((plan, batch))
    }

    /// The deletion of every registration entry of the node `node` (a
    /// client id), as a batch for the caller to commit in the same
    /// transaction as the node's deletion; writes nothing itself.
    pub async fn node_workloads_removal(
        &self,
        b: &Barrier,
        node: &str,
    ) -> Result<vern_seal::ViewBatch, PkiError> {
        crate::workloads::removal_of_node(b, node).await
    }

    /// The deletion of every node's registration entries, one batch per
    /// node and none of the entries in `skip`: for an apply that may prune
    /// nodes to commit with each node it deletes; writes nothing itself.
    pub async fn workloads_removal_by_node(
        &self,
        b: &Barrier,
        skip: &[crate::WorkloadEntry],
    ) -> Result<std::collections::BTreeMap<String, vern_seal::ViewBatch>, PkiError> {
        crate::workloads::removals_by_node(b, skip).await
    }

    /// Deletes a registration entry.
    pub async fn delete_workload(
        &self,
        b: &Barrier,
        entry: &crate::WorkloadEntry,
    ) -> Result<(), PkiError> {
        crate::workloads::delete(b, entry).await
    }

    /// The SPIFFE bundle of the trust domain (a JWK set with
    /// `spiffe_sequence` and `spiffe_refresh_hint`).
    pub async fn bundle(&self, b: &Barrier) -> Result<Value, PkiError> {
        let now = self.now();
        let overlap = self.config.overlap();
        let material = self.published_material(b).await?;
        let mut keys = material
            .published_cas(now, overlap)
            .into_iter()
            .map(|ca| x509_jwk(&ca.root_der))
            .collect::<Result<Vec<_>, _>>()?;
        keys.extend(
            material
                .published_jwt(now, overlap)
                .into_iter()
                .map(JwtKey::bundle_jwk),
        );
        Ok(json!({
            "keys": keys,
            "spiffe_sequence": material.sequence(now, overlap),
            "spiffe_refresh_hint": self.config.refresh_hint,
        }))
    }

    /// Whether `cert_der` is an unexpired X.509-SVID of `expected` signed by
    /// one of this deployment's published CAs (see [`Pki::verify_own_svid`]).
    /// A TLS handshake may also accept certificates of a `--tls-client-ca`
    /// bundle; this tells Vern's own SVIDs apart from those.
    pub async fn is_own_svid(
        &self,
        b: &Barrier,
        cert_der: &[u8],
        expected: &SpiffeId,
    ) -> Result<bool, PkiError> {
        Ok(self
            .verify_own_svid(b, cert_der)
            .await?
            .is_ok_and(|svid| &svid.spiffe_id == expected))
    }

    /// Verifies `cert_der` as an X.509-SVID of this deployment on its own,
    /// trusting no one else's verification: valid now, not a CA, exactly
    /// one URI SAN that is a SPIFFE ID of this trust domain, and signed by
    /// the signing certificate of one of this deployment's published CAs.
    /// The outer error is Vern's (storage, sealed); the inner one says why
    /// the certificate is refused.
    pub async fn verify_own_svid(
        &self,
        b: &Barrier,
        cert_der: &[u8],
    ) -> Result<Result<OwnSvid, SvidRejection>, PkiError> {
        use x509_parser::extensions::GeneralName;
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(cert_der) else {
            return Ok(Err(SvidRejection::Unparsable));
        };
        let now = self.now();
        let valid = cert.validity();
        let from = u64::try_from(valid.not_before.timestamp()).unwrap_or(u64::MAX);
        let until = u64::try_from(valid.not_after.timestamp()).unwrap_or(0);
        if now < from {
            return Ok(Err(SvidRejection::NotYetValid));
        }
        if now >= until {
            return Ok(Err(SvidRejection::Expired));
        }
        if cert.is_ca() {
            return Ok(Err(SvidRejection::Ca));
        }
        let uris: Vec<&str> = match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some(*u),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let [uri] = uris.as_slice() else {
            return Ok(Err(SvidRejection::NoSpiffeId));
        };
        let Ok(spiffe_id) = SpiffeId::parse(uri) else {
            return Ok(Err(SvidRejection::NoSpiffeId));
        };
        if spiffe_id.trust_domain() != &self.config.trust_domain {
            return Ok(Err(SvidRejection::ForeignTrustDomain(
                spiffe_id.to_string(),
            )));
        }
        let material = self.material(b, false).await?;
        let signed = material
            .published_cas(now, self.config.overlap())
            .into_iter()
            .filter_map(|ca| ca.chain_der.first())
            .any(|signer| {
                x509_parser::parse_x509_certificate(signer).is_ok_and(|(_, issuer)| {
                    cert.verify_signature(Some(issuer.public_key())).is_ok()
                })
            });
        if !signed {
            return Ok(Err(SvidRejection::NotSigned));
        }
        Ok(Ok(OwnSvid {
            spiffe_id,
            not_after: until,
        }))
    }

    /// The trust anchors (the published roots) as PEM.
    pub async fn trust_anchors_pem(&self, b: &Barrier) -> Result<String, PkiError> {
        let now = self.now();
        let material = self.published_material(b).await?;
        let roots: Vec<&[u8]> = material
            .published_cas(now, self.config.overlap())
            .into_iter()
            .map(|ca| ca.root_der.as_slice())
            .collect();
        Ok(pem_of(&roots))
    }

    /// The delay before new material signs: the one asked for or the
    /// configured one, and never less than the cache time, so that every
    /// replica has read it first.
    fn delay(&self, asked: Option<u64>) -> u64 {
        asked
            .unwrap_or(self.config.publish_delay)
            .max(CACHE_SECS + 1)
    }

    /// Starts a rotation: a new CA and JWT-SVID key, published now and
    /// signing after `signs_after` seconds (the configured delay by
    /// default); superseded ones stay published until their SVIDs expire.
    pub async fn rotate(
        &self,
        b: &Barrier,
        signs_after: Option<u64>,
    ) -> Result<Rotation, PkiError> {
        let signs_from = self.now().saturating_add(self.delay(signs_after));
        let config = &self.config;
        self.change(b, |now| {
            Ok((
                generate_ca(
                    &config.trust_domain,
                    config.key_type,
                    now,
                    config.ca_ttl,
                    signs_from,
                )?,
                Some(JwtKey::generate(now, signs_from)?),
            ))
        })
        .await
    }

    /// Imports an external CA: `certs_pem` holds the CA certificate and
    /// its issuers up to and including the root, `key_pem` its PKCS#8 key.
    /// A root gets an intermediate of Vern's making; an intermediate signs
    /// itself. Published now, signing after `signs_after` seconds.
    pub async fn import(
        &self,
        b: &Barrier,
        certs_pem: &str,
        key_pem: &str,
        signs_after: Option<u64>,
    ) -> Result<Rotation, PkiError> {
        let now = self.now();
        let signs_from = now.saturating_add(self.delay(signs_after));
        let config = &self.config;
        let stored = import_ca(
            &config.trust_domain,
            config.key_type,
            certs_pem,
            key_pem,
            now,
            config.ca_ttl,
            signs_from,
        )?;
        check_round_trip(&ca::SigningCa::load(&stored)?, now)?;
        let mut stored = Some(stored);
        self.change(b, |_| {
            stored
                .take()
                .map(|s| (s, None))
                .ok_or_else(|| PkiError::Conflict("the import kept colliding; retry".to_owned()))
        })
        .await
    }

    async fn change(
        &self,
        b: &Barrier,
        mut make: impl FnMut(u64) -> Result<(ca::StoredCa, Option<StoredJwtKey>), PkiError>,
    ) -> Result<Rotation, PkiError> {
        for _ in 0..5 {
            let now = self.now();
            let current = self.material(b, true).await?;
            let (ca, jwt) = make(now)?;
            let jwt_kid = jwt.as_ref().map(|k| k.kid().to_owned());
            match current.add(b, now, self.config.overlap(), ca, jwt).await {
                Ok(()) => {
                    let material = self.material(b, true).await?;
                    let newest = material
                        .cas
                        .iter()
                        .max_by_key(|c| (c.signs_from, c.created()))
                        .ok_or_else(|| PkiError::Internal("no CA after a rotation".to_owned()))?;
                    tracing::warn!(ca = %newest.id, signs_from = newest.signs_from, "CA rotation started.");
                    return Ok(Rotation {
                        ca: CaInfo::from(newest),
                        jwt_kid,
                        sequence: material.sequence(now, self.config.overlap()),
                    });
                }
                Err(PkiError::Seal(vern_seal::SealError::Conflict { .. })) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(PkiError::Conflict(
            "the CA rotation kept colliding with another; retry".to_owned(),
        ))
    }

    /// A page of issued-certificate records.
    pub async fn certificates(
        &self,
        b: &Barrier,
        filter: &CertFilter,
    ) -> Result<CertPage, PkiError> {
        records::list(b, self.now(), filter).await
    }

    /// Deletes records of certificates that expired more than a day ago.
    pub async fn prune(&self, b: &Barrier) -> Result<usize, PkiError> {
        records::prune(b, self.now()).await
    }

    /// For each SPIFFE ID with an unexpired certificate, when its last one
    /// expires, soonest first, at most `limit`; and how many there are.
    pub async fn identity_expiries(
        &self,
        b: &Barrier,
        limit: usize,
    ) -> Result<(Vec<(String, u64)>, usize), PkiError> {
        records::identity_expiries(b, self.now(), limit).await
    }
}

/// Signs a throwaway leaf with an imported CA and checks that it chains:
/// the leaf's issuer is exactly the CA's subject and its signature
/// verifies. rcgen rebuilds the issuer's name from its parts, so an
/// unusual name that does not survive that is refused here, not found out
/// by relying parties.
fn check_round_trip(ca: &ca::SigningCa, now: u64) -> Result<(), PkiError> {
    let probe = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| PkiError::Internal(e.to_string()))?;
    let td = TrustDomain::parse(&ca.trust_domain).map_err(|e| PkiError::Internal(e.to_string()))?;
    let id = Workload::Component("import-check".to_owned())
        .spiffe_id(&td)
        .map_err(|e| PkiError::Internal(e.to_string()))?;
    let der = ca.sign_leaf(
        &probe.public_key_der(),
        &Leaf {
            spiffe_id: &id,
            dns_names: &[],
            ip_addresses: &[],
            serial: &random_serial(),
            not_before: now,
            not_after: now.saturating_add(60).min(ca.not_after),
        },
    )?;
    let signing = ca
        .chain_der
        .first()
        .ok_or_else(|| PkiError::corrupt("authority"))?;
    let chains = ca::chains_to(&der, signing);
    if chains {
        Ok(())
    } else {
        Err(PkiError::InvalidCa(
            "certificates signed with this CA would not chain to it (its subject name cannot be reproduced exactly)".to_owned(),
        ))
    }
}
