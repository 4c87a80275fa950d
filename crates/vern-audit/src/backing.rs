//! Where the log is kept: a key-value [`Store`] (PostgreSQL, where several
//! replicas append to one chain) or segment files (embedded deployments).

use std::sync::Arc;

use vern_store::Store;

use crate::layout;
use crate::log::read_head;
use crate::segments::SegmentLog;
use crate::{storage_key, AuditError};

/// The storage of a log.
#[derive(Clone)]
pub enum LogStore {
    /// Keys under [`layout::PREFIX`] of a store, the head as the
    /// compare-and-set point of every append.
    Kv(Arc<dyn Store>),
    /// Segment files of one process.
    Segments(Arc<SegmentLog>),
}

impl From<Arc<dyn Store>> for LogStore {
    fn from(store: Arc<dyn Store>) -> Self {
        Self::Kv(store)
    }
}

impl From<SegmentLog> for LogStore {
    fn from(log: SegmentLog) -> Self {
        Self::Segments(Arc::new(log))
    }
}

/// Keys read per storage round trip.
const PAGE: usize = 256;

impl LogStore {
    /// The sequence number of the newest record.
    pub async fn head_seq(&self) -> Result<u64, AuditError> {
        match self {
            Self::Kv(store) => Ok(read_head(store.as_ref()).await?.seq),
            Self::Segments(log) => Ok(log.head().0),
        }
    }

    /// Whether any record was ever appended.
    pub(crate) async fn has_records(&self) -> Result<bool, AuditError> {
        match self {
            Self::Kv(store) => Ok(!store.list(layout::RECORDS, None, 1).await?.is_empty()),
            Self::Segments(log) => Ok(log.has_records()),
        }
    }

    /// Up to `max` records after `after` as `(seq, stored bytes)`, oldest
    /// first. The numbers are where the records are kept (their keys, their
    /// position in the files), whatever a tampered record claims.
    pub(crate) async fn records_after(
        &self,
        after: u64,
        max: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, AuditError> {
        match self {
            Self::Kv(store) => {
                let mut out = Vec::new();
                let mut cursor = (after > 0).then(|| layout::record(after));
                while out.len() < max {
                    let keys = store
                        .list(
                            layout::RECORDS,
                            cursor.as_deref(),
                            PAGE.min(max - out.len()),
                        )
                        .await?;
                    let Some(last) = keys.last().cloned() else {
                        break;
                    };
                    for k in &keys {
                        let Some(seq) = k
                            .strip_prefix(layout::RECORDS)
                            .and_then(|s| s.parse::<u64>().ok())
                        else {
                            continue;
                        };
                        if let Some(entry) = store.get(&storage_key(k)?).await? {
                            out.push((seq, entry.value));
                        }
                    }
                    cursor = Some(last);
                }
                Ok(out)
            }
            Self::Segments(log) => {
                let log = Arc::clone(log);
                tokio::task::spawn_blocking(move || log.records_after(after, max))
                    .await
                    .map_err(|_| AuditError::Closed)?
            }
        }
    }
}
