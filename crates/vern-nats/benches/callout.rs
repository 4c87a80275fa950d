//! Callout decisions per second in process: open a sealed request, verify
//! the server's signature, derive permissions and answer with a sealed
//! response holding a signed user JWT (what the callout does per connect
//! besides verifying the Vern token and asking Cedar).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nkeys::{KeyPair, XKey};
use vern_nats::callout::{open, respond, Grant};
use vern_nats::claims::{AuthorizationRequest, Claims, ConnectOptions, ServerId};
use vern_nats::perms::{derive, Declared};
use vern_nats::{jwt, NatsKeys};

fn bench(c: &mut Criterion) {
    let keys = NatsKeys::generate();
    let server = KeyPair::new_server();
    let server_xkey = XKey::new();
    let mut claims = Claims {
        iss: server.public_key(),
        aud: "nats-authorization-request".to_owned(),
        nats: AuthorizationRequest {
            server_id: ServerId {
                id: server.public_key(),
                xkey: server_xkey.public_key(),
                ..Default::default()
            },
            user_nkey: KeyPair::new_user().public_key(),
            connect_opts: ConnectOptions {
                auth_token: "token".to_owned(),
                ..Default::default()
            },
            claim_type: "authorization_request".to_owned(),
            version: 2,
            ..Default::default()
        },
        ..Default::default()
    };
    let token = jwt::encode(&mut claims, &server).unwrap();
    let vern = XKey::from_public_key(&keys.xkey_public()).unwrap();
    let payload = server_xkey.seal(token.as_bytes(), &vern).unwrap();
    let header = server_xkey.public_key();
    let declared = Declared::parse(
        &["orders.>".to_owned(), "billing.created".to_owned()],
        &["orders.>".to_owned()],
    )
    .unwrap();
    let mut g = c.benchmark_group("callout");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decision", |b| {
        b.iter(|| {
            let req = open(&keys, &payload, Some(&header)).unwrap();
            let grant = Grant {
                account: "acme".to_owned(),
                name: "svc.acme.web.prod.api".to_owned(),
                permissions: derive("svc.acme.web.prod.api", &declared, |_, _, s| {
                    !s.is_privileged()
                })
                .unwrap(),
                expires: 2_000_000_000,
            };
            respond(&keys, &req, Ok(&grant), 1_000_000_000).unwrap()
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
