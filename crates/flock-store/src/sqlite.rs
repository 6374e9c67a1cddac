//! The SQLite backend, the embedded default: one file in WAL mode, one writer connection that
//! commits batches of writes, and a small pool of readers.
//!
//! Durability: `synchronous = NORMAL` in WAL mode. A committed transaction is in the WAL file
//! before the commit returns, so it survives the process dying in any way (`kill -9`
//! included); the WAL is synced to disk at checkpoints, not at every commit, so a power loss or
//! an operating system crash may lose the last transactions before the checkpoint (the
//! database stays consistent). Writes from many callers share one transaction (group commit),
//! and a batch's rows go in as JSON array parameters: one prepared statement per kind of write,
//! whatever the batch holds.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use flock_delivery::{ClaimedDelivery, DeliveryView, ErrorKind, OutboxCounts};
use flock_models::{Artifact, Secret};
use flock_orchestrator::{ArtifactQuery, Page};
use serde::Serialize;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{ConnectOptions as _, Connection as _, QueryBuilder, Row as _, Sqlite as Lite};
use time::OffsetDateTime;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;
use tracing::{error, warn};
use uuid::Uuid;

use crate::batch::{
    add, claim_groups, distribute, finished, is_duplicate, resolved, screen_publishes, settle,
    to_claimed,
};
use crate::durable::{Backend, Durable, ReadError};
use crate::error::OpenError;
use crate::ops::{Done, Input, Op, OpError, Refusal};
use crate::rows::{
    self, ArtifactFields, AttemptFields, ClaimFields, DecodeError, DeliveryFields, from_micros,
    micros, micros_ceil,
};

/// How long a connection waits for a lock held by another connection (another process on the
/// same file, or a checkpoint).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Reader connections.
const READERS: u32 = 4;

/// How often a connection of its own copies the WAL into the database file (a passive
/// checkpoint: it never blocks the writer), so that the writer does not stop to do it.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// The writer connection's page cache, in KiB (negative: a size rather than a page count).
const WRITER_CACHE_KIB: &str = "-16384";

/// WAL pages past which the writer checkpoints by itself anyway (64 MiB of 4 KiB pages): a
/// safety net should the checkpointer fall behind.
const WRITER_CHECKPOINT_PAGES: &str = "16384";

/// The SQLite backend: one writer connection (the writer task is its only user) and a pool of
/// readers.
pub(crate) struct Sqlite {
    writer: Mutex<Option<SqliteConnection>>,
    readers: SqlitePool,
    checkpointer: Mutex<Option<(watch::Sender<bool>, JoinHandle<()>)>>,
}

impl Sqlite {
    /// The connections API keys go through.
    pub(crate) fn key_pool(&self) -> crate::keys::KeyPool {
        crate::keys::KeyPool::Sqlite(self.readers.clone())
    }
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
    if std::fs::metadata(&absolute).is_ok_and(|m| m.is_dir()) {
        return Err(fail("it is a directory".to_owned()));
    }
    create_private(&absolute).map_err(|e| fail(e.to_string()))?;
    let options = SqliteConnectOptions::from_str("sqlite://")
        .map_err(|e| fail(e.to_string()))?
        .filename(&absolute)
        .create_if_missing(false)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(false)
        .statement_cache_capacity(256)
        .pragma("temp_store", "memory")
        .pragma("wal_autocheckpoint", WRITER_CHECKPOINT_PAGES);
    // The writer keeps a larger page cache (the pages it appends to and the indexes it
    // updates); readers and the checkpointer keep SQLite's default (about 2 MB), so that memory
    // does not grow with the number of connections times the database's size.
    let mut writer = options
        .clone()
        .pragma("cache_size", WRITER_CACHE_KIB)
        .connect()
        .await
        .map_err(|e| fail(e.to_string()))?;
    // A file that is not a database passes the connection pragmas in some cases; reading the
    // schema does not.
    sqlx::query("SELECT count(*) FROM sqlite_master")
        .fetch_one(&mut writer)
        .await
        .map_err(|e| fail(e.to_string()))?;
    crate::migrations::migrator(crate::migrations::SQLITE)
        .await
        .map_err(|e| fail(e.to_string()))?
        .run(&mut writer)
        .await
        .map_err(|e| OpenError::Migrate {
            at: shown.clone(),
            reason: e.to_string(),
        })?;
    let readers = SqlitePoolOptions::new()
        .max_connections(READERS)
        .min_connections(1)
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(60))
        .connect_with(options.clone())
        .await
        .map_err(|e| fail(e.to_string()))?;
    let checkpoints = options.connect().await.map_err(|e| fail(e.to_string()))?;
    let (stop, stopped) = watch::channel(false);
    let checkpointer = tokio::spawn(checkpoint(checkpoints, stopped));
    let backend = Sqlite {
        writer: Mutex::new(Some(writer)),
        readers,
        checkpointer: Mutex::new(Some((stop, checkpointer))),
    };
    Ok(Durable::start(backend, 1))
}

