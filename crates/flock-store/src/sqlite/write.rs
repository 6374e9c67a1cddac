//! SQLite's batch statement: a text of statements, prepared once, that takes a batch's rows as
//! JSON arrays and its bodies as one blob, so it never changes whatever the batch holds and
//! runs in one round trip to the connection's thread. And its prune.

use std::sync::LazyLock;

use flock_models::Secret;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sqlx::Row as _;
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use uuid::Uuid;

use crate::sql::batch::{Answer, Batch, Claimed, header_names, header_pairs};
use crate::sql::rows::{bad, from_micros, int, micros};

/// A batch's writes, statement after statement:
///
/// 1. the artifacts of `$1` (each an [`ArtifactRow`]; each payload `payload_len` bytes at
///    `payload_at` (from 1) of the blob `$2`: a payload escaped inside the JSON would be
///    escaped, parsed and unescaped again);
/// 2. the deliveries of `$4` (each a [`DeliveryRow`]), created and due at `$3` (those marked
///    leased: leased with token `$13` until `$14`), each body `body_len` bytes at `body_at`
///    (from 1) of the blob `$2`, then the webhook options of those that have any (`$10`: a
///    webhook other than the first, ordered, custom headers), so that the common delivery
///    carries none of them through the JSON;
/// 3. the attempts of the records of `$5` (each a [`RecordRow`]) whose delivery's lease is
///    still the record's token;
/// 4. those deliveries, the answer of `kind` 1: `all` when every one of the `$15` records
///    wrote its attempt (as `changes()` counts them), so that the common batch reads its
///    records no third time; else their ids, a JSON array;
/// 5. what the records do to their deliveries;
/// 6. the due ordered deliveries that an earlier delivery of their webhook still waits
///    before, parked ([`PARK`]);
/// 7. up to `$7` deliveries due at `$6` (or whose lease expired by then), and not before `$11`,
///    none to the destinations of the JSON array `$12` (when not NULL:
///    `Outbox::claim_past`), earliest due first,
///    with the due time they had: the answer of `kind` 2;
/// 8. their lease: token `$8` until `$9`.
///
/// Statements that find nothing to do (an empty array, a limit of 0) cost next to nothing.
/// This relies on sqlx's SQLite driver running every statement of a text, and binding `$N` to
/// the N-th value in each of them (sqlx 0.8).
const BATCH: &str = "\
WITH a AS MATERIALIZED (SELECT key, jsonb(value) AS v FROM json_each($1)) \
INSERT INTO artifacts (id, type_name, payload, produced_by, correlation_id, tenant, tags, \
                       created_at) \
    SELECT unhex(a.v ->> 0, '-'), a.v ->> 1, \
           CAST(substr($2, a.v ->> 2, a.v ->> 3) AS TEXT), \
           a.v ->> 4, unhex(a.v ->> 5, '-'), \
           a.v ->> 6, a.v ->> 7, a.v ->> 8 \
    FROM a ORDER BY a.key; \
WITH d AS MATERIALIZED (SELECT key, jsonb(value) AS v FROM json_each($4)) \
INSERT INTO deliveries (id, correlation_id, tenant, artifact_id, sequence, url, secret, body, \
                        artifact_created_at, state, due_at, created_at, lease_token) \
    SELECT unhex(d.v ->> 0, '-'), unhex(d.v ->> 1, '-'), \
           d.v ->> 2, \
           unhex(d.v ->> 3, '-'), d.v ->> 4, d.v ->> 5, \
           d.v ->> 6, substr($2, d.v ->> 7, d.v ->> 8), \
           d.v ->> 9, 'pending', \
           iif(d.v ->> 10, $14, $3), $3, iif(d.v ->> 10, $13, NULL) \
    FROM d ORDER BY d.key; \
WITH o AS MATERIALIZED (SELECT key, jsonb(value) AS v FROM json_each($10)) \
UPDATE deliveries SET webhook = o.v ->> 1, ordered = o.v ->> 2, \
        header_names = o.v ->> 3, headers = o.v ->> 4 \
    FROM o WHERE deliveries.id = unhex(o.v ->> 0, '-'); \
WITH r AS MATERIALIZED (SELECT key, jsonb(value) AS v FROM json_each($5)) \
INSERT INTO attempts (delivery_id, number, started_at, status_code, error_kind, error, \
                      duration_ms) \
    SELECT d.id, r.v ->> 6, r.v ->> 7, r.v ->> 8, \
           r.v ->> 9, r.v ->> 10, r.v ->> 11 \
    FROM r JOIN deliveries AS d ON d.id = unhex(r.v ->> 0, '-') \
    WHERE d.lease_token = r.v ->> 1 AND d.state = 'pending'; \
SELECT 1 AS kind, iif(changes() = $15, 'all', ( \
        SELECT json_group_array(lower(hex(d.id))) FROM json_each($5) AS r \
        JOIN deliveries AS d ON d.id = unhex(r.value ->> 0, '-') \
        WHERE d.lease_token = r.value ->> 1 AND d.state = 'pending')) AS answer; \
WITH j AS MATERIALIZED (SELECT jsonb(value) AS v FROM json_each($5)) \
UPDATE deliveries SET attempts = attempts + 1, lease_token = NULL, state = r.state, \
        due_at = r.due_at, failure = r.failure, completed_at = r.completed_at, \
        body = CASE WHEN r.state = 'delivered' THEN NULL ELSE body END, \
        secret = CASE WHEN r.state = 'delivered' THEN NULL ELSE secret END, \
        headers = CASE WHEN r.state = 'delivered' THEN NULL ELSE headers END \
    FROM (SELECT unhex(v ->> 0, '-') AS id, v ->> 1 AS token, \
                 v ->> 2 AS state, v ->> 3 AS due_at, \
                 v ->> 4 AS failure, v ->> 5 AS completed_at \
          FROM j) AS r \
    WHERE deliveries.id = r.id AND deliveries.lease_token = r.token \
      AND deliveries.state = 'pending'; \
SELECT 2 AS kind, json_group_array(json_object('id', lower(hex(id)), \
        'correlation_id', lower(hex(correlation_id)), 'tenant', tenant, \
        'artifact_id', lower(hex(artifact_id)), \
        'sequence', sequence, 'url', url, 'secret', secret, \
        'body', iif(body IS NULL, NULL, lower(hex(body))), \
        'artifact_created_at', artifact_created_at, 'attempts', attempts, \
        'round_start', round_start, 'was_due', due_at, \
        'options', iif(webhook = 0 AND ordered = 0 AND headers IS NULL, NULL, \
                       json_array(webhook, ordered, headers)))) AS answer \
    FROM (SELECT * FROM deliveries WHERE state = 'pending' AND due_at <= $6 AND due_at >= $11 \
                AND ($12 IS NULL OR destination NOT IN (SELECT value FROM json_each($12))) \
          ORDER BY due_at, id LIMIT $7); \
UPDATE deliveries SET lease_token = $8, due_at = $9 WHERE id IN ( \
    SELECT id FROM deliveries WHERE state = 'pending' AND due_at <= $6 AND due_at >= $11 \
          AND ($12 IS NULL OR destination NOT IN (SELECT value FROM json_each($12))) \
    ORDER BY due_at, id LIMIT $7);";

