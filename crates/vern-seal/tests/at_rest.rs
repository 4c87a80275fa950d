//! Nothing secret is stored in clear: after writing known secret values
//! through the barrier, a byte scan of the SQLite files and of a `pg_dump`
//! of the PostgreSQL database finds none of them, nor the root key, the
//! shares or the root token, in raw, hex or base64 form.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use std::sync::Arc;

use base64::Engine as _;
use vern_core::SystemClock;
use vern_crypto::SecretBytes;
use vern_seal::{BarrierWrite, Expect, IssuedShare, Seal};
use vern_store::Store;

/// Writes secrets and returns every byte string that must not be stored.
async fn write_secrets(store: Arc<dyn Store>) -> Vec<Vec<u8>> {
    let seal = Seal::new(store, Arc::new(SystemClock)).await.unwrap();
    let out = seal.init(5, 3, &[], None).await.unwrap();
    let shares: Vec<SecretBytes> = out
        .shares
        .into_iter()
        .map(|s| match s {
            IssuedShare::Clear(s) => s,
            IssuedShare::Encrypted(_) => panic!("clear shares expected"),
        })
        .collect();
    for s in &shares[..3] {
        seal.unseal(&hex::encode(s.expose())).await.unwrap();
    }
    let marker = uuid::Uuid::new_v4().simple().to_string();
    let values = [
        format!("correct-horse-battery-staple-{marker}").into_bytes(),
        format!("postgres://app:hunter2-{marker}@db/app").into_bytes(),
        (0..=255u8).chain(marker.bytes()).collect::<Vec<u8>>(),
    ];
    let barrier = seal.barrier().unwrap();
    let kv = barrier.view("kv/secret/").unwrap();
    for (i, v) in values.iter().enumerate() {
        kv.commit(vec![BarrierWrite {
            key: format!("data/tenant-a/app/prod/s{i}/1"),
            value: Some(SecretBytes::new(v.clone())),
            expect: Expect::Absent,
        }])
        .await
        .unwrap();
    }
    // A keyring rotation re-encrypts the keyring; the scan covers both terms.
    seal.rotate_keyring().await.unwrap();
    kv.commit(vec![BarrierWrite {
        key: "data/tenant-a/app/prod/after-rotation/1".to_owned(),
        value: Some(SecretBytes::new(values[0].clone())),
        expect: Expect::Absent,
    }])
    .await
    .unwrap();

    let root_key = vern_crypto::combine(&shares[..3]).unwrap();
    let mut needles: Vec<Vec<u8>> = values.to_vec();
    needles.push(root_key.expose().to_vec());
    needles.push(out.root_token.expose().to_vec());
    needles.extend(shares.iter().map(|s| s.expose().to_vec()));
    needles
}

/// Every form in which a needle could sit in a file or a dump.
fn forms(needle: &[u8]) -> Vec<Vec<u8>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    vec![
        needle.to_vec(),
        hex::encode(needle).into_bytes(),
        hex::encode_upper(needle).into_bytes(),
        b64.encode(needle).into_bytes(),
    ]
}

fn assert_absent(haystack: &[u8], needles: &[Vec<u8>], what: &str) {
    assert!(
        !haystack.is_empty(),
        "{what} is empty: the scan would prove nothing"
    );
    for (i, n) in needles.iter().enumerate() {
        for form in forms(n) {
            assert!(
                !haystack.windows(form.len()).any(|w| w == form.as_slice()),
                "secret {i} found in clear in {what}"
            );
        }
    }
}

#[tokio::test]
async fn sqlite_files_hold_no_secret_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("vern.db").display());
    let needles = write_secrets(vern_store::open(&url, 2).await.unwrap()).await;
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        all.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    // The scan must be able to see stored data at all: the keys are there.
    assert!(all.windows(12).any(|w| w == b"data/tenant-"));
    assert_absent(&all, &needles, "the SQLite files");
}

fn pg_dump() -> std::path::PathBuf {
    let mut found: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path().join("bin/pg_dump"))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
        .into_iter()
        .rev()
        .find(|p| p.exists())
        .unwrap_or_else(|| "pg_dump".into())
}

#[tokio::test]
async fn a_pg_dump_holds_no_secret_in_clear() {
    let Some(url) = vern_store::testing::fresh_postgres_url().await else {
        return;
    };
    let needles = write_secrets(vern_store::open(&url, 2).await.unwrap()).await;
    let out = std::process::Command::new(pg_dump())
        .arg("--dbname")
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.windows(12).any(|w| w == b"data/tenant-"));
    assert_absent(&out.stdout, &needles, "the pg_dump");
}
