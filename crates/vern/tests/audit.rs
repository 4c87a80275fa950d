//! The audit log through the real binary: what a record holds (and never
//! holds), who may read it, fail-closed behaviour when the sink or the
//! store refuses records, one chain across parallel requests and across
//! two processes on one PostgreSQL, and `vern audit verify` catching an
//! edited file.
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
    audit_segments, client, client_token, dev_server, json_of, metrics, path_str, service,
    status_and_json, temp, text, verify_audit_storage, vern, write_secret, Server, SECRET_SCOPES,
};
use serde_json::{json, Value};

const MARKER: &str = "s3cr3t-marker-9b1f";

async fn records(s: &Server, token: &str, query: &str) -> (u16, Value) {
    status_and_json(
        client()
            .get(s.url(&format!("/v1/audit/records?{query}")))
            .header("x-vault-token", token),
    )
    .await
}

fn list(v: &Value) -> Vec<Value> {
    v["data"]["records"].as_array().cloned().unwrap_or_default()
}

async fn put_secret(s: &Server, path: &str) -> u16 {
    write_secret(s, "root", path, json!({"password": MARKER})).await
}

/// `GET` of a secret with `token` (root or an access token) and a
/// request id to find its record by.
async fn read_secret(s: &Server, path: &str, token: &str, request_id: &str) -> reqwest::Response {
    client()
        .get(s.url(&format!("/v1/secret/data/{path}")))
        .header("x-vault-token", token)
        .header("x-request-id", request_id)
        .send()
        .await
        .unwrap()
}

