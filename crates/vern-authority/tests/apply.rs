//! Declaring clients in a file kept in Git: apply is idempotent, reports
//! its plan, writes all or nothing, and deletes only with prune.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use vern_authority::{AuthError, Authority, AuthorityConfig, ClientSpec};
use vern_core::ManualClock;
use vern_seal::Seal;

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
        .apply(&b, &[svc("api", &["read"]), operator.clone()], false, true)
        .await
        .unwrap();
    assert_eq!(dry.create, ["op.alice", "svc.acme.web.prod.api"]);
    assert!(dry.secrets.is_empty());
    assert!(
        auth.client_ids(&b).await.unwrap().is_empty(),
        "a dry run writes nothing"
    );

    let first = auth
        .apply(&b, &[svc("api", &["read"]), operator.clone()], false, false)
        .await
        .unwrap();
    assert_eq!(first.create.len(), 2);
    assert_eq!(first.secrets.len(), 2);
    let again = auth
        .apply(&b, &[svc("api", &["read"]), operator.clone()], false, false)
        .await
        .unwrap();
    assert!(again.create.is_empty() && again.update.is_empty() && again.delete.is_empty());
    assert_eq!(again.unchanged.len(), 2, "idempotent");

    auth.create_client(&b, &svc("manual", &[])).await.unwrap();
    let changed = auth
        .apply(&b, &[svc("api", &["read", "write"])], false, false)
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
        .apply(&b, &[svc("api", &["read", "write"])], true, false)
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
        auth.apply(&b, &[svc("new", &[]), bad], true, false).await,
        Err(AuthError::InvalidClientSpec(_))
    ));
    // An unusable key is the declaration's fault too, not a token error.
    let bad_key = ClientSpec {
        jwks: vec![serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": "short"})],
        ..svc("keyed", &[])
    };
    assert!(
        matches!(auth.apply(&b, &[bad_key], false, false).await, Err(AuthError::InvalidClientSpec(m)) if m.contains("jwks"))
    );
    let dup = auth
        .apply(&b, &[svc("new", &[]), svc("new", &[])], false, false)
        .await;
    assert!(matches!(dup, Err(AuthError::InvalidClientSpec(m)) if m.contains("twice")));
    assert_eq!(
        auth.client_ids(&b).await.unwrap(),
        ["svc.acme.web.prod.api"]
    );
}
