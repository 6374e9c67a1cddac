//! The outbox: where deliveries wait until they are due, are claimed with a lease, and keep
//! their attempts. A trait for every backend, and the types it speaks in.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flock_models::{NewDelivery, TenantId};
use flock_retry::{GiveUp, Outcome};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not delivered yet: waiting for its first attempt or a retry, or being attempted.
    Pending,
    /// A receiver answered 2xx.
    Delivered,
    /// Given up; [`DeliveryView::failure`] says why.
    Failed,
}

impl DeliveryState {
    /// The state as its snake-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }
}

/// The name of why a delivery failed, as it is stored, shown and logged: `exhausted`, `gone`,
/// `blocked` or `destination_unavailable`. (`flock-retry` has no names of its own; they are
/// the outbox's.)
pub fn failure_name(reason: GiveUp) -> &'static str {
    match reason {
        GiveUp::Exhausted => "exhausted",
        GiveUp::Gone => "gone",
        GiveUp::Blocked => "blocked",
        GiveUp::DestinationUnavailable => "destination_unavailable",
    }
}

/// Every reason a delivery can fail for, in the order [`failure_name`] lists them.
pub const FAILURE_REASONS: [GiveUp; 4] = [
    GiveUp::Exhausted,
    GiveUp::Gone,
    GiveUp::Blocked,
    GiveUp::DestinationUnavailable,
];

/// The reason named `name` by [`failure_name`]; `None` for any other text.
pub fn failure_from_name(name: &str) -> Option<GiveUp> {
    FAILURE_REASONS
        .into_iter()
        .find(|reason| failure_name(*reason) == name)
}

/// Why a pending delivery waits with no due time: it is *held*. A held delivery spends no
/// attempt and holds no dispatcher slot; something lets it go (*releases* it) when the reason
/// has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldReason {
    /// An ordered delivery behind an earlier pending one of its webhook; released by that
    /// one's final result.
    Ordered,
    /// Its destination had as many deliveries in flight as it may; released when one of them
    /// finishes.
    Capacity,
    /// Its destination's circuit breaker is open; released by the breaker's probe, one at a
    /// time, then all once a probe succeeded.
    Breaker,
    /// Its destination is paused, by a `Retry-After` or by its rate limit; released when the
    /// pause ends.
    Paused,
}

impl HoldReason {
    /// Every reason, in the order of their declaration.
    pub const ALL: [HoldReason; 4] = [
        HoldReason::Ordered,
        HoldReason::Capacity,
        HoldReason::Breaker,
        HoldReason::Paused,
    ];

    /// The reasons a destination holds deliveries for (every one but [`HoldReason::Ordered`]):
    /// those [`Outbox::release`] lets go and [`Outbox::expire_holds`] fails.
    pub const DESTINATION: [HoldReason; 3] = [
        HoldReason::Capacity,
        HoldReason::Breaker,
        HoldReason::Paused,
    ];

    /// The reason as its snake-case name, as stored, shown, logged and counted.
    pub fn as_str(self) -> &'static str {
        match self {
            HoldReason::Ordered => "ordered",
            HoldReason::Capacity => "capacity",
            HoldReason::Breaker => "breaker",
            HoldReason::Paused => "paused",
        }
    }

    /// The reason named `name` by [`HoldReason::as_str`]; `None` for any other text.
    pub fn from_name(name: &str) -> Option<HoldReason> {
        HoldReason::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

/// The deliveries a destination holds ([`HoldReason::DESTINATION`]), as [`Outbox::held`]
/// counts them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldDeliveries {
    /// The destination, `scheme://host[:port]`
    /// ([`Destination`](flock_models::Destination)'s text).
    pub destination: String,
    /// How many it holds.
    pub held: u64,
    /// Since when its longest-held delivery is held.
    #[serde(with = "flock_models::timestamp::micros")]
    pub oldest: OffsetDateTime,
}