/// [`BATCH`] with [`PARK`] before its claim: the text that runs.
static BATCH_PARKING: LazyLock<String> = LazyLock::new(|| {
    let claim = BATCH
        .find("SELECT 2 AS kind")
        .expect("the batch text claims");
    format!("{}{PARK}; {}", &BATCH[..claim], &BATCH[claim..])
});

/// [`BATCH_PARKING`] in a transaction of its own: the common case, one round trip in all.
static BATCH_ALONE: LazyLock<String> =
    LazyLock::new(|| format!("BEGIN IMMEDIATE; {} COMMIT;", *BATCH_PARKING));

/// Parks the ordered deliveries due at `$6` that wait for an earlier one of their webhook
/// (still pending, waiting or in flight): their due time goes, so no claim takes them and the
/// dispatcher's next due time is not theirs, until that one's final result releases the next
/// (`sql::write::RELEASE`). An index of the due ordered deliveries alone
/// (`deliveries_ordered_due`) makes this cost nothing while no webhook is ordered.
const PARK: &str = "\
UPDATE deliveries SET due_at = NULL, held = 'ordered', held_since = $6 \
    WHERE state = 'pending' AND ordered = 1 AND due_at <= $6 AND lease_token IS NULL \
      AND EXISTS (SELECT 1 FROM deliveries AS e \
                  WHERE e.correlation_id = deliveries.correlation_id \
                    AND e.webhook = deliveries.webhook AND e.state = 'pending' \
                    AND e.sequence < deliveries.sequence)";

