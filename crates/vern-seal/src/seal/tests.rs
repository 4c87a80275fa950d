use super::*;

fn clock() -> Arc<dyn Clock> {
    Arc::new(vern_core::ManualClock::new(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000),
    ))
}

async fn new_seal(store: &Arc<dyn Store>) -> Seal {
    Seal::new(Arc::clone(store), clock()).await.unwrap()
}

fn clear(shares: Vec<IssuedShare>) -> Vec<Share> {
    shares
        .into_iter()
        .map(|s| match s {
            IssuedShare::Clear(s) => s,
            IssuedShare::Encrypted(_) => panic!("expected clear shares"),
        })
        .collect()
}

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
    let seal = new_seal(&store).await;
    let status = seal.status().await.unwrap();
    assert!(!status.initialized && status.sealed);
    assert!(matches!(
        seal.unseal("00").await,
        Err(SealError::NotInitialized)
    ));

    let out = seal.init(5, 3, &[], None).await.unwrap();
    let shares = clear(out.shares);
    assert_eq!(shares.len(), 5);
    assert!(out.root_token.expose().starts_with(b"vern.r."));
    assert!(matches!(seal.barrier(), Err(SealError::Sealed)));
    assert!(matches!(
        seal.init(5, 3, &[], None).await,
        Err(SealError::AlreadyInitialized)
    ));

    let s = seal.unseal(&hex_of(&shares[4])).await.unwrap();
    assert_eq!(
        (s.sealed, s.progress, s.threshold, s.shares),
        (true, 1, 3, 5)
    );
    assert!(!s.nonce.is_empty());
    // The same share twice does not count twice.
    assert!(matches!(
        seal.unseal(&hex_of(&shares[4])).await,
        Err(SealError::BadShare(_))
    ));
    // base64 is accepted as well as hex.
    let b64 = base64::engine::general_purpose::STANDARD.encode(shares[0].expose());
    assert_eq!(seal.unseal(&b64).await.unwrap().progress, 2);
    let s = seal.unseal(&hex_of(&shares[2])).await.unwrap();
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
    let seal = new_seal(&store).await;
    let out = seal.init(3, 2, &[], None).await.unwrap();
    let shares = clear(out.shares);

    // Shares of another deployment reconstruct a different key.
    let (other_store, _dir2) = sqlite_store().await;
    let other = clear(
        new_seal(&other_store)
            .await
            .init(3, 2, &[], None)
            .await
            .unwrap()
            .shares,
    );
    seal.unseal(&hex_of(&shares[0])).await.unwrap();
    let err = seal.unseal(&hex_of(&other[1])).await.unwrap_err();
    assert!(matches!(err, SealError::WrongShares), "{err}");
    let s = seal.status().await.unwrap();
    assert!(s.sealed);
    assert_eq!(s.progress, 0);

    // A corrupted share is caught the same way.
    let mut bad = shares[1].expose().to_vec();
    bad[5] ^= 0xff;
    seal.unseal(&hex_of(&shares[0])).await.unwrap();
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
    seal.unseal(&hex_of(&shares[2])).await.unwrap();
    assert_eq!(seal.reset_unseal().await.unwrap().progress, 0);
    seal.unseal(&hex_of(&shares[2])).await.unwrap();
    assert!(!seal.unseal(&hex_of(&shares[1])).await.unwrap().sealed);
}

