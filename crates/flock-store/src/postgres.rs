//! The Postgres backend, for several instances on one database: a few writer connections that
//! commit batches of writes with array-valued statements (`UNNEST`), claims that skip rows
//! another instance holds (`FOR UPDATE SKIP LOCKED`) and leases that let any instance take over
//! the work of one that died, and a pool of readers.

use std::collections::{HashMap, HashSet};
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flock_delivery::{ClaimedDelivery, DeliveryView, ErrorKind, OutboxCounts};
use flock_models::Artifact;
use flock_orchestrator::{ArtifactQuery, Page};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection as _, Postgres as Pg, QueryBuilder, Row as _};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::batch::{
    ClaimGroup, add, claim_groups, distribute, finished, is_duplicate, resolved, screen_publishes,
    settle, to_claimed,
};
use crate::durable::{Backend, Durable, ReadError};
use crate::error::OpenError;
use crate::ops::{Done, Input, Op, OpError, Refusal};
use crate::rows::{
    self, ArtifactFields, AttemptFields, ClaimFields, DeliveryFields, ceil_micros, floor_micros,
};
use crate::url::PostgresUrl;

/// Writer connections, each committing its own batches.
const WRITERS: u32 = 2;

/// Reader connections.
const READERS: u32 = 4;

/// How long opening waits for the server's first answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the writer may wait to fill a batch under load: a commit waits for the server's
/// disk flush (milliseconds), so sharing it is worth a short wait.
const LINGER: Duration = Duration::from_millis(2);

pub(crate) struct Postgres {
    writer: PgPool,
    readers: PgPool,
}

impl Postgres {
    /// The connections API keys go through.
    pub(crate) fn key_pool(&self) -> crate::keys::KeyPool {
        crate::keys::KeyPool::Postgres(self.readers.clone())
    }
}

/// Connects to and migrates the database at `url`, and starts its writers.
pub(crate) async fn open(url: &PostgresUrl) -> Result<Arc<Durable<Postgres>>, OpenError> {
    let shown = url.redacted();
    let fail = |reason: String| OpenError::Postgres {
        url: shown.clone(),
        reason,
    };
    let options = PgConnectOptions::from_str(url.expose())
        .map_err(|e| fail(e.to_string()))?
        .application_name("flock");
    // One connection first: a pool retries a refused connection until its acquire timeout and
    // then says only that it timed out; a single attempt says why (refused, unknown database,
    // authentication failed) and says it at once.
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options)).await {
        Ok(Ok(first)) => {
            // Only a check: the pools below open their own connections.
            let _ = first.close().await;
        }
        Ok(Err(e)) => return Err(fail(e.to_string())),
        Err(_) => {
            return Err(fail(format!(
                "no answer within {} s",
                CONNECT_TIMEOUT.as_secs()
            )));
        }
    }
    let writer = PgPoolOptions::new()
        .max_connections(WRITERS)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options.clone())
        .await
        .map_err(|e| fail(e.to_string()))?;
    crate::migrations::migrator(crate::migrations::POSTGRES)
        .await
        .map_err(|e| fail(e.to_string()))?
        .run(&writer)
        .await
        .map_err(|e| OpenError::Migrate {
            at: shown.clone(),
            reason: e.to_string(),
        })?;
    let readers = PgPoolOptions::new()
        .max_connections(READERS)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options)
        .await
        .map_err(|e| fail(e.to_string()))?;
    Ok(Durable::start(
        Postgres { writer, readers },
        usize::try_from(WRITERS).unwrap_or(1),
    ))
}

const ARTIFACT_COLUMNS: &str =
    "SELECT id, type_name, payload, produced_by, correlation_id, tags, created_at FROM artifacts";

const DELIVERY_COLUMNS: &str = "SELECT id, correlation_id, artifact_id, sequence, url, state, \
     failure, due_at, lease_token IS NOT NULL AS leased, created_at, completed_at FROM deliveries";

const ATTEMPT_COLUMNS: &str = "SELECT a.delivery_id, a.number, a.started_at, a.status_code, \
     a.error_kind, a.error, a.duration_ms FROM attempts AS a";

fn artifact_fields(row: &PgRow) -> Result<ArtifactFields, ReadError> {
    Ok(ArtifactFields {
        id: row.try_get("id")?,
        type_name: row.try_get("type_name")?,
        payload: row.try_get("payload")?,
        produced_by: row.try_get("produced_by")?,
        correlation_id: row.try_get("correlation_id")?,
        tags: row.try_get("tags")?,
        created_at: row.try_get("created_at")?,
    })
}

