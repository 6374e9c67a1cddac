//! One attempt of one delivery: the signed POST over the shared HTTP client, and what came of it.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use flock_models::{NewDelivery, Secret, WebhookUrl};
use flock_retry::{Outcome, parse_retry_after};
use flock_signing::SigningKey;
use http::header::{self, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use http::{Method, Request, Response, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls_platform_verifier::BuilderVerifierExt as _;
use time::OffsetDateTime;
use tokio::time::Instant;

use flock_context::{Refused, SsrfGuard};

use crate::config::{ConfigError, DeliveryConfig};
use crate::outbox::MAX_ERROR_CHARS;
use crate::pool::{InUse, Pool, SendError};
use crate::secrets::TenantSecrets;
use crate::ssrf::{GuardedResolver, Unresolved};

/// `User-Agent` of every webhook request.
pub const USER_AGENT: &str = concat!("flock-webhooks/", env!("CARGO_PKG_VERSION"));

/// The most response body read (and thrown away) so the connection can be reused; a longer
/// body closes the connection instead.
const MAX_DRAINED_BODY: usize = 64 * 1024;

const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
const FLOCK_USER_AGENT: HeaderValue = HeaderValue::from_static(USER_AGENT);
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
    pool: Pool,
    keys: Arc<SigningKeys>,
    request_timeout: Duration,
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
    /// The shared client for `config`: HTTP/1.1 over the connections of a [`Pool`] (at most
    /// `max_idle_per_host` idle connections a destination, each kept 90 s), TLS by rustls with
    /// the operating system's certificate verifier, the connect timeout, names resolved through
    /// the guard; no redirects followed, no proxy (a proxy would connect on our behalf, past the
    /// guard). A request is sent again only when a kept connection closed before a byte of it
    /// was written, so every request that reaches a receiver is an attempt we record.
    ///
    /// # Errors
    /// The operating system's certificate verifier could not be set up.
    pub(crate) fn new(config: &DeliveryConfig, guard: SsrfGuard) -> Result<Self, ConfigError> {
        let mut http = HttpConnector::new_with_resolver(GuardedResolver::new(guard.clone()));
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.connect_timeout));
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls_config()?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Sender {
            pool: Pool::new(connector, config.max_idle_per_host),
            keys: Arc::new(SigningKeys::default()),
            request_timeout: config.request_timeout,
            guard,
            secrets: None,
        })
    }

    /// Makes one attempt of `delivery`, stamped `at`: the request and its answer's head within
    /// the request timeout, and what is left of it to drain the answer's body.
    pub(crate) async fn send(&self, delivery: &NewDelivery, at: OffsetDateTime) -> Sent {
        if let Err(refused) = self.guard.check_ip_host(&delivery.url) {
            return Sent::blocked(&refused);
        }
        let headers = match self.headers(delivery, at).await {
            Ok(headers) => headers,
            Err(failure) => return failure,
        };
        let mut request = Request::new(Full::new(delivery.body.clone()));
        *request.method_mut() = Method::POST;
        *request.headers_mut() = headers;
        let Some(prepared) = request_uri(&delivery.url).and_then(|uri| Pool::prepare(request, uri))
        else {
            return Sent::failed(
                Outcome::OtherError,
                "the URL could not be made into a request",
            );
        };
        let deadline = Instant::now() + self.request_timeout;
        match tokio::time::timeout_at(deadline, self.pool.send(prepared)).await {
            Ok(Ok((response, connection))) => answered(response, connection, deadline).await,
            Ok(Err(error)) => failed(&error),
            Err(_) => Sent::failed(Outcome::Timeout, "timed out"),
        }
    }
}

/// The URI a request for `url` goes to: the URL as it is stored, without its fragment (which
/// never goes on the wire).
fn request_uri(url: &WebhookUrl) -> Option<Uri> {
    let text = url.as_str();
    let text = text.split_once('#').map_or(text, |(before, _)| before);
    Uri::try_from(text).ok()
}

