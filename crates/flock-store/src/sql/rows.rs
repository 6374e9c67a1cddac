//! Stored values and the domain types, for both databases: times in whole microseconds, the
//! names of states, failure reasons and error kinds, numbers, and an artifact's columns. A
//! value that does not convert is a [`DecodeError`], never a panic.

use std::fmt;

use flock_delivery::{DeliveryState, ErrorKind, GiveUp};
use flock_models::{Artifact, Tags, TenantId, TypeName};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

/// A stored value that does not make a valid domain value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodeError(pub(crate) String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unreadable stored data: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

impl From<DecodeError> for sqlx::Error {
    fn from(err: DecodeError) -> Self {
        sqlx::Error::Decode(Box::new(err))
    }
}

/// A stored value that does not convert, and why.
pub(crate) fn bad(what: impl Into<String>) -> DecodeError {
    DecodeError(what.into())
}

/// Microseconds since the Unix epoch, rounded down.
pub(crate) fn micros(at: OffsetDateTime) -> i64 {
    int(at.unix_timestamp_nanos().div_euclid(1000))
}

/// The time `value` microseconds after the Unix epoch.
pub(crate) fn from_micros(value: i64) -> Result<OffsetDateTime, DecodeError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(value) * 1000)
        .map_err(|_| bad(format!("time {value} is out of range")))
}

/// `at` rounded down to whole microseconds.
pub(crate) fn floor_micros(at: OffsetDateTime) -> OffsetDateTime {
    from_micros(micros(at)).unwrap_or(at)
}

/// `at` rounded up to whole microseconds: the first whole microsecond at or after it.
pub(crate) fn ceil_micros(at: OffsetDateTime) -> OffsetDateTime {
    let floor = floor_micros(at);
    if floor == at {
        at
    } else {
        floor + time::Duration::MICROSECOND
    }
}

/// A delivery state by its stored name.
pub(crate) fn parse_state(text: &str) -> Result<DeliveryState, DecodeError> {
    [
        DeliveryState::Pending,
        DeliveryState::Delivered,
        DeliveryState::Failed,
    ]
    .into_iter()
    .find(|state| state.as_str() == text)
    .ok_or_else(|| bad(format!("delivery state `{text}`")))
}

/// A failure reason by its stored name.
///
/// A database written by an earlier build may also hold `invalid_secret`: a delivery whose
/// `whsec_` secret could not sign, given up after one attempt that sent nothing. Secrets that
/// cannot sign can no longer be built, so the name is no longer written; such a row reads as
/// `exhausted`, which is what the attempt's outcome (`other`, see [`parse_error_kind`]) means
/// once no attempt is left, so listing it never fails. Its attempt's stored message still says
/// that the secret could not sign.
pub(crate) fn parse_failure(text: &str) -> Result<GiveUp, DecodeError> {
    match text {
        "invalid_secret" => Ok(GiveUp::Exhausted),
        _ => flock_delivery::failure_from_name(text)
            .ok_or_else(|| bad(format!("failure reason `{text}`"))),
    }
}

/// An attempt's error kind by its stored name.
///
/// A database written by an earlier build may also hold `signing` (the attempt's secret could
/// not sign); that attempt's outcome was "any other failure", so it reads as `other`, with its
/// stored message ("the webhook secret cannot sign: ...") kept, and listing it never fails.
pub(crate) fn parse_error_kind(text: &str) -> Result<ErrorKind, DecodeError> {
    match text {
        "signing" => Ok(ErrorKind::Other),
        _ => ErrorKind::from_name(text).ok_or_else(|| bad(format!("error kind `{text}`"))),
    }
}

/// `value` as a signed 64-bit column, capped at its largest.
pub(crate) fn int(value: impl TryInto<i64>) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(value: i64, what: &str) -> Result<u64, DecodeError> {
    u64::try_from(value).map_err(|_| bad(format!("{what} {value} is negative")))
}

pub(crate) fn to_u32(value: i64, what: &str) -> Result<u32, DecodeError> {
    u32::try_from(value).map_err(|_| bad(format!("{what} {value} is out of range")))
}

