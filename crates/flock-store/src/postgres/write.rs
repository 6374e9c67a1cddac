//! Postgres's batch statement: one statement of data-modifying common table expressions over
//! `UNNEST`ed arrays, so a batch costs one round trip to the server whatever it holds, with
//! claims that skip rows other instances hold. And its prune.

use flock_models::Secret;
use sqlx::Row as _;
use sqlx::postgres::{PgConnection, PgRow};

use crate::sql::Dialect as _;
use crate::sql::batch::{Answer, Batch, Claimed, header_names, header_pairs};
use crate::sql::rows::int;

/// A batch's writes as one statement (data-modifying common table expressions), so a batch
/// costs one round trip to the server whatever it holds; rows come as arrays (`UNNEST`):
///
/// - `$1..$7` artifacts, with their tenants in `$33`; `$8..$15` deliveries, with their tenants
///   in `$34`, due at `$16` (those marked in `$43`: leased with token `$41` until `$42`);
/// - `$17..$28` attempts with their resolutions: each changes its delivery only while its lease
///   is still the delivery's claim (checked again on the locked row), and only those changed
///   get their attempt inserted; the changed deliveries come back as rows of kind 1. (The
///   deliveries are found by `id = ANY($17)`, so that the plan looks them up by key even when
///   the table's statistics are stale: a join on the attempts alone was planned as a scan of
///   every pending delivery per attempt on a table that had grown since its last analysis.)
/// - parking: the due ordered deliveries that an earlier delivery of their webhook still waits
///   before lose their due time (`blocked`, `parked`), so no claim takes them until that one's
///   final result releases the next (`sql::write::RELEASE`); the index of the due ordered
///   deliveries alone (`deliveries_ordered_due`) makes this cost nothing while no webhook is
///   ordered;
/// - claims: up to `$30` deliveries due at `$29` (or whose lease expired by then), and not
///   before `$39`, none to the destinations of `$40` (when not NULL: `Outbox::claim_past`), skipping
///   rows other instances hold and the deliveries just recorded, leased with token `$31` until
///   `$32`; they come back as rows of kind 2, with the due time they had. (Rows, not JSON:
///   building JSON with the bodies costs the server about 25 µs per delivery.)
const BATCH: &str = "\
WITH new_artifacts AS ( \
    INSERT INTO artifacts (id, type_name, payload, produced_by, correlation_id, tenant, tags, \
                           created_at) \
    SELECT r.id, r.type_name, r.payload, r.produced_by, r.correlation_id, r.tenant, \
           ARRAY(SELECT jsonb_array_elements_text(r.tags::jsonb)), r.created_at \
    FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::text[], \
                $7::timestamptz[], $33::text[]) WITH ORDINALITY \
         AS r(id, type_name, payload, produced_by, correlation_id, tags, created_at, tenant, n) \
    ORDER BY r.n), \
new_deliveries AS ( \
    INSERT INTO deliveries (id, correlation_id, tenant, artifact_id, sequence, url, secret, \
                            body, artifact_created_at, state, due_at, created_at, webhook, \
                            ordered, header_names, headers, lease_token) \
    SELECT r.id, r.correlation_id, r.tenant, r.artifact_id, r.sequence, r.url, r.secret, \
           r.body, r.artifact_created_at, 'pending', \
           CASE WHEN r.leased THEN $42::timestamptz ELSE $16 END, $16, r.webhook, r.ordered, \
           r.header_names, r.headers, CASE WHEN r.leased THEN $41::int8 END \
    FROM UNNEST($8::uuid[], $9::uuid[], $10::uuid[], $11::int8[], $12::text[], $13::text[], \
                $14::bytea[], $15::timestamptz[], $34::text[], $35::int8[], $36::int8[], \
                $37::text[], $38::text[], $43::bool[]) \
         AS r(id, correlation_id, artifact_id, sequence, url, secret, body, artifact_created_at, \
              tenant, webhook, ordered, header_names, headers, leased)), \
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
        secret = CASE WHEN r.state = 'delivered' THEN NULL ELSE d.secret END, \
        headers = CASE WHEN r.state = 'delivered' THEN NULL ELSE d.headers END \
    FROM recorded AS r \
    WHERE d.id = ANY($17::uuid[]) AND d.id = r.id AND d.lease_token = r.token \
      AND d.state = 'pending' \
    RETURNING d.id), \
