//! Promotion gates on SQLite and PostgreSQL: a declared set planned into
//! one batch (create, unchanged, update, prune only what the caller
//! manages), committed with another domain's batch all or nothing, and two
//! replicas declaring at once (one wins, the other writes nothing).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use vern_attest::gates::parse_environment;
use vern_attest::statement::{SLSA_PROVENANCE_V1, VULNS_V01};
use vern_attest::{Gate, GateStore, Requirement};
use vern_core::{ManualClock, Scope};
use vern_crypto::SecretBytes;
use vern_seal::{Barrier, BarrierWrite, Expect, IssuedShare, Seal, SealError};
use vern_store::testing::TestDb;

/// Two replicas (own seal and barrier) over one database.
async fn replicas(db: &TestDb) -> (Arc<Barrier>, Arc<Barrier>) {
    let clock = Arc::new(ManualClock::new(
        UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ));
    let seal = Seal::new(db.open().await, clock.clone()).await.unwrap();
    let out = seal.init_unsealed(1, 1, &[], None).await.unwrap();
    let IssuedShare::Clear(share) = &out.shares[0] else {
        panic!("share not in clear")
    };
    let seal2 = Seal::new(db.open().await, clock).await.unwrap();
    seal2.unseal(&hex::encode(share.expose())).await.unwrap();
    (seal.barrier().unwrap(), seal2.barrier().unwrap())
}

async fn each_backend<F, Fut>(f: F)
where
    F: Fn(TestDb) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    f(TestDb::sqlite()).await;
    if let Some(db) = TestDb::postgres().await {
        f(db).await;
    }
}

fn gate(env: &str, predicate_types: &[&str]) -> Gate {
    let require = predicate_types
        .iter()
        .map(|p| Requirement {
            predicate_type: (*p).to_owned(),
            signer: None,
            max_critical: None,
        })
        .collect();
    Gate::new(parse_environment(env).unwrap(), require).unwrap()
}

fn all(_: &Scope) -> bool {
    true
}

fn acme_only(env: &Scope) -> bool {
    env.tenant.as_str() == "acme"
}

#[tokio::test]
async fn declared_gates_are_planned_and_pruned_within_reach() {
    each_backend(|db| async move {
        let (b, _) = replicas(&db).await;
        let declared = [
            gate("acme/web/prod", &[SLSA_PROVENANCE_V1]),
            gate("globex/web/prod", &[VULNS_V01]),
        ];
        let (plan, batch) = GateStore.plan(&b, &declared, false, &all).await.unwrap();
        assert_eq!(plan.create, ["acme/web/prod", "globex/web/prod"]);
        b.commit_batches(vec![batch]).await.unwrap();
        let stored = GateStore
            .get(&b, &parse_environment("acme/web/prod").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored, declared[0]);

        let (plan, batch) = GateStore.plan(&b, &declared, false, &all).await.unwrap();
        assert_eq!(plan.unchanged.len(), 2);
        assert!(batch.is_empty());

        // acme changes its gate and prunes: globex's is not acme's to delete.
        let acme = [gate("acme/web/prod", &[SLSA_PROVENANCE_V1, VULNS_V01])];
        let (plan, batch) = GateStore.plan(&b, &acme, true, &acme_only).await.unwrap();
        assert_eq!(plan.update, ["acme/web/prod"]);
        assert_eq!(plan.kept, ["globex/web/prod"]);
        assert!(plan.delete.is_empty());
        b.commit_batches(vec![batch]).await.unwrap();

        // Whoever manages everything prunes everything undeclared.
        let (plan, batch) = GateStore.plan(&b, &[], true, &all).await.unwrap();
        assert_eq!(plan.delete, ["acme/web/prod", "globex/web/prod"]);
        b.commit_batches(vec![batch]).await.unwrap();
        assert!(GateStore
            .get(&b, &parse_environment("globex/web/prod").unwrap())
            .await
            .unwrap()
            .is_none());

        let twice = [
            gate("acme/web/prod", &[SLSA_PROVENANCE_V1]),
            gate("acme/web/prod", &[VULNS_V01]),
        ];
        assert!(GateStore.plan(&b, &twice, false, &all).await.is_err());
    })
    .await;
}

#[tokio::test]
async fn gates_commit_with_another_domain_all_or_nothing() {
    each_backend(|db| async move {
        let (b, other) = replicas(&db).await;
        let declared = [gate("acme/web/prod", &[SLSA_PROVENANCE_V1])];

        // Another domain's write whose expectation fails sinks the gates.
        let (_, gates) = GateStore.plan(&b, &declared, false, &all).await.unwrap();
        let foreign = b
            .view("test-domain/")
            .unwrap()
            .batch(vec![BarrierWrite {
                key: "x".to_owned(),
                value: Some(SecretBytes::new(b"v".to_vec())),
                expect: Expect::Version(7),
            }])
            .unwrap();
        let err = b.commit_batches(vec![gates, foreign]).await.unwrap_err();
        assert!(matches!(err, SealError::Conflict { .. }), "{err:?}");
        let env = parse_environment("acme/web/prod").unwrap();
        assert!(GateStore.get(&b, &env).await.unwrap().is_none());

        // Two replicas plan the same creation; the second commit loses and
        // writes nothing, its plan being stale.
        let (_, first) = GateStore.plan(&b, &declared, false, &all).await.unwrap();
        let changed = [gate("acme/web/prod", &[VULNS_V01])];
        let (_, second) = GateStore.plan(&other, &changed, false, &all).await.unwrap();
        b.commit_batches(vec![first]).await.unwrap();
        let err = other.commit_batches(vec![second]).await.unwrap_err();
        assert!(matches!(err, SealError::Conflict { .. }), "{err:?}");
        assert_eq!(
            GateStore.get(&other, &env).await.unwrap().unwrap(),
            declared[0]
        );
    })
    .await;
}