/// rustls with the process's default crypto provider (else aws-lc-rs), its safe protocol
/// versions and the operating system's certificate verifier: what reqwest's `rustls` feature
/// sets up.
fn tls_config() -> Result<rustls::ClientConfig, ConfigError> {
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let fail = |e: rustls::Error| ConfigError::Client(format!("TLS could not be set up: {e}"));
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(fail)?
        .with_platform_verifier()
        .map_err(fail)?
        .with_no_client_auth())
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
        // Room for the pool's `Host` too.
        let mut headers = HeaderMap::with_capacity(7 + custom.len());
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
        headers.insert(header::USER_AGENT, FLOCK_USER_AGENT);
        headers.insert(WEBHOOK_ID, header_value(id.to_owned())?);
        headers.insert(WEBHOOK_TIMESTAMP, HeaderValue::from(timestamp));
        let body = &delivery.body;
        let (flock, standard) = if let Some(secret) = &delivery.secret {
            let key = self.keys.of(secret);
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

/// How many secrets' signing keys [`SigningKeys`] holds before it starts again.
const MAX_SIGNING_KEYS: usize = 1_024;

/// The signing keys of the webhook secrets used lately. Preparing a secret's two HMAC keys
/// (decoding it, hashing the key pads) was about 2.5% of the dispatcher's work per attempt in a
/// profile, and a webhook's deliveries share its secret. Bounded: emptied when it holds
/// [`MAX_SIGNING_KEYS`]. It holds the deliveries' own secrets, in memory only, and shows
/// none (no `Debug`).
#[derive(Default)]
struct SigningKeys {
    keys: Mutex<HashMap<Box<str>, Arc<SigningKey>>>,
}

impl SigningKeys {
    /// `secret`'s signing key, prepared once while it stays here.
    fn of(&self, secret: &Secret) -> Arc<SigningKey> {
        let text = secret.expose();
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(key) = keys.get(text) {
            return Arc::clone(key);
        }
        if keys.len() >= MAX_SIGNING_KEYS {
            keys.clear();
        }
        let key = Arc::new(secret.signing_key());
        keys.insert(text.into(), Arc::clone(&key));
        key
    }
}

fn header_value(text: String) -> Result<HeaderValue, Sent> {
    HeaderValue::try_from(text)
        .map_err(|_| Sent::failed(Outcome::OtherError, "a header value could not be encoded"))
}

/// The receiver answered: classify the status, read `Retry-After` on 429/503, and drain a
/// small body (until `deadline`); the connection goes back to the pool when the body ended.
async fn answered(response: Response<Incoming>, connection: InUse, deadline: Instant) -> Sent {
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
    let mut body = response.into_body();
    let mut drained = 0usize;
    while drained <= MAX_DRAINED_BODY {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => drained += frame.data_ref().map_or(0, Bytes::len),
            Ok(None) => {
                connection.release();
                break;
            }
            Ok(Some(Err(_))) | Err(_) => break,
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
fn failed(error: &SendError) -> Sent {
    tracing::debug!(error = %error_chain(error), "webhook attempt failed");
    if let Some(refused) = find_source::<Refused>(error) {
        return Sent::blocked(refused);
    }
    if matches!(error, SendError::Connect(_)) {
        if find_source::<std::io::Error>(error).map(std::io::Error::kind)
            == Some(std::io::ErrorKind::TimedOut)
        {
            return Sent::failed(Outcome::Timeout, "timed out while connecting");
        }
        let message = format!("could not connect: {}", connect_class(error));
        Sent::failed(Outcome::ConnectError, &message)
    } else {
        let message = format!("request failed: {}", other_class(error));
        Sent::failed(Outcome::OtherError, &message)
    }
}

/// Why a connection could not be made, as a class: the name not resolving, the TLS handshake
/// (by what rustls refused, never the names it saw), or the OS's error kind.
fn connect_class(error: &(dyn StdError + 'static)) -> &'static str {
    if find_source::<Unresolved>(error).is_some() {
        return "the host name did not resolve";
    }
    let io = find_source::<std::io::Error>(error);
    if let Some(tls) = io.and_then(rustls_error) {
        return tls_class(tls);
    }
    match io.map(std::io::Error::kind) {
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

/// The rustls error an I/O error carries, through the I/O errors wrapped around it (the TLS
/// stream wraps it in one, the connector in another).
fn rustls_error(io: &std::io::Error) -> Option<&rustls::Error> {
    let inner = io.get_ref()?;
    inner.downcast_ref::<rustls::Error>().or_else(|| {
        inner
            .downcast_ref::<std::io::Error>()
            .and_then(rustls_error)
    })
}

/// What rustls refused in a TLS handshake, as a class.
fn tls_class(error: &rustls::Error) -> &'static str {
    use rustls::CertificateError as Cert;
    match error {
        rustls::Error::InvalidCertificate(Cert::UnknownIssuer) => {
            "the receiver's TLS certificate is not from a trusted authority"
        }
        rustls::Error::InvalidCertificate(
            Cert::Expired | Cert::ExpiredContext { .. } | Cert::NotValidYet,
        )
        | rustls::Error::InvalidCertificate(Cert::NotValidYetContext { .. }) => {
            "the receiver's TLS certificate is out of its validity period"
        }
        rustls::Error::InvalidCertificate(
            Cert::NotValidForName | Cert::NotValidForNameContext { .. },
        ) => "the receiver's TLS certificate is not for the URL's host",
        rustls::Error::InvalidCertificate(_) => "the receiver's TLS certificate was refused",
        _ => "the TLS handshake failed",
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
    fn a_request_goes_to_the_url_without_its_fragment() {
        let url = WebhookUrl::parse("https://Hooks.Example:8443/a/b?token=t1#part").unwrap();
        let uri = request_uri(&url).unwrap();
        assert_eq!(uri.scheme_str(), Some("https"));
        assert_eq!(uri.authority().unwrap().as_str(), "hooks.example:8443");
        assert_eq!(uri.path_and_query().unwrap().as_str(), "/a/b?token=t1");
        let ipv6 = WebhookUrl::parse("http://[::1]:9000/hook").unwrap();
        assert_eq!(request_uri(&ipv6).unwrap().host(), Some("[::1]"));
    }

    #[test]
    fn signing_keys_are_prepared_once_per_secret_and_bounded() {
        let keys = SigningKeys::default();
        let (a, b) = (
            Secret::new("secret-a").unwrap(),
            Secret::new("secret-b").unwrap(),
        );
        assert!(Arc::ptr_eq(&keys.of(&a), &keys.of(&a.clone())));
        assert!(!Arc::ptr_eq(&keys.of(&a), &keys.of(&b)));
        assert_eq!(
            keys.of(&b).flock_signature(b"body"),
            b.signing_key().flock_signature(b"body"),
            "each secret signs with its own key"
        );
        for n in 0..=MAX_SIGNING_KEYS {
            keys.of(&Secret::new(format!("secret-{n}")).unwrap());
        }
        assert!(keys.keys.lock().unwrap().len() <= MAX_SIGNING_KEYS);
    }

    #[test]
    fn user_agent_names_the_version() {
        assert_eq!(
            USER_AGENT,
            format!("flock-webhooks/{}", env!("CARGO_PKG_VERSION"))
        );
    }
}
