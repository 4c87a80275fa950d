//! The cache of verified tokens skips only the signature check and the
//! parse: a token seen before is still refused at once when it is revoked,
//! expires, or its client goes, and any other bytes are verified in full.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod common;

use std::time::Duration;

use common::{
    acme_service, authority, create_with_secret, request, secret_credentials, verify_bearer,
    without_nonce, Env,
};
use vern_authority::{AuthError, TokenRequest};

async fn env_and_token() -> (Env, String, String) {
    let e = authority(without_nonce("https://vern.test:8200")).await;
    let (id, secret) = create_with_secret(&e, &acme_service("api", &["secrets:read"])).await;
    let req = TokenRequest {
        scope: Some("secrets:read"),
        ..request(secret_credentials(&id, &secret))
    };
    let token = e.auth.issue(&e.barrier, &req).await.unwrap().access_token;
    (e, id, token)
}

/// Replaces the signature's character at `at` with another one.
fn alter_signature(token: &str, at: usize) -> String {
    let (head, sig) = token.rsplit_once('.').unwrap();
    let mut sig: Vec<char> = sig.chars().collect();
    sig[at] = if sig[at] == 'A' { 'B' } else { 'A' };
    format!("{head}.{}", sig.into_iter().collect::<String>())
}

#[tokio::test]
async fn a_forged_signature_beside_a_cached_token_is_verified_in_full() {
    let (e, _, token) = env_and_token().await;
    for _ in 0..3 {
        verify_bearer(&e, &token).await.unwrap();
    }
    for at in [0, 10, 40] {
        let forged = alter_signature(&token, at);
        assert!(
            matches!(
                verify_bearer(&e, &forged).await,
                Err(AuthError::Signature | AuthError::Malformed(_))
            ),
            "a forged signature at {at} must be refused"
        );
    }
    // Other claims under the cached token's signature are refused too.
    let (head, sig) = token.rsplit_once('.').unwrap();
    let (header, _) = head.split_once('.').unwrap();
    let other = format!("{header}.eyJzdWIiOiJyb290In0.{sig}");
    assert!(verify_bearer(&e, &other).await.is_err());
    verify_bearer(&e, &token).await.unwrap();
}

#[tokio::test]
async fn a_cached_token_is_refused_at_once_when_revoked() {
    let (e, id, token) = env_and_token().await;
    verify_bearer(&e, &token).await.unwrap();
    e.auth
        .revoke(&e.barrier, &token, |c| c.client_id == id)
        .await
        .unwrap();
    assert!(matches!(
        verify_bearer(&e, &token).await,
        Err(AuthError::Revoked)
    ));
}

#[tokio::test]
async fn a_cached_token_is_refused_at_once_when_its_client_is_deleted() {
    let (e, id, token) = env_and_token().await;
    verify_bearer(&e, &token).await.unwrap();
    e.auth.delete_client(&e.barrier, &id).await.unwrap();
    assert!(matches!(
        verify_bearer(&e, &token).await,
        Err(AuthError::ClientChanged)
    ));
}

#[tokio::test]
async fn a_cached_token_expires_on_time() {
    let (e, _, token) = env_and_token().await;
    let claims = verify_bearer(&e, &token).await.unwrap();
    let leeway = e.auth.config().leeway;
    let life = claims.exp - claims.iat;
    e.clock.advance(Duration::from_secs(life + leeway));
    verify_bearer(&e, &token).await.unwrap();
    e.clock.advance(Duration::from_secs(1));
    assert!(matches!(
        verify_bearer(&e, &token).await,
        Err(AuthError::Expired)
    ));
}
