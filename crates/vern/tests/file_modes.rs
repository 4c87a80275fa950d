//! Files Vern creates are its own: the data directory is 0700; the SQLite
//! databases with their `-wal`/`-shm` files (the main database has no
//! `-shm`: the server keeps its WAL index in memory), the dev unseal key and
//! an audit file are 0600. Existing wider modes are tightened at start, with a
//! warning.
#![cfg(unix)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use common::{dev_server, path_str, temp, Server};
use serde_json::json;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

async fn write_secret(s: &Server) {
    let status =
        common::write_secret(s, "root", "acme/web/prod/db", json!({"password": "p"})).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn data_files_are_created_owner_only() {
    let dir = temp();
    // A directory Vern creates itself, under a parent that is not its own.
    let data = dir.path().join("data");
    let audit = data.join("audit.jsonl");
    let s = dev_server(&path_str(&data), &["--audit-file", &path_str(&audit)]);
    write_secret(&s).await;
    assert_eq!(mode(&data), 0o700, "data directory");
    assert_eq!(mode(&data.join("vern-audit")), 0o700, "audit directory");
    assert!(!data.join("vern.db-shm").exists());
    for name in [
        "vern.db",
        "vern.db-wal",
        "vern-audit/LOCK",
        "vern-audit/00000000000000000001.jsonl",
        "dev-unseal-key.insecure",
        "audit.jsonl",
    ] {
        assert_eq!(mode(&data.join(name)), 0o600, "{name}");
    }
}

#[tokio::test]
async fn wider_modes_are_tightened_at_start_with_a_warning() {
    let dir = temp();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    // As an older Vern left it: a world-readable database (SQLite takes an
    // empty file as a new database).
    let db = data.join("vern.db");
    std::fs::write(&db, b"").unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();

    let s = dev_server(&path_str(&data), &[]);
    write_secret(&s).await;
    assert_eq!(mode(&data), 0o700);
    for name in ["vern.db", "vern.db-wal"] {
        assert_eq!(mode(&data.join(name)), 0o600, "{name}");
    }
    let log = s.stderr_text();
    assert!(
        log.contains("The data directory was open to other users"),
        "{log}"
    );
    assert!(
        log.contains("Database file was open to other users"),
        "{log}"
    );
}
