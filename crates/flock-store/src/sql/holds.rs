//! The holds of receiver isolation, on either database: deliveries their destination may not
//! take now are *held* (no lease, no due time, no attempt spent), *released* the longest held
//! first, and *expired* (failed as `destination_unavailable`) once held too long. Each is one
//! statement for both databases, applied in a batch's transaction after its batch statement.

use flock_delivery::{GiveUp, HoldReason, Lease, failure_name};
use sqlx::{ColumnIndex, Executor, IntoArguments};
use time::OffsetDateTime;
use uuid::Uuid;

use super::rows::{ceil_micros, int};
use super::write::RELEASE;
use super::{Dialect, Sql, Value};
use crate::ops::Done;

/// The deliveries a destination holds ([`HoldReason::DESTINATION`]): the condition of the
/// partial index `deliveries_held`, in the same text, so that SQLite's planner sees that the
/// index covers a statement (it matches a partial index's condition by its terms).
pub(crate) const HELD: &str = "held IN ('capacity', 'breaker', 'paused')";

/// Holds delivery `$3` for reason `$1` since `$2`, while `$4` is its lease: it loses its lease
/// and its due time (so no claim scans it, and the dispatcher's next due time is not its).
const HOLD: &str = "\
UPDATE deliveries SET lease_token = NULL, due_at = NULL, held = $1, held_since = $2 \
    WHERE id = $3 AND lease_token = $4 AND state = 'pending' RETURNING id";

/// Lets the longest-held `$3` of the deliveries destination `$2` holds go, due at `$1`, and
/// answers their ids; `skip_locked` ends the subquery that picks them ([`Dialect::SKIP_LOCKED`]).
///
/// The rows are picked in a common table expression, which Postgres runs once: as a subquery
/// of the `UPDATE`, it may run again for each row, and its `SKIP LOCKED` then skips the rows
/// the statement just changed and picks more than the limit. The `UPDATE` checks the condition
/// again on each row once it holds its lock, so that two instances releasing at once never
/// both count one delivery.
pub(crate) fn release_statement(skip_locked: &str) -> String {
    format!(
        "WITH picked AS ( \
             SELECT id FROM deliveries WHERE destination = $2 AND {HELD} \
             ORDER BY held_since, id LIMIT $3{skip_locked}) \
         UPDATE deliveries SET due_at = $1, held = NULL, held_since = NULL \
         WHERE {HELD} AND id IN (SELECT id FROM picked) \
         RETURNING id"
    )
}

/// Fails up to `$4` deliveries held by their destination since before `$3`, the longest held
/// first, as `$1` completed at `$2`, and answers their ids and whether each is ordered; picked
/// as [`release_statement`] picks them.
pub(crate) fn expire_statement(skip_locked: &str) -> String {
    format!(
        "WITH picked AS ( \
             SELECT id FROM deliveries WHERE {HELD} AND held_since < $3 \
             ORDER BY held_since, id LIMIT $4{skip_locked}) \
         UPDATE deliveries SET state = 'failed', failure = $1, completed_at = $2, \
             due_at = NULL, held = NULL, held_since = NULL \
         WHERE {HELD} AND id IN (SELECT id FROM picked) \
         RETURNING id, ordered"
    )
}

/// Counts the held deliveries of each destination (of tenant `$2` only, when `by_tenant`),
/// with the oldest hold, the `$1` destinations that hold the most (then by name).
pub(crate) fn held_statement(by_tenant: bool) -> String {
    let tenant = if by_tenant { " AND tenant = $2" } else { "" };
    format!(
        "SELECT destination, count(*) AS how_many, min(held_since) AS oldest FROM deliveries \
         WHERE {HELD}{tenant} \
         GROUP BY destination ORDER BY count(*) DESC, destination LIMIT $1"
    )
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
    /// Holds the deliveries claimed under `leases` for `reason` since `now`; answers how many
    /// (a lease that is no longer current holds nothing).
    pub(super) async fn hold(
        conn: &mut D::Connection,
        leases: &[Lease],
        reason: HoldReason,
        now: OffsetDateTime,
    ) -> Result<Done, sqlx::Error> {
        let since = D::time(now);
        let mut held = 0;
        for lease in leases {
            // A token that does not fit a signed column was never handed out by this store.
            let Ok(token) = i64::try_from(lease.token) else {
                continue;
            };
            let found = sqlx::query(HOLD)
                .bind(reason.as_str().to_owned())
                .bind(&since)
                .bind(lease.delivery_id)
                .bind(token)
                .fetch_optional(&mut *conn)
                .await?;
            held += u64::from(found.is_some());
        }
        Ok(Done::Moved {
            count: held,
            wakes: false,
        })
    }

    /// Lets the longest-held `limit` of the deliveries `destination` holds go, due at `now`
    /// ([`release_statement`]); answers how many.
    pub(super) async fn release(
        conn: &mut D::Connection,
        destination: &str,
        limit: usize,
        now: OffsetDateTime,
    ) -> Result<Done, sqlx::Error> {
        let release = release_statement(D::SKIP_LOCKED);
        let released = sqlx::query(&release)
            .bind(D::time(now))
            .bind(destination.to_owned())
            .bind(int(limit))
            .fetch_all(&mut *conn)
            .await?;
        let count = u64::try_from(released.len()).unwrap_or(u64::MAX);
        Ok(Done::Moved {
            count,
            wakes: count > 0,
        })
    }

    /// Fails up to `limit` deliveries held by their destination since before `held_before`
    /// (the longest held first) as `destination_unavailable` at `now`, keeping their body and
    /// secret for a redelivery; each ordered one lets the next delivery of its webhook go
    /// ([`RELEASE`]). Answers how many failed, and wakes the dispatcher when a next one went.
    pub(super) async fn expire_holds(
        conn: &mut D::Connection,
        held_before: OffsetDateTime,
        now: OffsetDateTime,
        limit: usize,
    ) -> Result<Done, sqlx::Error> {
        let expire = expire_statement(D::SKIP_LOCKED);
        let now = D::time(now);
        let failed: Vec<(Uuid, i64)> = sqlx::query_as(&expire)
            .bind(failure_name(GiveUp::DestinationUnavailable).to_owned())
            .bind(&now)
            .bind(D::time(ceil_micros(held_before)))
            .bind(int(limit))
            .fetch_all(&mut *conn)
            .await?;
        let mut wakes = false;
        for (id, ordered) in &failed {
            if *ordered != 0 {
                let next = sqlx::query(RELEASE)
                    .bind(&now)
                    .bind(*id)
                    .fetch_optional(&mut *conn)
                    .await?;
                wakes |= next.is_some();
            }
        }
        Ok(Done::Moved {
            count: u64::try_from(failed.len()).unwrap_or(u64::MAX),
            wakes,
        })
    }
}

#[cfg(test)]
mod tests {
    use flock_delivery::HoldReason;

    use super::HELD;

    /// The statements' condition names exactly the reasons a destination holds for, and is
    /// the text of the partial index's condition in both migrations.
    #[test]
    fn the_held_condition_is_the_destination_reasons_and_the_index_condition() {
        let names: Vec<String> = (HoldReason::DESTINATION.iter())
            .map(|r| format!("'{}'", r.as_str()))
            .collect();
        assert_eq!(HELD, format!("held IN ({})", names.join(", ")));
        for migration in [
            include_str!("../../migrations/sqlite/0007_destinations.sql"),
            include_str!("../../migrations/postgres/0007_destinations.sql"),
        ] {
            assert!(migration.contains(&format!("WHERE {HELD};")), "{migration}");
        }
    }
}
