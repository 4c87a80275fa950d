//! Declaring clients in a file kept in Git: apply is idempotent, reports
//! its plan, writes all or nothing, and deletes only with prune.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod common;

use std::sync::Arc;

use common::{acme_service as svc, authority, Env, Everything};
use vern_authority::{
    ApplyGate, ApplyPlan, AuthError, AuthorityConfig, ClientKind, ClientRecord, ClientSpec,
};

/// An authority over a fresh store, issuing as `https://vern.test`.
async fn env() -> Env {
    authority(AuthorityConfig::new("https://vern.test")).await
}

/// Applies `specs` as a caller that reaches every client, deleting the
/// others with `prune`, only planning with `dry_run`.
async fn apply(
    e: &Env,
    specs: &[ClientSpec],
    prune: bool,
    dry_run: bool,
) -> Result<ApplyPlan, AuthError> {
    e.auth
        .apply(&e.barrier, specs, prune, dry_run, &Everything)
        .await
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

#[tokio::test]
async fn apply_is_idempotent_atomic_and_prunes_only_when_asked() {
    let e = env().await;
    let (b, auth) = (Arc::clone(&e.barrier), &e.auth);
    let operator = ClientSpec {
        name: "alice".into(),
        roles: vec!["admin".into()],
        ..ClientSpec::default()
    };

    let dry = apply(&e, &[svc("api", &["read"]), operator.clone()], false, true)
        .await
        .unwrap();
    assert_eq!(dry.create, ["op.alice", "svc.acme.web.prod.api"]);
    assert!(dry.secrets.is_empty());
    assert!(
        auth.client_ids(&b).await.unwrap().is_empty(),
        "a dry run writes nothing"
    );

    let first = apply(&e, &[svc("api", &["read"]), operator.clone()], false, false)
        .await
        .unwrap();
    assert_eq!(first.create.len(), 2);
    assert_eq!(first.secrets.len(), 2);
    let again = apply(&e, &[svc("api", &["read"]), operator.clone()], false, false)
        .await
        .unwrap();
    assert!(again.create.is_empty() && again.update.is_empty() && again.delete.is_empty());
    assert_eq!(again.unchanged.len(), 2, "idempotent");

    auth.create_client(&b, &svc("manual", &[])).await.unwrap();
    let changed = apply(&e, &[svc("api", &["read", "write"])], false, false)
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

    let pruned = apply(&e, &[svc("api", &["read", "write"])], true, false)
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
        apply(&e, &[svc("new", &[]), bad], true, false).await,
        Err(AuthError::InvalidClientSpec(_))
    ));
    // An unusable key is the declaration's fault too, not a token error.
    let bad_key = ClientSpec {
        jwks: vec![serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": "short"})],
        ..svc("keyed", &[])
    };
    assert!(
        matches!(apply(&e, &[bad_key], false, false).await, Err(AuthError::InvalidClientSpec(m)) if m.contains("jwks"))
    );
    let dup = apply(&e, &[svc("new", &[]), svc("new", &[])], false, false).await;
    assert!(matches!(dup, Err(AuthError::InvalidClientSpec(m)) if m.contains("twice")));
    assert_eq!(
        auth.client_ids(&b).await.unwrap(),
        ["svc.acme.web.prod.api"]
    );
}

#[tokio::test]
async fn apply_stays_within_the_callers_reach() {
    let e = env().await;
    let (b, auth) = (Arc::clone(&e.barrier), &e.auth);
    let globex = ClientSpec {
        tenant: Some("globex".into()),
        ..svc("api", &[])
    };
    let operator = ClientSpec {
        name: "boss".into(),
        roles: vec!["platform-admin".into()],
        ..ClientSpec::default()
    };
    apply(
        &e,
        &[svc("api", &[]), globex.clone(), operator.clone()],
        false,
        false,
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
