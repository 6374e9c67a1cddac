//! Webhook configuration (where to send, how to sign) and the payload every delivery carries.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use url::Url;
use uuid::Uuid;

use crate::fields::{Fields, kind};
use crate::{Artifact, Secret, Tags, TenantId, TypeName, ValidationError, WebhookHeaders};

/// The longest webhook URL accepted, in bytes (a webhook URL is ASCII, so also in characters).
pub const MAX_URL_BYTES: usize = 2048;

/// A decimal octet of an IPv4 address, without leading zeros.
macro_rules! dec_octet {
    () => {
        "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
    };
}

/// A dotted-decimal IPv4 address.
macro_rules! ipv4 {
    () => {
        concat!(
            dec_octet!(),
            r"\.",
            dec_octet!(),
            r"\.",
            dec_octet!(),
            r"\.",
            dec_octet!()
        )
    };
}

/// One to four hexadecimal digits: a piece of an IPv6 address.
macro_rules! h16 {
    () => {
        "[0-9A-Fa-f]{1,4}"
    };
}

/// The last 32 bits of an IPv6 address: two pieces or an IPv4 address.
macro_rules! ls32 {
    () => {
        concat!("(?:", h16!(), ":", h16!(), "|", ipv4!(), ")")
    };
}

/// An IPv6 address, RFC 3986's `IPv6address` rule.
macro_rules! ipv6 {
    () => {
        concat!(
            "(?:(?:",
            h16!(),
            ":){6}",
            ls32!(),
            "|::(?:",
            h16!(),
            ":){5}",
            ls32!(),
            "|(?:",
            h16!(),
            ")?::(?:",
            h16!(),
            ":){4}",
            ls32!(),
            "|(?:(?:",
            h16!(),
            ":)?",
            h16!(),
            ")?::(?:",
            h16!(),
            ":){3}",
            ls32!(),
            "|(?:(?:",
            h16!(),
            ":){0,2}",
            h16!(),
            ")?::(?:",
            h16!(),
            ":){2}",
            ls32!(),
            "|(?:(?:",
            h16!(),
            ":){0,3}",
            h16!(),
            ")?::",
            h16!(),
            ":",
            ls32!(),
            "|(?:(?:",
            h16!(),
            ":){0,4}",
            h16!(),
            ")?::",
            ls32!(),
            "|(?:(?:",
            h16!(),
            ":){0,5}",
            h16!(),
            ")?::",
            h16!(),
            "|(?:(?:",
            h16!(),
            ":){0,6}",
            h16!(),
            ")?::)"
        )
    };
}

/// A webhook URL: absolute `http` or `https` with a host, at most [`MAX_URL_BYTES`] bytes, and
/// without user-info (credentials in a URL end up in logs). One from a request is written in the
/// characters RFC 3986 allows (anything else percent-encoded) and matches
/// [`WebhookUrl::PATTERN`]; one read back from storage ([`WebhookUrl::from_stored`]) may have
/// been accepted by a build that did not ask for the pattern.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct WebhookUrl(Url);

