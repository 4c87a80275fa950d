//! The log in append-only files, for embedded (SQLite) deployments.
//!
//! A directory holds segment files named by the sequence number of their
//! first record (`00000000000000000001.jsonl`), each a run of the sink's
//! JSON lines: records and checkpoints in the order they were written. A
//! batch is one `write` and one `fdatasync`: a SQLite commit of the same
//! records costs several page writes, B-tree work and a WAL sync, and it
//! was the largest part of an audited request's cost.
//!
//! A record's sequence number for reads is its position: the segment's
//! first number plus the records before it in the file, whatever a
//! (possibly tampered) line claims, so query cursors always move on.
//! Chaining is checked by verification, which reads the same lines.
//!
//! Only the bytes after the last line break of the last segment can be an
//! unfinished write (a batch is acknowledged only once synced); opening
//! cuts them. A complete line that does not parse is never cut: it is
//! evidence, and verification reports it.

use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::record::RECORD_LINE;
use crate::AuditError;

/// A segment is closed once it reaches this size (at a batch boundary).
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
/// One index mark per this many records of a segment.
const INDEX_EVERY: u64 = 256;
/// The lock file that keeps a second process from appending.
const LOCK: &str = "LOCK";
const EXT: &str = "jsonl";
/// How a checkpoint line starts.
pub(crate) const CHECKPOINT_LINE: &[u8] = br#"{"type":"checkpoint""#;

/// Where to find records in one segment: `(seq, offset)` marks, each the
/// offset of a line from which the next record is `seq`.
#[derive(Debug, Clone, Default)]
struct Index {
    marks: Vec<(u64, u64)>,
    /// Records in the indexed bytes.
    records: u64,
}

impl Index {
    fn new(first: u64) -> Self {
        Self {
            marks: vec![(first, 0)],
            records: 0,
        }
    }

    /// Notes a record line at `offset` whose position is `seq`.
    fn record(&mut self, first: u64, seq: u64, offset: u64) {
        if (seq - first).is_multiple_of(INDEX_EVERY) && seq != first {
            self.marks.push((seq, offset));
        }
        self.records += 1;
    }

    /// The mark to start a scan for `seq` from.
    fn start(&self, seq: u64) -> (u64, u64) {
        let i = self.marks.partition_point(|(s, _)| *s <= seq);
        self.marks
            .get(i.saturating_sub(1))
            .copied()
            .unwrap_or((seq, 0))
    }
}

struct Segment {
    first: u64,
    path: PathBuf,
    /// Bytes of complete, durable lines.
    len: u64,
    /// Built when the segment is first read (at once for the last one).
    index: Option<Arc<Index>>,
}

struct State {
    segments: Vec<Segment>,
    /// The last segment, open for appending.
    file: Option<File>,
    head_seq: u64,
    head_hash: String,
    last_checkpoint: u64,
    /// Why appends are refused: the files' state is unknown (a failed
    /// sync) or the log's end does not parse.
    failed: Option<String>,
}

/// The log in a directory of segment files. One process appends (it holds
/// the directory's lock); readers such as `vern audit verify` need none.
pub struct SegmentLog {
    dir: PathBuf,
    segment_bytes: u64,
    state: Mutex<State>,
    _lock: File,
}

/// What one pass over a segment found.
struct Scan {
    index: Index,
    /// Bytes up to the end of the last complete line.
    complete: u64,
    /// The last record line, if any.
    last_record: Option<Vec<u8>>,
    /// The highest sequence number a checkpoint line names.
    last_checkpoint: u64,
}

fn io_error(path: &Path, e: &std::io::Error) -> AuditError {
    AuditError::Write(format!("{}: {e}", path.display()))
}

fn read_error(path: &Path, e: &std::io::Error) -> AuditError {
    AuditError::Read {
        path: path.display().to_string(),
        detail: e.to_string(),
    }
}

