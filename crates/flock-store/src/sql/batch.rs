//! A batch of writes taken apart for a backend's batch statement, and put back together once it
//! committed: which publishes go in (a repeated id is refused here), the rows to write, the
//! claims grouped by lease length, and who gets which outcome.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use flock_delivery::{AttemptView, ClaimedDelivery, ErrorKind, Lease, Resolution};
use flock_models::NewDelivery;
use time::OffsetDateTime;
use tracing::error;
use uuid::Uuid;

use crate::ops::{ClaimRequest, Done, Input, Op, Refusal};
use crate::sql::rows::{self, ArtifactFields, ClaimFields, floor_micros};

/// What one run of a backend's batch statement writes and claims. Its lists may be empty, and
/// its claim may be for nothing: the statement then costs next to nothing.
pub(crate) struct Batch<'a> {
    /// When the batch runs: its new deliveries are created, and first due, then.
    pub(crate) now: OffsetDateTime,
    pub(crate) artifacts: Vec<&'a ArtifactFields>,
    pub(crate) deliveries: Vec<&'a NewDelivery>,
    pub(crate) records: Vec<Record<'a>>,
    pub(crate) claim: Claim,
}

/// An attempt to record, and what it does to its delivery, both only while `token` is still
/// the delivery's lease.
pub(crate) struct Record<'a> {
    pub(crate) id: Uuid,
    pub(crate) token: i64,
    pub(crate) attempt: &'a AttemptView,
    pub(crate) state: &'static str,
    pub(crate) due_at: Option<OffsetDateTime>,
    pub(crate) failure: Option<&'static str>,
    pub(crate) completed_at: Option<OffsetDateTime>,
    pub(crate) error_kind: Option<&'static str>,
}

impl<'a> Record<'a> {
    /// The only place a write names a failure reason or an error kind.
    fn new(lease: &Lease, token: i64, attempt: &'a AttemptView, resolution: Resolution) -> Self {
        let finished = attempt
            .started_at
            .checked_add(time::Duration::milliseconds(
                i64::try_from(attempt.duration_ms).unwrap_or(0),
            ))
            .unwrap_or(attempt.started_at);
        let (state, due_at, failure, completed_at) = match resolution {
            Resolution::Delivered => ("delivered", None, None, Some(finished)),
            Resolution::RetryAt(at) => ("pending", Some(at), None, None),
            Resolution::Failed(reason) => ("failed", None, Some(reason.as_str()), Some(finished)),
        };
        Record {
            id: lease.delivery_id,
            token,
            attempt,
            state,
            due_at,
            failure,
            completed_at,
            error_kind: attempt.error_kind.map(ErrorKind::as_str),
        }
    }
}

/// Up to `limit` deliveries due at `at` (or whose lease expired by then), earliest due first,
/// leased with `token` until `expires_at`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Claim {
    pub(crate) at: OffsetDateTime,
    pub(crate) limit: i64,
    pub(crate) token: i64,
    pub(crate) expires_at: OffsetDateTime,
}

impl Claim {
    /// A claim of nothing.
    const NONE: Claim = Claim {
        at: OffsetDateTime::UNIX_EPOCH,
        limit: 0,
        token: 0,
        expires_at: OffsetDateTime::UNIX_EPOCH,
    };
}

/// The claims of a batch with one lease length, claimed together: at the earliest of their
/// `now`s (so none gets a delivery due after the time it asked at), for the sum of their
/// limits, handed out in order.
struct ClaimGroup {
    claim: Claim,
    lease_for: Duration,
    /// The writes that asked, with their limits.
    members: Vec<(usize, usize)>,
}

/// A batch of writes taken apart: what the batch statement gets, and who asked for what.
pub(crate) struct Plan {
    now: OffsetDateTime,
    /// The publishes that go in.
    accepted: Vec<usize>,
    /// The records that go in: write, delivery, token.
    records: Vec<(usize, Uuid, i64)>,
    /// The records refused before they go in: write, delivery.
    refused: Vec<(usize, Uuid)>,
    /// Claims by lease length; the first goes in the batch statement.
    groups: Vec<ClaimGroup>,
    /// Whether the batch holds more than the batch statement writes: redeliveries, prunes or
    /// claims of a second lease length. Those go in the same transaction, one by one.
    pub(crate) rare: bool,
}