/// Copies the WAL into the database file now and then, until told to stop.
async fn checkpoint(mut conn: SqliteConnection, mut stopped: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            () = tokio::time::sleep(CHECKPOINT_EVERY) => {}
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&mut conn)
            .await
        {
            warn!(error = %e, "an SQLite checkpoint failed; the writer checkpoints by itself past its limit");
        }
    }
    let _ = conn.close().await;
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

/// A batch's writes as one text of statements, sent to the connection's thread in one round
/// trip and prepared once. Rows come as JSON arrays, so the text never changes whatever the
/// batch holds, and results come back as two rows, each one JSON array. The parameters are
/// anonymous and bound in order, statement after statement ([`Sqlite::apply`] binds them):
///
/// 1. artifacts;
/// 2. deliveries, whose bodies are slices of one blob, due now;
/// 3. of the attempts recorded, the deliveries whose lease is still current (result row 1);
/// 4. those attempts;
/// 5. what they do to their deliveries;
/// 6. up to a limit of deliveries due at a time (or whose lease expired by then), earliest due
///    first (result row 2);
/// 7. their lease, with a token until an expiry.
///
/// Statements that find nothing to do (an empty array, a limit of 0) cost next to nothing.
/// This relies on sqlx's SQLite driver running every statement of a text (sqlx 0.8).
const BATCH: &str = "\
INSERT INTO artifacts (id, type_name, payload, produced_by, correlation_id, tags, created_at) \
    SELECT unhex(j.value ->> 'i', '-'), j.value ->> 't', j.value ->> 'p', j.value ->> 'b', \
           unhex(j.value ->> 'c', '-'), j.value ->> 'g', j.value ->> 'a' \
    FROM json_each(?) AS j ORDER BY j.key; \
INSERT INTO deliveries (id, correlation_id, artifact_id, sequence, url, secret, body, \
                        artifact_created_at, state, due_at, created_at) \
    SELECT unhex(j.value ->> 'i', '-'), unhex(j.value ->> 'c', '-'), unhex(j.value ->> 'r', '-'), \
           j.value ->> 's', j.value ->> 'u', j.value ->> 'k', \
           substr(?, j.value ->> 'o', j.value ->> 'n'), \
           j.value ->> 'a', 'pending', ?, ? \
    FROM json_each(?) AS j ORDER BY j.key; \
SELECT json_group_array(lower(hex(d.id))) \
    FROM json_each(?) AS j JOIN deliveries AS d ON d.id = unhex(j.value ->> 'i', '-') \
    WHERE d.lease_token = j.value ->> 'k' AND d.state = 'pending'; \
INSERT INTO attempts (delivery_id, number, started_at, status_code, error_kind, error, duration_ms) \
    SELECT d.id, j.value ->> 'n', j.value ->> 't', j.value ->> 'h', j.value ->> 'e', \
           j.value ->> 'x', j.value ->> 'm' \
    FROM json_each(?) AS j JOIN deliveries AS d ON d.id = unhex(j.value ->> 'i', '-') \
    WHERE d.lease_token = j.value ->> 'k' AND d.state = 'pending'; \
UPDATE deliveries SET attempts = attempts + 1, lease_token = NULL, state = r.s, due_at = r.d, \
        failure = r.f, completed_at = r.c, \
        body = CASE WHEN r.s = 'delivered' THEN NULL ELSE body END, \
        secret = CASE WHEN r.s = 'delivered' THEN NULL ELSE secret END \
    FROM (SELECT unhex(value ->> 'i', '-') AS i, value ->> 'k' AS k, value ->> 's' AS s, \
                 value ->> 'd' AS d, value ->> 'f' AS f, value ->> 'c' AS c \
          FROM json_each(?)) AS r \
    WHERE deliveries.id = r.i AND deliveries.lease_token = r.k AND deliveries.state = 'pending'; \
SELECT json_group_array(json_array(lower(hex(id)), lower(hex(correlation_id)), \
        lower(hex(artifact_id)), sequence, url, secret, \
        iif(body IS NULL, NULL, lower(hex(body))), artifact_created_at, attempts, round_start, \
        due_at)) \
    FROM (SELECT * FROM deliveries WHERE state = 'pending' AND due_at <= ? \
          ORDER BY due_at, id LIMIT ?); \
UPDATE deliveries SET lease_token = ?, due_at = ? WHERE id IN ( \
    SELECT id FROM deliveries WHERE state = 'pending' AND due_at <= ? \
    ORDER BY due_at, id LIMIT ?);";

