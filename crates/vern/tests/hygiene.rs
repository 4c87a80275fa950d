//! Bounded metrics, through the real binary: made-up HTTP methods do not
//! grow `/metrics`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

#[tokio::test]
async fn made_up_methods_do_not_grow_metrics() {
    let dir = temp();
    let d = path_str(dir.path());
    let s = dev_server(&d, &[]);
    let c = client();
    let paths = [
        "/metrics",
        "/v1/sys/health",
        "/nowhere",
        "/v1/secret/data/acme/web/prod/x",
    ];
    let metrics = async || {
        c.get(s.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    // Every path seen once with a real method, so the baseline has them.
    for p in paths {
        c.get(s.url(p)).send().await.unwrap();
    }
    let before = metrics().await;
    for i in 0..200 {
        let method = reqwest::Method::from_bytes(format!("FUZZ{i}X").as_bytes()).unwrap();
        let path = paths[i % paths.len()];
        c.request(method, s.url(path)).send().await.unwrap();
    }
    let after = metrics().await;
    assert!(!after.contains("FUZZ"), "{after}");
    assert!(after.contains(r#"method="other""#), "{after}");
    assert!(
        after.len() < before.len() + 32 * 1024,
        "/metrics grew from {} to {} bytes",
        before.len(),
        after.len()
    );
}
