use super::*;

async fn sqlite_store() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("db").display());
    (vern_store::open(&url, 2).await.unwrap(), dir)
}

fn hex_of(s: &Share) -> String {
    hex::encode(s.expose())
}

#[tokio::test]
async fn init_then_unseal_with_a_threshold_of_shares() {
    let (store, _dir) = sqlite_store().await;
    let seal = Seal::new(Arc::clone(&store)).await.unwrap();
    let status = seal.status().await.unwrap();
    assert!(!status.initialized && status.sealed);
    assert!(matches!(
        seal.unseal("00").await,
        Err(SealError::NotInitialized)
    ));

    let out = seal.init(5, 3, None).await.unwrap();
    assert_eq!(out.shares.len(), 5);
    assert!(out.root_token.expose().starts_with(b"vern.r."));
    assert!(matches!(seal.barrier(), Err(SealError::Sealed)));
    assert!(matches!(
        seal.init(5, 3, None).await,
        Err(SealError::AlreadyInitialized)
    ));

    let s = seal.unseal(&hex_of(&out.shares[4])).await.unwrap();
    assert_eq!(
        (s.sealed, s.progress, s.threshold, s.shares),
        (true, 1, 3, 5)
    );
    assert!(!s.nonce.is_empty());
    // The same share twice does not count twice.
    assert!(matches!(
        seal.unseal(&hex_of(&out.shares[4])).await,
        Err(SealError::BadShare(_))
    ));
    // base64 is accepted as well as hex.
    let b64 = base64::engine::general_purpose::STANDARD.encode(out.shares[0].expose());
    assert_eq!(seal.unseal(&b64).await.unwrap().progress, 2);
    let s = seal.unseal(&hex_of(&out.shares[2])).await.unwrap();
    assert_eq!((s.sealed, s.progress, s.nonce.as_str()), (false, 0, ""));

    assert!(seal.is_root_token(out.root_token.expose()).await.unwrap());
    assert!(!seal.is_root_token(b"vern.r.guess").await.unwrap());

    seal.seal().await;
    assert!(seal.is_sealed());
    assert!(matches!(
        seal.is_root_token(out.root_token.expose()).await,
        Err(SealError::Sealed)
    ));
}

#[tokio::test]
async fn wrong_shares_reset_progress_and_stay_sealed() {
    let (store, _dir) = sqlite_store().await;
    let seal = Seal::new(Arc::clone(&store)).await.unwrap();
    let out = seal.init(3, 2, None).await.unwrap();

    // Shares of another deployment reconstruct a different key.
    let (other_store, _dir2) = sqlite_store().await;
    let other = Seal::new(other_store)
        .await
        .unwrap()
        .init(3, 2, None)
        .await
        .unwrap();
    seal.unseal(&hex_of(&out.shares[0])).await.unwrap();
    let err = seal.unseal(&hex_of(&other.shares[1])).await.unwrap_err();
    assert!(matches!(err, SealError::WrongShares), "{err}");
    let s = seal.status().await.unwrap();
    assert!(s.sealed);
    assert_eq!(s.progress, 0);

    // A corrupted share is caught the same way.
    let mut bad = out.shares[1].expose().to_vec();
    bad[5] ^= 0xff;
    seal.unseal(&hex_of(&out.shares[0])).await.unwrap();
    assert!(matches!(
        seal.unseal(&hex::encode(&bad)).await,
        Err(SealError::WrongShares)
    ));

    for junk in ["", "zz", "abcd", &"a".repeat(200)] {
        assert!(
            matches!(seal.unseal(junk).await, Err(SealError::BadShare(_))),
            "{junk:?}"
        );
    }
    seal.unseal(&hex_of(&out.shares[2])).await.unwrap();
    assert_eq!(seal.reset_unseal().await.unwrap().progress, 0);
    seal.unseal(&hex_of(&out.shares[2])).await.unwrap();
    assert!(!seal.unseal(&hex_of(&out.shares[1])).await.unwrap().sealed);
}

#[tokio::test]
async fn a_restarted_process_starts_sealed_and_reads_data_after_unseal() {
    let (store, _dir) = sqlite_store().await;
    let seal = Seal::new(Arc::clone(&store)).await.unwrap();
    let out = seal
        .init(1, 1, Some(SecretBytes::new(b"dev-root".to_vec())))
        .await
        .unwrap();
    seal.unseal(&hex_of(&out.shares[0])).await.unwrap();
    let k = Key::new("data/x").unwrap();
    seal.barrier()
        .unwrap()
        .commit(vec![BarrierWrite {
            key: k.clone(),
            value: Some(SecretBytes::new(b"kept".to_vec())),
            expect: Expect::Absent,
        }])
        .await
        .unwrap();
    drop(seal);

    let again = Seal::new(Arc::clone(&store)).await.unwrap();
    let s = again.status().await.unwrap();
    assert!(s.initialized && s.sealed);
    assert_eq!((s.threshold, s.shares), (1, 1));
    again.unseal(&hex_of(&out.shares[0])).await.unwrap();
    let got = again.barrier().unwrap().get(&k).await.unwrap().unwrap();
    assert_eq!(got.value.expose(), b"kept");
    assert!(again.is_root_token(b"dev-root").await.unwrap());
    again
        .replace_root_token(&SecretBytes::new(b"new-root".to_vec()))
        .await
        .unwrap();
    assert!(!again.is_root_token(b"dev-root").await.unwrap());
    assert!(again.is_root_token(b"new-root").await.unwrap());
}

#[tokio::test]
async fn invalid_parameters_write_nothing() {
    let (store, _dir) = sqlite_store().await;
    let seal = Seal::new(Arc::clone(&store)).await.unwrap();
    for (n, t) in [(0, 0), (3, 4), (5, 1), (2, 0)] {
        assert!(
            matches!(
                seal.init(n, t, None).await,
                Err(SealError::InvalidParameters(_))
            ),
            "{t} of {n}"
        );
    }
    assert!(store.list("", None, 10).await.unwrap().is_empty());
    assert!(!seal.is_initialized().await.unwrap());
}

#[tokio::test]
async fn concurrent_inits_have_one_winner() {
    let (store, _dir) = sqlite_store().await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            Seal::new(store).await.unwrap().init(3, 2, None).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(SealError::AlreadyInitialized) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(ok, 1);
}

#[tokio::test]
async fn no_key_material_is_stored_in_clear() {
    let (store, dir) = sqlite_store().await;
    let seal = Seal::new(Arc::clone(&store)).await.unwrap();
    let out = seal.init(3, 2, None).await.unwrap();
    seal.unseal(&hex_of(&out.shares[0])).await.unwrap();
    seal.unseal(&hex_of(&out.shares[1])).await.unwrap();
    let root_key = vern_crypto::combine(&out.shares[..2]).unwrap();
    drop(seal);
    drop(store);
    let mut needles: Vec<Vec<u8>> =
        vec![root_key.expose().to_vec(), out.root_token.expose().to_vec()];
    needles.extend(out.shares.iter().map(|s| s.expose().to_vec()));
    needles.extend(out.shares.iter().map(|s| hex_of(s).into_bytes()));
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        for n in &needles {
            assert!(
                !bytes.windows(n.len()).any(|w| w == n.as_slice()),
                "key material found on disk"
            );
        }
    }
}
