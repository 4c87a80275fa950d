//! Vault's API as Vault clients meet it, through the real binary: an
//! AppRole login gives a service a Vern access token in Vault's `auth`
//! block, under the token endpoint's lockouts; the token reads its own
//! environment and nothing else; the token endpoints describe, refuse to
//! renew and revoke it; mount discovery answers KV version 2 to callers
//! who work there; JSON bodies are read whatever their content type, and
//! `list` takes Vault's boolean forms. Every login and refusal is on
//! record.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use common::*;
use serde_json::{json, Value};

/// `POST /v1/auth/approle/login` with `role_id` and `secret_id`: the status
/// and the JSON answer.
async fn approle(s: &Server, role_id: &str, secret_id: &str) -> (u16, Value) {
    status_and_json(
        client()
            .post(s.url("/v1/auth/approle/login"))
            .json(&json!({"role_id": role_id, "secret_id": secret_id})),
    )
    .await
}

#[tokio::test]
async fn approle_login_gives_a_service_its_own_environment() {
    let dir = temp();
    let s = dev_server(&path_str(dir.path()), &[]);
    let (id, secret) = create_client(&s, service("acme", "app", &SECRET_SCOPES)).await;
    let (status, login) = approle(&s, &id, &secret).await;
    assert_eq!(status, 200, "{login}");
    let auth = &login["auth"];
    let token = auth["client_token"].as_str().unwrap();
    assert_eq!(token.matches('.').count(), 2, "a Vern access token (JWT)");
    assert_eq!(auth["policies"], json!(SECRET_SCOPES));
    assert_eq!(auth["token_policies"], auth["policies"]);
    assert_eq!(
        auth["metadata"],
        json!({"client_id": id, "tenant": "acme", "project": "web", "environment": "prod"})
    );
    assert_eq!(auth["lease_duration"], 300);
    assert_eq!(auth["renewable"], false);
    assert_eq!(auth["token_type"], "service");
    assert_eq!(auth["entity_id"], id);
    // The accessor names the token (its `jti`) without being it.
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&B64.decode(payload).unwrap()).unwrap();
    assert_eq!(auth["accessor"], claims["jti"]);
    assert_eq!(claims["auth_method"], "approle");
    assert_eq!(login["mount_type"], "approle");

    // The token works in its own environment and nowhere else.
    assert_eq!(
        write_secret(&s, token, "acme/web/prod/db", json!({"p": "1"})).await,
        200
    );
    let read = get_as(&s, token, "/v1/secret/data/acme/web/prod/db").await;
    assert_eq!(read["data"]["data"]["p"], "1");
    assert_eq!(
        write_secret(&s, token, "globex/web/prod/db", json!({"p": "1"})).await,
        403
    );
    assert_eq!(
        status_of(
            client()
                .get(s.url("/v1/secret/data/globex/web/prod/db"))
                .header("x-vault-token", token)
        )
        .await,
        404
    );
}

