//! The segment writer: a thread of its own that writes and syncs the
//! batches the appender has chained, so the next batch is gathered and
//! chained while this one syncs. Batches waiting when a sync ends go out
//! together, in one write and one sync.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::log::{CheckpointReply, RecordReply, Session};
use crate::record::{Checkpoint, Line};
use crate::segments::SegmentLog;
use crate::sink::Sink;
use crate::{layout, AuditError};

/// Records chained by the appender, to be written after the head.
pub(crate) struct Batch {
    /// The writer's epoch the batch was chained in (see
    /// [`SegmentWriter::epoch`]).
    pub(crate) epoch: u64,
    /// The number of the first record.
    pub(crate) first: u64,
    /// One encoded line per record.
    pub(crate) lines: Vec<Vec<u8>>,
    /// The chain hash of the last record.
    pub(crate) hash: String,
    /// One per record, in order: told its number once it is durable.
    pub(crate) waiters: Vec<RecordReply>,
}

enum Work {
    Records(Batch),
    Checkpoint {
        session: Arc<Session>,
        time: String,
        reply: CheckpointReply,
    },
}

/// The appender's handle on the writer thread. The thread ends once the
/// handle is dropped and the work handed to it is done.
pub(crate) struct SegmentWriter {
    log: Arc<SegmentLog>,
    tx: mpsc::Sender<Work>,
    epoch: Arc<AtomicU64>,
}

impl SegmentWriter {
    /// Starts the thread. `depth` is how many batches may wait for it.
    pub(crate) fn start(
        log: Arc<SegmentLog>,
        sink: Option<Sink>,
        depth: usize,
    ) -> Result<Self, AuditError> {
        let (tx, rx) = mpsc::channel(depth.max(1));
        let epoch = Arc::new(AtomicU64::new(0));
        let thread = Thread {
            log: Arc::clone(&log),
            sink,
            rx,
            held: None,
            epoch: Arc::clone(&epoch),
            failure: String::new(),
            last_checkpoint: 0,
        };
        std::thread::Builder::new()
            .name("vern-audit-writer".to_owned())
            .spawn(move || thread.run())
            .map_err(|e| AuditError::Write(format!("cannot start the audit writer: {e}")))?;
        Ok(Self { log, tx, epoch })
    }

    /// The durable head: the last record written and synced.
    pub(crate) fn durable_head(&self) -> (u64, String) {
        self.log.head()
    }

    /// The epoch, moved on by every failed write. Batches of an earlier
    /// epoch were chained on a write that failed: they fail unwritten. So
    /// once the appender sees a new epoch, the durable head stays put until
    /// a batch of that epoch, chained after it, is written.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Queues `batch`. If the thread is gone, its waiters are told.
    pub(crate) async fn records(&self, batch: Batch) {
        if let Err(mpsc::error::SendError(Work::Records(batch))) =
            self.tx.send(Work::Records(batch)).await
        {
            fail(batch.waiters, &AuditError::Closed.to_string());
        }
    }

    /// Queues a checkpoint of the head as it will be once the records
    /// queued before it are written.
    pub(crate) async fn checkpoint(
        &self,
        session: Arc<Session>,
        time: String,
        reply: CheckpointReply,
    ) {
        let work = Work::Checkpoint {
            session,
            time,
            reply,
        };
        if let Err(mpsc::error::SendError(Work::Checkpoint { reply, .. })) =
            self.tx.send(work).await
        {
            let _ = reply.send(Err(AuditError::Closed.to_string()));
        }
    }
}

fn fail(waiters: Vec<RecordReply>, detail: &str) {
    for waiter in waiters {
        let _ = waiter.send(Err(detail.to_owned()));
    }
}

struct Thread {
    log: Arc<SegmentLog>,
    sink: Option<Sink>,
    rx: mpsc::Receiver<Work>,
    /// Work taken while gathering batches that could not join them.
    held: Option<Work>,
    epoch: Arc<AtomicU64>,
    /// Why the last failed write failed.
    failure: String,
    last_checkpoint: u64,
}

impl Thread {
    fn run(mut self) {
        while let Some(work) = self.held.take().or_else(|| self.rx.blocking_recv()) {
            match work {
                Work::Records(batch) => self.records(batch),
                Work::Checkpoint {
                    session,
                    time,
                    reply,
                } => {
                    let result = self.checkpoint(&session, time).map_err(|e| e.to_string());
                    let _ = reply.send(result);
                }
            }
        }
    }

    /// Writes `batch` and every batch waiting that continues it.
    fn records(&mut self, batch: Batch) {
        let epoch = self.epoch.load(Ordering::Acquire);
        if batch.epoch != epoch {
            let detail = format!("an earlier audit write failed: {}", self.failure);
            fail(batch.waiters, &detail);
            return;
        }
        let first = batch.first;
        let mut next = first + batch.lines.len() as u64;
        let mut hash = batch.hash;
        let mut lines = batch.lines;
        let mut groups = vec![(first, batch.waiters)];
        while let Ok(work) = self.rx.try_recv() {
            match work {
                Work::Records(more) if more.epoch == epoch && more.first == next => {
                    next += more.lines.len() as u64;
                    hash = more.hash;
                    lines.extend(more.lines);
                    groups.push((more.first, more.waiters));
                }
                other => {
                    self.held = Some(other);
                    break;
                }
            }
        }
        let written = self
            .log
            .append_records(first, &lines, &hash)
            .and_then(|()| self.sink_after(first, lines, next));
        match written {
            Ok(()) => {
                for (first, waiters) in groups {
                    for (seq, waiter) in (first..).zip(waiters) {
                        let _ = waiter.send(Ok(seq));
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "Audit records could not be written; their requests fail.");
                self.failure = e.to_string();
                self.epoch.store(epoch + 1, Ordering::Release);
                for (_, waiters) in groups {
                    fail(waiters, &self.failure);
                }
            }
        }
    }

    fn checkpoint(
        &mut self,
        session: &Session,
        time: String,
    ) -> Result<Option<Checkpoint>, AuditError> {
        let (seq, head) = self.log.head();
        if seq == 0 || seq <= self.last_checkpoint {
            return Ok(None);
        }
        let mut cp = Checkpoint {
            seq,
            head,
            time,
            key: session.keys().public_key().to_string(),
            signature: String::new(),
        };
        cp.signature = session.keys().sign_checkpoint(&cp);
        let line = serde_json::to_vec(&Line::Checkpoint(cp.clone()))
            .map_err(|_| AuditError::Corrupt(layout::checkpoint(cp.seq)))?;
        let written = self.log.append_checkpoint(seq, &line)?;
        self.last_checkpoint = seq;
        if !written {
            return Ok(None);
        }
        self.sink_after(seq + 1, vec![line], seq + 1)?;
        Ok(Some(cp))
    }

    /// Writes `lines` to the sink after the records it lacks before `upto`
    /// (those of a failed sink write), so a sink file holds the whole
    /// chain; afterwards the sink expects record `next`.
    fn sink_after(&mut self, upto: u64, lines: Vec<Vec<u8>>, next: u64) -> Result<(), AuditError> {
        let Some(sink) = &mut self.sink else {
            return Ok(());
        };
        let mut all = match sink.next_seq {
            Some(from) if from < upto => {
                let wanted = usize::try_from(upto - from).unwrap_or(usize::MAX);
                let records = self.log.records_after(from.saturating_sub(1), wanted)?;
                crate::log::missing_lines(from, upto, records)?
            }
            _ => Vec::new(),
        };
        all.extend(lines);
        sink.write(&all)?;
        sink.next_seq = Some(next);
        Ok(())
    }
}
