//! The JSON-lines sink: a file (appended and synced per batch) or
//! standard output, for shipping to a SIEM.

use std::io::Write as _;
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
}

impl Sink {
    pub(crate) fn open(target: SinkTarget) -> Result<Self, AuditError> {
        let file = match &target {
            SinkTarget::File(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| AuditError::Sink {
                        target: target.name(),
                        detail: e.to_string(),
                    })?,
            ),
            SinkTarget::Stdout => None,
        };
        Ok(Self { target, file })
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
            Some(file) => file.write_all(&buf).and_then(|()| file.sync_data()),
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