/// The prune: the attempts, then the deliveries, then how many deliveries went.
pub(super) const PRUNE: &str = "\
DELETE FROM attempts WHERE delivery_id IN ( \
    SELECT id FROM deliveries WHERE state <> 'pending' AND completed_at < $1 \
    ORDER BY completed_at, id LIMIT $2); \
DELETE FROM deliveries WHERE id IN ( \
    SELECT id FROM deliveries WHERE state <> 'pending' AND completed_at < $1 \
    ORDER BY completed_at, id LIMIT $2); \
SELECT changes()";

// The rows of the batch's JSON arrays are arrays themselves, read by position (`v ->> 0`):
// SQLite finds an element by its index without comparing keys, and parses a shorter text. The
// positions are those of these tuples, and [`BATCH`] reads each by its number.

/// A delivery's webhook options in the `$10` array (only deliveries that have any): 0 id,
/// 1 webhook, 2 ordered (0 or 1), 3 header names, 4 headers.
type OptionsRow = (Uuid, u8, u8, Option<String>, Option<String>);

/// An artifact in the `$1` array: 0 id, 1 type, 2 `payload_at`, 3 `payload_len`,
/// 4 `produced_by`, 5 correlation id, 6 tenant, 7 tags, 8 `created_at`.
type ArtifactRow<'a> = (
    Uuid,
    &'a str,
    usize,
    usize,
    &'a str,
    Uuid,
    &'a str,
    &'a str,
    i64,
);

/// A delivery in the `$4` array: 0 id, 1 correlation id, 2 tenant, 3 artifact id, 4 sequence,
/// 5 url, 6 secret, 7 `body_at`, 8 `body_len`, 9 `artifact_created_at`, 10 whether it is
/// written leased for the publishing process's dispatcher.
type DeliveryRow<'a> = (
    Uuid,
    Uuid,
    &'a str,
    Uuid,
    i64,
    &'a str,
    Option<&'a str>,
    usize,
    usize,
    i64,
    bool,
);

/// A record in the `$5` array, the lease, the delivery's new state, and the attempt: 0 id,
/// 1 token, 2 state, 3 `due_at`, 4 failure, 5 `completed_at`, 6 number, 7 `started_at`,
/// 8 status code, 9 error kind, 10 error, 11 `duration_ms`.
type RecordRow<'a> = (
    Uuid,
    i64,
    &'static str,
    Option<i64>,
    Option<&'static str>,
    Option<i64>,
    u32,
    i64,
    Option<u16>,
    Option<&'static str>,
    Option<&'a str>,
    i64,
);