new_attempts AS ( \
    INSERT INTO attempts (delivery_id, number, started_at, status_code, error_kind, error, \
                          duration_ms) \
    SELECT r.id, r.number, r.started_at, r.status_code, r.error_kind, r.error, r.duration_ms \
    FROM recorded AS r JOIN updated AS u ON u.id = r.id), \
blocked AS ( \
    SELECT d.id FROM deliveries AS d \
    WHERE d.state = 'pending' AND d.ordered = 1 AND d.due_at <= $29 AND d.lease_token IS NULL \
      AND EXISTS (SELECT 1 FROM deliveries AS e \
                  WHERE e.correlation_id = d.correlation_id AND e.webhook = d.webhook \
                    AND e.state = 'pending' AND e.sequence < d.sequence) \
    FOR UPDATE OF d SKIP LOCKED), \
parked AS ( \
    UPDATE deliveries AS d SET due_at = NULL, held = 'ordered', held_since = $29 \
    FROM blocked WHERE d.id = blocked.id), \
picked AS ( \
    SELECT id, due_at FROM deliveries \
    WHERE state = 'pending' AND due_at <= $29 AND due_at >= $39 AND id <> ALL($17::uuid[]) \
      AND ($40::text[] IS NULL OR destination <> ALL($40::text[])) \
      AND id NOT IN (SELECT id FROM blocked) \
    ORDER BY due_at, id LIMIT $30 \
    FOR UPDATE SKIP LOCKED), \
leased AS ( \
    UPDATE deliveries AS d SET lease_token = $31, due_at = $32 \
    FROM picked WHERE d.id = picked.id \
    RETURNING picked.due_at AS was_due, d.id, d.correlation_id, d.tenant, d.artifact_id, \
              d.sequence, \
              d.url, d.secret, d.body, d.artifact_created_at, d.attempts, d.round_start, \
              d.webhook, d.ordered, d.headers) \
SELECT 1::int8 AS kind, id, NULL::timestamptz AS was_due, NULL::uuid AS correlation_id, \
       NULL::text AS tenant, \
       NULL::uuid AS artifact_id, NULL::int8 AS sequence, NULL::text AS url, \
       NULL::text AS secret, NULL::bytea AS body, NULL::timestamptz AS artifact_created_at, \
       NULL::int8 AS attempts, NULL::int8 AS round_start, NULL::int8 AS webhook, \
       NULL::int8 AS ordered, NULL::text AS headers \
FROM updated \
UNION ALL \
SELECT 2, id, was_due, correlation_id, tenant, artifact_id, sequence, url, secret, body, \
       artifact_created_at, attempts, round_start, webhook, ordered, headers \
FROM leased";

/// The prune: deliveries other instances hold are skipped; their attempts go with them.
pub(super) const PRUNE: &str = "\
WITH gone AS ( \
    DELETE FROM deliveries WHERE id IN ( \
        SELECT id FROM deliveries WHERE state <> 'pending' AND completed_at < $1 \
        ORDER BY completed_at, id LIMIT $2 FOR UPDATE SKIP LOCKED) \
    RETURNING id), \
attempts_gone AS (DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM gone)) \
SELECT count(*) FROM gone";

