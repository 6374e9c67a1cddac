//! `X-Flock-Signature: sha256=<lowercase hex HMAC-SHA256(secret, raw body)>`, as the Python
//! reference sends it.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::VerifyError;

pub(crate) type HmacSha256 = Hmac<Sha256>;

const PREFIX: &str = "sha256=";

/// HMAC-SHA256 of `body` keyed with `secret`, as 64 lowercase hex characters.
pub fn sign_payload(body: &[u8], secret: &[u8]) -> String {
    hex_of(keyed(secret), body)
}

/// The `X-Flock-Signature` header value for `body`: `sha256=<hex>`.
pub fn flock_signature_header(body: &[u8], secret: &[u8]) -> String {
    format!("{PREFIX}{}", sign_payload(body, secret))
}

/// Checks an `X-Flock-Signature` header against `body`, comparing in constant time.
///
/// # Errors
/// [`VerifyError::MalformedHeader`] when the header is not `sha256=` and 64 hex characters,
/// [`VerifyError::Mismatch`] when it is but does not match.
pub fn verify_flock_signature(header: &str, body: &[u8], secret: &[u8]) -> Result<(), VerifyError> {
    let expected = parse_flock_header(header)?;
    let mut mac = keyed(secret);
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| VerifyError::Mismatch)
}

/// The signature an `X-Flock-Signature` header carries: `sha256=` and 64 hex characters (either
/// case), decoded.
pub(crate) fn parse_flock_header(header: &str) -> Result<[u8; 32], VerifyError> {
    let hex = header
        .trim()
        .strip_prefix(PREFIX)
        .ok_or(VerifyError::MalformedHeader(
            "expected `sha256=` followed by hex",
        ))?;
    if hex.len() != 64 {
        return Err(VerifyError::MalformedHeader(
            "expected 64 hex characters after `sha256=`",
        ));
    }
    let mut expected = [0u8; 32];
    base16ct::mixed::decode(hex, &mut expected)
        .map_err(|_| VerifyError::MalformedHeader("the signature is not hex"))?;
    Ok(expected)
}

/// An HMAC-SHA256 keyed with `key` (any length is a valid HMAC key).
pub(crate) fn keyed(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length")
}

/// Finishes `mac` over `body` as lowercase hex.
pub(crate) fn hex_of(mut mac: HmacSha256, body: &[u8]) -> String {
    mac.update(body);
    base16ct::lower::encode_string(&mac.finalize().into_bytes())
}
