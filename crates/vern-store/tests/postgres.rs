//! PostgreSQL-only behaviour: what happens to reads when the database
//! drops the store's connections.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Duration;

use vern_store::{Key, Write};

fn key(s: &str) -> Key {
    Key::new(s).unwrap()
}

/// Reads in flight when PostgreSQL terminates every connection of the
/// database each end, with the right entry or an error (none hangs), and
/// the reads after it are answered again over new connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_survive_dropped_connections() {
    let Some(url) = vern_store::testing::fresh_postgres_url().await else {
        return;
    };
    let store = vern_store::open(&url, 4).await.unwrap();
    store
        .commit(vec![Write::put(key("drop/k"), b"v".to_vec())])
        .await
        .unwrap();
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);

    let readers: Vec<_> = (0..64)
        .map(|_| {
            let store = std::sync::Arc::clone(&store);
            tokio::spawn(async move {
                let mut answered = 0;
                for _ in 0..50 {
                    if let Ok(got) = store.get(&key("drop/k")).await {
                        assert_eq!(got.unwrap().value, b"v");
                        answered += 1;
                    }
                }
                answered
            })
        })
        .collect();
    let terminated = admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(terminated > 0, "the store held no connection to drop");
    for r in readers {
        tokio::time::timeout(Duration::from_secs(30), r)
            .await
            .expect("a read hung after its connection was dropped")
            .unwrap();
    }

    let mut recovered = false;
    for _ in 0..20 {
        if let Ok(Some(e)) = store.get(&key("drop/k")).await {
            assert_eq!(e.value, b"v");
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        recovered,
        "no read was answered after the connections dropped"
    );
    let both = store
        .get_many(&[key("drop/k"), key("drop/absent")])
        .await
        .unwrap();
    assert_eq!(both[0].as_ref().unwrap().value, b"v");
    assert!(both[1].is_none());
}
