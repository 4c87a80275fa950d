//! SVID issuance from CSRs next to the raw P-256 signing rate measured in
//! the same run: the CSR check alone (parse and verify its signature),
//! signing a leaf alone, and whole issuance through the barrier on SQLite
//! in a temporary directory (CSR check, signing, and the durable
//! issued-certificate record), plus JWT-SVIDs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vern_core::ManualClock;
use vern_pki::{check_csr, JwtRequest, Pki, PkiConfig, SpiffeId, TrustDomain, X509Request};
use vern_seal::Seal;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(now)));
    let (pki, barrier) = rt.block_on(async {
        let store = vern_store::open(&format!("sqlite:{}", dir.path().join("b.db").display()), 2)
            .await
            .unwrap();
        let seal = Seal::new(store, clock.clone()).await.unwrap();
        seal.init_unsealed(1, 1, &[], None).await.unwrap();
        let pki = Pki::new(
            PkiConfig::new(TrustDomain::parse("bench.example").unwrap()),
            clock.clone(),
        );
        (pki, seal.barrier().unwrap())
    });
    let id = SpiffeId::parse("spiffe://bench.example/t/acme/p/web/e/prod/s/api").unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(id.to_string().try_into().unwrap())];
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    // Warm the CA (its creation is not what is measured).
    rt.block_on(pki.ensure_ca(&barrier)).unwrap();

    let mut g = c.benchmark_group("pki");
    g.throughput(Throughput::Elements(1));
    // The raw signature every leaf costs once: ECDSA P-256 over a
    // certificate-sized message, with the same library rcgen signs with.
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &rng,
    )
    .unwrap();
    let raw = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        pkcs8.as_ref(),
        &rng,
    )
    .unwrap();
    let tbs = [0x42u8; 450];
    g.bench_function("raw_p256_sign", |b| {
        b.iter(|| raw.sign(&rng, &tbs).unwrap())
    });
    g.bench_function("check_csr", |b| {
        b.iter(|| check_csr(&csr, &id, &[]).unwrap())
    });
    g.bench_function("issue_x509_from_csr", |b| {
        b.to_async(&rt).iter(|| async {
            pki.issue_x509(
                &barrier,
                &X509Request {
                    spiffe_id: &id,
                    csr_pem: &csr,
                    ttl: None,
                    dns_names: &[],
                    principal: "svc.acme.web.prod.api",
                },
            )
            .await
            .unwrap()
        })
    });
    let audience = vec!["payments".to_owned()];
    g.bench_function("issue_jwt", |b| {
        b.to_async(&rt).iter(|| async {
            pki.issue_jwt(
                &barrier,
                &JwtRequest {
                    spiffe_id: &id,
                    audience: &audience,
                    ttl: None,
                },
            )
            .await
            .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
