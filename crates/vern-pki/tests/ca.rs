//! The CA in the domain, over a real barrier on SQLite and a clock the test
//! moves: CA creation, X.509-SVIDs exactly per the SPIFFE specification,
//! every CSR refusal, serial entropy, lifetime capping, JWT-SVIDs, the
//! bundle, rotation overlap, import and the issued-certificate records.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use base64::Engine as _;
use rcgen::{
    CertificateParams, CustomExtension, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls::pki_types::{CertificateDer, UnixTime};
use serde_json::Value;
use vern_core::{Clock, ManualClock, Principal, PrincipalKind, Scope};
use vern_pki::{
    CertFilter, DnsName, JwtRequest, KeyType, Pki, PkiConfig, PkiError, SpiffeId, TrustDomain,
    X509Request, X509Svid,
};
use vern_seal::{Barrier, Seal};
use x509_parser::extensions::{GeneralName, ParsedExtension};

struct Env {
    barrier: Arc<Barrier>,
    clock: Arc<ManualClock>,
    pki: Pki,
    _dir: tempfile::TempDir,
}

/// Now, to the second, so certificates also verify against the real time.
fn start() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn env_with(edit: impl FnOnce(&mut PkiConfig)) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = vern_store::open(&format!("sqlite:{}", dir.path().join("p.db").display()), 2)
        .await
        .unwrap();
    let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(start())));
    let seal = Seal::new(store, clock.clone()).await.unwrap();
    seal.init_unsealed(1, 1, &[], None).await.unwrap();
    let mut config = PkiConfig::new(TrustDomain::parse("example.org").unwrap());
    edit(&mut config);
    Env {
        barrier: seal.barrier().unwrap(),
        pki: Pki::new(config, clock.clone()),
        clock,
        _dir: dir,
    }
}

async fn env() -> Env {
    env_with(|_| {}).await
}

impl Env {
    fn now(&self) -> u64 {
        self.clock.unix_seconds()
    }

    fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    async fn issue(
        &self,
        id: &SpiffeId,
        csr: &str,
        ttl: Option<u64>,
        dns: &[DnsName],
    ) -> Result<X509Svid, PkiError> {
        self.pki
            .issue_x509(
                &self.barrier,
                &X509Request {
                    spiffe_id: id,
                    csr_pem: csr,
                    ttl,
                    dns_names: dns,
                    principal: "svc.acme.web.prod.api",
                },
            )
            .await
    }

    async fn bundle(&self) -> Value {
        self.pki.bundle(&self.barrier).await.unwrap()
    }
}

fn api_principal() -> Principal {
    Principal {
        id: "svc.acme.web.prod.api".into(),
        kind: PrincipalKind::Service {
            scope: Scope {
                tenant: "acme".parse().unwrap(),
                project: "web".parse().unwrap(),
                environment: "prod".parse().unwrap(),
            },
        },
    }
}

fn api_id() -> SpiffeId {
    SpiffeId::parse("spiffe://example.org/t/acme/p/web/e/prod/s/api").unwrap()
}

/// A CSR for `key` with the SANs `sans`, edited by `edit`.
fn csr_with(
    key: &KeyPair,
    sans: Vec<SanType>,
    edit: impl FnOnce(&mut CertificateParams),
) -> String {
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans;
    edit(&mut params);
    params.serialize_request(key).unwrap().pem().unwrap()
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.try_into().unwrap())
}

fn csr_for(id: &SpiffeId) -> (KeyPair, String) {
    let key = KeyPair::generate().unwrap();
    let csr = csr_with(&key, vec![uri(&id.to_string())], |_| {});
    (key, csr)
}

fn der_of(pem: &str) -> Vec<u8> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    p.contents
}

fn trust_anchors(pem: &str) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        roots
            .add(CertificateDer::from(block.unwrap().contents))
            .unwrap();
    }
    roots
}

/// Whether WebPKI (rustls' verifier) accepts `svid` as a client
/// certificate under the trust anchors `anchors_pem` at `at`.
fn verifies(svid: &X509Svid, anchors_pem: &str, at: u64) -> bool {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(trust_anchors(anchors_pem)),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    let chain: Vec<CertificateDer<'static>> = svid
        .chain_pem
        .iter()
        .map(|p| CertificateDer::from(der_of(p)))
        .collect();
    verifier
        .verify_client_cert(
            &CertificateDer::from(svid.certificate_der.clone()),
            &chain,
            UnixTime::since_unix_epoch(Duration::from_secs(at)),
        )
        .is_ok()
}

