//! A client's tokens follow its record: deleting a client, recreating its
//! id, or narrowing it with apply refuses the tokens issued before, on
//! Vern's API and in introspection, at the cost of one storage read.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{
    acme_service, authority_over, create_with_secret, request, secret_credentials, verify_bearer,
    without_nonce, Env, Everything, START,
};
use vern_authority::{AuthError, ClientSpec};
use vern_crypto::SecretBytes;
use vern_seal::{BarrierWrite, Expect};
use vern_store::testing::CountingStore;

/// An authority over a store that counts its point reads; returns the
/// count too.
async fn counted_env() -> (Env, Arc<AtomicUsize>) {
    let mut gets = None;
    let e = authority_over(without_nonce("https://vern.test"), |inner| {
        let counting = CountingStore::new(inner);
        gets = Some(counting.reads());
        Arc::new(counting)
    })
    .await;
    (e, gets.expect("the store was built"))
}

async fn env() -> Env {
    counted_env().await.0
}

fn spec(scopes: &[&str]) -> ClientSpec {
    acme_service("api", scopes)
}

async fn create(e: &Env, scopes: &[&str]) -> (String, SecretBytes) {
    create_with_secret(e, &spec(scopes)).await
}

async fn token(e: &Env, id: &str, secret: &SecretBytes) -> String {
    let req = request(secret_credentials(id, secret));
    e.auth.issue(&e.barrier, &req).await.unwrap().access_token
}

async fn active(e: &Env, token: &str) -> bool {
    e.auth
        .introspect(&e.barrier, token)
        .await
        .unwrap()
        .is_some()
}

#[tokio::test]
async fn deleting_a_client_refuses_its_tokens_at_once() {
    let e = env().await;
    let (id, secret) = create(&e, &["read"]).await;
    let t = token(&e, &id, &secret).await;
    verify_bearer(&e, &t).await.unwrap();
    assert!(active(&e, &t).await);

    e.auth.delete_client(&e.barrier, &id).await.unwrap();
    assert!(matches!(
        verify_bearer(&e, &t).await,
        Err(AuthError::ClientChanged)
    ));
    assert!(!active(&e, &t).await);
}

#[tokio::test]
async fn a_recreated_client_id_does_not_honour_older_tokens() {
    let e = env().await;
    let (id, secret) = create(&e, &["read"]).await;
    let old = token(&e, &id, &secret).await;
    e.clock.advance(Duration::from_secs(1));
    e.auth.delete_client(&e.barrier, &id).await.unwrap();
    let (again, secret) = create(&e, &["read"]).await;
    assert_eq!(again, id);
    assert!(matches!(
        verify_bearer(&e, &old).await,
        Err(AuthError::ClientChanged)
    ));
    assert!(!active(&e, &old).await);
    // The new incarnation's tokens work, also in the second it was made.
    let new = token(&e, &id, &secret).await;
    verify_bearer(&e, &new).await.unwrap();
    assert!(active(&e, &new).await);
}

#[tokio::test]
async fn applying_a_change_refuses_older_tokens_and_a_no_op_keeps_them() {
    let e = env().await;
    let (id, secret) = create(&e, &["read", "write"]).await;
    let t = token(&e, &id, &secret).await;

    // The same declaration changes nothing, so the token stays valid.
    e.clock.advance(Duration::from_secs(5));
    let plan = e
        .auth
        .apply(
            &e.barrier,
            &[spec(&["read", "write"])],
            false,
            false,
            &Everything,
        )
        .await
        .unwrap();
    assert_eq!(plan.unchanged, std::slice::from_ref(&id));
    verify_bearer(&e, &t).await.unwrap();

    // Narrowing the scopes stamps the record: the broader token is refused.
    e.clock.advance(Duration::from_secs(5));
    let plan = e
        .auth
        .apply(&e.barrier, &[spec(&["read"])], false, false, &Everything)
        .await
        .unwrap();
    assert_eq!(plan.update.len(), 1);
    let record = e.auth.client(&e.barrier, &id).await.unwrap();
    assert_eq!(record.updated, START + 10);
    assert_eq!(record.created, START);
    assert!(matches!(
        verify_bearer(&e, &t).await,
        Err(AuthError::ClientChanged)
    ));
    assert!(!active(&e, &t).await);
    let narrowed = token(&e, &id, &secret).await;
    assert_eq!(verify_bearer(&e, &narrowed).await.unwrap().scopes, ["read"]);
}

#[tokio::test]
async fn records_without_an_update_time_fall_back_to_creation() {
    let e = env().await;
    let (id, secret) = create(&e, &["read"]).await;
    // Rewrite the record as an older version of Vern stored it.
    let view = e.barrier.view("authority/").unwrap();
    let k = format!("clients/{id}");
    let stored = view.get(&k).await.unwrap().unwrap();
    let mut json: serde_json::Value = serde_json::from_slice(stored.value.expose()).unwrap();
    json.as_object_mut().unwrap().remove("updated").unwrap();
    view.commit(vec![BarrierWrite {
        key: k,
        value: Some(SecretBytes::new(serde_json::to_vec(&json).unwrap())),
        expect: Expect::Version(stored.version),
    }])
    .await
    .unwrap();
    let record = e.auth.client(&e.barrier, &id).await.unwrap();
    assert_eq!((record.updated, record.changed_at()), (0, START));
    let t = token(&e, &id, &secret).await;
    verify_bearer(&e, &t).await.unwrap();
}

#[tokio::test]
async fn verification_reads_storage_once_revocation_and_client_together() {
    let (e, gets) = counted_env().await;
    let (id, secret) = create(&e, &["read"]).await;
    let t = token(&e, &id, &secret).await;
    // Warm the key cache; from then on a verification reads the
    // revocation marker and the client record in one round trip, nothing
    // else.
    verify_bearer(&e, &t).await.unwrap();
    let before = gets.load(Ordering::SeqCst);
    verify_bearer(&e, &t).await.unwrap();
    assert_eq!(gets.load(Ordering::SeqCst) - before, 1);
}
