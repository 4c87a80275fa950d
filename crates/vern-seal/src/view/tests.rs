use std::sync::Arc;

use vern_store::Store;

use super::*;
use crate::barrier::{keyring_key, seal_keyring};
use crate::keyring::Keyring;

async fn barrier() -> (Barrier, Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("db").display());
    let store = vern_store::open(&url, 1).await.unwrap();
    let root = vern_crypto::DataKey::generate();
    let keyring = Keyring::generate(1);
    store
        .commit(vec![vern_store::Write::put(
            keyring_key().unwrap(),
            seal_keyring(&root, &keyring),
        )])
        .await
        .unwrap();
    (Barrier::new(Arc::clone(&store), root, keyring), store, dir)
}

fn put(key: &str, value: &[u8]) -> BarrierWrite {
    BarrierWrite {
        key: key.to_owned(),
        value: Some(SecretBytes::new(value.to_vec())),
        expect: Expect::Any,
    }
}

fn is_bad_key(result: Result<impl std::fmt::Debug, SealError>) -> bool {
    matches!(result, Err(SealError::BadKey { .. }))
}

#[tokio::test]
async fn keys_are_relative_to_the_prefix() {
    let (b, store, _dir) = barrier().await;
    let kv = b.view("kv/secret/").unwrap();
    assert_eq!(kv.prefix(), "kv/secret/");
    kv.commit(vec![put("meta/acme/app/prod/db", b"v")])
        .await
        .unwrap();
    // Stored under the absolute key, encrypted with it as associated data.
    let absolute = Key::new("kv/secret/meta/acme/app/prod/db").unwrap();
    assert!(store.get(&absolute).await.unwrap().is_some());
    let got = kv.get("meta/acme/app/prod/db").await.unwrap().unwrap();
    assert_eq!(got.value.expose(), b"v");
    let many = kv
        .get_many(&["none", "meta/acme/app/prod/db"])
        .await
        .unwrap();
    assert!(many[0].is_none());
    assert_eq!(many[1].as_ref().unwrap().value.expose(), b"v");
    assert_eq!(
        kv.list("meta/", None, 10).await.unwrap(),
        ["meta/acme/app/prod/db"]
    );
}

#[tokio::test]
async fn a_view_cannot_read_outside_its_prefix() {
    let (b, _store, _dir) = barrier().await;
    b.view("kv/a/")
        .unwrap()
        .commit(vec![put("db", b"tenant a")])
        .await
        .unwrap();
    b.view("authority/")
        .unwrap()
        .commit(vec![put("hmac-key", b"k")])
        .await
        .unwrap();

    let other = b.view("kv/b/").unwrap();
    // The same relative key names the other view's own row, not a's.
    assert!(other.get("db").await.unwrap().is_none());
    for escape in [
        "../a/db",
        "x/../../a/db",
        "./db",
        "..",
        ".",
        "/db",
        "",
        "../../authority/hmac-key",
    ] {
        assert!(is_bad_key(other.get(escape).await), "{escape:?}");
        // One escaping key refuses the whole batch.
        assert!(
            is_bad_key(other.get_many(&["db", escape]).await),
            "{escape:?}"
        );
    }
    // A sibling whose name extends the prefix is not inside it.
    assert!(b.view("kv/").unwrap().get("a/db").await.unwrap().is_some());
    assert!(b.view("kv/a/").unwrap().list("", None, 10).await.unwrap() == ["db"]);
    b.view("kv/ab/")
        .unwrap()
        .commit(vec![put("x", b"sibling")])
        .await
        .unwrap();
    assert_eq!(
        b.view("kv/a/").unwrap().list("", None, 10).await.unwrap(),
        ["db"]
    );
}

#[tokio::test]
async fn a_view_cannot_write_outside_its_prefix() {
    let (b, store, _dir) = barrier().await;
    let view = b.view("kv/b/").unwrap();
    for escape in ["../a/db", "x/../../a/db", "./db", "/db", ""] {
        // One refused key refuses the whole batch: the good write is not
        // made either.
        let result = view
            .commit(vec![put("fine", b"1"), put(escape, b"2")])
            .await;
        assert!(is_bad_key(result), "{escape:?}");
    }
    assert!(store.list("", None, 10).await.unwrap() == ["core/seal/keyring"]);
    for escape in ["../", "x", "./", "/"] {
        assert!(is_bad_key(view.list(escape, None, 10).await), "{escape:?}");
    }
}

#[test]
fn prefixes_are_fixed_and_well_formed() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (b, _store, _dir) = rt.block_on(barrier());
    for good in ["kv/secret/", "authority/", "core/audit/", "core/"] {
        assert!(b.view(good).is_ok(), "{good:?}");
    }
    for bad in [
        "",
        "/",
        "kv",
        "kv/secret",
        "/kv/",
        "kv//",
        "kv/../",
        "kv/./",
        "../",
        "core/seal/",
        "core/seal/x/",
        "kv/\n/",
    ] {
        assert!(is_bad_key(b.view(bad)), "{bad:?}");
    }
}

#[tokio::test]
async fn the_seal_keys_stay_refused_through_a_wide_view() {
    let (b, _store, _dir) = barrier().await;
    let core = b.view("core/").unwrap();
    assert!(matches!(
        core.get("seal/keyring").await,
        Err(SealError::Reserved(_))
    ));
    assert!(matches!(
        core.commit(vec![put("seal/keyring", b"x")]).await,
        Err(SealError::Reserved(_))
    ));
    core.commit(vec![put("cluster", b"c")]).await.unwrap();
    assert_eq!(core.list("", None, 10).await.unwrap(), ["cluster"]);
}

#[tokio::test]
async fn a_lost_compare_and_set_is_a_conflict() {
    let (b, _store, _dir) = barrier().await;
    let view = b.view("authority/").unwrap();
    let create = || BarrierWrite {
        key: "hmac-key".to_owned(),
        value: Some(SecretBytes::new(b"k".to_vec())),
        expect: Expect::Absent,
    };
    view.commit(vec![create()]).await.unwrap();
    let err = view.commit(vec![create()]).await.unwrap_err();
    assert!(
        matches!(err, SealError::Conflict { ref key } if key == "authority/hmac-key"),
        "{err}"
    );
}
