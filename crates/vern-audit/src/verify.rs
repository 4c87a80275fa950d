//! Verifying a log: the chain link by link, every checkpoint's signature
//! against a trusted key, each checkpoint against the record it signs, and
//! the tail against the last checkpoint.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

use serde::Serialize;
use vern_store::Store;

use crate::keys::PublicKey;
use crate::layout;
use crate::log::read_head;
use crate::record::{Checkpoint, Line, GENESIS, RECORD_LINE};
use crate::segments::{self, CHECKPOINT_LINE};
use crate::AuditError;

/// Most problems a report keeps.
const MAX_PROBLEMS: usize = 1000;
/// Keys read per storage round trip.
const PAGE: usize = 1000;

/// One thing wrong with the log, at the sequence number where it shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The first sequence number affected.
    pub seq: u64,
    /// What is wrong.
    pub reason: String,
}

/// The outcome of a verification.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Records read.
    pub records: u64,
    /// Checkpoints with a valid signature by the trusted key.
    pub checkpoints: u64,
    /// The last record's sequence number.
    pub head_seq: u64,
    /// The last record's hash.
    pub head_hash: String,
    /// The newest validly signed checkpoint.
    pub last_checkpoint: Option<u64>,
    /// Records after the last checkpoint: chained, not yet signed.
    pub unsigned_tail: u64,
    /// What is wrong, by sequence number.
    pub problems: Vec<Problem>,
}

impl Report {
    /// Whether nothing is wrong.
    pub fn intact(&self) -> bool {
        self.problems.is_empty()
    }

    /// The first broken sequence number and why.
    pub fn first_broken(&self) -> Option<&Problem> {
        self.problems.first()
    }
}

/// What chaining needs of a record, borrowed from its bytes.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Link<'a> {
    #[serde(rename = "type", default)]
    _tag: Option<&'a str>,
    seq: u64,
    prev: &'a str,
    #[serde(rename = "time")]
    _time: serde::de::IgnoredAny,
    #[serde(rename = "event")]
    _event: serde::de::IgnoredAny,
    hash: &'a str,
}

/// Checks entries fed to it in order: every checkpoint first, then the
/// records by sequence number.
pub struct Verifier {
    trusted: PublicKey,
    trusted_text: String,
    checkpoints: BTreeMap<u64, Checkpoint>,
    expected: u64,
    prev: String,
    records: u64,
    problems: Vec<Problem>,
}

impl Verifier {
    /// A verifier that trusts checkpoints signed by `trusted` only.
    pub fn new(trusted: PublicKey) -> Self {
        Self {
            trusted,
            trusted_text: trusted.to_string(),
            checkpoints: BTreeMap::new(),
            expected: 1,
            prev: GENESIS.to_owned(),
            records: 0,
            problems: Vec::new(),
        }
    }

