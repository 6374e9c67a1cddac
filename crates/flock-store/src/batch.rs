//! Batch helpers both backends use: screening publishes for repeated ids, grouping claims,
//! handing claimed deliveries to their claims, and what a recorded attempt does to its delivery.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use flock_delivery::{AttemptView, ClaimedDelivery, Lease, Resolution};
use time::OffsetDateTime;
use tracing::error;
use uuid::Uuid;

use crate::durable::ReadError;
use crate::ops::{Done, Input, Op, Refusal};
use crate::rows::ClaimFields;

/// How a recorded attempt leaves its delivery: (state, due, failure, completed).
pub(crate) fn resolved(
    resolution: Resolution,
    finished: OffsetDateTime,
) -> (
    &'static str,
    Option<OffsetDateTime>,
    Option<&'static str>,
    Option<OffsetDateTime>,
) {
    match resolution {
        Resolution::Delivered => ("delivered", None, None, Some(finished)),
        Resolution::RetryAt(at) => ("pending", Some(at), None, None),
        Resolution::Failed(reason) => ("failed", None, Some(reason.as_str()), Some(finished)),
    }
}

/// When an attempt finished: its start plus its duration.
pub(crate) fn finished(attempt: &AttemptView) -> OffsetDateTime {
    let duration = time::Duration::milliseconds(i64::try_from(attempt.duration_ms).unwrap_or(0));
    attempt
        .started_at
        .checked_add(duration)
        .unwrap_or(attempt.started_at)
}

/// Publishes that can go in: a publish repeating an artifact or delivery id of an earlier one
/// in the batch, or a delivery id twice, is refused here (the database refuses ids it holds).
pub(crate) fn screen_publishes(ops: &mut [Op]) -> Vec<usize> {
    let mut artifacts: HashSet<Uuid> = HashSet::new();
    let mut deliveries: HashSet<Uuid> = HashSet::new();
    let mut accepted = Vec::new();
    for (index, op) in ops.iter_mut().enumerate() {
        let Input::Publish {
            artifact,
            deliveries: new,
        } = &op.input
        else {
            continue;
        };
        let refusal = if let Some(a) = artifact.as_ref().filter(|a| artifacts.contains(&a.id)) {
            Some(Refusal::DuplicateArtifact(a.id))
        } else {
            let mut own = HashSet::new();
            new.iter()
                .find(|d| deliveries.contains(&d.id) || !own.insert(d.id))
                .map(|d| Refusal::DuplicateDelivery(d.id))
        };
        match refusal {
            Some(refusal) => op.done(Err(refusal)),
            None => {
                if let Some(a) = artifact {
                    artifacts.insert(a.id);
                }
                deliveries.extend(new.iter().map(|d| d.id));
                accepted.push(index);
            }
        }
    }
    accepted
}

/// Claims grouped by lease length: each group is claimed with one statement at the earliest of
/// its `now`s (so no claim gets a delivery due after the time it asked at).
pub(crate) fn claim_groups(ops: &[Op]) -> Vec<(Duration, OffsetDateTime, usize, Vec<usize>)> {
    let mut groups: Vec<(Duration, OffsetDateTime, usize, Vec<usize>)> = Vec::new();
    for (index, op) in ops.iter().enumerate() {
        if let Input::Claim {
            now,
            limit,
            lease_for,
        } = op.input
        {
            match groups.iter_mut().find(|g| g.0 == lease_for) {
                Some(group) => {
                    group.1 = group.1.min(now);
                    group.2 = group.2.saturating_add(limit);
                    group.3.push(index);
                }
                None => groups.push((lease_for, now, limit, vec![index])),
            }
        }
    }
    groups
}

/// Hands claimed deliveries (in id order) to the claims of a group, in order.
pub(crate) fn distribute(ops: &mut [Op], members: &[usize], claimed: Vec<ClaimedDelivery>) {
    let mut claimed = claimed.into_iter();
    for &index in members {
        let limit = match ops[index].input {
            Input::Claim { limit, .. } => limit,
            _ => 0,
        };
        let mine: Vec<ClaimedDelivery> = claimed.by_ref().take(limit).collect();
        ops[index].done(Ok(Done::Claimed(mine)));
    }
}

/// A claimed row as a [`ClaimedDelivery`]; a row that does not decode is logged and skipped
/// (it stays claimed until its lease expires).
pub(crate) fn claimed(
    fields: Result<ClaimFields, ReadError>,
    token: i64,
    expires_at: OffsetDateTime,
) -> Option<ClaimedDelivery> {
    let decoded = fields.and_then(|f| f.delivery().map_err(ReadError::from));
    match decoded {
        Ok((delivery, attempt, round_attempt)) => Some(ClaimedDelivery {
            lease: Lease {
                delivery_id: delivery.id,
                token: token.unsigned_abs(),
                expires_at,
            },
            delivery: Arc::new(delivery),
            attempt,
            round_attempt,
        }),
        Err(e) => {
            error!(error = %e.0, "a claimed delivery cannot be read; it is left claimed until its lease expires");
            None
        }
    }
}

/// `at + duration`, saturating instead of overflowing.
pub(crate) fn add(at: OffsetDateTime, duration: Duration) -> OffsetDateTime {
    time::Duration::try_from(duration)
        .ok()
        .and_then(|d| at.checked_add(d))
        .unwrap_or(time::PrimitiveDateTime::MAX.assume_utc())
}

/// Whether `err` is a unique-key violation.
pub(crate) fn is_duplicate(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(e) if e.is_unique_violation())
}
