//! Conversions between database values and the domain types, shared by both backends: times as
//! microseconds, state and reason names, and rows into artifacts, deliveries and attempts. A
//! value that does not convert is a [`DecodeError`], never a panic.

use std::collections::HashMap;
use std::fmt;

use bytes::Bytes;
use flock_delivery::{AttemptView, DeliveryState, DeliveryView, ErrorKind, GiveUp};
use flock_models::{Artifact, NewDelivery, Secret, Tags, TypeName, WebhookUrl};
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

fn bad(what: impl Into<String>) -> DecodeError {
    DecodeError(what.into())
}

/// Microseconds since the Unix epoch, rounded down.
pub(crate) fn micros(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos().div_euclid(1000)).unwrap_or(i64::MAX)
}

/// Microseconds since the Unix epoch, rounded up: the first whole microsecond at or after `at`.
pub(crate) fn micros_ceil(at: OffsetDateTime) -> i64 {
    let nanos = at.unix_timestamp_nanos();
    let down = nanos.div_euclid(1000);
    let up = if nanos.rem_euclid(1000) == 0 {
        down
    } else {
        down + 1
    };
    i64::try_from(up).unwrap_or(i64::MAX)
}

/// `at` rounded down to whole microseconds.
pub(crate) fn floor_micros(at: OffsetDateTime) -> OffsetDateTime {
    from_micros(micros(at)).unwrap_or(at)
}

/// `at` rounded up to whole microseconds.
pub(crate) fn ceil_micros(at: OffsetDateTime) -> OffsetDateTime {
    from_micros(micros_ceil(at)).unwrap_or(at)
}

/// The time `value` microseconds after the Unix epoch.
pub(crate) fn from_micros(value: i64) -> Result<OffsetDateTime, DecodeError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(value) * 1000)
        .map_err(|_| bad(format!("time {value} is out of range")))
}