#[tokio::test]
async fn a_restarted_process_starts_sealed_and_reads_data_after_unseal() {
    let (store, _dir) = sqlite_store().await;
    let seal = new_seal(&store).await;
    let out = seal
        .init(1, 1, &[], Some(SecretBytes::new(b"dev-root".to_vec())))
        .await
        .unwrap();
    let shares = clear(out.shares);
    seal.unseal(&hex_of(&shares[0])).await.unwrap();
    let k = Key::new("data/x").unwrap();
    seal.barrier()
        .unwrap()
        .commit(vec![RawWrite {
            key: k.clone(),
            value: Some(SecretBytes::new(b"kept".to_vec())),
            expect: Expect::Absent,
        }])
        .await
        .unwrap();
    drop(seal);

    let again = new_seal(&store).await;
    let s = again.status().await.unwrap();
    assert!(s.initialized && s.sealed);
    assert_eq!((s.threshold, s.shares), (1, 1));
    again.unseal(&hex_of(&shares[0])).await.unwrap();
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
    let seal = new_seal(&store).await;
    for (n, t) in [(0, 0), (3, 4), (5, 1), (2, 0)] {
        assert!(
            matches!(
                seal.init(n, t, &[], None).await,
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
            Seal::new(store, clock())
                .await
                .unwrap()
                .init(3, 2, &[], None)
                .await
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
    let seal = new_seal(&store).await;
    let out = seal.init(3, 2, &[], None).await.unwrap();
    let shares = clear(out.shares);
    seal.unseal(&hex_of(&shares[0])).await.unwrap();
    seal.unseal(&hex_of(&shares[1])).await.unwrap();
    let root_key = vern_crypto::combine(&shares[..2]).unwrap();
    drop(seal);
    drop(store);
    let mut needles: Vec<Vec<u8>> =
        vec![root_key.expose().to_vec(), out.root_token.expose().to_vec()];
    needles.extend(shares.iter().map(|s| s.expose().to_vec()));
    needles.extend(shares.iter().map(|s| hex_of(s).into_bytes()));
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

#[tokio::test]
async fn shares_can_be_encrypted_to_age_recipients() {
    let (store, _dir) = sqlite_store().await;
    let seal = new_seal(&store).await;
    let ids: Vec<age::x25519::Identity> =
        (0..3).map(|_| age::x25519::Identity::generate()).collect();
    let recipients: Vec<String> = ids.iter().map(|i| i.to_public().to_string()).collect();

    let err = seal.init(3, 2, &recipients[..2], None).await.unwrap_err();
    assert!(
        err.to_string().contains("one age recipient per share"),
        "{err}"
    );
    let mut bad = recipients.clone();
    bad[1] = "age1notarecipient".to_owned();
    assert!(matches!(
        seal.init(3, 2, &bad, None).await,
        Err(SealError::InvalidParameters(_))
    ));
    assert!(
        !seal.is_initialized().await.unwrap(),
        "bad recipients write nothing"
    );

    let out = seal.init(3, 2, &recipients, None).await.unwrap();
    let mut hex_shares = Vec::new();
    for (issued, id) in out.shares.iter().zip(&ids) {
        let IssuedShare::Encrypted(armored) = issued else {
            panic!("expected an encrypted share")
        };
        let plain = age::decrypt(id, armored.as_bytes()).unwrap();
        hex_shares.push(String::from_utf8(plain).unwrap());
    }
    // Each share opens only with its own operator's identity.
    let IssuedShare::Encrypted(first) = &out.shares[0] else {
        panic!()
    };
    assert!(age::decrypt(&ids[1], first.as_bytes()).is_err());
    seal.unseal(&hex_shares[2]).await.unwrap();
    assert!(!seal.unseal(&hex_shares[0]).await.unwrap().sealed);
}

#[tokio::test]
async fn lost_shares_are_reissued_identically_while_unsealed() {
    let (store, _dir) = sqlite_store().await;
    let seal = new_seal(&store).await;
    let shares = clear(seal.init(5, 3, &[], None).await.unwrap().shares);
    assert!(matches!(seal.share(1).await, Err(SealError::Sealed)));
    for s in &shares[..3] {
        seal.unseal(&hex_of(s)).await.unwrap();
    }
    for (id, s) in (1u8..).zip(&shares) {
        assert_eq!(&seal.share(id).await.unwrap(), s);
    }
    assert!(seal.share(6).await.is_err());
    assert_eq!(seal.share_parameters().await.unwrap(), (5, 3));
}

#[tokio::test]
async fn rekey_replaces_the_root_key_and_share_set() {
    let (store, _dir) = sqlite_store().await;
    let seal = new_seal(&store).await;
    let old = clear(seal.init(3, 2, &[], None).await.unwrap().shares);
    assert!(matches!(
        seal.rekey_init(5, 3, &[]).await,
        Err(SealError::Sealed)
    ));
    seal.unseal(&hex_of(&old[0])).await.unwrap();
    seal.unseal(&hex_of(&old[1])).await.unwrap();
    let k = Key::new("data/kept").unwrap();
    seal.barrier()
        .unwrap()
        .commit(vec![RawWrite {
            key: k.clone(),
            value: Some(SecretBytes::new(b"v".to_vec())),
            expect: Expect::Any,
        }])
        .await
        .unwrap();
    seal.rotate_keyring().await.unwrap();

    assert!(matches!(
        seal.rekey_init(2, 3, &[]).await,
        Err(SealError::InvalidParameters(_))
    ));
    let status = seal.rekey_init(5, 3, &[]).await.unwrap();
    assert!(status.started);
    assert_eq!(
        (
            status.shares,
            status.threshold,
            status.required,
            status.progress
        ),
        (5, 3, 2, 0)
    );
    let err = seal
        .rekey_update(&hex_of(&old[0]), "wrong-nonce")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nonce"), "{err}");

    // Wrong shares abandon the rotation and change nothing.
    let foreign = clear(
        new_seal(&sqlite_store().await.0)
            .await
            .init(3, 2, &[], None)
            .await
            .unwrap()
            .shares,
    );
    seal.rekey_update(&hex_of(&old[0]), &status.nonce)
        .await
        .unwrap();
    assert!(matches!(
        seal.rekey_update(&hex_of(&foreign[1]), &status.nonce).await,
        Err(SealError::WrongShares)
    ));
    assert!(!seal.rekey_status().await.unwrap().started);

    let status = seal.rekey_init(5, 3, &[]).await.unwrap();
    let RekeyOutcome::Pending(p) = seal
        .rekey_update(&hex_of(&old[2]), &status.nonce)
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(p.progress, 1);
    let RekeyOutcome::Complete { shares: new, .. } = seal
        .rekey_update(&hex_of(&old[0]), &status.nonce)
        .await
        .unwrap()
    else {
        panic!("expected completion")
    };
    let new = clear(new);
    assert_eq!(new.len(), 5);
    assert_eq!(seal.status().await.unwrap().threshold, 3);
    // Still unsealed and reading.
    assert_eq!(
        seal.barrier()
            .unwrap()
            .get(&k)
            .await
            .unwrap()
            .unwrap()
            .value
            .expose(),
        b"v"
    );

    // After a restart the old shares are useless and the new ones unseal.
    let again = new_seal(&store).await;
    again.unseal(&hex_of(&old[0])).await.unwrap();
    again.unseal(&hex_of(&old[1])).await.unwrap();
    assert!(matches!(
        again.unseal(&hex_of(&old[2])).await,
        Err(SealError::WrongShares)
    ));
    for s in &new[1..4] {
        again.unseal(&hex_of(s)).await.unwrap();
    }
    assert!(!again.is_sealed());
    assert_eq!(
        again
            .barrier()
            .unwrap()
            .get(&k)
            .await
            .unwrap()
            .unwrap()
            .value
            .expose(),
        b"v"
    );
    assert_eq!(again.key_status().unwrap().term, 2);
}