fn delivery_fields(row: &PgRow) -> Result<DeliveryFields, ReadError> {
    Ok(DeliveryFields {
        id: row.try_get("id")?,
        correlation_id: row.try_get("correlation_id")?,
        artifact_id: row.try_get("artifact_id")?,
        sequence: row.try_get("sequence")?,
        url: row.try_get("url")?,
        state: row.try_get("state")?,
        failure: row.try_get("failure")?,
        due_at: row.try_get("due_at")?,
        leased: row.try_get("leased")?,
        created_at: row.try_get("created_at")?,
        completed_at: row.try_get("completed_at")?,
    })
}

fn attempt_fields(row: &PgRow) -> Result<AttemptFields, ReadError> {
    Ok(AttemptFields {
        delivery_id: row.try_get("delivery_id")?,
        number: row.try_get("number")?,
        started_at: row.try_get("started_at")?,
        status_code: row.try_get("status_code")?,
        error_kind: row.try_get("error_kind")?,
        error: row.try_get("error")?,
        duration_ms: row.try_get("duration_ms")?,
    })
}

fn claim_fields(row: &PgRow) -> Result<ClaimFields, ReadError> {
    Ok(ClaimFields {
        id: row.try_get("id")?,
        correlation_id: row.try_get("correlation_id")?,
        artifact_id: row.try_get("artifact_id")?,
        sequence: row.try_get("sequence")?,
        url: row.try_get("url")?,
        secret: row.try_get("secret")?,
        body: row.try_get("body")?,
        artifact_created_at: row.try_get("artifact_created_at")?,
        attempts: row.try_get("attempts")?,
        round_start: row.try_get("round_start")?,
    })
}

fn push_filters(builder: &mut QueryBuilder<'_, Pg>, query: &ArtifactQuery) {
    builder.push(" WHERE TRUE");
    if !query.type_names.is_empty() {
        let names: Vec<String> = query
            .type_names
            .iter()
            .map(|t| t.as_str().to_owned())
            .collect();
        builder
            .push(" AND type_name = ANY(")
            .push_bind(names)
            .push(")");
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
            .push(" AND ")
            .push_bind(tag.clone())
            .push(" = ANY(tags)");
    }
    if let Some(from) = query.from {
        builder
            .push(" AND created_at >= ")
            .push_bind(ceil_micros(from));
    }
    if let Some(to) = query.to {
        builder
            .push(" AND created_at <= ")
            .push_bind(floor_micros(to));
    }
}

