//! RFC 3339 timestamps in UTC with a `Z`: microseconds for artifact creation times, milliseconds
//! for the webhook's send time, as the wire contract shows them.
//!
//! The submodules are `serde(with = ...)` adapters; parsing accepts any RFC 3339 offset and
//! converts it to UTC.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

/// The current time in UTC, truncated to whole microseconds (the precision artifacts keep, so
/// that a stored and re-read artifact is equal to the original).
pub fn now_micros() -> OffsetDateTime {
    truncate_micros(OffsetDateTime::now_utc())
}

/// `at` in UTC, truncated to whole microseconds.
pub fn truncate_micros(at: OffsetDateTime) -> OffsetDateTime {
    let at = at.to_offset(UtcOffset::UTC);
    let micros = at.microsecond();
    at.replace_microsecond(micros)
        .expect("a microsecond read from a valid time is valid")
}

/// Formats `at` as `2026-11-28T12:00:00.123456Z`.
pub fn format_micros(at: OffsetDateTime) -> String {
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    at.to_offset(UtcOffset::UTC)
        .format(&fmt)
        .expect("years 0..=9999 always format")
}

/// Formats `at` as `2026-11-28T12:00:00.125Z`.
pub fn format_millis(at: OffsetDateTime) -> String {
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    at.to_offset(UtcOffset::UTC)
        .format(&fmt)
        .expect("years 0..=9999 always format")
}

/// Parses any RFC 3339 timestamp and returns it in UTC.
///
/// # Errors
/// A string that is not RFC 3339.
pub fn parse(text: &str) -> Result<OffsetDateTime, time::error::Parse> {
    OffsetDateTime::parse(text, &Rfc3339).map(|t| t.to_offset(UtcOffset::UTC))
}

/// `serde(with = "flock_models::timestamp::micros")`: six fractional digits.
pub mod micros {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;

    /// Serializes with six fractional digits and a `Z`.
    pub fn serialize<S: Serializer>(at: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_micros(*at))
    }

    /// Parses any RFC 3339 timestamp.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        super::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// `serde(with = "flock_models::timestamp::millis")`: three fractional digits.
pub mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;

    /// Serializes with three fractional digits and a `Z`.
    pub fn serialize<S: Serializer>(at: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_millis(*at))
    }

    /// Parses any RFC 3339 timestamp.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        super::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn formats_in_utc_with_z() {
        let at = datetime!(2026-11-28 13:00:00.123456789 +01:00);
        assert_eq!(format_micros(at), "2026-11-28T12:00:00.123456Z");
        assert_eq!(format_millis(at), "2026-11-28T12:00:00.123Z");
        assert_eq!(
            format_micros(datetime!(2026-01-02 03:04:05 UTC)),
            "2026-01-02T03:04:05.000000Z"
        );
    }

    #[test]
    fn parse_converts_offsets_to_utc() {
        let at = parse("2026-11-28T13:00:00.5+01:00").unwrap();
        assert_eq!(at, datetime!(2026-11-28 12:00:00.5 UTC));
        assert_eq!(at.offset(), UtcOffset::UTC);
        assert!(parse("yesterday").is_err());
    }

    #[test]
    fn truncation_keeps_whole_microseconds() {
        let at = truncate_micros(datetime!(2026-11-28 12:00:00.123456789 UTC));
        assert_eq!(at.nanosecond(), 123_456_000);
        assert_eq!(parse(&format_micros(at)).unwrap(), at);
    }
}