/// The stored form of a record line (what the key-value layout keeps).
pub(crate) fn stored_of(line: &[u8]) -> Vec<u8> {
    match line.strip_prefix(RECORD_LINE) {
        Some(rest) => {
            let mut stored = Vec::with_capacity(rest.len() + 1);
            stored.push(b'{');
            stored.extend_from_slice(rest);
            stored
        }
        None => line.to_vec(),
    }
}

/// The segment files of `dir` in order, with their first sequence number.
pub(crate) fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, AuditError> {
    let entries = std::fs::read_dir(dir).map_err(|e| read_error(dir, &e))?;
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| read_error(dir, &e))?;
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some(EXT) {
            continue;
        }
        let first = path
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|s| s.len() == 20)
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                AuditError::Corrupt(format!("{} is not a segment name", path.display()))
            })?;
        let meta = std::fs::symlink_metadata(&path).map_err(|e| read_error(&path, &e))?;
        if !meta.is_file() {
            return Err(AuditError::Corrupt(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        segments.push((first, path));
    }
    segments.sort();
    Ok(segments)
}

/// Reads `path` line by line up to `limit` bytes.
fn scan(path: &Path, first: u64, limit: u64) -> Result<Scan, AuditError> {
    let file = File::open(path).map_err(|e| read_error(path, &e))?;
    let mut reader = BufReader::with_capacity(1 << 16, file.take(limit));
    let mut out = Scan {
        index: Index::new(first),
        complete: 0,
        last_record: None,
        last_checkpoint: 0,
    };
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| read_error(path, &e))?;
        let Some(text) = line.strip_suffix(b"\n") else {
            return Ok(out);
        };
        if text.starts_with(CHECKPOINT_LINE) {
            #[derive(serde::Deserialize)]
            struct Seq {
                seq: u64,
            }
            if let Ok(cp) = serde_json::from_slice::<Seq>(text) {
                out.last_checkpoint = out.last_checkpoint.max(cp.seq);
            }
        } else {
            let seq = first + out.index.records;
            out.index.record(first, seq, out.complete);
            out.last_record = Some(text.to_vec());
        }
        out.complete += n as u64;
    }
}

/// The claimed sequence number and hash of a record line.
fn link_of(line: &[u8]) -> Option<(u64, String)> {
    #[derive(serde::Deserialize)]
    struct Link {
        seq: u64,
        hash: String,
    }
    let link: Link = serde_json::from_slice(line).ok()?;
    Some((link.seq, link.hash))
}

fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, &e))
}

/// Creates `dir` (owner-only) if it is missing.
pub(crate) fn create_dir(dir: &Path) -> Result<(), AuditError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| io_error(dir, &e))
}

/// Creates a new, empty segment file (owner-only). An empty file of that
/// name (left by an attempt whose directory sync failed) is taken over.
fn create_segment(dir: &Path, first: u64) -> Result<(PathBuf, File), AuditError> {
    let path = dir.join(format!("{first:020}.{EXT}"));
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(&path).map_err(|e| io_error(&path, &e))?;
    let meta = file.metadata().map_err(|e| io_error(&path, &e))?;
    if !meta.is_file() || meta.len() > 0 {
        return Err(AuditError::Write(format!(
            "{} exists already and is not an empty segment",
            path.display()
        )));
    }
    sync_dir(dir)?;
    Ok((path, file))
}

/// Writes segment files into `dir` from scratch; used to move a log kept
/// in a key-value store. Lines are `(record?, line)`.
pub(crate) struct Writer {
    dir: PathBuf,
    segment_bytes: u64,
    current: Option<(PathBuf, File, u64)>,
    next_seq: u64,
}

impl Writer {
    pub(crate) fn new(dir: &Path, segment_bytes: u64) -> Self {
        Self {
            dir: dir.to_owned(),
            segment_bytes,
            current: None,
            next_seq: 1,
        }
    }

