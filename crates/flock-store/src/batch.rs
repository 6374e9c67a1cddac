//! Batch helpers both backends use: screening publishes for repeated ids, grouping claims,
//! handing claimed deliveries to their claims, and what a recorded attempt does to its delivery.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use flock_delivery::{AttemptView, ClaimedDelivery, Lease, Resolution};
use time::OffsetDateTime;
use tracing::error;
use uuid::Uuid;

use crate::durable::ReadError;
use crate::ops::{ClaimRequest, Done, Input, Op, Refusal};
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
        Resolution::Failed(reason) => (
            "failed",
            None,
            Some(flock_delivery::failure_name(reason)),
            Some(finished),
        ),
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

/// The claims of a batch with one lease length: claimed with one statement, at the earliest
/// of their `now`s (so no claim gets a delivery due after the time it asked at), for the sum of
/// their limits.
pub(crate) struct ClaimGroup {
    pub(crate) lease_for: Duration,
    pub(crate) at: OffsetDateTime,
    pub(crate) limit: usize,
    /// The writes that asked, in order, with their limits.
    pub(crate) members: Vec<(usize, usize)>,
}

/// The batch's claims (claims, and records followed by a claim), grouped by lease length.
pub(crate) fn claim_groups(ops: &[Op]) -> Vec<ClaimGroup> {
    let mut groups: Vec<ClaimGroup> = Vec::new();
    for (index, op) in ops.iter().enumerate() {
        let request = match op.input {
            Input::Claim {
                now,
                limit,
                lease_for,
            } => ClaimRequest {
                now,
                limit,
                lease_for,
            },
            Input::Record {
                then_claim: Some(request),
                ..
            } => request,
            _ => continue,
        };
        match groups.iter_mut().find(|g| g.lease_for == request.lease_for) {
            Some(group) => {
                group.at = group.at.min(request.now);
                group.limit = group.limit.saturating_add(request.limit);
                group.members.push((index, request.limit));
            }
            None => groups.push(ClaimGroup {
                lease_for: request.lease_for,
                at: request.now,
                limit: request.limit,
                members: vec![(index, request.limit)],
            }),
        }
    }
    groups
}

/// Hands a group's claimed deliveries to its members, in order.
pub(crate) fn distribute(
    members: &[(usize, usize)],
    claimed: Vec<ClaimedDelivery>,
    to: &mut HashMap<usize, Vec<ClaimedDelivery>>,
) {
    let mut claimed = claimed.into_iter();
    for &(index, limit) in members {
        to.insert(index, claimed.by_ref().take(limit).collect());
    }
}

/// Sets the outcomes of a committed batch's claims and records: what each claim got, and
/// whether each record applied. A write missing from both (its results could not be read)
/// keeps no outcome, and its caller gets an error.
pub(crate) fn settle(
    ops: &mut [Op],
    mut claims: HashMap<usize, Vec<ClaimedDelivery>>,
    records: &HashMap<usize, Result<(), Refusal>>,
) {
    for (index, op) in ops.iter_mut().enumerate() {
        let outcome = match &op.input {
            Input::Claim { .. } => claims.remove(&index).map(|c| Ok(Done::Claimed(c))),
            Input::Record {
                then_claim: None, ..
            } => records.get(&index).map(|r| r.map(|()| Done::Recorded)),
            Input::Record {
                then_claim: Some(_),
                ..
            } => records.get(&index).map(|r| {
                Ok(Done::RecordedThenClaimed {
                    recorded: *r,
                    claimed: claims.remove(&index).unwrap_or_default(),
                })
            }),
            _ => continue,
        };
        if let Some(outcome) = outcome {
            op.done(outcome);
        }
    }
}

/// A claimed row as a [`ClaimedDelivery`]; a row that does not decode is logged and skipped
/// (it stays claimed until its lease expires).
pub(crate) fn to_claimed(
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
