//! Least privilege through the real binary: roles and scopes decide, no
//! chain of management calls escalates, the decision API answers a caller
//! about itself, and a timed-out write is reported as what was committed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Creates a client with `token`; returns the status and the body.
async fn create(s: &Server, token: &str, spec: Value) -> (u16, Value) {
    post_as(s, token, "/v1/auth/clients", &spec).await
}

/// Creates each client with `token` and checks the status it gets.
async fn expect_creations(s: &Server, token: &str, cases: &[(Value, u16, &str)]) {
    for (spec, status, what) in cases {
        let (st, body) = create(s, token, spec.clone()).await;
        assert_eq!(st, *status, "{what}: {body}");
    }
}

async fn send(s: &Server, token: &str, method: &str, path: &str, body: Option<Value>) -> u16 {
    let mut r = client()
        .request(method.parse().unwrap(), s.url(path))
        .header("x-vault-token", token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    status_of(r).await
}

/// Sends each request (token, method, path, body) and checks the status it
/// gets.
async fn expect_statuses(s: &Server, cases: &[(&str, &str, &str, Option<Value>, u16)]) {
    for (token, method, path, body, status) in cases {
        let got = send(s, token, method, path, body.clone()).await;
        assert_eq!(got, *status, "{method} {path}");
    }
}

fn operator(name: &str, roles: &[&str]) -> Value {
    json!({"name": name, "roles": roles})
}

#[tokio::test]
async fn operators_cannot_escalate_through_client_management() {
    let dir = temp();
    let s = dev_server(&path_str(dir.path()), &[]);
    let root = "root";
    assert_eq!(
        write_secret(&s, root, "globex/web/prod/db", json!({"pw": "x"})).await,
        200
    );

    // An operator with an unrelated role mints nothing.
    let plain = client_token(&s, operator("viewer", &["operator"])).await;
    expect_creations(
        &s,
        &plain,
        &[
            (
                service("globex", "spy", &["secrets:read"]),
                403,
                "the operator role creates no service",
            ),
            (
                operator("boss", &["platform-admin"]),
                403,
                "nor a stronger operator",
            ),
        ],
    )
    .await;

    // A platform administrator manages clients, but gives nobody what it
    // does not hold: no secret scopes, no audit reading, no custom roles.
    let admin = client_token(&s, operator("admin", &["platform-admin"])).await;
    let (st, body) = create(&s, &admin, service("globex", "spy", &["secrets:read"])).await;
    assert_eq!(st, 403, "{body}");
    assert!(
        body["errors"][0].as_str().unwrap().contains("secret."),
        "{body}"
    );
    expect_creations(
        &s,
        &admin,
        &[
            (operator("x", &["security-auditor"]), 403, "an auditor"),
            (operator("x", &["secrets-reader"]), 403, "a custom role"),
            (
                operator("x", &["tenant-admin"]),
                403,
                "a tenant role without a tenant",
            ),
            (
                json!({"name": "ga", "tenant": "globex", "roles": ["tenant-admin"]}),
                403,
                "a tenant administrator",
            ),
            (
                operator("peer", &["platform-admin", "operator"]),
                200,
                "what it holds, it may grant",
            ),
        ],
    )
    .await;
    let (st, bare) = create(&s, &admin, service("globex", "bare", &["orders:write"])).await;
    assert_eq!(st, 200, "a tenant's own scopes are not Vern's powers");

    // apply cannot widen an existing client's scopes either; nothing is
    // written.
    let widened =
        json!({"clients": [service("globex", "bare", &["orders:write", "secrets:read"])]});
    assert_eq!(post_as(&s, &admin, "/v1/auth/apply", &widened).await.0, 403);
    let r = get_as(&s, root, "/v1/auth/clients/svc.globex.web.prod.bare").await;
    assert_eq!(r["data"]["scopes"], json!(["orders:write"]));

    // Nobody it made reads the secret.
    let spy = access_token(
        &s,
        "svc.globex.web.prod.bare",
        bare["data"]["client_secret"].as_str().unwrap(),
    )
    .await;
    assert_eq!(
        send(&s, &spy, "GET", "/v1/secret/data/globex/web/prod/db", None).await,
        403
    );
}

#[tokio::test]
async fn tenant_administrators_stay_in_their_tenant() {
    let dir = temp();
    let s = dev_server(&path_str(dir.path()), &[]);
    let ta = client_token(
        &s,
        json!({"name": "erin", "tenant": "acme", "roles": ["tenant-admin"]}),
    )
    .await;
    let (st, body) = create(
        &s,
        &ta,
        service("acme", "api", &["secrets:read", "secrets:write"]),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["data"]["client_id"], "svc.acme.web.prod.api");
    expect_creations(
        &s,
        &ta,
        &[
            (
                service("globex", "api", &[]),
                403,
                "another tenant's service",
            ),
            (
                json!({"name": "x", "tenant": "globex", "roles": ["tenant-admin"]}),
                403,
                "another tenant's administrator",
            ),
            (
                operator("x", &["platform-admin"]),
                403,
                "a platform operator",
            ),
        ],
    )
    .await;
    let (st, body) = create(
        &s,
        &ta,
        json!({"name": "frank", "tenant": "acme", "roles": ["tenant-admin"]}),
    )
    .await;
    assert_eq!(st, 200, "a peer in its own tenant: {body}");
    assert_eq!(body["data"]["client_id"], "op.acme.frank");

    // Its own tenant's secrets, not another's; its tenant's audit records,
    // not the platform's or another tenant's.
    let write = || Some(json!({"data": {"a": "1"}}));
    let (own, other) = (
        "/v1/secret/data/acme/web/prod/db",
        "/v1/secret/data/globex/web/prod/db",
    );
    expect_statuses(
        &s,
        &[
            (&ta, "POST", own, write(), 200),
            ("root", "POST", other, write(), 200),
            (&ta, "GET", other, None, 404),
            (&ta, "PUT", "/v1/sys/seal", None, 403),
            (&ta, "GET", "/v1/audit/records", None, 200),
            (&ta, "GET", "/v1/audit/records?tenant=globex", None, 403),
        ],
    )
    .await;

    // It lists only its tenant's clients; pruning leaves the others.
    assert_eq!(
        create(&s, "root", service("globex", "keep", &[])).await.0,
        200
    );
    let list = get_as(&s, &ta, "/v1/auth/clients").await;
    let keys = list["data"]["keys"].as_array().unwrap();
    assert!(
        keys.iter().all(|k| k.as_str().unwrap().contains(".acme.")),
        "{list}"
    );
    let prune = json!({"clients": [], "prune": true});
    assert_eq!(post_as(&s, &ta, "/v1/auth/apply", &prune).await.0, 200);
    assert_eq!(
        send(
            &s,
            "root",
            "GET",
            "/v1/auth/clients/svc.globex.web.prod.keep",
            None
        )
        .await,
        200
    );

    // A service it made cannot manage clients in turn.
    let api = client_token(&s, service("acme", "api2", &SECRET_SCOPES)).await;
    assert_eq!(create(&s, &api, service("acme", "child", &[])).await.0, 403);
}

#[tokio::test]
async fn token_scopes_decide_secret_actions() {
    let dir = temp();
    let s = dev_server(&path_str(dir.path()), &[]);
    let path = "acme/web/prod/db";
    assert_eq!(write_secret(&s, "root", path, json!({"a": "1"})).await, 200);
    let (data, meta) = (
        format!("/v1/secret/data/{path}"),
        format!("/v1/secret/metadata/{path}"),
    );
    let (destroy, delete) = (
        format!("/v1/secret/destroy/{path}"),
        format!("/v1/secret/delete/{path}"),
    );
    let write = |a: &str| Some(json!({"data": {"a": a}}));
    let versions = || Some(json!({"versions": [1]}));
    let ro = client_token(&s, service("acme", "ro", &["secrets:read"])).await;
    expect_statuses(
        &s,
        &[
            (&ro, "GET", &data, None, 200),
            (&ro, "GET", &meta, None, 200),
            (&ro, "LIST", "/v1/secret/metadata/acme/web/prod", None, 200),
            (&ro, "POST", &data, write("2"), 403),
            (&ro, "PATCH", &data, write("2"), 403),
            (&ro, "DELETE", &data, None, 403),
            (&ro, "POST", &destroy, versions(), 403),
            (&ro, "POST", &delete, versions(), 403),
            (&ro, "DELETE", &meta, None, 403),
        ],
    )
    .await;
    assert_eq!(
        send(&s, &ro, "GET", &data, None).await,
        200,
        "nothing changed"
    );
    let wo = client_token(&s, service("acme", "wo", &["secrets:write"])).await;
    expect_statuses(
        &s,
        &[
            (&wo, "POST", &data, write("3"), 200),
            (&wo, "GET", &data, None, 403),
            (&wo, "DELETE", &meta, None, 403),
        ],
    )
    .await;
}

#[tokio::test]
async fn the_decision_api_answers_a_service_about_itself_only() {
    let dir = temp();
    let s = dev_server(&path_str(dir.path()), &[]);
    let acme = client_token(&s, service("acme", "api", &["secrets:read"])).await;
    let ask = async |principal: &str, action: &str, resource: &str| -> Value {
        json_of(
            client()
                .post(s.url("/v1/authz/check"))
                .header("x-vault-token", &acme)
                .json(&json!({"principal": principal, "action": action, "resource": resource})),
        )
        .await
    };
    let other = ask(
        "service:svc.globex.web.prod.api@globex/web/prod#secrets:read",
        "secret.read",
        "secret:globex/web/prod/db",
    )
    .await;
    assert_eq!(other["decision"], "deny");
    assert_eq!(
        other["policies"],
        json!([]),
        "no policy names about others: {other}"
    );
    assert!(other["errors"][0]
        .as_str()
        .unwrap()
        .contains("only about yourself"));
    // About itself, with its real scopes whatever the request claims.
    let me = "service:svc.acme.web.prod.api@acme/web/prod";
    let own = ask(
        &format!("{me}#secrets:write"),
        "secret.write",
        "secret:acme/web/prod/db",
    )
    .await;
    assert_eq!(own["decision"], "deny", "{own}");
    let own = ask(me, "secret.read", "secret:acme/web/prod/db").await;
    assert_eq!(own["decision"], "allow", "{own}");
}

/// Holds SQLite's write lock from another process for `secs` seconds.
fn hold_write_lock(db: &std::path::Path, secs: f64) -> std::process::Child {
    let script = format!(
        "import sqlite3, sys, time\nc = sqlite3.connect(sys.argv[1], isolation_level=None)\nc.execute('BEGIN IMMEDIATE')\nprint('locked', flush=True)\ntime.sleep({secs})\nc.execute('COMMIT')\n"
    );
    let mut child = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(db)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "locked");
    child
}