/// [`BATCH`] in its transaction, committed.
static BATCH_COMMITTED: LazyLock<String> =
    LazyLock::new(|| format!("BEGIN IMMEDIATE; {BATCH} COMMIT;"));

/// [`BATCH`] in its transaction, left open for the batch's rarer writes.
static BATCH_OPEN: LazyLock<String> = LazyLock::new(|| format!("BEGIN IMMEDIATE; {BATCH}"));

/// Claims of a further lease length: up to `?2` deliveries due at `?1`, as [`BATCH`]'s second
/// result row; then [`LEASE`]. (Numbered placeholders are fine in a text of one statement; in a
/// text of several, sqlx's SQLite driver binds them wrongly when one skips a number.)
const DUE: &str = "\
SELECT json_group_array(json_array(lower(hex(id)), lower(hex(correlation_id)), \
        lower(hex(artifact_id)), sequence, url, secret, \
        iif(body IS NULL, NULL, lower(hex(body))), artifact_created_at, attempts, round_start, \
        due_at)) \
    FROM (SELECT * FROM deliveries WHERE state = 'pending' AND due_at <= ?1 \
          ORDER BY due_at, id LIMIT ?2)";

/// Leases what [`DUE`] found, with token `?3` until `?4`.
const LEASE: &str = "\
UPDATE deliveries SET lease_token = ?3, due_at = ?4 WHERE id IN ( \
    SELECT id FROM deliveries WHERE state = 'pending' AND due_at <= ?1 \
    ORDER BY due_at, id LIMIT ?2)";

/// A delivery found due: `[id, correlation, artifact, sequence, url, secret, body, artifact
/// time, attempts, round start, due]`, ids and body in hex.
type DueRow = (
    String,
    String,
    String,
    i64,
    String,
    Option<String>,
    Option<String>,
    i64,
    i64,
    i64,
    i64,
);

/// An artifact in the `?1` array.
#[derive(Serialize)]
struct ArtifactJson<'a> {
    i: Uuid,
    t: &'a str,
    p: &'a str,
    b: &'a str,
    c: Uuid,
    g: String,
    a: i64,
}

/// A delivery for [`INSERT_DELIVERIES`]; its body is `n` bytes at `o` (from 1) of the bodies'
/// blob.
#[derive(Serialize)]
struct DeliveryJson<'a> {
    i: Uuid,
    c: Uuid,
    r: Uuid,
    s: i64,
    u: &'a str,
    k: Option<&'a str>,
    o: usize,
    n: usize,
    a: i64,
}

/// An attempt and its resolution in the `?4` array.
#[derive(Serialize)]
struct RecordJson<'a> {
    i: Uuid,
    k: i64,
    s: &'static str,
    d: Option<i64>,
    f: Option<&'static str>,
    c: Option<i64>,
    n: u32,
    t: i64,
    h: Option<u16>,
    e: Option<&'static str>,
    x: Option<&'a str>,
    m: i64,
}

