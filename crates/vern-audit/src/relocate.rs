//! Moving a log out of the main store. An embedded (SQLite) server keeps
//! its log in segment files beside the main database: every commit to a
//! SQLite file drops the page cache of every other connection to it, and a
//! SQLite commit costs far more than appending lines. Older versions kept
//! the log in the main file, then in a SQLite database of its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use vern_store::{Store, Write};

use crate::log::read_head;
use crate::record::record_line;
use crate::segments::{self, SegmentLog, Writer, DEFAULT_SEGMENT_BYTES};
use crate::{layout, storage_key, AuditError};

/// Keys copied or deleted per transaction.
const PAGE: usize = 1000;

/// What [`relocate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relocation {
    /// `from` held no log.
    Nothing,
    /// `to` already had a log; `from` still holds this many log keys, left
    /// in place (an interrupted move or a downgrade) for the operator.
    LeftInPlace(usize),
    /// This many keys (records, checkpoints and the head) were moved.
    Moved(usize),
}

/// Every key of the log in `store`, in order.
async fn log_keys(store: &dyn Store) -> Result<Vec<String>, AuditError> {
    let mut keys = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list(layout::PREFIX, after.as_deref(), PAGE).await?;
        let full = page.len() == PAGE;
        after = page.last().cloned();
        keys.extend(page);
        if !full {
            return Ok(keys);
        }
    }
}

/// Moves the log kept in `from` to `to`, unless `to` has a log already.
/// Records and checkpoints are copied first and the head last, so `to`
/// has a head only once it holds the whole log; only then are the keys
/// deleted from `from`. A move cut short before the head is copied is
/// redone from the start by the next call.
pub async fn relocate(from: &dyn Store, to: &dyn Store) -> Result<Relocation, AuditError> {
    let keys = log_keys(from).await?;
    if keys.is_empty() {
        return Ok(Relocation::Nothing);
    }
    if to.get(&storage_key(layout::HEAD)?).await?.is_some() {
        return Ok(Relocation::LeftInPlace(keys.len()));
    }
    let (head, body): (Vec<&String>, Vec<&String>) =
        keys.iter().partition(|k| k.as_str() == layout::HEAD);
    for page in body.chunks(PAGE).chain(std::iter::once(head.as_slice())) {
        let mut writes = Vec::with_capacity(page.len());
        for k in page {
            let key = storage_key(k)?;
            // Listed a moment ago by this process alone (the server is not
            // serving yet), so a key that vanished is a corrupt store.
            let entry = from
                .get(&key)
                .await?
                .ok_or_else(|| AuditError::Corrupt((*k).clone()))?;
            writes.push(Write::put(key, entry.value));
        }
        to.commit(writes).await?;
    }
    delete_keys(from, &keys).await?;
    Ok(Relocation::Moved(keys.len()))
}

async fn delete_keys(from: &dyn Store, keys: &[String]) -> Result<(), AuditError> {
    for page in keys.chunks(PAGE) {
        let writes = page
            .iter()
            .map(|k| Ok(Write::delete(storage_key(k)?)))
            .collect::<Result<Vec<_>, AuditError>>()?;
        from.commit(writes).await?;
    }
    Ok(())
}

/// Moves the log kept in `from` into segment files in `dir`, unless `dir`
/// holds a log already. The files are written and synced in a directory
/// beside `dir` that is renamed to `dir` once complete, so `dir` holds the
/// whole log or nothing; only then are the keys deleted from `from`. When
/// `dir` already holds exactly that log (a move cut short after the
/// rename), the deletion is finished.
pub async fn import(from: &dyn Store, dir: &Path) -> Result<Relocation, AuditError> {
    let keys = log_keys(from).await?;
    if keys.is_empty() {
        return Ok(Relocation::Nothing);
    }
    let has_segments = dir.exists() && !segments::list(dir)?.is_empty();
    if has_segments {
        let files = SegmentLog::open(dir)?;
        let head = read_head(from).await?;
        if files.head() != (head.seq, head.hash) {
            return Ok(Relocation::LeftInPlace(keys.len()));
        }
    } else {
        let staging = staging_dir(dir)?;
        write_segments(from, &keys, &staging).await?;
        if dir.exists() {
            // Only the lock of a log that never had a record.
            std::fs::remove_dir_all(dir).map_err(|e| moving(dir, &e))?;
        }
        std::fs::rename(&staging, dir).map_err(|e| moving(dir, &e))?;
        if let Some(parent) = dir.parent() {
            std::fs::File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(|e| moving(parent, &e))?;
        }
    }
    delete_keys(from, &keys).await?;
    Ok(Relocation::Moved(keys.len()))
}