#[tokio::test]
async fn approle_refusals_are_vaults_and_a_deleted_client_is_refused() {
    let dir = temp();
    let s = dev_server(&path_str(dir.path()), &[]);
    let (id, secret) = create_client(&s, service("acme", "app", &SECRET_SCOPES)).await;
    for (role, secret_id) in [
        (id.as_str(), "vern.cs.wrong"),
        ("svc.acme.web.prod.nobody", secret.as_str()),
    ] {
        let (status, body) = approle(&s, role, secret_id).await;
        assert_eq!(
            (status, body),
            (400, json!({"errors": ["invalid role or secret ID"]}))
        );
    }
    let (status, body) = status_and_json(
        client()
            .post(s.url("/v1/auth/approle/login"))
            .json(&json!({"role_id": id})),
    )
    .await;
    assert_eq!(
        (status, body),
        (400, json!({"errors": ["missing secret_id"]}))
    );
    let (status, _) = status_and_json(
        client()
            .post(s.url("/v1/auth/approle/login"))
            .body("role_id=x&secret_id=y"),
    )
    .await;
    assert_eq!(status, 400, "not JSON");

    // A DPoP-bound client gets no token through a login: it would be weaker
    // than the one the token endpoint gives it.
    let mut bound = service("acme", "bound", &["secrets:read"]);
    bound["dpop_bound"] = json!(true);
    let (bound_id, bound_secret) = create_client(&s, bound).await;
    let (status, body) = approle(&s, &bound_id, &bound_secret).await;
    assert_eq!(status, 400);
    assert!(
        body["errors"][0].as_str().unwrap().contains("DPoP"),
        "{body}"
    );

    // A deleted client's secret_id no longer logs in, and its token is
    // refused at once.
    let (_, login) = approle(&s, &id, &secret).await;
    let token = login["auth"]["client_token"].as_str().unwrap().to_owned();
    let deleted = client()
        .delete(s.url(&format!("/v1/auth/clients/{id}")))
        .header("x-vault-token", "root")
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success());
    assert_eq!(approle(&s, &id, &secret).await.0, 400);
    assert_eq!(
        write_secret(&s, &token, "acme/web/prod/db", json!({"p": "1"})).await,
        401
    );

    // Every login and every refusal is on record, under the client it
    // named, with the secret only as its HMAC.
    let records: Vec<Value> = audit_records(&s)
        .await
        .into_iter()
        .filter(|r| r["event"]["operation"] == "POST /v1/auth/approle/login")
        .collect();
    let statuses: Vec<u64> = records
        .iter()
        .map(|r| r["event"]["status"].as_u64().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [400, 400, 400, 400, 400, 200, 400],
        "{records:#?}"
    );
    for r in &records {
        let text = r.to_string();
        assert!(!text.contains(&secret), "the secret is never in a record");
        assert_eq!(r["event"]["action"], "token.issue", "{r}");
    }
    let named = |r: &Value| r["event"]["resource"].as_str().map(str::to_owned);
    assert_eq!(named(&records[0]), Some(format!("client:{id}")));
    assert_eq!(
        named(&records[2]),
        Some(format!("client:{id}")),
        "named even when its secret is missing"
    );
    assert_eq!(
        named(&records[3]),
        None,
        "a body that is not JSON names none"
    );
    assert!(records[0]["event"]["hmacs"]["secret_id"].is_string());
    assert!(records[5]["event"]["hmacs"]["issued_token"].is_string());
}