/// What went wrong in an attempt that did not deliver: the attempt log's and the metrics' view
/// of its [`Outcome`] ([`ErrorKind::of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The receiver answered with a status other than 2xx.
    HttpStatus,
    /// No connection could be made (refused, reset, name not found).
    Connect,
    /// The attempt took longer than its timeout.
    Timeout,
    /// The SSRF guard refused the destination address.
    Blocked,
    /// Any other failure (for example a broken response).
    Other,
}

impl ErrorKind {
    /// Every kind, in the order of their declaration.
    pub const ALL: [ErrorKind; 5] = [
        ErrorKind::HttpStatus,
        ErrorKind::Connect,
        ErrorKind::Timeout,
        ErrorKind::Blocked,
        ErrorKind::Other,
    ];

    /// What went wrong in an attempt that came to `outcome`; `None` for a 2xx.
    pub fn of(outcome: &Outcome) -> Option<ErrorKind> {
        match outcome {
            _ if outcome.is_success() => None,
            Outcome::Status { .. } => Some(ErrorKind::HttpStatus),
            Outcome::ConnectError => Some(ErrorKind::Connect),
            Outcome::Timeout => Some(ErrorKind::Timeout),
            Outcome::Blocked => Some(ErrorKind::Blocked),
            Outcome::OtherError => Some(ErrorKind::Other),
        }
    }

    /// The kind as its snake-case name, for storage, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::HttpStatus => "http_status",
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Blocked => "blocked",
            ErrorKind::Other => "other",
        }
    }

    /// The kind named `name` by [`ErrorKind::as_str`]; `None` for any other text.
    pub fn from_name(name: &str) -> Option<ErrorKind> {
        ErrorKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }
}

/// One attempt of a delivery, as recorded and as listed. It never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptView {
    /// 1 for the first attempt, then 2, 3, ...
    pub number: u32,
    /// When the attempt started (UTC, microseconds).
    #[serde(with = "flock_models::timestamp::micros")]
    pub started_at: OffsetDateTime,
    /// The receiver's status code, if it answered.
    pub status_code: Option<u16>,
    /// What went wrong; `None` for a 2xx.
    pub error_kind: Option<ErrorKind>,
    /// What went wrong, in words (at most [`MAX_ERROR_CHARS`] characters); `None` for a 2xx.
    pub error: Option<String>,
    /// How long the attempt took, in whole milliseconds.
    pub duration_ms: u64,
}

impl AttemptView {
    /// The record of attempt `number`, started at `started_at`, that came to `outcome` after
    /// `duration_ms`; `error` says in words what went wrong (`None` for a 2xx). The status code
    /// and the error kind are read off the outcome.
    pub fn new(
        number: u32,
        started_at: OffsetDateTime,
        outcome: &Outcome,
        error: Option<String>,
        duration_ms: u64,
    ) -> Self {
        AttemptView {
            number,
            started_at,
            status_code: outcome.status_code(),
            error_kind: ErrorKind::of(outcome),
            error,
            duration_ms,
        }
    }
}

/// The longest error message kept with an attempt, in characters.
pub const MAX_ERROR_CHARS: usize = 512;

