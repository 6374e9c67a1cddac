//! The SQLite backend, the embedded default: one file in WAL mode, one writer connection that
//! commits batches of writes, and a small pool of readers.
//!
//! Durability: `synchronous = NORMAL` in WAL mode. A committed transaction is in the WAL file
//! before the commit returns, so it survives the process dying in any way (`kill -9`
//! included); the WAL is synced to disk at checkpoints, not at every commit, so a power loss or
//! an operating system crash may lose the last transactions before the checkpoint (the
//! database stays consistent). Writes from many callers share one transaction (group commit),
//! and rows go in with multi-row statements of a few fixed sizes, each prepared once.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flock_delivery::{ClaimedDelivery, DeliveryView, ErrorKind, OutboxCounts};
use flock_models::{Artifact, NewDelivery, Secret};
use flock_orchestrator::{ArtifactQuery, Page};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row as _, Sqlite as Lite};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::batch::{
    add, claim_groups, claimed, distribute, finished, is_duplicate, resolved, screen_publishes,
};
use crate::durable::{Backend, Durable, ReadError};
use crate::error::OpenError;
use crate::ops::{ArtifactRow, Done, Input, Op, OpError, Refusal};
use crate::rows::{
    self, ArtifactFields, AttemptFields, ClaimFields, DecodeError, DeliveryFields, from_micros,
    micros, micros_ceil,
};

/// How long a connection waits for a lock held by another connection (another process on the
/// same file, or a checkpoint).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Reader connections.
const READERS: u32 = 4;

/// Rows per multi-row statement, largest first. Every batch is cut into chunks of these sizes,
/// so only a few statement texts exist and each stays prepared.
const CHUNKS: [usize; 7] = [64, 32, 16, 8, 4, 2, 1];

/// SQLite-flavoured statements, one text per chunk size where they take many rows.
pub(crate) struct Sqlite {
    writer: SqlitePool,
    readers: SqlitePool,
    insert_artifacts: Vec<String>,
    insert_deliveries: Vec<String>,
    record: Vec<String>,
    insert_attempts: Vec<String>,
}

