//! The PostgreSQL backend, for several Vern replicas sharing one database.
//! Every session runs with `synchronous_commit = on`, so an acknowledged
//! commit is durable; compare-and-set is done in SQL so it holds across
//! processes, not only inside one.

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use crate::{lock_order, prefix_end, redact_url, Entry, Expect, Key, Op, Store, StoreError, Write};

const BACKEND: &str = "postgres";

/// Serialises schema migrations across replicas starting at the same time.
const MIGRATION_LOCK: i64 = 0x0076_6572_6e6d_6967; // "vernmig"

/// Schema migrations, applied in order; the index plus one is the version.
/// Keys use the "C" collation so they sort bytewise, as in SQLite.
const MIGRATIONS: &[&str] = &["CREATE TABLE kv (
        key     TEXT COLLATE \"C\" PRIMARY KEY,
        value   BYTEA NOT NULL,
        version BIGINT NOT NULL CHECK (version > 0)
    )"];

/// PostgreSQL storage through a connection pool.
pub struct PostgresStore {
    pool: Pool,
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

impl PostgresStore {
    /// Connects with a pool of at most `pool_size` connections and migrates
    /// the schema.
    pub async fn connect(url: &str, pool_size: usize) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|_| StoreError::BadUrl(redact_url(url)))?;
        config.options("-c synchronous_commit=on");
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
        let store = Self { pool };
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

fn version_param(v: u64) -> i64 {
    // Versions beyond i64::MAX cannot exist in the table; map them to a
    // value that never matches instead of wrapping.
    i64::try_from(v).unwrap_or(-1)
}

#[async_trait]
impl Store for PostgresStore {
    async fn get(&self, key: &Key) -> Result<Option<Entry>, StoreError> {
        let client = self.pool.get().await.map_err(err)?;
        let stmt = client
            .prepare_cached("SELECT value, version FROM kv WHERE key = $1")
            .await
            .map_err(db_err)?;
        let row = client
            .query_opt(&stmt, &[&key.as_str()])
            .await
            .map_err(db_err)?;
        Ok(row.map(|r| Entry {
            value: r.get(0),
            version: r.get::<_, i64>(1) as u64,
        }))
    }

    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Entry>>, StoreError> {
        let client = self.pool.get().await.map_err(err)?;
        let stmt = client
            .prepare_cached("SELECT key, value, version FROM kv WHERE key = ANY($1)")
            .await
            .map_err(db_err)?;
        let wanted: Vec<&str> = keys.iter().map(Key::as_str).collect();
        let rows = client.query(&stmt, &[&wanted]).await.map_err(db_err)?;
        let mut found: std::collections::HashMap<String, Entry> = rows
            .into_iter()
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    Entry {
                        value: r.get(1),
                        version: r.get::<_, i64>(2) as u64,
                    },
                )
            })
            .collect();
        Ok(keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                // A key given twice takes its entry at its last position and
                // a clone before.
                if keys.get(i + 1..).is_some_and(|rest| rest.contains(k)) {
                    found.get(k.as_str()).cloned()
                } else {
                    found.remove(k.as_str())
                }
            })
            .collect())
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
        let mut client = self.pool.get().await.map_err(err)?;
        let tx = client.transaction().await.map_err(db_err)?;
        let put_any = tx
            .prepare_cached(
                "INSERT INTO kv (key, value, version) VALUES ($1, $2, 1)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, version = kv.version + 1
                 RETURNING version",
            )
            .await
            .map_err(db_err)?;
        let put_absent = tx
            .prepare_cached(
                "INSERT INTO kv (key, value, version) VALUES ($1, $2, 1)
                 ON CONFLICT (key) DO NOTHING RETURNING version",
            )
            .await
            .map_err(db_err)?;
        let put_version = tx
            .prepare_cached(
                "UPDATE kv SET value = $2, version = version + 1
                 WHERE key = $1 AND version = $3 RETURNING version",
            )
            .await
            .map_err(db_err)?;
        let delete_any = tx
            .prepare_cached("DELETE FROM kv WHERE key = $1")
            .await
            .map_err(db_err)?;
        let delete_absent = tx
            .prepare_cached("SELECT 1 FROM kv WHERE key = $1 FOR UPDATE")
            .await
            .map_err(db_err)?;
        let delete_version = tx
            .prepare_cached("DELETE FROM kv WHERE key = $1 AND version = $2")
            .await
            .map_err(db_err)?;
        // All statements are sent at once (tokio-postgres pipelines
        // concurrently polled queries, in order), so a batch costs one
        // round trip instead of one per write.
        let steps = order.iter().map(|&(i, w)| {
            let key = w.key.as_str();
            let conflict = move || StoreError::Conflict {
                key: key.to_owned(),
            };
            let tx = &tx;
            let (put_any, put_absent, put_version) = (&put_any, &put_absent, &put_version);
            let (delete_any, delete_absent, delete_version) =
                (&delete_any, &delete_absent, &delete_version);
            async move {
                let version = match (&w.op, w.expect) {
                    (Op::Put(value), Expect::Any) => {
                        let row = tx
                            .query_one(put_any, &[&key, value])
                            .await
                            .map_err(db_err)?;
                        Some(row.get::<_, i64>(0) as u64)
                    }
                    (Op::Put(value), Expect::Absent) => {
                        let row = tx
                            .query_opt(put_absent, &[&key, value])
                            .await
                            .map_err(db_err)?;
                        Some(row.ok_or_else(conflict)?.get::<_, i64>(0) as u64)
                    }
                    (Op::Put(value), Expect::Version(v)) => {
                        let row = tx
                            .query_opt(put_version, &[&key, value, &version_param(v)])
                            .await
                            .map_err(db_err)?;
                        Some(row.ok_or_else(conflict)?.get::<_, i64>(0) as u64)
                    }
                    (Op::Delete, Expect::Any) => {
                        tx.execute(delete_any, &[&key]).await.map_err(db_err)?;
                        None
                    }
                    (Op::Delete, Expect::Absent) => {
                        let found = tx.query_opt(delete_absent, &[&key]).await.map_err(db_err)?;
                        if found.is_some() {
                            return Err(conflict());
                        }
                        None
                    }
                    (Op::Delete, Expect::Version(v)) => {
                        let n = tx
                            .execute(delete_version, &[&key, &version_param(v)])
                            .await
                            .map_err(db_err)?;
                        if n == 0 {
                            return Err(conflict());
                        }
                        None
                    }
                };
                Ok::<_, StoreError>((i, version))
            }
        });
        let mut versions = vec![0u64; writes.len()];
        for result in futures_util::future::join_all(steps).await {
            let (i, version) = result?;
            if let (Some(v), Some(slot)) = (version, versions.get_mut(i)) {
                *slot = v;
            }
        }
        tx.commit().await.map_err(db_err)?;
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
