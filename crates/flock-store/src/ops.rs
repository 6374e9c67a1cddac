//! The write operations that go through the group-commit writer, their outcomes, and how those
//! map to the errors of the store and outbox traits.

use std::time::Duration;

use flock_delivery::{
    AttemptView, ClaimedDelivery, DeliveryState, HoldReason, Lease, OutboxError, Resolution,
};
use flock_models::NewDelivery;
use flock_orchestrator::StoreError;
use time::OffsetDateTime;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::error::Failure;
use crate::sql::rows::ArtifactFields;

/// What a write asks for.
pub(crate) enum Input {
    /// Artifacts (none for a bare enqueue) with their deliveries, all or nothing. With
    /// `lease_for`, the deliveries that can go at once (not ordered) are written leased for
    /// that long and answered as [`Done::Published`]: this process's dispatcher takes them
    /// without a claim.
    Publish {
        artifacts: Vec<ArtifactFields>,
        deliveries: Vec<NewDelivery>,
        lease_for: Option<Duration>,
    },
    /// Due deliveries, leased.
    Claim(ClaimRequest),
    /// Due deliveries to any destination but those of `past`, due at or after `since`, leased
    /// (`Outbox::claim_past`).
    ClaimPast {
        request: ClaimRequest,
        past: Vec<String>,
        since: Option<OffsetDateTime>,
    },
    /// An attempt's result under a lease, and maybe a claim right after it.
    Record {
        lease: Lease,
        attempt: AttemptView,
        resolution: Resolution,
        then_claim: Option<ClaimRequest>,
    },
    /// A failed delivery, queued again.
    Redeliver { id: Uuid, now: OffsetDateTime },
    /// At most `limit` done deliveries completed before `before`, deleted.
    Prune { before: OffsetDateTime, limit: u64 },
    /// Workflows finished before `before`, at most `limit` of them, deleted with their
    /// artifacts, deliveries and attempts.
    PruneWorkflows { before: OffsetDateTime, limit: u64 },
    /// The deliveries claimed under `leases`, held by their destination for `reason` since
    /// `now`: no lease, no due time, no attempt spent.
    Hold {
        leases: Vec<Lease>,
        reason: HoldReason,
        now: OffsetDateTime,
    },
    /// The longest-held `limit` of the deliveries `destination` holds, let go, due at `now`.
    Release {
        destination: String,
        limit: usize,
        now: OffsetDateTime,
    },
    /// Up to `limit` deliveries held by their destination since before `held_before`, failed
    /// as `destination_unavailable` at `now`; each ordered one lets the next of its webhook go.
    ExpireHolds {
        held_before: OffsetDateTime,
        now: OffsetDateTime,
        limit: usize,
    },
}

impl Input {
    /// Whether this write, once done, may give the dispatcher something to do.
    fn wakes_dispatcher(&self) -> bool {
        match self {
            Input::Publish { deliveries, .. } => !deliveries.is_empty(),
            // An ordered delivery's final result releases the next of its webhook.
            Input::Record {
                resolution, lease, ..
            } => lease.ordered || matches!(resolution, Resolution::RetryAt(_)),
            Input::Redeliver { .. } => true,
            // Whether they did depends on what they found ([`Done::Moved`]).
            Input::Claim(_)
            | Input::ClaimPast { .. }
            | Input::Prune { .. }
            | Input::PruneWorkflows { .. }
            | Input::Hold { .. }
            | Input::Release { .. }
            | Input::ExpireHolds { .. } => false,
        }
    }

    /// Whether this write is applied after the batch statement, in the batch's transaction
    /// (rather than as part of that statement).
    pub(crate) fn is_rare(&self) -> bool {
        matches!(
            self,
            Input::Redeliver { .. }
                | Input::ClaimPast { .. }
                | Input::Prune { .. }
                | Input::PruneWorkflows { .. }
                | Input::Hold { .. }
                | Input::Release { .. }
                | Input::ExpireHolds { .. }
        )
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Input::Publish { .. } => "publish",
            Input::Claim(_) => "claim",
            Input::ClaimPast { .. } => "claim past destinations",
            Input::Record { .. } => "record",
            Input::Redeliver { .. } => "redeliver",
            Input::Prune { .. } => "prune",
            Input::PruneWorkflows { .. } => "workflow prune",
            Input::Hold { .. } => "hold",
            Input::Release { .. } => "release",
            Input::ExpireHolds { .. } => "expiry of holds",
        }
    }

    /// The ordered delivery this write records a final result for (delivered or failed):
    /// the next delivery of its webhook may go.
    pub(crate) fn releases(&self) -> Option<Uuid> {
        match self {
            Input::Record {
                lease, resolution, ..
            } if lease.ordered && !matches!(resolution, Resolution::RetryAt(_)) => {
                Some(lease.delivery_id)
            }
            _ => None,
        }
    }

    /// How long this write's new deliveries are to be leased at insert, if at all.
    pub(crate) fn lease_for(&self) -> Option<Duration> {
        match self {
            Input::Publish { lease_for, .. } => *lease_for,
            _ => None,
        }
    }

    /// The claim this write makes, alone or after its record.
    pub(crate) fn claim(&self) -> Option<ClaimRequest> {
        match self {
            Input::Claim(request) => Some(*request),
            Input::Record { then_claim, .. } => *then_claim,
            _ => None,
        }
    }
}

