//! Delivery metrics through the `metrics` facade: names, labels, and handles registered once
//! when the dispatcher starts so the hot path does no lookups.

use flock_retry::Outcome;
use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

use crate::gate::BreakerState;
use crate::outbox::{ErrorKind, HoldReason};

/// Counter of deliveries by final outcome, label `outcome` = `delivered` | `failed`.
pub const DELIVERIES_TOTAL: &str = "flock_webhook_deliveries_total";
/// Counter of attempts by result, label `result` = `success` or the error kind of the attempt's
/// outcome (`http_status`, `connect`, `timeout`, `blocked`, `other`).
pub const ATTEMPTS_TOTAL: &str = "flock_webhook_attempts_total";
/// Histogram of seconds from artifact creation to the receiver's 2xx.
pub const DELIVERY_LATENCY_SECONDS: &str = "flock_webhook_delivery_latency_seconds";
/// Gauge of deliveries waiting for an attempt.
pub const DELIVERIES_PENDING: &str = "flock_webhook_deliveries_pending";
/// Gauge of attempts in flight in this dispatcher.
pub const DELIVERIES_IN_FLIGHT: &str = "flock_webhook_deliveries_in_flight";
/// Counter of claimed deliveries held by their destination instead of attempted (postponed),
/// label `reason` = `capacity` | `breaker` | `paused`. No label names a destination: the
/// number of series does not grow with the destinations.
pub const HOLDS_TOTAL: &str = "flock_webhook_holds_total";
/// Counter of circuit breaker transitions, label `to` = `open` | `half_open` | `closed`.
pub const BREAKER_TRANSITIONS_TOTAL: &str = "flock_webhook_breaker_transitions_total";
/// Gauge of deliveries held by their destinations (refreshed by the hold sweep).
pub const DELIVERIES_HELD: &str = "flock_webhook_deliveries_held";
/// Gauge of this dispatcher's breakers that are not closed.
pub const BREAKERS_OPEN: &str = "flock_webhook_breakers_open";

/// Registered handles. Register the recorder before starting the dispatcher: handles taken
/// earlier stay no-ops.
pub(crate) struct Metrics {
    pub(crate) delivered: Counter,
    pub(crate) failed: Counter,
    attempt_success: Counter,
    attempt_http_status: Counter,
    attempt_connect: Counter,
    attempt_timeout: Counter,
    attempt_blocked: Counter,
    attempt_other: Counter,
    pub(crate) latency: Histogram,
    pub(crate) pending: Gauge,
    pub(crate) in_flight: Gauge,
    holds: [Counter; 3],
    transitions: [Counter; 3],
    pub(crate) held: Gauge,
    pub(crate) breakers_open: Gauge,
}

impl Metrics {
    pub(crate) fn register() -> Self {
        let attempts = |result: &'static str| counter!(ATTEMPTS_TOTAL, "result" => result);
        Metrics {
            delivered: counter!(DELIVERIES_TOTAL, "outcome" => "delivered"),
            failed: counter!(DELIVERIES_TOTAL, "outcome" => "failed"),
            attempt_success: attempts("success"),
            attempt_http_status: attempts(ErrorKind::HttpStatus.as_str()),
            attempt_connect: attempts(ErrorKind::Connect.as_str()),
            attempt_timeout: attempts(ErrorKind::Timeout.as_str()),
            attempt_blocked: attempts(ErrorKind::Blocked.as_str()),
            attempt_other: attempts(ErrorKind::Other.as_str()),
            latency: histogram!(DELIVERY_LATENCY_SECONDS),
            pending: gauge!(DELIVERIES_PENDING),
            in_flight: gauge!(DELIVERIES_IN_FLIGHT),
            holds: HoldReason::DESTINATION
                .map(|reason| counter!(HOLDS_TOTAL, "reason" => reason.as_str())),
            transitions: [
                BreakerState::Open,
                BreakerState::HalfOpen,
                BreakerState::Closed,
            ]
            .map(|to| counter!(BREAKER_TRANSITIONS_TOTAL, "to" => to.as_str())),
            held: gauge!(DELIVERIES_HELD),
            breakers_open: gauge!(BREAKERS_OPEN),
        }
    }

    /// Counts `n` deliveries held for `reason`.
    pub(crate) fn held(&self, reason: HoldReason, n: u64) {
        if let Some(i) = HoldReason::DESTINATION.iter().position(|r| *r == reason) {
            self.holds[i].increment(n);
        }
    }

    /// Counts a breaker turning `to`.
    pub(crate) fn transition(&self, to: BreakerState) {
        let i = match to {
            BreakerState::Open => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Closed => 2,
        };
        self.transitions[i].increment(1);
    }

    /// Counts one attempt that came to `outcome`.
    pub(crate) fn attempt(&self, outcome: &Outcome) {
        let counter = match ErrorKind::of(outcome) {
            None => &self.attempt_success,
            Some(ErrorKind::HttpStatus) => &self.attempt_http_status,
            Some(ErrorKind::Connect) => &self.attempt_connect,
            Some(ErrorKind::Timeout) => &self.attempt_timeout,
            Some(ErrorKind::Blocked) => &self.attempt_blocked,
            Some(ErrorKind::Other) => &self.attempt_other,
        };
        counter.increment(1);
    }
}

/// Describes every delivery metric (unit and help text) to the installed recorder; call it once
/// after installing one.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        DELIVERIES_TOTAL,
        Unit::Count,
        "Webhook deliveries by final outcome (delivered or failed)."
    );
    describe_counter!(
        ATTEMPTS_TOTAL,
        Unit::Count,
        "Webhook delivery attempts by result (success or the error kind)."
    );
    describe_histogram!(
        DELIVERY_LATENCY_SECONDS,
        Unit::Seconds,
        "Time from an artifact's creation to its webhook's 2xx answer."
    );
    describe_gauge!(
        DELIVERIES_PENDING,
        Unit::Count,
        "Webhook deliveries waiting for an attempt."
    );
    describe_gauge!(
        DELIVERIES_IN_FLIGHT,
        Unit::Count,
        "Webhook delivery attempts in flight."
    );
    describe_counter!(
        HOLDS_TOTAL,
        Unit::Count,
        "Claimed webhook deliveries held by their destination instead of attempted, by reason."
    );
    describe_counter!(
        BREAKER_TRANSITIONS_TOTAL,
        Unit::Count,
        "Destination circuit breaker transitions, by the state entered."
    );
    describe_gauge!(
        DELIVERIES_HELD,
        Unit::Count,
        "Webhook deliveries held by their destinations."
    );
    describe_gauge!(
        BREAKERS_OPEN,
        Unit::Count,
        "Destination circuit breakers open or half-open in this dispatcher."
    );
}
