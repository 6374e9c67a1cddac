//! The orchestrator: the publish path, agent scheduling and runs, workflow status, waiting and
//! shutdown.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use flock_models::{
    Artifact, ArtifactDraft, EXTERNAL_PRODUCER, NewDelivery, TenantId, TypeName, ValidationError,
};
use flock_schema::TypeSchemas;
use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use uuid::Uuid;

use crate::agent::{Agent, AgentContext, AgentError, AgentKind, Subscription};
use crate::component::{Component, Flow, ScheduleDecision};
use crate::config::OrchestratorConfig;
use crate::metrics;
use crate::spec::check_agent_name;
use crate::store::{ArtifactQuery, ArtifactStore, MemoryStore, StoreError};
use crate::workflow::{
    CorrelationStatus, ErrorKind, RecordedError, WaitOutcome, Watch, WorkflowState, Workflows,
};

/// The type of the artifacts that announce a failed agent run.
pub const WORKFLOW_ERROR_TYPE: &str = "WorkflowError";

/// How long cancelled runs get, after shutdown's deadline, to unwind (kill their processes,
/// record their errors).
const CANCEL_GRACE: Duration = Duration::from_secs(1);

/// Why the orchestrator could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Two agents have the same name.
    #[error("two agents are named `{0}`; agent names must be unique")]
    DuplicateAgent(String),
    /// An agent's name breaks the naming rules.
    #[error("agent `{name}`: {error}")]
    InvalidAgentName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        error: ValidationError,
    },
    /// The configuration is invalid; the error names the field.
    #[error("invalid orchestrator configuration: {0}")]
    InvalidConfig(ValidationError),
    /// The declared types include one the orchestrator publishes itself, with a payload of its
    /// own ([`WORKFLOW_ERROR_TYPE`]).
    #[error(
        "the type `{0}` cannot be declared: the orchestrator publishes it, with a payload of its own"
    )]
    ReservedType(String),
}

/// Why an artifact was not published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The workflow reached the runaway guard's limit; nothing more is published in it.
    #[error(
        "workflow {correlation_id} reached its limit of {limit} artifacts; nothing more is \
         published in it"
    )]
    LimitReached {
        /// The workflow.
        correlation_id: Uuid,
        /// The limit it reached.
        limit: u64,
    },
    /// The orchestrator is shutting down and accepts no new work.
    #[error("the orchestrator is shutting down")]
    ShuttingDown,
    /// `max_queued_runs` agent runs are waiting for a slot; nothing was stored. Try again once
    /// the queue drains.
    #[error("{queued} agent runs are waiting (the limit is {limit}); try again shortly")]
    Overloaded {
        /// Runs waiting when the publish was refused.
        queued: usize,
        /// `max_queued_runs`.
        limit: usize,
    },
    /// The payload does not match its type's declared schema; nothing was stored. The error's
    /// field is the failing place under `payload` (`payload.steps[3]`).
    #[error("{0}")]
    InvalidPayload(ValidationError),
    /// The store refused the artifact; it was not published.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What [`Orchestrator::shutdown`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Whether every run finished before the deadline.
    pub finished_in_time: bool,
    /// Runs still running at the deadline; they were cancelled (their processes killed) and
    /// recorded as errors of kind `cancelled`.
    pub runs_still_running: usize,
    /// Queued runs that never started because shutdown began.
    pub runs_not_started: usize,
    /// How long the shutdown waited.
    pub waited: Duration,
}

/// An agent as `GET /api/v1/agents` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// Its unique name.
    pub name: String,
    /// How it is implemented.
    pub kind: AgentKind,
    /// The types its subscriptions consume, each once, in subscription order.
    pub consumes: Vec<TypeName>,
    /// The types it may publish.
    pub publishes: Vec<TypeName>,
    /// How long one run may take, in milliseconds (its own timeout or the default).
    pub timeout_ms: u64,
}

/// The blackboard orchestrator. Cheap to clone: clones share one orchestrator.
///
/// Built with [`Orchestrator::builder`]. Publishing stores an artifact, runs the component
/// hooks and schedules the agents it wakes; it never waits for agent runs. Each workflow
/// (correlation id) is tracked: [`Orchestrator::status`] says where it stands and
/// [`Orchestrator::wait_idle`] waits until it has no queued or running work.
#[derive(Clone)]
pub struct Orchestrator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator")
            .field(
                "agents",
                &self
                    .inner
                    .agents
                    .iter()
                    .map(|a| a.name())
                    .collect::<Vec<_>>(),
            )
            .field(
                "components",
                &self
                    .inner
                    .components
                    .iter()
                    .map(|c| c.name())
                    .collect::<Vec<_>>(),
            )
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Builds an [`Orchestrator`]: a store, agents, components and a configuration.
#[derive(Default)]
#[must_use]
pub struct OrchestratorBuilder {
    store: Option<Arc<dyn ArtifactStore>>,
    agents: Vec<Arc<dyn Agent>>,
    components: Vec<Arc<dyn Component>>,
    config: OrchestratorConfig,
    types: Option<Arc<TypeSchemas>>,
}