impl WebhookUrl {
    /// Every webhook URL matches this ECMA-262 regular expression (the OpenAPI document's
    /// `pattern`, beside `format: uri`), and [`WebhookUrl::parse`] checks it: `http` or
    /// `https` (any case), `://`, no user-info, a host that is a domain name whose last label
    /// starts with a letter, a dotted-decimal IPv4 address or a bracketed IPv6 address, an
    /// optional port up to 65535, then path, query and fragment in RFC 3986 characters with
    /// `%` only before two hexadecimal digits.
    pub const PATTERN: &'static str = concat!(
        "^[Hh][Tt][Tt][Pp][Ss]?://",
        "(?:(?:[A-Za-z0-9_-]+\\.)*[A-Za-z][A-Za-z0-9_-]*\\.?|",
        ipv4!(),
        "|\\[",
        ipv6!(),
        "\\])",
        "(?::(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}))?",
        "(?:/(?:[A-Za-z0-9._~!$&'()*+,;=:@/-]|%[0-9A-Fa-f]{2})*)?",
        "(?:\\?(?:[A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-Fa-f]{2})*)?",
        "(?:#(?:[A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-Fa-f]{2})*)?$"
    );

    /// Validates a URL.
    ///
    /// # Errors
    /// A URL that is too long, not absolute, not `http`/`https`, without a host, with
    /// user-info, or otherwise outside [`WebhookUrl::PATTERN`].
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        if let Some(url) = PARSED.with_borrow(|parsed| parsed.get(text).cloned()) {
            return Ok(WebhookUrl(url));
        }
        let url = Self::from_stored(text)?;
        if !url_pattern().is_match(text) {
            return Err(ValidationError::whole(outside_pattern(text)));
        }
        PARSED.with_borrow_mut(|parsed| {
            if parsed.len() >= PARSED_PER_THREAD {
                parsed.clear();
            }
            parsed.insert(text.into(), url.0.clone());
        });
        Ok(url)
    }

    /// A URL read back from storage: checked as [`WebhookUrl::parse`] checks it, except for
    /// [`WebhookUrl::PATTERN`], which a build before the pattern did not ask of requests, so
    /// that the deliveries it stored are still sent.
    ///
    /// # Errors
    /// A URL that is too long, not absolute, not `http`/`https`, without a host, or with
    /// user-info.
    pub fn from_stored(text: &str) -> Result<Self, ValidationError> {
        if text.len() > MAX_URL_BYTES {
            return Err(ValidationError::whole(format!(
                "the URL is {} bytes long; at most {MAX_URL_BYTES} are allowed",
                text.len()
            )));
        }
        let url = Url::parse(text)
            .map_err(|e| ValidationError::whole(format!("not an absolute URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ValidationError::whole(format!(
                "the URL scheme must be http or https, not `{}`",
                url.scheme()
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(ValidationError::whole("the URL must have a host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ValidationError::whole(
                "the URL must not contain a user name or password (they would end up in logs)",
            ));
        }
        Ok(WebhookUrl(url))
    }

    /// The parsed URL.
    pub fn url(&self) -> &Url {
        &self.0
    }

    /// The URL as a string.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The URL without its query and fragment, which may carry tokens: the form logs use.
    pub fn for_logs(&self) -> String {
        let mut url = self.0.clone();
        url.set_query(None);
        url.set_fragment(None);
        url.into()
    }
}

/// How many URLs that passed [`WebhookUrl::parse`] each thread keeps, by their text, and
/// forgets all at once when it holds this many. A client names the same webhook URL in publish
/// after publish, and parsing it (the URL parser, then [`WebhookUrl::PATTERN`]) was most of
/// the work a webhook adds to a publish. Each is at most [`MAX_URL_BYTES`] long, twice (the
/// text and the parsed URL): at most 256 KiB per thread.
const PARSED_PER_THREAD: usize = 64;

thread_local! {
    /// The URLs [`WebhookUrl::parse`] accepted lately on this thread ([`PARSED_PER_THREAD`]).
    /// Parsing is a pure function of the text, so an entry is what parsing again would give;
    /// a URL it refused is never kept, and is parsed again to say why.
    static PARSED: RefCell<HashMap<Box<str>, Url>> = RefCell::new(HashMap::new());
}

/// [`WebhookUrl::PATTERN`], compiled once.
fn url_pattern() -> &'static Regex {
    static PATTERN: OnceLock<Regex> = OnceLock::new();
    PATTERN.get_or_init(|| Regex::new(WebhookUrl::PATTERN).expect("the URL pattern compiles"))
}

/// Why a URL that the URL parser took does not match [`WebhookUrl::PATTERN`], in words.
fn outside_pattern(text: &str) -> String {
    const ALLOWED: &str = "-._~:/?#[]@!$&'()*+,;=%";
    if let Some(bad) = text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ALLOWED.contains(*c)))
    {
        return format!(
            "the URL contains {bad:?}; only the characters of RFC 3986 are allowed (percent-encode others)"
        );
    }
    "the URL is not in the accepted form: the host must be a domain name whose last label \
     starts with a letter, a dotted-decimal IPv4 address or a bracketed IPv6 address, the port \
     at most 65535, and `%` must start a percent-encoding of two hexadecimal digits"
        .to_owned()
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookUrl({})", self.for_logs())
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for WebhookUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for WebhookUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        WebhookUrl::parse(&String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// One webhook of a workflow: where its deliveries go and, optionally, the secret that signs
/// them, which artifact types it wants, the custom headers it sends and whether it is ordered.
/// `Debug` shows the secret and the header values as `[redacted]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// The receiver.
    pub url: WebhookUrl,
    /// The signing secret; without one, the tenant's secret signs (when it has one).
    pub secret: Option<Secret>,
    /// Only artifacts of these types are delivered (the others are neither rendered nor
    /// stored as deliveries); every type when `None`. 1 to [`WebhookConfig::MAX_TYPES`] names.
    pub types: Option<Vec<TypeName>>,
    /// Headers sent with every attempt, not signed; their values are kept like the secret.
    pub headers: WebhookHeaders,
    /// Whether delivery n+1 waits until delivery n is delivered or has finally failed.
    pub ordered: bool,
}

