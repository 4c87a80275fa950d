//! Tokens for clients that logged in some other way than at the token
//! endpoint (Vault logins): what they carry, how they are bound, and what
//! no login can get.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod common;

use common::{acme_service, authority, create_with_secret, verify_bearer, without_nonce, Env};
use vern_authority::{AuthError, ClientSpec, LoginGrant, Presented};

async fn env() -> Env {
    authority(without_nonce("https://vern.test:8200")).await
}

#[tokio::test]
async fn a_login_token_carries_the_clients_scopes_and_its_method() {
    let e = env().await;
    let spec = ClientSpec {
        token_ttl: Some(120),
        ..acme_service("app", &["secrets:read", "secrets:write"])
    };
    let (id, _) = create_with_secret(&e, &spec).await;
    let client = e.auth.client(&e.barrier, &id).await.unwrap();
    let grant = LoginGrant {
        client: &client,
        method: "approle",
        certificate: None,
    };
    let issued = e.auth.issue_for_login(&e.barrier, &grant).await.unwrap();
    assert_eq!(issued.token_type, "Bearer");
    assert_eq!(issued.expires_in, 120, "the client's own lifetime");
    assert_eq!(issued.scope, "secrets:read secrets:write");
    let claims = verify_bearer(&e, &issued.access_token).await.unwrap();
    assert_eq!(claims.client_id, id);
    assert_eq!(claims.jti, issued.jti);
    assert_eq!(claims.auth_method.as_deref(), Some("approle"));
    assert_eq!(claims.scopes, ["secrets:read", "secrets:write"]);
    assert_eq!(claims.exp - claims.iat, 120);

    // Revoked like any token, and refused once its client is deleted.
    e.auth
        .revoke(&e.barrier, &issued.access_token, |_| true)
        .await
        .unwrap();
    assert!(matches!(
        verify_bearer(&e, &issued.access_token).await,
        Err(AuthError::Revoked)
    ));
    let again = e.auth.issue_for_login(&e.barrier, &grant).await.unwrap();
    e.auth.delete_client(&e.barrier, &id).await.unwrap();
    assert!(matches!(
        verify_bearer(&e, &again.access_token).await,
        Err(AuthError::ClientChanged)
    ));
}

#[tokio::test]
async fn a_certificate_login_binds_the_token_to_the_certificate() {
    let e = env().await;
    let (id, _) = create_with_secret(&e, &acme_service("worker", &["secrets:read"])).await;
    let client = e.auth.client(&e.barrier, &id).await.unwrap();
    let (cert, other) = (b"certificate one".as_slice(), b"another one".as_slice());
    let issued = e
        .auth
        .issue_for_login(
            &e.barrier,
            &LoginGrant {
                client: &client,
                method: "cert",
                certificate: Some(cert),
            },
        )
        .await
        .unwrap();
    let token = &issued.access_token;
    let with = |peer: Option<&'static [u8]>| {
        e.auth
            .verify_access_with_certificate(&e.barrier, token, Presented::Bearer, peer)
    };
    assert_eq!(
        with(Some(cert)).await.unwrap().auth_method.as_deref(),
        Some("cert")
    );
    assert!(matches!(with(None).await, Err(AuthError::Claim(_))));
    assert!(matches!(with(Some(other)).await, Err(AuthError::Claim(_))));
}

#[tokio::test]
async fn no_login_gets_a_token_a_dpop_bound_client_must_bind() {
    let e = env().await;
    let spec = ClientSpec {
        dpop_bound: true,
        ..acme_service("bound", &["secrets:read"])
    };
    let (id, _) = create_with_secret(&e, &spec).await;
    let client = e.auth.client(&e.barrier, &id).await.unwrap();
    for certificate in [None, Some(b"a certificate".as_slice())] {
        let refused = e
            .auth
            .issue_for_login(
                &e.barrier,
                &LoginGrant {
                    client: &client,
                    method: "approle",
                    certificate,
                },
            )
            .await;
        assert!(
            matches!(refused, Err(AuthError::UnauthorizedClient(ref m)) if m.contains("DPoP")),
            "{refused:?}"
        );
    }
}

#[tokio::test]
async fn token_endpoint_tokens_name_no_auth_method() {
    let e = env().await;
    let (id, secret) = create_with_secret(&e, &acme_service("plain", &[])).await;
    let issued = e
        .auth
        .issue(
            &e.barrier,
            &common::request(common::secret_credentials(&id, &secret)),
        )
        .await
        .unwrap();
    let claims = verify_bearer(&e, &issued.access_token).await.unwrap();
    assert_eq!(claims.auth_method, None);
    assert_eq!(claims.jti, issued.jti);
}
