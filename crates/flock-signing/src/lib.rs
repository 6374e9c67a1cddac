//! Sign and verify Flock webhooks: the `X-Flock-Signature` header of Flock's Python reference
//! and the `webhook-signature` header of Standard Webhooks. The only signing code in the workspace.
#![doc = include_str!("../README.md")]

mod flock;
mod standard;
mod webhook;

use std::time::Duration;

pub use flock::{flock_signature_header, sign_payload, verify_flock_signature};
pub use standard::{
    KEY_PREFIX, SigningKey, sign_standard, standard_key, standard_signatures, verify_standard,
    verify_standard_at,
};
pub use webhook::{WebhookError, verify_webhook, verify_webhook_at};

/// The header carrying `sha256=<hex HMAC-SHA256(secret, body)>`.
pub const FLOCK_SIGNATURE_HEADER: &str = "X-Flock-Signature";
/// The Standard Webhooks message id header; the same on every attempt of one delivery.
pub const WEBHOOK_ID_HEADER: &str = "webhook-id";
/// The Standard Webhooks timestamp header: Unix seconds of the attempt.
pub const WEBHOOK_TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// The Standard Webhooks signature header: space-separated `v1,<base64>` signatures.
pub const WEBHOOK_SIGNATURE_HEADER: &str = "webhook-signature";
/// How far a `webhook-timestamp` may be from the receiver's clock, in either direction.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// Why a signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The header is not of the expected form; the text says how.
    #[error("malformed signature header: {0}")]
    MalformedHeader(&'static str),
    /// The `webhook-timestamp` header is not a whole number of seconds.
    #[error("malformed webhook-timestamp header: expected Unix seconds")]
    MalformedTimestamp,
    /// The timestamp is older than the tolerance allows.
    #[error("webhook-timestamp is {0} s in the past, beyond the tolerance")]
    TimestampTooOld(u64),
    /// The timestamp is further in the future than the tolerance allows.
    #[error("webhook-timestamp is {0} s in the future, beyond the tolerance")]
    TimestampInFuture(u64),
    /// No signature in the header matches the body.
    #[error("no signature matches the body and secret")]
    Mismatch,
    /// The secret is unusable (a `whsec_` secret whose remainder is not base64).
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// A secret that cannot be turned into a signing key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A `whsec_` secret must be base64 after the prefix.
    #[error("a secret starting with `whsec_` must be base64 after the prefix")]
    InvalidBase64,
    /// A `whsec_` secret with nothing after the prefix.
    #[error("a secret starting with `whsec_` must have a key after the prefix")]
    EmptyKey,
}
