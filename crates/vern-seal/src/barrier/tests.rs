use super::*;

async fn barrier() -> (Barrier, Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("db").display());
    let store = vern_store::open(&url, 1).await.unwrap();
    let root = DataKey::generate();
    let keyring = Keyring::generate(1);
    store
        .commit(vec![Write::put(
            keyring_key().unwrap(),
            seal_keyring(&root, &keyring),
        )])
        .await
        .unwrap();
    (Barrier::new(Arc::clone(&store), root, keyring), store, dir)
}

fn put(key: &str, value: &[u8]) -> RawWrite {
    RawWrite {
        key: Key::new(key).unwrap(),
        value: Some(SecretBytes::new(value.to_vec())),
        expect: Expect::Any,
    }
}

#[tokio::test]
async fn ciphertext_moved_to_another_row_fails_to_decrypt() {
    let (b, store, _dir) = barrier().await;
    b.commit(vec![put(
        "secret/tenant-a/app/prod/db/1",
        b"alpha-password",
    )])
    .await
    .unwrap();
    let a = Key::new("secret/tenant-a/app/prod/db/1").unwrap();
    let raw = store.get(&a).await.unwrap().unwrap().value;
    assert!(!raw.windows(14).any(|w| w == b"alpha-password"));

    for target in [
        "secret/tenant-b/app/prod/db/1",
        "secret/tenant-a/app/prod/db/2",
    ] {
        let moved = Key::new(target).unwrap();
        store
            .commit(vec![Write::put(moved.clone(), raw.clone())])
            .await
            .unwrap();
        let err = b.get(&moved).await.unwrap_err();
        assert!(
            matches!(err, SealError::Corrupt(ref k) if k == target),
            "{err}"
        );
    }
    assert_eq!(
        b.get(&a).await.unwrap().unwrap().value.expose(),
        b"alpha-password"
    );
}

#[tokio::test]
async fn tampering_and_unknown_terms_are_detected() {
    let (b, store, _dir) = barrier().await;
    b.commit(vec![put("x", b"value")]).await.unwrap();
    let k = Key::new("x").unwrap();
    let raw = store.get(&k).await.unwrap().unwrap().value;
    for i in 0..raw.len() {
        let mut bad = raw.clone();
        bad[i] ^= 0x01;
        store
            .commit(vec![Write::put(k.clone(), bad)])
            .await
            .unwrap();
        assert!(
            matches!(b.get(&k).await, Err(SealError::Corrupt(_))),
            "byte {i}"
        );
    }
    store
        .commit(vec![Write::put(k.clone(), vec![0, 0])])
        .await
        .unwrap();
    assert!(matches!(b.get(&k).await, Err(SealError::Corrupt(_))));
}

#[tokio::test]
async fn reserved_keys_are_refused_and_hidden() {
    let (b, _store, _dir) = barrier().await;
    let err = b
        .commit(vec![put("core/seal/keyring", b"x")])
        .await
        .unwrap_err();
    assert!(matches!(err, SealError::Reserved(_)));
    assert!(b.get(&Key::new("core/seal/config").unwrap()).await.is_err());
    b.commit(vec![put("core/other", b"x")]).await.unwrap();
    assert_eq!(b.list("", None, 10).await.unwrap(), ["core/other"]);
    assert_eq!(b.list("core/", None, 10).await.unwrap(), ["core/other"]);
    assert!(b.list("core/seal/", None, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn rotation_keeps_old_data_readable_and_replicas_follow() {
    let (b, store, _dir) = barrier().await;
    b.commit(vec![put("old", b"written under term 1")])
        .await
        .unwrap();
    // A second replica unlocked with the same root key.
    let replica = Barrier::unlock(Arc::clone(&store), b.root().clone())
        .await
        .unwrap();

    let status = b.rotate(50).await.unwrap();
    assert_eq!((status.term, status.installed, status.terms), (2, 50, 2));
    b.commit(vec![put("new", b"written under term 2")])
        .await
        .unwrap();
    let raw = store
        .get(&Key::new("new").unwrap())
        .await
        .unwrap()
        .unwrap()
        .value;
    assert_eq!(&raw[..4], &2u32.to_be_bytes());

    // The replica has never heard of term 2, reloads, and reads both.
    assert_eq!(replica.key_status().unwrap().term, 1);
    for (k, v) in [
        ("old", &b"written under term 1"[..]),
        ("new", b"written under term 2"),
    ] {
        assert_eq!(
            replica
                .get(&Key::new(k).unwrap())
                .await
                .unwrap()
                .unwrap()
                .value
                .expose(),
            v
        );
    }
    assert_eq!(replica.key_status().unwrap().term, 2);

    // Concurrent rotations on two replicas both land, as consecutive terms.
    let (x, y) = tokio::join!(b.rotate(60), replica.rotate(61));
    let mut terms = [x.unwrap().term, y.unwrap().term];
    terms.sort();
    assert_eq!(terms, [3, 4]);
}

#[tokio::test]
async fn a_wrong_root_key_cannot_unlock() {
    let (_b, store, _dir) = barrier().await;
    let err = Barrier::unlock(store, DataKey::generate())
        .await
        .unwrap_err();
    assert!(matches!(err, SealError::WrongShares));
}