impl std::fmt::Debug for OrchestratorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrchestratorBuilder")
            .field(
                "agents",
                &self.agents.iter().map(|a| a.name()).collect::<Vec<_>>(),
            )
            .field(
                "components",
                &self.components.iter().map(|c| c.name()).collect::<Vec<_>>(),
            )
            .field("config", &self.config)
            .field("types", &self.types)
            .finish_non_exhaustive()
    }
}

impl OrchestratorBuilder {
    /// Where artifacts are kept; a [`MemoryStore`] unless set.
    pub fn store(mut self, store: Arc<dyn ArtifactStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Registers an agent. Names must be unique.
    pub fn agent(mut self, agent: Arc<dyn Agent>) -> Self {
        self.agents.push(agent);
        self
    }

    /// Registers several agents, in order.
    pub fn agents(mut self, agents: impl IntoIterator<Item = Arc<dyn Agent>>) -> Self {
        self.agents.extend(agents);
        self
    }

    /// Registers a component. Its hooks run by priority, lower first; equal priorities in
    /// registration order.
    pub fn component(mut self, component: Arc<dyn Component>) -> Self {
        self.components.push(component);
        self
    }

    /// The limits and defaults; [`OrchestratorConfig::default`] unless set.
    pub fn config(mut self, config: OrchestratorConfig) -> Self {
        self.config = config;
        self
    }

    /// The declared types: every publish of one of them, a client's or an agent's, must have
    /// a payload its schema accepts. None unless set: every payload is accepted.
    pub fn types(mut self, types: Arc<TypeSchemas>) -> Self {
        self.types = Some(types);
        self
    }

    /// Checks the configuration and the agents, then calls every component's `on_initialize`
    /// in priority order.
    ///
    /// Agent runs and hook tasks run on the tokio runtime this is called on, whichever runtime
    /// later publishes; so an HTTP server may publish from its per-worker runtimes and stop them
    /// while runs go on.
    ///
    /// # Errors
    /// An invalid configuration, an agent name that breaks the rules (those of type names;
    /// `external` is reserved), two agents with the same name, or a declared
    /// [`WORKFLOW_ERROR_TYPE`].
    pub async fn build(self) -> Result<Orchestrator, BuildError> {
        self.config.validate().map_err(BuildError::InvalidConfig)?;
        let types = self.types.unwrap_or_else(|| Arc::new(TypeSchemas::empty()));
        if let Some(reserved) = types.names().find(|t| t.as_str() == WORKFLOW_ERROR_TYPE) {
            return Err(BuildError::ReservedType(reserved.as_str().to_owned()));
        }
        let mut names = std::collections::HashSet::new();
        for agent in &self.agents {
            let name = agent.name();
            check_agent_name(name).map_err(|error| BuildError::InvalidAgentName {
                name: name.to_owned(),
                error,
            })?;
            if !names.insert(name) {
                return Err(BuildError::DuplicateAgent(name.to_owned()));
            }
            if agent.subscriptions().is_empty() {
                tracing::warn!(agent = name, "agent has no subscription and will never run");
            }
        }
        let mut components = self.components;
        // A stable sort keeps registration order among equal priorities.
        components.sort_by_key(|c| c.priority());
        let inner = Arc::new(Inner {
            store: self.store.unwrap_or_else(|| Arc::new(MemoryStore::new())),
            workflows: Workflows::new(
                self.config.max_tracked_workflows,
                self.config.max_recorded_errors,
            ),
            run_slots: Arc::new(Semaphore::new(self.config.max_concurrent_runs)),
            agents: self.agents,
            components,
            config: self.config,
            types,
            tracker: TaskTracker::new(),
            cancel: CancellationToken::new(),
            shutting_down: AtomicBool::new(false),
            shutdown_hooks_done: AtomicBool::new(false),
            running: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            not_started: AtomicUsize::new(0),
            workflow_error_type: TypeName::new(WORKFLOW_ERROR_TYPE)
                .expect("the WorkflowError type name is valid"),
            runtime: tokio::runtime::Handle::current(),
        });
        for component in &inner.components {
            guarded(component.name(), "on_initialize", component.on_initialize()).await;
        }
        Ok(Orchestrator { inner })
    }
}

impl Orchestrator {
    /// A builder with a memory store, no agents, no components and the default configuration.
    pub fn builder() -> OrchestratorBuilder {
        OrchestratorBuilder::default()
    }

