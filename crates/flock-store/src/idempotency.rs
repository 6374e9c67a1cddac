//! Idempotency records in SQL: the [`IdempotencyStore`] of both backends, written once, as the
//! API keys are (`keys.rs`): the same statement text on SQLite and Postgres (`$n`
//! placeholders, `ON CONFLICT ... DO UPDATE ... WHERE`, row values), one macro body for each
//! pool type, queries on the store's runtime. One row per tenant and key in
//! `idempotency_keys`; times in microseconds.
//!
//! A claim is one statement: it inserts the key, or takes over a record that has expired, and
//! otherwise changes nothing, so of two instances claiming one key at once exactly one gets
//! it; the loser reads the winner's row. Each successful claim then deletes up to
//! [`PRUNE_BATCH`] expired records (of any tenant) and the claiming tenant's oldest completed
//! records past its bound, so the table stays bounded without a background task.

use std::time::Duration;

use async_trait::async_trait;
use flock_models::TenantId;
use flock_orchestrator::{
    ClaimOutcome, IN_PROGRESS_LEASE, IdempotencyError, IdempotencyLimits, IdempotencyRequest,
    IdempotencyStore, RecordedAnswer, SyncAnswer,
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::keys::{BackendError, KeyPool, on_pool};
use crate::sql::rows::{int, micros};

/// How many expired records a claim deletes at most. More than the one record a claim adds,
/// so expired records go faster than new ones come while keys are in use.
pub(crate) const PRUNE_BATCH: i64 = 64;

/// The longest TTL stored: a century, so that `created_at + ttl` never overflows.
const MAX_TTL_MICROS: i64 = 100 * 366 * 24 * 3600 * 1_000_000;

/// Inserts a claim, or takes over the key's record if it has expired ($6 is now).
const CLAIM: &str = "INSERT INTO idempotency_keys \
    (tenant, key, route, fingerprint, token, state, created_at, expires_at, \
     status, correlation_id, artifact_ids, completed, duration_ms) \
    VALUES ($1, $2, $3, $4, $5, 'in_progress', $6, $7, NULL, NULL, NULL, NULL, NULL) \
    ON CONFLICT (tenant, key) DO UPDATE SET \
    route = excluded.route, fingerprint = excluded.fingerprint, token = excluded.token, \
    state = excluded.state, created_at = excluded.created_at, \
    expires_at = excluded.expires_at, status = NULL, correlation_id = NULL, \
    artifact_ids = NULL, completed = NULL, duration_ms = NULL \
    WHERE idempotency_keys.expires_at <= $6";

const SELECT: &str = "SELECT route, fingerprint, state, expires_at, status, correlation_id, \
    artifact_ids, completed, duration_ms FROM idempotency_keys WHERE tenant = $1 AND key = $2";

/// The tenant's completed records older than its `$2 + 1`-th newest record.
const TRIM: &str = "DELETE FROM idempotency_keys WHERE tenant = $1 AND state = 'done' \
    AND created_at < (SELECT created_at FROM idempotency_keys WHERE tenant = $1 \
    ORDER BY created_at DESC LIMIT 1 OFFSET $2)";

/// A batch of expired records.
const PRUNE: &str = "DELETE FROM idempotency_keys WHERE (tenant, key) IN \
    (SELECT tenant, key FROM idempotency_keys WHERE expires_at <= $1 \
    ORDER BY expires_at LIMIT $2)";

const COMPLETE: &str = "UPDATE idempotency_keys SET state = 'done', status = $4, \
    correlation_id = $5, artifact_ids = $6, completed = $7, duration_ms = $8, \
    expires_at = created_at + $9 \
    WHERE tenant = $1 AND key = $2 AND token = $3 AND state = 'in_progress'";

const RELEASE: &str = "DELETE FROM idempotency_keys \
    WHERE tenant = $1 AND key = $2 AND token = $3 AND state = 'in_progress'";

/// A record as read: route, fingerprint, state, expiry, then the answer's columns.
type Row = (
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
);

#[expect(
    clippy::needless_pass_by_value,
    reason = "used as `map_err(failed)`, which hands the error over by value"
)]
fn failed(err: sqlx::Error) -> IdempotencyError {
    IdempotencyError::Backend(err.to_string())
}

fn hex(fingerprint: &[u8; 32]) -> String {
    base16ct::lower::encode_string(fingerprint)
}

fn ttl_micros(ttl: Duration) -> i64 {
    int(ttl.as_micros()).min(MAX_TTL_MICROS)
}

/// The answer's columns: status, correlation id, artifact ids (comma separated), completed,
/// duration.
type AnswerColumns = (i64, String, Option<String>, Option<i64>, Option<i64>);

fn encode(answer: &RecordedAnswer) -> AnswerColumns {
    let answer = answer.clone().bounded();
    let sync = answer.sync.as_ref();
    (
        i64::from(answer.status),
        answer.correlation_id.to_string(),
        sync.map(|s| {
            s.artifact_ids
                .iter()
                .map(Uuid::to_string)
                .collect::<Vec<_>>()
                .join(",")
        }),
        sync.map(|s| i64::from(s.completed)),
        sync.map(|s| int(s.duration_ms)),
    )
}