/// A delivery with its attempts, as the API lists it. It never holds the secret or the body,
/// and its URL is shown without query or fragment (which may carry tokens).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryView {
    /// The delivery id, sent as `webhook-id`.
    pub id: Uuid,
    /// The workflow.
    pub correlation_id: Uuid,
    /// The tenant that owns it. Not shown: the API answers a delivery only to its own tenant.
    #[serde(skip, default = "TenantId::default_tenant")]
    pub tenant: TenantId,
    /// The artifact it announces.
    pub artifact_id: Uuid,
    /// The artifact's number in its workflow.
    pub sequence: u64,
    /// The receiver, without query or fragment.
    pub url: String,
    /// Where it stands.
    pub state: DeliveryState,
    /// Why it failed, when it has (shown by [`failure_name`]).
    #[serde(with = "opt_failure")]
    pub failure: Option<GiveUp>,
    /// Its attempts, oldest first.
    pub attempts: Vec<AttemptView>,
    /// When the next attempt is due, while it is waiting for one.
    #[serde(with = "opt_micros")]
    pub next_attempt_at: Option<OffsetDateTime>,
    /// When it was enqueued.
    #[serde(with = "flock_models::timestamp::micros")]
    pub created_at: OffsetDateTime,
    /// When it was delivered or given up.
    #[serde(with = "opt_micros")]
    pub completed_at: Option<OffsetDateTime>,
    /// Which of the workflow's webhooks it goes to: the index in the publish request's
    /// `webhooks` (0 for a single webhook).
    pub webhook: u8,
    /// Whether its webhook is ordered.
    pub ordered: bool,
    /// The names of its webhook's custom headers; their values are never shown.
    pub headers: Vec<String>,
    /// Why it waits with no due time, while it is held.
    pub held: Option<HoldReason>,
    /// Since when it is held, while it is.
    #[serde(with = "opt_micros")]
    pub held_since: Option<OffsetDateTime>,
}

