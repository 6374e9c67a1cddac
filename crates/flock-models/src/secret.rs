//! A webhook signing secret: always able to sign, and never shown in `Debug` output.

use std::fmt;

use flock_signing::SigningKey;
use serde::{Deserialize, Deserializer};

use crate::ValidationError;

/// The longest secret accepted, in characters.
pub const MAX_SECRET_CHARS: usize = 256;

/// Standard base64 with canonical padding and no stray bits: what `flock-signing` decodes after
/// `whsec_`.
macro_rules! base64_key {
    () => {
        concat!(
            "(?:[A-Za-z0-9+/]{4})*",
            "(?:[A-Za-z0-9+/]{4}|[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)"
        )
    };
}

/// A webhook signing secret: 1 to [`MAX_SECRET_CHARS`] characters that can sign. A secret
/// starting with `whsec_` (the Standard Webhooks form) must carry a base64 key after the prefix;
/// any other secret is used as its UTF-8 bytes.
///
/// Because a `Secret` can only be built from text that signs, [`Secret::signing_key`] cannot
/// fail, and nothing that holds one needs to check it again.
///
/// `Debug` prints `[redacted]` and there is deliberately no `Display` or `Serialize`: the only way
/// to read the secret is [`Secret::expose`], which makes every use easy to find.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Box<str>);

impl Secret {
    /// The secrets [`Secret::new`] accepts, as an ECMA-262 regular expression (the OpenAPI
    /// document's `pattern`, beside the length of 1 to [`MAX_SECRET_CHARS`] characters): either
    /// `whsec_` and a standard base64 key (padded, no stray bits), or anything that does not
    /// start with `whsec_`.
    pub const PATTERN: &'static str = concat!(
        "^(?:whsec_",
        base64_key!(),
        r"|[^w][\s\S]*|w(?:[^h][\s\S]*)?|wh(?:[^s][\s\S]*)?|whs(?:[^e][\s\S]*)?",
        r"|whse(?:[^c][\s\S]*)?|whsec(?:[^_][\s\S]*)?)$"
    );

    /// Validates and wraps a secret.
    ///
    /// # Errors
    /// An empty secret (omit the field for unsigned webhooks), one longer than
    /// [`MAX_SECRET_CHARS`], or a `whsec_` secret whose remainder is empty or not base64 (the
    /// message is `flock-signing`'s). The error is about the value as a whole: callers place it
    /// under the field the text came from.
    pub fn new(secret: impl Into<String>) -> Result<Self, ValidationError> {
        let secret = secret.into();
        if secret.is_empty() {
            return Err(ValidationError::whole(
                "the secret must not be empty; omit the field for unsigned webhooks",
            ));
        }
        let chars = secret.chars().count();
        if chars > MAX_SECRET_CHARS {
            return Err(ValidationError::whole(format!(
                "the secret is {chars} characters long; at most {MAX_SECRET_CHARS} are allowed"
            )));
        }
        // Decoding the key is the whole check: preparing both HMAC keys here only to drop them
        // would cost every publish with a webhook a few SHA-256 blocks.
        flock_signing::standard_key(&secret).map_err(|e| ValidationError::whole(e.to_string()))?;
        Ok(Secret(secret.into_boxed_str()))
    }

    /// The secret itself, for storage that must keep it and receivers that verify with it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Both HMAC keys of this secret, ready to sign: `X-Flock-Signature` keyed with the secret's
    /// bytes, `webhook-signature` with its Standard Webhooks key.
    pub fn signing_key(&self) -> SigningKey {
        SigningKey::new(&self.0).expect("a Secret is checked to sign when it is built")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Secret::new(raw).map_err(serde::de::Error::custom)
    }
}