    /// Publishes an artifact from outside (`produced_by = "external"`) in workflow
    /// `correlation_id` of tenant `default`; the caller makes the id (a new one per request), so it can prepare
    /// things under it (a webhook context) first.
    ///
    /// Returns once the artifact is stored, the `on_artifact_published` hooks ran and the agents
    /// it wakes are scheduled; it never waits for agent runs.
    ///
    /// # Errors
    /// [`PublishError::ShuttingDown`] after [`Orchestrator::shutdown`] began;
    /// [`PublishError::InvalidPayload`] when the payload does not match its type's declared
    /// schema (nothing was stored; the field names the place under `payload`);
    /// [`PublishError::LimitReached`] when the workflow reached its artifact limit;
    /// [`PublishError::Store`] when the store refused the artifact (nothing was published).
    pub async fn publish(
        &self,
        correlation_id: Uuid,
        draft: ArtifactDraft,
    ) -> Result<Arc<Artifact>, PublishError> {
        self.publish_for(&TenantId::default_tenant(), correlation_id, draft)
            .await
    }

    /// [`Orchestrator::publish`] for `tenant`: the workflow, its artifacts (agent outputs
    /// included) and its deliveries are `tenant`'s. A workflow belongs to the tenant of its
    /// first artifact.
    ///
    /// # Errors
    /// As [`Orchestrator::publish`].
    pub async fn publish_for(
        &self,
        tenant: &TenantId,
        correlation_id: Uuid,
        draft: ArtifactDraft,
    ) -> Result<Arc<Artifact>, PublishError> {
        if self.inner.shutting_down.load(Ordering::Acquire) {
            return Err(PublishError::ShuttingDown);
        }
        let queued = self.inner.queued.load(Ordering::Acquire);
        let limit = self.inner.config.max_queued_runs;
        if queued >= limit {
            return Err(PublishError::Overloaded { queued, limit });
        }
        self.inner
            .types
            .validate(&draft.type_name, &draft.payload)
            .map_err(|e| PublishError::InvalidPayload(e.within("payload")))?;
        self.inner
            .publish_artifact(correlation_id, tenant, draft, EXTERNAL_PRODUCER)
            .await
    }

    /// Publishes `drafts` from outside, in order, in workflow `correlation_id` of `tenant`,
    /// stored together in one write: all of them or none. Each counts against the workflow's
    /// `max_artifacts_per_correlation`, gets the next sequence number of each of the workflow's
    /// webhooks, and wakes agents as a single publish does. Returns them in order.
    ///
    /// # Errors
    /// As [`Orchestrator::publish`]; [`PublishError::InvalidPayload`] names the artifact's
    /// place in the batch (`artifacts[3].payload.title`). Nothing is stored on any error.
    pub async fn publish_batch_for(
        &self,
        tenant: &TenantId,
        correlation_id: Uuid,
        drafts: Vec<ArtifactDraft>,
    ) -> Result<Vec<Arc<Artifact>>, PublishError> {
        if self.inner.shutting_down.load(Ordering::Acquire) {
            return Err(PublishError::ShuttingDown);
        }
        let queued = self.inner.queued.load(Ordering::Acquire);
        let limit = self.inner.config.max_queued_runs;
        if queued >= limit {
            return Err(PublishError::Overloaded { queued, limit });
        }
        for (i, draft) in drafts.iter().enumerate() {
            self.inner
                .types
                .validate(&draft.type_name, &draft.payload)
                .map_err(|e| {
                    PublishError::InvalidPayload(e.within(&format!("artifacts[{i}].payload")))
                })?;
        }
        if drafts.is_empty() {
            return Ok(Vec::new());
        }
        self.inner
            .publish_artifacts(correlation_id, tenant, drafts, EXTERNAL_PRODUCER)
            .await
    }

    /// Where workflow `correlation_id` stands; `None` when neither the orchestrator nor the
    /// store knows it. A workflow no longer tracked in memory is rebuilt from the store: counts
    /// and times from its artifacts, errors from its `WorkflowError` artifacts.
    ///
    /// # Errors
    /// The store failed while rebuilding an untracked workflow.
    pub async fn status(
        &self,
        correlation_id: Uuid,
    ) -> Result<Option<CorrelationStatus>, StoreError> {
        if let Some(status) = self.inner.workflows.status(correlation_id) {
            return Ok(Some(status));
        }
        self.inner.status_from_store(correlation_id).await
    }