    /// Notes a problem.
    pub fn problem(&mut self, seq: u64, reason: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(Problem { seq, reason });
        }
    }

    /// Takes a checkpoint; call for all of them before the records.
    pub fn checkpoint(&mut self, cp: Checkpoint) {
        if cp.key != self.trusted_text {
            let reason = format!(
                "the checkpoint at record {} is signed by {}, not by the trusted key",
                cp.seq, cp.key
            );
            return self.problem(cp.seq, reason);
        }
        if !self.trusted.verifies(&cp.signed_bytes(), &cp.signature) {
            let reason = format!(
                "the signature of the checkpoint at record {} does not verify: it was forged or altered",
                cp.seq
            );
            return self.problem(cp.seq, reason);
        }
        match self.checkpoints.get(&cp.seq) {
            Some(known) if known.head != cp.head => {
                let reason = format!("two signed checkpoints disagree about record {}", cp.seq);
                self.problem(cp.seq, reason);
            }
            Some(_) => {}
            None => {
                self.checkpoints.insert(cp.seq, cp);
            }
        }
    }

    /// Takes the next record as stored: `object` is its JSON (a file line
    /// with its `"type":"record"` tag, or a stored value), and the record's
    /// own fields start at `inner`. The hash is computed over those bytes
    /// and only the chaining fields are parsed, which is what makes
    /// verification fast. Returns the record's claimed sequence number, or
    /// `None` (and nothing recorded) when the bytes are not a record.
    pub fn record_bytes(&mut self, object: &[u8], inner: usize) -> Option<u64> {
        let link = serde_json::from_slice::<Link<'_>>(object).ok()?;
        let computed = object.get(inner..).and_then(crate::record::raw_hash);
        self.link(link.seq, link.prev, link.hash, computed);
        Some(link.seq)
    }

    /// The sequence number the next record should have.
    pub fn expected(&self) -> u64 {
        self.expected
    }

    fn link(&mut self, seq: u64, prev: &str, hash: &str, computed: Option<[u8; 32]>) {
        self.records += 1;
        if seq != self.expected {
            let reason = if seq > self.expected {
                format!(
                    "record {} is missing or out of place (found record {} instead)",
                    self.expected, seq
                )
            } else {
                format!(
                    "record {} appears again or out of order after record {}",
                    seq,
                    self.expected - 1
                )
            };
            self.problem(self.expected.min(seq), reason);
        } else if prev != self.prev {
            let reason = format!(
                "record {seq} does not link to the record before it (inserted, removed or reordered)"
            );
            self.problem(seq, reason);
        }
        let mut hex_buf = [0u8; 64];
        let matches = computed.is_some_and(|c| {
            hex::encode_to_slice(c, &mut hex_buf).is_ok() && hex_buf.as_slice() == hash.as_bytes()
        });
        if !matches {
            let reason = format!("record {seq} does not match its hash: it was edited");
            self.problem(seq, reason);
        }
        if let Some(cp) = self.checkpoints.get(&seq) {
            if cp.head != hash || !matches {
                let reason = format!(
                    "record {seq} differs from the signed checkpoint: the chain was rewritten"
                );
                self.problem(seq, reason);
            }
        }
        self.expected = seq.saturating_add(1);
        self.prev.clear();
        self.prev.push_str(hash);
    }

    /// The report, with the tail checked against the last checkpoint.
    pub fn finish(mut self) -> Report {
        let head_seq = self.expected - 1;
        if let Some((&last, _)) = self.checkpoints.iter().next_back() {
            if last > head_seq {
                let reason = format!(
                    "the log ends at record {head_seq} but a checkpoint signs record {last}: the tail was truncated"
                );
                self.problem(head_seq + 1, reason);
            }
        }
        let last_checkpoint = self.checkpoints.keys().copied().rfind(|s| *s <= head_seq);
        self.problems.sort_by_key(|p| p.seq);
        Report {
            records: self.records,
            checkpoints: self.checkpoints.len() as u64,
            head_seq,
            head_hash: self.prev,
            last_checkpoint,
            unsigned_tail: head_seq - last_checkpoint.unwrap_or(0),
            problems: self.problems,
        }
    }
}

fn seq_of(key: &str, prefix: &str) -> Option<u64> {
    key.strip_prefix(prefix)?.parse().ok()
}

async fn keys_under(
    store: &dyn Store,
    prefix: &str,
    after: Option<String>,
) -> Result<Vec<String>, AuditError> {
    Ok(store.list(prefix, after.as_deref(), PAGE).await?)
}

/// The number of records the head claims, for progress reporting.
pub async fn head_seq(store: &dyn Store) -> Result<u64, AuditError> {
    Ok(read_head(store).await?.seq)
}

/// Verifies the log in `store`; `progress` gets the number of records read
/// so far.
pub async fn verify_store(
    store: &dyn Store,
    trusted: PublicKey,
    progress: &mut dyn FnMut(u64),
) -> Result<Report, AuditError> {
    let mut v = Verifier::new(trusted);
    let mut after = None;
    loop {
        let keys = keys_under(store, layout::CHECKPOINTS, after.take()).await?;
        for k in &keys {
            let seq = seq_of(k, layout::CHECKPOINTS).unwrap_or(0);
            let Some(entry) = store.get(&crate::storage_key(k)?).await? else {
                continue;
            };
            match serde_json::from_slice::<Checkpoint>(&entry.value) {
                Ok(cp) if cp.seq == seq => v.checkpoint(cp),
                Ok(cp) => v.problem(
                    seq.min(cp.seq),
                    format!("the checkpoint stored at {seq} claims record {}", cp.seq),
                ),
                Err(_) => v.problem(seq, format!("the checkpoint at record {seq} is malformed")),
            }
        }
        match keys.last() {
            Some(last) => after = Some(last.clone()),
            None => break,
        }
    }
    let claimed_head = read_head(store).await?.seq;
    let mut read = 0;
    loop {
        let keys = keys_under(store, layout::RECORDS, after.take()).await?;
        for k in &keys {
            let seq = seq_of(k, layout::RECORDS).unwrap_or(0);
            let Some(entry) = store.get(&crate::storage_key(k)?).await? else {
                continue;
            };
            match v.record_bytes(&entry.value, 1) {
                Some(claimed) if claimed != seq => v.problem(
                    seq.min(claimed),
                    format!("the record stored as {seq} claims to be record {claimed}"),
                ),
                Some(_) => {}
                None => v.problem(seq, format!("record {seq} is malformed")),
            }
            read += 1;
        }
        progress(read);
        match keys.last() {
            Some(last) => after = Some(last.clone()),
            None => break,
        }
    }
    let last = v.expected() - 1;
    if claimed_head > last {
        v.problem(
            last + 1,
            format!("the chain head says record {claimed_head}, but the log ends at record {last}: the tail was truncated"),
        );
    }
    Ok(v.finish())
}

