//! The writes, on either database: a batch in one transaction (the database's batch statement,
//! then any redeliveries, prunes and claims of further lease lengths), the outcomes handed out
//! once it committed, and why a write that failed on its own failed.

use std::collections::{HashMap, HashSet};

use flock_delivery::ClaimedDelivery;
use sqlx::{ColumnIndex, Executor, IntoArguments, Row as _};
use time::OffsetDateTime;
use tracing::error;
use uuid::Uuid;

use super::batch::{self, Claim, Plan};
use super::rows::{self, ceil_micros};
use super::{Dialect, Sql, Value};
use crate::error::Failure;
use crate::ops::{Done, Input, Op, OpError, Refusal};

/// What a batch's statements answered: the records that applied (`None` when that cannot be
/// read), and what each claim group got.
type Answered = (Option<HashSet<Uuid>>, Vec<Vec<ClaimedDelivery>>);

impl<D: Dialect> Sql<D>
where
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    for<'q> D::Arguments<'q>: IntoArguments<'q, D>,
    for<'r> &'r str: ColumnIndex<D::Row>,
    usize: ColumnIndex<D::Row>,
    Uuid: Value<D>,
    i64: Value<D>,
    bool: Value<D>,
    String: Value<D>,
    Vec<u8>: Value<D>,
{
    /// Applies `ops` in one transaction and commits it, setting each op's outcome. An error
    /// means nothing was committed.
    pub(super) async fn apply(&self, ops: &mut [Op]) -> Result<(), sqlx::Error> {
        let mut conn = self.writer.acquire().await?;
        let plan = Plan::of(ops);
        if plan.rare {
            sqlx::query(D::BEGIN).execute(&mut *conn).await?;
        }
        let (applied, claimed) = match Self::statements(&mut conn, ops, &plan).await {
            Ok(answered) => answered,
            Err(e) => {
                if plan.rare {
                    // Leave no transaction open (it may have ended already: ignore errors).
                    let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                }
                return Err(e);
            }
        };
        // Committed: from here on nothing fails the batch. Records that did not apply are
        // refused; say why (a lease that cannot be looked up is as good as lost).
        let mut refusals = HashMap::new();
        for (index, id) in plan.unapplied(applied.as_ref()) {
            let refusal =
                (Self::lost_or_unknown(&mut conn, id).await).unwrap_or(Refusal::LeaseLost(id));
            refusals.insert(index, refusal);
        }
        plan.settle(ops, applied.as_ref(), refusals, claimed);
        Ok(())
    }

    /// The batch statement and, when the batch holds them, the rarer writes and the commit.
    async fn statements(
        conn: &mut D::Connection,
        ops: &mut [Op],
        plan: &Plan,
    ) -> Result<Answered, sqlx::Error> {
        let batch = plan.batch(ops);
        let rows = D::batch(conn, &batch, !plan.rare).await?;
        let (applied, first) = Self::answer(&rows, &batch.claim);
        let mut claimed = vec![first];
        if plan.rare {
            for op in ops.iter_mut() {
                let outcome = match op.input {
                    Input::Redeliver { id, now } => Self::redeliver(conn, id, now).await?,
                    Input::Prune { before, limit } => {
                        let deleted: i64 = sqlx::query_scalar(D::PRUNE)
                            .bind(D::time(ceil_micros(before)))
                            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                            .fetch_one(&mut *conn)
                            .await?;
                        Ok(Done::Pruned(u64::try_from(deleted).unwrap_or(0)))
                    }
                    _ => continue,
                };
                op.done(outcome);
            }
            for batch in plan.other_claims() {
                let rows = D::batch(conn, &batch, false).await?;
                claimed.push(Self::answer(&rows, &batch.claim).1);
            }
            sqlx::query("COMMIT").execute(&mut *conn).await?;
        }
        Ok((applied, claimed))
    }

    /// The rows of a batch statement: records that applied, and the deliveries `claim` got.
    fn answer(rows: &[D::Row], claim: &Claim) -> (Option<HashSet<Uuid>>, Vec<ClaimedDelivery>) {
        let mut applied = Some(HashSet::new());
        let mut found = Vec::new();
        for row in rows {
            let kind = row.try_get::<i64, _>("kind");
            if matches!(kind, Ok(2)) {
                found.push(Self::claimed_row(row));
                continue;
            }
            match kind.and_then(|_| row.try_get::<Uuid, _>("id")) {
                Ok(id) => {
                    if let Some(applied) = &mut applied {
                        applied.insert(id);
                    }
                }
                Err(e) => {
                    error!(error = %e, "a batch's answer cannot be read; its records are answered with an error");
                    applied = None;
                }
            }
        }
        (applied, batch::claimed(found, claim))
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
            return Ok(Ok(Done::Redelivered));
        }
        let state: Option<String> =
            sqlx::query_scalar("SELECT state FROM deliveries WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
        Ok(Err(match state {
            None => Refusal::UnknownDelivery(id),
            Some(state) => {
                Refusal::NotRedeliverable(id, rows::parse_name(&state, "delivery state")?)
            }
        }))
    }

    /// Why a record of delivery `id` did not apply.
    async fn lost_or_unknown(conn: &mut D::Connection, id: Uuid) -> Result<Refusal, sqlx::Error> {
        let exists = sqlx::query("SELECT 1 FROM deliveries WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        Ok(match exists {
            Some(_) => Refusal::LeaseLost(id),
            None => Refusal::UnknownDelivery(id),
        })
    }

    /// Why `op`, written alone, failed with `err`: an id of its publish already stored (a
    /// refusal of its own), or a failure of the database.
    pub(super) async fn refusal(&self, op: &Op, err: sqlx::Error) -> OpError {
        let duplicate = matches!(&err, sqlx::Error::Database(e) if e.is_unique_violation());
        if let Input::Publish {
            artifact,
            deliveries,
        } = &op.input
            && duplicate
        {
            if let Some(a) = artifact
                && self.holds("artifacts", a.id).await
            {
                return OpError::Refused(Refusal::DuplicateArtifact(a.id));
            }
            for d in deliveries {
                if self.holds("deliveries", d.id).await {
                    return OpError::Refused(Refusal::DuplicateDelivery(d.id));
                }
            }
        }
        let what = format!("the {} could not be written", op.input.kind());
        OpError::Backend(Failure::database(what, err))
    }

    /// Whether `table` holds a row with this id (a failed lookup says no).
    async fn holds(&self, table: &str, id: Uuid) -> bool {
        let select = format!("SELECT 1 FROM {table} WHERE id = $1");
        let found = sqlx::query(&select)
            .bind(id)
            .fetch_optional(&self.readers)
            .await;
        matches!(found, Ok(Some(_)))
    }
}