impl WebhookConfig {
    /// Validates a URL and an optional secret: a webhook of every type, without custom headers,
    /// not ordered.
    ///
    /// # Errors
    /// An invalid URL (field `url`) or secret (field `secret`).
    pub fn new(url: &str, secret: Option<&str>) -> Result<Self, ValidationError> {
        let url = WebhookUrl::parse(url).map_err(|e| e.within("url"))?;
        let secret = secret
            .map(Secret::new)
            .transpose()
            .map_err(|e| e.within("secret"))?;
        Ok(WebhookConfig {
            url,
            secret,
            types: None,
            headers: WebhookHeaders::default(),
            ordered: false,
        })
    }

    /// The most type names a webhook's `types` lists.
    pub const MAX_TYPES: usize = 64;

    /// Whether an artifact of `type_name` is delivered to this webhook.
    pub fn wants(&self, type_name: &TypeName) -> bool {
        self.types
            .as_ref()
            .is_none_or(|types| types.contains(type_name))
    }

    /// Parses `{"url", "secret"?, "types"?, "headers"?, "ordered"?}`; `path` names the value
    /// in errors (`webhook`, `webhooks[2]`).
    ///
    /// # Errors
    /// A missing, invalid or unknown field, named with its path (`webhooks[0].types[1]`,
    /// `webhooks[2].headers.Host`).
    pub fn from_value(value: Value, path: &str) -> Result<Self, ValidationError> {
        let mut fields = Fields::new(value, path)?;
        let url = expect_string(&mut fields, "url", true)?.unwrap_or_default();
        let secret = expect_string(&mut fields, "secret", false)?;
        let types = fields
            .take("types")
            .map(|value| Self::types_from(value, &fields.path_of("types")))
            .transpose()?;
        let headers = fields
            .take("headers")
            .map(|value| WebhookHeaders::from_value(value, &fields.path_of("headers")))
            .transpose()?
            .unwrap_or_default();
        let ordered = match fields.take("ordered") {
            None => false,
            Some(Value::Bool(ordered)) => ordered,
            Some(other) => {
                return Err(ValidationError::field(
                    fields.path_of("ordered"),
                    format!("expected a boolean, found {}", kind(&other)),
                ));
            }
        };
        fields.finish()?;
        let config = WebhookConfig::new(&url, secret.as_deref())
            .map_err(|e| if path.is_empty() { e } else { e.within(path) })?;
        Ok(WebhookConfig {
            types,
            headers,
            ordered,
            ..config
        })
    }

    /// Reads a `types` list: 1 to [`WebhookConfig::MAX_TYPES`] type names (repeats allowed).
    fn types_from(value: Value, path: &str) -> Result<Vec<TypeName>, ValidationError> {
        let names = crate::fields::string_list(value, path)?;
        if names.is_empty() || names.len() > Self::MAX_TYPES {
            return Err(ValidationError::field(
                path,
                format!(
                    "{} type names; give 1 to {}, or leave `types` out for every type",
                    names.len(),
                    Self::MAX_TYPES
                ),
            ));
        }
        (names.into_iter().enumerate())
            .map(|(i, name)| TypeName::new(name).map_err(|e| e.within(&format!("{path}[{i}]"))))
            .collect()
    }
}

impl<'de> Deserialize<'de> for WebhookConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        WebhookConfig::from_value(Value::deserialize(deserializer)?, "")
            .map_err(serde::de::Error::custom)
    }
}

/// How a publish request wrote a webhook, so that errors about it name the fields the client
/// used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WebhookForm {
    /// `"webhook": {"url", ...}`.
    Nested,
    /// `"webhook_url"` and `"webhook_secret"` at the top level.
    Shorthand,
    /// `"webhooks": [...]`, this one at that index.
    Listed(usize),
}

impl WebhookForm {
    /// The field that held the URL: `webhook.url`, `webhook_url` or `webhooks[i].url`.
    pub fn url_field(self) -> String {
        match self {
            WebhookForm::Nested => "webhook.url".to_owned(),
            WebhookForm::Shorthand => "webhook_url".to_owned(),
            WebhookForm::Listed(i) => format!("webhooks[{i}].url"),
        }
    }