fn i64_of(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A batch's writes as one statement (data-modifying common table expressions), so a batch
/// costs one round trip to the server whatever it holds; rows come as arrays (`UNNEST`):
///
/// - `$1..$7` artifacts; `$8..$15` deliveries, due at `$16`;
/// - `$17..$28` attempts with their resolutions: each changes its delivery only while its lease
///   is still the delivery's claim (checked again on the locked row), and only those changed
///   get their attempt inserted; the changed deliveries come back as rows of kind 1. (The
///   deliveries are found by `id = ANY($17)`, so that the plan looks them up by key even when
///   the table's statistics are stale: a join on the attempts alone was planned as a scan of
///   every pending delivery per attempt on a table that had grown since its last analysis.)
/// - claims: up to `$30` deliveries due at `$29` (or whose lease expired by then), skipping rows
///   other instances hold and the deliveries just recorded, leased with token `$31` until
///   `$32`; they come back as rows of kind 2, with the due time they had.
const BATCH: &str = "\
WITH new_artifacts AS ( \
    INSERT INTO artifacts (id, type_name, payload, produced_by, correlation_id, tags, created_at) \
    SELECT r.id, r.type_name, r.payload, r.produced_by, r.correlation_id, \
           ARRAY(SELECT jsonb_array_elements_text(r.tags::jsonb)), r.created_at \
    FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::text[], \
                $7::timestamptz[]) WITH ORDINALITY \
         AS r(id, type_name, payload, produced_by, correlation_id, tags, created_at, n) \
    ORDER BY r.n), \
new_deliveries AS ( \
    INSERT INTO deliveries (id, correlation_id, artifact_id, sequence, url, secret, body, \
                            artifact_created_at, state, due_at, created_at) \
    SELECT r.id, r.correlation_id, r.artifact_id, r.sequence, r.url, r.secret, r.body, \
           r.artifact_created_at, 'pending', $16, $16 \
    FROM UNNEST($8::uuid[], $9::uuid[], $10::uuid[], $11::int8[], $12::text[], $13::text[], \
                $14::bytea[], $15::timestamptz[]) \
         AS r(id, correlation_id, artifact_id, sequence, url, secret, body, artifact_created_at)), \
recorded AS ( \
    SELECT * FROM UNNEST($17::uuid[], $18::int8[], $19::text[], $20::timestamptz[], $21::text[], \
                         $22::timestamptz[], $23::int8[], $24::timestamptz[], $25::int8[], \
                         $26::text[], $27::text[], $28::int8[]) \
         AS r(id, token, state, due_at, failure, completed_at, number, started_at, status_code, \
              error_kind, error, duration_ms)), \
updated AS ( \
    UPDATE deliveries AS d SET attempts = d.attempts + 1, lease_token = NULL, state = r.state, \
        due_at = r.due_at, failure = r.failure, completed_at = r.completed_at, \
        body = CASE WHEN r.state = 'delivered' THEN NULL ELSE d.body END, \
        secret = CASE WHEN r.state = 'delivered' THEN NULL ELSE d.secret END \
    FROM recorded AS r \
    WHERE d.id = ANY($17::uuid[]) AND d.id = r.id AND d.lease_token = r.token \
      AND d.state = 'pending' \
    RETURNING d.id), \
new_attempts AS ( \
    INSERT INTO attempts (delivery_id, number, started_at, status_code, error_kind, error, \
                          duration_ms) \
    SELECT r.id, r.number, r.started_at, r.status_code, r.error_kind, r.error, r.duration_ms \
    FROM recorded AS r JOIN updated AS u ON u.id = r.id), \
picked AS ( \
    SELECT id, due_at FROM deliveries \
    WHERE state = 'pending' AND due_at <= $29 AND id <> ALL($17::uuid[]) \
    ORDER BY due_at, id LIMIT $30 \
    FOR UPDATE SKIP LOCKED), \
leased AS ( \
    UPDATE deliveries AS d SET lease_token = $31, due_at = $32 \
    FROM picked WHERE d.id = picked.id \
    RETURNING picked.due_at AS was_due, d.id, d.correlation_id, d.artifact_id, d.sequence, \
              d.url, d.secret, d.body, d.artifact_created_at, d.attempts, d.round_start) \
SELECT 1 AS kind, id, NULL::timestamptz AS was_due, NULL::uuid AS correlation_id, \
       NULL::uuid AS artifact_id, NULL::int8 AS sequence, NULL::text AS url, \
       NULL::text AS secret, NULL::bytea AS body, NULL::timestamptz AS artifact_created_at, \
       NULL::int8 AS attempts, NULL::int8 AS round_start \
FROM updated \
UNION ALL \
SELECT 2, id, was_due, correlation_id, artifact_id, sequence, url, secret, body, \
       artifact_created_at, attempts, round_start \
FROM leased";

impl Postgres {
    /// One batch: [`BATCH`] in one round trip (its own transaction); with redeliveries, prunes
    /// or claims of another lease length, in a transaction with those.
    async fn write_batch(&self, ops: &mut [Op]) -> Result<(), sqlx::Error> {
        let now = floor_micros(OffsetDateTime::now_utc());
        let accepted = screen_publishes(ops);
        let mut a = ArtifactColumns::default();
        let mut d = DeliveryColumns::default();
        for &index in &accepted {
            if let Input::Publish {
                artifact,
                deliveries,
            } = &ops[index].input
            {
                if let Some(row) = artifact {
                    a.id.push(row.id);
                    a.type_name.push(row.type_name.clone());
                    a.payload.push(row.payload.clone());
                    a.produced_by.push(row.produced_by.clone());
                    a.correlation_id.push(row.correlation_id);
                    a.tags.push(row.tags_json());
                    a.created_at.push(row.created_at);
                }
                for delivery in deliveries {
                    d.id.push(delivery.id);
                    d.correlation_id.push(delivery.correlation_id);
                    d.artifact_id.push(delivery.artifact_id);
                    d.sequence.push(i64_of(delivery.sequence));
                    d.url.push(delivery.url.as_str().to_owned());
                    d.secret
                        .push(delivery.secret.as_ref().map(|s| s.expose().to_owned()));
                    d.body.push(delivery.body.to_vec());
                    d.artifact_created_at.push(delivery.artifact_created_at);
                }
            }
        }
        let mut r = RecordColumns::default();
        let mut recorded: Vec<(usize, Uuid)> = Vec::new();
        let mut refused: Vec<(usize, Uuid)> = Vec::new();
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
            r.id.push(lease.delivery_id);
            r.token.push(token);
            r.state.push(state);
            r.due_at.push(due);
            r.failure.push(failure);
            r.completed_at.push(completed);
            r.number.push(i64::from(attempt.number));
            r.started_at.push(attempt.started_at);
            r.status_code.push(attempt.status_code.map(i64::from));
            r.error_kind.push(attempt.error_kind.map(ErrorKind::as_str));
            r.error.push(attempt.error.clone());
            r.duration_ms.push(i64_of(attempt.duration_ms));
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
        let expires_at = floor_micros(add(claim_at, lease_for));
        let rare = !groups.is_empty()
            || ops
                .iter()
                .any(|op| matches!(op.input, Input::Redeliver { .. } | Input::Prune { .. }));

        let mut conn = self.writer.acquire().await?;
        if rare {
            sqlx::query("BEGIN").execute(&mut *conn).await?;
        }
        let result = Self::main(
            &mut conn,
            a,
            d,
            now,
            r,
            claim_at,
            claim_limit,
            token,
            expires_at,
            ops,
            groups,
            rare,
        )
        .await;
        let (updated, mut claims) = match result {
            Ok(found) => found,
            Err(e) => {
                if rare {
                    let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                }
                return Err(e);
            }
        };
        // Committed: from here on nothing fails the batch.
        if let Some(group) = first
            && let Some(leased) = claims.remove(&usize::MAX)
        {
            distribute(&group.members, leased, &mut claims);
        }
        for index in accepted {
            ops[index].done(Ok(Done::Stored));
        }
        let mut results: HashMap<usize, Result<(), Refusal>> = HashMap::new();
        for (index, id) in recorded {
            if updated.contains(&id) {
                results.insert(index, Ok(()));
            } else {
                refused.push((index, id));
            }
        }
        for (index, id) in refused {
            let refusal = lost_or_unknown(&mut conn, id)
                .await
                .unwrap_or(Refusal::LeaseLost(id));
            results.insert(index, Err(refusal));
        }
        settle(ops, claims, &results);
        Ok(())
    }

    /// Runs [`BATCH`] (and, when `rare`, the batch's other writes and the commit). Returns the
    /// recorded deliveries, and the claims: the first group's under `usize::MAX`, other groups'
    /// already handed to their members.
    #[allow(clippy::too_many_arguments, reason = "the columns of one statement")]
    async fn main(
        conn: &mut PgConnection,
        a: ArtifactColumns,
        d: DeliveryColumns,
        now: OffsetDateTime,
        r: RecordColumns,
        claim_at: OffsetDateTime,
        claim_limit: usize,
        token: i64,
        expires_at: OffsetDateTime,
        ops: &mut [Op],
        groups: Vec<ClaimGroup>,
        rare: bool,
    ) -> Result<(HashSet<Uuid>, HashMap<usize, Vec<ClaimedDelivery>>), sqlx::Error> {
        let rows = sqlx::query(BATCH)
            .bind(a.id)
            .bind(a.type_name)
            .bind(a.payload)
            .bind(a.produced_by)
            .bind(a.correlation_id)
            .bind(a.tags)
            .bind(a.created_at)
            .bind(d.id)
            .bind(d.correlation_id)
            .bind(d.artifact_id)
            .bind(d.sequence)
            .bind(d.url)
            .bind(d.secret)
            .bind(d.body)
            .bind(d.artifact_created_at)
            .bind(now)
            .bind(r.id)
            .bind(r.token)
            .bind(r.state)
            .bind(r.due_at)
            .bind(r.failure)
            .bind(r.completed_at)
            .bind(r.number)
            .bind(r.started_at)
            .bind(r.status_code)
            .bind(r.error_kind)
            .bind(r.error)
            .bind(r.duration_ms)
            .bind(floor_micros(claim_at))
            .bind(i64::try_from(claim_limit).unwrap_or(i64::MAX))
            .bind(token)
            .bind(expires_at)
            .fetch_all(&mut *conn)
            .await?;
        let mut updated = HashSet::new();
        let mut leased: Vec<(OffsetDateTime, ClaimedDelivery)> = Vec::new();
        for row in &rows {
            let kind: i32 = row.try_get("kind")?;
            if kind == 1 {
                updated.insert(row.try_get::<Uuid, _>("id")?);
            } else if let Ok(was_due) = row.try_get::<OffsetDateTime, _>("was_due")
                && let Some(c) = to_claimed(claim_fields(row), token, expires_at)
            {
                leased.push((was_due, c));
            }
        }
        leased.sort_by_key(|(due, c)| (*due, c.delivery.id));
        let mut claims = HashMap::new();
        claims.insert(usize::MAX, leased.into_iter().map(|(_, c)| c).collect());
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
                let claimed = claim(conn, group.at, group.limit, group.lease_for).await?;
                distribute(&group.members, claimed, &mut claims);
            }
            sqlx::query("COMMIT").execute(&mut *conn).await?;
        }
        Ok((updated, claims))
    }
}

