//! The appender: group commit of chained records, checkpoints, sessions.

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use vern_core::Clock;
use vern_seal::Barrier;
use vern_store::{CommitGate, Expect, Store, StoreError, Write};

use crate::backing::LogStore;
use crate::writer::{Batch, SegmentWriter};

use crate::keys::AuditKeys;
use crate::layout;
use crate::query::{self, Filter, Page};
use crate::record::{record_line, AuditRecord, Checkpoint, Event, Line, GENESIS};
use crate::sink::{Sink, SinkTarget};
use crate::storage_key as key;
use crate::AuditError;

fn sink_lost() -> AuditError {
    AuditError::Sink {
        target: "sink".to_owned(),
        detail: "the writer task failed; restart the server".to_owned(),
    }
}

/// How often one batch retries after another process moved the head.
const MAX_ATTEMPTS: usize = 64;
/// Most yields while gathering one batch for a store.
const MAX_YIELDS: usize = 8;
/// Most yields while gathering one batch for segment files. Their writer
/// joins the batches that wait for it, so a batch is handed over early
/// (measured against 8: the machine idle 14–19% of the time instead of
/// 22–25% under 32 connections, about 10% more audited reads per second).
const SEGMENT_YIELDS: usize = 1;
/// Batches that may wait for the segment writer while it syncs.
const WRITER_DEPTH: usize = 64;

/// Settings of the audit log.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// How often the head is signed while records keep coming.
    pub checkpoint_interval: Duration,
    /// A JSON-lines copy of every record and checkpoint, besides storage.
    pub sink: Option<SinkTarget>,
    /// Most records chained into one storage transaction.
    pub max_batch: usize,
    /// Bytes after which segment files ([`SegmentLog`]) are closed.
    pub segment_bytes: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            checkpoint_interval: Duration::from_secs(60),
            sink: None,
            max_batch: 1024,
            segment_bytes: crate::DEFAULT_SEGMENT_BYTES,
        }
    }
}

/// The audit keys of one unseal. Held by requests in flight, so a request
/// that seals the server is still recorded and checkpointed with them.
pub struct Session {
    keys: AuditKeys,
    barrier: Weak<Barrier>,
}

impl Session {
    /// The keys.
    pub fn keys(&self) -> &AuditKeys {
        &self.keys
    }

    /// `hmac-sha256:<hex>` of a sensitive value.
    pub fn hmac(&self, value: &[u8]) -> String {
        self.keys.hmac(value)
    }
}

/// The chain head as stored under [`layout::HEAD`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeadDoc {
    seq: u64,
    hash: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub(crate) seq: u64,
    pub(crate) hash: String,
    version: Option<u64>,
}

/// Told a record's number once it is durable, or why it is not.
pub(crate) type RecordReply = oneshot::Sender<Result<u64, String>>;
/// Told the checkpoint signed, if the head was not signed already.
pub(crate) type CheckpointReply = oneshot::Sender<Result<Option<Checkpoint>, String>>;

enum Job {
    Append(Box<Event>, Option<Arc<CommitGate>>, RecordReply),
    Checkpoint(Arc<Session>, CheckpointReply),
}

struct Shared {
    store: LogStore,
    tx: mpsc::Sender<Job>,
    session: RwLock<Option<Arc<Session>>>,
    opening: tokio::sync::Mutex<()>,
}

/// The audit log of one process. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    shared: Arc<Shared>,
}

pub(crate) async fn read_head(store: &dyn Store) -> Result<Head, AuditError> {
    let Some(entry) = store.get(&key(layout::HEAD)?).await? else {
        return Ok(Head {
            seq: 0,
            hash: GENESIS.to_owned(),
            version: None,
        });
    };
    let doc: HeadDoc = serde_json::from_slice(&entry.value)
        .map_err(|_| AuditError::Corrupt(layout::HEAD.to_owned()))?;
    Ok(Head {
        seq: doc.seq,
        hash: doc.hash,
        version: Some(entry.version),
    })
}