#[tokio::test]
async fn approle_failures_lock_out_the_pair_as_the_token_endpoint_does() {
    let dir = temp();
    let s = dev_server(&path_str(dir.path()), &["--lockout-after", "3"]);
    let (id, secret) = create_client(&s, service("acme", "app", &SECRET_SCOPES)).await;
    for _ in 0..3 {
        assert_eq!(approle(&s, &id, "vern.cs.guess").await.0, 400);
    }
    let r = client()
        .post(s.url("/v1/auth/approle/login"))
        .json(&json!({"role_id": id, "secret_id": secret}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        429,
        "the pair is locked, even for the right secret"
    );
    assert!(r.headers().contains_key("retry-after"));
    // The same lockout as the token endpoint's: the pair is one.
    let t = client()
        .post(s.url("/oauth2/token"))
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(t.status(), 429);
}

/// `lookup-self` with `token`: the status and the JSON answer.
async fn lookup_self(s: &Server, token: &str) -> (u16, Value) {
    status_and_json(
        client()
            .get(s.url("/v1/auth/token/lookup-self"))
            .header("x-vault-token", token),
    )
    .await
}

#[tokio::test]
async fn lookup_self_describes_the_presented_token_as_vault_does() {
    let dir = temp();
    let s = dev_server(&path_str(dir.path()), &[]);
    let (id, secret) = create_client(&s, service("acme", "app", &["secrets:read"])).await;
    let (_, login) = approle(&s, &id, &secret).await;
    let token = login["auth"]["client_token"].as_str().unwrap();
    let (status, body) = lookup_self(&s, token).await;
    assert_eq!(status, 200, "{body}");
    let data = &body["data"];
    assert_eq!(data["id"], token, "the token presented, and only that");
    assert_eq!(data["accessor"], login["auth"]["accessor"]);
    assert_eq!(data["policies"], json!(["secrets:read"]));
    assert_eq!(
        data["meta"],
        json!({"client_id": id, "tenant": "acme", "project": "web", "environment": "prod"})
    );
    assert_eq!(data["path"], "auth/approle/login");
    assert_eq!(data["display_name"], "approle");
    assert_eq!(
        (data["renewable"].clone(), data["type"].clone()),
        (json!(false), json!("service"))
    );
    assert_eq!(
        (data["orphan"].clone(), data["entity_id"].clone()),
        (json!(true), json!(id))
    );
    assert_eq!(data["creation_ttl"], 300);
    let ttl = data["ttl"].as_u64().unwrap();
    assert!((290..=300).contains(&ttl), "{ttl}");
    let expire = humantime::parse_rfc3339(data["expire_time"].as_str().unwrap()).unwrap();
    let issue = humantime::parse_rfc3339(data["issue_time"].as_str().unwrap()).unwrap();
    assert_eq!(expire.duration_since(issue).unwrap().as_secs(), 300);
    assert_eq!(
        data["creation_time"].as_u64().unwrap(),
        issue
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    );

    // POST answers the same; a token of the token endpoint says so.
    let oauth = access_token(&s, &id, &secret).await;
    let (status, body) = status_and_json(
        client()
            .post(s.url("/v1/auth/token/lookup-self"))
            .bearer_auth(&oauth),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["path"], "oauth2/token");

    // The root token of init is an operator with Vault's root policy.
    let (status, body) = lookup_self(&s, "root").await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["policies"], json!(["root"]));
    assert_eq!(body["data"]["id"], "root");
    assert_eq!(body["data"]["ttl"], 0);

    // A token that does not authenticate is Vault's 403.
    let mut forged = token.to_owned();
    forged.pop();
    for bad in ["not-a-token", "a.b.c", forged.as_str()] {
        let (status, body) = lookup_self(&s, bad).await;
        assert_eq!(status, 403, "{bad}: {body}");
        assert_eq!(body["errors"][0], "permission denied");
    }
    let r = client()
        .get(s.url("/v1/auth/token/lookup-self"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "no token at all");
}

#[tokio::test]
async fn renew_self_is_refused_and_revoke_self_takes_effect_at_once() {
    let dir = temp();
    let s = dev_server(&path_str(dir.path()), &[]);
    let (id, secret) = create_client(&s, service("acme", "app", &SECRET_SCOPES)).await;
    let (_, login) = approle(&s, &id, &secret).await;
    let token = login["auth"]["client_token"].as_str().unwrap();

    // Vern tokens have a fixed expiry: Vault's answer for a token that is
    // not renewable, and nothing changes.
    let (status, body) = post_as(&s, token, "/v1/auth/token/renew-self", &json!({})).await;
    assert_eq!(
        (status, body),
        (400, json!({"errors": ["lease is not renewable"]}))
    );
    assert_eq!(lookup_self(&s, token).await.0, 200);

    let r = client()
        .post(s.url("/v1/auth/token/revoke-self"))
        .header("x-vault-token", token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(lookup_self(&s, token).await.0, 403);
    assert_eq!(
        write_secret(&s, token, "acme/web/prod/db", json!({"p": "1"})).await,
        401
    );
    // Introspection agrees: the same revocation store.
    let (checker, checker_secret) = create_client(&s, service("acme", "checker", &[])).await;
    let introspected = json_of(
        client()
            .post(s.url("/oauth2/introspect"))
            .basic_auth(&checker, Some(&checker_secret))
            .form(&[("token", token)]),
    )
    .await;
    assert_eq!(introspected["active"], false);

    // The root token is the break-glass credential: not revoked this way.
    let (status, _) = post_as(&s, "root", "/v1/auth/token/revoke-self", &json!({})).await;
    assert_eq!(status, 400);
    assert_eq!(lookup_self(&s, "root").await.0, 200);
}

#[tokio::test]
async fn lookup_is_for_operators_within_their_reach() {
    let dir = temp();
    let s = dev_server(&path_str(dir.path()), &[]);
    let acme = client_token(&s, service("acme", "app", &SECRET_SCOPES)).await;
    let globex = client_token(&s, service("globex", "app", &SECRET_SCOPES)).await;
    let platform = client_token(&s, json!({"name": "pa", "roles": ["platform-admin"]})).await;
    let tenant_admin = client_token(
        &s,
        json!({"name": "ta", "tenant": "acme", "roles": ["tenant-admin"]}),
    )
    .await;
    let lookup = |caller: String, token: String| {
        let s = &s;
        async move {
            post_as(
                s,
                &caller,
                "/v1/auth/token/lookup",
                &json!({"token": token}),
            )
            .await
        }
    };
    for caller in ["root", platform.as_str(), tenant_admin.as_str()] {
        let (status, body) = lookup(caller.to_owned(), acme.clone()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["id"], acme.as_str());
        assert_eq!(body["data"]["meta"]["tenant"], "acme");
        assert!(
            !body.to_string().contains(caller),
            "nothing the caller did not send comes back"
        );
    }
    // A tenant operator reaches its own tenant only; a service no one.
    assert_eq!(lookup(tenant_admin.clone(), globex.clone()).await.0, 403);
    assert_eq!(lookup(acme.clone(), globex.clone()).await.0, 403);
    assert_eq!(lookup(globex.clone(), globex.clone()).await.0, 403);
    // Something that is not a live Vern token: Vault's `bad token`.
    let (status, body) = lookup("root".to_owned(), "a.b.c".to_owned()).await;
    assert_eq!((status, body), (403, json!({"errors": ["bad token"]})));
    let (status, _) = post_as(&s, "root", "/v1/auth/token/lookup", &json!({})).await;
    assert_eq!(status, 400);

    // Each lookup is on record with its decision, the looked-up token as
    // its HMAC only.
    let records: Vec<Value> = audit_records(&s)
        .await
        .into_iter()
        .filter(|r| r["event"]["operation"] == "POST /v1/auth/token/lookup")
        .collect();
    assert!(records.len() >= 6);
    let denied = records
        .iter()
        .find(|r| r["event"]["decision"]["allowed"] == false)
        .unwrap();
    assert_eq!(denied["event"]["action"], "token.lookup");
    for r in &records {
        assert!(!r.to_string().contains(&acme));
        assert!(!r.to_string().contains(&globex));
    }
}

/// `GET /v1/sys/internal/ui/mounts/<path>` with `token`: the status and the
/// JSON answer.
async fn preflight(s: &Server, token: &str, path: &str) -> (u16, Value) {
    status_and_json(
        client()
            .get(s.url(&format!("/v1/sys/internal/ui/mounts/{path}")))
            .header("x-vault-token", token),
    )
    .await
}

#[tokio::test]
async fn mount_discovery_answers_kv_v2_to_callers_who_work_there() {
    let dir = temp();
    let s = dev_server(
        &path_str(dir.path()),
        &["--kv-mount", "secret", "--kv-mount", "team"],
    );
    // A writer without read: `vault kv put` must still find version 2.
    let writer = client_token(&s, service("acme", "writer", &["secrets:write"])).await;
    for path in [
        "secret",
        "secret/",
        "secret/acme",
        "secret/acme/web/prod",
        "secret/acme/web/prod/db",
        "team/acme/web/prod/db/deeper",
    ] {
        let (status, body) = preflight(&s, &writer, path).await;
        assert_eq!(status, 200, "{path}: {body}");
        let data = &body["data"];
        assert_eq!(data["type"], "kv", "{path}");
        assert_eq!(data["options"]["version"], "2", "{path}");
        let mount = path.split('/').next().unwrap();
        assert_eq!(data["path"], format!("{mount}/"), "{path}");
    }
    // Another tenant's part of the tree, another environment, a mount that
    // does not exist: all the same 403, as Vault answers.
    for path in [
        "secret/globex",
        "secret/globex/web/prod/db",
        "secret/acme/web/dev/db",
        "nothing/acme/web/prod/db",
        "secret/ACME/web/prod/db",
    ] {
        let (status, body) = preflight(&s, &writer, path).await;
        assert_eq!(status, 403, "{path}: {body}");
        let msg = body["errors"][0].as_str().unwrap();
        assert!(
            msg.starts_with("preflight capability check returned 403"),
            "{msg}"
        );
    }
    // A service with no secret scope sees no mount; neither does an
    // auditor, who works with no secrets.
    let stranger = client_token(&s, service("acme", "orders", &["orders:write"])).await;
    let auditor = client_token(&s, json!({"name": "au", "roles": ["security-auditor"]})).await;
    for token in [&stranger, &auditor] {
        assert_eq!(preflight(&s, token, "secret").await.0, 403);
        assert_eq!(
            status_of(
                client()
                    .get(s.url("/v1/sys/mounts"))
                    .header("x-vault-token", token)
            )
            .await,
            403
        );
    }
    // A tenant administrator sees its tenant, not another.
    let tenant_admin = client_token(
        &s,
        json!({"name": "ta", "tenant": "acme", "roles": ["tenant-admin"]}),
    )
    .await;
    assert_eq!(preflight(&s, &tenant_admin, "secret").await.0, 200);
    assert_eq!(
        preflight(&s, &tenant_admin, "secret/acme/web/dev").await.0,
        200
    );
    assert_eq!(preflight(&s, &tenant_admin, "secret/globex").await.0, 403);

    // `sys/mounts` lists every KV mount, in `data` and, as Vault does for
    // older clients, at the top level.
    for token in [writer.as_str(), "root"] {
        let body = get_as(&s, token, "/v1/sys/mounts").await;
        for mount in ["secret/", "team/"] {
            assert_eq!(body["data"][mount]["type"], "kv", "{body}");
            assert_eq!(body["data"][mount]["options"]["version"], "2");
            assert_eq!(body[mount], body["data"][mount]);
        }
    }
    // Without a token, nothing.
    let r = client()
        .get(s.url("/v1/sys/internal/ui/mounts/secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

/// Writes `payload` with the real `curl` binary as Vault's documentation
/// does (`curl --data @payload.json`, which sends
/// `application/x-www-form-urlencoded`), or, without curl, the request it
/// would send. Returns the status.
async fn curl_data(s: &Server, token: &str, path: &str, payload: &Value) -> u16 {
    let dir = temp();
    let file = dir.path().join("payload.json");
    std::fs::write(&file, payload.to_string()).unwrap();
    let url = s.url(path);
    let curl = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--header"])
        .arg(format!("X-Vault-Token: {token}"))
        .arg("--data")
        .arg(format!("@{}", file.display()))
        .arg(&url)
        .output();
    match curl {
        Ok(out) if out.status.success() => text(&out.stdout).trim().parse().unwrap(),
        _ => {
            status_of(
                client()
                    .post(url)
                    .header("x-vault-token", token)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(payload.to_string()),
            )
            .await
        }
    }
}

#[tokio::test]
async fn json_bodies_are_read_whatever_their_content_type() {
    let dir = temp();
    let s = dev_server(&path_str(dir.path()), &[]);
    let token = client_token(&s, service("acme", "app", &SECRET_SCOPES)).await;
    let payload = json!({"data": {"password": "s3cr3t"}, "options": {"cas": 0}});
    assert_eq!(
        curl_data(&s, &token, "/v1/secret/data/acme/web/prod/db", &payload).await,
        200
    );
    let read = get_as(&s, &token, "/v1/secret/data/acme/web/prod/db").await;
    assert_eq!(read["data"]["data"]["password"], "s3cr3t");
    // The same with text/plain, and an AppRole login sent as a form type.
    let (id, secret) = create_client(&s, service("acme", "login", &[])).await;
    let login = client()
        .post(s.url("/v1/auth/approle/login"))
        .header("content-type", "text/plain")
        .body(json!({"role_id": id, "secret_id": secret}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);

    // Still JSON only: a real form body is a 400 in Vault's shape, and
    // nothing was written.
    let (status, body) = status_and_json(
        client()
            .post(s.url("/v1/secret/data/acme/web/prod/form"))
            .header("x-vault-token", &token)
            .form(&[("data", "x")]),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body["errors"][0]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));
    assert_eq!(
        status_of(
            client()
                .get(s.url("/v1/secret/data/acme/web/prod/form"))
                .header("x-vault-token", &token)
        )
        .await,
        404
    );

    // The OAuth2 token endpoint stays as strict as RFC 6749: form only.
    let r = client()
        .post(s.url("/oauth2/token"))
        .basic_auth(&id, Some(&secret))
        .json(&json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
}

/// A page of another site, as a browser sends its requests: with its
/// `Origin`, and a body in a type browsers send without asking first.
const EVIL: &str = "https://evil.example";

/// A `POST` of `body` to `path` as a browser sends it for a page of
/// another site: with `Origin` and the content type `content_type`.
fn cross_site(s: &Server, path: &str, content_type: &str, body: &Value) -> reqwest::RequestBuilder {
    client()
        .post(s.url(path))
        .header("origin", EVIL)
        .header("content-type", content_type)
        .body(body.to_string())
}

#[tokio::test]
async fn a_browsers_cross_site_request_is_refused_and_nothing_happens() {
    let dir = temp();
    let s = dev_server(&path_str(dir.path()), &["--lockout-after", "2"]);
    let (id, secret) = create_client(&s, service("acme", "app", &SECRET_SCOPES)).await;
    let login = json!({"role_id": id, "secret_id": secret});
    let wrong = json!({"role_id": id, "secret_id": "vern.cs.guess"});
    let approle = "/v1/auth/approle/login";

    // Every type a browser sends without a CORS preflight, a media type
    // that only names JSON in a parameter, no body at all, and
    // `Sec-Fetch-Site` alone: refused before anything is checked.
    let mut refused = Vec::new();
    for content_type in [
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "text/plain; a=application/json",
    ] {
        refused.push(cross_site(&s, approle, content_type, &login));
    }
    refused.push(client().post(s.url(approle)).header("origin", "null"));
    refused.push(
        client()
            .post(s.url(approle))
            .header("sec-fetch-site", "cross-site")
            .header("content-type", "text/plain")
            .body(login.to_string()),
    );
    refused.push(
        client()
            .post(s.url(approle))
            .header("sec-fetch-site", "same-site")
            .body(login.to_string()),
    );
    // Wrong secrets, more than the lockout allows: never checked, so never
    // charged.
    for _ in 0..3 {
        refused.push(cross_site(&s, approle, "text/plain", &wrong));
    }
    let attempts = refused.len();
    for request in refused {
        let (status, body) = status_and_json(request).await;
        assert_eq!(status, 403, "{body}");
        let message = body["errors"][0].as_str().unwrap();
        assert!(
            message.starts_with("cross-site request refused"),
            "{message}"
        );
    }

    // The pair was not locked: a Vault client's login, JSON sent as
    // text/plain without Origin, works; so does a browser's JSON, which
    // browsers preflight, and `Sec-Fetch-Site` other than cross-site or
    // same-site without Origin.
    let plain = client()
        .post(s.url(approle))
        .header("content-type", "text/plain")
        .body(login.to_string());
    let as_json = cross_site(&s, approle, "application/json; charset=utf-8", &login);
    let same_origin = client()
        .post(s.url(approle))
        .header("sec-fetch-site", "same-origin")
        .header("content-type", "text/plain")
        .body(login.to_string());
    let typed = client()
        .post(s.url(approle))
        .header("sec-fetch-site", "none")
        .body(login.to_string());
    for request in [plain, as_json, same_origin, typed] {
        let (status, body) = status_and_json(request).await;
        assert_eq!(status, 200, "{body}");
    }

    // Routes with a token too: a cross-site write writes nothing, a
    // cross-site revoke-self revokes nothing; reads are not refused.
    let token = access_token(&s, &id, &secret).await;
    let write = cross_site(
        &s,
        "/v1/secret/data/acme/web/prod/db",
        "text/plain",
        &json!({"data": {"p": "1"}}),
    )
    .header("x-vault-token", &token);
    assert_eq!(status_of(write).await, 403);
    let revoke = client()
        .post(s.url("/v1/auth/token/revoke-self"))
        .header("origin", EVIL)
        .header("x-vault-token", &token);
    assert_eq!(status_of(revoke).await, 403);
    let read = client()
        .get(s.url("/v1/secret/data/acme/web/prod/db"))
        .header("origin", EVIL)
        .header("x-vault-token", &token);
    assert_eq!(status_of(read).await, 404, "nothing was written");
    let (status, _) = status_and_json(
        client()
            .get(s.url("/v1/auth/token/lookup-self"))
            .header("origin", EVIL)
            .header("x-vault-token", &token),
    )
    .await;
    assert_eq!(status, 200, "the token was not revoked");

    // The OAuth2 endpoints, outside the Vault API, take their RFC forms as
    // ever.
    let r = client()
        .post(s.url("/oauth2/token"))
        .header("origin", EVIL)
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Every refused login is on record as the login it tried, and none
    // issued a token.
    let records: Vec<Value> = audit_records(&s)
        .await
        .into_iter()
        .filter(|r| r["event"]["operation"] == "POST /v1/auth/approle/login")
        .collect();
    let refusals: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"]["status"] == 403)
        .collect();
    assert_eq!(refusals.len(), attempts, "{records:#?}");
    for r in refusals {
        assert_eq!(r["event"]["action"], "token.issue", "{r}");
        assert!(r["event"]["hmacs"].get("issued_token").is_none(), "{r}");
        assert!(r["event"]["hmacs"].get("secret_id").is_none(), "{r}");
    }
    let write_refused = audit_records(&s).await.into_iter().any(|r| {
        r["event"]["operation"] == "POST /v1/{mount}/data/{*path}" && r["event"]["status"] == 403
    });
    assert!(write_refused, "the refused write is on record");
}

#[tokio::test]
async fn a_cross_site_request_cannot_initialise_or_unseal() {
    let dir = temp();
    let data = path_str(dir.path());
    let s = Server::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--insecure-listen",
            "--data-dir",
            &data,
        ],
        &[],
    );
    let initialized =
        || async { json_of(client().get(s.url("/v1/sys/init"))).await["initialized"].clone() };
    // A bodiless POST would initialise with the default share set, and the
    // page could not even read the shares: the server would be lost.
    let bare = client().post(s.url("/v1/sys/init")).header("origin", EVIL);
    let shares = json!({"secret_shares": 2, "secret_threshold": 2});
    let plain = cross_site(&s, "/v1/sys/init", "text/plain", &shares);
    for request in [bare, plain] {
        assert_eq!(status_of(request).await, 403);
        assert_eq!(initialized().await, false);
    }
    let init = json_of(client().put(s.url("/v1/sys/init")).json(&shares)).await;
    let keys: Vec<String> = init["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();

    let progress = || async {
        let status = json_of(client().get(s.url("/v1/sys/seal-status"))).await;
        (status["sealed"].clone(), status["progress"].clone())
    };
    let share = json!({"key": keys[0]});
    let from_page = cross_site(&s, "/v1/sys/unseal", "text/plain", &share);
    let same_site = client()
        .put(s.url("/v1/sys/unseal"))
        .header("sec-fetch-site", "same-site")
        .body(share.to_string());
    for request in [from_page, same_site] {
        assert_eq!(status_of(request).await, 403);
        assert_eq!(progress().await, (json!(true), json!(0)), "no share taken");
    }
    // JSON from a browser is preflighted, so it goes through; so does the
    // wire-tolerant text/plain of a client that sends no Origin.
    let (status, body) =
        status_and_json(cross_site(&s, "/v1/sys/unseal", "application/json", &share)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(progress().await, (json!(true), json!(1)));
    let last = client()
        .put(s.url("/v1/sys/unseal"))
        .header("content-type", "text/plain")
        .body(json!({"key": keys[1]}).to_string());
    assert_eq!(status_of(last).await, 200);
    assert_eq!(progress().await.0, json!(false), "unsealed");
}

#[tokio::test]
async fn list_takes_vaults_boolean_forms_and_nothing_else() {
    let dir = temp();
    let s = dev_server(&path_str(dir.path()), &[]);
    let token = client_token(&s, service("acme", "app", &SECRET_SCOPES)).await;
    assert_eq!(
        write_secret(&s, &token, "acme/web/prod/db", json!({"p": "1"})).await,
        200
    );
    let folder = "/v1/secret/metadata/acme/web/prod";
    for yes in ["true", "t", "T", "TRUE", "True", "1"] {
        let body = get_as(&s, &token, &format!("{folder}?list={yes}")).await;
        assert_eq!(body["data"]["keys"], json!(["db"]), "list={yes}");
    }
    // False forms read the metadata of the path itself (a folder is no
    // secret: 400 naming the path rule); anything else is a 400 too.
    for no in ["false", "f", "0", ""] {
        let (status, _) = status_and_json(
            client()
                .get(s.url(&format!("/v1/secret/metadata/acme/web/prod/db?list={no}")))
                .header("x-vault-token", &token),
        )
        .await;
        assert_eq!(status, 200, "list={no} reads the metadata");
    }
    let (status, body) = status_and_json(
        client()
            .get(s.url(&format!("{folder}?list=maybe")))
            .header("x-vault-token", &token),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["errors"][0].as_str().unwrap().contains("list"),
        "{body}"
    );
}

#[tokio::test]
async fn a_list_of_a_route_that_lists_nothing_is_refused_before_its_handler() {
    let dir = temp();
    let s = dev_server(&path_str(dir.path()), &[]);
    // Without a token, a `?list=` must not reach a handler that relies on
    // the authorization point (these answer 403 without it).
    for path in [
        "/v1/sys/key-status",
        "/v1/sys/policies",
        "/v1/secret/config",
        "/v1/sys/mounts",
    ] {
        assert_eq!(
            status_of(client().get(s.url(path))).await,
            403,
            "{path} without a token"
        );
        for form in ["true", "t", "1"] {
            let (status, body) =
                status_and_json(client().get(s.url(&format!("{path}?list={form}")))).await;
            assert_eq!(status, 405, "{path}?list={form}: {body}");
        }
    }
}

/// A TLS server asking for client certificates from a fresh CA, initialised
/// and unsealed, with its base URL, the CA (and its PEM) and the root
/// token.
struct MtlsServer {
    _server: Server,
    base: String,
    ca_pem: String,
    ca: (rcgen::Certificate, rcgen::KeyPair),
    root: String,
    _dir: tempfile::TempDir,
}

async fn mtls_server() -> MtlsServer {
    let dir = temp();
    let ca = ca();
    let tls = issue(
        &ca,
        rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()),
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    );
    let ca_pem = ca.0.pem();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        path_str(&p)
    };
    let (ca_file, crt, key) = (
        write("ca.pem", &ca_pem),
        write("s.crt", &tls.cert_pem),
        write("s.key", &tls.key_pem),
    );
    let data = path_str(&dir.path().join("data"));
    let server = tls_server(&crt, &key, &data, &["--tls-client-ca", &ca_file]);
    let base = format!("https://{}", server.addr);
    let root = init_and_unseal_at(&https(&ca_pem, None), &base).await;
    MtlsServer {
        _server: server,
        base,
        ca_pem,
        ca,
        root,
        _dir: dir,
    }
}

#[tokio::test]
async fn certificate_login_maps_a_spiffe_id_to_its_client_and_binds_the_token() {
    let m = mtls_server().await;
    let (base, root) = (&m.base, &m.root);
    let svid = |uri: &str| {
        issue(
            &m.ca,
            rcgen::SanType::URI(uri.try_into().unwrap()),
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        )
    };
    let worker = svid("spiffe://acme.test/web/prod/worker");
    let stranger = svid("spiffe://acme.test/web/prod/stranger");
    let anonymous = https(&m.ca_pem, None);
    let created = anonymous
        .post(format!("{base}/v1/auth/clients"))
        .header("x-vault-token", root)
        .json(
            &json!({"tenant": "acme", "project": "web", "environment": "prod", "name": "worker",
            "tls_client_auth_san": "spiffe://acme.test/web/prod/worker", "scopes": SECRET_SCOPES}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let login = |client: reqwest::Client, body: Value| {
        let base = base.clone();
        async move {
            let r = client
                .post(format!("{base}/v1/auth/cert/login"))
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let refused = json!({"errors": ["invalid certificate or no client certificate supplied"]});
    assert_eq!(
        login(anonymous.clone(), json!({})).await,
        (400, refused.clone())
    );
    assert_eq!(
        login(https(&m.ca_pem, Some(&stranger)), json!({})).await,
        (400, refused.clone())
    );
    assert_eq!(
        login(
            https(&m.ca_pem, Some(&stranger)),
            json!({"name": "svc.acme.web.prod.worker"})
        )
        .await,
        (400, refused.clone()),
        "naming a client the certificate does not carry"
    );

    let with_worker = https(&m.ca_pem, Some(&worker));
    let (status, body) = login(with_worker.clone(), json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["auth"]["metadata"]["client_id"],
        "svc.acme.web.prod.worker"
    );
    assert_eq!(body["mount_type"], "cert");
    let token = body["auth"]["client_token"].as_str().unwrap().to_owned();
    let (status, named) = login(
        with_worker.clone(),
        json!({"name": "svc.acme.web.prod.worker"}),
    )
    .await;
    assert_eq!(status, 200, "{named}");

    // The token reads its own environment over a connection presenting the
    // certificate, nowhere else, and never without the certificate.
    let write = |client: reqwest::Client, path: &str| {
        let (base, token) = (base.clone(), token.clone());
        let url = format!("{base}/v1/secret/data/{path}");
        async move {
            client
                .post(url)
                .header("x-vault-token", token)
                .json(&json!({"data": {"k": "v"}}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(write(with_worker.clone(), "acme/web/prod/db").await, 200);
    assert_eq!(write(with_worker.clone(), "globex/web/prod/db").await, 403);
    assert_eq!(write(anonymous.clone(), "acme/web/prod/db").await, 401);
    assert_eq!(
        write(https(&m.ca_pem, Some(&stranger)), "acme/web/prod/db").await,
        401
    );
    let lookup: Value = with_worker
        .get(format!("{base}/v1/auth/token/lookup-self"))
        .header("x-vault-token", &token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(lookup["data"]["path"], "auth/cert/login");

    // Every login and refusal is on record.
    let records: Vec<Value> = anonymous
        .get(format!("{base}/v1/audit/records?limit=1000"))
        .header("x-vault-token", root)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["data"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["event"]["operation"] == "POST /v1/auth/cert/login")
        .cloned()
        .collect();
    let outcomes: Vec<(u64, String)> = records
        .iter()
        .map(|r| {
            (
                r["event"]["status"].as_u64().unwrap(),
                r["event"]["resource"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(outcomes.len(), 5, "{outcomes:?}");
    assert_eq!(
        &outcomes[3],
        &(200, "client:svc.acme.web.prod.worker".to_owned())
    );
    assert!(outcomes[1].1.starts_with("certificate:"), "{outcomes:?}");
    assert!(records
        .iter()
        .all(|r| r["event"]["action"] == "token.issue"));
}
