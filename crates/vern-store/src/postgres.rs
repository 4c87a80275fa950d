//! The PostgreSQL backend, for several Vern replicas sharing one database.
//! Every session runs with `synchronous_commit = on`, so an acknowledged
//! commit is durable; compare-and-set is done in SQL so it holds across
//! processes, not only inside one. Sessions also run with
//! `plan_cache_mode = force_generic_plan` (PostgreSQL 12 and later): every
//! statement here finds its rows by primary key whatever its parameters,
//! and left to choose, PostgreSQL planned the batched reads and the
//! statements of `vern_commit` afresh on each execution.
//!
//! Reads are batched: concurrent `get` and `get_many` calls are answered
//! by one query while earlier batches are still in flight (see
//! [`read_batches`]).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use crate::{lock_order, prefix_end, redact_url, Entry, Expect, Key, Op, Store, StoreError, Write};

const BACKEND: &str = "postgres";

/// Serialises schema migrations across replicas starting at the same time.
const MIGRATION_LOCK: i64 = 0x0076_6572_6e6d_6967; // "vernmig"

/// Schema migrations, applied in order; the index plus one is the version.
/// Keys use the "C" collation so they sort bytewise, as in SQLite.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE kv (
        key     TEXT COLLATE \"C\" PRIMARY KEY,
        value   BYTEA NOT NULL,
        version BIGINT NOT NULL CHECK (version > 0)
    )",
    // One batch in one statement, so in one round trip and atomically: the
    // writes in the order given, each with its precondition. A precondition
    // that does not hold raises PRECONDITION_FAILED with the write's
    // position (from 1) as the message, which undoes the whole batch.
    // Kinds: 0 put, 1 put if absent, 2 put if at version, 3 delete,
    // 4 delete if absent, 5 delete if at version.
    "CREATE FUNCTION vern_commit(keys TEXT[], vals BYTEA[], kinds SMALLINT[], expected BIGINT[])
     RETURNS BIGINT[] LANGUAGE plpgsql VOLATILE AS $$
     DECLARE
         versions BIGINT[] := '{}';
         v BIGINT;
     BEGIN
         FOR i IN 1 .. coalesce(array_length(keys, 1), 0) LOOP
             v := 0;
             CASE kinds[i]
             WHEN 0 THEN
                 INSERT INTO kv (key, value, version) VALUES (keys[i], vals[i], 1)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, version = kv.version + 1
                 RETURNING kv.version INTO v;
             WHEN 1 THEN
                 INSERT INTO kv (key, value, version) VALUES (keys[i], vals[i], 1)
                 ON CONFLICT (key) DO NOTHING RETURNING kv.version INTO v;
                 IF NOT FOUND THEN
                     RAISE EXCEPTION USING ERRCODE = 'VN001', MESSAGE = i::text;
                 END IF;
             WHEN 2 THEN
                 UPDATE kv SET value = vals[i], version = kv.version + 1
                 WHERE kv.key = keys[i] COLLATE \"C\" AND kv.version = expected[i]
                 RETURNING kv.version INTO v;
                 IF NOT FOUND THEN
                     RAISE EXCEPTION USING ERRCODE = 'VN001', MESSAGE = i::text;
                 END IF;
             WHEN 3 THEN
                 DELETE FROM kv WHERE kv.key = keys[i] COLLATE \"C\";
             WHEN 4 THEN
                 PERFORM 1 FROM kv WHERE kv.key = keys[i] COLLATE \"C\" FOR UPDATE;
                 IF FOUND THEN
                     RAISE EXCEPTION USING ERRCODE = 'VN001', MESSAGE = i::text;
                 END IF;
             WHEN 5 THEN
                 DELETE FROM kv WHERE kv.key = keys[i] COLLATE \"C\" AND kv.version = expected[i];
                 IF NOT FOUND THEN
                     RAISE EXCEPTION USING ERRCODE = 'VN001', MESSAGE = i::text;
                 END IF;
             END CASE;
             versions := versions || v;
         END LOOP;
         RETURN versions;
     END $$",
];

/// The SQLSTATE `vern_commit` raises when a write's precondition fails.
const PRECONDITION_FAILED: &str = "VN001";

/// `vern_commit`'s kinds of write.
const PUT: i16 = 0;
const PUT_IF_ABSENT: i16 = 1;
const PUT_IF_AT: i16 = 2;
const DELETE: i16 = 3;
const DELETE_IF_ABSENT: i16 = 4;
const DELETE_IF_AT: i16 = 5;

/// Batched reads in flight at once. While they all wait for their
/// answers, new reads queue up and go out together as the next batch.
/// Two measured fastest on two cores (`docs/ARCHITECTURE.md`).
const READS_IN_FLIGHT: usize = 2;