impl AuditLog {
    /// Opens the sink and starts the appender and checkpoint tasks. Must be
    /// called inside a Tokio runtime.
    pub fn new(
        store: impl Into<LogStore>,
        clock: Arc<dyn Clock>,
        config: AuditConfig,
    ) -> Result<Self, AuditError> {
        let store = store.into();
        if config.checkpoint_interval.is_zero() || config.max_batch == 0 {
            return Err(AuditError::Invalid(
                "the checkpoint interval and the batch size must be greater than zero".to_owned(),
            ));
        }
        let mut sink = config.sink.clone().map(Sink::open).transpose()?;
        let (tx, rx) = mpsc::channel(config.max_batch.saturating_mul(8).min(1 << 20));
        let target = match &store {
            LogStore::Kv(store) => Target::Kv(Arc::clone(store)),
            LogStore::Segments(log) => Target::Segments(SegmentWriter::start(
                Arc::clone(log),
                sink.take(),
                WRITER_DEPTH,
            )?),
        };
        let appender = Appender {
            target,
            clock,
            sink_lost: false,
            sink,
            head: None,
            writer_epoch: 0,
            last_checkpoint: 0,
            max_batch: config.max_batch,
        };
        tokio::spawn(appender.run(rx));
        let log = Self {
            shared: Arc::new(Shared {
                store,
                tx,
                session: RwLock::new(None),
                opening: tokio::sync::Mutex::new(()),
            }),
        };
        let weak = Arc::downgrade(&log.shared);
        tokio::spawn(checkpoint_every(weak, config.checkpoint_interval));
        Ok(log)
    }

    /// The session of `barrier`'s unseal, loading the keys on the first
    /// request after an unseal.
    pub async fn session(&self, barrier: &Arc<Barrier>) -> Result<Arc<Session>, AuditError> {
        let of_barrier = || {
            self.current()
                .filter(|s| std::ptr::eq(s.barrier.as_ptr(), Arc::as_ptr(barrier)))
        };
        if let Some(s) = of_barrier() {
            return Ok(s);
        }
        let _one = self.shared.opening.lock().await;
        if let Some(s) = of_barrier() {
            return Ok(s);
        }
        let session = Arc::new(Session {
            keys: AuditKeys::load_or_create(barrier, &self.shared.store).await?,
            barrier: Arc::downgrade(barrier),
        });
        *self
            .shared
            .session
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&session));
        tracing::info!(key = %session.keys.public_key(), "Audit log open.");
        Ok(session)
    }

    /// The open session, if any. A session whose barrier is gone (sealed
    /// while a request was still opening it) is dropped here, keys and all.
    pub fn current(&self) -> Option<Arc<Session>> {
        let current = self
            .shared
            .session
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        if current.barrier.strong_count() > 0 {
            return Some(current);
        }
        let mut slot = self
            .shared
            .session
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, &current)) {
            *slot = None;
        }
        None
    }

    /// Appends one record and returns its sequence number once it is
    /// durable in storage and in the sink. Waits for the batch it joins.
    pub async fn append(&self, event: Event) -> Result<u64, AuditError> {
        self.submit(|tx| Job::Append(Box::new(event), None, tx))
            .await
    }

    /// Like [`AuditLog::append`], but the record can be withdrawn with
    /// [`CommitGate::abandon`] until the appender takes it into a batch;
    /// from then on it is committed or fails with its batch, so a caller
    /// that gives up in time knows the record will never appear.
    pub async fn append_gated(
        &self,
        event: Event,
        gate: Arc<CommitGate>,
    ) -> Result<u64, AuditError> {
        self.submit(|tx| Job::Append(Box::new(event), Some(gate), tx))
            .await
    }

    /// Signs the current head with `session`'s key, unless it is already
    /// signed. Returns the new checkpoint.
    pub async fn checkpoint(
        &self,
        session: &Arc<Session>,
    ) -> Result<Option<Checkpoint>, AuditError> {
        self.submit(|tx| Job::Checkpoint(Arc::clone(session), tx))
            .await
    }

    /// Hands a job to the appender and waits for its answer.
    async fn submit<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<T, String>>) -> Job,
    ) -> Result<T, AuditError> {
        let (tx, rx) = oneshot::channel();
        self.shared
            .tx
            .send(job(tx))
            .await
            .map_err(|_| AuditError::Closed)?;
        rx.await
            .map_err(|_| AuditError::Closed)?
            .map_err(AuditError::Write)
    }

    /// Ends the session (on seal or shutdown): signs a last checkpoint and
    /// drops the keys.
    pub async fn close(&self) -> Result<Option<Checkpoint>, AuditError> {
        // Not while a session is being opened, which would install itself
        // after this close.
        let _one = self.shared.opening.lock().await;
        let taken = self
            .shared
            .session
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match taken {
            Some(session) => self.checkpoint(&session).await,
            None => Ok(None),
        }
    }

    /// Records matching `filter`, oldest first, with a cursor to go on.
    pub async fn query(&self, filter: &Filter) -> Result<Page, AuditError> {
        query::run(&self.shared.store, filter).await
    }
}