#[derive(Default)]
struct ArtifactColumns {
    id: Vec<Uuid>,
    type_name: Vec<String>,
    payload: Vec<String>,
    produced_by: Vec<String>,
    correlation_id: Vec<Uuid>,
    tags: Vec<String>,
    created_at: Vec<OffsetDateTime>,
}

#[derive(Default)]
struct DeliveryColumns {
    id: Vec<Uuid>,
    correlation_id: Vec<Uuid>,
    artifact_id: Vec<Uuid>,
    sequence: Vec<i64>,
    url: Vec<String>,
    secret: Vec<Option<String>>,
    body: Vec<Vec<u8>>,
    artifact_created_at: Vec<OffsetDateTime>,
}

#[derive(Default)]
struct RecordColumns {
    id: Vec<Uuid>,
    token: Vec<i64>,
    state: Vec<&'static str>,
    due_at: Vec<Option<OffsetDateTime>>,
    failure: Vec<Option<&'static str>>,
    completed_at: Vec<Option<OffsetDateTime>>,
    number: Vec<i64>,
    started_at: Vec<OffsetDateTime>,
    status_code: Vec<Option<i64>>,
    error_kind: Vec<Option<&'static str>>,
    error: Vec<Option<String>>,
    duration_ms: Vec<i64>,
}

