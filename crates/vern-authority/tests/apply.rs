//! Declaring clients in a file kept in Git: apply is idempotent, reports
//! its plan, writes all or nothing, and deletes only with prune.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use vern_authority::{
    ApplyGate, AuthError, Authority, AuthorityConfig, ClientKind, ClientRecord, ClientSpec,
};
use vern_core::ManualClock;
use vern_seal::Seal;

/// A caller that reaches every client.
struct Everything;

impl ApplyGate for Everything {
    fn manages(&self, _: &ClientRecord) -> bool {
        true
    }
    fn may_grant(&self, _: &str, _: &ClientKind, _: &[String]) -> Result<(), String> {
        Ok(())
    }
}

/// A caller that reaches only the services of tenant `acme`, and grants
/// no scope called `admin`.
struct AcmeOnly;

impl ApplyGate for AcmeOnly {
    fn manages(&self, r: &ClientRecord) -> bool {
        matches!(&r.kind, ClientKind::Service { tenant, .. } if tenant == "acme")
    }
    fn may_grant(&self, id: &str, kind: &ClientKind, scopes: &[String]) -> Result<(), String> {
        let acme = matches!(kind, ClientKind::Service { tenant, .. } if tenant == "acme");
        if acme && !scopes.iter().any(|s| s == "admin") {
            Ok(())
        } else {
            Err(format!("not {id}"))
        }
    }
}

fn svc(name: &str, scopes: &[&str]) -> ClientSpec {
    ClientSpec {
        tenant: Some("acme".into()),
        project: Some("web".into()),
        environment: Some("prod".into()),
        name: name.into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        ..ClientSpec::default()
    }
}

#[tokio::test]
async fn apply_is_idempotent_atomic_and_prunes_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let store = vern_store::open(&format!("sqlite:{}", dir.path().join("a.db").display()), 2)
        .await
        .unwrap();
    let clock = Arc::new(ManualClock::new(
        UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ));
    let seal = Seal::new(store, clock.clone()).await.unwrap();
    seal.init_unsealed(1, 1, &[], None).await.unwrap();
    let b = seal.barrier().unwrap();
    let auth = Authority::new(AuthorityConfig::new("https://vern.test"), clock);
    let operator = ClientSpec {
        name: "alice".into(),
        roles: vec!["admin".into()],
        ..ClientSpec::default()
    };

    let dry = auth
        .apply(
            &b,
            &[svc("api", &["read"]), operator.clone()],
            false,
            true,
            &Everything,
        )
        .await
        .unwrap();
    assert_eq!(dry.create, ["op.alice", "svc.acme.web.prod.api"]);
    assert!(dry.secrets.is_empty());
    assert!(
        auth.client_ids(&b).await.unwrap().is_empty(),
        "a dry run writes nothing"
    );

    let first = auth
        .apply(
            &b,
            &[svc("api", &["read"]), operator.clone()],
            false,
            false,
            &Everything,
        )
        .await
        .unwrap();
    assert_eq!(first.create.len(), 2);
    assert_eq!(first.secrets.len(), 2);
    let again = auth
        .apply(
            &b,
            &[svc("api", &["read"]), operator.clone()],
            false,
            false,
            &Everything,
        )
        .await
        .unwrap();
    assert!(again.create.is_empty() && again.update.is_empty() && again.delete.is_empty());
    assert_eq!(again.unchanged.len(), 2, "idempotent");

    auth.create_client(&b, &svc("manual", &[])).await.unwrap();
    let changed = auth
        .apply(
            &b,
            &[svc("api", &["read", "write"])],
            false,
            false,
            &Everything,
        )
        .await
        .unwrap();
    assert_eq!(
        changed.update,
        [(
            "svc.acme.web.prod.api".to_owned(),
            vec!["scopes".to_owned()]
        )]
    );
    assert_eq!(
        changed.kept,
        ["op.alice", "svc.acme.web.prod.manual"],
        "not deleted without prune"
    );
    assert_eq!(
        auth.client(&b, "svc.acme.web.prod.api")
            .await
            .unwrap()
            .scopes,
        ["read", "write"]
    );

    let pruned = auth
        .apply(
            &b,
            &[svc("api", &["read", "write"])],
            true,
            false,
            &Everything,
        )
        .await
        .unwrap();
    assert_eq!(pruned.delete, ["op.alice", "svc.acme.web.prod.manual"]);
    assert_eq!(
        auth.client_ids(&b).await.unwrap(),
        ["svc.acme.web.prod.api"]
    );

    // One bad spec: nothing at all is written.
    let bad = ClientSpec {
        tenant: Some("Bad Tenant".into()),
        ..svc("x", &[])
    };
    assert!(matches!(
        auth.apply(&b, &[svc("new", &[]), bad], true, false, &Everything)
            .await,
        Err(AuthError::InvalidClientSpec(_))
    ));
    // An unusable key is the declaration's fault too, not a token error.
    let bad_key = ClientSpec {
        jwks: vec![serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": "short"})],
        ..svc("keyed", &[])
    };
    assert!(
        matches!(auth.apply(&b, &[bad_key], false, false, &Everything).await, Err(AuthError::InvalidClientSpec(m)) if m.contains("jwks"))
    );
    let dup = auth
        .apply(
            &b,
            &[svc("new", &[]), svc("new", &[])],
            false,
            false,
            &Everything,
        )
        .await;
    assert!(matches!(dup, Err(AuthError::InvalidClientSpec(m)) if m.contains("twice")));
    assert_eq!(
        auth.client_ids(&b).await.unwrap(),
        ["svc.acme.web.prod.api"]
    );
}

#[tokio::test]
async fn apply_stays_within_the_callers_reach() {
    let dir = tempfile::tempdir().unwrap();
    let store = vern_store::open(&format!("sqlite:{}", dir.path().join("a.db").display()), 2)
        .await
        .unwrap();
    let clock = Arc::new(ManualClock::new(
        UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ));
    let seal = Seal::new(store, clock.clone()).await.unwrap();
    seal.init_unsealed(1, 1, &[], None).await.unwrap();
    let b = seal.barrier().unwrap();
    let auth = Authority::new(AuthorityConfig::new("https://vern.test"), clock);
    let globex = ClientSpec {
        tenant: Some("globex".into()),
        ..svc("api", &[])
    };
    let operator = ClientSpec {
        name: "boss".into(),
        roles: vec!["platform-admin".into()],
        ..ClientSpec::default()
    };
    auth.apply(
        &b,
        &[svc("api", &[]), globex.clone(), operator.clone()],
        false,
        false,
        &Everything,
    )
    .await
    .unwrap();

    // Pruning by a tenant's caller deletes only that tenant's clients.
    let plan = auth
        .apply(&b, &[svc("new", &[])], true, false, &AcmeOnly)
        .await
        .unwrap();
    assert_eq!(plan.delete, ["svc.acme.web.prod.api"]);
    assert_eq!(plan.kept, ["op.boss", "svc.globex.web.prod.api"]);

    // Another tenant's client, an operator or a scope it may not grant:
    // refused, nothing written.
    for spec in [
        ClientSpec {
            scopes: vec!["read".into()],
            ..globex
        },
        ClientSpec {
            roles: vec!["operator".into()],
            ..operator
        },
        svc("new", &["admin"]),
    ] {
        assert!(matches!(
            auth.apply(&b, &[spec], false, false, &AcmeOnly).await,
            Err(AuthError::Forbidden(_))
        ));
    }
    assert_eq!(
        auth.client(&b, "svc.acme.web.prod.new")
            .await
            .unwrap()
            .scopes,
        Vec::<String>::new()
    );
}