/// Up to `limit` deliveries due at `now` (or whose lease expired by then), leased for
/// `lease_for`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClaimRequest {
    pub(crate) now: OffsetDateTime,
    pub(crate) limit: usize,
    pub(crate) lease_for: Duration,
}

/// What a write did.
#[derive(Debug)]
pub(crate) enum Done {
    /// A publish stored, a record applied or a delivery queued again.
    Applied,
    /// A publish stored, with the deliveries it leased at insert ([`Input::Publish`]).
    Published(Vec<ClaimedDelivery>),
    Claimed(Vec<ClaimedDelivery>),
    /// A record (applied or refused) and the claim after it.
    RecordedThenClaimed {
        recorded: Result<(), Refusal>,
        claimed: Vec<ClaimedDelivery>,
    },
    Pruned(u64),
    /// Deliveries held, released or failed by their destination's holds: how many, and
    /// whether that gave the dispatcher something to do (deliveries due again).
    Moved {
        count: u64,
        wakes: bool,
    },
}

impl Done {
    /// `Some` for a write that answers only that it was done.
    pub(crate) fn applied(self) -> Option<()> {
        matches!(self, Done::Applied).then_some(())
    }

    /// `Some` count for a hold, release or expiry.
    pub(crate) fn moved(self) -> Option<u64> {
        match self {
            Done::Moved { count, .. } => Some(count),
            _ => None,
        }
    }

    /// Whether what this write did, found when it was applied, gives the dispatcher something
    /// to do.
    fn wakes_dispatcher(&self) -> bool {
        matches!(self, Done::Moved { wakes: true, .. })
    }
}

/// A write refused for a reason of its own; nothing of it was written, and the rest of its
/// batch is unaffected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    DuplicateArtifact(Uuid),
    DuplicateDelivery(Uuid),
    LeaseLost(Uuid),
    UnknownDelivery(Uuid),
    NotRedeliverable(Uuid, DeliveryState),
}

/// Why a write did not happen.
#[derive(Debug, Clone)]
pub(crate) enum OpError {
    Refused(Refusal),
    /// The database failed.
    Backend(Failure),
}

impl From<Failure> for OpError {
    fn from(failure: Failure) -> Self {
        OpError::Backend(failure)
    }
}

impl From<Refusal> for OutboxError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::DuplicateArtifact(id) => {
                OutboxError::backend(format!("artifact {id} is already stored"))
            }
            Refusal::DuplicateDelivery(id) => OutboxError::Duplicate(id),
            Refusal::LeaseLost(id) => OutboxError::LeaseLost(id),
            Refusal::UnknownDelivery(id) => OutboxError::UnknownDelivery(id),
            Refusal::NotRedeliverable(id, state) => OutboxError::NotRedeliverable { id, state },
        }
    }
}

impl From<OpError> for StoreError {
    fn from(err: OpError) -> Self {
        match err {
            OpError::Refused(Refusal::DuplicateArtifact(id)) => StoreError::Duplicate(id),
            OpError::Refused(other) => StoreError::backend_because(
                "the artifact's deliveries cannot be enqueued",
                OutboxError::from(other),
            ),
            OpError::Backend(failure) => failure.into(),
        }
    }
}

impl From<OpError> for OutboxError {
    fn from(err: OpError) -> Self {
        match err {
            OpError::Refused(refusal) => refusal.into(),
            OpError::Backend(failure) => failure.into(),
        }
    }
}

/// One queued write: its input, its outcome once applied, and who waits for it.
pub(crate) struct Op {
    pub(crate) input: Input,
    /// The outcome, set by the backend while applying a batch.
    pub(crate) outcome: Option<Result<Done, Refusal>>,
    reply: oneshot::Sender<Result<Done, OpError>>,
}

impl Op {
    pub(crate) fn new(input: Input) -> (Op, oneshot::Receiver<Result<Done, OpError>>) {
        let (reply, answer) = oneshot::channel();
        let op = Op {
            input,
            outcome: None,
            reply,
        };
        (op, answer)
    }

    /// Answers the caller after the batch committed; returns whether the dispatcher should
    /// look at the outbox again.
    pub(crate) fn answer_committed(self) -> bool {
        let wakes = self.input.wakes_dispatcher()
            || matches!(&self.outcome, Some(Ok(done)) if done.wakes_dispatcher());
        let answer = match self.outcome {
            Some(outcome) => outcome.map_err(OpError::Refused),
            None => Err(OpError::Backend(Failure::new(format!(
                "the store could not tell the outcome of this {}",
                self.input.kind()
            )))),
        };
        let applied = answer.is_ok();
        // The caller may have given up waiting; that changes nothing that was committed.
        let _ = self.reply.send(answer);
        wakes && applied
    }

    /// Answers the caller with an error: nothing of this write was committed.
    pub(crate) fn fail(self, err: OpError) {
        let _ = self.reply.send(Err(err));
    }
}