/// Opens (creating it if needed, readable and writable by its owner only) and migrates the
/// database at `path`, and starts its writer.
pub(crate) async fn open(path: &Path) -> Result<Arc<Durable<Sqlite>>, OpenError> {
    let absolute = absolute(path);
    let shown = absolute.display().to_string();
    let fail = |reason: String| OpenError::Sqlite {
        path: shown.clone(),
        reason,
    };
    create_private(&absolute).map_err(|e| fail(e.to_string()))?;
    if std::fs::metadata(&absolute).is_ok_and(|m| m.is_dir()) {
        return Err(fail("it is a directory".to_owned()));
    }
    let options = SqliteConnectOptions::from_str("sqlite://")
        .map_err(|e| fail(e.to_string()))?
        .filename(&absolute)
        .create_if_missing(false)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(false)
        .statement_cache_capacity(256)
        .pragma("cache_size", "-32768")
        .pragma("temp_store", "memory");
    let writer = SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(60))
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(options.clone())
        .await
        .map_err(|e| fail(e.to_string()))?;
    // A file that is not a database passes the connection pragmas in some cases; reading the
    // schema does not.
    sqlx::query("SELECT count(*) FROM sqlite_master")
        .fetch_one(&writer)
        .await
        .map_err(|e| fail(e.to_string()))?;
    crate::migrations::migrator(crate::migrations::SQLITE)
        .await
        .map_err(|e| fail(e.to_string()))?
        .run(&writer)
        .await
        .map_err(|e| OpenError::Migrate {
            at: shown.clone(),
            reason: e.to_string(),
        })?;
    let readers = SqlitePoolOptions::new()
        .max_connections(READERS)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(60))
        .connect_with(options)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let backend = Sqlite {
        writer,
        readers,
        insert_artifacts: statements(
            "INSERT INTO artifacts (id, type_name, payload, produced_by, correlation_id, tags, created_at) VALUES ",
            "(?, ?, ?, ?, ?, ?, ?)",
            "",
        ),
        insert_deliveries: statements(
            "INSERT INTO deliveries (id, correlation_id, artifact_id, sequence, url, secret, body, \
             artifact_created_at, state, due_at, created_at) VALUES ",
            "(?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
            "",
        ),
        record: statements(
            "UPDATE deliveries SET attempts = attempts + 1, lease_token = NULL, \
             state = r.column3, due_at = r.column4, failure = r.column5, completed_at = r.column6, \
             body = CASE WHEN r.column3 = 'delivered' THEN NULL ELSE body END, \
             secret = CASE WHEN r.column3 = 'delivered' THEN NULL ELSE secret END \
             FROM (VALUES ",
            "(?, ?, ?, ?, ?, ?)",
            ") AS r WHERE deliveries.id = r.column1 AND deliveries.lease_token = r.column2 \
             AND deliveries.state = 'pending' RETURNING deliveries.id",
        ),
        insert_attempts: statements(
            "INSERT INTO attempts (delivery_id, number, started_at, status_code, error_kind, error, duration_ms) VALUES ",
            "(?, ?, ?, ?, ?, ?, ?)",
            "",
        ),
    };
    Ok(Durable::start(backend, 1))
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    std::env::current_dir()
        .map(|dir| dir.join(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

/// Creates the file if it does not exist, readable and writable by its owner only: it holds
/// webhook secrets. (SQLite gives its `-wal` and `-shm` files the same permissions.)
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// `head` + `rows` copies of `row` separated by commas + `tail`, for each chunk size.
fn statements(head: &str, row: &str, tail: &str) -> Vec<String> {
    CHUNKS
        .iter()
        .map(|&n| {
            let mut sql = String::with_capacity(head.len() + n * (row.len() + 2) + tail.len());
            sql.push_str(head);
            for i in 0..n {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(row);
            }
            sql.push_str(tail);
            sql
        })
        .collect()
}

/// Cuts `items` into chunks of the sizes in [`CHUNKS`]; yields (statement index, chunk).
fn chunked<T>(items: &[T]) -> impl Iterator<Item = (usize, &[T])> {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let index = CHUNKS.iter().position(|&n| n <= rest.len())?;
        let (chunk, tail) = rest.split_at(CHUNKS[index]);
        rest = tail;
        Some((index, chunk))
    })
}

fn opt_micros(value: Option<i64>) -> Result<Option<OffsetDateTime>, DecodeError> {
    value.map(from_micros).transpose()
}

fn artifact_fields(row: &SqliteRow) -> Result<ArtifactFields, ReadError> {
    Ok(ArtifactFields {
        id: row.try_get("id")?,
        type_name: row.try_get("type_name")?,
        payload: row.try_get("payload")?,
        produced_by: row.try_get("produced_by")?,
        correlation_id: row.try_get("correlation_id")?,
        tags: rows::tags_from_json(row.try_get("tags")?)?,
        created_at: from_micros(row.try_get("created_at")?)?,
    })
}

const ARTIFACT_COLUMNS: &str =
    "SELECT id, type_name, payload, produced_by, correlation_id, tags, created_at FROM artifacts";

const DELIVERY_COLUMNS: &str = "SELECT id, correlation_id, artifact_id, sequence, url, state, \
     failure, due_at, lease_token IS NOT NULL AS leased, created_at, completed_at FROM deliveries";

const ATTEMPT_COLUMNS: &str = "SELECT a.delivery_id, a.number, a.started_at, a.status_code, \
     a.error_kind, a.error, a.duration_ms FROM attempts AS a";

fn delivery_fields(row: &SqliteRow) -> Result<DeliveryFields, ReadError> {
    Ok(DeliveryFields {
        id: row.try_get("id")?,
        correlation_id: row.try_get("correlation_id")?,
        artifact_id: row.try_get("artifact_id")?,
        sequence: row.try_get("sequence")?,
        url: row.try_get("url")?,
        state: row.try_get("state")?,
        failure: row.try_get("failure")?,
        due_at: opt_micros(row.try_get("due_at")?)?,
        leased: row.try_get("leased")?,
        created_at: from_micros(row.try_get("created_at")?)?,
        completed_at: opt_micros(row.try_get("completed_at")?)?,
    })
}

