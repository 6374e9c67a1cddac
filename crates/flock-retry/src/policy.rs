//! The retry policy, attempt outcomes and the decision that joins them.

use std::time::Duration;

/// How often and how long to wait between attempts.
///
/// After failed attempt `n` (1-based) the wait is `base_delay × factor^(n-1)`, spread by
/// `jitter` and capped at `max_delay`; after `max_retries + 1` attempts the delivery has failed.
/// The default gives waits of 1 s, 2 s and 4 s: four attempts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The wait after the first failure.
    pub base_delay: Duration,
    /// How much each wait grows over the one before (at least 1).
    pub factor: u32,
    /// No wait is longer, `Retry-After` included.
    pub max_delay: Duration,
    /// Spread of each wait, a fraction from 0 to 1: a wait `d` becomes uniform in
    /// `[d × (1 - jitter), d × (1 + jitter)]`, still capped at `max_delay`.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_secs(1),
            factor: 2,
            max_delay: Duration::from_secs(300),
            jitter: 0.0,
        }
    }
}

/// A policy that makes no sense.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyError {
    /// `factor` is 0.
    ZeroFactor,
    /// `jitter` is not a number from 0 to 1.
    JitterOutOfRange(f64),
    /// `base_delay` is longer than `max_delay`.
    BaseAboveMax,
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PolicyError::ZeroFactor => f.write_str("factor must be at least 1"),
            PolicyError::JitterOutOfRange(j) => write!(f, "jitter must be from 0 to 1, not {j}"),
            PolicyError::BaseAboveMax => f.write_str("base_delay must not exceed max_delay"),
        }
    }
}

impl std::error::Error for PolicyError {}

/// What one attempt came to, as delivery observed it: the one word for an attempt's result.
/// The retry decision ([`RetryPolicy::decide`]), the reason a delivery failed ([`GiveUp`]) and
/// whatever a caller records or counts about the attempt are derived from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver answered with this status; `retry_after` is its parsed `Retry-After`, if any.
    Status {
        /// The HTTP status code.
        code: u16,
        /// The wait the receiver asked for.
        retry_after: Option<Duration>,
    },
    /// No connection could be made (refused, reset, DNS failure).
    ConnectError,
    /// The attempt took longer than its timeout.
    Timeout,
    /// The SSRF guard refused the destination address.
    Blocked,
    /// Any other transport failure (for example a broken response).
    OtherError,
}

/// When, if ever, a retry makes sense, before counting attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A 2xx: delivered.
    Delivered,
    /// Worth another try, no sooner than `not_before` when the receiver said so.
    Retryable {
        /// The least wait the receiver asked for (`Retry-After` on 429 and 503).
        not_before: Option<Duration>,
    },
    /// Never worth another try.
    Permanent(GiveUp),
}

/// Why a delivery stops without being delivered: the reason a failed delivery keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GiveUp {
    /// The receiver answered 410 Gone.
    Gone,
    /// The SSRF guard refused the address.
    Blocked,
    /// Every attempt the policy allows has failed.
    Exhausted,
    /// The delivery was held, its destination unavailable (an open circuit breaker, a pause or
    /// no free capacity), for longer than the dispatcher allows. The policy never decides
    /// this; the dispatcher's hold sweep does.
    DestinationUnavailable,
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The delivery is done.
    Delivered,
    /// Try again after this wait.
    RetryAfter(Duration),
    /// Stop; the delivery has failed.
    GiveUp(GiveUp),
}

impl Outcome {
    /// The receiver's status code, when it answered.
    pub fn status_code(&self) -> Option<u16> {
        match *self {
            Outcome::Status { code, .. } => Some(code),
            Outcome::ConnectError | Outcome::Timeout | Outcome::Blocked | Outcome::OtherError => {
                None
            }
        }
    }

