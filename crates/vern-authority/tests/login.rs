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
use vern_authority::{
    AuthError, ClientCredentials, ClientSpec, DpopCheck, LoginGrant, NonceRule, Presented,
};

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

/// Tokens and client credentials stay out of `Debug`, so that no log line
/// or error built from one can carry them.
#[tokio::test]
async fn debug_output_holds_no_token_or_credential() {
    let e = env().await;
    let (id, secret) = create_with_secret(&e, &acme_service("app", &[])).await;
    let client = e.auth.client(&e.barrier, &id).await.unwrap();
    let issued = e
        .auth
        .issue_for_login(
            &e.barrier,
            &LoginGrant {
                client: &client,
                method: "approle",
                certificate: None,
            },
        )
        .await
        .unwrap();
    let token = issued.access_token.as_str();
    let shown = format!("{issued:?}");
    assert!(!shown.contains(token), "{shown}");
    assert!(shown.contains(&issued.jti), "the token's id is no secret");

    let secret_text = std::str::from_utf8(secret.expose()).unwrap();
    let assertion = "eyJhbGciOiJFZERTQSJ9.eyJpc3MiOiJzdmMifQ.c2lnbmF0dXJl";
    let proofs = ["eyJ0eXAiOiJkcG9wK2p3dCJ9.e30.c2ln"];
    let shown = [
        format!("{:?}", common::secret_credentials(&id, &secret)),
        format!(
            "{:?}",
            ClientCredentials::Assertion {
                client_id: Some(id.clone()),
                assertion: assertion.to_owned(),
            }
        ),
        format!(
            "{:?}",
            DpopCheck {
                proofs: &proofs,
                method: "GET",
                url: "https://vern.test:8200/v1/sys/mounts",
                access_token: Some(token),
                expected_jkt: None,
                nonce: NonceRule::NotRequired,
            }
        ),
    ];
    for shown in shown {
        for secret in [secret_text, assertion, token] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }
}

/// A certificate (DER) carrying the URI or DNS SANs `sans`; the chain does
/// not matter here, the TLS handshake verified it.
fn certificate(sans: &[&str]) -> Vec<u8> {
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = sans
        .iter()
        .map(|s| match s.split_once("://") {
            Some(_) => rcgen::SanType::URI((*s).try_into().unwrap()),
            None => rcgen::SanType::DnsName((*s).try_into().unwrap()),
        })
        .collect();
    let key = rcgen::KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().der().to_vec()
}

fn with_san(name: &str, san: &str) -> ClientSpec {
    ClientSpec {
        tls_client_auth_san: Some(san.to_owned()),
        ..acme_service(name, &["secrets:read"])
    }
}

const WORKER: &str = "spiffe://acme.test/web/prod/worker";

#[tokio::test]
async fn a_certificate_finds_the_client_registered_with_its_san() {
    let e = env().await;
    let id = e
        .auth
        .create_client(&e.barrier, &with_san("worker", WORKER))
        .await
        .unwrap()
        .record
        .client_id;
    e.auth
        .create_client(&e.barrier, &with_san("other", "other.acme.test"))
        .await
        .unwrap();
    let cert = certificate(&["worker.acme.test", WORKER]);
    let find = |name: Option<&'static str>| e.auth.certificate_client(&e.barrier, &cert, name);
    assert_eq!(find(None).await.unwrap().client_id, id);
    assert_eq!(
        find(Some("svc.acme.web.prod.worker"))
            .await
            .unwrap()
            .client_id,
        id
    );
    for wrong in [
        Some("svc.acme.web.prod.other"),
        Some("svc.acme.web.prod.nobody"),
    ] {
        assert!(
            matches!(find(wrong).await, Err(AuthError::InvalidClient)),
            "{wrong:?}"
        );
    }
    let stranger = certificate(&["spiffe://acme.test/web/prod/stranger"]);
    assert!(matches!(
        e.auth.certificate_client(&e.barrier, &stranger, None).await,
        Err(AuthError::InvalidClient)
    ));
    assert!(matches!(
        e.auth
            .certificate_client(&e.barrier, b"not DER", None)
            .await,
        Err(AuthError::InvalidClient)
    ));
}

#[tokio::test]
async fn the_san_index_follows_apply_and_deletion() {
    let e = env().await;
    let plan = e
        .auth
        .apply(
            &e.barrier,
            &[with_san("worker", WORKER)],
            false,
            false,
            &common::Everything,
        )
        .await
        .unwrap();
    assert_eq!(plan.create, ["svc.acme.web.prod.worker"]);
    let old = certificate(&[WORKER]);
    let e = &e;
    let find = |cert: Vec<u8>| async move {
        e.auth
            .certificate_client(&e.barrier, &cert, None)
            .await
            .map(|c| c.client_id)
    };
    assert_eq!(find(old.clone()).await.unwrap(), "svc.acme.web.prod.worker");

    // Moved to another SAN: the old certificate finds nothing.
    let moved = "spiffe://acme.test/web/prod/worker-v2";
    e.auth
        .apply(
            &e.barrier,
            &[with_san("worker", moved)],
            false,
            false,
            &common::Everything,
        )
        .await
        .unwrap();
    assert!(matches!(
        find(old.clone()).await,
        Err(AuthError::InvalidClient)
    ));
    assert_eq!(
        find(certificate(&[moved])).await.unwrap(),
        "svc.acme.web.prod.worker"
    );

    // Two clients with one SAN: the login must say which.
    e.auth
        .create_client(&e.barrier, &with_san("twin", moved))
        .await
        .unwrap();
    assert!(matches!(
        find(certificate(&[moved])).await,
        Err(AuthError::UnauthorizedClient(m)) if m.contains("name")
    ));

    // Pruned and deleted clients are gone from the index.
    e.auth
        .apply(
            &e.barrier,
            &[with_san("twin", moved)],
            true,
            false,
            &common::Everything,
        )
        .await
        .unwrap();
    assert_eq!(
        find(certificate(&[moved])).await.unwrap(),
        "svc.acme.web.prod.twin"
    );
    e.auth
        .delete_client(&e.barrier, "svc.acme.web.prod.twin")
        .await
        .unwrap();
    assert!(matches!(
        find(certificate(&[moved])).await,
        Err(AuthError::InvalidClient)
    ));
}

#[tokio::test]
async fn clients_stored_before_the_san_index_are_found() {
    let e = env().await;
    // A client as an older version stored it: its record, no index entry.
    let mut record = e
        .auth
        .create_client(&e.barrier, &acme_service("template", &[]))
        .await
        .unwrap()
        .record;
    record.client_id = "svc.acme.web.prod.legacy".to_owned();
    record.name = "legacy".to_owned();
    record.tls_client_auth_san = Some(WORKER.to_owned());
    e.barrier
        .view("authority/")
        .unwrap()
        .commit(vec![vern_seal::BarrierWrite {
            key: format!("clients/{}", record.client_id),
            value: Some(vern_crypto::SecretBytes::new(
                serde_json::to_vec(&record).unwrap(),
            )),
            expect: vern_seal::Expect::Absent,
        }])
        .await
        .unwrap();
    let found = e
        .auth
        .certificate_client(&e.barrier, &certificate(&[WORKER]), None)
        .await
        .unwrap();
    assert_eq!(found.client_id, "svc.acme.web.prod.legacy");
}
