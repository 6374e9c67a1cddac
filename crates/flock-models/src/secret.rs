//! A webhook signing secret that never shows itself in `Debug` output.

use std::fmt;

use serde::{Deserialize, Deserializer};

use crate::ValidationError;

/// The longest secret accepted, in bytes.
pub const MAX_SECRET_BYTES: usize = 256;

/// A webhook signing secret: 1 to [`MAX_SECRET_BYTES`] bytes.
///
/// `Debug` prints `[redacted]` and there is deliberately no `Display` or `Serialize`: the only way
/// to read the secret is [`Secret::expose`], which makes every use easy to find.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Box<str>);

impl Secret {
    /// Validates and wraps a secret.
    ///
    /// # Errors
    /// An empty secret (omit the field for unsigned webhooks) or one longer than
    /// [`MAX_SECRET_BYTES`].
    pub fn new(secret: impl Into<String>) -> Result<Self, ValidationError> {
        let secret = secret.into();
        if secret.is_empty() {
            return Err(ValidationError::whole(
                "the secret must not be empty; omit the field for unsigned webhooks",
            ));
        }
        if secret.len() > MAX_SECRET_BYTES {
            return Err(ValidationError::whole(format!(
                "the secret is {} bytes long; at most {MAX_SECRET_BYTES} are allowed",
                secret.len()
            )));
        }
        Ok(Secret(secret.into_boxed_str()))
    }

    /// The secret itself, for signing and for storage that must keep it.
    pub fn expose(&self) -> &str {
        &self.0
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