/// Runs [`BATCH`] over `batch` (in a transaction of its own when `alone`).
pub(super) async fn batch(
    conn: &mut SqliteConnection,
    batch: &Batch<'_>,
    alone: bool,
) -> Result<Answer, sqlx::Error> {
    let mut bodies: Vec<u8> = Vec::new();
    let artifacts: Vec<ArtifactRow<'_>> = (batch.artifacts.iter())
        .map(|a| {
            let at = bodies.len() + 1;
            bodies.extend_from_slice(a.payload.as_bytes());
            (
                a.id,
                &*a.type_name,
                at,
                a.payload.len(),
                &*a.produced_by,
                a.correlation_id,
                &*a.tenant,
                &*a.tags,
                micros(a.created_at),
            )
        })
        .collect();
    let mut deliveries = Vec::with_capacity(batch.deliveries.len());
    let mut options = Vec::new();
    for (d, leased) in batch.deliveries.iter().zip(&batch.leased) {
        if d.webhook != 0 || d.ordered || d.headers.is_some() {
            let row: OptionsRow = (
                d.id,
                d.webhook,
                u8::from(d.ordered),
                header_names(d)?,
                header_pairs(d)?,
            );
            options.push(row);
        }
        let row: DeliveryRow<'_> = (
            d.id,
            d.correlation_id,
            d.tenant.as_str(),
            d.artifact_id,
            int(d.sequence),
            d.url.as_str(),
            d.secret.as_ref().map(Secret::expose),
            bodies.len() + 1,
            d.body.len(),
            micros(d.artifact_created_at),
            *leased,
        );
        deliveries.push(row);
        bodies.extend_from_slice(&d.body);
    }
    let records: Vec<RecordRow<'_>> = (batch.records.iter())
        .map(|r| {
            (
                r.id,
                r.token,
                r.state,
                r.due_at.map(micros),
                r.failure,
                r.completed_at.map(micros),
                r.attempt.number,
                micros(r.attempt.started_at),
                r.attempt.status_code,
                r.error_kind,
                r.attempt.error.as_deref(),
                int(r.attempt.duration_ms),
            )
        })
        .collect();
    let claim = batch.claim;
    let rows = sqlx::query(if alone { &BATCH_ALONE } else { &BATCH_PARKING })
        .bind(json(&artifacts)?)
        .bind(bodies)
        .bind(micros(batch.now))
        .bind(json(&deliveries)?)
        .bind(json(&records)?)
        .bind(micros(claim.at))
        .bind(claim.limit)
        .bind(claim.token)
        .bind(micros(claim.expires_at))
        .bind(json(&options)?)
        .bind(micros(batch.since))
        .bind(batch.past.map(json).transpose()?)
        .bind(batch.fresh.token)
        .bind(micros(batch.fresh.expires_at))
        .bind(int(records.len()))
        .fetch_all(&mut *conn)
        .await;
    if rows.is_err() && alone {
        // The text began a transaction; leave none open (ignore errors: there may be none).
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
    }
    Ok(answer(&rows?, &records))
}

/// [`BATCH`]'s answer: one row of each kind, in JSON (a row per claimed delivery would cost a
/// trip through the connection's thread each); `all` records applied are those of `records`.
fn answer(rows: &[SqliteRow], records: &[RecordRow<'_>]) -> Answer {
    let json = |kind: i64| -> Result<String, sqlx::Error> {
        let row = rows.iter().find(|r| r.try_get("kind").ok() == Some(kind));
        row.ok_or(sqlx::Error::RowNotFound)?.try_get("answer")
    };
    Answer {
        applied: json(1).and_then(|ids| match ids.as_str() {
            "all" => Ok(records.iter().map(|r| r.0).collect()),
            ids => parse(ids),
        }),
        claimed: json(2).and_then(|found| {
            let found: Vec<ClaimedJson> = parse(&found)?;
            found.into_iter().map(ClaimedJson::read).collect()
        }),
    }
}

/// A delivery in [`BATCH`]'s answer: ids and body in hex, times in microseconds.
#[derive(Deserialize)]
struct ClaimedJson {
    id: Uuid,
    correlation_id: Uuid,
    tenant: String,
    artifact_id: Uuid,
    sequence: i64,
    url: String,
    secret: Option<String>,
    body: Option<String>,
    artifact_created_at: i64,
    attempts: i64,
    round_start: i64,
    was_due: i64,
    /// `[webhook, ordered, headers]`, or absent for the first webhook, unordered, without
    /// custom headers.
    #[serde(default)]
    options: Option<(i64, i64, Option<String>)>,
}

impl ClaimedJson {
    fn read(self) -> Result<Claimed, sqlx::Error> {
        let body = (self.body.map(base16ct::lower::decode_vec).transpose())
            .map_err(|e| bad(format!("delivery {}: body: {e}", self.id)))?;
        Ok(Claimed {
            id: self.id,
            correlation_id: self.correlation_id,
            tenant: self.tenant,
            artifact_id: self.artifact_id,
            sequence: self.sequence,
            url: self.url,
            secret: self.secret,
            body,
            artifact_created_at: from_micros(self.artifact_created_at)?,
            attempts: self.attempts,
            round_start: self.round_start,
            was_due: from_micros(self.was_due)?,
            webhook: self.options.as_ref().map_or(0, |o| o.0),
            ordered: self.options.as_ref().map_or(0, |o| o.1),
            headers: self.options.and_then(|o| o.2),
        })
    }
}

fn parse<T: DeserializeOwned>(json: &str) -> Result<T, sqlx::Error> {
    serde_json::from_str(json).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn json<T: Serialize>(items: &[T]) -> Result<String, sqlx::Error> {
    serde_json::to_string(items).map_err(|e| sqlx::Error::Encode(Box::new(e)))
}