async fn lost_or_unknown(conn: &mut PgConnection, id: Uuid) -> Result<Refusal, sqlx::Error> {
    let exists = sqlx::query("SELECT 1 FROM deliveries WHERE id = $1")
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
    conn: &mut PgConnection,
    id: Uuid,
    now: OffsetDateTime,
) -> Result<Result<Done, Refusal>, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE deliveries SET state = 'pending', due_at = $1, failure = NULL, completed_at = NULL, \
         lease_token = NULL, round_start = attempts WHERE id = $2 AND state = 'failed'",
    )
    .bind(floor_micros(now))
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if updated > 0 {
        return Ok(Ok(Done::Redelivered));
    }
    let state: Option<String> = sqlx::query_scalar("SELECT state FROM deliveries WHERE id = $1")
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
    conn: &mut PgConnection,
    before: OffsetDateTime,
    limit: u64,
) -> Result<Result<Done, Refusal>, sqlx::Error> {
    let deleted: i64 = sqlx::query_scalar(
        "WITH gone AS ( \
             DELETE FROM deliveries WHERE id IN ( \
                 SELECT id FROM deliveries WHERE state <> 'pending' AND completed_at < $1 \
                 ORDER BY completed_at, id LIMIT $2 FOR UPDATE SKIP LOCKED) \
             RETURNING id), \
         attempts_gone AS (DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM gone)) \
         SELECT count(*) FROM gone",
    )
    .bind(ceil_micros(before))
    .bind(i64_of(limit))
    .fetch_one(&mut *conn)
    .await?;
    Ok(Ok(Done::Pruned(u64::try_from(deleted).unwrap_or(0))))
}