fn attempt_fields(row: &SqliteRow) -> Result<AttemptFields, ReadError> {
    Ok(AttemptFields {
        delivery_id: row.try_get("delivery_id")?,
        number: row.try_get("number")?,
        started_at: from_micros(row.try_get("started_at")?)?,
        status_code: row.try_get("status_code")?,
        error_kind: row.try_get("error_kind")?,
        error: row.try_get("error")?,
        duration_ms: row.try_get("duration_ms")?,
    })
}

fn claim_fields(row: &SqliteRow) -> Result<ClaimFields, ReadError> {
    Ok(ClaimFields {
        id: row.try_get("id")?,
        correlation_id: row.try_get("correlation_id")?,
        artifact_id: row.try_get("artifact_id")?,
        sequence: row.try_get("sequence")?,
        url: row.try_get("url")?,
        secret: row.try_get("secret")?,
        body: row.try_get("body")?,
        artifact_created_at: from_micros(row.try_get("artifact_created_at")?)?,
        attempts: row.try_get("attempts")?,
        round_start: row.try_get("round_start")?,
    })
}

fn push_filters(builder: &mut QueryBuilder<'_, Lite>, query: &ArtifactQuery) {
    builder.push(" WHERE 1 = 1");
    if !query.type_names.is_empty() {
        builder.push(" AND type_name IN (");
        let mut names = builder.separated(", ");
        for name in &query.type_names {
            names.push_bind(name.as_str().to_owned());
        }
        names.push_unseparated(")");
    }
    if let Some(producer) = &query.produced_by {
        builder
            .push(" AND produced_by = ")
            .push_bind(producer.clone());
    }
    if let Some(correlation_id) = query.correlation_id {
        builder
            .push(" AND correlation_id = ")
            .push_bind(correlation_id);
    }
    if let Some(tag) = &query.tag {
        builder
            .push(" AND EXISTS (SELECT 1 FROM json_each(artifacts.tags) WHERE json_each.value = ")
            .push_bind(tag.clone())
            .push(")");
    }
    if let Some(from) = query.from {
        builder
            .push(" AND created_at >= ")
            .push_bind(micros_ceil(from));
    }
    if let Some(to) = query.to {
        builder.push(" AND created_at <= ").push_bind(micros(to));
    }
}

impl Sqlite {
    async fn apply(&self, conn: &mut SqliteConnection, ops: &mut [Op]) -> Result<(), sqlx::Error> {
        let now = OffsetDateTime::now_utc();
        self.publish(conn, ops, now).await?;
        self.record(conn, ops).await?;
        for op in ops.iter_mut() {
            let outcome = match op.input {
                Input::Redeliver { id, now } => Some(redeliver(conn, id, now).await?),
                Input::Prune { before, limit } => Some(prune(conn, before, limit).await?),
                _ => None,
            };
            if let Some(outcome) = outcome {
                op.done(outcome);
            }
        }
        for (lease_for, at, limit, members) in claim_groups(ops) {
            let claimed = claim(conn, at, limit, lease_for).await?;
            distribute(ops, &members, claimed);
        }
        Ok(())
    }

    async fn publish(
        &self,
        conn: &mut SqliteConnection,
        ops: &mut [Op],
        now: OffsetDateTime,
    ) -> Result<(), sqlx::Error> {
        let accepted = screen_publishes(ops);
        if accepted.is_empty() {
            return Ok(());
        }
        let mut artifacts: Vec<&ArtifactRow> = Vec::new();
        let mut deliveries: Vec<&NewDelivery> = Vec::new();
        for &index in &accepted {
            if let Input::Publish {
                artifact,
                deliveries: new,
            } = &ops[index].input
            {
                artifacts.extend(artifact.as_ref());
                deliveries.extend(new.iter());
            }
        }
        for (statement, chunk) in chunked(&artifacts) {
            let mut query = sqlx::query(&self.insert_artifacts[statement]);
            for a in chunk {
                query = query
                    .bind(a.id)
                    .bind(a.type_name.as_str())
                    .bind(a.payload.as_str())
                    .bind(a.produced_by.as_str())
                    .bind(a.correlation_id)
                    .bind(a.tags_json())
                    .bind(micros(a.created_at));
            }
            query.execute(&mut *conn).await?;
        }
        let now = micros(now);
        for (statement, chunk) in chunked(&deliveries) {
            let mut query = sqlx::query(&self.insert_deliveries[statement]);
            for d in chunk {
                query = query
                    .bind(d.id)
                    .bind(d.correlation_id)
                    .bind(d.artifact_id)
                    .bind(i64::try_from(d.sequence).unwrap_or(i64::MAX))
                    .bind(d.url.as_str())
                    .bind(d.secret.as_ref().map(Secret::expose))
                    .bind(&d.body[..])
                    .bind(micros(d.artifact_created_at))
                    .bind(now)
                    .bind(now);
            }
            query.execute(&mut *conn).await?;
        }
        for index in accepted {
            ops[index].done(Ok(Done::Stored));
        }
        Ok(())
    }

