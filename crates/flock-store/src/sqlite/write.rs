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
/// 1. the artifacts of `$1` (their columns by name, each payload `payload_len` bytes at
///    `payload_at` (from 1) of the blob `$2`: a payload escaped inside the JSON would be
///    escaped, parsed and unescaped again);
/// 2. the deliveries of `$4`, created and due at `$3` (those marked `leased`: leased with
///    token `$13` until `$14`), each body `body_len` bytes at `body_at`
///    (from 1) of the blob `$2`, then the webhook options of those that have any (`$10`: a
///    webhook other than the first, ordered, custom headers), so that the common delivery
///    carries none of them through the JSON;
/// 3. of the records of `$5`, the deliveries whose lease is still the record's token: the
///    answer of `kind` 1;
/// 4. their attempts;
/// 5. what they do to their deliveries;
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
    SELECT unhex(a.v ->> 'id', '-'), a.v ->> 'type_name', \
           CAST(substr($2, a.v ->> 'payload_at', a.v ->> 'payload_len') AS TEXT), \
           a.v ->> 'produced_by', unhex(a.v ->> 'correlation_id', '-'), \
           a.v ->> 'tenant', a.v ->> 'tags', a.v ->> 'created_at' \
    FROM a ORDER BY a.key; \
WITH d AS MATERIALIZED (SELECT key, jsonb(value) AS v FROM json_each($4)) \
INSERT INTO deliveries (id, correlation_id, tenant, artifact_id, sequence, url, secret, body, \
                        artifact_created_at, state, due_at, created_at, lease_token) \
    SELECT unhex(d.v ->> 'id', '-'), unhex(d.v ->> 'correlation_id', '-'), \
           d.v ->> 'tenant', \
           unhex(d.v ->> 'artifact_id', '-'), d.v ->> 'sequence', d.v ->> 'url', \
           d.v ->> 'secret', substr($2, d.v ->> 'body_at', d.v ->> 'body_len'), \
           d.v ->> 'artifact_created_at', 'pending', \
           iif(d.v ->> 'leased', $14, $3), $3, iif(d.v ->> 'leased', $13, NULL) \
    FROM d ORDER BY d.key; \
WITH o AS MATERIALIZED (SELECT key, jsonb(value) AS v FROM json_each($10)) \
UPDATE deliveries SET webhook = o.v ->> 'webhook', ordered = o.v ->> 'ordered', \
        header_names = o.v ->> 'header_names', headers = o.v ->> 'headers' \
    FROM o WHERE deliveries.id = unhex(o.v ->> 'id', '-'); \
WITH r AS MATERIALIZED (SELECT key, jsonb(value) AS v FROM json_each($5)) \
SELECT 1 AS kind, json_group_array(lower(hex(d.id))) AS answer \
    FROM r JOIN deliveries AS d ON d.id = unhex(r.v ->> 'id', '-') \
    WHERE d.lease_token = r.v ->> 'token' AND d.state = 'pending'; \
WITH r AS MATERIALIZED (SELECT key, jsonb(value) AS v FROM json_each($5)) \
INSERT INTO attempts (delivery_id, number, started_at, status_code, error_kind, error, \
                      duration_ms) \
    SELECT d.id, r.v ->> 'number', r.v ->> 'started_at', r.v ->> 'status_code', \
           r.v ->> 'error_kind', r.v ->> 'error', r.v ->> 'duration_ms' \
    FROM r JOIN deliveries AS d ON d.id = unhex(r.v ->> 'id', '-') \
    WHERE d.lease_token = r.v ->> 'token' AND d.state = 'pending'; \
WITH j AS MATERIALIZED (SELECT jsonb(value) AS v FROM json_each($5)) \
UPDATE deliveries SET attempts = attempts + 1, lease_token = NULL, state = r.state, \
        due_at = r.due_at, failure = r.failure, completed_at = r.completed_at, \
        body = CASE WHEN r.state = 'delivered' THEN NULL ELSE body END, \
        secret = CASE WHEN r.state = 'delivered' THEN NULL ELSE secret END, \
        headers = CASE WHEN r.state = 'delivered' THEN NULL ELSE headers END \
    FROM (SELECT unhex(v ->> 'id', '-') AS id, v ->> 'token' AS token, \
                 v ->> 'state' AS state, v ->> 'due_at' AS due_at, \
                 v ->> 'failure' AS failure, v ->> 'completed_at' AS completed_at \
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

/// A delivery's webhook options in the `$10` array: only deliveries that have any.
#[derive(Serialize)]
struct OptionsJson {
    id: Uuid,
    webhook: u8,
    ordered: u8,
    header_names: Option<String>,
    headers: Option<String>,
}

/// An artifact in the `$1` array.
#[derive(Serialize)]
struct ArtifactJson<'a> {
    id: Uuid,
    type_name: &'a str,
    payload_at: usize,
    payload_len: usize,
    produced_by: &'a str,
    correlation_id: Uuid,
    tenant: &'a str,
    tags: &'a str,
    created_at: i64,
}