async fn claim(
    conn: &mut PgConnection,
    now: OffsetDateTime,
    limit: usize,
    lease_for: Duration,
) -> Result<Vec<ClaimedDelivery>, sqlx::Error> {
    let token = rows::new_token();
    let expires_at = floor_micros(add(now, lease_for));
    let rows = sqlx::query(
        "WITH picked AS ( \
             SELECT id, due_at FROM deliveries WHERE state = 'pending' AND due_at <= $1 \
             ORDER BY due_at, id LIMIT $2 FOR UPDATE SKIP LOCKED) \
         UPDATE deliveries AS d SET lease_token = $3, due_at = $4 \
         FROM picked WHERE d.id = picked.id \
         RETURNING picked.due_at AS was_due, d.id, d.correlation_id, d.artifact_id, d.sequence, \
             d.url, d.secret, d.body, d.artifact_created_at, d.attempts, d.round_start",
    )
    .bind(floor_micros(now))
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .bind(token)
    .bind(expires_at)
    .fetch_all(&mut *conn)
    .await?;
    let mut ordered: Vec<(OffsetDateTime, ClaimedDelivery)> = rows
        .iter()
        .filter_map(|row| {
            let was_due: OffsetDateTime = row.try_get("was_due").ok()?;
            to_claimed(claim_fields(row), token, expires_at).map(|c| (was_due, c))
        })
        .collect();
    ordered.sort_by_key(|(due, c)| (*due, c.delivery.id));
    Ok(ordered.into_iter().map(|(_, c)| c).collect())
}

#[async_trait]
impl Backend for Postgres {
    async fn write(&self, ops: &mut [Op]) -> Result<(), sqlx::Error> {
        self.write_batch(ops).await
    }

    async fn explain(&self, op: &Op, err: sqlx::Error) -> OpError {
        if let Input::Publish {
            artifact,
            deliveries,
        } = &op.input
            && is_duplicate(&err)
        {
            if let Some(a) = artifact {
                let stored = sqlx::query("SELECT 1 FROM artifacts WHERE id = $1")
                    .bind(a.id)
                    .fetch_optional(&self.readers)
                    .await;
                if matches!(stored, Ok(Some(_))) {
                    return OpError::Refused(Refusal::DuplicateArtifact(a.id));
                }
            }
            let ids: Vec<Uuid> = deliveries.iter().map(|d| d.id).collect();
            let stored: Result<Option<Uuid>, _> =
                sqlx::query_scalar("SELECT id FROM deliveries WHERE id = ANY($1) LIMIT 1")
                    .bind(ids)
                    .fetch_optional(&self.readers)
                    .await;
            if let Ok(Some(id)) = stored {
                return OpError::Refused(Refusal::DuplicateDelivery(id));
            }
        }
        OpError::Backend(err.to_string())
    }

    async fn get(&self, id: Uuid) -> Result<Option<Artifact>, ReadError> {
        let row = sqlx::query(&format!("{ARTIFACT_COLUMNS} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.readers)
            .await?;
        row.map(|row| Ok(artifact_fields(&row)?.artifact()?))
            .transpose()
    }

    async fn query(&self, query: ArtifactQuery) -> Result<Page<Artifact>, ReadError> {
        let mut tx = self.readers.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let mut count = QueryBuilder::<Pg>::new("SELECT count(*) FROM artifacts");
        push_filters(&mut count, &query);
        let total: i64 = count.build_query_scalar().fetch_one(&mut *tx).await?;
        let total = rows::to_u64(total, "count")?;
        let mut items = Vec::new();
        if query.limit > 0 && (query.offset as u64) < total {
            let mut select = QueryBuilder::<Pg>::new(ARTIFACT_COLUMNS);
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
        Ok(Page { items, total })
    }

    async fn deliveries(&self, correlation_id: Uuid) -> Result<Vec<DeliveryView>, ReadError> {
        let mut tx = self.readers.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let deliveries = sqlx::query(&format!(
            "{DELIVERY_COLUMNS} WHERE correlation_id = $1 ORDER BY sequence, created_at"
        ))
        .bind(correlation_id)
        .fetch_all(&mut *tx)
        .await?;
        let attempts = sqlx::query(&format!(
            "{ATTEMPT_COLUMNS} JOIN deliveries AS d ON d.id = a.delivery_id \
             WHERE d.correlation_id = $1"
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
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let Some(delivery) = sqlx::query(&format!("{DELIVERY_COLUMNS} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let attempts = sqlx::query(&format!("{ATTEMPT_COLUMNS} WHERE a.delivery_id = $1"))
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
        Ok(
            sqlx::query_scalar("SELECT min(due_at) FROM deliveries WHERE state = 'pending'")
                .fetch_one(&self.readers)
                .await?,
        )
    }

    async fn counts(&self) -> Result<OutboxCounts, ReadError> {
        let row = sqlx::query(
            "SELECT count(*) FILTER (WHERE lease_token IS NULL) AS pending, \
                    count(*) FILTER (WHERE lease_token IS NOT NULL) AS in_flight \
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

    fn linger(&self) -> Duration {
        LINGER
    }
}