    /// Waits until workflow `correlation_id` has no queued or running work, or `timeout`
    /// passes. Only that workflow's work counts; others never delay it.
    pub async fn wait_idle(&self, correlation_id: Uuid, timeout: Duration) -> WaitOutcome {
        match self.inner.workflows.watch(correlation_id) {
            Watch::Tracked(mut busy) => {
                match tokio::time::timeout(timeout, busy.wait_for(|busy| !busy)).await {
                    // A closed channel means the workflow was forgotten, which only happens
                    // to idle workflows.
                    Ok(_) => WaitOutcome::Idle,
                    Err(_) => WaitOutcome::TimedOut,
                }
            }
            Watch::Untracked => {
                let query = ArtifactQuery {
                    limit: 0,
                    ..ArtifactQuery::correlation(correlation_id)
                };
                match self.inner.store.query(&query).await {
                    Ok(page) if page.total > 0 => WaitOutcome::Idle,
                    Ok(_) => WaitOutcome::NotFound,
                    Err(error) => {
                        tracing::warn!(%correlation_id, %error, "store failed while looking up a workflow");
                        WaitOutcome::NotFound
                    }
                }
            }
        }
    }

    /// Stops scheduling, lets running agents finish until `deadline`, cancels those still
    /// running then (killing their processes), and calls every component's `on_shutdown`
    /// once. Queued runs that had not started are dropped. Later publishes are refused with
    /// [`PublishError::ShuttingDown`]; outputs of runs that finish in time are still stored
    /// but wake no agents.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let inner = &self.inner;
        let started = Instant::now();
        inner.shutting_down.store(true, Ordering::Release);
        inner.run_slots.close();
        inner.tracker.close();
        let finished_in_time = tokio::time::timeout(deadline, inner.tracker.wait())
            .await
            .is_ok();
        let runs_still_running = if finished_in_time {
            0
        } else {
            inner.running.load(Ordering::Acquire)
        };
        if !finished_in_time {
            tracing::warn!(
                runs_still_running,
                "shutdown deadline passed; cancelling the runs still going"
            );
            inner.cancel.cancel();
            let _ = tokio::time::timeout(CANCEL_GRACE, inner.tracker.wait()).await;
        }
        if !inner.shutdown_hooks_done.swap(true, Ordering::AcqRel) {
            for component in &inner.components {
                guarded(component.name(), "on_shutdown", component.on_shutdown()).await;
            }
        }
        ShutdownReport {
            finished_in_time,
            runs_still_running,
            runs_not_started: inner.not_started.load(Ordering::Acquire),
            waited: started.elapsed(),
        }
    }

    /// The store artifacts are kept in.
    pub fn store(&self) -> &Arc<dyn ArtifactStore> {
        &self.inner.store
    }

    /// The registered agents, in registration order.
    pub fn agents(&self) -> Vec<AgentInfo> {
        self.inner
            .agents
            .iter()
            .map(|agent| {
                let mut consumes: Vec<TypeName> = Vec::new();
                for type_name in agent.subscriptions().iter().flat_map(Subscription::types) {
                    if !consumes.contains(type_name) {
                        consumes.push(type_name.clone());
                    }
                }
                let timeout = agent
                    .timeout()
                    .unwrap_or(self.inner.config.default_agent_timeout);
                AgentInfo {
                    name: agent.name().to_owned(),
                    kind: agent.kind(),
                    consumes,
                    publishes: agent.publishes().to_vec(),
                    timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                }
            })
            .collect()
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &OrchestratorConfig {
        &self.inner.config
    }

    /// The declared types whose payloads every publish is checked against.
    pub fn types(&self) -> &Arc<TypeSchemas> {
        &self.inner.types
    }
}

struct Inner {
    store: Arc<dyn ArtifactStore>,
    agents: Vec<Arc<dyn Agent>>,
    /// Sorted by priority, registration order among equals.
    components: Vec<Arc<dyn Component>>,
    config: OrchestratorConfig,
    /// The declared types; every publish of one is checked against its schema.
    types: Arc<TypeSchemas>,
    workflows: Workflows,
    /// One permit per concurrent run; closed at shutdown so queued runs give up.
    run_slots: Arc<Semaphore>,
    /// Every run and hook task, so shutdown can wait for them.
    tracker: TaskTracker,
    /// Cancelled when shutdown's deadline passes.
    cancel: CancellationToken,
    shutting_down: AtomicBool,
    shutdown_hooks_done: AtomicBool,
    /// Runs whose handler is executing.
    running: AtomicUsize,
    /// Runs scheduled and not yet holding a slot (nor dropped).
    queued: AtomicUsize,
    /// Queued runs dropped by shutdown.
    not_started: AtomicUsize,
    workflow_error_type: TypeName,
    /// The runtime `build` ran on: runs and hook tasks go there, whichever runtime publishes
    /// (an HTTP server's per-worker runtimes, say), so they outlive the caller's runtime.
    runtime: tokio::runtime::Handle,
}

/// How one agent run ended.
enum RunOutcome {
    Ok(Vec<ArtifactDraft>),
    Failed(AgentError),
    Panicked(String),
    TimedOut(Duration),
    Cancelled,
}

impl Inner {
    /// The one publish path, for external artifacts and agent outputs alike.
    async fn publish_artifact(
        self: &Arc<Self>,
        correlation_id: Uuid,
        tenant: &TenantId,
        draft: ArtifactDraft,
        producer: &str,
    ) -> Result<Arc<Artifact>, PublishError> {
        let mut published = self
            .publish_artifacts(correlation_id, tenant, vec![draft], producer)
            .await?;
        Ok(published.remove(0))
    }