    async fn record(&self, conn: &mut SqliteConnection, ops: &mut [Op]) -> Result<(), sqlx::Error> {
        let mut records: Vec<usize> = Vec::new();
        for (index, op) in ops.iter_mut().enumerate() {
            if let Input::Record { lease, .. } = &op.input {
                // A token that does not fit the column was never handed out by this store.
                if i64::try_from(lease.token).is_ok() {
                    records.push(index);
                } else {
                    let id = lease.delivery_id;
                    let refusal = lost_or_unknown(conn, id).await?;
                    op.done(Err(refusal));
                }
            }
        }
        if records.is_empty() {
            return Ok(());
        }
        let mut updated: HashSet<Uuid> = HashSet::with_capacity(records.len());
        for (statement, chunk) in chunked(&records) {
            let mut query = sqlx::query(&self.record[statement]);
            for &index in chunk {
                if let Input::Record {
                    lease,
                    attempt,
                    resolution,
                } = &ops[index].input
                {
                    let (state, due, failure, completed) = resolved(*resolution, finished(attempt));
                    query = query
                        .bind(lease.delivery_id)
                        .bind(i64::try_from(lease.token).unwrap_or(0))
                        .bind(state)
                        .bind(due.map(micros))
                        .bind(failure)
                        .bind(completed.map(micros));
                }
            }
            for row in query.fetch_all(&mut *conn).await? {
                updated.insert(row.try_get(0)?);
            }
        }
        let mut kept: Vec<usize> = Vec::with_capacity(records.len());
        for index in records {
            let Input::Record { lease, .. } = &ops[index].input else {
                continue;
            };
            if updated.contains(&lease.delivery_id) {
                kept.push(index);
            } else {
                let refusal = lost_or_unknown(conn, lease.delivery_id).await?;
                ops[index].done(Err(refusal));
            }
        }
        for (statement, chunk) in chunked(&kept) {
            let mut query = sqlx::query(&self.insert_attempts[statement]);
            for &index in chunk {
                if let Input::Record { lease, attempt, .. } = &ops[index].input {
                    query = query
                        .bind(lease.delivery_id)
                        .bind(i64::from(attempt.number))
                        .bind(micros(attempt.started_at))
                        .bind(attempt.status_code.map(i64::from))
                        .bind(attempt.error_kind.map(ErrorKind::as_str))
                        .bind(attempt.error.as_deref())
                        .bind(i64::try_from(attempt.duration_ms).unwrap_or(i64::MAX));
                }
            }
            query.execute(&mut *conn).await?;
        }
        for index in kept {
            ops[index].done(Ok(Done::Recorded));
        }
        Ok(())
    }
}

async fn lost_or_unknown(conn: &mut SqliteConnection, id: Uuid) -> Result<Refusal, sqlx::Error> {
    let exists = sqlx::query("SELECT 1 FROM deliveries WHERE id = ?")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .is_some();
    Ok(if exists {
        Refusal::LeaseLost(id)
    } else {
        Refusal::UnknownDelivery(id)
    })
}

async fn redeliver(
    conn: &mut SqliteConnection,
    id: Uuid,
    now: OffsetDateTime,
) -> Result<Result<Done, Refusal>, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE deliveries SET state = 'pending', due_at = ?, failure = NULL, completed_at = NULL, \
         lease_token = NULL, round_start = attempts WHERE id = ? AND state = 'failed'",
    )
    .bind(micros(now))
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if updated > 0 {
        return Ok(Ok(Done::Redelivered));
    }
    let state: Option<String> = sqlx::query_scalar("SELECT state FROM deliveries WHERE id = ?")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(Err(match state {
        None => Refusal::UnknownDelivery(id),
        Some(state) => Refusal::NotRedeliverable(
            id,
            rows::parse_state(&state).map_err(|e| sqlx::Error::Decode(e.0.into()))?,
        ),
    }))
}

