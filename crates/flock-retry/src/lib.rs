//! Webhook retry policy as data: the backoff schedule, what an attempt's outcome means for
//! retrying, and `Retry-After`. No sleeping and no I/O here; delivery does both.
#![doc = include_str!("../README.md")]

mod http_date;
mod policy;

pub use http_date::{parse_http_date, parse_retry_after};
pub use policy::{Class, Decision, GiveUp, Outcome, PolicyError, RetryPolicy};