/// `Option<GiveUp>` as its [`failure_name`] or `null`.
mod opt_failure {
    use flock_retry::GiveUp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        reason: &Option<GiveUp>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match reason {
            Some(reason) => s.serialize_str(super::failure_name(*reason)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<GiveUp>, D::Error> {
        Option::<std::borrow::Cow<'de, str>>::deserialize(d)?
            .map(|name| {
                super::failure_from_name(&name).ok_or_else(|| {
                    serde::de::Error::custom(format!("unknown failure reason `{name}`"))
                })
            })
            .transpose()
    }
}

/// `Option<OffsetDateTime>` as a microsecond timestamp or `null`.
mod opt_micros {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;

    pub(super) fn serialize<S: Serializer>(
        at: &Option<OffsetDateTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => s.serialize_str(&flock_models::timestamp::format_micros(*at)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        Option::<std::borrow::Cow<'de, str>>::deserialize(d)?
            .map(|text| flock_models::timestamp::parse(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// What [`Outbox::failed`] selects: a tenant's failed deliveries that failed (were given up)
/// in a window, optionally of one workflow or one destination, at most `limit` of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedQuery {
    /// Whose deliveries.
    pub tenant: TenantId,
    /// Failed at or after this time (`completed_at`).
    pub since: OffsetDateTime,
    /// Failed at or before this time, when given.
    pub until: Option<OffsetDateTime>,
    /// Only deliveries to this URL as [`DeliveryView::url`] shows it (without query or
    /// fragment), when given.
    pub destination: Option<String>,
    /// Only this workflow's, when given.
    pub correlation_id: Option<Uuid>,
    /// The most deliveries answered.
    pub limit: usize,
}

impl FailedQuery {
    /// Whether `view` is one this query selects (any number of them: `limit` aside).
    pub fn matches(&self, view: &DeliveryView) -> bool {
        view.state == DeliveryState::Failed
            && view.tenant == self.tenant
            && view
                .completed_at
                .is_some_and(|at| at >= self.since && self.until.is_none_or(|until| at <= until))
            && self
                .correlation_id
                .is_none_or(|id| id == view.correlation_id)
            && self.destination.as_ref().is_none_or(|url| *url == view.url)
    }
}

/// A claim on a delivery: who holds it (an opaque token, unique per claim) and until when.
/// Only the holder of the current lease can record the attempt's result; once the lease has
/// expired the delivery can be claimed again, and a late result from the old lease is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    /// The claimed delivery.
    pub delivery_id: Uuid,
    /// The claim's token.
    pub token: u64,
    /// When the claim lapses.
    pub expires_at: OffsetDateTime,
    /// Whether the delivery is ordered: recording its final result (delivered or failed) lets
    /// the next delivery of its webhook go.
    pub ordered: bool,
}

/// A delivery claimed for one attempt.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    /// The delivery, with its body and secret.
    pub delivery: Arc<NewDelivery>,
    /// The number this attempt will have (1 for the first); it keeps counting up across
    /// redeliveries.
    pub attempt: u32,
    /// The attempt's number since the delivery was last queued (1 for the first attempt after
    /// enqueueing or after a [redelivery](Outbox::redeliver)): the number the retry policy
    /// counts, so a redelivered delivery gets a fresh retry budget. Equal to `attempt` for a
    /// delivery that was never redelivered.
    pub round_attempt: u32,
    /// The claim.
    pub lease: Lease,
}

/// What an attempt's result means for its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Delivered: done.
    Delivered,
    /// Try again at this time.
    RetryAt(OffsetDateTime),
    /// Given up, for this reason.
    Failed(GiveUp),
}

/// How many deliveries an outbox holds that are not done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxCounts {
    /// Waiting for their first attempt or a retry.
    pub pending: u64,
    /// Claimed for an attempt right now (with a durable store, also those written leased for
    /// the publishing process's dispatcher that it has not started yet).
    pub in_flight: u64,
}

/// What [`Outbox::record_and_claim`] did: the record's result and the claim's.
#[derive(Debug)]
pub struct RecordedAndClaimed {
    /// As [`Outbox::record`] answers.
    pub recorded: Result<(), OutboxError>,
    /// As [`Outbox::claim`] answers.
    pub claimed: Result<Vec<ClaimedDelivery>, OutboxError>,
}

/// Why an outbox could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OutboxError {
    /// The lease is no longer the delivery's current claim (it expired and the delivery was
    /// claimed again, or the delivery is already done); the result was not recorded.
    #[error("the lease on delivery {0} is no longer current; the result was not recorded")]
    LeaseLost(Uuid),
    /// No delivery has this id.
    #[error("no delivery {0} in the outbox")]
    UnknownDelivery(Uuid),
    /// A delivery with this id is already in the outbox.
    #[error("delivery {0} is already in the outbox")]
    Duplicate(Uuid),
    /// Only a failed delivery can be redelivered; this one is pending or was delivered.
    #[error("delivery {id} is {state}; only a failed delivery can be redelivered", state = .state.as_str())]
    NotRedeliverable {
        /// The delivery.
        id: Uuid,
        /// Where it stands.
        state: DeliveryState,
    },
    /// The backend failed: `message` says what failed, `source` (when there is one) is the
    /// backend's own error, such as the database's. Neither ever holds secrets.
    #[error("outbox backend failed: {message}")]
    Backend {
        /// What failed.
        message: String,
        /// Why: the backend's own error.
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
}

impl OutboxError {
    /// A backend failure with no error of its own behind it.
    pub fn backend(message: impl Into<String>) -> OutboxError {
        OutboxError::Backend {
            message: message.into(),
            source: None,
        }
    }
}

/// Two errors are equal when they say the same; the sources of backend failures are not
/// compared.
impl PartialEq for OutboxError {
    fn eq(&self, other: &Self) -> bool {
        use OutboxError::{Backend, Duplicate, LeaseLost, NotRedeliverable, UnknownDelivery};
        match (self, other) {
            (LeaseLost(a), LeaseLost(b))
            | (UnknownDelivery(a), UnknownDelivery(b))
            | (Duplicate(a), Duplicate(b)) => a == b,
            (
                NotRedeliverable { id, state },
                NotRedeliverable {
                    id: other_id,
                    state: other_state,
                },
            ) => id == other_id && state == other_state,
            (Backend { message, .. }, Backend { message: other, .. }) => message == other,
            (
                LeaseLost(_)
                | UnknownDelivery(_)
                | Duplicate(_)
                | NotRedeliverable { .. }
                | Backend { .. },
                _,
            ) => false,
        }
    }
}

impl Eq for OutboxError {}

/// Where deliveries wait for their attempts.
///
/// Every delivery has a due time and, while claimed, a lease. Nothing here relies on a single
/// process: a durable backend claims with row locks and leases, so several dispatchers can
/// share one outbox and a dispatcher that dies leaves work that is claimed again once its
/// leases expire.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Adds deliveries, due at once. Never waits for HTTP.
    ///
    /// # Errors
    /// [`OutboxError::Duplicate`] for an id already present (nothing is added);
    /// [`OutboxError::Backend`] when the backend fails.
    async fn enqueue(&self, deliveries: Vec<NewDelivery>) -> Result<(), OutboxError>;

    /// Claims up to `limit` deliveries due at `now` (or whose lease expired by then), each with
    /// a lease of `lease_for`, earliest due first.
    ///
    /// # Errors
    /// [`OutboxError::Backend`] when the backend fails.
    async fn claim(
        &self,
        now: OffsetDateTime,
        limit: usize,
        lease_for: Duration,
    ) -> Result<Vec<ClaimedDelivery>, OutboxError>;

    /// Claims as [`Outbox::claim`] does, but none of the deliveries to the destinations `past`
    /// ([`Destination`](flock_models::Destination)'s text): a dispatcher looks past the
    /// backlogs of destinations at their cap for other destinations' work, without leasing
    /// (and then holding) their deliveries.
    ///
    /// With `since`, only deliveries due at or after it need be looked at: the dispatcher asks
    /// for those that came due since its last look, and now and then for all. An outbox may
    /// answer more (it must not answer one due after `now`), and the default answers what
    /// [`Outbox::claim`] does, `past`'s deliveries too: the dispatcher then holds what it cannot
    /// start, as it does with any claim.
    ///
    /// # Errors
    /// [`OutboxError::Backend`] when the backend fails.
    async fn claim_past(
        &self,
        now: OffsetDateTime,
        limit: usize,
        lease_for: Duration,
        past: &[String],
        since: Option<OffsetDateTime>,
    ) -> Result<Vec<ClaimedDelivery>, OutboxError> {
        let _ = (past, since);
        self.claim(now, limit, lease_for).await
    }

    /// Records an attempt made under `lease` and what follows from it, releasing the lease.
    ///
    /// # Errors
    /// [`OutboxError::LeaseLost`] when `lease` is not the delivery's current claim (nothing is
    /// recorded); [`OutboxError::UnknownDelivery`]; [`OutboxError::Backend`].
    async fn record(
        &self,
        lease: &Lease,
        attempt: AttemptView,
        resolution: Resolution,
    ) -> Result<(), OutboxError>;

    /// Records an attempt as [`Outbox::record`] does, then claims up to `limit` deliveries due
    /// at `now` as [`Outbox::claim`] does: a dispatcher's attempt slot hands in its result and
    /// takes its next delivery in one call. The default makes the two calls in turn; a durable
    /// outbox does both in one write. The claim happens whatever the record's result.
    async fn record_and_claim(
        &self,
        lease: &Lease,
        attempt: AttemptView,
        resolution: Resolution,
        now: OffsetDateTime,
        limit: usize,
        lease_for: Duration,
    ) -> RecordedAndClaimed {
        let recorded = self.record(lease, attempt, resolution).await;
        let claimed = self.claim(now, limit, lease_for).await;
        RecordedAndClaimed { recorded, claimed }
    }

    /// The deliveries of workflow `correlation_id` with their attempts, by sequence.
    ///
    /// # Errors
    /// [`OutboxError::Backend`] when the backend fails.
    async fn deliveries(&self, correlation_id: Uuid) -> Result<Vec<DeliveryView>, OutboxError>;

    /// One delivery with its attempts.
    ///
    /// # Errors
    /// [`OutboxError::Backend`] when the backend fails.
    async fn delivery(&self, id: Uuid) -> Result<Option<DeliveryView>, OutboxError>;

    /// When the next delivery falls due (or a lease expires), if any is waiting.
    ///
    /// # Errors
    /// [`OutboxError::Backend`] when the backend fails.
    async fn next_due(&self) -> Result<Option<OffsetDateTime>, OutboxError>;

    /// How many deliveries are pending and in flight.
    ///
    /// # Errors
    /// [`OutboxError::Backend`] when the backend fails.
    async fn counts(&self) -> Result<OutboxCounts, OutboxError>;

    /// How many deliveries each tenant has pending (waiting or in flight); tenants with none
    /// are left out.
    ///
    /// # Errors
    /// [`OutboxError::Backend`] when the backend fails.
    async fn pending_by_tenant(&self) -> Result<Vec<(TenantId, u64)>, OutboxError>;

    /// The failed deliveries `query` selects, with their attempts, the most recently failed
    /// first (by `completed_at`, then id), at most `query.limit` of them.
    ///
    /// # Errors
    /// [`OutboxError::Backend`] when the backend fails.
    async fn failed(&self, query: &FailedQuery) -> Result<Vec<DeliveryView>, OutboxError>;

    /// Queues a failed delivery again, due at `now`: the same delivery (same id, so the same
    /// `webhook-id`, body and secret) gets new attempts whose numbers continue after the old
    /// ones, which stay listed; the retry budget starts afresh
    /// ([`ClaimedDelivery::round_attempt`]).
    ///
    /// # Errors
    /// [`OutboxError::UnknownDelivery`] (never enqueued, or pruned);
    /// [`OutboxError::NotRedeliverable`] when it is pending (it is attempted again by itself)
    /// or was delivered (the receiver has it); [`OutboxError::Backend`].
    async fn redeliver(&self, id: Uuid, now: OffsetDateTime) -> Result<(), OutboxError>;

    /// Holds the deliveries claimed under `leases` for `reason` (never
    /// [`HoldReason::Ordered`], which only a claim sets): each loses its lease and its due
    /// time, spends no attempt, and waits until [`Outbox::release`] or
    /// [`Outbox::expire_holds`] takes it. Answers how many were held: a lease that is no longer current holds nothing.
    ///
    /// # Errors
    /// [`OutboxError::Backend`] when the backend fails.
    async fn hold(
        &self,
        leases: &[Lease],
        reason: HoldReason,
        now: OffsetDateTime,
    ) -> Result<u64, OutboxError>;

    /// Lets up to `limit` of the deliveries `destination` holds go, the longest held first,
    /// due at `now` and no longer held (held again later, a delivery is held from then);
    /// answers how many it let go. Ordered deliveries parked behind an earlier
    /// one of their webhook are not the destination's to let go.
    ///
    /// # Errors
    /// [`OutboxError::Backend`] when the backend fails.
    async fn release(
        &self,
        destination: &str,
        limit: usize,
        now: OffsetDateTime,
    ) -> Result<u64, OutboxError>;

    /// Fails up to `limit` deliveries held by their destination since before `held_before`,
    /// as [`GiveUp::DestinationUnavailable`] completed at `now` (each can be redelivered), and
    /// lets the next delivery of an ordered webhook go; answers how many failed.
    ///
    /// # Errors
    /// [`OutboxError::Backend`] when the backend fails.
    async fn expire_holds(
        &self,
        held_before: OffsetDateTime,
        now: OffsetDateTime,
        limit: usize,
    ) -> Result<u64, OutboxError>;

    /// The destinations that hold deliveries, with how many and since when, of `tenant`'s
    /// deliveries only when given, at most `limit` destinations (those holding the most).
    ///
    /// # Errors
    /// [`OutboxError::Backend`] when the backend fails.
    async fn held(
        &self,
        tenant: Option<&TenantId>,
        limit: usize,
    ) -> Result<Vec<HeldDeliveries>, OutboxError>;

    /// Deletes delivered and failed deliveries that were completed before `completed_before`,
    /// with their attempts, and returns how many it deleted. Pending ones are never deleted.
    ///
    /// # Errors
    /// [`OutboxError::Backend`] when the backend fails.
    async fn prune(&self, completed_before: OffsetDateTime) -> Result<u64, OutboxError>;

    /// Deletes finished workflows: those whose newest artifact was created before
    /// `finished_before` and that have no pending delivery, with their artifacts, deliveries
    /// and attempts; answers how many workflows went. An outbox that keeps no artifacts
    /// ([`MemoryOutbox`](crate::MemoryOutbox) alone) has no workflows to prune.
    ///
    /// # Errors
    /// [`OutboxError::Backend`] when the backend fails.
    async fn prune_workflows(&self, finished_before: OffsetDateTime) -> Result<u64, OutboxError>;

    /// Completes when deliveries may have been enqueued (or rescheduled) since it last
    /// completed: a hint that lets the dispatcher sleep until work arrives. It may complete
    /// spuriously. The default never completes; the dispatcher then relies on polling.
    async fn enqueued(&self) {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn an_outcome_names_its_error_kind_as_attempts_and_metrics_always_did() {
        let status = |code| Outcome::Status {
            code,
            retry_after: None,
        };
        let cases = [
            (status(200), None),
            (status(204), None),
            (status(301), Some("http_status")),
            (status(410), Some("http_status")),
            (
                Outcome::Status {
                    code: 503,
                    retry_after: Some(Duration::from_secs(5)),
                },
                Some("http_status"),
            ),
            (Outcome::ConnectError, Some("connect")),
            (Outcome::Timeout, Some("timeout")),
            (Outcome::Blocked, Some("blocked")),
            (Outcome::OtherError, Some("other")),
        ];
        for (outcome, name) in cases {
            let kind = ErrorKind::of(&outcome);
            assert_eq!(kind.map(ErrorKind::as_str), name, "{outcome:?}");
            if let Some(kind) = kind {
                assert_eq!(ErrorKind::from_name(kind.as_str()), Some(kind));
                // The serde name is the same word.
                assert_eq!(
                    serde_json::to_value(kind).unwrap(),
                    serde_json::Value::from(kind.as_str())
                );
            }
        }
        assert_eq!(ErrorKind::from_name("signing"), None);
    }

    #[test]
    fn failure_reasons_have_the_names_they_always_had() {
        for (reason, name) in [
            (GiveUp::Exhausted, "exhausted"),
            (GiveUp::Gone, "gone"),
            (GiveUp::Blocked, "blocked"),
            (GiveUp::DestinationUnavailable, "destination_unavailable"),
        ] {
            assert_eq!(failure_name(reason), name);
            assert_eq!(failure_from_name(name), Some(reason));
        }
        assert_eq!(failure_from_name("invalid_secret"), None);
        assert_eq!(failure_from_name("Gone"), None);
    }

    #[test]
    fn a_view_shows_its_failure_by_name() {
        let at = OffsetDateTime::UNIX_EPOCH;
        let view = DeliveryView {
            id: Uuid::nil(),
            correlation_id: Uuid::nil(),
            tenant: TenantId::default_tenant(),
            artifact_id: Uuid::nil(),
            sequence: 1,
            url: "https://example.com/hook".to_owned(),
            state: DeliveryState::Failed,
            failure: Some(GiveUp::Gone),
            attempts: vec![AttemptView::new(
                1,
                at,
                &Outcome::Status {
                    code: 410,
                    retry_after: None,
                },
                Some("the receiver answered 410 Gone".to_owned()),
                3,
            )],
            next_attempt_at: None,
            created_at: at,
            completed_at: Some(at),
            webhook: 0,
            ordered: false,
            headers: Vec::new(),
            held: None,
            held_since: None,
        };
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["failure"], "gone");
        assert_eq!(json["attempts"][0]["status_code"], 410);
        assert_eq!(json["attempts"][0]["error_kind"], "http_status");
        let back: DeliveryView = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, view);

        let mut unknown = json;
        unknown["failure"] = serde_json::Value::from("bored");
        let err = serde_json::from_value::<DeliveryView>(unknown).unwrap_err();
        assert!(
            err.to_string().contains("unknown failure reason `bored`"),
            "{err}"
        );
        let mut pending = serde_json::to_value(&view).unwrap();
        pending["failure"] = serde_json::Value::Null;
        assert_eq!(
            serde_json::from_value::<DeliveryView>(pending)
                .unwrap()
                .failure,
            None
        );
    }
}