    /// Whether the receiver answered 2xx: the attempt delivered.
    pub fn is_success(&self) -> bool {
        matches!(
            self,
            Outcome::Status {
                code: 200..=299,
                ..
            }
        )
    }

    /// 2xx delivers; 410 and a blocked address give up; every other status (1xx, 3xx, which are
    /// not followed, 4xx and 5xx), connection errors and timeouts are retryable. `Retry-After`
    /// counts only on 429 and 503.
    pub fn classify(&self) -> Class {
        if self.is_success() {
            return Class::Delivered;
        }
        match *self {
            Outcome::Status { code: 410, .. } => Class::Permanent(GiveUp::Gone),
            Outcome::Status {
                code: 429 | 503,
                retry_after,
            } => Class::Retryable {
                not_before: retry_after,
            },
            Outcome::Status { .. }
            | Outcome::ConnectError
            | Outcome::Timeout
            | Outcome::OtherError => Class::Retryable { not_before: None },
            Outcome::Blocked => Class::Permanent(GiveUp::Blocked),
        }
    }
}

impl RetryPolicy {
    /// Checks the policy's numbers.
    ///
    /// # Errors
    /// A zero factor, a jitter outside 0..=1, or a base delay above the maximum.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.factor == 0 {
            return Err(PolicyError::ZeroFactor);
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(PolicyError::JitterOutOfRange(self.jitter));
        }
        if self.base_delay > self.max_delay {
            return Err(PolicyError::BaseAboveMax);
        }
        Ok(())
    }

    /// How many attempts a delivery gets in all.
    pub fn max_attempts(&self) -> u32 {
        self.max_retries.saturating_add(1)
    }

    /// The wait before retry number `retry` (0 for the first retry), without jitter:
    /// `base_delay × factor^retry`, capped at `max_delay`. Never overflows.
    pub fn backoff(&self, retry: u32) -> Duration {
        let growth = u128::from(self.factor.max(1))
            .checked_pow(retry)
            .unwrap_or(u128::MAX);
        let nanos = self.base_delay.as_nanos().saturating_mul(growth);
        if nanos >= self.max_delay.as_nanos() {
            self.max_delay
        } else {
            // Below max_delay, so it fits a Duration.
            Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
        }
    }

    /// The schedule of waits without jitter, one per retry: 1 s, 2 s, 4 s by default.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + '_ {
        (0..self.max_retries).map(|retry| self.backoff(retry))
    }

    /// `delay` spread by the jitter, where `sample` is a uniform random number in `[0, 1)`
    /// supplied by the caller (this crate has no randomness of its own); capped at `max_delay`.
    pub fn jittered(&self, delay: Duration, sample: f64) -> Duration {
        let jitter = if (0.0..=1.0).contains(&self.jitter) {
            self.jitter
        } else {
            0.0
        };
        if jitter == 0.0 {
            return delay.min(self.max_delay);
        }
        let sample = if (0.0..1.0).contains(&sample) {
            sample
        } else {
            0.5
        };
        let scale = 1.0 - jitter + 2.0 * jitter * sample;
        Duration::try_from_secs_f64(delay.as_secs_f64() * scale)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    /// What to do after attempt number `attempt` (1-based) ended in `outcome`; `sample` feeds
    /// the jitter (see [`RetryPolicy::jittered`]).
    pub fn decide(&self, attempt: u32, outcome: &Outcome, sample: f64) -> Decision {
        match outcome.classify() {
            Class::Delivered => Decision::Delivered,
            Class::Permanent(reason) => Decision::GiveUp(reason),
            Class::Retryable { .. } if attempt >= self.max_attempts() => {
                Decision::GiveUp(GiveUp::Exhausted)
            }
            Class::Retryable { not_before } => {
                let wait = self.jittered(self.backoff(attempt.saturating_sub(1)), sample);
                let wait = not_before.map_or(wait, |asked| wait.max(asked));
                Decision::RetryAfter(wait.min(self.max_delay))
            }
        }
    }
}
