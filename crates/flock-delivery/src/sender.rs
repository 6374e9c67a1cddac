//! One attempt of one delivery: the signed POST over the shared HTTP client, and what came of it.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::SystemTime;

use flock_models::NewDelivery;
use flock_retry::{Outcome, parse_retry_after};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use time::OffsetDateTime;

use flock_context::{Refused, SsrfGuard};

use crate::config::{ConfigError, DeliveryConfig};
use crate::outbox::MAX_ERROR_CHARS;
use crate::secrets::TenantSecrets;
use crate::ssrf::{GuardedResolver, Unresolved};

/// `User-Agent` of every webhook request.
pub const USER_AGENT: &str = concat!("flock-webhooks/", env!("CARGO_PKG_VERSION"));

/// The most response body read (and thrown away) so the connection can be reused; a longer
/// body closes the connection instead.
const MAX_DRAINED_BODY: usize = 64 * 1024;

const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");
const FLOCK_SIGNATURE: HeaderName = HeaderName::from_static("x-flock-signature");

/// What one attempt came to: its [`Outcome`], the one word everything else is derived from
/// (the retry decision, the attempt record's status code and error kind, the metrics), and what
/// went wrong in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sent {
    /// What the attempt came to.
    pub(crate) outcome: Outcome,
    /// What went wrong, in words, truncated; `None` for a 2xx.
    pub(crate) error: Option<String>,
}

impl Sent {
    fn failed(outcome: Outcome, error: &str) -> Self {
        Sent {
            outcome,
            error: Some(truncate(error)),
        }
    }

    fn blocked(refused: &Refused) -> Self {
        Sent::failed(Outcome::Blocked, &refused.class())
    }
}

/// Sends attempts: one HTTP client for every delivery, guarded against SSRF, and the tenants'
/// webhook secrets for deliveries without a secret of their own.
#[derive(Clone)]
pub(crate) struct Sender {
    client: reqwest::Client,
    guard: SsrfGuard,
    pub(crate) secrets: Option<Arc<dyn TenantSecrets>>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("guard", &self.guard)
            .field("tenant_secrets", &self.secrets.is_some())
            .finish_non_exhaustive()
    }
}

impl Sender {
    /// The shared client for `config`: pooled connections, the configured timeouts, no
    /// redirects, no proxy (a proxy would connect on our behalf, past the guard), no automatic
    /// retries (every request is an attempt we record), and the guarded resolver.
    pub(crate) fn new(config: &DeliveryConfig, guard: SsrfGuard) -> Result<Self, ConfigError> {
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .retry(reqwest::retry::never())
            .no_proxy()
            .pool_max_idle_per_host(config.max_idle_per_host)
            .tcp_nodelay(true)
            .dns_resolver(Arc::new(GuardedResolver::new(guard.clone())))
            .build()
            .map_err(|e| ConfigError::Client(error_chain(&e)))?;
        Ok(Sender {
            client,
            guard,
            secrets: None,
        })
    }

    /// Makes one attempt of `delivery`, stamped `at`.
    pub(crate) async fn send(&self, delivery: &NewDelivery, at: OffsetDateTime) -> Sent {
        if let Err(refused) = self.guard.check_ip_host(&delivery.url) {
            return Sent::blocked(&refused);
        }
        let headers = match self.headers(delivery, at).await {
            Ok(headers) => headers,
            Err(failure) => return failure,
        };
        let request = self
            .client
            .post(delivery.url.url().clone())
            .headers(headers)
            .body(delivery.body.clone());
        match request.send().await {
            Ok(response) => answered(response).await,
            Err(error) => failed(error),
        }
    }
}

impl Sender {
    /// The headers of one attempt: the webhook's custom headers (marked sensitive, so no
    /// `Debug` of the request shows them; not signed), content type, `webhook-id`,
    /// `webhook-timestamp` and both signatures, by the delivery's own secret (a `Secret` always signs) or else, when the
    /// sender has them, by its tenant's secrets as they are now: during a rotation's grace
    /// period `webhook-signature` carries the new and the old secret's signatures.
    async fn headers(&self, delivery: &NewDelivery, at: OffsetDateTime) -> Result<HeaderMap, Sent> {
        let timestamp = at.unix_timestamp();
        let mut buf = uuid::Uuid::encode_buffer();
        let id: &str = delivery.id.hyphenated().encode_lower(&mut buf);
        let custom = delivery.headers.as_deref().map_or(&[][..], |h| h.expose());
        let mut headers = HeaderMap::with_capacity(5 + custom.len());
        for (name, value) in custom {
            // Names and values were checked when the webhook was built: a failure here means
            // stored headers went bad, and the attempt says so without naming the value.
            let name = HeaderName::try_from(name.as_str()).map_err(|_| {
                Sent::failed(
                    Outcome::OtherError,
                    "a custom header name could not be encoded",
                )
            })?;
            let mut value = header_value(value.clone())?;
            value.set_sensitive(true);
            headers.append(name, value);
        }
        headers.insert(CONTENT_TYPE, APPLICATION_JSON);
        headers.insert(WEBHOOK_ID, header_value(id.to_owned())?);
        headers.insert(WEBHOOK_TIMESTAMP, HeaderValue::from(timestamp));
        let body = &delivery.body;
        let (flock, standard) = if let Some(secret) = &delivery.secret {
            let key = secret.signing_key();
            (
                key.flock_signature(body),
                key.standard_signature(id, timestamp, body),
            )
        } else if let Some(secrets) = &self.secrets {
            let signing = secrets.signing(&delivery.tenant, at).await.map_err(|e| {
                Sent::failed(
                    Outcome::OtherError,
                    &format!("the tenant's webhook secret could not be read: {e}"),
                )
            })?;
            (
                signing.flock_signature(body),
                signing.standard_signatures(id, timestamp, body),
            )
        } else {
            return Ok(headers);
        };
        headers.insert(FLOCK_SIGNATURE, header_value(flock)?);
        headers.insert(WEBHOOK_SIGNATURE, header_value(standard)?);
        Ok(headers)
    }
}

