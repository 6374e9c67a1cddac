//! The LLM agent: built from an [`LlmSpec`], it asks an OpenAI-compatible chat completions API
//! for artifacts of the types it publishes, with structured output, checks the answer, and
//! retries as the retry policy and the one structured-output retry allow.

use std::error::Error as StdError;
use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use flock_models::{Artifact, ArtifactDraft, EXTERNAL_PRODUCER, TypeName, ValidationError};
use flock_orchestrator::{Agent, AgentContext, AgentError, AgentKind, Subscription};
use flock_retry::{Decision, Outcome, RetryPolicy, parse_retry_after};
use flock_schema::TypeSchemas;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use serde_json::{Value, json};

use crate::metrics;
use crate::protocol::{self, Completion, Message, Rejection, answer_text, parse_artifacts};
use crate::spec::{Checked, LlmSpec};

/// `User-Agent` of every request.
const USER_AGENT: &str = concat!("flock-llm/", env!("CARGO_PKG_VERSION"));

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest answer read, in bytes.
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// How much of an error answer's body is kept for the message.
const ERROR_BODY_CHARS: usize = 300;

/// Builds an [`LlmAgent`]: its name and spec, what it consumes and publishes, and optionally
/// its timeout, retry policy and the declared types' schemas.
pub struct LlmAgentBuilder {
    name: String,
    spec: LlmSpec,
    consumes: Vec<TypeName>,
    publishes: Vec<TypeName>,
    timeout: Option<Duration>,
    retry: RetryPolicy,
    types: Arc<TypeSchemas>,
}

impl LlmAgentBuilder {
    /// The types that wake the agent (at least one).
    #[must_use]
    pub fn consumes(mut self, types: impl IntoIterator<Item = TypeName>) -> Self {
        self.consumes.extend(types);
        self
    }

    /// The types it publishes (at least one); the structured output offers exactly these.
    #[must_use]
    pub fn publishes(mut self, types: impl IntoIterator<Item = TypeName>) -> Self {
        for t in types {
            if !self.publishes.contains(&t) {
                self.publishes.push(t);
            }
        }
        self
    }

    /// How long one run may take, retries and waits included; the orchestrator's default if
    /// not set.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The policy for requests that fail with 429, 5xx, a connection error or a timeout
    /// ([`RetryPolicy::default`] if not set: four attempts, 1 s, 2 s, 4 s apart);
    /// `Retry-After` on 429 and 503 waits at least as long as asked, up to `max_delay`.
    #[must_use]
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The declared types: a published type with a schema gets it in the structured output,
    /// and every answer is checked against it.
    #[must_use]
    pub fn types(mut self, types: Arc<TypeSchemas>) -> Self {
        self.types = types;
        self
    }

    /// Checks everything and builds the agent, reading the API key from the process
    /// environment.
    ///
    /// # Errors
    /// The first invalid value, named as configuration writes it: `name`, `consumes`,
    /// `publishes`, `retry`, or `llm.<field>` (`llm.base_url`, `llm.api_key_env`, ...).
    pub fn build(self) -> Result<LlmAgent, ValidationError> {
        self.build_with_env(&|name| std::env::var(name).ok())
    }

