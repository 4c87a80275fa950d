//! Property tests: any single-byte change to a signed log file is caught,
//! and chains of any shape verify when untouched.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use std::io::Write as _;

use proptest::prelude::*;
use vern_audit::verify::verify_file;
use vern_audit::{AuditKeys, AuditRecord, Checkpoint, Event, Line, GENESIS};

fn event(i: u64, text: &str) -> Event {
    Event {
        request_id: format!("req-{i}"),
        operation: format!("GET /v1/{text}"),
        action: Some("secret.read".to_owned()),
        status: 200 + (i % 5) as u16,
        source: "127.0.0.1".to_owned(),
        ..Event::default()
    }
}

/// A log of `texts.len()` records, the last one covered by a checkpoint.
fn log(keys: &AuditKeys, texts: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut prev = GENESIS.to_owned();
    for (i, text) in texts.iter().enumerate() {
        let seq = i as u64 + 1;
        let r = AuditRecord::chain(
            seq,
            &prev,
            "2026-01-01T00:00:00.000Z".to_owned(),
            event(seq, text),
        );
        prev.clone_from(&r.hash);
        serde_json::to_writer(&mut out, &Line::Record(Box::new(r))).unwrap();
        out.push(b'\n');
    }
    let mut cp = Checkpoint {
        seq: texts.len() as u64,
        head: prev,
        time: "2026-01-01T00:00:01.000Z".to_owned(),
        key: keys.public_key().to_string(),
        signature: String::new(),
    };
    cp.signature = keys.sign_checkpoint(&cp);
    serde_json::to_writer(&mut out, &Line::Checkpoint(cp)).unwrap();
    out.push(b'\n');
    out
}

fn verify_bytes(keys: &AuditKeys, bytes: &[u8]) -> vern_audit::verify::Report {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(bytes).unwrap();
    verify_file(file.path(), keys.public_key(), &mut |_| {}).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn untouched_logs_verify(texts in prop::collection::vec("[a-z/{}*]{0,12}", 1..20)) {
        let keys = AuditKeys::generate();
        let report = verify_bytes(&keys, &log(&keys, &texts));
        prop_assert!(report.intact(), "{:?}", report.problems);
        prop_assert_eq!(report.records, texts.len() as u64);
        prop_assert_eq!(report.unsigned_tail, 0);
    }

    #[test]
    fn any_changed_byte_is_caught(
        texts in prop::collection::vec("[a-z]{1,8}", 1..10),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let keys = AuditKeys::generate();
        let mut bytes = log(&keys, &texts);
        let i = at.index(bytes.len());
        // A changed line break only splits or joins lines, which the line
        // parser rejects anyway; change content bytes.
        prop_assume!(bytes[i] != b'\n' && bytes[i] ^ flip != b'\n');
        bytes[i] ^= flip;
        let report = verify_bytes(&keys, &bytes);
        prop_assert!(!report.intact(), "byte {} changed without detection", i);
    }
}