    /// The field that held the secret: `webhook.secret`, `webhook_secret` or
    /// `webhooks[i].secret`.
    pub fn secret_field(self) -> String {
        match self {
            WebhookForm::Nested => "webhook.secret".to_owned(),
            WebhookForm::Shorthand => "webhook_secret".to_owned(),
            WebhookForm::Listed(i) => format!("webhooks[{i}].secret"),
        }
    }
}

/// A webhook a publish request asked for, and the form the client wrote it in. `Debug` shows
/// the secret and header values as `[redacted]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedWebhook {
    /// The webhook.
    pub config: WebhookConfig,
    /// Nested, shorthand or listed.
    pub form: WebhookForm,
}

/// The most webhooks one publish may ask for (`webhooks: [...]`).
pub const MAX_WEBHOOKS: usize = 8;

/// Takes a string field, with the error message a webhook field deserves.
fn expect_string(
    fields: &mut Fields,
    name: &str,
    required: bool,
) -> Result<Option<String>, ValidationError> {
    // The field's path is spelled out only for an error: a publish with a webhook reads a few
    // of these, and formatting each path showed in its profile.
    match fields.take(name) {
        None if required => Err(ValidationError::field(
            fields.path_of(name),
            "this field is required",
        )),
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ValidationError::field(
            fields.path_of(name),
            format!("expected a string, found {}", kind(&other)),
        )),
    }
}

/// The webhook event type; Flock sends one kind of event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    /// An artifact was published in the workflow.
    #[serde(rename = "artifact.created")]
    ArtifactCreated,
}

/// The artifact as a webhook carries it (the correlation id sits one level up).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookArtifact {
    /// The artifact id.
    pub id: Uuid,
    /// The artifact type.
    #[serde(rename = "type")]
    pub type_name: TypeName,
    /// `external` or the producing agent.
    pub produced_by: String,
    /// The artifact's JSON object.
    pub payload: Map<String, Value>,
    /// When it was published (microseconds, UTC).
    #[serde(with = "crate::timestamp::micros")]
    pub created_at: OffsetDateTime,
    /// Its tags.
    pub tags: Tags,
}

/// The body of every webhook request, field order as the wire contract fixes it:
/// `{"event_type","correlation_id","sequence","artifact":{...},"timestamp"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookPayload {
    /// Always `artifact.created`.
    pub event_type: EventType,
    /// The workflow.
    pub correlation_id: Uuid,
    /// 1 for the request's own artifact, then +1 per artifact of the workflow.
    pub sequence: u64,
    /// The artifact.
    pub artifact: WebhookArtifact,
    /// When the payload was built (milliseconds, UTC).
    #[serde(with = "crate::timestamp::millis")]
    pub timestamp: OffsetDateTime,
}

impl WebhookPayload {
    /// The payload announcing `artifact` as number `sequence` of its workflow.
    pub fn new(artifact: &Artifact, sequence: u64, timestamp: OffsetDateTime) -> Self {
        WebhookPayload {
            event_type: EventType::ArtifactCreated,
            correlation_id: artifact.correlation_id,
            sequence,
            artifact: WebhookArtifact {
                id: artifact.id,
                type_name: artifact.type_name.clone(),
                produced_by: artifact.produced_by.clone(),
                payload: artifact.payload.clone(),
                created_at: artifact.created_at,
                tags: artifact.tags.clone(),
            },
            timestamp,
        }
    }

