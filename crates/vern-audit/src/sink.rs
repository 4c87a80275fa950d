//! The JSON-lines sink: a file (appended and synced per batch) or
//! standard output, for shipping to a SIEM.

use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::PathBuf;

use crate::AuditError;

/// Where JSON lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkTarget {
    /// Appended to a file, synced to disk before the batch is acknowledged.
    File(PathBuf),
    /// Written to standard output and flushed.
    Stdout,
}

impl SinkTarget {
    /// `-` is standard output; anything else a file path.
    pub fn parse(text: &str) -> Self {
        if text == "-" {
            Self::Stdout
        } else {
            Self::File(PathBuf::from(text))
        }
    }

    fn name(&self) -> String {
        match self {
            Self::File(p) => p.display().to_string(),
            Self::Stdout => "stdout".to_owned(),
        }
    }
}

/// An open sink. Writes are blocking; the appender runs them off the async
/// workers.
pub(crate) struct Sink {
    target: SinkTarget,
    file: Option<std::fs::File>,
    /// The file's length after the last complete write: a failed write is
    /// cut back to it, so no half line is left for the next one to extend.
    good_len: u64,
    /// Whether the file is a regular file (not a device or pipe).
    regular: bool,
    /// The next record the sink expects, once known.
    pub(crate) next_seq: Option<u64>,
}

impl Sink {
    pub(crate) fn open(target: SinkTarget) -> Result<Self, AuditError> {
        let failed = |e: std::io::Error| AuditError::Sink {
            target: target.name(),
            detail: e.to_string(),
        };
        let file = match &target {
            SinkTarget::File(path) => {
                let mut options = std::fs::OpenOptions::new();
                options.create(true).read(true).append(true);
                // A file Vern creates is owner-only: records hold no
                // secret, but who did what, when, is not for everyone.
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                Some(options.open(path).map_err(failed)?)
            }
            SinkTarget::Stdout => None,
        };
        let meta = file
            .as_ref()
            .map(std::fs::File::metadata)
            .transpose()
            .map_err(failed)?;
        // Only a regular file can be read back and cut; a device or pipe
        // is written like standard output.
        let regular = meta.as_ref().is_some_and(std::fs::Metadata::is_file);
        let mut sink = Self {
            target,
            file,
            regular,
            good_len: if regular {
                meta.map_or(0, |m| m.len())
            } else {
                0
            },
            next_seq: None,
        };
        // A file continues after its last record; a new file starts at the
        // beginning of the chain (filled in from storage), so it verifies
        // on its own. Standard output starts wherever the server does.
        if regular {
            sink.next_seq = Some(sink.last_record_seq()?.map_or(1, |s| s + 1));
        }
        Ok(sink)
    }

    /// The sequence number of the last record line of an existing file.
    fn last_record_seq(&mut self) -> Result<Option<u64>, AuditError> {
        let Some(file) = &mut self.file else {
            return Ok(None);
        };
        let from = self.good_len.saturating_sub(64 * 1024);
        let mut tail = Vec::new();
        file.seek(SeekFrom::Start(from))
            .and_then(|_| file.take(self.good_len - from).read_to_end(&mut tail))
            .map_err(|e| AuditError::Sink {
                target: self.target.name(),
                detail: e.to_string(),
            })?;
        #[derive(serde::Deserialize)]
        struct Seq {
            seq: u64,
        }
        Ok(tail
            .split(|b| *b == b'\n')
            .rev()
            .filter(|l| l.starts_with(crate::record::RECORD_LINE))
            .find_map(|l| serde_json::from_slice::<Seq>(l).ok())
            .map(|s| s.seq))
    }

    /// Writes encoded lines (JSON, without line breaks) as one buffer,
    /// then syncs (file) or flushes.
    pub(crate) fn write(&mut self, lines: &[Vec<u8>]) -> Result<(), AuditError> {
        let mut buf = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for line in lines {
            buf.extend_from_slice(line);
            buf.push(b'\n');
        }
        let result = match &mut self.file {
            Some(file) => {
                let written = file.write_all(&buf).and_then(|()| file.sync_data());
                match written {
                    Ok(()) => {
                        self.good_len += buf.len() as u64;
                        Ok(())
                    }
                    Err(e) => {
                        // Best effort: a file that cannot be cut back is
                        // reported by verification as a broken line.
                        if self.regular {
                            let _ = file.set_len(self.good_len);
                        }
                        Err(e)
                    }
                }
            }
            None => {
                let mut out = std::io::stdout().lock();
                out.write_all(&buf).and_then(|()| out.flush())
            }
        };
        result.map_err(|e| AuditError::Sink {
            target: self.target.name(),
            detail: e.to_string(),
        })
    }
}