fn json<T: Serialize>(items: &[T]) -> Result<String, sqlx::Error> {
    serde_json::to_string(items).map_err(|e| sqlx::Error::Encode(Box::new(e)))
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
    /// One batch in one transaction: [`BATCH`] in one round trip, then, only when the batch
    /// holds them, redeliveries, prunes and claims of another lease length one by one.
    async fn apply(conn: &mut SqliteConnection, ops: &mut [Op]) -> Result<(), sqlx::Error> {
        let now = micros(OffsetDateTime::now_utc());
        let accepted = screen_publishes(ops);
        let mut artifacts: Vec<ArtifactJson<'_>> = Vec::new();
        let mut deliveries: Vec<DeliveryJson<'_>> = Vec::new();
        let mut bodies: Vec<u8> = Vec::new();
        for &index in &accepted {
            let Input::Publish {
                artifact,
                deliveries: new,
            } = &ops[index].input
            else {
                continue;
            };
            if let Some(a) = artifact {
                artifacts.push(ArtifactJson {
                    i: a.id,
                    t: &a.type_name,
                    p: &a.payload,
                    b: &a.produced_by,
                    c: a.correlation_id,
                    g: a.tags_json(),
                    a: micros(a.created_at),
                });
            }
            for d in new {
                deliveries.push(DeliveryJson {
                    i: d.id,
                    c: d.correlation_id,
                    r: d.artifact_id,
                    s: i64::try_from(d.sequence).unwrap_or(i64::MAX),
                    u: d.url.as_str(),
                    k: d.secret.as_ref().map(Secret::expose),
                    o: bodies.len() + 1,
                    n: d.body.len(),
                    a: micros(d.artifact_created_at),
                });
                bodies.extend_from_slice(&d.body);
            }
        }
        let mut records: Vec<RecordJson<'_>> = Vec::new();
        let mut refused: Vec<(usize, Uuid)> = Vec::new();
        let mut recorded: Vec<(usize, Uuid)> = Vec::new();
        for (index, op) in ops.iter().enumerate() {
            let Input::Record {
                lease,
                attempt,
                resolution,
                ..
            } = &op.input
            else {
                continue;
            };
            // A token that does not fit the column was never handed out by this store.
            let Ok(token) = i64::try_from(lease.token) else {
                refused.push((index, lease.delivery_id));
                continue;
            };
            let (state, due, failure, completed) = resolved(*resolution, finished(attempt));
            records.push(RecordJson {
                i: lease.delivery_id,
                k: token,
                s: state,
                d: due.map(micros),
                f: failure,
                c: completed.map(micros),
                n: attempt.number,
                t: micros(attempt.started_at),
                h: attempt.status_code,
                e: attempt.error_kind.map(ErrorKind::as_str),
                x: attempt.error.as_deref(),
                m: i64::try_from(attempt.duration_ms).unwrap_or(i64::MAX),
            });
            recorded.push((index, lease.delivery_id));
        }

        let mut groups = claim_groups(ops);
        let first = (!groups.is_empty()).then(|| groups.remove(0));
        let (claim_at, claim_limit, lease_for) = first
            .as_ref()
            .map_or((OffsetDateTime::UNIX_EPOCH, 0, Duration::ZERO), |g| {
                (g.at, g.limit, g.lease_for)
            });
        let token = rows::new_token();
        let expires_at = rows::floor_micros(add(claim_at, lease_for));
        let rare = !groups.is_empty()
            || ops
                .iter()
                .any(|op| matches!(op.input, Input::Redeliver { .. } | Input::Prune { .. }));
        let text = if rare {
            BATCH_OPEN.as_str()
        } else {
            BATCH_COMMITTED.as_str()
        };
        let records = json(&records)?;
        let (claim_at, claim_limit) = (
            micros(claim_at),
            i64::try_from(claim_limit).unwrap_or(i64::MAX),
        );
        // In the order of [`BATCH`]'s placeholders.
        let results: Vec<String> = sqlx::query_scalar(text)
            .bind(json(&artifacts)?)
            .bind(bodies)
            .bind(now)
            .bind(now)
            .bind(json(&deliveries)?)
            .bind(records.clone())
            .bind(records.clone())
            .bind(records)
            .bind(claim_at)
            .bind(claim_limit)
            .bind(token)
            .bind(micros(expires_at))
            .bind(claim_at)
            .bind(claim_limit)
            .fetch_all(&mut *conn)
            .await?;
        let [current, due] = results.as_slice() else {
            return Err(sqlx::Error::Protocol(format!(
                "a batch answered {} result rows instead of 2",
                results.len()
            )));
        };
        // Once committed, nothing fails the batch: a result that does not decode leaves its
        // writes without an outcome (their callers get an error; claims lapse and are claimed
        // again).
        let updated: Option<HashSet<Uuid>> = serde_json::from_str::<Vec<String>>(current)
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| Uuid::parse_str(id).ok())
                    .collect()
            })
            .inspect_err(|e| error!(error = %e, "the batch's recorded deliveries cannot be read"))
            .ok();
        let mut claims = HashMap::new();
        if let Some(group) = first
            && let Some(claimed) = due_claims(due, token, expires_at)
        {
            distribute(&group.members, claimed, &mut claims);
        }
        if rare {
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
            for group in groups {
                if let Some(claimed) = claim(conn, group.at, group.limit, group.lease_for).await? {
                    distribute(&group.members, claimed, &mut claims);
                }
            }
            sqlx::query("COMMIT").execute(&mut *conn).await?;
        }

        for index in accepted {
            ops[index].done(Ok(Done::Stored));
        }
        let mut results: HashMap<usize, Result<(), Refusal>> = HashMap::new();
        if let Some(updated) = updated {
            for (index, id) in recorded {
                if updated.contains(&id) {
                    results.insert(index, Ok(()));
                } else {
                    refused.push((index, id));
                }
            }
        }
        // Records that did not apply are refused; say why (a lease that cannot be looked up
        // is as good as lost).
        for (index, id) in refused {
            let refusal = lost_or_unknown(conn, id)
                .await
                .unwrap_or(Refusal::LeaseLost(id));
            results.insert(index, Err(refusal));
        }
        settle(ops, claims, &results);
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
) -> Result<Option<Vec<ClaimedDelivery>>, sqlx::Error> {
    let token = rows::new_token();
    let expires_at = rows::floor_micros(add(now, lease_for));
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let due: String = sqlx::query_scalar(DUE)
        .bind(micros(now))
        .bind(limit)
        .fetch_one(&mut *conn)
        .await?;
    sqlx::query(LEASE)
        .bind(micros(now))
        .bind(limit)
        .bind(token)
        .bind(micros(expires_at))
        .execute(&mut *conn)
        .await?;
    Ok(due_claims(&due, token, expires_at))
}