/// An artifact's columns: as a write renders them ([`ArtifactFields::of`]) and as a read gets
/// them back ([`ArtifactFields::artifact`]). The payload is JSON text with its key order kept;
/// the tags are a JSON array.
#[derive(Debug, Clone)]
pub(crate) struct ArtifactFields {
    pub(crate) id: Uuid,
    pub(crate) type_name: String,
    pub(crate) payload: String,
    pub(crate) produced_by: String,
    pub(crate) correlation_id: Uuid,
    pub(crate) tenant: String,
    pub(crate) tags: String,
    pub(crate) created_at: OffsetDateTime,
}

impl ArtifactFields {
    /// The columns of `artifact`, for a write.
    pub(crate) fn of(artifact: &Artifact) -> Result<Self, serde_json::Error> {
        Ok(ArtifactFields {
            id: artifact.id,
            type_name: artifact.type_name.as_str().to_owned(),
            payload: serde_json::to_string(&artifact.payload)?,
            produced_by: artifact.produced_by.clone(),
            correlation_id: artifact.correlation_id,
            tenant: artifact.tenant.as_str().to_owned(),
            tags: serde_json::to_string(&artifact.tags)?,
            created_at: artifact.created_at,
        })
    }

    /// The artifact again, checked as any input is.
    pub(crate) fn artifact(self) -> Result<Artifact, DecodeError> {
        let id = self.id;
        let type_name =
            TypeName::new(self.type_name).map_err(|e| bad(format!("artifact {id}: type: {e}")))?;
        let payload: Map<String, Value> = serde_json::from_str(&self.payload)
            .map_err(|e| bad(format!("artifact {id}: payload: {e}")))?;
        let tags: Vec<String> = serde_json::from_str(&self.tags)
            .map_err(|e| bad(format!("artifact {id}: tags: {e}")))?;
        let tags = Tags::new(tags).map_err(|e| bad(format!("artifact {id}: tags: {e}")))?;
        let tenant =
            TenantId::new(self.tenant).map_err(|e| bad(format!("artifact {id}: tenant: {e}")))?;
        Ok(Artifact {
            tenant,
            id,
            type_name,
            payload,
            produced_by: self.produced_by,
            correlation_id: self.correlation_id,
            tags,
            created_at: self.created_at,
        })
    }
}

/// A fresh lease token: positive, so it fits a signed 64-bit column.
pub(crate) fn new_token() -> i64 {
    fastrand::i64(1..=i64::MAX)
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn microseconds_round_as_asked() {
        let at = datetime!(2026-11-28 12:00:00.123456789 UTC);
        assert_eq!(from_micros(micros(at)).unwrap(), floor_micros(at));
        assert_eq!(floor_micros(at).nanosecond(), 123_456_000);
        assert_eq!(ceil_micros(at).nanosecond(), 123_457_000);
        let whole = datetime!(2026-11-28 12:00:00.123456 UTC);
        assert_eq!(ceil_micros(whole), whole);
        assert_eq!(floor_micros(whole), whole);
        let before_epoch = datetime!(1969-12-31 23:59:59.9999995 UTC);
        assert_eq!(micros(before_epoch), -1);
        assert_eq!(micros(ceil_micros(before_epoch)), 0);
        assert!(from_micros(i64::MAX).is_err());
    }

    #[test]
    fn names_round_trip_and_unknown_ones_are_errors() {
        for state in [
            DeliveryState::Pending,
            DeliveryState::Delivered,
            DeliveryState::Failed,
        ] {
            assert_eq!(parse_state(state.as_str()).unwrap(), state);
        }
        assert!(parse_state("lost").is_err());
        for reason in flock_delivery::FAILURE_REASONS {
            assert_eq!(
                parse_failure(flock_delivery::failure_name(reason)).unwrap(),
                reason
            );
        }
        assert_eq!(parse_failure("gone").unwrap(), GiveUp::Gone);
        assert!(parse_failure("bored").is_err());
        for kind in ErrorKind::ALL {
            assert_eq!(parse_error_kind(kind.as_str()).unwrap(), kind);
        }
        assert_eq!(parse_error_kind("timeout").unwrap(), ErrorKind::Timeout);
        let err = parse_error_kind("").unwrap_err();
        assert_eq!(err.to_string(), "unreadable stored data: error kind ``");
    }

    #[test]
    fn tokens_are_positive() {
        assert!((0..1000).map(|_| new_token()).all(|t| t > 0));
    }
}