fn header_value(text: String) -> Result<HeaderValue, Sent> {
    HeaderValue::try_from(text)
        .map_err(|_| Sent::failed(Outcome::OtherError, "a header value could not be encoded"))
}

/// The receiver answered: classify the status, read `Retry-After` on 429/503, and drain a
/// small body so the connection goes back to the pool.
async fn answered(mut response: reqwest::Response) -> Sent {
    let status = response.status();
    let code = status.as_u16();
    let retry_after = if matches!(code, 429 | 503) {
        response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()))
    } else {
        None
    };
    let mut drained = 0usize;
    while drained <= MAX_DRAINED_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => drained += chunk.len(),
            Ok(None) | Err(_) => break,
        }
    }
    let outcome = Outcome::Status { code, retry_after };
    let error = (!outcome.is_success()).then(|| {
        let reason = status.canonical_reason().unwrap_or("");
        format!("the receiver answered {code} {reason}")
            .trim_end()
            .to_owned()
    });
    Sent { outcome, error }
}

/// The request failed before an answer: blocked by the guard, timed out, could not connect,
/// or something else. The message names the class of the failure briefly (attempt records can
/// be many, and API callers read them): never the URL (its query may hold tokens) nor an
/// address a name resolved to, which would map the internal network for whoever chose the
/// URL. The whole error, address included, is logged at `debug` for the operator.
fn failed(error: reqwest::Error) -> Sent {
    let error = error.without_url();
    tracing::debug!(error = %error_chain(&error), "webhook attempt failed");
    if let Some(refused) = find_source::<Refused>(&error) {
        return Sent::blocked(refused);
    }
    if error.is_timeout() {
        let message = if error.is_connect() {
            "timed out while connecting"
        } else {
            "timed out"
        };
        Sent::failed(Outcome::Timeout, message)
    } else if error.is_connect() {
        let message = format!("could not connect: {}", connect_class(&error));
        Sent::failed(Outcome::ConnectError, &message)
    } else {
        let message = format!("request failed: {}", other_class(&error));
        Sent::failed(Outcome::OtherError, &message)
    }
}

/// Why a connection could not be made, as a class: from the OS's error kind, or the name not
/// resolving.
fn connect_class(error: &(dyn StdError + 'static)) -> &'static str {
    if find_source::<Unresolved>(error).is_some() {
        return "the host name did not resolve";
    }
    match find_source::<std::io::Error>(error).map(std::io::Error::kind) {
        Some(std::io::ErrorKind::ConnectionRefused) => "connection refused",
        Some(std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted) => {
            "connection reset"
        }
        Some(std::io::ErrorKind::HostUnreachable) => "host unreachable",
        Some(std::io::ErrorKind::NetworkUnreachable) => "network unreachable",
        Some(std::io::ErrorKind::TimedOut) => "timed out",
        _ => "connection failed",
    }
}

/// What went wrong on a connection that was made: the OS's error kind when there is one (its
/// text is fixed), else the HTTP client's innermost message, which names no address.
fn other_class(error: &(dyn StdError + 'static)) -> String {
    if let Some(io) = find_source::<std::io::Error>(error) {
        return io.kind().to_string();
    }
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

/// The first error of type `E` in `error`'s source chain, `error` included.
fn find_source<'a, E: StdError + 'static>(error: &'a (dyn StdError + 'static)) -> Option<&'a E> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// `error` and its sources, joined with `: `, skipping a source whose text the previous one
/// already ends with.
pub(crate) fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut current = error.source();
    while let Some(e) = current {
        let part = e.to_string();
        if !part.is_empty() && !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        current = e.source();
    }
    text
}

/// At most [`MAX_ERROR_CHARS`] characters of `text`, with `…` when cut.
pub(crate) fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_ERROR_CHARS) {
        None => text.to_owned(),
        Some((cut, _)) => {
            let mut short = text[..cut].to_owned();
            short.pop();
            short.push('…');
            short
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_at_most_the_limit_in_characters() {
        assert_eq!(truncate("short"), "short");
        let long = "é".repeat(MAX_ERROR_CHARS + 10);
        let cut = truncate(&long);
        assert_eq!(cut.chars().count(), MAX_ERROR_CHARS);
        assert!(cut.ends_with('…'));
        let exact = "a".repeat(MAX_ERROR_CHARS);
        assert_eq!(truncate(&exact), exact);
    }

    #[test]
    fn user_agent_names_the_version() {
        assert_eq!(
            USER_AGENT,
            format!("flock-webhooks/{}", env!("CARGO_PKG_VERSION"))
        );
    }
}