    /// Publishes `drafts` (at least one) in order, stored together, all or none: the runaway
    /// guard counts each, `before_store` runs for each in order under the workflow's publish
    /// lock (so their sequence numbers follow one another), the store writes them and their
    /// deliveries at once, and then each one's hooks and agents follow, in order.
    async fn publish_artifacts(
        self: &Arc<Self>,
        correlation_id: Uuid,
        tenant: &TenantId,
        drafts: Vec<ArtifactDraft>,
        producer: &str,
    ) -> Result<Vec<Arc<Artifact>>, PublishError> {
        let limit = self.config.max_artifacts_per_correlation;
        let count = u64::try_from(drafts.len()).unwrap_or(u64::MAX);
        let what = match drafts.as_slice() {
            [one] => std::borrow::Cow::Borrowed(one.type_name.as_str()),
            many => std::borrow::Cow::Owned(format!("a batch of {} artifacts", many.len())),
        };
        let lock = self
            .workflows
            .begin_publish(correlation_id, tenant, (limit, count), producer, &what)
            .map_err(|refused| {
                tracing::warn!(
                    %correlation_id,
                    produced_by = producer,
                    limit = refused.limit,
                    "runaway guard: artifact dropped"
                );
                metrics::workflow_error(ErrorKind::RunawayGuard);
                PublishError::LimitReached {
                    correlation_id,
                    limit: refused.limit,
                }
            })?;
        // From here on the publish is pending work of the workflow; the guard ends it even if
        // the caller drops this future half-way.
        let mut pending = PendingPublish {
            inner: Arc::clone(self),
            correlation_id,
            count,
            stored: false,
            ended: false,
        };
        let stored = {
            let _in_order = lock.lock().await;
            let artifacts: Vec<Artifact> = drafts
                .into_iter()
                .map(|draft| {
                    Artifact::new(draft, producer, correlation_id).owned_by(tenant.clone())
                })
                .collect();
            let mut deliveries = Vec::new();
            for artifact in &artifacts {
                deliveries.extend(self.before_store(artifact));
            }
            self.store
                .publish_all(&artifacts, deliveries)
                .await
                .map(|()| artifacts.into_iter().map(Arc::new).collect::<Vec<_>>())
        };
        let artifacts = match stored {
            Ok(artifacts) => artifacts,
            Err(error) => {
                tracing::warn!(%correlation_id, produced_by = producer, %error, "store refused an artifact");
                return Err(PublishError::Store(error));
            }
        };
        pending.stored = true;
        self.workflows.stored(correlation_id, count);
        for artifact in &artifacts {
            metrics::artifact_published();
            tracing::debug!(
                %correlation_id,
                artifact_id = %artifact.id,
                r#type = %artifact.type_name,
                produced_by = producer,
                "artifact published"
            );
            self.after_store(correlation_id, Arc::clone(artifact)).await;
        }
        pending.finish().await;
        Ok(artifacts)
    }

    /// Every component's `before_store`, in order, collecting their deliveries. A panicking
    /// hook counts as having pushed nothing.
    fn before_store(&self, artifact: &Artifact) -> Vec<NewDelivery> {
        let mut outbox = Vec::new();
        for component in &self.components {
            let mark = outbox.len();
            let call = std::panic::catch_unwind(AssertUnwindSafe(|| {
                component.before_store(artifact, &mut outbox);
            }));
            if let Err(panic) = call {
                outbox.truncate(mark);
                tracing::error!(
                    component = component.name(),
                    hook = "before_store",
                    correlation_id = %artifact.correlation_id,
                    panic = panic_message(panic.as_ref()),
                    "component hook panicked; treated as if it did nothing"
                );
            }
        }
        outbox
    }

    /// The `on_artifact_published` hooks, then scheduling the agents the artifact wakes.
    async fn after_store(self: &Arc<Self>, correlation_id: Uuid, stored: Arc<Artifact>) {
        let mut artifact = stored;
        for component in &self.components {
            let flow = guarded(
                component.name(),
                "on_artifact_published",
                component.on_artifact_published(&artifact),
            )
            .await
            .unwrap_or(Flow::Continue);
            match flow {
                Flow::Continue => {}
                Flow::Replace(replacement) => artifact = replacement,
                Flow::Stop => {
                    tracing::debug!(%correlation_id, component = component.name(), "a component stopped the artifact");
                    return;
                }
            }
        }
        if self.shutting_down.load(Ordering::Acquire) || self.workflows.is_halted(correlation_id) {
            return;
        }
        for (index, agent) in self.agents.iter().enumerate() {
            let name = agent.name();
            if !agent
                .subscriptions()
                .iter()
                .any(|s| s.matches(name, &artifact))
            {
                continue;
            }
            if self.skipped_by_hooks(name, &artifact).await {
                tracing::debug!(%correlation_id, agent = name, "a component skipped the run");
                continue;
            }
            self.schedule(index, correlation_id, Arc::clone(&artifact));
        }
    }

