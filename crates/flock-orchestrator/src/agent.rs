//! Agents: code that consumes artifacts of the types it subscribes to and publishes new ones.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flock_models::{Artifact, ArtifactDraft, TypeName};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// A predicate on an artifact's payload.
pub type PayloadPredicate = Arc<dyn Fn(&Map<String, Value>) -> bool + Send + Sync>;

/// What an agent consumes: artifacts of some types, optionally narrowed by producer, tags and a
/// predicate on the payload. An agent is not woken by its own output unless the subscription
/// says [`Subscription::including_own_output`].
#[derive(Clone)]
pub struct Subscription {
    types: Vec<TypeName>,
    from_agents: Vec<String>,
    tags: Vec<String>,
    predicate: Option<PayloadPredicate>,
    include_own_output: bool,
}

impl Subscription {
    /// Artifacts of any of these types.
    pub fn to(types: impl IntoIterator<Item = TypeName>) -> Self {
        Subscription {
            types: types.into_iter().collect(),
            from_agents: Vec::new(),
            tags: Vec::new(),
            predicate: None,
            include_own_output: false,
        }
    }

    /// Only artifacts produced by this agent (or `external`); repeat for several.
    #[must_use]
    pub fn from_agent(mut self, name: impl Into<String>) -> Self {
        self.from_agents.push(name.into());
        self
    }

    /// Only artifacts carrying this tag; repeat to require several.
    #[must_use]
    pub fn with_tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Only artifacts whose payload passes `predicate`.
    #[must_use]
    pub fn when(
        mut self,
        predicate: impl Fn(&Map<String, Value>) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.predicate = Some(Arc::new(predicate));
        self
    }

    /// Also wake the subscribing agent for artifacts it published itself.
    #[must_use]
    pub fn including_own_output(mut self) -> Self {
        self.include_own_output = true;
        self
    }

    /// The types subscribed to.
    pub fn types(&self) -> &[TypeName] {
        &self.types
    }

    /// Whether agent `agent` subscribed this way consumes `artifact`.
    pub fn matches(&self, agent: &str, artifact: &Artifact) -> bool {
        self.types.contains(&artifact.type_name)
            && (self.include_own_output || artifact.produced_by != agent)
            && (self.from_agents.is_empty() || self.from_agents.contains(&artifact.produced_by))
            && self.tags.iter().all(|t| artifact.tags.contains(t))
            && self.predicate.as_ref().is_none_or(|p| p(&artifact.payload))
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("types", &self.types)
            .field("from_agents", &self.from_agents)
            .field("tags", &self.tags)
            .field("predicate", &self.predicate.as_ref().map(|_| "<fn>"))
            .field("include_own_output", &self.include_own_output)
            .finish()
    }
}

/// What a running agent knows about the run.
#[derive(Debug, Clone)]
pub struct AgentContext {
    /// The workflow the consumed artifacts belong to; outputs inherit it.
    pub correlation_id: Uuid,
    /// The agent's own name.
    pub agent: String,
}

/// Why an agent run failed. Recorded on the workflow and published as a `WorkflowError`
/// artifact; it never stops the orchestrator or other agents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    /// The handler reported a failure.
    #[error("{0}")]
    Failed(String),
    /// The run took longer than its timeout.
    #[error("timed out after {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The agent answered something that is not a valid list of artifact drafts.
    #[error("invalid output: {0}")]
    InvalidOutput(String),
    /// An agent process exited unsuccessfully; `stderr` holds the end of what it wrote there.
    #[error("process {status}; stderr: {stderr}")]
    Process {
        /// How it ended (`exit status 3`, `killed by signal 9`).
        status: String,
        /// The last part of its standard error.
        stderr: String,
    },
    /// An HTTP agent could not be reached or answered badly.
    #[error("http agent: {0}")]
    Http(String),
}

/// How an agent is implemented, as `GET /api/v1/agents` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentKind {
    /// Rust code implementing [`Agent`] (the default).
    Rust,
    /// A program from configuration, spawned for each run.
    Command,
    /// An HTTP endpoint from configuration, POSTed to for each run.
    Http,
    /// A model asked over an OpenAI-compatible chat completions API (`flock-llm`).
    Llm,
}

/// An agent: a name, what it consumes, what it may publish, and the handler.
#[async_trait]
pub trait Agent: Send + Sync + 'static {
    /// Its unique name; artifacts it publishes carry it as `produced_by`.
    fn name(&self) -> &str;

    /// What wakes it.
    fn subscriptions(&self) -> &[Subscription];

    /// The types it may publish; any other output is an error.
    fn publishes(&self) -> &[TypeName];

    /// How long one run may take; `None` uses the orchestrator's default.
    fn timeout(&self) -> Option<Duration> {
        None
    }

    /// How it is implemented; Rust agents keep the default.
    fn kind(&self) -> AgentKind {
        AgentKind::Rust
    }

    /// Consumes `inputs` and returns the artifacts to publish.
    ///
    /// The orchestrator passes one consumed artifact per run. When the run times out, or is
    /// still going when shutdown's deadline passes, this future is dropped: release resources
    /// in `Drop`, not after an `.await`.
    async fn run(
        &self,
        ctx: AgentContext,
        inputs: Vec<Arc<Artifact>>,
    ) -> Result<Vec<ArtifactDraft>, AgentError>;
}