async fn prune(
    conn: &mut SqliteConnection,
    before: OffsetDateTime,
    limit: u64,
) -> Result<Result<Done, Refusal>, sqlx::Error> {
    let before = micros(before);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let chosen = "SELECT id FROM deliveries WHERE state <> 'pending' AND completed_at < ?1 \
                  ORDER BY completed_at, id LIMIT ?2";
    sqlx::query(&format!(
        "DELETE FROM attempts WHERE delivery_id IN ({chosen})"
    ))
    .bind(before)
    .bind(limit)
    .execute(&mut *conn)
    .await?;
    let deleted = sqlx::query(&format!("DELETE FROM deliveries WHERE id IN ({chosen})"))
        .bind(before)
        .bind(limit)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok(Ok(Done::Pruned(deleted)))
}

async fn claim(
    conn: &mut SqliteConnection,
    now: OffsetDateTime,
    limit: usize,
    lease_for: Duration,
) -> Result<Vec<ClaimedDelivery>, sqlx::Error> {
    let token = rows::new_token();
    let expires_at = rows::floor_micros(add(now, lease_for));
    let rows = sqlx::query(
        "UPDATE deliveries SET lease_token = ?1, due_at = ?2 WHERE id IN (\
             SELECT id FROM deliveries WHERE state = 'pending' AND due_at <= ?3 \
             ORDER BY due_at, id LIMIT ?4) \
         RETURNING id, correlation_id, artifact_id, sequence, url, secret, body, \
             artifact_created_at, attempts, round_start",
    )
    .bind(token)
    .bind(micros(expires_at))
    .bind(micros(now))
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(&mut *conn)
    .await?;
    let mut claimed: Vec<ClaimedDelivery> = rows
        .iter()
        .filter_map(|row| claimed(claim_fields(row), token, expires_at))
        .collect();
    claimed.sort_by_key(|c| c.delivery.id);
    Ok(claimed)
}