/// What a live row says to a request with `route` and `fingerprint`. Errors name the column.
fn decide(row: Row, route: &str, fingerprint: &str) -> Result<ClaimOutcome, IdempotencyError> {
    let (stored_route, stored_fingerprint, state, _, status, correlation, ids, completed, took) =
        row;
    if stored_route != route || stored_fingerprint != fingerprint {
        return Ok(ClaimOutcome::Conflict);
    }
    if state != "done" {
        return Ok(ClaimOutcome::InProgress);
    }
    let bad = |what: &str| IdempotencyError::Backend(format!("idempotency record: bad {what}"));
    let status = status
        .and_then(|s| u16::try_from(s).ok())
        .ok_or_else(|| bad("status"))?;
    let correlation_id = correlation
        .as_deref()
        .and_then(|c| Uuid::try_parse(c).ok())
        .ok_or_else(|| bad("correlation_id"))?;
    let sync = match ids {
        None => None,
        Some(ids) => Some(SyncAnswer {
            artifact_ids: ids
                .split(',')
                .filter(|id| !id.is_empty())
                .map(|id| Uuid::try_parse(id).map_err(|_| bad("artifact_ids")))
                .collect::<Result<_, _>>()?,
            completed: completed.ok_or_else(|| bad("completed"))? != 0,
            duration_ms: took
                .and_then(|t| u64::try_from(t).ok())
                .ok_or_else(|| bad("duration_ms"))?,
        }),
    };
    Ok(ClaimOutcome::Replay(RecordedAnswer {
        status,
        correlation_id,
        sync,
    }))
}

impl BackendError for IdempotencyError {
    const QUERY: &'static str = "an idempotency query";
    fn backend(message: String) -> Self {
        IdempotencyError::Backend(message)
    }
}

#[async_trait]
impl IdempotencyStore for KeyPool {
    async fn claim(
        &self,
        request: &IdempotencyRequest,
        now: OffsetDateTime,
        limits: IdempotencyLimits,
    ) -> Result<ClaimOutcome, IdempotencyError> {
        let tenant = request.tenant.as_str().to_owned();
        let key = request.key.clone();
        let route = request.route.clone();
        let fingerprint = hex(&request.fingerprint);
        let now = micros(now);
        let lease = now.saturating_add(ttl_micros(IN_PROGRESS_LEASE));
        let keep = int(limits.max_per_tenant.max(1) - 1);
        on_pool!(self, |pool| {
            // A row read after a failed insert can vanish (its request failed and released
            // it) before it is read: then try again.
            for _ in 0..3 {
                let token = Uuid::now_v7();
                let inserted = sqlx::query(CLAIM)
                    .bind(tenant.clone())
                    .bind(key.clone())
                    .bind(route.clone())
                    .bind(fingerprint.clone())
                    .bind(token.to_string())
                    .bind(now)
                    .bind(lease)
                    .execute(&pool)
                    .await
                    .map_err(failed)?
                    .rows_affected();
                if inserted == 1 {
                    // Housekeeping: a failure here costs a bound briefly, never the claim.
                    let trimmed = sqlx::query(TRIM)
                        .bind(tenant.clone())
                        .bind(keep)
                        .execute(&pool)
                        .await;
                    let pruned = sqlx::query(PRUNE)
                        .bind(now)
                        .bind(PRUNE_BATCH)
                        .execute(&pool)
                        .await;
                    if let Err(error) = trimmed.and(pruned) {
                        tracing::warn!(%error, "idempotency records were not pruned");
                    }
                    return Ok(ClaimOutcome::Claimed(token));
                }
                let row = sqlx::query_as::<_, Row>(SELECT)
                    .bind(tenant.clone())
                    .bind(key.clone())
                    .fetch_optional(&pool)
                    .await
                    .map_err(failed)?;
                if let Some(row) = row.filter(|row| row.3 > now) {
                    return decide(row, &route, &fingerprint);
                }
            }
            Err(IdempotencyError::Backend(
                "the idempotency key changed hands three times during one claim".to_owned(),
            ))
        })
    }

    async fn complete(
        &self,
        tenant: &TenantId,
        key: &str,
        token: Uuid,
        answer: &RecordedAnswer,
        ttl: Duration,
    ) -> Result<(), IdempotencyError> {
        let tenant = tenant.as_str().to_owned();
        let key = key.to_owned();
        let (status, correlation_id, ids, completed, took) = encode(answer);
        let ttl = ttl_micros(ttl);
        on_pool!(self, |pool| {
            sqlx::query(COMPLETE)
                .bind(tenant)
                .bind(key)
                .bind(token.to_string())
                .bind(status)
                .bind(correlation_id)
                .bind(ids)
                .bind(completed)
                .bind(took)
                .bind(ttl)
                .execute(&pool)
                .await
                .map_err(failed)?;
            Ok(())
        })
    }

    async fn release(
        &self,
        tenant: &TenantId,
        key: &str,
        token: Uuid,
    ) -> Result<(), IdempotencyError> {
        let tenant = tenant.as_str().to_owned();
        let key = key.to_owned();
        on_pool!(self, |pool| {
            sqlx::query(RELEASE)
                .bind(tenant)
                .bind(key)
                .bind(token.to_string())
                .execute(&pool)
                .await
                .map_err(failed)?;
            Ok(())
        })
    }
}