    /// The exact body bytes for `artifact` as number `sequence`: compact JSON in contract order.
    /// Equal to serializing [`WebhookPayload::new`], without copying the artifact.
    pub fn render(artifact: &Artifact, sequence: u64, timestamp: OffsetDateTime) -> Vec<u8> {
        #[derive(Serialize)]
        struct PayloadRef<'a> {
            event_type: EventType,
            correlation_id: Uuid,
            sequence: u64,
            artifact: ArtifactRef<'a>,
            #[serde(with = "crate::timestamp::millis")]
            timestamp: OffsetDateTime,
        }
        let body = PayloadRef {
            event_type: EventType::ArtifactCreated,
            correlation_id: artifact.correlation_id,
            sequence,
            artifact: ArtifactRef::of(artifact),
            timestamp,
        };
        serde_json::to_vec(&body).expect("a payload of JSON values always serializes")
    }

    /// Where the `artifact` object sits in a body made by [`WebhookPayload::render`]: those
    /// bytes equal [`WebhookArtifact::render`] of the artifact, so a store can keep them instead
    /// of a copy. `None` for bytes not shaped like a rendered body.
    pub fn artifact_span(body: &[u8]) -> Option<Range<usize>> {
        const HEAD: &[u8] = br#"{"event_type":"artifact.created","correlation_id":""#;
        const SEQUENCE: &[u8] = br#"","sequence":"#;
        const ARTIFACT: &[u8] = br#","artifact":"#;
        const TIMESTAMP: &[u8] = br#","timestamp":""#;
        let uuid_end = HEAD.len() + 36;
        if !body.starts_with(HEAD) || !body.get(uuid_end..)?.starts_with(SEQUENCE) {
            return None;
        }
        let digits_at = uuid_end + SEQUENCE.len();
        let digits = body
            .get(digits_at..)?
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let start = digits_at + digits + ARTIFACT.len();
        if digits == 0 || !body.get(digits_at + digits..)?.starts_with(ARTIFACT) {
            return None;
        }
        // The timestamp is the last field; the artifact's own keys come before it.
        let end = body
            .windows(TIMESTAMP.len())
            .rposition(|w| w == TIMESTAMP)?;
        let ends_right = body.ends_with(b"\"}")
            && body.get(start) == Some(&b'{')
            && end > start
            && body.get(end - 1) == Some(&b'}');
        ends_right.then_some(start..end)
    }
}

/// The artifact's fields in the order a webhook carries them, borrowed.
#[derive(Serialize)]
struct ArtifactRef<'a> {
    id: Uuid,
    #[serde(rename = "type")]
    type_name: &'a TypeName,
    produced_by: &'a str,
    payload: &'a Map<String, Value>,
    #[serde(with = "crate::timestamp::micros")]
    created_at: OffsetDateTime,
    tags: &'a Tags,
}

impl<'a> ArtifactRef<'a> {
    fn of(artifact: &'a Artifact) -> Self {
        ArtifactRef {
            id: artifact.id,
            type_name: &artifact.type_name,
            produced_by: &artifact.produced_by,
            payload: &artifact.payload,
            created_at: artifact.created_at,
            tags: &artifact.tags,
        }
    }
}

impl WebhookArtifact {
    /// `artifact` as compact JSON, exactly as the `artifact` field of its webhook body
    /// ([`WebhookPayload::artifact_span`] finds these bytes in a body).
    pub fn render(artifact: &Artifact) -> Vec<u8> {
        serde_json::to_vec(&ArtifactRef::of(artifact))
            .expect("an artifact of JSON values always serializes")
    }

    /// The artifact again, with the correlation id the webhook carries one level up and the
    /// tenant it carries not at all.
    pub fn into_artifact(self, correlation_id: Uuid, tenant: TenantId) -> Artifact {
        Artifact {
            tenant,
            id: self.id,
            type_name: self.type_name,
            payload: self.payload,
            produced_by: self.produced_by,
            correlation_id,
            tags: self.tags,
            created_at: self.created_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(text: &str) -> bool {
        PARSED.with_borrow(|parsed| parsed.contains_key(text))
    }

    #[test]
    fn a_url_parsed_again_is_the_same_url_kept_from_the_first_time() {
        let text = "https://receiver.example/hooks/1?tag=a";
        let first = WebhookUrl::parse(text).unwrap();
        assert!(kept(text));
        let again = WebhookUrl::parse(text).unwrap();
        assert_eq!(first, again);
        assert_eq!(again.url(), &Url::parse(text).unwrap());
        assert_eq!(again.as_str(), text);
    }

    #[test]
    fn a_refused_url_is_not_kept_and_is_refused_again_with_its_reason() {
        WebhookUrl::parse("https://receiver.example/ok").unwrap();
        for bad in [
            "ftp://receiver.example/",
            "https://user:pw@receiver.example/",
            "https://re ceiver/",
        ] {
            let first = WebhookUrl::parse(bad).unwrap_err().to_string();
            assert!(!kept(bad), "{bad}");
            assert_eq!(WebhookUrl::parse(bad).unwrap_err().to_string(), first);
        }
    }

    #[test]
    fn a_thread_keeps_at_most_its_bound_of_urls() {
        for i in 0..PARSED_PER_THREAD * 3 + 1 {
            let text = format!("https://receiver.example/hooks/{i}");
            assert_eq!(WebhookUrl::parse(&text).unwrap().as_str(), text);
            assert!(PARSED.with_borrow(HashMap::len) <= PARSED_PER_THREAD);
            assert!(kept(&text));
        }
    }
}