#[async_trait]
impl Backend for Sqlite {
    async fn write(&self, ops: &mut [Op]) -> Result<(), sqlx::Error> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        self.apply(&mut tx, ops).await?;
        tx.commit().await
    }

    async fn explain(&self, op: &Op, err: sqlx::Error) -> OpError {
        if let Input::Publish {
            artifact,
            deliveries,
        } = &op.input
            && is_duplicate(&err)
        {
            if let Some(a) = artifact {
                let stored = sqlx::query("SELECT 1 FROM artifacts WHERE id = ?")
                    .bind(a.id)
                    .fetch_optional(&self.readers)
                    .await;
                if matches!(stored, Ok(Some(_))) {
                    return OpError::Refused(Refusal::DuplicateArtifact(a.id));
                }
            }
            for d in deliveries {
                let stored = sqlx::query("SELECT 1 FROM deliveries WHERE id = ?")
                    .bind(d.id)
                    .fetch_optional(&self.readers)
                    .await;
                if matches!(stored, Ok(Some(_))) {
                    return OpError::Refused(Refusal::DuplicateDelivery(d.id));
                }
            }
        }
        OpError::Backend(err.to_string())
    }

    async fn get(&self, id: Uuid) -> Result<Option<Artifact>, ReadError> {
        let row = sqlx::query(&format!("{ARTIFACT_COLUMNS} WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.readers)
            .await?;
        row.map(|row| Ok(artifact_fields(&row)?.artifact()?))
            .transpose()
    }

    async fn query(&self, query: ArtifactQuery) -> Result<Page<Artifact>, ReadError> {
        let mut tx = self.readers.begin().await?;
        let mut count = QueryBuilder::<Lite>::new("SELECT count(*) FROM artifacts");
        push_filters(&mut count, &query);
        let total: i64 = count.build_query_scalar().fetch_one(&mut *tx).await?;
        let mut items = Vec::new();
        if query.limit > 0 && (query.offset as u64) < rows::to_u64(total, "count")? {
            let mut select = QueryBuilder::<Lite>::new(ARTIFACT_COLUMNS);
            push_filters(&mut select, &query);
            select
                .push(" ORDER BY position LIMIT ")
                .push_bind(i64::try_from(query.limit).unwrap_or(i64::MAX))
                .push(" OFFSET ")
                .push_bind(i64::try_from(query.offset).unwrap_or(i64::MAX));
            for row in select.build().fetch_all(&mut *tx).await? {
                items.push(artifact_fields(&row)?.artifact()?);
            }
        }
        tx.commit().await?;
        Ok(Page {
            items,
            total: rows::to_u64(total, "count")?,
        })
    }

    async fn deliveries(&self, correlation_id: Uuid) -> Result<Vec<DeliveryView>, ReadError> {
        let mut tx = self.readers.begin().await?;
        let deliveries = sqlx::query(&format!(
            "{DELIVERY_COLUMNS} WHERE correlation_id = ? ORDER BY sequence, created_at"
        ))
        .bind(correlation_id)
        .fetch_all(&mut *tx)
        .await?;
        let attempts = sqlx::query(&format!(
            "{ATTEMPT_COLUMNS} JOIN deliveries AS d ON d.id = a.delivery_id \
             WHERE d.correlation_id = ?"
        ))
        .bind(correlation_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let deliveries = deliveries
            .iter()
            .map(delivery_fields)
            .collect::<Result<Vec<_>, _>>()?;
        let attempts = attempts
            .iter()
            .map(attempt_fields)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows::views(deliveries, attempts)?)
    }

    async fn delivery(&self, id: Uuid) -> Result<Option<DeliveryView>, ReadError> {
        let mut tx = self.readers.begin().await?;
        let Some(delivery) = sqlx::query(&format!("{DELIVERY_COLUMNS} WHERE id = ?"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let attempts = sqlx::query(&format!("{ATTEMPT_COLUMNS} WHERE a.delivery_id = ?"))
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let attempts = attempts
            .iter()
            .map(attempt_fields)
            .collect::<Result<Vec<_>, _>>()?;
        let mut views = rows::views(vec![delivery_fields(&delivery)?], attempts)?;
        Ok(views.pop())
    }

    async fn next_due(&self) -> Result<Option<OffsetDateTime>, ReadError> {
        let due: Option<i64> =
            sqlx::query_scalar("SELECT min(due_at) FROM deliveries WHERE state = 'pending'")
                .fetch_one(&self.readers)
                .await?;
        Ok(opt_micros(due)?)
    }

    async fn counts(&self) -> Result<OutboxCounts, ReadError> {
        let row = sqlx::query(
            "SELECT coalesce(sum(lease_token IS NULL), 0) AS pending, \
             coalesce(sum(lease_token IS NOT NULL), 0) AS in_flight \
             FROM deliveries WHERE state = 'pending'",
        )
        .fetch_one(&self.readers)
        .await?;
        Ok(OutboxCounts {
            pending: rows::to_u64(row.try_get("pending")?, "count")?,
            in_flight: rows::to_u64(row.try_get("in_flight")?, "count")?,
        })
    }

    async fn close(&self) {
        self.writer.close().await;
        self.readers.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_item_once_with_few_statements() {
        for n in 0..200usize {
            let items: Vec<usize> = (0..n).collect();
            let chunks: Vec<(usize, &[usize])> = chunked(&items).collect();
            let flat: Vec<usize> = chunks.iter().flat_map(|(_, c)| c.iter().copied()).collect();
            assert_eq!(flat, items);
            for (statement, chunk) in &chunks {
                assert_eq!(CHUNKS[*statement], chunk.len());
            }
            assert!(chunks.len() <= n / 64 + 6, "{n}: {}", chunks.len());
        }
    }

    #[test]
    fn statements_repeat_the_row_once_per_chunk_row() {
        let texts = statements("INSERT INTO t VALUES ", "(?, ?)", ";");
        assert_eq!(texts.len(), CHUNKS.len());
        assert_eq!(texts[CHUNKS.len() - 1], "INSERT INTO t VALUES (?, ?);");
        assert_eq!(texts[0].matches("(?, ?)").count(), 64);
    }
}
