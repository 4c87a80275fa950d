use nkeys::{KeyPair, XKey};

use super::*;
use crate::claims::{AuthorizationRequest, ConnectOptions, ServerId};
use crate::perms::{derive, Declared};

struct Server {
    key: KeyPair,
    xkey: XKey,
}

fn server() -> Server {
    Server {
        key: KeyPair::new_server(),
        xkey: XKey::new(),
    }
}

fn request(s: &Server, signer: &KeyPair, token: &str) -> String {
    let mut c = Claims {
        iss: signer.public_key(),
        sub: "issuer".to_owned(),
        aud: "nats-authorization-request".to_owned(),
        iat: 1,
        nats: AuthorizationRequest {
            server_id: ServerId {
                id: s.key.public_key(),
                xkey: s.xkey.public_key(),
                ..Default::default()
            },
            user_nkey: KeyPair::new_user().public_key(),
            connect_opts: ConnectOptions {
                auth_token: token.to_owned(),
                ..Default::default()
            },
            claim_type: "authorization_request".to_owned(),
            version: 2,
            ..Default::default()
        },
        ..Default::default()
    };
    jwt::encode(&mut c, signer).unwrap()
}

fn sealed(keys: &NatsKeys, s: &Server, jwt: &str) -> Vec<u8> {
    let vern = XKey::from_public_key(&keys.xkey_public()).unwrap();
    s.xkey.seal(jwt.as_bytes(), &vern).unwrap()
}

#[test]
fn sealed_request_gets_a_sealed_user_jwt() {
    let keys = NatsKeys::generate();
    let s = server();
    let payload = sealed(&keys, &s, &request(&s, &s.key, "tok"));
    let req = open(&keys, &payload, Some(&s.xkey.public_key())).unwrap();
    assert_eq!(req.token(), Some("tok"));
    let declared = Declared::parse(&["orders.>".to_owned()], &[]).unwrap();
    let grant = Grant {
        account: "acme".to_owned(),
        name: "svc.acme.web.prod.api".to_owned(),
        permissions: derive("svc.acme.web.prod.api", &declared, |_, _, _| true).unwrap(),
        expires: 2000,
    };
    let reply = respond(&keys, &req, Ok(&grant), 1000).unwrap();
    let vern = XKey::from_public_key(&keys.xkey_public()).unwrap();
    let plain = s.xkey.open(&reply, &vern).unwrap();
    let resp: Claims<AuthorizationResponse> =
        jwt::decode(std::str::from_utf8(&plain).unwrap()).unwrap();
    assert_eq!(resp.aud, s.key.public_key());
    assert_eq!(resp.sub, req.claims.nats.user_nkey);
    assert_eq!(resp.iss, keys.issuer_public());
    let user: Claims<User> = jwt::decode(&resp.nats.jwt).unwrap();
    assert_eq!(user.aud, "acme");
    assert_eq!(user.sub, req.claims.nats.user_nkey);
    assert_eq!(user.exp, 2000);
    assert_eq!(user.nats.publish.allow, vec!["orders.>"]);
    assert_eq!(
        user.nats.subscribe.allow,
        vec!["_INBOX.svc.acme.web.prod.api.>"]
    );
    assert!(user.nats.publish.deny.is_empty());
}

#[test]
fn nothing_allowed_denies_everything() {
    let keys = NatsKeys::generate();
    let s = server();
    let req = open(&keys, request(&s, &s.key, "t").as_bytes(), None).unwrap();
    let grant = Grant {
        account: "acme".to_owned(),
        name: "x".to_owned(),
        permissions: crate::perms::Permissions::default(),
        expires: 5,
    };
    let reply = respond(&keys, &req, Ok(&grant), 1).unwrap();
    let resp: Claims<AuthorizationResponse> =
        jwt::decode(std::str::from_utf8(&reply).unwrap()).unwrap();
    let user: Claims<User> = jwt::decode(&resp.nats.jwt).unwrap();
    assert_eq!(user.nats.publish.deny, vec![">"]);
    assert_eq!(user.nats.subscribe.deny, vec![">"]);
}

#[test]
fn refusals_carry_the_error_and_no_jwt() {
    let keys = NatsKeys::generate();
    let s = server();
    let req = open(&keys, request(&s, &s.key, "").as_bytes(), None).unwrap();
    assert_eq!(req.token(), None);
    let reply = respond(&keys, &req, Err("no token"), 1).unwrap();
    let resp: Claims<AuthorizationResponse> =
        jwt::decode(std::str::from_utf8(&reply).unwrap()).unwrap();
    assert_eq!(resp.nats.error, "no token");
    assert!(resp.nats.jwt.is_empty());
}

#[test]
fn untrusted_requests_are_refused() {
    let keys = NatsKeys::generate();
    let s = server();
    // Signed by a key that is not the server's it names.
    let other = KeyPair::new_server();
    assert!(open(&keys, request(&s, &other, "t").as_bytes(), None).is_err());
    // Sealed to another xkey.
    let stranger = NatsKeys::generate();
    let payload = sealed(&stranger, &s, &request(&s, &s.key, "t"));
    assert!(open(&keys, &payload, Some(&s.xkey.public_key())).is_err());
    // Plain text where a sealed request was announced, and garbage.
    assert!(open(
        &keys,
        request(&s, &s.key, "t").as_bytes(),
        Some(&s.xkey.public_key())
    )
    .is_err());
    assert!(open(&keys, b"not a jwt", None).is_err());
    assert!(open(&keys, &[0xff, 0xfe], None).is_err());
    assert!(open(&keys, b"x", Some("not an xkey")).is_err());
}