impl Plan {
    /// Takes `ops` apart; a publish that repeats an id of an earlier one, or a delivery id of
    /// its own, is refused here (the database refuses the ids it holds).
    pub(crate) fn of(ops: &mut [Op]) -> Plan {
        let mut plan = Plan {
            now: floor_micros(OffsetDateTime::now_utc()),
            accepted: screen_publishes(ops),
            records: Vec::new(),
            refused: Vec::new(),
            groups: Vec::new(),
            rare: false,
        };
        for (index, op) in ops.iter().enumerate() {
            let claim = match op.input {
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
                    lease, then_claim, ..
                } => {
                    // A token that does not fit the column was never handed out by this store.
                    match i64::try_from(lease.token) {
                        Ok(token) => plan.records.push((index, lease.delivery_id, token)),
                        Err(_) => plan.refused.push((index, lease.delivery_id)),
                    }
                    let Some(claim) = then_claim else { continue };
                    claim
                }
                Input::Redeliver { .. } | Input::Prune { .. } => {
                    plan.rare = true;
                    continue;
                }
                Input::Publish { .. } => continue,
            };
            plan.group(index, claim);
        }
        for group in &mut plan.groups {
            group.claim.expires_at = floor_micros(add(group.claim.at, group.lease_for));
        }
        plan.rare |= plan.groups.len() > 1;
        plan
    }

    fn group(&mut self, index: usize, request: ClaimRequest) {
        let limit = i64::try_from(request.limit).unwrap_or(i64::MAX);
        match (self.groups.iter_mut()).find(|g| g.lease_for == request.lease_for) {
            Some(group) => {
                group.claim.at = group.claim.at.min(request.now);
                group.claim.limit = group.claim.limit.saturating_add(limit);
                group.members.push((index, request.limit));
            }
            None => self.groups.push(ClaimGroup {
                claim: Claim {
                    at: request.now,
                    limit,
                    token: rows::new_token(),
                    expires_at: request.now,
                },
                lease_for: request.lease_for,
                members: vec![(index, request.limit)],
            }),
        }
    }

    /// What the batch statement writes and claims (the first group's claim).
    pub(crate) fn batch<'a>(&self, ops: &'a [Op]) -> Batch<'a> {
        let mut batch = self.claim_only(self.groups.first().map(|g| g.claim));
        for &index in &self.accepted {
            if let Input::Publish {
                artifact,
                deliveries,
            } = &ops[index].input
            {
                batch.artifacts.extend(artifact);
                batch.deliveries.extend(deliveries);
            }
        }
        for &(index, _, token) in &self.records {
            if let Input::Record {
                lease,
                attempt,
                resolution,
                ..
            } = &ops[index].input
            {
                batch
                    .records
                    .push(Record::new(lease, token, attempt, *resolution));
            }
        }
        batch
    }

    /// The claims of the other lease lengths, each a batch of its own.
    pub(crate) fn other_claims(&self) -> impl Iterator<Item = Batch<'static>> + '_ {
        (self.groups.iter().skip(1)).map(|g| self.claim_only(Some(g.claim)))
    }

    fn claim_only<'a>(&self, claim: Option<Claim>) -> Batch<'a> {
        Batch {
            now: self.now,
            artifacts: Vec::new(),
            deliveries: Vec::new(),
            records: Vec::new(),
            claim: claim.unwrap_or(Claim::NONE),
        }
    }

    /// The records that did not apply: refused up front, or (when the batch statement's
    /// answer could be read) whose lease was not current.
    pub(crate) fn unapplied(&self, applied: Option<&HashSet<Uuid>>) -> Vec<(usize, Uuid)> {
        let mut unapplied = self.refused.clone();
        if let Some(applied) = applied {
            unapplied.extend(
                (self.records.iter())
                    .filter(|(_, id, _)| !applied.contains(id))
                    .map(|&(index, id, _)| (index, id)),
            );
        }
        unapplied
    }

    /// Sets the outcomes of the committed batch: publishes stored, each claim's share of its
    /// group's deliveries (`claimed`, one list per group), and each record applied (`applied`,
    /// `None` when that could not be read) or refused (`refusals`). A write left without an
    /// outcome gets an error.
    pub(crate) fn settle(
        self,
        ops: &mut [Op],
        applied: Option<&HashSet<Uuid>>,
        refusals: HashMap<usize, Refusal>,
        claimed: Vec<Vec<ClaimedDelivery>>,
    ) {
        for &index in &self.accepted {
            ops[index].done(Ok(Done::Stored));
        }
        let mut claims: HashMap<usize, Vec<ClaimedDelivery>> = HashMap::new();
        for (group, claimed) in self.groups.iter().zip(claimed) {
            let mut claimed = claimed.into_iter();
            for &(index, limit) in &group.members {
                claims.insert(index, claimed.by_ref().take(limit).collect());
            }
        }
        let mut records: HashMap<usize, Result<(), Refusal>> = (refusals.into_iter())
            .map(|(index, refusal)| (index, Err(refusal)))
            .collect();
        if applied.is_some() {
            for &(index, _, _) in &self.records {
                records.entry(index).or_insert(Ok(()));
            }
        }
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
}

/// The publishes that can go in: a publish repeating an artifact or delivery id of an earlier
/// one in the batch, or a delivery id twice, is refused.
fn screen_publishes(ops: &mut [Op]) -> Vec<usize> {
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
                artifacts.extend(artifact.as_ref().map(|a| a.id));
                deliveries.extend(new.iter().map(|d| d.id));
                accepted.push(index);
            }
        }
    }
    accepted
}

/// The deliveries a claim leased, earliest due first, from the rows it found (each with the due
/// time it had); a row that does not decode is logged and left out (it stays claimed until its
/// lease expires).
pub(crate) fn claimed(
    rows: Vec<Result<(OffsetDateTime, ClaimFields), sqlx::Error>>,
    claim: &Claim,
) -> Vec<ClaimedDelivery> {
    let mut claimed: Vec<(OffsetDateTime, ClaimedDelivery)> = Vec::with_capacity(rows.len());
    for row in rows {
        match row.and_then(|(due, fields)| Ok((due, fields.delivery()?))) {
            Ok((due, (delivery, attempt, round_attempt))) => claimed.push((
                due,
                ClaimedDelivery {
                    lease: Lease {
                        delivery_id: delivery.id,
                        token: claim.token.unsigned_abs(),
                        expires_at: claim.expires_at,
                    },
                    delivery: Arc::new(delivery),
                    attempt,
                    round_attempt,
                },
            )),
            Err(e) => {
                error!(error = %e, "a claimed delivery cannot be read; it is left claimed until its lease expires");
            }
        }
    }
    claimed.sort_by_key(|(due, c)| (*due, c.delivery.id));
    claimed.into_iter().map(|(_, c)| c).collect()
}

/// `at + duration`, saturating instead of overflowing.
fn add(at: OffsetDateTime, duration: Duration) -> OffsetDateTime {
    time::Duration::try_from(duration)
        .ok()
        .and_then(|d| at.checked_add(d))
        .unwrap_or(time::PrimitiveDateTime::MAX.assume_utc())
}