pub(crate) fn parse_state(text: &str) -> Result<DeliveryState, DecodeError> {
    match text {
        "pending" => Ok(DeliveryState::Pending),
        "delivered" => Ok(DeliveryState::Delivered),
        "failed" => Ok(DeliveryState::Failed),
        other => Err(bad(format!("delivery state `{other}`"))),
    }
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

pub(crate) fn to_u64(value: i64, what: &str) -> Result<u64, DecodeError> {
    u64::try_from(value).map_err(|_| bad(format!("{what} {value} is negative")))
}

pub(crate) fn to_u32(value: i64, what: &str) -> Result<u32, DecodeError> {
    u32::try_from(value).map_err(|_| bad(format!("{what} {value} is out of range")))
}

/// An artifact's columns: as a write renders them ([`ArtifactFields::of`]) and as a read gets
/// them back ([`ArtifactFields::artifact`]). The payload is JSON text with its key order kept.
#[derive(Debug, Clone)]
pub(crate) struct ArtifactFields {
    pub(crate) id: Uuid,
    pub(crate) type_name: String,
    pub(crate) payload: String,
    pub(crate) produced_by: String,
    pub(crate) correlation_id: Uuid,
    pub(crate) tags: Vec<String>,
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
            tags: artifact.tags.iter().map(str::to_owned).collect(),
            created_at: artifact.created_at,
        })
    }

    /// The tags as a JSON array.
    pub(crate) fn tags_json(&self) -> String {
        serde_json::to_string(&self.tags).expect("a list of strings always serializes")
    }

    /// The artifact again, checked as any input is.
    pub(crate) fn artifact(self) -> Result<Artifact, DecodeError> {
        let id = self.id;
        let type_name =
            TypeName::new(self.type_name).map_err(|e| bad(format!("artifact {id}: type: {e}")))?;
        let payload: Map<String, Value> = serde_json::from_str(&self.payload)
            .map_err(|e| bad(format!("artifact {id}: payload: {e}")))?;
        let tags = Tags::new(self.tags).map_err(|e| bad(format!("artifact {id}: tags: {e}")))?;
        Ok(Artifact {
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

/// Tags stored as a JSON array.
pub(crate) fn tags_from_json(text: &str) -> Result<Vec<String>, DecodeError> {
    serde_json::from_str(text).map_err(|e| bad(format!("tags: {e}")))
}

/// A claimed delivery's stored columns.
pub(crate) struct ClaimFields {
    pub(crate) id: Uuid,
    pub(crate) correlation_id: Uuid,
    pub(crate) artifact_id: Uuid,
    pub(crate) sequence: i64,
    pub(crate) url: String,
    pub(crate) secret: Option<String>,
    pub(crate) body: Option<Vec<u8>>,
    pub(crate) artifact_created_at: OffsetDateTime,
    pub(crate) attempts: i64,
    pub(crate) round_start: i64,
}

impl ClaimFields {
    /// The delivery and the numbers of its next attempt (overall, and in this round).
    pub(crate) fn delivery(self) -> Result<(NewDelivery, u32, u32), DecodeError> {
        let id = self.id;
        // Stored by whichever build accepted it: an earlier one may have taken a URL that
        // requests may no longer give, and its deliveries are still sent.
        let url = WebhookUrl::from_stored(&self.url)
            .map_err(|e| bad(format!("delivery {id}: url: {e}")))?;
        // A secret an earlier build stored but that cannot sign (a `whsec_` secret whose key is
        // not base64; the API never accepted one) does not decode: the claim skips the row, as
        // any row that does not decode. Listing never reads the secret.
        let secret = self
            .secret
            .map(Secret::new)
            .transpose()
            .map_err(|e| bad(format!("delivery {id}: secret: {e}")))?;
        let body = self
            .body
            .ok_or_else(|| bad(format!("delivery {id}: pending without a body")))?;
        let recorded = to_u32(self.attempts, "attempt count")?;
        let round_start = to_u32(self.round_start, "attempt count")?;
        let delivery = NewDelivery {
            id,
            correlation_id: self.correlation_id,
            artifact_id: self.artifact_id,
            sequence: to_u64(self.sequence, "sequence")?,
            url,
            secret,
            body: Bytes::from(body),
            artifact_created_at: self.artifact_created_at,
        };
        Ok((
            delivery,
            recorded.saturating_add(1),
            recorded.saturating_sub(round_start).saturating_add(1),
        ))
    }
}

/// A delivery's stored columns, for listing.
pub(crate) struct DeliveryFields {
    pub(crate) id: Uuid,
    pub(crate) correlation_id: Uuid,
    pub(crate) artifact_id: Uuid,
    pub(crate) sequence: i64,
    pub(crate) url: String,
    pub(crate) state: String,
    pub(crate) failure: Option<String>,
    pub(crate) due_at: Option<OffsetDateTime>,
    pub(crate) leased: bool,
    pub(crate) created_at: OffsetDateTime,
    pub(crate) completed_at: Option<OffsetDateTime>,
}

impl DeliveryFields {
    pub(crate) fn view(self, attempts: Vec<AttemptView>) -> Result<DeliveryView, DecodeError> {
        let id = self.id;
        let url = WebhookUrl::parse(&self.url)
            .map_err(|e| bad(format!("delivery {id}: url: {e}")))?
            .for_logs();
        let state = parse_state(&self.state)?;
        let failure = self.failure.as_deref().map(parse_failure).transpose()?;
        Ok(DeliveryView {
            id,
            correlation_id: self.correlation_id,
            artifact_id: self.artifact_id,
            sequence: to_u64(self.sequence, "sequence")?,
            url,
            state,
            failure,
            attempts,
            next_attempt_at: if state == DeliveryState::Pending && !self.leased {
                self.due_at
            } else {
                None
            },
            created_at: self.created_at,
            completed_at: self.completed_at,
        })
    }
}

/// An attempt's stored columns.
pub(crate) struct AttemptFields {
    pub(crate) delivery_id: Uuid,
    pub(crate) number: i64,
    pub(crate) started_at: OffsetDateTime,
    pub(crate) status_code: Option<i64>,
    pub(crate) error_kind: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) duration_ms: i64,
}

impl AttemptFields {
    pub(crate) fn view(self) -> Result<AttemptView, DecodeError> {
        Ok(AttemptView {
            number: to_u32(self.number, "attempt number")?,
            started_at: self.started_at,
            status_code: self
                .status_code
                .map(|c| u16::try_from(c).map_err(|_| bad(format!("status code {c}"))))
                .transpose()?,
            error_kind: self
                .error_kind
                .as_deref()
                .map(parse_error_kind)
                .transpose()?,
            error: self.error,
            duration_ms: to_u64(self.duration_ms, "duration")?,
        })
    }
}

/// Deliveries with their attempts (ordered by number), in the deliveries' order.
pub(crate) fn views(
    deliveries: Vec<DeliveryFields>,
    attempts: Vec<AttemptFields>,
) -> Result<Vec<DeliveryView>, DecodeError> {
    let mut by_delivery: HashMap<Uuid, Vec<AttemptView>> = HashMap::new();
    for attempt in attempts {
        let id = attempt.delivery_id;
        by_delivery.entry(id).or_default().push(attempt.view()?);
    }
    deliveries
        .into_iter()
        .map(|d| {
            let mut attempts = by_delivery.remove(&d.id).unwrap_or_default();
            attempts.sort_by_key(|a| a.number);
            d.view(attempts)
        })
        .collect()
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
        assert_eq!(micros_ceil(before_epoch), 0);
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
        for reason in [GiveUp::Exhausted, GiveUp::Gone, GiveUp::Blocked] {
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
        assert!(parse_error_kind("").is_err());
    }

    #[test]
    fn names_of_an_earlier_build_still_list() {
        let id = Uuid::now_v7();
        let at = datetime!(2026-11-28 12:00:00 UTC);
        let attempt = AttemptFields {
            delivery_id: id,
            number: 1,
            started_at: at,
            status_code: None,
            error_kind: Some("signing".to_owned()),
            error: Some("the webhook secret cannot sign: ...".to_owned()),
            duration_ms: 0,
        };
        let delivery = DeliveryFields {
            id,
            correlation_id: Uuid::now_v7(),
            artifact_id: Uuid::now_v7(),
            sequence: 1,
            url: "https://example.com/hook".to_owned(),
            state: "failed".to_owned(),
            failure: Some("invalid_secret".to_owned()),
            due_at: None,
            leased: false,
            created_at: at,
            completed_at: Some(at),
        };
        let views = views(vec![delivery], vec![attempt]).unwrap();
        let view = &views[0];
        assert_eq!(view.state, DeliveryState::Failed);
        assert_eq!(view.failure, Some(GiveUp::Exhausted));
        assert_eq!(view.attempts[0].error_kind, Some(ErrorKind::Other));
        assert_eq!(
            view.attempts[0].error.as_deref(),
            Some("the webhook secret cannot sign: ...")
        );
        // Shown with today's names.
        let json = serde_json::to_value(view).unwrap();
        assert_eq!(json["failure"], "exhausted");
        assert_eq!(json["attempts"][0]["error_kind"], "other");
    }

    #[test]
    fn a_stored_secret_that_cannot_sign_does_not_decode_for_a_claim() {
        let fields = |secret: &str| ClaimFields {
            id: Uuid::now_v7(),
            correlation_id: Uuid::now_v7(),
            artifact_id: Uuid::now_v7(),
            sequence: 1,
            url: "https://example.com/hook".to_owned(),
            secret: Some(secret.to_owned()),
            body: Some(b"{}".to_vec()),
            artifact_created_at: datetime!(2026-11-28 12:00:00 UTC),
            attempts: 0,
            round_start: 0,
        };
        let err = fields("whsec_!!").delivery().unwrap_err();
        assert!(err.0.contains("secret"), "{err}");
        assert!(
            !err.to_string().contains("whsec_!!"),
            "the secret leaked: {err}"
        );
        let (delivery, attempt, round_attempt) = fields("whsec_c2VjcmV0").delivery().unwrap();
        assert_eq!(delivery.secret.unwrap().expose(), "whsec_c2VjcmV0");
        assert_eq!((attempt, round_attempt), (1, 1));
    }

    #[test]
    fn tokens_are_positive() {
        assert!((0..1000).map(|_| new_token()).all(|t| t > 0));
    }
}