#[tokio::test]
async fn ensure_ca_creates_a_root_and_an_intermediate() {
    let e = env().await;
    // The public reads never create the CA.
    assert!(matches!(
        e.pki.bundle(&e.barrier).await,
        Err(PkiError::Unavailable(_))
    ));
    assert!(matches!(
        e.pki.trust_anchors_pem(&e.barrier).await,
        Err(PkiError::Unavailable(_))
    ));
    e.pki.ensure_ca(&e.barrier).await.unwrap();
    let bundle = e.bundle().await;
    assert_eq!(bundle["spiffe_sequence"], 1);
    assert_eq!(bundle["spiffe_refresh_hint"], 300);
    let keys = bundle["keys"].as_array().unwrap();
    let uses: Vec<&str> = keys.iter().map(|k| k["use"].as_str().unwrap()).collect();
    assert_eq!(uses, ["x509-svid", "jwt-svid"]);
    assert_eq!(
        (keys[0]["kty"].as_str(), keys[0]["crv"].as_str()),
        (Some("EC"), Some("P-256"))
    );
    let root_der = B64.decode(keys[0]["x5c"][0].as_str().unwrap()).unwrap();
    let pem = e.pki.trust_anchors_pem(&e.barrier).await.unwrap();
    assert_eq!(der_of(&pem), root_der, "ca.pem is the bundle's anchor");
    let (_, root) = x509_parser::parse_x509_certificate(&root_der).unwrap();
    assert!(root.is_ca());
    assert_eq!(root.subject(), root.issuer());
    root.verify_signature(None).unwrap();
    assert!(root.validity().not_after.timestamp() as u64 > e.now() + 9 * 365 * 86400);
    let san = root.subject_alternative_name().unwrap().unwrap();
    assert!(matches!(
        san.value.general_names[..],
        [GeneralName::URI("spiffe://example.org")]
    ));

    let (_, csr) = csr_for(&api_id());
    let svid = e.issue(&api_id(), &csr, None, &[]).await.unwrap();
    assert_eq!(svid.chain_pem.len(), 1, "the intermediate, not the root");
    let inter_der = der_of(&svid.chain_pem[0]);
    let (_, inter) = x509_parser::parse_x509_certificate(&inter_der).unwrap();
    assert!(inter.is_ca());
    assert_eq!(
        inter
            .basic_constraints()
            .unwrap()
            .unwrap()
            .value
            .path_len_constraint,
        Some(0)
    );
    inter.verify_signature(Some(root.public_key())).unwrap();
    assert!(inter.key_usage().unwrap().unwrap().value.key_cert_sign());
    assert!(verifies(&svid, &pem, e.now()));
    // A second process over the same storage reads the same CA.
    let other = Pki::new(e.pki.config().clone(), e.clock.clone());
    assert_eq!(other.bundle(&e.barrier).await.unwrap(), bundle);
}

#[tokio::test]
async fn an_x509_svid_is_exactly_what_the_specification_says() {
    let e = env().await;
    let id = e.pki.spiffe_id_of(&api_principal()).unwrap();
    assert_eq!(id, api_id());
    let (_, csr) = csr_for(&id);
    let dns = [DnsName::parse("api.acme.example").unwrap()];
    let svid = e.issue(&id, &csr, None, &dns).await.unwrap();
    assert_eq!(svid.spiffe_id, id.to_string());
    let (_, leaf) = x509_parser::parse_x509_certificate(&svid.certificate_der).unwrap();
    let mut uris = Vec::new();
    let mut names = Vec::new();
    let mut seen = HashSet::new();
    for ext in leaf.extensions() {
        seen.insert(ext.oid.to_id_string());
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for n in &san.general_names {
                    match n {
                        GeneralName::URI(u) => uris.push(u.to_string()),
                        GeneralName::DNSName(d) => names.push(d.to_string()),
                        other => panic!("unexpected SAN {other:?}"),
                    }
                }
            }
            ParsedExtension::BasicConstraints(bc) => {
                assert!(!bc.ca && ext.critical);
                // DER leaves a field equal to its default out.
                assert_eq!(ext.value, [0x30, 0x00]);
            }
            ParsedExtension::KeyUsage(ku) => {
                assert!(ext.critical, "keyUsage is critical");
                assert!(ku.digital_signature());
                assert!(!ku.key_cert_sign() && !ku.crl_sign());
                assert!(!ku.key_encipherment() && !ku.key_agreement());
            }
            ParsedExtension::ExtendedKeyUsage(eku) => {
                assert!(eku.server_auth && eku.client_auth);
                assert!(!eku.any && !eku.code_signing && eku.other.is_empty());
            }
            _ => {}
        }
    }
    assert_eq!(uris, [id.to_string()], "exactly one URI SAN");
    assert_eq!(names, ["api.acme.example"]);
    for required in [
        "2.5.29.17",
        "2.5.29.19",
        "2.5.29.15",
        "2.5.29.37",
        "2.5.29.35",
    ] {
        assert!(seen.contains(required), "extension {required}");
    }
    // A one-hour certificate by default, slightly backdated.
    let now = e.now() as i64;
    assert_eq!(leaf.validity().not_before.timestamp(), now - 30);
    assert_eq!(leaf.validity().not_after.timestamp(), now + 3600);
    // The serial is positive and the record names it, never a key.
    assert!(!leaf.raw_serial().is_empty() && leaf.raw_serial()[0] & 0x80 == 0);
    assert_eq!(svid.record.serial, hex::encode(leaf.raw_serial()));
    let json = serde_json::to_string(&svid.record).unwrap();
    assert!(
        !json.contains("PRIVATE") && !json.contains("key\""),
        "{json}"
    );
}

