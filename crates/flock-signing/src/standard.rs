//! Standard Webhooks signatures: `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`,
//! so receivers can verify with off-the-shelf libraries.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::Mac;

use crate::flock::{HmacSha256, hex_of, keyed};
use crate::{KeyError, VerifyError};

/// Secrets with this prefix carry a base64 key after it; others are used as UTF-8 bytes.
pub const KEY_PREFIX: &str = "whsec_";

/// The Standard Webhooks key for `secret`: the base64-decoded remainder of a `whsec_` secret,
/// else the secret's UTF-8 bytes.
///
/// # Errors
/// A `whsec_` secret whose remainder is empty or not base64.
pub fn standard_key(secret: &str) -> Result<Vec<u8>, KeyError> {
    match secret.strip_prefix(KEY_PREFIX) {
        None => Ok(secret.as_bytes().to_vec()),
        Some("") => Err(KeyError::EmptyKey),
        Some(encoded) => BASE64.decode(encoded).map_err(|_| KeyError::InvalidBase64),
    }
}

/// The `webhook-signature` value for one message: `v1,<base64>`.
///
/// # Errors
/// A `whsec_` secret that is not valid (see [`standard_key`]).
pub fn sign_standard(
    secret: &str,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, KeyError> {
    Ok(SigningKey::new(secret)?.standard_signature(id, timestamp, body))
}

/// The `webhook-signature` value signed by each of `keys`, in order, separated by single
/// spaces: `v1,<base64> v1,<base64>`. This is how a sender rotates its secret: while receivers
/// move to the new secret, it signs with the new and the old one, and a receiver holding either
/// finds a signature that matches (Standard Webhooks libraries, [`verify_standard`] and
/// [`verify_webhook`](crate::verify_webhook) all accept a header with several signatures when
/// any one matches).
///
/// Put the current secret first. `X-Flock-Signature` carries a single signature
/// ([`SigningKey::flock_signature`]): Flock signs it with the old secret until the rotation's
/// grace period ends, so receivers that still hold only the old secret pass both checks. With
/// no keys the value is empty; send no `webhook-signature` header then.
pub fn standard_signatures(keys: &[&SigningKey], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut header = String::with_capacity(keys.len() * 48);
    for key in keys {
        if !header.is_empty() {
            header.push(' ');
        }
        header.push_str(&key.standard_signature(id, timestamp, body));
    }
    header
}

/// Verifies a `webhook-signature` header (one or more space-separated signatures; any `v1`
/// match is enough) for the message `id`, `timestamp` header and `body`, against the current time
/// and `tolerance`.
///
/// # Errors
/// See [`verify_standard_at`].
pub fn verify_standard(
    secret: &str,
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    tolerance: Duration,
) -> Result<(), VerifyError> {
    verify_standard_at(
        secret,
        id,
        timestamp,
        signatures,
        body,
        tolerance,
        now_unix(),
    )
}

/// The system clock as Unix seconds (0 before 1970).
pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// [`verify_standard`] with the receiver's clock given as Unix seconds.
///
/// # Errors
/// A malformed or out-of-tolerance timestamp, a header without any `v1,` signature, or no
/// signature that matches (compared in constant time).
pub fn verify_standard_at(
    secret: &str,
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    tolerance: Duration,
    now_unix: u64,
) -> Result<(), VerifyError> {
    let sent = check_timestamp(timestamp, tolerance, now_unix)?;
    let key = SigningKey::new(secret)?;
    let candidates = v1_signatures(signatures)?;
    if candidates
        .iter()
        .any(|expected| key.standard_matches(id, sent, body, expected))
    {
        return Ok(());
    }
    Err(VerifyError::Mismatch)
}

/// Parses a `webhook-timestamp` header and checks it is within `tolerance` of `now_unix`, either
/// way; gives the timestamp as sent.
pub(crate) fn check_timestamp(
    timestamp: &str,
    tolerance: Duration,
    now_unix: u64,
) -> Result<i64, VerifyError> {
    let sent: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::MalformedTimestamp)?;
    let now = i64::try_from(now_unix).unwrap_or(i64::MAX);
    let skew = now.saturating_sub(sent);
    let limit = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    if skew > limit {
        return Err(VerifyError::TimestampTooOld(skew.unsigned_abs()));
    }
    if skew < -limit {
        return Err(VerifyError::TimestampInFuture(skew.unsigned_abs()));
    }
    Ok(sent)
}

/// The `v1` signatures of a `webhook-signature` header, decoded. Other versions are skipped, and
/// so is a `v1` signature that is not base64 (it can match nothing).
///
/// # Errors
/// A signature that is not `<version>,<base64>`, or a header without any `v1,` signature.
pub(crate) fn v1_signatures(signatures: &str) -> Result<Vec<Vec<u8>>, VerifyError> {
    let mut candidates = 0usize;
    let mut decoded = Vec::new();
    for signature in signatures.split_whitespace() {
        let Some((version, encoded)) = signature.split_once(',') else {
            return Err(VerifyError::MalformedHeader(
                "each signature must be `<version>,<base64>`",
            ));
        };
        if version != "v1" {
            continue;
        }
        candidates += 1;
        if let Ok(bytes) = BASE64.decode(encoded) {
            decoded.push(bytes);
        }
    }
    if candidates == 0 {
        return Err(VerifyError::MalformedHeader(
            "no `v1,` signature in the header",
        ));
    }
    Ok(decoded)
}

/// A webhook secret turned into ready-keyed HMACs, so that signing an attempt costs only the
/// hash of the body: one key for `X-Flock-Signature` (the secret's bytes) and one for
/// `webhook-signature` (see [`standard_key`]). `Debug` shows no key material.
#[derive(Clone)]
pub struct SigningKey {
    flock: HmacSha256,
    standard: HmacSha256,
}

impl SigningKey {
    /// Prepares both keys of `secret`.
    ///
    /// # Errors
    /// A `whsec_` secret that is not valid (see [`standard_key`]).
    pub fn new(secret: &str) -> Result<Self, KeyError> {
        Ok(SigningKey {
            flock: keyed(secret.as_bytes()),
            standard: keyed(&standard_key(secret)?),
        })
    }

    /// The `X-Flock-Signature` value for `body`: `sha256=<hex>`.
    pub fn flock_signature(&self, body: &[u8]) -> String {
        format!("sha256={}", hex_of(self.flock.clone(), body))
    }

    /// The `webhook-signature` value for message `id` sent at `timestamp`: `v1,<base64>`.
    pub fn standard_signature(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = self.standard.clone();
        feed_message(&mut mac, id, timestamp, body);
        format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
    }

    /// Whether `expected` is this key's `X-Flock-Signature` of `body` (compared in constant
    /// time).
    pub(crate) fn flock_matches(&self, body: &[u8], expected: &[u8]) -> bool {
        let mut mac = self.flock.clone();
        mac.update(body);
        mac.verify_slice(expected).is_ok()
    }

    /// Whether `expected` is this key's `webhook-signature` of message `id` sent at `timestamp`
    /// (compared in constant time).
    pub(crate) fn standard_matches(
        &self,
        id: &str,
        timestamp: i64,
        body: &[u8],
        expected: &[u8],
    ) -> bool {
        let mut mac = self.standard.clone();
        feed_message(&mut mac, id, timestamp, body);
        mac.verify_slice(expected).is_ok()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey([redacted])")
    }
}

/// Feeds `"{id}.{timestamp}.{body}"` without building the string.
fn feed_message(mac: &mut HmacSha256, id: &str, timestamp: i64, body: &[u8]) {
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
}