/// A delivery in the `$4` array.
#[derive(Serialize)]
struct DeliveryJson<'a> {
    id: Uuid,
    correlation_id: Uuid,
    tenant: &'a str,
    artifact_id: Uuid,
    sequence: i64,
    url: &'a str,
    secret: Option<&'a str>,
    body_at: usize,
    body_len: usize,
    artifact_created_at: i64,
    /// Written leased for the publishing process's dispatcher (absent: not).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    leased: bool,
}

/// A record in the `$5` array: the lease, the delivery's new state, and the attempt.
#[derive(Serialize)]
struct RecordJson<'a> {
    id: Uuid,
    token: i64,
    state: &'static str,
    due_at: Option<i64>,
    failure: Option<&'static str>,
    completed_at: Option<i64>,
    number: u32,
    started_at: i64,
    status_code: Option<u16>,
    error_kind: Option<&'static str>,
    error: Option<&'a str>,
    duration_ms: i64,
}

/// Runs [`BATCH`] over `batch` (in a transaction of its own when `alone`).
pub(super) async fn batch(
    conn: &mut SqliteConnection,
    batch: &Batch<'_>,
    alone: bool,
) -> Result<Answer, sqlx::Error> {
    let mut bodies: Vec<u8> = Vec::new();
    let artifacts: Vec<ArtifactJson<'_>> = (batch.artifacts.iter())
        .map(|a| {
            let at = bodies.len() + 1;
            bodies.extend_from_slice(a.payload.as_bytes());
            ArtifactJson {
                id: a.id,
                type_name: &a.type_name,
                payload_at: at,
                payload_len: a.payload.len(),
                produced_by: &a.produced_by,
                correlation_id: a.correlation_id,
                tenant: &a.tenant,
                tags: &a.tags,
                created_at: micros(a.created_at),
            }
        })
        .collect();
    let mut deliveries = Vec::with_capacity(batch.deliveries.len());
    let mut options = Vec::new();
    for (d, leased) in batch.deliveries.iter().zip(&batch.leased) {
        if d.webhook != 0 || d.ordered || d.headers.is_some() {
            options.push(OptionsJson {
                id: d.id,
                webhook: d.webhook,
                ordered: u8::from(d.ordered),
                header_names: header_names(d)?,
                headers: header_pairs(d)?,
            });
        }
        deliveries.push(DeliveryJson {
            id: d.id,
            correlation_id: d.correlation_id,
            tenant: d.tenant.as_str(),
            artifact_id: d.artifact_id,
            sequence: int(d.sequence),
            url: d.url.as_str(),
            secret: d.secret.as_ref().map(Secret::expose),
            body_at: bodies.len() + 1,
            body_len: d.body.len(),
            artifact_created_at: micros(d.artifact_created_at),
            leased: *leased,
        });
        bodies.extend_from_slice(&d.body);
    }
    let records: Vec<RecordJson<'_>> = (batch.records.iter())
        .map(|r| RecordJson {
            id: r.id,
            token: r.token,
            state: r.state,
            due_at: r.due_at.map(micros),
            failure: r.failure,
            completed_at: r.completed_at.map(micros),
            number: r.attempt.number,
            started_at: micros(r.attempt.started_at),
            status_code: r.attempt.status_code,
            error_kind: r.error_kind,
            error: r.attempt.error.as_deref(),
            duration_ms: int(r.attempt.duration_ms),
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
        .fetch_all(&mut *conn)
        .await;
    if rows.is_err() && alone {
        // The text began a transaction; leave none open (ignore errors: there may be none).
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
    }
    Ok(answer(&rows?))
}

/// [`BATCH`]'s answer: one row of each kind, in JSON (a row per claimed delivery would cost a
/// trip through the connection's thread each).
fn answer(rows: &[SqliteRow]) -> Answer {
    let json = |kind: i64| -> Result<String, sqlx::Error> {
        let row = rows.iter().find(|r| r.try_get("kind").ok() == Some(kind));
        row.ok_or(sqlx::Error::RowNotFound)?.try_get("answer")
    };
    Answer {
        applied: json(1).and_then(|ids| parse(&ids)),
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