#[tokio::test]
async fn serials_carry_at_least_128_random_bits() {
    let e = env().await;
    let id = api_id();
    let (key, csr) = csr_for(&id);
    let _ = key;
    let mut serials = HashSet::new();
    let mut ones = [0u32; 160];
    const N: u32 = 200;
    for _ in 0..N {
        let svid = e.issue(&id, &csr, None, &[]).await.unwrap();
        let (_, leaf) = x509_parser::parse_x509_certificate(&svid.certificate_der).unwrap();
        let serial = leaf.raw_serial().to_vec();
        assert_eq!(serial.len(), 20, "DER-minimal, 20 bytes");
        assert!(
            serial[0] != 0 && serial[0] & 0x80 == 0,
            "positive, no padding"
        );
        for (i, bit) in ones.iter_mut().enumerate() {
            *bit += u32::from(serial[i / 8] >> (7 - i % 8) & 1);
        }
        assert!(serials.insert(serial), "a repeated serial");
    }
    // Every bit but the sign bit varies: bits 8..160 (152 of them) are
    // uniformly random, so each is set in roughly half the serials. The
    // bounds are over ten standard deviations wide.
    assert_eq!(ones[0], 0);
    for (i, n) in ones.iter().enumerate().skip(8) {
        assert!((30..=170).contains(n), "bit {i} set in {n} of {N} serials");
    }
}

#[tokio::test]
async fn lifetimes_are_cut_to_the_maximum_and_the_ca() {
    let e = env_with(|c| c.max_ttl = 7200).await;
    let id = api_id();
    let (_, csr) = csr_for(&id);
    let until = |svid: &X509Svid| svid.record.not_after - e.now();
    assert_eq!(until(&e.issue(&id, &csr, Some(60), &[]).await.unwrap()), 60);
    assert_eq!(
        until(&e.issue(&id, &csr, Some(86400 * 365), &[]).await.unwrap()),
        7200
    );
    assert!(matches!(
        e.issue(&id, &csr, Some(0), &[]).await,
        Err(PkiError::InvalidRequest(_))
    ));
    // A CA that expires sooner cuts the certificate to its own end.
    let short = env_with(|c| c.ca_ttl = 1000).await;
    let svid = short.issue(&id, &csr, None, &[]).await.unwrap();
    let inter_der = der_of(&svid.chain_pem[0]);
    let (_, inter) = x509_parser::parse_x509_certificate(&inter_der).unwrap();
    assert_eq!(
        svid.record.not_after,
        inter.validity().not_after.timestamp() as u64
    );
    assert_eq!(svid.record.not_after, short.now() + 1000);
    short.advance(1000);
    assert!(matches!(
        short.issue(&id, &csr, None, &[]).await,
        Err(PkiError::Unavailable(_))
    ));
}

/// Minimal DER, to build CSRs no library would make: weak and
/// unsupported keys.
mod der {
    pub fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match body.len() {
            n if n < 0x80 => out.push(n as u8),
            n if n < 0x100 => out.extend([0x81, n as u8]),
            n => out.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(body);
        out
    }
    pub fn seq(parts: &[Vec<u8>]) -> Vec<u8> {
        tlv(0x30, &parts.concat())
    }
    pub fn oid(encoded: &[u8]) -> Vec<u8> {
        tlv(0x06, encoded)
    }
    pub fn bits(body: &[u8]) -> Vec<u8> {
        tlv(0x03, &[&[0u8][..], body].concat())
    }
    /// A CSR with `spki` and a meaningless signature.
    pub fn csr(spki: Vec<u8>) -> String {
        let info = seq(&[tlv(0x02, &[0]), seq(&[]), spki, tlv(0xa0, &[])]);
        let alg = seq(&[
            oid(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b]),
            tlv(0x05, &[]),
        ]);
        let der = seq(&[info, alg, bits(&[1; 64])]);
        use base64::Engine as _;
        format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            base64::engine::general_purpose::STANDARD.encode(der)
        )
    }
    pub fn rsa(bits_len: usize) -> Vec<u8> {
        let mut modulus = vec![0u8];
        modulus.push(0xc1);
        modulus.extend(std::iter::repeat_n(0x35, bits_len / 8 - 1));
        let key = seq(&[tlv(0x02, &modulus), tlv(0x02, &[1, 0, 1])]);
        seq(&[
            seq(&[
                oid(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01]),
                tlv(0x05, &[]),
            ]),
            bits(&key),
        ])
    }
    pub fn ec(curve: &[u8]) -> Vec<u8> {
        let mut point = vec![4u8];
        point.extend([7u8; 64]);
        seq(&[
            seq(&[oid(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]), oid(curve)]),
            bits(&point),
        ])
    }
}

