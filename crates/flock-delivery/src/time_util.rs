//! Small time helpers: adding std durations to wall-clock times without overflow panics.

use std::time::Duration;

use time::OffsetDateTime;

/// `at + duration`, saturating at the largest representable time instead of panicking.
pub(crate) fn add(at: OffsetDateTime, duration: Duration) -> OffsetDateTime {
    time::Duration::try_from(duration)
        .ok()
        .and_then(|d| at.checked_add(d))
        .unwrap_or(time::PrimitiveDateTime::MAX.assume_utc())
}

/// Whole milliseconds of `duration`, saturating.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// How long from `now` until `at`; zero when `at` has passed.
pub(crate) fn until(at: OffsetDateTime, now: OffsetDateTime) -> Duration {
    Duration::try_from(at - now).unwrap_or(Duration::ZERO)
}