#[tokio::test]
async fn a_write_stuck_on_slow_storage_is_reported_as_committed() {
    let dir = temp();
    let d = path_str(dir.path());
    // Shared locking lets another process hold the write lock.
    let s = dev_server(
        &d,
        &["--request-timeout", "1", "--sqlite-locking", "shared"],
    );
    let mut locker = hold_write_lock(&dir.path().join("vern.db"), 2.5);
    let status = status_of(
        client()
            .post(s.url("/v1/secret/data/acme/web/prod/slow"))
            .header("x-vault-token", "root")
            .header("x-request-id", "slow-write-1")
            .json(&json!({"data": {"a": "1"}})),
    )
    .await;
    let _ = locker.wait();
    let stored = send(
        &s,
        "root",
        "GET",
        "/v1/secret/data/acme/web/prod/slow",
        None,
    )
    .await;
    // Either the write was committed and the client was told so, or it was
    // abandoned and nothing exists: never a failure over a committed write.
    assert!(
        (status == 200 && stored == 200) || (status >= 500 && stored == 404),
        "client got {status}, the secret answers {stored}"
    );
    // The audit record says what the client got.
    let mut recorded = None;
    eventually(Duration::from_secs(10), "the record", async || {
        recorded = records_of(&s, "slow-write-1")
            .await
            .first()
            .map(|r| r["event"]["status"].as_u64().unwrap());
        recorded.is_some() || status >= 500
    })
    .await;
    if let Some(recorded) = recorded {
        assert_eq!(recorded, u64::from(status));
    }
}