#[tokio::test]
async fn every_bad_csr_is_refused_and_nothing_is_signed() {
    let e = env().await;
    let id = api_id();
    let key = KeyPair::generate().unwrap();
    let ok_dns = [DnsName::parse("api.acme.example").unwrap()];
    let ca_flag =
        CustomExtension::from_oid_content(&[2, 5, 29, 19], vec![0x30, 0x03, 0x01, 0x01, 0xff]);
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "foreign SPIFFE ID",
            csr_with(
                &key,
                vec![uri("spiffe://example.org/t/globex/p/web/e/prod/s/api")],
                |_| {},
            ),
            "your SPIFFE ID is",
        ),
        (
            "another trust domain",
            csr_with(
                &key,
                vec![uri("spiffe://evil.org/t/acme/p/web/e/prod/s/api")],
                |_| {},
            ),
            "your SPIFFE ID is",
        ),
        (
            "extra URI SAN",
            csr_with(
                &key,
                vec![uri(&id.to_string()), uri("spiffe://example.org/x")],
                |_| {},
            ),
            "",
        ),
        (
            "two copies of the ID",
            csr_with(
                &key,
                vec![uri(&id.to_string()), uri(&id.to_string())],
                |_| {},
            ),
            "exactly one",
        ),
        (
            "a DNS name not asked for",
            csr_with(
                &key,
                vec![
                    uri(&id.to_string()),
                    SanType::DnsName("evil.example".try_into().unwrap()),
                ],
                |_| {},
            ),
            "does not ask for",
        ),
        (
            "an IP address",
            csr_with(
                &key,
                vec![SanType::IpAddress("10.0.0.1".parse().unwrap())],
                |_| {},
            ),
            "neither the SPIFFE ID nor a DNS name",
        ),
        (
            "CA flag",
            csr_with(&key, vec![uri(&id.to_string())], |p| {
                p.custom_extensions.push(ca_flag.clone())
            }),
            "asks to be a CA",
        ),
        (
            "keyCertSign",
            csr_with(&key, vec![uri(&id.to_string())], |p| {
                p.key_usages = vec![KeyUsagePurpose::KeyCertSign]
            }),
            "keyCertSign",
        ),
        (
            "cRLSign",
            csr_with(&key, vec![], |p| {
                p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::CrlSign]
            }),
            "cRLSign",
        ),
        (
            "an unknown critical extension",
            csr_with(&key, vec![], |p| {
                let mut ext = CustomExtension::from_oid_content(
                    &[1, 3, 6, 1, 4, 1, 99999, 1],
                    vec![0x05, 0x00],
                );
                ext.set_criticality(true);
                p.custom_extensions.push(ext);
            }),
            "critical extension",
        ),
        (
            "weak RSA key",
            der::csr(der::rsa(1024)),
            "1024 bits, which is weak",
        ),
        (
            "unsupported curve",
            der::csr(der::ec(&[0x2b, 0x81, 0x04, 0x00, 0x0a])),
            "curve 1.3.132.0.10",
        ),
        (
            "bad signature",
            der::csr(der::rsa(2048)),
            "signature does not verify",
        ),
        ("garbage", "hello".to_owned(), "not PEM"),
        (
            "garbage inside PEM",
            "-----BEGIN CERTIFICATE REQUEST-----\naGVsbG8=\n-----END CERTIFICATE REQUEST-----\n"
                .to_owned(),
            "cannot be parsed",
        ),
        (
            "a certificate instead",
            rcgen::generate_simple_self_signed(vec!["a.example".into()])
                .unwrap()
                .cert
                .pem(),
            "not a `CERTIFICATE REQUEST`",
        ),
        (
            "two CSRs",
            format!("{0}{0}", csr_for(&id).1),
            "exactly one CSR",
        ),
        ("too large", "x".repeat(70_000), "limit"),
    ];
    for (what, csr, says) in cases {
        match e.issue(&id, &csr, None, &ok_dns).await {
            Err(PkiError::BadCsr(msg)) => assert!(msg.contains(says), "{what}: {msg}"),
            other => panic!("{what}: {other:?}"),
        }
    }
    let listed = e
        .pki
        .certificates(
            &e.barrier,
            &CertFilter {
                limit: 100,
                include_expired: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(
        listed.certificates.is_empty(),
        "nothing was signed or recorded"
    );
    // The same key is fine once the CSR asks for nothing it may not have;
    // a CSR naming no SAN at all gets the SPIFFE ID from Vern; P-384 and
    // Ed25519 keys are accepted, and DNS names asked for in the request
    // may be in the CSR too.
    for (alg, sans) in [
        (&rcgen::PKCS_ECDSA_P256_SHA256, vec![]),
        (&rcgen::PKCS_ECDSA_P384_SHA384, vec![uri(&id.to_string())]),
        (
            &rcgen::PKCS_ED25519,
            vec![
                uri(&id.to_string()),
                SanType::DnsName("api.acme.example".try_into().unwrap()),
            ],
        ),
    ] {
        let key = KeyPair::generate_for(alg).unwrap();
        let csr = csr_with(&key, sans, |p| {
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        });
        let svid = e.issue(&id, &csr, None, &ok_dns).await.unwrap();
        let (_, leaf) = x509_parser::parse_x509_certificate(&svid.certificate_der).unwrap();
        assert_eq!(leaf.public_key().raw, key.public_key_der().as_slice());
        let eku = leaf.extended_key_usage().unwrap().unwrap().value;
        assert!(!eku.code_signing, "requested usages are not copied");
    }
}

#[tokio::test]
async fn jwt_svids_verify_with_the_bundles_key() {
    let e = env().await;
    let id = api_id();
    let aud = vec![
        "payments".to_owned(),
        "spiffe://example.org/t/acme/p/pay/e/prod/s/db".to_owned(),
    ];
    let svid = e
        .pki
        .issue_jwt(
            &e.barrier,
            &JwtRequest {
                spiffe_id: &id,
                audience: &aud,
                ttl: None,
            },
        )
        .await
        .unwrap();
    let parts: Vec<&str> = svid.token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&B64URL.decode(parts[0]).unwrap()).unwrap();
    let claims: Value = serde_json::from_slice(&B64URL.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["kid"], svid.kid.as_str());
    assert_eq!(claims["sub"], id.to_string());
    assert_eq!(claims["aud"], serde_json::json!(aud));
    assert_eq!(claims["iat"], e.now());
    assert_eq!(claims["exp"], e.now() + 300);
    let bundle = e.bundle().await;
    let jwk = bundle["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["use"] == "jwt-svid" && k["kid"] == svid.kid.as_str())
        .unwrap()
        .clone();
    let point = [
        &[4u8][..],
        &B64URL.decode(jwk["x"].as_str().unwrap()).unwrap(),
        &B64URL.decode(jwk["y"].as_str().unwrap()).unwrap(),
    ]
    .concat();
    use p256::ecdsa::signature::Verifier as _;
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).unwrap();
    let sig = p256::ecdsa::Signature::from_slice(&B64URL.decode(parts[2]).unwrap()).unwrap();
    key.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
        .unwrap();
    // Refusals.
    for (audience, ttl) in [
        (vec![], None),
        (vec![String::new()], None),
        (vec!["a\nb".to_owned()], None),
        (aud.clone(), Some(0)),
    ] {
        assert!(matches!(
            e.pki
                .issue_jwt(
                    &e.barrier,
                    &JwtRequest {
                        spiffe_id: &id,
                        audience: &audience,
                        ttl
                    }
                )
                .await,
            Err(PkiError::InvalidRequest(_))
        ));
    }
    let long = e
        .pki
        .issue_jwt(
            &e.barrier,
            &JwtRequest {
                spiffe_id: &id,
                audience: &aud,
                ttl: Some(10 * 86400),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        long.expires_at - long.issued_at,
        86400,
        "cut to the maximum"
    );
}

#[tokio::test]
async fn rotation_publishes_first_and_keeps_the_old_ca_until_its_svids_expire() {
    let e = env_with(|c| c.max_ttl = 3600).await;
    let id = api_id();
    let (_, csr) = csr_for(&id);
    let old_svid = e.issue(&id, &csr, None, &[]).await.unwrap();
    let old_jwt = e
        .pki
        .issue_jwt(
            &e.barrier,
            &JwtRequest {
                spiffe_id: &id,
                audience: &["a".to_owned()],
                ttl: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(e.bundle().await["spiffe_sequence"], 1);
    let rotation = e.pki.rotate(&e.barrier, Some(60)).await.unwrap();
    assert_eq!(rotation.ca.signs_from, e.now() + 60);
    assert_eq!(rotation.sequence, 2);
    // Published at once, both CAs and both JWT keys.
    let bundle = e.bundle().await;
    assert_eq!(bundle["spiffe_sequence"], 2);
    assert_eq!(bundle["keys"].as_array().unwrap().len(), 4);
    let anchors = e.pki.trust_anchors_pem(&e.barrier).await.unwrap();
    // The old CA still signs until the delay is over.
    let before = e.issue(&id, &csr, None, &[]).await.unwrap();
    assert_eq!(before.record.ca, old_svid.record.ca);
    assert_eq!(
        e.pki
            .issue_jwt(
                &e.barrier,
                &JwtRequest {
                    spiffe_id: &id,
                    audience: &["a".to_owned()],
                    ttl: None
                }
            )
            .await
            .unwrap()
            .kid,
        old_jwt.kid
    );
    e.advance(61);
    let after = e.issue(&id, &csr, None, &[]).await.unwrap();
    assert_eq!(after.record.ca, rotation.ca.id, "the new CA signs now");
    assert_ne!(after.chain_pem, old_svid.chain_pem);
    assert_eq!(
        e.pki
            .issue_jwt(
                &e.barrier,
                &JwtRequest {
                    spiffe_id: &id,
                    audience: &["a".to_owned()],
                    ttl: None
                }
            )
            .await
            .unwrap()
            .kid,
        rotation.jwt_kid.clone().unwrap()
    );
    // Old and new SVIDs both verify against the published anchors.
    let anchors_now = e.pki.trust_anchors_pem(&e.barrier).await.unwrap();
    assert_eq!(anchors_now, anchors);
    for s in [&old_svid, &before, &after] {
        assert!(verifies(s, &anchors_now, e.now()));
    }
    // The new anchor alone does not verify old SVIDs: the overlap matters.
    let new_only = e.bundle().await["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["use"] == "x509-svid")
        .map(|k| B64.decode(k["x5c"][0].as_str().unwrap()).unwrap())
        .next_back()
        .unwrap();
    let new_only_pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        B64.encode(&new_only)
    );
    assert!(!verifies(&before, &new_only_pem, e.now()));
    assert!(verifies(&after, &new_only_pem, e.now()));
    // Until the last SVID the old CA signed has expired: it signed until
    // the new one started, and SVIDs live an hour at most.
    e.advance(3600 + 30 - 2);
    assert_eq!(e.bundle().await["keys"].as_array().unwrap().len(), 4);
    assert!(verifies(
        &before,
        &e.pki.trust_anchors_pem(&e.barrier).await.unwrap(),
        before.record.not_after - 1
    ));
    e.advance(2);
    let bundle = e.bundle().await;
    let keys = bundle["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "{bundle}");
    assert_eq!(bundle["spiffe_sequence"], 4, "one step for each key gone");
    assert_eq!(keys[1]["kid"], rotation.jwt_kid.unwrap().as_str());
    // A later rotation prunes what has gone and keeps counting up.
    let again = e.pki.rotate(&e.barrier, None).await.unwrap();
    assert_eq!(again.sequence, 5);
    assert_eq!(again.ca.signs_from, e.now() + 600, "the configured delay");
    let anchors = e.bundle().await["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["use"] == "x509-svid")
        .count();
    assert_eq!(anchors, 2);
}

#[tokio::test]
async fn ed25519_cas_and_another_trust_domain() {
    let e = env_with(|c| c.key_type = KeyType::Ed25519).await;
    e.pki.ensure_ca(&e.barrier).await.unwrap();
    let bundle = e.bundle().await;
    assert_eq!(bundle["keys"][0]["kty"], "OKP");
    assert_eq!(bundle["keys"][0]["crv"], "Ed25519");
    let (_, csr) = csr_for(&api_id());
    let svid = e.issue(&api_id(), &csr, None, &[]).await.unwrap();
    assert!(verifies(
        &svid,
        &e.pki.trust_anchors_pem(&e.barrier).await.unwrap(),
        e.now()
    ));
    // The same storage under another trust domain: the CA was made for
    // example.org, so it refuses until rotated.
    let mut config = e.pki.config().clone();
    config.trust_domain = TrustDomain::parse("other.org").unwrap();
    let other = Pki::new(config, e.clock.clone());
    let other_id = SpiffeId::parse("spiffe://other.org/t/acme/p/web/e/prod/s/api").unwrap();
    let (_, csr) = csr_for(&other_id);
    let req = X509Request {
        spiffe_id: &other_id,
        csr_pem: &csr,
        ttl: None,
        dns_names: &[],
        principal: "p",
    };
    assert!(matches!(
        other.issue_x509(&e.barrier, &req).await,
        Err(PkiError::Unavailable(_))
    ));
    other.rotate(&e.barrier, Some(0)).await.unwrap();
    e.advance(6);
    let svid = other.issue_x509(&e.barrier, &req).await.unwrap();
    let inter_der = der_of(&svid.chain_pem[0]);
    let (_, inter) = x509_parser::parse_x509_certificate(&inter_der).unwrap();
    let san = inter.subject_alternative_name().unwrap().unwrap();
    assert!(matches!(
        san.value.general_names[..],
        [GeneralName::URI("spiffe://other.org")]
    ));
}

/// An external CA: a root, or a root and an intermediate.
fn external(ttl_days: i64) -> (rcgen::Certificate, KeyPair, rcgen::Certificate, KeyPair) {
    let root_key = KeyPair::generate().unwrap();
    let mut root = CertificateParams::default();
    root.distinguished_name
        .push(rcgen::DnType::CommonName, "Corp Root");
    root.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    root.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    root.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(ttl_days);
    let root = root.self_signed(&root_key).unwrap();
    let int_key = KeyPair::generate().unwrap();
    let mut int = CertificateParams::default();
    int.distinguished_name
        .push(rcgen::DnType::CommonName, "Corp Issuing CA");
    int.distinguished_name
        .push(rcgen::DnType::OrganizationName, "Corp");
    int.is_ca = IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    int.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    int.use_authority_key_identifier_extension = true;
    int.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    int.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(ttl_days);
    let int = int.signed_by(&int_key, &root, &root_key).unwrap();
    (root, root_key, int, int_key)
}

#[tokio::test]
async fn imported_roots_and_intermediates_sign_and_chain() {
    let e = env().await;
    let id = api_id();
    let (_, csr) = csr_for(&id);
    let (root, root_key, int, int_key) = external(365);
    // An intermediate with its root: it signs itself.
    let chain = format!("{}{}", int.pem(), root.pem());
    let imported = e
        .pki
        .import(&e.barrier, &chain, &int_key.serialize_pem(), Some(0))
        .await
        .unwrap();
    assert!(imported.ca.imported);
    assert!(imported.jwt_kid.is_none());
    e.advance(6);
    let svid = e.issue(&id, &csr, None, &[]).await.unwrap();
    assert_eq!(svid.chain_pem, [int.pem()]);
    let anchors = e.pki.trust_anchors_pem(&e.barrier).await.unwrap();
    assert!(anchors.contains(root.pem().lines().nth(1).unwrap()));
    assert!(
        verifies(&svid, &root.pem(), e.now()),
        "chains to the imported root"
    );
    // A root alone: Vern makes the intermediate under it.
    let imported = e
        .pki
        .import(&e.barrier, &root.pem(), &root_key.serialize_pem(), Some(0))
        .await
        .unwrap();
    e.advance(6);
    let svid = e.issue(&id, &csr, None, &[]).await.unwrap();
    assert_eq!(svid.record.ca, imported.ca.id);
    assert_ne!(svid.chain_pem, [int.pem()]);
    assert!(verifies(&svid, &root.pem(), e.now()));
    // Refusals, and nothing changes.
    let before = e.bundle().await;
    let other_key = KeyPair::generate().unwrap();
    let leaf = rcgen::generate_simple_self_signed(vec!["x.example".into()]).unwrap();
    let (_, _, expired_int, expired_key) = external(-0);
    let mut foreign = CertificateParams::default();
    foreign.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    foreign.subject_alt_names = vec![uri("spiffe://evil.org")];
    foreign.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let foreign_key = KeyPair::generate().unwrap();
    let foreign = foreign.self_signed(&foreign_key).unwrap();
    let mut bare = CertificateParams::default();
    bare.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let bare_key = KeyPair::generate().unwrap();
    let bare = bare.self_signed(&bare_key).unwrap();
    for (what, certs, key, says) in [
        (
            "wrong key",
            root.pem(),
            other_key.serialize_pem(),
            "does not belong",
        ),
        (
            "not a CA",
            leaf.cert.pem(),
            leaf.key_pair.serialize_pem(),
            "not a CA",
        ),
        (
            "no keyUsage",
            bare.pem(),
            bare_key.serialize_pem(),
            "keyCertSign",
        ),
        (
            "no root",
            int.pem(),
            int_key.serialize_pem(),
            "end the file with the root",
        ),
        (
            "expired",
            expired_int.pem(),
            expired_key.serialize_pem(),
            "not valid now",
        ),
        (
            "another trust domain",
            foreign.pem(),
            foreign_key.serialize_pem(),
            "not this trust domain",
        ),
        (
            "no certificate",
            String::new(),
            root_key.serialize_pem(),
            "no certificate",
        ),
        ("not a key", root.pem(), "garbage".to_owned(), "PKCS#8"),
        (
            "wrong order",
            format!("{}{}", root.pem(), int.pem()),
            root_key.serialize_pem(),
            "not signed by",
        ),
    ] {
        match e.pki.import(&e.barrier, &certs, &key, None).await {
            Err(PkiError::InvalidCa(msg)) => assert!(msg.contains(says), "{what}: {msg}"),
            other => panic!("{what}: {other:?}"),
        }
    }
    assert_eq!(e.bundle().await, before);
}

#[tokio::test]
async fn records_list_by_expiry_and_are_pruned_a_day_after() {
    let e = env().await;
    let id = api_id();
    let other = SpiffeId::parse("spiffe://example.org/t/acme/p/web/e/prod/s/db").unwrap();
    let (_, csr) = csr_for(&id);
    let (_, other_csr) = csr_for(&other);
    let short = e.issue(&id, &csr, Some(600), &[]).await.unwrap();
    let long = e.issue(&id, &csr, Some(7200), &[]).await.unwrap();
    let db = e.issue(&other, &other_csr, Some(3600), &[]).await.unwrap();
    let list = |f: CertFilter| {
        let e = &e;
        async move { e.pki.certificates(&e.barrier, &f).await.unwrap() }
    };
    let all = list(CertFilter {
        limit: 100,
        ..Default::default()
    })
    .await;
    let serials: Vec<&str> = all.certificates.iter().map(|c| c.serial.as_str()).collect();
    assert_eq!(
        serials,
        [&short.record.serial, &db.record.serial, &long.record.serial]
    );
    assert_eq!(all.certificates[0], short.record);
    let soon = list(CertFilter {
        expiring_within: Some(3600),
        limit: 100,
        ..Default::default()
    })
    .await;
    assert_eq!(soon.certificates.len(), 2);
    // Pages.
    let first = list(CertFilter {
        limit: 2,
        ..Default::default()
    })
    .await;
    assert_eq!(first.certificates.len(), 2);
    let rest = list(CertFilter {
        limit: 2,
        after: first.next,
        ..Default::default()
    })
    .await;
    assert_eq!(rest.certificates, std::slice::from_ref(&long.record));
    assert!(rest.next.is_none());
    // The latest expiry per identity, soonest first.
    let (expiries, total) = e.pki.identity_expiries(&e.barrier, 10).await.unwrap();
    assert_eq!(total, 2);
    assert_eq!(
        expiries,
        [
            (other.to_string(), db.record.not_after),
            (id.to_string(), long.record.not_after)
        ]
    );
    assert_eq!(
        e.pki
            .identity_expiries(&e.barrier, 1)
            .await
            .unwrap()
            .0
            .len(),
        1
    );
    // Expired: listed only on request; pruned a day after.
    e.advance(601);
    assert_eq!(
        list(CertFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .certificates
        .len(),
        2
    );
    assert_eq!(
        list(CertFilter {
            limit: 100,
            include_expired: true,
            ..Default::default()
        })
        .await
        .certificates
        .len(),
        3
    );
    assert_eq!(e.pki.prune(&e.barrier).await.unwrap(), 0);
    e.advance(86400);
    assert_eq!(e.pki.prune(&e.barrier).await.unwrap(), 1);
    e.advance(7200);
    assert_eq!(e.pki.prune(&e.barrier).await.unwrap(), 2);
    assert!(list(CertFilter {
        limit: 100,
        include_expired: true,
        ..Default::default()
    })
    .await
    .certificates
    .is_empty());
}

#[tokio::test]
async fn the_root_token_has_no_spiffe_id() {
    let e = env().await;
    assert!(matches!(
        e.pki.spiffe_id_of(&Principal::root()),
        Err(PkiError::NoIdentity(_))
    ));
}

/// A certificate from a throwaway CA with the URI SANs `uris`, CA or not.
fn foreign(uris: &[&str], ca: bool) -> Vec<u8> {
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = uris.iter().map(|u| uri(u)).collect();
    if ca {
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    }
    let key = KeyPair::generate().unwrap();
    params
        .signed_by(&key, &ca_cert, &ca_key)
        .unwrap()
        .der()
        .to_vec()
}

#[tokio::test]
async fn own_svids_are_verified_without_trusting_anyone_else() {
    use vern_pki::SvidRejection as R;
    let e = env().await;
    let (_, csr) = csr_for(&api_id());
    let svid = e.issue(&api_id(), &csr, Some(600), &[]).await.unwrap();
    let own = e
        .pki
        .verify_own_svid(&e.barrier, &svid.certificate_der)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(own.spiffe_id, api_id());
    assert_eq!(own.not_after, svid.record.not_after);
    assert_eq!(
        own.spiffe_id.service_client_id().as_deref(),
        Some("svc.acme.web.prod.api")
    );
    let api = api_id().to_string();
    for (der, want) in [
        (b"not a certificate".to_vec(), R::Unparsable),
        (foreign(&[&api], false), R::NotSigned),
        (
            foreign(&["spiffe://other.org/t/acme/p/web/e/prod/s/api"], false),
            R::ForeignTrustDomain("spiffe://other.org/t/acme/p/web/e/prod/s/api".to_owned()),
        ),
        (foreign(&[], false), R::NoSpiffeId),
        (foreign(&[&api, &api], false), R::NoSpiffeId),
        (foreign(&["https://example.org/x"], false), R::NoSpiffeId),
        (foreign(&[&api], true), R::Ca),
    ] {
        let got = e.pki.verify_own_svid(&e.barrier, &der).await.unwrap();
        assert_eq!(got, Err(want));
    }
    // Past its notAfter the SVID is refused as expired.
    e.advance(601);
    let got = e
        .pki
        .verify_own_svid(&e.barrier, &svid.certificate_der)
        .await
        .unwrap();
    assert_eq!(got, Err(R::Expired));
}
