//! The seal's operator workflows through the CLI: shares encrypted to age
//! recipients and opened with the standard `age` tool, keyring rotation, and
//! root key rotation to a new share set.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

fn insecure_server(dir: &std::path::Path) -> Server {
    let d = path_str(dir);
    Server::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--insecure-listen",
            "--data-dir",
            &d,
        ],
        &[],
    )
}

fn ok_json(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "command failed: {}",
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `vern status` of a sealed server: exit 2, JSON still on stdout.
fn sealed_status(out: &std::process::Output) -> Value {
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The `age` tools are required: the test suite installs Debian's `age`.
fn age_tool(name: &str) -> Command {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "`{name}` is not installed; ./scripts/test installs Debian's age package"
    );
    Command::new(name)
}

#[tokio::test]
async fn shares_encrypted_to_age_recipients_open_with_the_age_tool_and_unseal() {
    let dir = temp();
    let s = insecure_server(&dir.path().join("data"));
    let env = [("VERN_ADDR", s.http())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let mut identities = Vec::new();
    let mut recipients = Vec::new();
    for i in 0..3 {
        let key_file = dir.path().join(format!("operator-{i}.key"));
        let out = age_tool("age-keygen")
            .arg("-o")
            .arg(&key_file)
            .output()
            .unwrap();
        assert!(out.status.success());
        let public = text(&out.stderr)
            .lines()
            .find_map(|l| l.strip_prefix("Public key: ").map(str::to_owned))
            .unwrap();
        identities.push(key_file);
        recipients.push(public);
    }
    let mut args = vec![
        "operator",
        "init",
        "--key-shares",
        "3",
        "--key-threshold",
        "2",
        "-o",
        "json",
    ];
    for r in &recipients {
        args.extend(["--share-recipient", r.as_str()]);
    }
    let init = ok_json(&vern(&args, &env));
    let keys = init["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 3);

    let mut opened = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let armored = key.as_str().unwrap();
        assert!(
            armored.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"),
            "{armored}"
        );
        let file = dir.path().join(format!("share-{i}.age"));
        std::fs::write(&file, armored).unwrap();
        let out = age_tool("age")
            .arg("-d")
            .arg("-i")
            .arg(&identities[i])
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success(), "age -d: {}", text(&out.stderr));
        opened.push(text(&out.stdout).trim().to_owned());
        // Another operator's identity cannot open it.
        let other = age_tool("age")
            .arg("-d")
            .arg("-i")
            .arg(&identities[(i + 1) % 3])
            .arg(&file)
            .output()
            .unwrap();
        assert!(!other.status.success());
    }
    vern(&["operator", "unseal", &opened[2]], &env);
    let out = vern(&["operator", "unseal", "-o", "json", &opened[0]], &env);
    assert_eq!(ok_json(&out)["sealed"], false);

    // Recipients must match the share count; nothing is written otherwise.
    let dir2 = temp();
    let s2 = insecure_server(dir2.path());
    let addr2 = s2.http();
    let out = vern(
        &[
            "operator",
            "init",
            "--key-shares",
            "3",
            "--share-recipient",
            &recipients[0],
        ],
        &[("VERN_ADDR", &addr2)],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("one age recipient per share"),
        "{}",
        text(&out.stderr)
    );
    let out = vern(
        &[
            "operator",
            "init",
            "--key-shares",
            "1",
            "--key-threshold",
            "1",
            "--share-recipient",
            "age1bogus",
        ],
        &[("VERN_ADDR", &addr2)],
    );
    assert!(
        text(&out.stderr).contains("is not an age recipient"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        vern(&["status"], &[("VERN_ADDR", &addr2)]).status.code(),
        Some(2)
    );
    let st = sealed_status(&vern(&["status", "-o", "json"], &[("VERN_ADDR", &addr2)]));
    assert_eq!(st["initialized"], false);
}

#[tokio::test]
async fn keyring_and_root_key_rotation_through_the_cli() {
    let dir = temp();
    let data = dir.path().join("data");
    let s = insecure_server(&data);
    let addr = s.http();
    let init = ok_json(&vern(
        &[
            "operator",
            "init",
            "--key-shares",
            "3",
            "--key-threshold",
            "2",
            "-o",
            "json",
        ],
        &[("VERN_ADDR", &addr)],
    ));
    let old: Vec<String> = init["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    let root = init["root_token"].as_str().unwrap().to_owned();
    let env = [("VERN_ADDR", addr.as_str()), ("VERN_TOKEN", root.as_str())];
    for k in &old[..2] {
        vern(&["operator", "unseal", k], &env);
    }

    let status = ok_json(&vern(&["operator", "key-status", "-o", "json"], &env));
    assert_eq!(status["term"], 1);
    let rotated = ok_json(&vern(&["operator", "rotate", "-o", "json"], &env));
    assert_eq!(
        (rotated["term"].as_u64(), rotated["terms"].as_u64()),
        (Some(2), Some(2))
    );
    assert!(rotated["install_time"].as_str().unwrap().ends_with('Z'));
    let out = vern(&["operator", "rotate"], &[("VERN_ADDR", addr.as_str())]);
    assert!(!out.status.success(), "rotation needs a token");

    // Root rotation: 3-of-2 → 4 shares, threshold 3.
    let started = ok_json(&vern(
        &[
            "operator",
            "rotate-root",
            "init",
            "--key-shares",
            "4",
            "--key-threshold",
            "3",
            "-o",
            "json",
        ],
        &env,
    ));
    let nonce = started["nonce"].as_str().unwrap().to_owned();
    assert_eq!(
        (started["required"].as_u64(), started["n"].as_u64()),
        (Some(2), Some(4))
    );
    let out = vern(
        &[
            "operator",
            "rotate-root",
            "update",
            "--nonce",
            "not-it",
            &old[0],
        ],
        &env,
    );
    assert!(text(&out.stderr).contains("nonce"), "{}", text(&out.stderr));
    let p = ok_json(&vern(
        &[
            "operator",
            "rotate-root",
            "update",
            "--nonce",
            &nonce,
            "-o",
            "json",
            &old[1],
        ],
        &env,
    ));
    assert_eq!(p["progress"], 1);
    let done = ok_json(&vern(
        &[
            "operator",
            "rotate-root",
            "update",
            "--nonce",
            &nonce,
            "-o",
            "json",
            &old[2],
        ],
        &env,
    ));
    assert_eq!(done["complete"], true);
    let new: Vec<String> = done["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(new.len(), 4);

    // Restart: old shares fail, three new ones unseal, data keys survive.
    assert!(s.terminate().success());
    let s = insecure_server(&data);
    let addr = s.http();
    let env = [("VERN_ADDR", addr.as_str()), ("VERN_TOKEN", root.as_str())];
    let st = sealed_status(&vern(&["status", "-o", "json"], &env));
    assert_eq!((st["t"].as_u64(), st["n"].as_u64()), (Some(3), Some(4)));
    vern(&["operator", "unseal", &old[0]], &env);
    vern(&["operator", "unseal", &old[1]], &env);
    let out = vern(&["operator", "unseal", &old[2]], &env);
    assert!(
        text(&out.stderr).contains("do not reconstruct the root key"),
        "{}",
        text(&out.stderr)
    );
    for k in &new[1..4] {
        vern(&["operator", "unseal", k], &env);
    }
    assert_eq!(vern(&["status"], &env).status.code(), Some(0));
    assert_eq!(
        ok_json(&vern(&["operator", "key-status", "-o", "json"], &env))["term"],
        2
    );
}