    /// [`LlmAgentBuilder::build`] with the environment given as a lookup function.
    ///
    /// # Errors
    /// As [`LlmAgentBuilder::build`].
    pub fn build_with_env(
        self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<LlmAgent, ValidationError> {
        check_name(&self.name)?;
        if self.consumes.is_empty() {
            return Err(ValidationError::field(
                "consumes",
                "at least one artifact type is required",
            ));
        }
        if self.publishes.is_empty() {
            return Err(ValidationError::field(
                "publishes",
                "an LLM agent must publish at least one artifact type",
            ));
        }
        self.retry
            .validate()
            .map_err(|e| ValidationError::field("retry", e.to_string()))?;
        let checked = self.spec.check(env).map_err(|e| e.within("llm"))?;
        let client = client(&checked)
            .map_err(|e| ValidationError::field("llm.base_url", format!("no HTTP client: {e}")))?;
        let system =
            protocol::system_message(checked.system.as_deref(), &self.publishes, &self.types);
        let response_format = protocol::response_format(&self.publishes, &self.types);
        Ok(LlmAgent {
            subscriptions: vec![Subscription::to(self.consumes)],
            name: self.name,
            publishes: self.publishes,
            timeout: self.timeout,
            retry: self.retry,
            types: self.types,
            spec: checked,
            system,
            response_format,
            client,
        })
    }
}

/// The same rules as other agents' names: a type name, and not `external`.
fn check_name(name: &str) -> Result<(), ValidationError> {
    if name == EXTERNAL_PRODUCER {
        return Err(ValidationError::field(
            "name",
            format!("`{EXTERNAL_PRODUCER}` is reserved for artifacts published by clients"),
        ));
    }
    TypeName::new(name)
        .map(drop)
        .map_err(|e| ValidationError::field("name", e.message().replace("type name", "name")))
}

/// One client per agent: rustls for `https`, no redirects (a POST must not turn into something
/// else), no automatic retries (the policy decides), the system's proxy settings except for
/// loopback servers.
fn client(spec: &Checked) -> Result<reqwest::Client, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .retry(reqwest::retry::never())
        .tcp_nodelay(true);
    if is_loopback(&spec.endpoint) {
        builder = builder.no_proxy();
    }
    builder.build()
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// An agent that asks a model, over an OpenAI-compatible chat completions API, for the
/// artifacts to publish.
///
/// Each run sends the system prompt (with the answer's format and the declared schemas of the
/// types it publishes) and the consumed artifacts as JSON, asking for structured output
/// (`response_format` `json_schema`, `strict`). An answer that was cut off (`finish_reason`
/// other than `stop`), is not JSON, or does not match the types is sent back once with the
/// error; a second bad answer fails the run. Requests answered 429 or 5xx, or that could not
/// connect, are retried by the retry policy, honouring `Retry-After`.
pub struct LlmAgent {
    name: String,
    subscriptions: Vec<Subscription>,
    publishes: Vec<TypeName>,
    timeout: Option<Duration>,
    retry: RetryPolicy,
    types: Arc<TypeSchemas>,
    spec: Checked,
    system: String,
    response_format: Value,
    client: reqwest::Client,
}

impl LlmAgent {
    /// Starts building the agent `name` from `spec`.
    pub fn builder(name: impl Into<String>, spec: LlmSpec) -> LlmAgentBuilder {
        LlmAgentBuilder {
            name: name.into(),
            spec,
            consumes: Vec::new(),
            publishes: Vec::new(),
            timeout: None,
            retry: RetryPolicy::default(),
            types: Arc::new(TypeSchemas::empty()),
        }
    }

    /// The `response_format` this agent sends: what its answers must look like.
    pub fn response_format(&self) -> &Value {
        &self.response_format
    }

    /// The system message this agent sends: the configured prompt and the answer's format.
    pub fn system_message(&self) -> &str {
        &self.system
    }

    /// One request with the policy's retries: the completion, or the error that ended it.
    async fn complete(
        &self,
        ctx: &AgentContext,
        messages: &[Message],
    ) -> Result<Completion, AgentError> {
        let mut body = json!({
            "model": self.spec.model,
            "messages": messages,
            "response_format": self.response_format,
            "stream": false,
        });
        if let Some(t) = self.spec.temperature {
            body["temperature"] = json!(t);
        }
        if let Some(n) = self.spec.max_tokens {
            body["max_tokens"] = json!(n);
        }
        let body = serde_json::to_vec(&body)
            .map_err(|e| AgentError::Failed(format!("could not encode the request: {e}")))?;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let started = Instant::now();
            let result = self.post(body.clone()).await;
            let took = started.elapsed();
            metrics::request(&self.name, took);
            match result {
                Ok(completion) => {
                    let usage = completion.usage.unwrap_or_default();
                    metrics::tokens(&self.name, usage);
                    tracing::debug!(
                        agent = %self.name,
                        correlation_id = %ctx.correlation_id,
                        url = %self.spec.endpoint,
                        model = %self.spec.model,
                        attempt,
                        finish_reason = completion.choices.first().and_then(|c| c.finish_reason.as_deref()).unwrap_or("none"),
                        prompt_tokens = usage.prompt_tokens,
                        completion_tokens = usage.completion_tokens,
                        took_ms = took.as_millis() as u64,
                        "llm call"
                    );
                    return Ok(completion);
                }
                Err(failure) => {
                    metrics::error(&self.name, failure.reason());
                    tracing::debug!(
                        agent = %self.name,
                        correlation_id = %ctx.correlation_id,
                        url = %self.spec.endpoint,
                        model = %self.spec.model,
                        attempt,
                        status = failure.status().unwrap_or(0),
                        error = %failure,
                        took_ms = took.as_millis() as u64,
                        "llm call failed"
                    );
                    let Some(outcome) = failure.retry_outcome() else {
                        return Err(failure.into_agent_error(&self.spec.endpoint, attempt));
                    };
                    match self.retry.decide(attempt, &outcome, fastrand::f64()) {
                        Decision::RetryAfter(wait) => tokio::time::sleep(wait).await,
                        Decision::GiveUp(_) | Decision::Delivered => {
                            return Err(failure.into_agent_error(&self.spec.endpoint, attempt));
                        }
                    }
                }
            }
        }
    }