/// Most keys a batch gathers from further callers; a single call with
/// more keys still goes out whole, alone.
const BATCH_KEYS: usize = 256;

/// Calls waiting for the batcher before callers wait to hand theirs over.
const READ_QUEUE: usize = 1024;

/// One `get_many` call waiting for its batch's answer.
struct ReadJob {
    keys: Vec<String>,
    reply: oneshot::Sender<Result<Vec<Option<Entry>>, StoreError>>,
}

/// PostgreSQL storage through a connection pool.
pub struct PostgresStore {
    pool: Pool,
    reads: mpsc::Sender<ReadJob>,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::backend(BACKEND, e)
}

fn db_err(e: tokio_postgres::Error) -> StoreError {
    match e.code() {
        // A lost serialization race or a deadlock is a conflict the caller
        // may retry, exactly like a failed compare-and-set.
        Some(code)
            if *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
                || *code == SqlState::UNIQUE_VIOLATION =>
        {
            StoreError::Conflict {
                key: String::from("(concurrent transaction)"),
            }
        }
        _ => err(e),
    }
}

/// A batch's error: a precondition that does not hold is a conflict on
/// the key of the write it names.
fn commit_err(e: tokio_postgres::Error, keys: &[&str]) -> StoreError {
    let failed = e
        .as_db_error()
        .filter(|d| d.code().code() == PRECONDITION_FAILED)
        .and_then(|d| d.message().parse::<usize>().ok())
        .and_then(|position| keys.get(position.checked_sub(1)?));
    match failed {
        Some(key) => StoreError::Conflict {
            key: (*key).to_owned(),
        },
        None => db_err(e),
    }
}

impl PostgresStore {
    /// Connects with a pool of at most `pool_size` connections and migrates
    /// the schema.
    pub async fn connect(url: &str, pool_size: usize) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|_| StoreError::BadUrl(redact_url(url)))?;
        config.options("-c synchronous_commit=on -c plan_cache_mode=force_generic_plan");
        if config.get_application_name().is_none() {
            config.application_name("vern");
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .build()
            .map_err(err)?;
        let (reads, queue) = mpsc::channel(READ_QUEUE);
        tokio::spawn(read_batches(pool.clone(), queue));
        let store = Self { pool, reads };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.pool.get().await.map_err(err)?;
        let tx = client.transaction().await.map_err(db_err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(db_err)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS vern_migrations (
                version    INTEGER PRIMARY KEY,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )",
        )
        .await
        .map_err(db_err)?;
        let current: i32 = tx
            .query_one("SELECT COALESCE(MAX(version), 0) FROM vern_migrations", &[])
            .await
            .map_err(db_err)?
            .get(0);
        let known = MIGRATIONS.len() as i64;
        if i64::from(current) > known {
            return Err(StoreError::SchemaTooNew {
                found: i64::from(current),
                known,
            });
        }
        for (version, sql) in (1i32..).zip(MIGRATIONS).skip(current as usize) {
            tx.batch_execute(sql).await.map_err(db_err)?;
            tx.execute(
                "INSERT INTO vern_migrations (version) VALUES ($1)",
                &[&version],
            )
            .await
            .map_err(db_err)?;
            tracing::info!(backend = BACKEND, version, "Applied storage migration.");
        }
        tx.commit().await.map_err(db_err)
    }
}

fn batcher_gone() -> StoreError {
    err("the read batcher stopped")
}