async fn public_key(s: &Server) -> String {
    let v = json_of(client().get(s.url("/v1/audit/public-key"))).await;
    v["data"]["public_key"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn records_carry_decisions_and_hmacs_never_secrets() {
    let dir = temp();
    let data = path_str(dir.path());
    let file = dir.path().join("audit.jsonl");
    let s = dev_server(&data, &["--audit-file", &path_str(&file)]);
    assert_eq!(put_secret(&s, "acme/web/prod/db").await, 200);
    let svc = client_token(&s, service("acme", "api", &SECRET_SCOPES)).await;
    let own = read_secret(&s, "acme/web/prod/db", &svc, "read-own-0001").await;
    assert_eq!(own.status(), 200);
    let other = read_secret(&s, "globex/web/prod/db", &svc, "read-other-0001").await;
    assert_eq!(other.status(), 404);
    let bad = read_secret(&s, "acme/web/prod/db", "not-a-token", "bad-token-0001").await;
    assert_eq!(bad.status(), 403);

    let (status, all) = records(&s, "root", "limit=1000").await;
    assert_eq!(status, 200, "{all}");
    let all = list(&all);
    let by_id = |id: &str| {
        all.iter()
            .find(|r| r["event"]["client_request_id"] == id)
            .unwrap_or_else(|| panic!("no record for {id}"))
            .clone()
    };
    let own = by_id("read-own-0001");
    let e = &own["event"];
    assert_eq!(e["action"], "secret.read");
    assert_eq!(e["resource"], "secret:secret:acme/web/prod/db");
    assert_eq!(e["resource_tenant"], "acme");
    assert_eq!(e["decision"]["allowed"], true);
    assert_eq!(
        e["decision"]["policies"],
        json!(["vern.scope.secrets:read"])
    );
    assert_eq!(e["status"], 200);
    assert_eq!(e["source"], "127.0.0.1");
    assert_eq!(e["principal"]["kind"], "service");
    assert_eq!(e["principal"]["tenant"], "acme");
    assert_eq!(e["operation"], "GET /v1/{mount}/data/{*path}");
    assert!(e["token"]["id"].is_string());
    assert_eq!(e["token"]["binding"], "none");

    let other = by_id("read-other-0001");
    assert_eq!(other["event"]["decision"]["allowed"], false);
    assert_eq!(
        other["event"]["decision"]["policies"],
        json!(["vern.tenant-isolation"])
    );
    assert_eq!(other["event"]["resource_tenant"], "globex");
    assert_eq!(other["event"]["status"], 404);
    let unauthenticated = all
        .iter()
        .find(|r| r["event"]["status"] == 403 && r["event"]["principal"].is_null())
        .expect("the refused token is on record");

    // Tokens appear only as HMACs, which `vern audit hash` reproduces.
    let env = [("VERN_ADDR", s.http()), ("VERN_TOKEN", "root".to_owned())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let hash = |value: &str| {
        let out = vern(&["audit", "hash", value, "--output", "json"], &env);
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["hash"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(own["event"]["token"]["hmac"], hash(&svc));
    assert_eq!(
        unauthenticated["event"]["token"]["hmac"],
        hash("not-a-token")
    );
    let issued = all
        .iter()
        .find(|r| r["event"]["action"] == "token.issue" && r["event"]["status"] == 200)
        .unwrap();
    assert_eq!(issued["event"]["hmacs"]["issued_token"], hash(&svc));
    assert!(issued["event"]["hmacs"]["client_secret"].is_string());

    // Nothing secret in clear: not in the API's records, the file, or the
    // database.
    s.terminate();
    let everything = format!(
        "{}\n{}",
        serde_json::to_string(&all).unwrap(),
        std::fs::read_to_string(&file).unwrap()
    );
    for secret in [MARKER, svc.as_str(), "not-a-token"] {
        assert!(!everything.contains(secret), "{secret} appears in clear");
    }
    let stored = audit_segments(dir.path());
    assert!(stored.lines().count() > 5);
    for secret in [MARKER, svc.as_str()] {
        assert!(
            !stored.contains(secret),
            "{secret} appears in the stored log"
        );
    }
}

#[tokio::test]
async fn tenants_read_their_own_records_and_reading_is_audited() {
    let dir = temp();
    let s = dev_server(&path_str(dir.path()), &[]);
    put_secret(&s, "acme/web/prod/db").await;
    put_secret(&s, "globex/web/prod/db").await;
    let siem = client_token(
        &s,
        json!({"tenant": "acme", "project": "ops", "environment": "prod", "name": "siem",
               "scopes": ["audit:read"]}),
    )
    .await;
    let plain = client_token(&s, service("acme", "api", &SECRET_SCOPES)).await;

    let (status, own) = records(&s, &siem, "limit=1000").await;
    assert_eq!(status, 200, "{own}");
    let own = list(&own);
    assert!(!own.is_empty());
    for r in &own {
        let e = &r["event"];
        assert!(
            e["resource_tenant"] == "acme" || e["principal"]["tenant"] == "acme",
            "another tenant's record leaked: {r}"
        );
    }
    assert!(own
        .iter()
        .any(|r| r["event"]["resource"] == "secret:secret:acme/web/prod/db"));
    assert_eq!(records(&s, &siem, "tenant=globex").await.0, 403);
    assert_eq!(records(&s, &plain, "").await.0, 403);
    assert_eq!(records(&s, "root", "tenant=globex").await.0, 200);

    // Reading the log is itself on record, allowed and denied alike.
    let (_, reads) = records(&s, "root", "action=audit.read&limit=1000").await;
    let reads = list(&reads);
    let denied: Vec<_> = reads
        .iter()
        .filter(|r| r["event"]["decision"]["allowed"] == false)
        .collect();
    assert_eq!(denied.len(), 2, "{reads:?}");
    assert!(reads.len() >= 4);
    let (_, only_denied) = records(&s, "root", "decision=deny&limit=1000").await;
    assert!(list(&only_denied)
        .iter()
        .all(|r| r["event"]["decision"]["allowed"] == false));
    let (_, none) = records(&s, "root", "since=2999-01-01T00:00:00Z").await;
    assert!(list(&none).is_empty());
    assert_eq!(records(&s, "root", "since=yesterday").await.0, 400);
    assert_eq!(records(&s, "root", "decision=maybe").await.0, 400);
    assert_eq!(records(&s, "root", "bogus=1").await.0, 400);

    // The CLI reads the same log.
    let env = [("VERN_ADDR", s.http()), ("VERN_TOKEN", "root".to_owned())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = vern(
        &[
            "audit",
            "query",
            "--action",
            "secret.write",
            "--output",
            "json",
        ],
        &env,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 2);
    let out = vern(&["audit", "tail", "-n", "3"], &env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).lines().count(),
        3,
        "{}",
        text(&out.stdout)
    );
}

#[tokio::test]
async fn an_unwritable_sink_fails_requests_without_data() {
    let dir = temp();
    let s = dev_server(&path_str(dir.path()), &["--audit-file", "/dev/full"]);
    assert_eq!(put_secret(&s, "acme/web/prod/db").await, 500);
    let read = read_secret(&s, "acme/web/prod/db", "root", "full-0001").await;
    assert_eq!(read.status(), 500);
    let body = read.text().await.unwrap();
    assert!(!body.contains(MARKER), "{body}");
    assert!(body.contains("audit record"), "{body}");
    // Probes are not audited, so the server still reports its health, and
    // the failures show in its metrics.
    let health = client().get(s.url("/v1/sys/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let metrics = metrics(&s).await;
    assert!(metrics.contains("vern_audit_failures_total 2"), "{metrics}");
}

#[tokio::test]
async fn a_log_that_cannot_grow_fails_requests_without_data_on_sqlite() {
    let dir = temp();
    let config = dir.path().join("vern.toml");
    std::fs::write(&config, "[audit]\nsegment_size = 4096\n").unwrap();
    let data = dir.path().join("data");
    let s = dev_server(&path_str(&data), &["--config", &path_str(&config)]);
    let key = public_key(&s).await;
    assert_eq!(put_secret(&s, "acme/web/prod/db").await, 200);
    // No new segment can be created once the directory is gone: as soon as
    // the open one is full, appends fail, and so do their requests.
    let (log, aside) = (data.join("vern-audit"), dir.path().join("aside"));
    std::fs::rename(&log, &aside).unwrap();
    std::fs::write(&log, b"not a directory").unwrap();
    let mut refused = Vec::new();
    for i in 0..100 {
        let id = format!("full-{i:04}");
        let read = read_secret(&s, "acme/web/prod/db", "root", &id).await;
        if read.status() == 500 {
            assert!(!read.text().await.unwrap().contains(MARKER));
            refused.push(id);
            if refused.len() == 3 {
                break;
            }
        } else {
            assert_eq!(read.status(), 200);
        }
    }
    assert_eq!(
        refused.len(),
        3,
        "requests kept succeeding without a place for their records"
    );
    std::fs::remove_file(&log).unwrap();
    std::fs::rename(&aside, &log).unwrap();
    let read = read_secret(&s, "acme/web/prod/db", "root", "after-0001").await;
    assert_eq!(read.status(), 200);
    assert!(s.terminate().success());
    let report = verify_audit_storage(&data.join("vern.db"), &key);
    assert_eq!(report["intact"], true, "{report}");
    let stored = audit_segments(&data);
    for id in refused {
        assert!(
            !stored.contains(&id),
            "the refused request {id} left a record"
        );
    }
}

#[tokio::test]
async fn parallel_requests_on_two_processes_make_one_chain_on_postgresql() {
    let Some(url) = vern_store::testing::fresh_postgres_url().await else {
        return;
    };
    let (a, b, root) = common::two_servers_on_postgres(&url).await;
    let key = public_key(&a).await;
    assert_eq!(key, public_key(&b).await);
    let (before_status, before) = records(&a, &root, "limit=1").await;
    assert_eq!(before_status, 200);
    let head_before = before["data"]["head"].as_u64().unwrap();
    let n = 200;
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let url = if i % 2 == 0 { a.url("") } else { b.url("") };
            let root = root.clone();
            tokio::spawn(async move {
                client()
                    .get(format!("{url}/v1/secret/data/acme/web/prod/n{i}"))
                    .header("x-vault-token", root)
                    .header("x-request-id", format!("parallel-{i:04}"))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 404);
    }
    let (_, after) = records(&b, &root, &format!("after={head_before}&limit=1000")).await;
    let parallel: Vec<_> = list(&after)
        .into_iter()
        .filter(|r| {
            r["event"]["client_request_id"]
                .as_str()
                .is_some_and(|id| id.starts_with("parallel-"))
        })
        .collect();
    assert_eq!(parallel.len(), n);
    a.terminate();
    b.terminate();
    let out = vern(
        &[
            "audit",
            "verify",
            "--storage",
            &url,
            "--public-key",
            &key,
            "--output",
            "json",
        ],
        &[],
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{report}");
    assert_eq!(report["intact"], true);
    assert_eq!(
        report["unsigned_tail"], 0,
        "shutdown signs the head: {report}"
    );
    assert!(report["records"].as_u64().unwrap() > n as u64);
}

#[tokio::test]
async fn a_store_refusing_records_fails_requests_on_postgresql() {
    let Some(url) = vern_store::testing::fresh_postgres_url().await else {
        return;
    };
    let (a, _b, root) = common::two_servers_on_postgres(&url).await;
    let (pg, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    pg.batch_execute(
        "CREATE FUNCTION refuse_audit() RETURNS trigger AS $$
           BEGIN RAISE EXCEPTION 'disk quota exceeded'; END $$ LANGUAGE plpgsql;
         CREATE TRIGGER refuse_audit BEFORE INSERT ON kv FOR EACH ROW
           WHEN (NEW.key LIKE 'audit/log/%') EXECUTE FUNCTION refuse_audit();",
    )
    .await
    .unwrap();
    let resp = client()
        .post(a.url("/v1/secret/data/acme/web/prod/db"))
        .header("x-vault-token", &root)
        .json(&json!({"data": {"password": MARKER}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    assert!(!resp.text().await.unwrap().contains(MARKER));
}

#[tokio::test]
async fn verify_cli_checks_storage_and_files_and_names_the_broken_record() {
    let dir = temp();
    let data = path_str(dir.path());
    let file = dir.path().join("audit.jsonl");
    let s = dev_server(
        &data,
        &[
            "--audit-file",
            &path_str(&file),
            "--audit-checkpoint-interval",
            "1",
        ],
    );
    let key = public_key(&s).await;
    for i in 0..20 {
        put_secret(&s, &format!("acme/web/prod/s{i}")).await;
    }
    common::eventually(
        Duration::from_secs(20),
        "an interval checkpoint",
        async || {
            std::fs::read_to_string(&file)
                .unwrap()
                .contains(r#""type":"checkpoint""#)
        },
    )
    .await;
    for i in 0..5 {
        put_secret(&s, &format!("acme/web/prod/t{i}")).await;
    }
    s.terminate();
    let storage = format!("sqlite:{}", dir.path().join("vern.db").display());
    let verify = |args: &[&str]| {
        let mut all = vec!["audit", "verify", "--public-key", key.as_str()];
        all.extend_from_slice(args);
        vern(&all, &[])
    };
    let out = verify(&["--storage", &storage]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("The audit log verifies"));
    let out = verify(&["--file", &path_str(&file), "--output", "json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["intact"], true, "{report}");
    assert!(report["checkpoints"].as_u64().unwrap() >= 2);

    // Edit one record's status in the file: exit 2, and the record named.
    let original = std::fs::read_to_string(&file).unwrap();
    let edited: String = original
        .lines()
        .map(|l| {
            if l.contains(r#""seq":12,"#) {
                l.replacen(r#""status":200"#, r#""status":403"#, 1)
            } else {
                l.to_owned()
            }
        })
        .map(|l| l + "\n")
        .collect();
    assert_ne!(edited, original);
    std::fs::write(&file, &edited).unwrap();
    let out = verify(&["--file", &path_str(&file)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stdout).contains("BROKEN at record 12"),
        "{}",
        text(&out.stdout)
    );
    // The same edit in the server's own segment file.
    let segment = dir.path().join("vern-audit/00000000000000000001.jsonl");
    let stored = std::fs::read_to_string(&segment).unwrap();
    let edited = stored.replacen(r#""seq":12,"#, r#""seq":12, "#, 1);
    assert_ne!(edited, stored);
    std::fs::write(&segment, &edited).unwrap();
    let out = verify(&["--storage", &storage]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stdout).contains("BROKEN at record 12"),
        "{}",
        text(&out.stdout)
    );
    std::fs::write(&segment, &stored).unwrap();

    // The wrong key fails every checkpoint.
    let other = "ed25519:11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    let out = vern(
        &[
            "audit",
            "verify",
            "--storage",
            &storage,
            "--public-key",
            other,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("not by the trusted key"));
    let out = vern(&["audit", "verify", "--public-key", &key], &[]);
    assert!(!out.status.success());
}

#[tokio::test]
async fn tail_follows_new_records_without_its_own_reads() {
    use std::io::BufRead as _;
    let dir = temp();
    let s = dev_server(&path_str(dir.path()), &[]);
    let mut child = std::process::Command::new(common::BIN)
        .args(["audit", "tail", "-f", "-n", "0", "--output", "json"])
        .env("VERN_ADDR", s.http())
        .env("VERN_TOKEN", "root")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in 0..3 {
        put_secret(&s, &format!("acme/web/prod/f{i}")).await;
    }
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("tail -f printed the new records");
        seen.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    // A few more polls go by without printing the follower's own reads.
    assert!(rx.recv_timeout(Duration::from_millis(2500)).is_err());
    child.kill().unwrap();
    let _ = child.wait();
    for (i, r) in seen.iter().enumerate() {
        assert_eq!(r["event"]["action"], "secret.write");
        assert_eq!(
            r["event"]["resource"],
            format!("secret:secret:acme/web/prod/f{i}")
        );
    }
}

#[tokio::test]
async fn records_go_to_stdout_for_shipping() {
    let dir = temp();
    let s = dev_server(&path_str(dir.path()), &["--audit-file", "-"]);
    let resp = read_secret(&s, "acme/web/prod/none", "root", "shipped-0001").await;
    assert_eq!(resp.status(), 404);
    let stdout = s.stdout.clone();
    s.terminate();
    let lines: Vec<Value> = stdout
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("type").is_some())
        .collect();
    let record = lines
        .iter()
        .find(|l| l["type"] == "record" && l["event"]["client_request_id"] == "shipped-0001")
        .expect("the record is on stdout");
    let last = lines.last().unwrap();
    assert_eq!(last["type"], "checkpoint", "shutdown signs the head");
    assert!(last["seq"].as_u64().unwrap() >= record["seq"].as_u64().unwrap());
}

/// Older versions kept the log in the main database, then in a SQLite
/// database of its own; a start moves it into the segment files, the chain
/// goes on unbroken, and no copy is left behind.
#[tokio::test]
async fn a_log_kept_by_an_older_version_is_moved_into_the_files_and_still_verifies() {
    let dir = temp();
    let data = path_str(dir.path());
    let s = dev_server(&data, &[]);
    let key = public_key(&s).await;
    for i in 0..5 {
        put_secret(&s, &format!("acme/web/prod/m{i}")).await;
    }
    assert!(s.terminate().success());
    let main = dir.path().join("vern.db");
    let old = dir.path().join("vern-audit.db");
    let mut last = 0;
    for (round, db) in [(1, &main), (2, &old)] {
        let moved = to_key_value_layout(dir.path(), db).await;
        assert!(moved >= last.max(1), "{moved} {last}");
        let s = dev_server(&data, &[]);
        assert!(
            s.stderr_text().contains("Moved the audit log."),
            "{}",
            s.stderr_text()
        );
        put_secret(&s, &format!("acme/web/prod/after{round}")).await;
        assert!(s.terminate().success());
        let store = vern_store::open(&format!("sqlite:{}", main.display()), 1)
            .await
            .unwrap();
        assert!(store
            .list(vern_audit::layout::PREFIX, None, 1)
            .await
            .unwrap()
            .is_empty());
        assert!(!old.exists(), "the emptied old audit database is removed");
        let report = verify_audit_storage(&main, &key);
        assert_eq!(report["intact"], true, "{report}");
        last = report["records"].as_u64().unwrap();
        assert!(last > moved, "{report}: the moved records and the new ones");
    }
}

/// Rewrites the segment files of the server in `data` as an older version
/// kept the log: keys of the key-value store in `db`. Returns the number
/// of records.
async fn to_key_value_layout(data: &std::path::Path, db: &std::path::Path) -> u64 {
    use vern_audit::layout;
    use vern_store::{Key, Write};
    let mut writes = Vec::new();
    let mut head = None;
    for line in audit_segments(data).lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let seq = v["seq"].as_u64().unwrap();
        let (key, tag) = if v["type"] == "record" {
            head = Some(json!({"seq": seq, "hash": v["hash"]}));
            (layout::record(seq), r#"{"type":"record","#)
        } else {
            (layout::checkpoint(seq), r#"{"type":"checkpoint","#)
        };
        let stored = format!("{{{}", line.strip_prefix(tag).unwrap());
        writes.push(Write::put(Key::new(&key).unwrap(), stored.into_bytes()));
    }
    let head = head.unwrap();
    writes.push(Write::put(
        Key::new(layout::HEAD).unwrap(),
        serde_json::to_vec(&head).unwrap(),
    ));
    let store = vern_store::open(&format!("sqlite:{}", db.display()), 1)
        .await
        .unwrap();
    store.commit(writes).await.unwrap();
    std::fs::remove_dir_all(data.join("vern-audit")).unwrap();
    head["seq"].as_u64().unwrap()
}