async fn checkpoint_every(shared: Weak<Shared>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let log = AuditLog { shared };
        if let Some(session) = log.current() {
            if let Err(e) = log.checkpoint(&session).await {
                tracing::error!(error = %e, "Signing an audit checkpoint failed.");
            }
        }
    }
}

/// Where the appender writes.
enum Target {
    /// A store, in one transaction per batch.
    Kv(Arc<dyn Store>),
    /// Segment files, through their writer thread (which owns the sink).
    Segments(SegmentWriter),
}

/// The one task that chains and writes, so records of this process are
/// ordered without locks; the head's compare-and-set orders them against
/// other processes.
struct Appender {
    target: Target,
    clock: Arc<dyn Clock>,
    sink: Option<Sink>,
    /// Set when the sink was lost: every append fails from then on.
    sink_lost: bool,
    /// The head after the last batch chained: on a store, as last
    /// committed; on segment files, as it will be once the batches handed
    /// to the writer are written.
    head: Option<Head>,
    /// The segment writer's epoch `head` was chained in.
    writer_epoch: u64,
    last_checkpoint: u64,
    max_batch: usize,
}

impl Appender {
    async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        while let Some(first) = rx.recv().await {
            let jobs = self.gather(first, &mut rx).await;
            let mut events = Vec::new();
            let mut waiters = Vec::new();
            let mut checkpoints = Vec::new();
            for job in jobs {
                match job {
                    Job::Append(event, gate, reply) => {
                        if gate.is_some_and(|g| !g.begin()) {
                            let _ = reply.send(Err("withdrawn before it was written".to_owned()));
                            continue;
                        }
                        events.push(*event);
                        waiters.push(reply);
                    }
                    Job::Checkpoint(session, reply) => checkpoints.push((session, reply)),
                }
            }
            if !events.is_empty() {
                match &self.target {
                    Target::Segments(_) => self.hand_off(events, waiters).await,
                    Target::Kv(store) => {
                        let store = Arc::clone(store);
                        self.commit(&store, events, waiters).await;
                    }
                }
            }
            for (session, reply) in checkpoints {
                match &self.target {
                    Target::Segments(writer) => writer.checkpoint(session, self.now(), reply).await,
                    Target::Kv(store) => {
                        let store = Arc::clone(store);
                        let result = self.checkpoint(&store, &session).await;
                        let _ = reply.send(result.map_err(|e| e.to_string()));
                    }
                }
            }
        }
    }

    /// The jobs of one batch: `first` and whatever else is waiting. Between
    /// drains the appender yields, so requests already running on this
    /// worker reach their append and join the batch; it stops when the
    /// batch is full, when a yield brings nothing more to a batch of
    /// several, or after [`MAX_YIELDS`] ([`SEGMENT_YIELDS`] for segment
    /// files). Fewer, larger batches mean fewer syncs, the largest cost of
    /// an audited request (measured: a third fewer context switches and
    /// about 10% less CPU per audited read).
    async fn gather(&self, first: Job, rx: &mut mpsc::Receiver<Job>) -> Vec<Job> {
        let mut jobs = vec![first];
        let yields = match self.target {
            Target::Kv(_) => MAX_YIELDS,
            Target::Segments(_) => SEGMENT_YIELDS,
        };
        for i in 0..=yields {
            let before = jobs.len();
            while jobs.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            if i == yields || jobs.len() >= self.max_batch || (jobs.len() == before && before > 1) {
                break;
            }
            tokio::task::yield_now().await;
        }
        jobs
    }

    /// Writes `lines` to the sink after the records it lacks before `upto`
    /// (other processes' records, or those of a failed write), read back
    /// from storage, so a sink file holds the whole chain; afterwards the
    /// sink expects record `next`.
    async fn sink_after(
        &mut self,
        store: &Arc<dyn Store>,
        upto: u64,
        lines: Vec<Vec<u8>>,
        next: u64,
    ) -> Result<(), AuditError> {
        if self.sink_lost {
            return Err(sink_lost());
        }
        if self.sink.is_none() {
            return Ok(());
        }
        let mut all = self.missing_lines(store, upto).await?;
        all.extend(lines);
        self.write_sink(all, next).await
    }

    /// Lines of the records the sink lacks before `upto`. A sink that has
    /// written nothing yet (standard output, a new file) starts at `upto`.
    async fn missing_lines(
        &mut self,
        store: &Arc<dyn Store>,
        upto: u64,
    ) -> Result<Vec<Vec<u8>>, AuditError> {
        let Some(from) = self.sink.as_ref().and_then(|s| s.next_seq) else {
            return Ok(Vec::new());
        };
        let wanted = usize::try_from(upto.saturating_sub(from)).unwrap_or(usize::MAX);
        let records = LogStore::Kv(Arc::clone(store))
            .records_after(from.saturating_sub(1), wanted)
            .await?;
        missing_lines(from, upto, records)
    }

    /// Writes to the sink off the async workers (a file sync blocks); on
    /// success the sink expects record `next`.
    async fn write_sink(&mut self, lines: Vec<Vec<u8>>, next: u64) -> Result<(), AuditError> {
        let Some(mut sink) = self.sink.take() else {
            return Ok(());
        };
        let task = tokio::task::spawn_blocking(move || {
            let result = sink.write(&lines);
            if result.is_ok() {
                sink.next_seq = Some(next);
            }
            (sink, result)
        });
        match task.await {
            Ok((sink, result)) => {
                self.sink = Some(sink);
                result
            }
            // The sink is lost with the task: fail every later append
            // rather than carry on without it.
            Err(_) => {
                self.sink_lost = true;
                Err(sink_lost())
            }
        }
    }

    fn now(&self) -> String {
        humantime::format_rfc3339_millis(self.clock.now()).to_string()
    }

    /// Chains `events` after the head they will follow and hands them to
    /// the segment writer, which tells their requests once they are
    /// durable. The appender goes on to the next batch meanwhile.
    async fn hand_off(&mut self, events: Vec<Event>, waiters: Vec<RecordReply>) {
        let Target::Segments(writer) = &self.target else {
            return;
        };
        // After a failed write, the batches chained on it fail unwritten:
        // chain after what is durable again.
        let epoch = writer.epoch();
        if epoch != self.writer_epoch {
            self.writer_epoch = epoch;
            self.head = None;
        }
        let (seq, hash) = match self.head.take() {
            Some(head) => (head.seq, head.hash),
            None => writer.durable_head(),
        };
        let time = self.now();
        let mut prev = hash;
        let mut lines = Vec::with_capacity(events.len());
        for (i, event) in events.iter().enumerate() {
            let (hash, bytes) = AuditRecord::encode(seq + 1 + i as u64, &prev, &time, event);
            prev = hash;
            lines.push(record_line(&bytes));
        }
        self.head = Some(Head {
            seq: seq + events.len() as u64,
            hash: prev.clone(),
            version: None,
        });
        writer
            .records(Batch {
                epoch,
                first: seq + 1,
                lines,
                hash: prev,
                waiters,
            })
            .await;
    }

    /// Chains and commits `events` to the store, then tells their
    /// requests.
    async fn commit(
        &mut self,
        store: &Arc<dyn Store>,
        events: Vec<Event>,
        waiters: Vec<RecordReply>,
    ) {
        match self.append_kv(store, events).await {
            Ok(first_seq) => {
                for (i, reply) in waiters.into_iter().enumerate() {
                    let _ = reply.send(Ok(first_seq + i as u64));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "Audit records could not be written; their requests fail.");
                let detail = e.to_string();
                for reply in waiters {
                    let _ = reply.send(Err(detail.clone()));
                }
            }
        }
    }

    /// Chains and commits `events` as one transaction with the head as the
    /// compare-and-set point; returns the first sequence number.
    async fn append_kv(
        &mut self,
        store: &Arc<dyn Store>,
        events: Vec<Event>,
    ) -> Result<u64, AuditError> {
        let head_key = key(layout::HEAD)?;
        for _ in 0..MAX_ATTEMPTS {
            let head = match self.head.take() {
                Some(h) => h,
                None => read_head(store.as_ref()).await?,
            };
            let time = self.now();
            let mut prev = head.hash.clone();
            let mut encoded = Vec::with_capacity(events.len());
            for (i, event) in events.iter().enumerate() {
                let (hash, bytes) =
                    AuditRecord::encode(head.seq + 1 + i as u64, &prev, &time, event);
                prev = hash;
                encoded.push(bytes);
            }
            let last = head.seq + events.len() as u64;
            let lines: Vec<Vec<u8>> = match self.sink {
                Some(_) => encoded.iter().map(|bytes| record_line(bytes)).collect(),
                None => Vec::new(),
            };
            let mut writes = Vec::with_capacity(encoded.len() + 1);
            for (seq, bytes) in (head.seq + 1..).zip(encoded) {
                writes
                    .push(Write::put(key(&layout::record(seq))?, bytes).expecting(Expect::Absent));
            }
            let doc = serde_json::to_vec(&HeadDoc {
                seq: last,
                hash: prev.clone(),
            })
            .map_err(|_| AuditError::Corrupt(layout::HEAD.to_owned()))?;
            let expect = head.version.map_or(Expect::Absent, Expect::Version);
            writes.push(Write::put(head_key.clone(), doc).expecting(expect));
            match store.commit(writes).await {
                Ok(versions) => {
                    self.head = Some(Head {
                        seq: last,
                        hash: prev,
                        version: versions.last().copied(),
                    });
                    self.sink_after(store, head.seq + 1, lines, last + 1)
                        .await?;
                    return Ok(head.seq + 1);
                }
                // Another process appended first: chain after its records.
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AuditError::Contention(MAX_ATTEMPTS))
    }

    /// Signs the store's head with `session`'s key, unless it is signed
    /// already. (Segment files are checkpointed by their writer.)
    async fn checkpoint(
        &mut self,
        store: &Arc<dyn Store>,
        session: &Session,
    ) -> Result<Option<Checkpoint>, AuditError> {
        let head = read_head(store.as_ref()).await?;
        let (seq, hash) = (head.seq, head.hash);
        if seq == 0 || seq <= self.last_checkpoint {
            return Ok(None);
        }
        let mut cp = Checkpoint {
            seq,
            head: hash,
            time: self.now(),
            key: session.keys.public_key().to_string(),
            signature: String::new(),
        };
        cp.signature = session.keys.sign_checkpoint(&cp);
        let line = serde_json::to_vec(&Line::Checkpoint(cp.clone()))
            .map_err(|_| AuditError::Corrupt(layout::checkpoint(cp.seq)))?;
        let value =
            serde_json::to_vec(&cp).map_err(|_| AuditError::Corrupt(layout::checkpoint(cp.seq)))?;
        let write = Write::put(key(&layout::checkpoint(cp.seq))?, value).expecting(Expect::Absent);
        let written = match store.commit(vec![write]).await {
            Ok(_) => true,
            // Another process signed this head already.
            Err(StoreError::Conflict { .. }) => false,
            Err(e) => return Err(e.into()),
        };
        self.last_checkpoint = seq;
        if !written {
            return Ok(None);
        }
        self.sink_after(store, cp.seq + 1, vec![line], cp.seq + 1)
            .await?;
        Ok(Some(cp))
    }
}

/// The lines of `records` (read after `from - 1`) for a sink that lacks
/// records `from..upto`; a record missing or out of place is named.
pub(crate) fn missing_lines(
    from: u64,
    upto: u64,
    records: Vec<(u64, Vec<u8>)>,
) -> Result<Vec<Vec<u8>>, AuditError> {
    let wanted = usize::try_from(upto.saturating_sub(from)).unwrap_or(usize::MAX);
    let mut lines = Vec::with_capacity(records.len().min(wanted));
    for (expected, (seq, bytes)) in (from..upto).zip(records) {
        if seq != expected {
            return Err(AuditError::Corrupt(layout::record(expected)));
        }
        lines.push(record_line(&bytes));
    }
    if lines.len() != wanted {
        return Err(AuditError::Corrupt(layout::record(
            from + lines.len() as u64,
        )));
    }
    Ok(lines)
}