/// Runs [`BATCH`] over `batch`: its own transaction, or part of the one open.
pub(super) async fn batch(
    conn: &mut PgConnection,
    batch: &Batch<'_>,
) -> Result<Answer, sqlx::Error> {
    use sqlx::Postgres as Pg;
    let (a, d, r, claim) = (
        &batch.artifacts,
        &batch.deliveries,
        &batch.records,
        batch.claim,
    );
    let rows = sqlx::query(BATCH)
        .bind(column(a, |a| a.id))
        .bind(column(a, |a| a.type_name.as_str()))
        .bind(column(a, |a| a.payload.as_str()))
        .bind(column(a, |a| a.produced_by.as_str()))
        .bind(column(a, |a| a.correlation_id))
        .bind(column(a, |a| a.tags.as_str()))
        .bind(column(a, |a| Pg::time(a.created_at)))
        .bind(column(d, |d| d.id))
        .bind(column(d, |d| d.correlation_id))
        .bind(column(d, |d| d.artifact_id))
        .bind(column(d, |d| int(d.sequence)))
        .bind(column(d, |d| d.url.as_str()))
        .bind(column(d, |d| d.secret.as_ref().map(Secret::expose)))
        .bind(column(d, |d| &d.body[..]))
        .bind(column(d, |d| Pg::time(d.artifact_created_at)))
        .bind(Pg::time(batch.now))
        .bind(column(r, |r| r.id))
        .bind(column(r, |r| r.token))
        .bind(column(r, |r| r.state))
        .bind(column(r, |r| r.due_at.map(Pg::time)))
        .bind(column(r, |r| r.failure))
        .bind(column(r, |r| r.completed_at.map(Pg::time)))
        .bind(column(r, |r| i64::from(r.attempt.number)))
        .bind(column(r, |r| Pg::time(r.attempt.started_at)))
        .bind(column(r, |r| r.attempt.status_code.map(i64::from)))
        .bind(column(r, |r| r.error_kind))
        .bind(column(r, |r| r.attempt.error.as_deref()))
        .bind(column(r, |r| int(r.attempt.duration_ms)))
        .bind(Pg::time(claim.at))
        .bind(claim.limit)
        .bind(claim.token)
        .bind(Pg::time(claim.expires_at))
        .bind(column(a, |a| a.tenant.as_str()))
        .bind(column(d, |d| d.tenant.as_str()))
        .bind(column(d, |d| i64::from(d.webhook)))
        .bind(column(d, |d| i64::from(d.ordered)))
        .bind(
            d.iter()
                .map(|d| header_names(d))
                .collect::<Result<Vec<_>, _>>()?,
        )
        .bind(
            d.iter()
                .map(|d| header_pairs(d))
                .collect::<Result<Vec<_>, _>>()?,
        )
        .bind(Pg::time(batch.since))
        .bind(batch.past)
        .bind(batch.fresh.token)
        .bind(Pg::time(batch.fresh.expires_at))
        .bind(&batch.leased)
        .fetch_all(conn)
        .await?;
    Ok(answer(&rows))
}

/// [`BATCH`]'s answer: its rows of each kind.
fn answer(rows: &[PgRow]) -> Answer {
    let of_kind = |kind: i64| (rows.iter()).filter(move |r| r.try_get("kind").ok() == Some(kind));
    Answer {
        applied: of_kind(1).map(|row| row.try_get("id")).collect(),
        claimed: of_kind(2)
            .map(|row| {
                Ok(Claimed {
                    id: row.try_get("id")?,
                    correlation_id: row.try_get("correlation_id")?,
                    tenant: row.try_get("tenant")?,
                    artifact_id: row.try_get("artifact_id")?,
                    sequence: row.try_get("sequence")?,
                    url: row.try_get("url")?,
                    secret: row.try_get("secret")?,
                    body: row.try_get("body")?,
                    artifact_created_at: row.try_get("artifact_created_at")?,
                    attempts: row.try_get("attempts")?,
                    round_start: row.try_get("round_start")?,
                    was_due: row.try_get("was_due")?,
                    webhook: row.try_get("webhook")?,
                    ordered: row.try_get("ordered")?,
                    headers: row.try_get("headers")?,
                })
            })
            .collect(),
    }
}

/// One column of `rows`, as an array parameter.
fn column<'a, T, U>(rows: &'a [T], value: impl Fn(&'a T) -> U) -> Vec<U> {
    rows.iter().map(value).collect()
}