/// Answers queued reads in batches: it takes the first call waiting, waits
/// for a free slot (meanwhile more calls queue up), then sends the union
/// of every waiting call's keys as one query. One statement reads one
/// snapshot, so each call's keys still come from one snapshot, and a batch
/// is only sent after each of its calls began, so a read that begins after
/// a commit returned still sees that commit. Under load this turns one
/// round trip per call into one per batch, for PostgreSQL (one statement's
/// parse, plan and executor start) and for this process (one connection
/// checkout, one socket write and read, one wakeup).
async fn read_batches(pool: Pool, mut queue: mpsc::Receiver<ReadJob>) {
    let slots = Arc::new(Semaphore::new(READS_IN_FLIGHT));
    while let Some(first) = queue.recv().await {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let mut keys = first.keys.len();
        let mut jobs = vec![first];
        while keys < BATCH_KEYS {
            match queue.try_recv() {
                Ok(job) => {
                    keys += job.keys.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            answer(&pool, jobs).await;
            drop(slot);
        });
    }
}

/// Reads the keys of `jobs` in one query and hands each call its entries,
/// in the order it asked for them (a key asked twice is answered twice).
async fn answer(pool: &Pool, jobs: Vec<ReadJob>) {
    let mut wanted: Vec<&str> = jobs
        .iter()
        .flat_map(|j| j.keys.iter().map(String::as_str))
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    match fetch(pool, &wanted).await {
        Ok(found) => {
            for job in jobs {
                let entries = job.keys.iter().map(|k| found.get(k).cloned()).collect();
                let _ = job.reply.send(Ok(entries));
            }
        }
        Err(e) => {
            for job in jobs {
                let _ = job.reply.send(Err(e.clone()));
            }
        }
    }
}

/// The entries of those of `keys` that exist.
async fn fetch(pool: &Pool, keys: &[&str]) -> Result<HashMap<String, Entry>, StoreError> {
    let client = pool.get().await.map_err(err)?;
    let stmt = client
        .prepare_cached("SELECT key, value, version FROM kv WHERE key = ANY($1)")
        .await
        .map_err(db_err)?;
    let rows = client.query(&stmt, &[&keys]).await.map_err(db_err)?;
    rows.into_iter()
        .map(|r| {
            Ok((
                r.try_get::<_, String>(0).map_err(db_err)?,
                Entry {
                    value: r.try_get(1).map_err(db_err)?,
                    version: r.try_get::<_, i64>(2).map_err(db_err)? as u64,
                },
            ))
        })
        .collect()
}

fn version_param(v: u64) -> i64 {
    // Versions beyond i64::MAX cannot exist in the table; map them to a
    // value that never matches instead of wrapping.
    i64::try_from(v).unwrap_or(-1)
}

#[async_trait]
impl Store for PostgresStore {
    async fn get(&self, key: &Key) -> Result<Option<Entry>, StoreError> {
        let mut read = self.get_many(std::slice::from_ref(key)).await?;
        Ok(read.pop().flatten())
    }

    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Entry>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        let job = ReadJob {
            keys: keys.iter().map(|k| k.as_str().to_owned()).collect(),
            reply,
        };
        self.reads.send(job).await.map_err(|_| batcher_gone())?;
        answer.await.map_err(|_| batcher_gone())?
    }

    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let client = self.pool.get().await.map_err(err)?;
        let end = prefix_end(prefix);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let stmt = client
            .prepare_cached(
                "SELECT key FROM kv WHERE key >= $1 AND key < $2 AND ($3::text IS NULL OR key > $3)
                 ORDER BY key LIMIT $4",
            )
            .await
            .map_err(db_err)?;
        let rows = client
            .query(&stmt, &[&prefix, &end, &after, &limit])
            .await
            .map_err(db_err)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn commit(&self, writes: Vec<Write>) -> Result<Vec<u64>, StoreError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        crate::gate::begin_commit()?;
        let order = lock_order(&writes)?;
        let mut keys = Vec::with_capacity(order.len());
        let mut values = Vec::with_capacity(order.len());
        let mut kinds = Vec::with_capacity(order.len());
        let mut expected = Vec::with_capacity(order.len());
        for &(_, w) in &order {
            let (value, kind, version) = match (&w.op, w.expect) {
                (Op::Put(value), Expect::Any) => (Some(value.as_slice()), PUT, 0),
                (Op::Put(value), Expect::Absent) => (Some(value.as_slice()), PUT_IF_ABSENT, 0),
                (Op::Put(value), Expect::Version(v)) => {
                    (Some(value.as_slice()), PUT_IF_AT, version_param(v))
                }
                (Op::Delete, Expect::Any) => (None, DELETE, 0),
                (Op::Delete, Expect::Absent) => (None, DELETE_IF_ABSENT, 0),
                (Op::Delete, Expect::Version(v)) => (None, DELETE_IF_AT, version_param(v)),
            };
            keys.push(w.key.as_str());
            values.push(value);
            kinds.push(kind);
            expected.push(version);
        }
        let client = self.pool.get().await.map_err(err)?;
        let stmt = client
            .prepare_cached("SELECT vern_commit($1, $2, $3, $4)")
            .await
            .map_err(db_err)?;
        let row = client
            .query_one(&stmt, &[&keys, &values, &kinds, &expected])
            .await
            .map_err(|e| commit_err(e, &keys))?;
        let written: Vec<i64> = row.try_get(0).map_err(db_err)?;
        if written.len() != order.len() {
            return Err(err("the batch answered a different number of versions"));
        }
        let mut versions = vec![0u64; writes.len()];
        for (&(i, _), v) in order.iter().zip(written) {
            if let Some(slot) = versions.get_mut(i) {
                *slot = v as u64;
            }
        }
        Ok(versions)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(err)?;
        client.simple_query("SELECT 1").await.map_err(db_err)?;
        Ok(())
    }

    fn backend(&self) -> &'static str {
        BACKEND
    }
}
