//! The key itself: `flk_` and 43 characters of base64url (32 bytes from the operating system's
//! random source), shown once; and its SHA-256 hash, which is all that is stored.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};

/// What every key starts with, so that a key is recognisable in a configuration or a leak scan.
pub const KEY_PREFIX: &str = "flk_";

/// Random bytes in a key: 256 bits.
const KEY_BYTES: usize = 32;

/// Characters after the prefix: base64url of 32 bytes without padding.
const KEY_CHARS: usize = 43;

/// An API key as its holder presents it: `flk_` and 43 characters of base64url. It exists in
/// memory only between its generation and the one answer that shows it; `Debug` and `Display`
/// never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// A new key: 32 bytes from the operating system's random source.
    ///
    /// # Panics
    /// When the operating system has no random source to give (nothing can be done safely
    /// without one).
    pub fn generate() -> ApiKey {
        let mut bytes = [0u8; KEY_BYTES];
        getrandom::fill(&mut bytes).expect("the operating system's random source works");
        ApiKey(format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// The key's text, for the one answer that hands it over.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The hash that is stored.
    pub fn hash(&self) -> KeyHash {
        KeyHash::of(&self.0)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

/// A presented text that cannot be a key: it is refused without a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the bearer token is not a Flock API key (`flk_` and 43 characters of base64url)")]
pub struct MalformedKey;

/// The SHA-256 of a key's text: what the store keeps and looks keys up by.
///
/// Looking a key up by its hash needs no constant-time comparison: the key is 256 random bits,
/// and an attacker who learns from timing how much of a hash matched cannot choose a text whose
/// hash has a given prefix, so the timing tells nothing about any key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    /// The hash of a presented text, after checking that it has a key's form.
    ///
    /// # Errors
    /// A text without the `flk_` prefix, of another length, or with a character outside
    /// base64url.
    pub fn of_presented(text: &str) -> Result<KeyHash, MalformedKey> {
        let rest = text.strip_prefix(KEY_PREFIX).ok_or(MalformedKey)?;
        if rest.len() != KEY_CHARS
            || !rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(MalformedKey);
        }
        Ok(KeyHash::of(text))
    }

    fn of(text: &str) -> KeyHash {
        KeyHash(Sha256::digest(text.as_bytes()).into())
    }

    /// The hash as 64 lowercase hexadecimal digits, as the SQL stores keep it.
    pub fn to_hex(&self) -> String {
        base16ct::lower::encode_string(&self.0)
    }

    /// Reads 64 hexadecimal digits back.
    ///
    /// # Errors
    /// Text that is not 64 hexadecimal digits.
    pub fn from_hex(text: &str) -> Result<KeyHash, MalformedKey> {
        let mut bytes = [0u8; 32];
        let decoded = base16ct::mixed::decode(text, &mut bytes).map_err(|_| MalformedKey)?;
        if decoded.len() != 32 {
            return Err(MalformedKey);
        }
        Ok(KeyHash(bytes))
    }
}

impl fmt::Debug for KeyHash {
    /// The first 8 hexadecimal digits: enough to tell hashes apart in a test's output, and a
    /// hash is not the key anyway.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({}..)", &self.to_hex()[..8])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_the_prefix_and_256_random_bits_in_base64url() {
        let a = ApiKey::generate();
        let b = ApiKey::generate();
        assert_ne!(a, b);
        for key in [&a, &b] {
            let text = key.expose();
            assert!(text.starts_with("flk_"), "{text}");
            assert_eq!(text.len(), 4 + 43);
            let raw = URL_SAFE_NO_PAD.decode(&text[4..]).unwrap();
            assert_eq!(raw.len(), 32);
            assert_eq!(KeyHash::of_presented(text).unwrap(), key.hash());
        }
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn debug_shows_no_key_material() {
        let key = ApiKey::generate();
        let shown = format!("{key:?} {:?}", key.hash());
        assert!(!shown.contains(&key.expose()[4..12]), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
        assert!(!shown.contains(&key.hash().to_hex()), "{shown}");
    }

    #[test]
    fn texts_that_cannot_be_keys_are_malformed() {
        let good = ApiKey::generate();
        let body = &good.expose()[4..];
        for bad in [
            String::new(),
            "flk_".to_owned(),
            body.to_owned(),
            format!("flk_{}", &body[1..]),
            format!("flk_{body}A"),
            format!("flk_{}+", &body[1..]),
            format!("FLK_{body}"),
            format!("flk_{}=", &body[1..]),
        ] {
            assert_eq!(KeyHash::of_presented(&bad), Err(MalformedKey), "{bad}");
        }
    }

    #[test]
    fn hex_round_trips() {
        let hash = ApiKey::generate().hash();
        let hex = hash.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(KeyHash::from_hex(&hex).unwrap(), hash);
        assert!(KeyHash::from_hex("abc").is_err());
        assert!(KeyHash::from_hex(&"z".repeat(64)).is_err());
    }
}
