//! The writes, on either database: a batch in one transaction (the database's batch statement,
//! then any redeliveries, prunes, holds (`holds`) and claims of further lease lengths), the outcomes handed out
//! once it committed, and why a write that failed on its own failed.

use std::collections::HashSet;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use flock_delivery::ClaimedDelivery;
use sqlx::{ColumnIndex, Executor, IntoArguments};
use time::OffsetDateTime;
use uuid::Uuid;

use super::batch::{self, Batch, Claim};
use super::rows::{ceil_micros, floor_micros, int, parse_state};
use super::{Dialect, KEEP_IDLE, Sql, Value};
use crate::durable::Backend;
use crate::error::Failure;
use crate::ops::{ClaimRequest, Done, Input, Op, OpError, Refusal};

/// Lets the next delivery of the webhook of ordered delivery `$2` go, due at `$1`, and answers
/// its id: the first pending one of that webhook, when a claim parked it (`held` is `ordered`,
/// or NULL in a row parked before migration 7). One its destination holds is its
/// destination's to let go. (When an earlier delivery of the webhook is pending again,
/// redelivered, the next claim parks it once more.)
pub(super) const RELEASE: &str = "\
UPDATE deliveries SET due_at = $1, held = NULL, held_since = NULL \
    WHERE due_at IS NULL AND state = 'pending' AND lease_token IS NULL \
      AND (held IS NULL OR held = 'ordered') AND id = ( \
        SELECT n.id FROM deliveries AS n JOIN deliveries AS d \
            ON n.correlation_id = d.correlation_id AND n.webhook = d.webhook \
        WHERE d.id = $2 AND n.state = 'pending' ORDER BY n.sequence LIMIT 1) \
    RETURNING id";

/// What a batch's statements answered: the deliveries whose record applied, and what each
/// claim got (`None` for what cannot be read).
type Answered = (Option<HashSet<Uuid>>, Vec<Option<Vec<ClaimedDelivery>>>);

#[async_trait]
impl<D: Dialect> Backend for Sql<D>
where
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    for<'q> D::Arguments<'q>: IntoArguments<'q, D>,
    for<'r> &'r str: ColumnIndex<D::Row>,
    usize: ColumnIndex<D::Row>,
    Uuid: Value<D>,
    i64: Value<D>,
    String: Value<D>,
{
    async fn write(&self, ops: &mut [Op]) -> Result<(), sqlx::Error> {
        let kept = self
            .kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut conn = match kept {
            Some((conn, since)) if since.elapsed() < KEEP_IDLE => conn,
            stale => {
                // Back to the pool first, to be tested: the pool may have no other.
                drop(stale);
                self.writer.acquire().await?
            }
        };
        Self::apply(&mut conn, ops).await?;
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        // Once the pool is closing, a connection goes back to it: closing waits for them all.
        if !self.writer.is_closed() {
            kept.push((conn, Instant::now()));
        }
        Ok(())
    }

    /// An id of the publish already stored is a refusal of its own; anything else a failure
    /// of the database.
    async fn explain(&self, op: &Op, err: sqlx::Error) -> OpError {
        let duplicate = matches!(&err, sqlx::Error::Database(e) if e.is_unique_violation());
        if let Input::Publish {
            artifacts,
            deliveries,
            ..
        } = &op.input
            && duplicate
        {
            // A failed lookup says no.
            let holds =
                async |table, id| matches!(Self::exists(&self.readers, table, id).await, Ok(true));
            for a in artifacts {
                if holds("artifacts", a.id).await {
                    return OpError::Refused(Refusal::DuplicateArtifact(a.id));
                }
            }
            for d in deliveries {
                if holds("deliveries", d.id).await {
                    return OpError::Refused(Refusal::DuplicateDelivery(d.id));
                }
            }
        }
        let what = format!("the {} could not be written", op.input.kind());
        OpError::Backend(Failure::database(what, err))
    }

    async fn close(&self) {
        if let Some(background) = self.background.lock().await.take() {
            let _ = background.stop.send(true);
            let _ = background.task.await;
        }
        let closing = {
            // Closed, then emptied, under the lock a writer keeps its connection under: one
            // that ends its batch meanwhile gives the connection back to the pool.
            let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
            let closing = self.writer.close();
            kept.clear();
            closing
        };
        closing.await;
        self.readers.close().await;
    }

    fn linger(&self) -> Duration {
        D::LINGER
    }
}