/// The deliveries a claim found due (a JSON array of [`DueRow`]s), leased with `token` until
/// `expires_at`, earliest due first; `None` (logged) when the array cannot be read.
fn due_claims(due: &str, token: i64, expires_at: OffsetDateTime) -> Option<Vec<ClaimedDelivery>> {
    let rows: Vec<DueRow> = serde_json::from_str(due)
        .inspect_err(|e| {
            error!(error = %e, "claimed deliveries cannot be read; they are claimed again when their lease expires");
        })
        .ok()?;
    let mut claimed: Vec<(i64, ClaimedDelivery)> = rows
        .into_iter()
        .filter_map(|row| {
            let due = row.10;
            to_claimed(due_fields(row), token, expires_at).map(|c| (due, c))
        })
        .collect();
    claimed.sort_by_key(|(due, c)| (*due, c.delivery.id));
    Some(claimed.into_iter().map(|(_, c)| c).collect())
}

/// A row of [`DUE`] as a claimed delivery's fields.
fn due_fields(row: DueRow) -> Result<ClaimFields, ReadError> {
    let (id, correlation_id, artifact_id, sequence, url, secret, body, created, attempts, round, _) =
        row;
    let uuid = |text: &str| {
        Uuid::parse_str(text).map_err(|e| ReadError(format!("unreadable stored id: {e}")))
    };
    let body = body
        .map(|hex| {
            base16ct::lower::decode_vec(hex)
                .map_err(|e| ReadError(format!("unreadable stored body: {e}")))
        })
        .transpose()?;
    Ok(ClaimFields {
        id: uuid(&id)?,
        correlation_id: uuid(&correlation_id)?,
        artifact_id: uuid(&artifact_id)?,
        sequence,
        url,
        secret,
        body,
        artifact_created_at: from_micros(created)?,
        attempts,
        round_start: round,
    })
}

#[async_trait]
impl Backend for Sqlite {
    async fn write(&self, ops: &mut [Op]) -> Result<(), sqlx::Error> {
        let mut conn = self.writer.lock().await;
        let Some(conn) = conn.as_mut() else {
            return Err(sqlx::Error::PoolClosed);
        };
        let result = Self::apply(conn, ops).await;
        if result.is_err() {
            // Whatever failed, leave no transaction open (there may be none: ignore errors).
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
        }
        result
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
        if let Some((stop, task)) = self.checkpointer.lock().await.take() {
            let _ = stop.send(true);
            let _ = task.await;
        }
        if let Some(writer) = self.writer.lock().await.take() {
            let _ = writer.close().await;
        }
        self.readers.close().await;
    }
}