    /// Appends one line; `record` says whether it is a record line (a new
    /// segment starts only before a record).
    pub(crate) fn line(&mut self, record: bool, line: &[u8]) -> Result<(), AuditError> {
        let full = self
            .current
            .as_ref()
            .is_none_or(|(_, _, len)| *len >= self.segment_bytes);
        if record && full {
            self.finish_current()?;
            let (path, file) = create_segment(&self.dir, self.next_seq)?;
            self.current = Some((path, file, 0));
        }
        let Some((path, file, len)) = self.current.as_mut() else {
            // A checkpoint before any record: nothing to sign.
            return Ok(());
        };
        file.write_all(line)
            .and_then(|()| file.write_all(b"\n"))
            .map_err(|e| io_error(path, &e))?;
        *len += line.len() as u64 + 1;
        if record {
            self.next_seq += 1;
        }
        Ok(())
    }

    fn finish_current(&mut self) -> Result<(), AuditError> {
        if let Some((path, file, _)) = self.current.take() {
            file.sync_all().map_err(|e| io_error(&path, &e))?;
        }
        Ok(())
    }

    /// Syncs the files and the directory.
    pub(crate) fn finish(mut self) -> Result<(), AuditError> {
        self.finish_current()?;
        sync_dir(&self.dir)
    }
}

impl SegmentLog {
    /// Opens (creating) the log in `dir` with segments of
    /// [`DEFAULT_SEGMENT_BYTES`].
    pub fn open(dir: &Path) -> Result<Self, AuditError> {
        Self::open_with(dir, DEFAULT_SEGMENT_BYTES)
    }