    /// Whether an `on_before_schedule` hook skips `agent` for `artifact`.
    async fn skipped_by_hooks(&self, agent: &str, artifact: &Arc<Artifact>) -> bool {
        for component in &self.components {
            let decision = guarded(
                component.name(),
                "on_before_schedule",
                component.on_before_schedule(agent, artifact),
            )
            .await
            .unwrap_or(ScheduleDecision::Continue);
            if decision == ScheduleDecision::Skip {
                return true;
            }
        }
        false
    }

    /// Queues a run of agent `index` on `input`, counted as pending work of the workflow.
    fn schedule(self: &Arc<Self>, index: usize, correlation_id: Uuid, input: Arc<Artifact>) {
        self.workflows.begin_run(correlation_id);
        let pending = PendingRun {
            inner: Arc::clone(self),
            correlation_id,
        };
        let queued = QueuedRun::new(self);
        let span = tracing::info_span!(
            "agent_run",
            %correlation_id,
            agent = self.agents[index].name(),
            input = %input.id,
        );
        let inner = Arc::clone(self);
        self.tracker.spawn_on(
            async move {
                inner.run_agent(index, input, correlation_id, queued).await;
                drop(pending);
            }
            .instrument(span),
            &self.runtime,
        );
    }

    /// One run: wait for a slot, run under the timeout, then publish the outputs or record the
    /// error.
    async fn run_agent(
        self: &Arc<Self>,
        index: usize,
        input: Arc<Artifact>,
        correlation_id: Uuid,
        queued: QueuedRun,
    ) {
        let agent = &self.agents[index];
        let slot = Arc::clone(&self.run_slots).acquire_owned().await;
        drop(queued);
        let Ok(permit) = slot else {
            self.not_started.fetch_add(1, Ordering::AcqRel);
            tracing::debug!("shutting down; queued run dropped");
            return;
        };
        if self.shutting_down.load(Ordering::Acquire) {
            self.not_started.fetch_add(1, Ordering::AcqRel);
            return;
        }
        if self.workflows.is_halted(correlation_id) {
            tracing::debug!("runaway guard tripped; queued run dropped");
            return;
        }
        self.workflows.touch(correlation_id);
        self.running.fetch_add(1, Ordering::AcqRel);
        let timeout = agent.timeout().unwrap_or(self.config.default_agent_timeout);
        let ctx = AgentContext {
            correlation_id,
            agent: agent.name().to_owned(),
        };
        let started = Instant::now();
        let run = tokio::time::timeout(
            timeout,
            AssertUnwindSafe(agent.run(ctx, vec![Arc::clone(&input)])).catch_unwind(),
        );
        let outcome = tokio::select! {
            result = run => match result {
                Err(_) => RunOutcome::TimedOut(timeout),
                Ok(Err(panic)) => RunOutcome::Panicked(panic_message(panic.as_ref()).to_owned()),
                Ok(Ok(Err(error))) => RunOutcome::Failed(error),
                Ok(Ok(Ok(drafts))) => RunOutcome::Ok(drafts),
            },
            () = self.cancel.cancelled() => RunOutcome::Cancelled,
        };
        let elapsed = started.elapsed();
        self.running.fetch_sub(1, Ordering::AcqRel);
        drop(permit);
        let name = agent.name();
        let failure = match outcome {
            RunOutcome::Ok(drafts) => match self.check_outputs(agent.as_ref(), &drafts) {
                Ok(()) => {
                    metrics::agent_run(name, "ok", elapsed);
                    tracing::debug!(outputs = drafts.len(), "agent run succeeded");
                    for draft in drafts {
                        self.publish_output(correlation_id, &input.tenant, draft, name)
                            .await;
                    }
                    None
                }
                Err(refused) => {
                    metrics::agent_run(name, "error", elapsed);
                    Some(refused)
                }
            },
            RunOutcome::Failed(error) => {
                metrics::agent_run(name, "error", elapsed);
                let kind = match &error {
                    AgentError::Failed(_) => ErrorKind::Failed,
                    AgentError::Timeout(_) => ErrorKind::Timeout,
                    AgentError::InvalidOutput(_) => ErrorKind::InvalidOutput,
                    AgentError::Process { .. } => ErrorKind::Process,
                    AgentError::Http(_) => ErrorKind::Http,
                };
                Some((kind, error.to_string()))
            }
            RunOutcome::Panicked(message) => {
                metrics::agent_run(name, "panic", elapsed);
                Some((ErrorKind::Panic, format!("panicked: {message}")))
            }
            RunOutcome::TimedOut(timeout) => {
                metrics::agent_run(name, "timeout", elapsed);
                Some((ErrorKind::Timeout, AgentError::Timeout(timeout).to_string()))
            }
            RunOutcome::Cancelled => {
                metrics::agent_run(name, "cancelled", elapsed);
                self.record(
                    correlation_id,
                    RecordedError::new(
                        ErrorKind::Cancelled,
                        Some(name),
                        "cancelled: still running when shutdown's deadline passed",
                    ),
                );
                None
            }
        };
        if let Some((kind, message)) = failure {
            self.fail_run(correlation_id, name, &input, kind, message)
                .await;
        }
    }