    /// One POST: a parsed completion, or what went wrong.
    async fn post(&self, body: Vec<u8>) -> Result<Completion, CallFailure> {
        let mut request = self
            .client
            .post(self.spec.endpoint.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .body(body);
        if let Some(key) = &self.spec.api_key {
            let mut value =
                HeaderValue::try_from(format!("Bearer {}", key.expose())).map_err(|_| {
                    CallFailure::Request("the API key cannot be sent in a header".to_owned())
                })?;
            value.set_sensitive(true);
            request = request.header(AUTHORIZATION, value);
        }
        let mut response = request.send().await.map_err(|e| {
            // The URL is in every message already.
            let e = e.without_url();
            if e.is_timeout() {
                CallFailure::Timeout(chain(&e))
            } else if e.is_connect() {
                CallFailure::Connect(chain(&e))
            } else {
                CallFailure::Transport(chain(&e))
            }
        })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let mut answer = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if answer.len() + chunk.len() > MAX_ANSWER_BYTES {
                        return Err(CallFailure::Answer(format!(
                            "the answer is longer than {MAX_ANSWER_BYTES} bytes"
                        )));
                    }
                    answer.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(CallFailure::Transport(format!(
                        "reading the answer: {}",
                        chain(&e.without_url())
                    )));
                }
            }
        }
        if !status.is_success() {
            let excerpt = self.excerpt(&answer);
            return Err(CallFailure::Status {
                code: status.as_u16(),
                retry_after,
                excerpt,
            });
        }
        serde_json::from_slice::<Completion>(&answer).map_err(|e| {
            CallFailure::Answer(format!(
                "the answer is not a chat completion ({e}): {}",
                self.excerpt(&answer)
            ))
        })
    }

    /// The start of a body for an error message, with the API key taken out should the server
    /// have echoed it.
    fn excerpt(&self, body: &[u8]) -> String {
        let text = String::from_utf8_lossy(body);
        let mut excerpt: String = text.trim().chars().take(ERROR_BODY_CHARS).collect();
        if let Some(key) = &self.spec.api_key {
            excerpt = excerpt.replace(key.expose(), "[redacted]");
        }
        excerpt
    }
}

/// Why one request failed.
#[derive(Debug)]
enum CallFailure {
    /// The request could not be built.
    Request(String),
    /// No connection.
    Connect(String),
    /// The request timed out.
    Timeout(String),
    /// The connection broke.
    Transport(String),
    /// A non-2xx answer.
    Status {
        code: u16,
        retry_after: Option<Duration>,
        excerpt: String,
    },
    /// A 2xx answer that is not a chat completion.
    Answer(String),
}

impl CallFailure {
    /// For the retry policy: 429, 5xx and transport failures are worth another try; other
    /// statuses (a bad request, a wrong key or model) are not.
    fn retry_outcome(&self) -> Option<Outcome> {
        match self {
            CallFailure::Connect(_) => Some(Outcome::ConnectError),
            CallFailure::Timeout(_) => Some(Outcome::Timeout),
            CallFailure::Transport(_) => Some(Outcome::OtherError),
            CallFailure::Status {
                code, retry_after, ..
            } if *code == 429 || *code >= 500 => Some(Outcome::Status {
                code: *code,
                retry_after: *retry_after,
            }),
            CallFailure::Status { .. } | CallFailure::Request(_) | CallFailure::Answer(_) => None,
        }
    }