impl<D: Dialect> Sql<D>
where
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    for<'q> D::Arguments<'q>: IntoArguments<'q, D>,
    for<'r> &'r str: ColumnIndex<D::Row>,
    usize: ColumnIndex<D::Row>,
    Uuid: Value<D>,
    i64: Value<D>,
    String: Value<D>,
{
    /// Applies `ops` in one transaction on `conn` and commits it, setting each op's outcome.
    async fn apply(conn: &mut D::Connection, ops: &mut [Op]) -> Result<(), sqlx::Error> {
        batch::refuse_repeated_ids(ops);
        let claims = batch::claims(ops);
        // The lease of the publishes that ask for one: the first's length (a store asks for
        // its dispatcher's, the same for all).
        let fresh = match ops.iter().find_map(|op| op.input.lease_for()) {
            Some(lease_for) => Claim::of(ClaimRequest {
                now: floor_micros(OffsetDateTime::now_utc()),
                limit: 0,
                lease_for,
            }),
            _ => Claim::NONE,
        };
        let releases = ops.iter().any(|op| op.input.releases().is_some());
        let rare = claims.len() > 1 || releases || ops.iter().any(|op| op.input.is_rare());
        if rare {
            sqlx::query(D::BEGIN).execute(&mut *conn).await?;
        }
        let (applied, claimed) = match Self::statements(conn, ops, &claims, fresh, rare).await {
            Ok(answered) => answered,
            Err(e) => {
                if rare {
                    // Leave no transaction open (it may have ended already: ignore errors).
                    let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                }
                return Err(e);
            }
        };
        // Committed: from here on nothing fails the batch. Each claim gets its share of its
        // lease length's deliveries, in the order of the writes.
        let mut claimed: Vec<_> = (claimed.into_iter())
            .map(|c| c.map(Vec::into_iter))
            .collect();
        let mut share = |request: ClaimRequest| -> Option<Vec<ClaimedDelivery>> {
            let group = claims
                .iter()
                .position(|c| c.lease_for == request.lease_for)?;
            let deliveries = claimed.get_mut(group)?.as_mut()?;
            Some(deliveries.take(request.limit).collect())
        };
        for op in ops.iter_mut() {
            let outcome = match &op.input {
                Input::Publish {
                    deliveries,
                    lease_for,
                    ..
                } if op.outcome.is_none() => match lease_for.is_some() && fresh.token != 0 {
                    true => Ok(Done::Published(batch::leased(deliveries, &fresh))),
                    false => Ok(Done::Applied),
                },
                Input::Claim(request) => match share(*request) {
                    Some(claimed) => Ok(Done::Claimed(claimed)),
                    None => continue,
                },
                Input::Record {
                    lease, then_claim, ..
                } => {
                    let id = lease.delivery_id;
                    let in_batch = i64::try_from(lease.token).is_ok();
                    let recorded = match &applied {
                        Some(applied) if in_batch && applied.contains(&id) => Ok(()),
                        // Whether it applied cannot be told: no outcome, an error.
                        None if in_batch => continue,
                        // Why it did not apply (a lease that cannot be looked up is as good as
                        // lost).
                        _ => Err(match Self::exists(&mut *conn, "deliveries", id).await {
                            Ok(false) => Refusal::UnknownDelivery(id),
                            _ => Refusal::LeaseLost(id),
                        }),
                    };
                    match then_claim {
                        None => recorded.map(|()| Done::Applied),
                        Some(request) => Ok(Done::RecordedThenClaimed {
                            recorded,
                            claimed: share(*request).unwrap_or_default(),
                        }),
                    }
                }
                _ => continue,
            };
            op.outcome = Some(outcome);
        }
        Ok(())
    }

    /// The batch statement and, when the batch holds them, the rarer writes and the commit.
    async fn statements(
        conn: &mut D::Connection,
        ops: &mut [Op],
        claims: &[Claim],
        fresh: Claim,
        rare: bool,
    ) -> Result<Answered, sqlx::Error> {
        // An ordered delivery's final result releases the next of its webhook before the
        // claims: the batch statement records (and claims nothing), then the releases, then
        // every claim.
        let releases: Vec<Uuid> = ops.iter().filter_map(|op| op.input.releases()).collect();
        let first = match releases.is_empty() {
            true => claims.first().copied().unwrap_or(Claim::NONE),
            false => Claim::NONE,
        };
        let answer = D::batch(conn, &Batch::of(ops, first, fresh), !rare).await?;
        let (applied, got) = batch::outcomes(answer, &first);
        let mut claimed = Vec::with_capacity(claims.len());
        if releases.is_empty() {
            claimed.push(got);
        }
        if rare {
            let now = D::time(floor_micros(OffsetDateTime::now_utc()));
            for id in releases.iter().copied() {
                sqlx::query(RELEASE)
                    .bind(&now)
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
            }
            for op in ops.iter_mut() {
                let outcome = match &op.input {
                    Input::Redeliver { id, now } => Self::redeliver(conn, *id, *now).await?,
                    Input::Prune { before, limit } => {
                        let deleted: i64 = sqlx::query_scalar(D::PRUNE)
                            .bind(D::time(ceil_micros(*before)))
                            .bind(int(*limit))
                            .fetch_one(&mut *conn)
                            .await?;
                        Ok(Done::Pruned(u64::try_from(deleted).unwrap_or(0)))
                    }
                    Input::PruneWorkflows { before, limit } => Ok(Done::Pruned(
                        Self::prune_workflows(conn, *before, *limit).await?,
                    )),
                    Input::Hold {
                        leases,
                        reason,
                        now,
                    } => Ok(Self::hold(conn, leases, *reason, *now).await?),
                    Input::Release {
                        destination,
                        limit,
                        now,
                    } => Ok(Self::release(conn, destination, *limit, *now).await?),
                    Input::ExpireHolds {
                        held_before,
                        now,
                        limit,
                    } => Ok(Self::expire_holds(conn, *held_before, *now, *limit).await?),
                    Input::ClaimPast {
                        request,
                        past,
                        since,
                    } => {
                        let claim = Claim::of(*request);
                        let batch = Batch::claiming_past(claim, past, *since);
                        let answer = D::batch(conn, &batch, false).await?;
                        match batch::outcomes(answer, &claim).1 {
                            Some(claimed) => Ok(Done::Claimed(claimed)),
                            // Leased but unread: claimed again once the lease expires.
                            None => continue,
                        }
                    }
                    _ => continue,
                };
                op.outcome = Some(outcome);
            }
            for claim in claims.iter().skip(claimed.len()) {
                let answer = D::batch(conn, &Batch::claiming(*claim), false).await?;
                claimed.push(batch::outcomes(answer, claim).1);
            }
            sqlx::query("COMMIT").execute(&mut *conn).await?;
        }
        Ok((applied, claimed))
    }

    /// Queues failed delivery `id` again, due at `now`, with a fresh retry budget.
    async fn redeliver(
        conn: &mut D::Connection,
        id: Uuid,
        now: OffsetDateTime,
    ) -> Result<Result<Done, Refusal>, sqlx::Error> {
        let requeued = sqlx::query(
            "UPDATE deliveries SET state = 'pending', due_at = $1, failure = NULL, \
             completed_at = NULL, lease_token = NULL, round_start = attempts \
             WHERE id = $2 AND state = 'failed' RETURNING id",
        )
        .bind(D::time(now))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
        if requeued.is_some() {
            return Ok(Ok(Done::Applied));
        }
        let state: Option<String> =
            sqlx::query_scalar("SELECT state FROM deliveries WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
        Ok(Err(match state {
            None => Refusal::UnknownDelivery(id),
            Some(state) => Refusal::NotRedeliverable(id, parse_state(&state)?),
        }))
    }

    /// Deletes up to `limit` workflows whose newest artifact was created before `before` and
    /// that have no pending delivery, with their artifacts, deliveries and attempts; answers
    /// how many went. Candidates are the workflows of the oldest `limit * 8` artifacts created
    /// before `before` (a scan of the primary key from its start), each then checked through
    /// the correlation indexes, so a call costs the same however many artifacts are kept.
    async fn prune_workflows(
        conn: &mut D::Connection,
        before: OffsetDateTime,
        limit: u64,
    ) -> Result<u64, sqlx::Error> {
        let before = D::time(ceil_micros(before));
        let window = int(limit.saturating_mul(8));
        let oldest: Vec<Uuid> = sqlx::query_scalar(
            "SELECT correlation_id FROM (SELECT correlation_id, created_at FROM artifacts \
             ORDER BY position LIMIT $2) AS oldest WHERE created_at < $1",
        )
        .bind(&before)
        .bind(window)
        .fetch_all(&mut *conn)
        .await?;
        let mut seen = HashSet::new();
        let mut pruned = 0;
        for workflow in oldest {
            if pruned >= limit || !seen.insert(workflow) {
                continue;
            }
            let busy: i64 = sqlx::query_scalar(
                "SELECT (SELECT count(*) FROM artifacts WHERE correlation_id = $1 \
                         AND created_at >= $2) \
                      + (SELECT count(*) FROM deliveries WHERE correlation_id = $1 \
                         AND state = 'pending')",
            )
            .bind(workflow)
            .bind(&before)
            .fetch_one(&mut *conn)
            .await?;
            if busy > 0 {
                continue;
            }
            for delete in [
                "DELETE FROM attempts WHERE delivery_id IN \
                 (SELECT id FROM deliveries WHERE correlation_id = $1)",
                "DELETE FROM deliveries WHERE correlation_id = $1",
                "DELETE FROM artifacts WHERE correlation_id = $1",
            ] {
                sqlx::query(delete)
                    .bind(workflow)
                    .execute(&mut *conn)
                    .await?;
            }
            pruned += 1;
        }
        Ok(pruned)
    }

    /// Whether `table` holds a row with this id, looked up through `on`.
    async fn exists<'c>(
        on: impl Executor<'c, Database = D>,
        table: &str,
        id: Uuid,
    ) -> Result<bool, sqlx::Error> {
        let select = format!("SELECT 1 FROM {table} WHERE id = $1");
        let found = sqlx::query(&select).bind(id).fetch_optional(on).await?;
        Ok(found.is_some())
    }
}
