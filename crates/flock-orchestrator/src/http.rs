//! HTTP agents: each run POSTs the consumed artifacts to an `http://` URL and reads the
//! artifacts to publish from the 2xx JSON answer.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use flock_models::{Artifact, ArtifactDraft, TypeName};
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{ACCEPT, CONTENT_TYPE, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::agent::{Agent, AgentContext, AgentError, AgentKind, Subscription};
use crate::exchange::{MAX_ANSWER_BYTES, parse_answer, request_body};
use crate::spec::Common;

/// How much of a non-2xx answer's body is kept for the error message.
const ERROR_BODY_BYTES: usize = 512;

/// How long an unused pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// An endpoint POSTed to once per agent run. See [`AgentSpec`](crate::AgentSpec).
pub(crate) struct HttpAgent {
    common: Common,
    uri: Uri,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl HttpAgent {
    pub(crate) fn new(common: Common, uri: Uri) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .build(connector);
        HttpAgent {
            common,
            uri,
            client,
        }
    }
}

#[async_trait]
impl Agent for HttpAgent {
    fn name(&self) -> &str {
        &self.common.name
    }

    fn subscriptions(&self) -> &[Subscription] {
        &self.common.subscriptions
    }

    fn publishes(&self) -> &[TypeName] {
        &self.common.publishes
    }

    fn timeout(&self) -> Option<Duration> {
        self.common.timeout
    }

    fn kind(&self) -> AgentKind {
        AgentKind::Http
    }

    async fn run(
        &self,
        _ctx: AgentContext,
        inputs: Vec<Arc<Artifact>>,
    ) -> Result<Vec<ArtifactDraft>, AgentError> {
        let body = request_body(&self.common.name, &inputs)?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .header(
                USER_AGENT,
                concat!("flock-agents/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| AgentError::Http(format!("could not build the request: {e}")))?;
        let response =
            self.client.request(request).await.map_err(|e| {
                AgentError::Http(format!("POST {} failed: {}", self.uri, chain(&e)))
            })?;
        let status = response.status();
        let answer = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| {
                AgentError::Http(format!(
                    "reading the answer of POST {} failed: {e} (answers are limited to {MAX_ANSWER_BYTES} bytes)",
                    self.uri
                ))
            })?
            .to_bytes();
        if !status.is_success() {
            let end = answer.len().min(ERROR_BODY_BYTES);
            let excerpt = String::from_utf8_lossy(&answer[..end]);
            return Err(AgentError::Http(format!(
                "POST {} answered {status}: {}",
                self.uri,
                excerpt.trim()
            )));
        }
        parse_answer(&answer)
    }
}

/// An error with its sources: `client error (Connect): tcp connect error: Connection refused`.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}