    fn status(&self) -> Option<u16> {
        match self {
            CallFailure::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// A fixed label for metrics.
    fn reason(&self) -> &'static str {
        match self {
            CallFailure::Request(_) => "request",
            CallFailure::Connect(_) => "connect",
            CallFailure::Timeout(_) => "timeout",
            CallFailure::Transport(_) => "transport",
            CallFailure::Status { code: 429, .. } => "status_429",
            CallFailure::Status { code, .. } if *code >= 500 => "status_5xx",
            CallFailure::Status { .. } => "status_4xx",
            CallFailure::Answer(_) => "answer",
        }
    }

    fn into_agent_error(self, endpoint: &url::Url, attempts: u32) -> AgentError {
        let tries = if attempts == 1 {
            String::new()
        } else {
            format!(" (after {attempts} attempts)")
        };
        match self {
            CallFailure::Answer(e) => {
                AgentError::InvalidOutput(format!("POST {endpoint}: {e}{tries}"))
            }
            other => AgentError::Http(format!("POST {endpoint}: {other}{tries}")),
        }
    }
}

impl fmt::Display for CallFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallFailure::Request(e) => write!(f, "could not send: {e}"),
            CallFailure::Connect(e) => write!(f, "could not connect: {e}"),
            CallFailure::Timeout(e) => write!(f, "timed out: {e}"),
            CallFailure::Transport(e) => write!(f, "failed: {e}"),
            CallFailure::Status { code, excerpt, .. } => {
                let reason = reqwest::StatusCode::from_u16(*code)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("");
                write!(f, "answered HTTP {code} {reason}")?;
                if !excerpt.is_empty() {
                    write!(f, ": {excerpt}")?;
                }
                Ok(())
            }
            CallFailure::Answer(e) => f.write_str(e),
        }
    }
}

/// An error with its sources: `error sending request: client error (Connect): ...`.
fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            let _ = write!(text, ": {cause_text}");
        }
        source = cause.source();
    }
    text
}

#[async_trait]
impl Agent for LlmAgent {
    fn name(&self) -> &str {
        &self.name
    }

    fn subscriptions(&self) -> &[Subscription] {
        &self.subscriptions
    }

    fn publishes(&self) -> &[TypeName] {
        &self.publishes
    }

    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    fn kind(&self) -> AgentKind {
        AgentKind::Llm
    }

    async fn run(
        &self,
        ctx: AgentContext,
        inputs: Vec<Arc<Artifact>>,
    ) -> Result<Vec<ArtifactDraft>, AgentError> {
        let mut messages = vec![
            Message {
                role: "system",
                content: self.system.clone(),
            },
            Message {
                role: "user",
                content: protocol::user_message(&inputs),
            },
        ];
        let completion = self.complete(&ctx, &messages).await?;
        let first = match self.check(&completion) {
            Ok(drafts) => return Ok(drafts),
            Err(rejection) => rejection,
        };
        metrics::rejected(&self.name, first.reason());
        tracing::debug!(
            agent = %self.name,
            correlation_id = %ctx.correlation_id,
            reason = first.reason(),
            error = %first,
            "llm answer rejected; asking once more with the error"
        );
        let previous = completion
            .choices
            .first()
            .and_then(|c| c.message.as_ref())
            .and_then(|m| m.content.clone())
            .unwrap_or_default();
        messages.push(Message {
            role: "assistant",
            content: previous,
        });
        messages.push(Message {
            role: "user",
            content: first.feedback(),
        });
        let completion = self.complete(&ctx, &messages).await?;
        match self.check(&completion) {
            Ok(drafts) => Ok(drafts),
            Err(second) => {
                metrics::rejected(&self.name, second.reason());
                let message = if second == first {
                    format!("{second}, again after the model was told")
                } else {
                    format!("{second}; before that, after the first answer: {first}")
                };
                Err(AgentError::InvalidOutput(message))
            }
        }
    }
}