    /// Opens (creating) the log in `dir`, closing segments at
    /// `segment_bytes`. Takes the directory's lock, cuts an unfinished
    /// write at the end, and reads the last segment for the chain head.
    pub fn open_with(dir: &Path, segment_bytes: u64) -> Result<Self, AuditError> {
        if segment_bytes == 0 {
            return Err(AuditError::Invalid(
                "the audit segment size must be greater than zero".to_owned(),
            ));
        }
        create_dir(dir)?;
        let lock_path = dir.join(LOCK);
        let mut options = OpenOptions::new();
        options.create(true).truncate(false).write(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let lock = options
            .open(&lock_path)
            .map_err(|e| io_error(&lock_path, &e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(AuditError::Invalid(format!(
                    "the audit log {} is held by another process (a running Vern server?)",
                    dir.display()
                )))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_error(&lock_path, &e)),
        }
        let mut state = State {
            segments: Vec::new(),
            file: None,
            head_seq: 0,
            head_hash: crate::GENESIS.to_owned(),
            last_checkpoint: 0,
            failed: None,
        };
        for (first, path) in list(dir)? {
            let len = std::fs::metadata(&path)
                .map_err(|e| read_error(&path, &e))?
                .len();
            state.segments.push(Segment {
                first,
                path,
                len,
                index: None,
            });
        }
        Self::recover(&mut state)?;
        Ok(Self {
            dir: dir.to_owned(),
            segment_bytes,
            state: Mutex::new(state),
            _lock: lock,
        })
    }

    /// Cuts an unfinished write off the last segment, indexes the segments
    /// from the end back to the last record, and sets the head from it.
    fn recover(state: &mut State) -> Result<(), AuditError> {
        let count = state.segments.len();
        let mut found = None;
        for i in (0..count).rev() {
            let Some(segment) = state.segments.get_mut(i) else {
                break;
            };
            let s = scan(&segment.path, segment.first, segment.len)?;
            if i + 1 == count {
                if s.complete < segment.len {
                    let cut = segment.len - s.complete;
                    let file = OpenOptions::new()
                        .write(true)
                        .open(&segment.path)
                        .map_err(|e| io_error(&segment.path, &e))?;
                    file.set_len(s.complete)
                        .and_then(|()| file.sync_all())
                        .map_err(|e| io_error(&segment.path, &e))?;
                    tracing::warn!(
                        segment = %segment.path.display(),
                        bytes = cut,
                        "Cut an unfinished audit write (never acknowledged) off the log's end."
                    );
                }
                let file = OpenOptions::new()
                    .append(true)
                    .open(&segment.path)
                    .map_err(|e| io_error(&segment.path, &e))?;
                state.file = Some(file);
            }
            segment.len = s.complete;
            state.last_checkpoint = state.last_checkpoint.max(s.last_checkpoint);
            let records = s.index.records;
            segment.index = Some(Arc::new(s.index));
            if let Some(line) = s.last_record {
                found = Some((segment.first + records - 1, line));
                break;
            }
        }
        let Some((position, line)) = found else {
            // No record yet: an empty last segment must start the chain.
            if let Some(segment) = state.segments.first() {
                if segment.first != 1 || count > 1 {
                    state.failed = Some(format!(
                        "the audit log's segments hold no record but are named from {}; run `vern audit verify`",
                        segment.first
                    ));
                }
            }
            return Ok(());
        };
        match link_of(&stored_of(&line)) {
            Some((seq, hash)) if seq == position => {
                state.head_seq = seq;
                state.head_hash = hash;
                // An empty last segment must continue the chain.
                if let Some(last) = state.segments.last() {
                    if last.index.as_ref().is_some_and(|i| i.records == 0) && last.first != seq + 1
                    {
                        state.failed = Some(format!(
                            "the segment {} does not continue the log after record {seq}",
                            last.path.display()
                        ));
                    }
                }
            }
            _ => {
                state.failed = Some(format!(
                    "the last audit record (record {position}) does not parse or claims another number; run `vern audit verify`"
                ));
            }
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The chain head: the last record's number and hash.
    pub(crate) fn head(&self) -> (u64, String) {
        let state = self.lock();
        (state.head_seq, state.head_hash.clone())
    }

    /// Writes `lines` and syncs them. A failed write is cut back (so no
    /// half line stays for the next to extend); a failed sync leaves the
    /// file's state unknown, so every later append is refused until the
    /// server restarts and reads the file again.
    fn write(
        &self,
        state: &mut State,
        lines: &[Vec<u8>],
        first_record: Option<u64>,
    ) -> Result<(), AuditError> {
        if let Some(reason) = &state.failed {
            return Err(AuditError::Write(reason.clone()));
        }
        let mut buf = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        let mut marks = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            if let Some(first) = first_record {
                marks.push((first + i as u64, buf.len() as u64));
            }
            buf.extend_from_slice(line);
            buf.push(b'\n');
        }
        let (Some(file), Some(segment)) = (state.file.as_mut(), state.segments.last_mut()) else {
            return Err(AuditError::Write(
                "the audit log has no open segment".to_owned(),
            ));
        };
        if let Err(e) = file.write_all(&buf) {
            if file.set_len(segment.len).is_err() {
                state.failed = Some(format!(
                    "a failed write could not be cut back in {}; restart the server",
                    segment.path.display()
                ));
            }
            return Err(io_error(&segment.path, &e));
        }
        if let Err(e) = file.sync_data() {
            state.failed = Some(format!(
                "syncing {} failed ({e}); restart the server",
                segment.path.display()
            ));
            return Err(io_error(&segment.path, &e));
        }
        let (base, first) = (segment.len, segment.first);
        // Copied only while a reader still holds the previous version.
        let index = Arc::make_mut(
            segment
                .index
                .get_or_insert_with(|| Arc::new(Index::new(first))),
        );
        for (seq, offset) in marks {
            index.record(first, seq, base + offset);
        }
        segment.len += buf.len() as u64;
        Ok(())
    }

    /// Appends record lines numbered from `first` (the head's successor);
    /// `hash` is the last one's hash.
    pub(crate) fn append_records(
        &self,
        first: u64,
        lines: &[Vec<u8>],
        hash: &str,
    ) -> Result<(), AuditError> {
        let mut guard = self.lock();
        let state = &mut *guard;
        if let Some(reason) = &state.failed {
            return Err(AuditError::Write(reason.clone()));
        }
        if first != state.head_seq + 1 {
            return Err(AuditError::Write(format!(
                "records from {first} do not follow the head at {}",
                state.head_seq
            )));
        }
        let full = state
            .segments
            .last()
            .is_none_or(|s| s.len >= self.segment_bytes);
        if full || state.file.is_none() {
            let (path, file) = create_segment(&self.dir, first)?;
            state.segments.push(Segment {
                first,
                path,
                len: 0,
                index: Some(Arc::new(Index::new(first))),
            });
            state.file = Some(file);
        }
        self.write(state, lines, Some(first))?;
        state.head_seq = first + lines.len() as u64 - 1;
        hash.clone_into(&mut state.head_hash);
        Ok(())
    }

    /// Appends a checkpoint line signing record `seq`, unless one at or
    /// after it is there already. Returns whether it was written.
    pub(crate) fn append_checkpoint(&self, seq: u64, line: &[u8]) -> Result<bool, AuditError> {
        let mut guard = self.lock();
        let state = &mut *guard;
        if seq <= state.last_checkpoint || seq == 0 {
            return Ok(false);
        }
        self.write(state, &[line.to_vec()], None)?;
        state.last_checkpoint = seq;
        Ok(true)
    }

    /// Up to `max` records after `after`, as `(seq, stored bytes)`, oldest
    /// first. Reads only complete, synced lines.
    pub(crate) fn records_after(
        &self,
        after: u64,
        max: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, AuditError> {
        let want = after.saturating_add(1);
        // (position, first, path, length, index) of the segments to read.
        type Part = (usize, u64, PathBuf, u64, Option<Arc<Index>>);
        let snapshot: Vec<Part> = {
            let state = self.lock();
            let from = state
                .segments
                .partition_point(|s| s.first <= want)
                .saturating_sub(1);
            state
                .segments
                .iter()
                .enumerate()
                .skip(from)
                .map(|(i, s)| (i, s.first, s.path.clone(), s.len, s.index.clone()))
                .collect()
        };
        let mut out = Vec::new();
        for (i, first, path, len, index) in snapshot {
            if out.len() >= max {
                break;
            }
            let index = match index {
                Some(index) => index,
                None => {
                    let built = Arc::new(scan(&path, first, len)?.index);
                    let mut state = self.lock();
                    if let Some(s) = state.segments.get_mut(i) {
                        if s.index.is_none() && s.len == len {
                            s.index = Some(Arc::clone(&built));
                        }
                    }
                    built
                }
            };
            let (mut seq, offset) = index.start(want.max(first));
            let mut file = File::open(&path).map_err(|e| read_error(&path, &e))?;
            file.seek(SeekFrom::Start(offset))
                .map_err(|e| read_error(&path, &e))?;
            let mut reader = BufReader::with_capacity(1 << 16, file.take(len - offset.min(len)));
            let mut line = Vec::new();
            while out.len() < max {
                line.clear();
                reader
                    .read_until(b'\n', &mut line)
                    .map_err(|e| read_error(&path, &e))?;
                let Some(text) = line.strip_suffix(b"\n") else {
                    break;
                };
                if text.starts_with(CHECKPOINT_LINE) {
                    continue;
                }
                if seq >= want {
                    out.push((seq, stored_of(text)));
                }
                seq += 1;
            }
        }
        Ok(out)
    }

    /// Whether the log holds anything, even a record it cannot read (so a
    /// corrupt log is never taken for a new one).
    pub(crate) fn has_records(&self) -> bool {
        let state = self.lock();
        state.head_seq > 0 || state.segments.iter().any(|s| s.len > 0)
    }
}

/// A reader over every segment of `dir` in order; the verifier reads it
/// like one sink file.
pub(crate) fn concatenated(dir: &Path) -> Result<Box<dyn std::io::BufRead>, AuditError> {
    let mut reader: Box<dyn std::io::Read> = Box::new(std::io::empty());
    for (_, path) in list(dir)? {
        let file = File::open(&path).map_err(|e| read_error(&path, &e))?;
        reader = Box::new(reader.chain(file));
    }
    Ok(Box::new(BufReader::with_capacity(1 << 20, reader)))
}