#[tokio::test]
async fn tenant_operators_introspect_and_revoke_only_their_tenants_tokens() {
    let dir = temp();
    let s = dev_server(&path_str(dir.path()), &[]);
    let (admin, admin_secret) = create_client(
        &s,
        json!({"name": "erin", "tenant": "acme", "roles": ["tenant-admin"]}),
    )
    .await;
    let acme = client_token(&s, service("acme", "api", &["secrets:read"])).await;
    let globex = client_token(&s, service("globex", "api", &["secrets:read"])).await;
    let call = async |endpoint: &str, token: &str| {
        client()
            .post(s.url(endpoint))
            .basic_auth(&admin, Some(&admin_secret))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap()
    };
    let seen: Value = call("/oauth2/introspect", &globex)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        seen,
        json!({"active": false}),
        "another tenant's token is not shown"
    );
    let seen: Value = call("/oauth2/introspect", &acme)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(seen["active"], true);
    assert_eq!(call("/oauth2/revoke", &globex).await.status(), 400);
    let read = "/v1/secret/metadata/globex/web/prod";
    assert_ne!(
        status_of(
            client()
                .request("LIST".parse().unwrap(), s.url(read))
                .bearer_auth(&globex)
        )
        .await,
        401,
        "another tenant's token still works"
    );
    assert_eq!(call("/oauth2/revoke", &acme).await.status(), 200);
    assert_eq!(
        status_of(
            client()
                .get(s.url("/v1/secret/data/acme/web/prod/x"))
                .bearer_auth(&acme)
        )
        .await,
        401,
        "its own tenant's token is revoked"
    );
}