impl LlmAgent {
    fn check(&self, completion: &Completion) -> Result<Vec<ArtifactDraft>, Rejection> {
        let text = answer_text(completion, self.spec.max_tokens)?;
        parse_artifacts(&text, &self.publishes, &self.types)
    }
}

impl fmt::Debug for LlmAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `spec` shows the key as `[redacted]`.
        f.debug_struct("LlmAgent")
            .field("name", &self.name)
            .field("publishes", &self.publishes)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> LlmSpec {
        LlmSpec {
            base_url: "https://api.example.com/v1".to_owned(),
            model: "m".to_owned(),
            system: Some("You plan.".to_owned()),
            temperature: Some(0.0),
            max_tokens: Some(64),
            api_key_env: Some("THE_KEY".to_owned()),
        }
    }

    fn env(name: &str) -> Option<String> {
        (name == "THE_KEY").then(|| "sk-do-not-show".to_owned())
    }

    fn t(name: &str) -> TypeName {
        TypeName::new(name).unwrap()
    }

    #[test]
    fn builds_with_fields_named_as_configuration_writes_them() {
        let agent = LlmAgent::builder("planner", spec())
            .consumes([t("Idea")])
            .publishes([t("Plan")])
            .build_with_env(&env)
            .unwrap();
        assert_eq!(agent.name(), "planner");
        assert_eq!(agent.kind(), AgentKind::Llm);
        assert_eq!(agent.publishes(), [t("Plan")]);
        assert!(agent.system_message().starts_with("You plan.\n\n"));
        let shown = format!("{agent:?}");
        assert!(!shown.contains("do-not-show"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");

        let cases = [
            (LlmAgent::builder("external", spec()), "name"),
            (LlmAgent::builder("a b", spec()), "name"),
            (
                LlmAgent::builder("p", spec()).publishes([t("Plan")]),
                "consumes",
            ),
            (
                LlmAgent::builder("p", spec()).consumes([t("Idea")]),
                "publishes",
            ),
            (
                LlmAgent::builder(
                    "p",
                    LlmSpec {
                        base_url: "ftp://x".into(),
                        ..spec()
                    },
                )
                .consumes([t("Idea")])
                .publishes([t("Plan")]),
                "llm.base_url",
            ),
            (
                LlmAgent::builder("p", spec())
                    .consumes([t("Idea")])
                    .publishes([t("Plan")])
                    .retry_policy(RetryPolicy {
                        factor: 0,
                        ..RetryPolicy::default()
                    }),
                "retry",
            ),
        ];
        for (builder, field) in cases {
            let error = builder.build_with_env(&env).unwrap_err();
            assert_eq!(error.field_name(), Some(field), "{error}");
        }
        let error = LlmAgent::builder("p", spec())
            .consumes([t("Idea")])
            .publishes([t("Plan")])
            .build_with_env(&|_| None)
            .unwrap_err();
        assert_eq!(error.field_name(), Some("llm.api_key_env"));
    }

    #[test]
    fn only_429_5xx_and_transport_failures_are_retried() {
        let status = |code| CallFailure::Status {
            code,
            retry_after: None,
            excerpt: String::new(),
        };
        assert!(status(429).retry_outcome().is_some());
        assert!(status(500).retry_outcome().is_some());
        assert!(status(503).retry_outcome().is_some());
        assert!(status(400).retry_outcome().is_none());
        assert!(status(401).retry_outcome().is_none());
        assert!(status(404).retry_outcome().is_none());
        assert!(
            CallFailure::Connect(String::new())
                .retry_outcome()
                .is_some()
        );
        assert!(CallFailure::Answer(String::new()).retry_outcome().is_none());
        assert_eq!(
            status(503).to_string(),
            "answered HTTP 503 Service Unavailable"
        );
    }

    #[test]
    fn loopback_hosts_skip_the_proxy() {
        for (url, loopback) in [
            ("http://127.0.0.1:8080/v1", true),
            ("http://[::1]:8080/v1", true),
            ("http://localhost:8080/v1", true),
            ("https://api.example.com/v1", false),
        ] {
            assert_eq!(
                is_loopback(&url::Url::parse(url).unwrap()),
                loopback,
                "{url}"
            );
        }
    }
}