    /// Checks a run's outputs before any is published: every type is one the agent declares,
    /// every payload matches its type's declared schema. A refusal (its kind and message)
    /// publishes none of them.
    fn check_outputs(
        &self,
        agent: &dyn Agent,
        drafts: &[ArtifactDraft],
    ) -> Result<(), (ErrorKind, String)> {
        let undeclared: Vec<&str> = drafts
            .iter()
            .map(|d| d.type_name.as_str())
            .filter(|t| !agent.publishes().iter().any(|p| p == t))
            .collect();
        if !undeclared.is_empty() {
            return Err((
                ErrorKind::UndeclaredOutput,
                format!(
                    "returned artifacts of undeclared types ({}); it declares [{}]; \
                     none of its {} outputs was published",
                    undeclared.join(", "),
                    agent
                        .publishes()
                        .iter()
                        .map(TypeName::as_str)
                        .collect::<Vec<_>>()
                        .join(", "),
                    drafts.len()
                ),
            ));
        }
        for (i, draft) in drafts.iter().enumerate() {
            if let Err(error) = self.types.validate(&draft.type_name, &draft.payload) {
                return Err((
                    ErrorKind::InvalidOutput,
                    format!(
                        "{}; none of its {} outputs was published",
                        error.within(&format!("artifacts[{i}].payload")),
                        drafts.len()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Publishes one output of agent `producer`; a refusal is recorded on the workflow.
    async fn publish_output(
        self: &Arc<Self>,
        correlation_id: Uuid,
        tenant: &TenantId,
        draft: ArtifactDraft,
        producer: &str,
    ) {
        match self
            .publish_artifact(correlation_id, tenant, draft, producer)
            .await
        {
            // The runaway guard recorded it already; schemas and the queue's bound are checked
            // by the public `publish` (and schemas, for a run's outputs, by `check_outputs`),
            // never here.
            Ok(_)
            | Err(
                PublishError::LimitReached { .. }
                | PublishError::ShuttingDown
                | PublishError::InvalidPayload(_)
                | PublishError::Overloaded { .. },
            ) => {}
            Err(PublishError::Store(error)) => self.record(
                correlation_id,
                RecordedError::new(
                    ErrorKind::Store,
                    Some(producer),
                    format!("an output could not be stored: {error}"),
                ),
            ),
        }
    }

    /// Records a failed run and publishes its `WorkflowError` artifact.
    async fn fail_run(
        self: &Arc<Self>,
        correlation_id: Uuid,
        agent: &str,
        input: &Artifact,
        kind: ErrorKind,
        message: String,
    ) {
        tracing::warn!(error_kind = %kind, message, "agent run failed");
        self.record(
            correlation_id,
            RecordedError::new(kind, Some(agent), message.clone()),
        );
        let Value::Object(payload) = json!({
            "agent": agent,
            "error": kind.as_str(),
            "message": message,
            "consumed": [input.id],
        }) else {
            return;
        };
        let draft = ArtifactDraft::new(self.workflow_error_type.clone(), payload);
        self.publish_output(correlation_id, &input.tenant, draft, agent)
            .await;
    }

    fn record(&self, correlation_id: Uuid, error: RecordedError) {
        metrics::workflow_error(error.kind);
        self.workflows.record_error(correlation_id, error);
    }

    /// Calls every component's `on_correlation_idle`, on a task of its own.
    fn went_idle(self: &Arc<Self>, correlation_id: Uuid) {
        if self.components.is_empty() {
            tracing::debug!(%correlation_id, "workflow idle");
            return;
        }
        let inner = Arc::clone(self);
        self.tracker.spawn_on(
            async move { inner.idle_hooks(correlation_id).await },
            &self.runtime,
        );
    }

    /// Every component's `on_correlation_idle` for workflow `correlation_id`, in order.
    async fn idle_hooks(&self, correlation_id: Uuid) {
        tracing::debug!(%correlation_id, "workflow idle");
        for component in &self.components {
            guarded(
                component.name(),
                "on_correlation_idle",
                component.on_correlation_idle(correlation_id),
            )
            .await;
        }
    }

    /// Rebuilds the status of a workflow no longer tracked from its artifacts.
    async fn status_from_store(
        &self,
        correlation_id: Uuid,
    ) -> Result<Option<CorrelationStatus>, StoreError> {
        let first = self
            .store
            .query(&ArtifactQuery {
                limit: 1,
                ..ArtifactQuery::correlation(correlation_id)
            })
            .await?;
        let Some(first_artifact) = first.items.first() else {
            return Ok(None);
        };
        let last = self
            .store
            .query(&ArtifactQuery {
                limit: 1,
                offset: usize::try_from(first.total.saturating_sub(1)).unwrap_or(usize::MAX),
                ..ArtifactQuery::correlation(correlation_id)
            })
            .await?;
        let errors = self
            .store
            .query(&ArtifactQuery {
                type_names: vec![self.workflow_error_type.clone()],
                limit: self.config.max_recorded_errors,
                ..ArtifactQuery::correlation(correlation_id)
            })
            .await?;
        let last_activity_at = last
            .items
            .first()
            .map_or(first_artifact.created_at, |a| a.created_at);
        Ok(Some(CorrelationStatus {
            correlation_id,
            tenant: first_artifact.tenant.clone(),
            state: if errors.total > 0 {
                WorkflowState::Failed
            } else {
                WorkflowState::Completed
            },
            artifact_count: first.total,
            error_count: errors.total,
            pending_runs: 0,
            started_at: first_artifact.created_at,
            last_activity_at,
            errors: errors.items.iter().map(error_from_artifact).collect(),
        }))
    }
}

/// A recorded error read back from a `WorkflowError` artifact.
fn error_from_artifact(artifact: &Artifact) -> RecordedError {
    let text = |key: &str| artifact.payload.get(key).and_then(Value::as_str);
    let kind = text("error")
        .and_then(|k| serde_json::from_value(Value::String(k.to_owned())).ok())
        .unwrap_or(ErrorKind::Failed);
    RecordedError {
        kind,
        agent: Some(
            text("agent")
                .unwrap_or(artifact.produced_by.as_str())
                .to_owned(),
        ),
        message: text("message").unwrap_or_default().to_owned(),
        at: artifact.created_at,
    }
}

/// A publish in progress, pending work of its workflow until [finished](PendingPublish::finish)
/// or dropped.
struct PendingPublish {
    inner: Arc<Inner>,
    correlation_id: Uuid,
    /// How many artifacts the publish stores together.
    count: u64,
    stored: bool,
    /// Ended by [`PendingPublish::finish`]: dropping it then does nothing more.
    ended: bool,
}

impl PendingPublish {
    /// Ends the publish on the caller's task: when the workflow goes idle, its idle hooks run
    /// right here rather than on a task spawned for them (a publish with no agent to wake is
    /// the common case, and it ended every such publish with a cross-thread spawn).
    async fn finish(mut self) {
        self.ended = true;
        if self
            .inner
            .workflows
            .end_publish(self.correlation_id, self.stored, self.count)
        {
            self.inner.idle_hooks(self.correlation_id).await;
        }
    }
}

impl Drop for PendingPublish {
    /// A publish whose future was dropped half-way still ends; its idle hooks, if the
    /// workflow went idle, run on a task of their own.
    fn drop(&mut self) {
        if !self.ended
            && self
                .inner
                .workflows
                .end_publish(self.correlation_id, self.stored, self.count)
        {
            self.inner.went_idle(self.correlation_id);
        }
    }
}

/// A queued or running agent run, pending work of its workflow until dropped.
/// A run counted in [`Inner::queued`] until it holds a slot or is dropped.
struct QueuedRun(Arc<Inner>);

impl QueuedRun {
    fn new(inner: &Arc<Inner>) -> Self {
        inner.queued.fetch_add(1, Ordering::AcqRel);
        QueuedRun(Arc::clone(inner))
    }
}

impl Drop for QueuedRun {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

struct PendingRun {
    inner: Arc<Inner>,
    correlation_id: Uuid,
}

impl Drop for PendingRun {
    fn drop(&mut self) {
        if self.inner.workflows.end_run(self.correlation_id) {
            self.inner.went_idle(self.correlation_id);
        }
    }
}

/// Runs a component hook, catching a panic: it is logged and `None` returned, so the caller
/// goes on with the hook's default.
async fn guarded<T>(
    component: &str,
    hook: &'static str,
    call: impl Future<Output = T>,
) -> Option<T> {
    match AssertUnwindSafe(call).catch_unwind().await {
        Ok(value) => Some(value),
        Err(panic) => {
            tracing::error!(
                component,
                hook,
                panic = panic_message(panic.as_ref()),
                "component hook panicked; treated as if it returned its default"
            );
            None
        }
    }
}

/// The message of a panic payload, when it has one.
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}
