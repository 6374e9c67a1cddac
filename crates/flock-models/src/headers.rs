//! A webhook's custom headers: names a receiver asked for, with values kept like secrets.

use std::fmt;

use serde_json::Value;

use crate::ValidationError;
use crate::fields::kind;

/// The most custom headers a webhook carries.
pub const MAX_HEADERS: usize = 16;
/// The longest custom header value, in bytes.
pub const MAX_HEADER_VALUE_BYTES: usize = 1024;
/// The longest custom header name, in bytes.
pub const MAX_HEADER_NAME_BYTES: usize = 128;

/// Header names a webhook may not set (compared without regard to case): the ones the HTTP
/// client or the wire contract owns. Names starting with `webhook-` or `x-flock-` are refused
/// too.
pub const REFUSED_HEADER_NAMES: [&str; 6] = [
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "user-agent",
];

/// Prefixes of refused header names, lower case.
pub const REFUSED_HEADER_PREFIXES: [&str; 2] = ["webhook-", "x-flock-"];

/// Headers sent with every attempt of a webhook's deliveries, beside the contract's own: at
/// most [`MAX_HEADERS`], each name an HTTP token that is not refused
/// ([`REFUSED_HEADER_NAMES`], [`REFUSED_HEADER_PREFIXES`]), each value at most
/// [`MAX_HEADER_VALUE_BYTES`] bytes of visible ASCII, spaces and tabs (no CR, LF or other
/// control character).
///
/// The values are treated as secrets (they are how receivers get tokens): `Debug` shows the
/// names only, there is no `Serialize`, and [`WebhookHeaders::expose`] is the one way to read
/// a value. They are not signed: a receiver verifies the body's signature, not these.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct WebhookHeaders(Vec<(String, String)>);

impl WebhookHeaders {
    /// Reads a JSON object of header names to string values; `path` names it in errors
    /// (`webhooks[0].headers`), and a bad header is named by its path and name
    /// (`webhooks[0].headers.Host`).
    ///
    /// # Errors
    /// Not an object, too many headers, or a header whose name or value is refused.
    pub fn from_value(value: Value, path: &str) -> Result<Self, ValidationError> {
        let Value::Object(object) = value else {
            return Err(ValidationError::field(
                path,
                format!(
                    "expected a JSON object of header names to values, found {}",
                    kind(&value)
                ),
            ));
        };
        if object.len() > MAX_HEADERS {
            return Err(ValidationError::field(
                path,
                format!(
                    "{} headers; at most {MAX_HEADERS} are allowed",
                    object.len()
                ),
            ));
        }
        // Names that differ only in case are two headers with the same name: both are sent.
        let mut headers = Vec::with_capacity(object.len());
        for (name, value) in object {
            let at = format!("{path}.{name}");
            let Value::String(value) = value else {
                return Err(ValidationError::field(
                    at,
                    format!("expected a string, found {}", kind(&value)),
                ));
            };
            Self::check(&name, &value).map_err(|message| ValidationError::field(&at, message))?;
            headers.push((name, value));
        }
        Ok(WebhookHeaders(headers))
    }

    /// Headers read back from storage, checked as a request's are.
    ///
    /// # Errors
    /// A refused name or value, or too many headers.
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Result<Self, ValidationError> {
        if pairs.len() > MAX_HEADERS {
            return Err(ValidationError::whole(format!(
                "{} headers; at most {MAX_HEADERS} are allowed",
                pairs.len()
            )));
        }
        for (name, value) in &pairs {
            Self::check(name, value).map_err(|message| ValidationError::field(name, message))?;
        }
        Ok(WebhookHeaders(pairs))
    }

    /// Why `name: value` cannot be a custom header, if it cannot.
    fn check(name: &str, value: &str) -> Result<(), String> {
        if name.is_empty() || name.len() > MAX_HEADER_NAME_BYTES {
            return Err(format!(
                "a header name is 1 to {MAX_HEADER_NAME_BYTES} characters"
            ));
        }
        if let Some(bad) = name.chars().find(|c| !is_token_char(*c)) {
            return Err(format!(
                "{bad:?} cannot be in a header name; names are HTTP tokens (letters, digits and !#$%&'*+-.^_`|~)"
            ));
        }
        let lower = name.to_ascii_lowercase();
        if REFUSED_HEADER_NAMES.contains(&lower.as_str())
            || REFUSED_HEADER_PREFIXES.iter().any(|p| lower.starts_with(p))
        {
            return Err(format!(
                "`{name}` is set by Flock and cannot be given; refused are Host, Content-Length, Content-Type, Transfer-Encoding, Connection, User-Agent and names starting with webhook- or X-Flock-"
            ));
        }
        if value.len() > MAX_HEADER_VALUE_BYTES {
            return Err(format!(
                "the value is {} bytes long; at most {MAX_HEADER_VALUE_BYTES} are allowed",
                value.len()
            ));
        }
        if value.contains(['\r', '\n']) {
            return Err("a header value cannot contain CR or LF".to_owned());
        }
        if value
            .chars()
            .any(|c| !(c == ' ' || c == '\t' || c.is_ascii_graphic()))
        {
            return Err(
                "a header value is visible ASCII characters, spaces and tabs only".to_owned(),
            );
        }
        Ok(())
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The names, in the order given.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(name, _)| name.as_str())
    }

    /// The names and values: the one way to read the values, for the sender and the store.
    pub fn expose(&self) -> &[(String, String)] {
        &self.0
    }
}

impl WebhookHeaders {
    /// Every header name accepted matches this ECMA-262 regular expression (an HTTP token of
    /// 1 to [`MAX_HEADER_NAME_BYTES`] characters) and does not match
    /// [`WebhookHeaders::refused_name_pattern`].
    pub const NAME_PATTERN: &'static str = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$";

    /// Every value accepted matches this: visible ASCII, spaces and tabs.
    pub const VALUE_PATTERN: &'static str = "^[\\t -~]*$";

    /// The refused header names as one ECMA-262 regular expression, case folded by hand (the
    /// OpenAPI document's `propertyNames.not.pattern`).
    pub fn refused_name_pattern() -> String {
        let fold = |word: &str| -> String {
            word.chars()
                .map(|c| {
                    if c.is_ascii_alphabetic() {
                        format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase())
                    } else {
                        c.to_string()
                    }
                })
                .collect()
        };
        let names: Vec<String> = REFUSED_HEADER_NAMES.iter().map(|n| fold(n)).collect();
        let prefixes: Vec<String> = REFUSED_HEADER_PREFIXES.iter().map(|p| fold(p)).collect();
        format!("^(?:{})$|^(?:{})", names.join("|"), prefixes.join("|"))
    }
}

/// RFC 9110's `tchar`.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

impl fmt::Debug for WebhookHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.names().map(|name| (name, "[redacted]")))
            .finish()
    }
}
