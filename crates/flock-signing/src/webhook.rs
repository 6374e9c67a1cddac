//! `verify_webhook`: what a receiver checks on one delivery, in one call: both signatures, the
//! timestamp's tolerance, against a list of secrets (so a secret can be rotated).

use std::time::Duration;

use crate::flock::parse_flock_header;
use crate::standard::{SigningKey, check_timestamp, now_unix, v1_signatures};
use crate::{
    DEFAULT_TOLERANCE, FLOCK_SIGNATURE_HEADER, KeyError, VerifyError, WEBHOOK_ID_HEADER,
    WEBHOOK_SIGNATURE_HEADER, WEBHOOK_TIMESTAMP_HEADER,
};

/// `X-Flock-Signature` as a header map's lookup is asked for it.
const FLOCK_SIGNATURE_LOOKUP: &str = "x-flock-signature";

/// Why [`verify_webhook`] refused a delivery. Every variant but the two about secrets names the
/// header at fault; none shows a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// The list of secrets is empty: there is nothing to verify with.
    #[error("no secret to verify the webhook with")]
    NoSecret,
    /// A secret of the list cannot be used (a `whsec_` secret that is not base64 after the
    /// prefix); `index` is its place in the list.
    #[error("secret {index} of the list is unusable: {error}")]
    Secret {
        /// Its place in the list, from 0.
        index: usize,
        /// What is wrong with it.
        error: KeyError,
    },
    /// A header the check needs is absent.
    #[error("the {header} header is missing")]
    Missing {
        /// The header's name.
        header: &'static str,
    },
    /// A header is present but refused: malformed, out of tolerance, or no secret of the list
    /// produces its signature.
    #[error("{header}: {error}")]
    Invalid {
        /// The header's name.
        header: &'static str,
        /// Why it was refused.
        error: VerifyError,
    },
}

impl WebhookError {
    /// The header at fault, when one is.
    pub fn header(&self) -> Option<&'static str> {
        match self {
            WebhookError::Missing { header } | WebhookError::Invalid { header, .. } => Some(header),
            WebhookError::NoSecret | WebhookError::Secret { .. } => None,
        }
    }
}

/// Verifies one webhook delivery as a receiver gets it: `header` looks a header's value up by
/// name, `body` is the raw body, `secrets` the secrets the receiver accepts (during a rotation,
/// the new and the old one). Timestamps further than [`DEFAULT_TOLERANCE`] (5 minutes) from the
/// system clock, either way, are refused.
///
/// `header` is asked for the lower-case names `x-flock-signature`, `webhook-id`,
/// `webhook-timestamp` and `webhook-signature`; header names are case-insensitive, so answer
/// whatever case the sender used (an HTTP library's header map does; a plain map should hold
/// lower-case names).
///
/// Both signatures are required: Flock sends both on every webhook that has a secret, so a
/// missing one is an error naming it. Each must be produced by a secret of the list:
/// `X-Flock-Signature` carries one signature, and `webhook-signature` may carry several
/// (space-separated, as a sender does while it rotates its secret), any of which may match.
/// Signatures are compared in constant time.
///
/// # Errors
/// An empty or unusable list of secrets, or the first header that is missing, malformed, out of
/// tolerance or not signed by any of the secrets, in the order `X-Flock-Signature`,
/// `webhook-id`, `webhook-timestamp`, `webhook-signature`.
pub fn verify_webhook<'h, S: AsRef<str>>(
    header: impl Fn(&str) -> Option<&'h str>,
    body: &[u8],
    secrets: &[S],
) -> Result<(), WebhookError> {
    verify_webhook_at(header, body, secrets, DEFAULT_TOLERANCE, now_unix())
}

/// [`verify_webhook`] with the timestamp tolerance and the receiver's clock (Unix seconds)
/// given.
///
/// # Errors
/// See [`verify_webhook`].
pub fn verify_webhook_at<'h, S: AsRef<str>>(
    header: impl Fn(&str) -> Option<&'h str>,
    body: &[u8],
    secrets: &[S],
    tolerance: Duration,
    now_unix: u64,
) -> Result<(), WebhookError> {
    if secrets.is_empty() {
        return Err(WebhookError::NoSecret);
    }
    let keys = secrets
        .iter()
        .enumerate()
        .map(|(index, secret)| {
            SigningKey::new(secret.as_ref()).map_err(|error| WebhookError::Secret { index, error })
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Asked by their lower-case names, named in errors as the constants spell them.
    let required = |lookup: &str, name: &'static str| {
        header(lookup).ok_or(WebhookError::Missing { header: name })
    };
    let invalid = |name: &'static str| {
        move |error| WebhookError::Invalid {
            header: name,
            error,
        }
    };

    let flock = required(FLOCK_SIGNATURE_LOOKUP, FLOCK_SIGNATURE_HEADER)?;
    let expected = parse_flock_header(flock).map_err(invalid(FLOCK_SIGNATURE_HEADER))?;
    if !keys.iter().any(|key| key.flock_matches(body, &expected)) {
        return Err(invalid(FLOCK_SIGNATURE_HEADER)(VerifyError::Mismatch));
    }

    let id = required(WEBHOOK_ID_HEADER, WEBHOOK_ID_HEADER)?;
    let timestamp = required(WEBHOOK_TIMESTAMP_HEADER, WEBHOOK_TIMESTAMP_HEADER)?;
    let signatures = required(WEBHOOK_SIGNATURE_HEADER, WEBHOOK_SIGNATURE_HEADER)?;
    let sent = check_timestamp(timestamp, tolerance, now_unix)
        .map_err(invalid(WEBHOOK_TIMESTAMP_HEADER))?;
    let candidates = v1_signatures(signatures).map_err(invalid(WEBHOOK_SIGNATURE_HEADER))?;
    let matched = candidates.iter().any(|expected| {
        keys.iter()
            .any(|key| key.standard_matches(id, sent, body, expected))
    });
    if !matched {
        return Err(invalid(WEBHOOK_SIGNATURE_HEADER)(VerifyError::Mismatch));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_asked_for_in_lower_case() {
        assert_eq!(
            FLOCK_SIGNATURE_HEADER.to_ascii_lowercase(),
            FLOCK_SIGNATURE_LOOKUP
        );
        for name in [
            WEBHOOK_ID_HEADER,
            WEBHOOK_TIMESTAMP_HEADER,
            WEBHOOK_SIGNATURE_HEADER,
        ] {
            assert_eq!(name.to_ascii_lowercase(), name);
        }
    }
}
