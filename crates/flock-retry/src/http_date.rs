//! `Retry-After` values: delta-seconds or an HTTP-date (RFC 9110 section 10.2.3), parsed with
//! std alone.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The wait a `Retry-After` value asks for, as seen at `now`: a number of seconds, or the time
/// until an HTTP-date (zero when the date has passed). `None` for a value that is neither.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Very long digit strings saturate instead of failing: they mean "a long time".
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = Duration::from_secs(http_date_secs(value)?);
    let now = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    Some(at.saturating_sub(now))
}

/// Parses an HTTP-date in any of the three forms RFC 9110 asks recipients to accept:
/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`)
/// and asctime (`Sun Nov  6 08:49:37 1994`). `None` also for a date before 1970 or too far
/// ahead for `SystemTime`.
pub fn parse_http_date(value: &str) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_secs(http_date_secs(value)?))
}

/// Years further from 1970 than this are treated as this far: the arithmetic below stays within
/// `i64`, and a date that far ahead already saturates the seconds.
const MAX_YEARS: i64 = 1_000_000_000_000_000;

/// The seconds since 1970 of an HTTP-date; dates too far ahead for a `u64` saturate to
/// `u64::MAX` (with no overflow, in debug builds too); dates before 1970 are `None`.
fn http_date_secs(value: &str) -> Option<u64> {
    let parts: Vec<&str> = value.split_whitespace().collect();
    let (day, month, year, clock) = match parts.as_slice() {
        // IMF-fixdate: weekday, day month year time GMT
        [weekday, day, month, year, clock, "GMT"] if weekday.ends_with(',') => (
            day.parse().ok()?,
            month_number(month)?,
            year.parse().ok()?,
            *clock,
        ),
        // RFC 850: weekday, dd-Mon-yy time GMT
        [weekday, date, clock, "GMT"] if weekday.ends_with(',') => {
            let mut pieces = date.split('-');
            let day: u32 = pieces.next()?.parse().ok()?;
            let month = month_number(pieces.next()?)?;
            let yy: i64 = pieces.next()?.parse().ok()?;
            if pieces.next().is_some() {
                return None;
            }
            // Two-digit years: RFC 9110 says a year that looks more than 50 years ahead is in
            // the past century; with no clock here, 70 and above are 19xx.
            let year = if yy >= 100 {
                yy
            } else if yy >= 70 {
                1900 + yy
            } else {
                2000 + yy
            };
            (day, month, year, *clock)
        }
        // asctime: weekday month day time year
        [_weekday, month, day, clock, year] => (
            day.parse().ok()?,
            month_number(month)?,
            year.parse().ok()?,
            *clock,
        ),
        _ => return None,
    };
    let mut hms = clock.split(':');
    let hour: u64 = hms.next()?.parse().ok()?;
    let minute: u64 = hms.next()?.parse().ok()?;
    let second: u64 = hms.next()?.parse().ok()?;
    if hms.next().is_some() || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    if !(1..=days_in_month(year, month)).contains(&day) {
        return None;
    }
    let year = year.clamp(-MAX_YEARS, MAX_YEARS);
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    Some(
        days.saturating_mul(86_400)
            .saturating_add(hour * 3_600 + minute * 60 + second),
    )
}

fn month_number(name: &str) -> Option<u32> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    MONTHS.iter().position(|m| *m == name).map(|i| i as u32 + 1)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}