/// Every role reaches exactly the platform routes its table row names:
/// each route tried by a platform administrator, a security auditor, an
/// `operator`, acme's tenant administrator and an acme service holding
/// every secret scope.
#[tokio::test]
async fn each_role_reaches_exactly_its_routes() {
    let dir = temp();
    let s = dev_server(&path_str(dir.path()), &[]);
    assert_eq!(
        write_secret(&s, "root", "acme/web/prod/db", json!({"a": "1"})).await,
        200
    );
    let who = [
        (
            "platform-admin",
            client_token(&s, operator("pa", &["platform-admin"])).await,
        ),
        (
            "security-auditor",
            client_token(&s, operator("sa", &["security-auditor"])).await,
        ),
        (
            "operator",
            client_token(&s, operator("op", &["operator"])).await,
        ),
        (
            "tenant-admin",
            client_token(
                &s,
                json!({"name": "ta", "tenant": "acme", "roles": ["tenant-admin"]}),
            )
            .await,
        ),
        (
            "service",
            client_token(&s, service("acme", "api", &SECRET_SCOPES)).await,
        ),
    ];
    let hash = Some(json!({"input": "x"}));
    // (method, path, body, statuses for the principals above, in order)
    let routes: Vec<(&str, &str, Option<Value>, [u16; 5])> = vec![
        ("GET", "/v1/sys/policies", None, [200, 200, 403, 403, 403]),
        (
            "POST",
            "/v1/sys/policies/reload",
            None,
            [200, 403, 403, 403, 403],
        ),
        (
            "POST",
            "/v1/auth/keys/rotate",
            None,
            [200, 403, 403, 403, 403],
        ),
        ("GET", "/v1/sys/key-status", None, [200, 403, 200, 403, 403]),
        ("GET", "/v1/secret/config", None, [200, 403, 403, 403, 403]),
        ("GET", "/v1/audit/records", None, [403, 200, 403, 200, 403]),
        ("POST", "/v1/audit/hash", hash, [403, 200, 403, 403, 403]),
        ("GET", "/v1/auth/clients", None, [200, 200, 200, 200, 403]),
        (
            "GET",
            "/v1/secret/data/acme/web/prod/db",
            None,
            [404, 404, 404, 200, 200],
        ),
        (
            "GET",
            "/v1/secret/metadata/acme/web/prod/db",
            None,
            [200, 404, 200, 200, 200],
        ),
        ("PUT", "/v1/sys/seal", None, [0, 403, 403, 403, 403]),
    ];
    for (method, path, body, statuses) in &routes {
        for ((name, token), status) in who.iter().zip(statuses) {
            if *status == 0 {
                continue; // allowed, and not worth sealing the server for
            }
            let got = send(&s, token, method, path, body.clone()).await;
            assert_eq!(got, *status, "{name}: {method} {path}");
        }
    }
}