/// Verifies a JSON-lines file written by the sink; `progress` gets the
/// bytes read so far in the record pass. Lines are read as bytes, so a
/// line that is not even UTF-8 is reported as broken, not as an error.
pub fn verify_file(
    path: &Path,
    trusted: PublicKey,
    progress: &mut dyn FnMut(u64),
) -> Result<Report, AuditError> {
    let open = || -> Result<Box<dyn BufRead>, AuditError> {
        std::fs::File::open(path)
            .map(|f| Box::new(std::io::BufReader::with_capacity(1 << 20, f)) as Box<dyn BufRead>)
            .map_err(|e| AuditError::Read {
                path: path.display().to_string(),
                detail: e.to_string(),
            })
    };
    verify_lines(&open, &path.display().to_string(), false, trusted, progress)
}

/// Verifies the segment files of an embedded server's log in `dir`, read
/// as one run of lines; `progress` gets the bytes read so far in the
/// record pass. A last line without its line break is a write in flight
/// (or one never acknowledged), not a problem.
pub fn verify_segments(
    dir: &Path,
    trusted: PublicKey,
    progress: &mut dyn FnMut(u64),
) -> Result<Report, AuditError> {
    let open = || segments::concatenated(dir);
    verify_lines(&open, &dir.display().to_string(), true, trusted, progress)
}

/// The bytes of the segment files in `dir`, for progress reporting.
pub fn segments_len(dir: &Path) -> Result<u64, AuditError> {
    let mut total = 0;
    for (_, path) in segments::list(dir)? {
        total += std::fs::metadata(&path)
            .map_err(|e| AuditError::Read {
                path: path.display().to_string(),
                detail: e.to_string(),
            })?
            .len();
    }
    Ok(total)
}

/// Two passes over the lines `open` gives: checkpoints, then records.
fn verify_lines(
    open: &dyn Fn() -> Result<Box<dyn BufRead>, AuditError>,
    name: &str,
    partial_tail_in_flight: bool,
    trusted: PublicKey,
    progress: &mut dyn FnMut(u64),
) -> Result<Report, AuditError> {
    let read_err = |e: std::io::Error| AuditError::Read {
        path: name.to_owned(),
        detail: e.to_string(),
    };
    let mut v = Verifier::new(trusted);
    let mut line = Vec::new();
    let mut reader = open()?;
    while reader.read_until(b'\n', &mut line).map_err(read_err)? > 0 {
        let in_flight = partial_tail_in_flight && !line.ends_with(b"\n");
        if line.starts_with(CHECKPOINT_LINE) && !in_flight {
            match serde_json::from_slice::<Line>(&line) {
                Ok(Line::Checkpoint(cp)) => v.checkpoint(cp),
                _ => v.problem(0, "a checkpoint line is malformed".to_owned()),
            }
        }
        line.clear();
    }
    let mut reader = open()?;
    let mut bytes = 0u64;
    let mut number = 0u64;
    while reader.read_until(b'\n', &mut line).map_err(read_err)? > 0 {
        number += 1;
        bytes += line.len() as u64;
        if partial_tail_in_flight && !line.ends_with(b"\n") {
            break;
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        if !text.is_empty() && !text.starts_with(CHECKPOINT_LINE) {
            let parsed = text
                .starts_with(RECORD_LINE)
                .then(|| v.record_bytes(text, RECORD_LINE.len()))
                .flatten();
            if parsed.is_none() {
                let seq = v.expected();
                v.problem(seq, format!("line {number} is not a valid record"));
            }
        }
        if number.is_multiple_of(4096) {
            progress(bytes);
        }
        line.clear();
    }
    progress(bytes);
    Ok(v.finish())
}