fn moving(path: &Path, e: &std::io::Error) -> AuditError {
    AuditError::Write(format!("moving the audit log to {}: {e}", path.display()))
}

/// An empty directory beside `dir` to write the files in.
fn staging_dir(dir: &Path) -> Result<PathBuf, AuditError> {
    let name = dir
        .file_name()
        .ok_or_else(|| AuditError::Invalid(format!("{} is not a directory name", dir.display())))?;
    let mut staging = name.to_os_string();
    staging.push(".moving");
    let staging = dir.with_file_name(staging);
    match std::fs::remove_dir_all(&staging) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(moving(&staging, &e)),
    }
    segments::create_dir(&staging)?;
    Ok(staging)
}

/// Writes the records and checkpoints under `keys` as segment lines: each
/// checkpoint after the record it signs, those past the last record (a
/// truncated tail) at the end, where verification reports them.
async fn write_segments(
    from: &dyn Store,
    keys: &[String],
    staging: &Path,
) -> Result<(), AuditError> {
    let mut checkpoints = BTreeMap::new();
    let mut records = Vec::new();
    for k in keys {
        if let Some(seq) = k.strip_prefix(layout::CHECKPOINTS) {
            let seq: u64 = seq.parse().map_err(|_| AuditError::Corrupt(k.clone()))?;
            checkpoints.insert(seq, k.clone());
        } else if let Some(seq) = k.strip_prefix(layout::RECORDS) {
            let seq: u64 = seq.parse().map_err(|_| AuditError::Corrupt(k.clone()))?;
            records.push((seq, k.clone()));
        }
    }
    let mut writer = Some(Writer::new(staging, DEFAULT_SEGMENT_BYTES));
    let mut expected = 1;
    for page in records.chunks(PAGE) {
        let mut lines = Vec::with_capacity(page.len());
        for (seq, k) in page {
            if *seq != expected {
                return Err(AuditError::Corrupt(format!(
                    "record {expected} is missing from the log being moved; check it with \
                     `vern audit verify` against the old version's database"
                )));
            }
            expected += 1;
            lines.push((true, record_line(&value_of(from, k).await?)));
            let signed: Vec<u64> = checkpoints.range(..=*seq).map(|(s, _)| *s).collect();
            for s in signed {
                if let Some(k) = checkpoints.remove(&s) {
                    lines.push((false, checkpoint_line(&value_of(from, &k).await?)));
                }
            }
        }
        writer = Some(write_lines(writer.take(), lines).await?);
    }
    let mut rest = Vec::new();
    for k in checkpoints.values() {
        rest.push((false, checkpoint_line(&value_of(from, k).await?)));
    }
    let writer = write_lines(writer.take(), rest).await?;
    tokio::task::spawn_blocking(move || writer.finish())
        .await
        .map_err(|_| AuditError::Closed)?
}

async fn value_of(from: &dyn Store, k: &str) -> Result<Vec<u8>, AuditError> {
    // Listed a moment ago by this process alone, so a key that vanished is
    // a corrupt store.
    Ok(from
        .get(&storage_key(k)?)
        .await?
        .ok_or_else(|| AuditError::Corrupt(k.to_owned()))?
        .value)
}

/// The line of a stored checkpoint (kept even if it does not parse, for
/// verification to report).
fn checkpoint_line(stored: &[u8]) -> Vec<u8> {
    let mut line = segments::CHECKPOINT_LINE.to_vec();
    line.push(b',');
    line.extend_from_slice(stored.get(1..).unwrap_or_default());
    line
}

async fn write_lines(
    writer: Option<Writer>,
    lines: Vec<(bool, Vec<u8>)>,
) -> Result<Writer, AuditError> {
    let mut writer = writer.ok_or(AuditError::Closed)?;
    tokio::task::spawn_blocking(move || {
        for (record, line) in &lines {
            writer.line(*record, line)?;
        }
        Ok(writer)
    })
    .await
    .map_err(|_| AuditError::Closed)?
}
