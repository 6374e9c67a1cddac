//! Per-workflow tracking: pending work, counts, recorded errors, the runaway guard, idle
//! signals, and the eviction of idle workflows past a bound.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use flock_models::TenantId;
use flock_models::timestamp::now_micros;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::watch;
use uuid::Uuid;

/// Where a workflow stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowState {
    /// Agent runs are queued or running, or an artifact is being published.
    Active,
    /// Idle, and no error was recorded.
    Completed,
    /// Idle, with at least one recorded error.
    Failed,
}

/// What kind of error a workflow recorded. The `error` field of a `WorkflowError` artifact's
/// payload carries the same word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The agent's handler returned [`AgentError::Failed`](crate::AgentError::Failed).
    Failed,
    /// The run took longer than its timeout.
    Timeout,
    /// The agent's handler panicked.
    Panic,
    /// The agent answered something that is not a valid list of artifacts, or an artifact
    /// whose payload does not match its type's declared schema.
    InvalidOutput,
    /// An agent program exited unsuccessfully or could not be started.
    Process,
    /// An HTTP agent could not be reached or answered badly.
    Http,
    /// The agent returned an artifact of a type it does not declare in `publishes()`.
    UndeclaredOutput,
    /// The runaway guard dropped an artifact: the workflow reached its artifact limit.
    RunawayGuard,
    /// The store refused an artifact.
    Store,
    /// The run was still going when shutdown's deadline passed and was cancelled.
    Cancelled,
}

impl ErrorKind {
    /// The kind as one snake_case word.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Failed => "failed",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Panic => "panic",
            ErrorKind::InvalidOutput => "invalid_output",
            ErrorKind::Process => "process",
            ErrorKind::Http => "http",
            ErrorKind::UndeclaredOutput => "undeclared_output",
            ErrorKind::RunawayGuard => "runaway_guard",
            ErrorKind::Store => "store",
            ErrorKind::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One error recorded on a workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedError {
    /// What kind of error.
    pub kind: ErrorKind,
    /// The agent it concerns, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// What happened, in words.
    pub message: String,
    /// When it was recorded.
    #[serde(with = "flock_models::timestamp::micros")]
    pub at: OffsetDateTime,
}

impl RecordedError {
    /// An error of `kind` about `agent`, recorded now.
    pub(crate) fn new(kind: ErrorKind, agent: Option<&str>, message: impl Into<String>) -> Self {
        RecordedError {
            kind,
            agent: agent.map(str::to_owned),
            message: message.into(),
            at: now_micros(),
        }
    }
}

/// A workflow's status, as `GET /api/v1/correlations/{id}/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorrelationStatus {
    /// The workflow.
    pub correlation_id: Uuid,
    /// The tenant that owns it. Not shown: the API answers a workflow only to its own
    /// tenant, as if another's did not exist.
    #[serde(skip, default = "TenantId::default_tenant")]
    pub tenant: TenantId,
    /// Active, completed or failed.
    pub state: WorkflowState,
    /// How many of its artifacts are stored.
    pub artifact_count: u64,
    /// How many errors it recorded.
    pub error_count: u64,
    /// Agent runs queued or running for it.
    pub pending_runs: u64,
    /// When its first publish began (for a workflow rebuilt from the store: its first
    /// artifact's time).
    #[serde(with = "flock_models::timestamp::micros")]
    pub started_at: OffsetDateTime,
    /// When something last happened in it: a publish, a run starting or ending, an error.
    #[serde(with = "flock_models::timestamp::micros")]
    pub last_activity_at: OffsetDateTime,
    /// Its first recorded errors, oldest first (at most the configured number).
    pub errors: Vec<RecordedError>,
}

/// How [`Orchestrator::wait_idle`](crate::Orchestrator::wait_idle) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WaitOutcome {
    /// The workflow has no queued or running work.
    Idle,
    /// The timeout passed first; the workflow is still active.
    TimedOut,
    /// Neither the orchestrator nor the store knows the workflow.
    NotFound,
}

/// Why a publish was refused before anything was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LimitReached {
    pub(crate) limit: u64,
}

/// What a caller may wait on for one workflow.
pub(crate) enum Watch {
    /// Tracked: the receiver says `true` while the workflow is active.
    Tracked(watch::Receiver<bool>),
    /// Not tracked (never seen, or forgotten after going idle).
    Untracked,
}

/// Every tracked workflow, behind one short-held lock.
pub(crate) struct Workflows {
    registry: Mutex<Registry>,
    max_tracked: usize,
    max_errors: usize,
}

#[derive(Default)]
struct Registry {
    workflows: HashMap<Uuid, Workflow>,
    /// Idle workflows, least recently idle first, by an ever-increasing key.
    idle_order: BTreeMap<u64, Uuid>,
    next_idle_key: u64,
}

struct Workflow {
    /// The tenant that owns it: that of its first artifact.
    tenant: TenantId,
    /// Held while an artifact of this workflow goes through `before_store` and the store, so
    /// its artifacts are stored one at a time, in the order their hooks ran.
    publish_lock: Arc<tokio::sync::Mutex<()>>,
    /// `true` while active; waiters watch for `false`.
    busy: watch::Sender<bool>,
    /// Agent runs queued or running.
    runs: u64,
    /// Publishes begun and not yet finished.
    publishes: u64,
    /// Artifacts stored or being stored: what the runaway guard counts.
    reserved: u64,
    /// Artifacts stored.
    stored: u64,
    error_count: u64,
    errors: Vec<RecordedError>,
    /// The runaway guard tripped: nothing more is scheduled or published.
    halted: bool,
    started_at: OffsetDateTime,
    last_activity_at: OffsetDateTime,
    /// This workflow's key in `idle_order` while it is idle.
    idle_key: Option<u64>,
}

impl Workflow {
    fn new(tenant: TenantId) -> Self {
        let now = now_micros();
        Workflow {
            tenant,
            publish_lock: Arc::new(tokio::sync::Mutex::new(())),
            busy: watch::Sender::new(false),
            runs: 0,
            publishes: 0,
            reserved: 0,
            stored: 0,
            error_count: 0,
            errors: Vec::new(),
            halted: false,
            started_at: now,
            last_activity_at: now,
            idle_key: None,
        }
    }

    fn is_active(&self) -> bool {
        self.runs + self.publishes > 0
    }

    fn status(&self, correlation_id: Uuid) -> CorrelationStatus {
        let state = if self.is_active() {
            WorkflowState::Active
        } else if self.error_count > 0 {
            WorkflowState::Failed
        } else {
            WorkflowState::Completed
        };
        CorrelationStatus {
            correlation_id,
            tenant: self.tenant.clone(),
            state,
            artifact_count: self.stored,
            error_count: self.error_count,
            pending_runs: self.runs,
            started_at: self.started_at,
            last_activity_at: self.last_activity_at,
            errors: self.errors.clone(),
        }
    }
}

impl Registry {
    /// Marks `id` active if it was idle: it leaves the eviction order and its waiters see
    /// `true`.
    fn mark_active(&mut self, id: Uuid) {
        let Some(workflow) = self.workflows.get_mut(&id) else {
            return;
        };
        if let Some(key) = workflow.idle_key.take() {
            self.idle_order.remove(&key);
        }
        workflow
            .busy
            .send_if_modified(|busy| !std::mem::replace(busy, true));
    }

    /// Marks `id` idle if nothing is pending any more; returns whether it just went idle.
    fn settle(&mut self, id: Uuid) -> bool {
        let Some(workflow) = self.workflows.get_mut(&id) else {
            return false;
        };
        if workflow.is_active() || workflow.idle_key.is_some() {
            return false;
        }
        let key = self.next_idle_key;
        self.next_idle_key += 1;
        workflow.idle_key = Some(key);
        workflow.busy.send_replace(false);
        self.idle_order.insert(key, id);
        true
    }

    /// Forgets idle workflows, least recently idle first, until at most `max` are tracked.
    fn evict(&mut self, max: usize) {
        while self.workflows.len() > max {
            let Some((_, id)) = self.idle_order.pop_first() else {
                return;
            };
            self.workflows.remove(&id);
        }
    }
}

impl Workflows {
    pub(crate) fn new(max_tracked: usize, max_errors: usize) -> Self {
        Workflows {
            registry: Mutex::new(Registry::default()),
            max_tracked,
            max_errors,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // Nothing panics while holding the lock; should it ever, the data is still consistent
        // enough to go on (counters only), so poisoning is ignored.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Begins publishing `count` artifacts at once in workflow `id` (tracking it if new):
    /// checks the runaway guard, reserves their places under it and marks the workflow active.
    /// Returns the workflow's publish lock. When refused, the refusal is recorded as an error
    /// naming `what`.
    pub(crate) fn begin_publish(
        &self,
        id: Uuid,
        tenant: &TenantId,
        (limit, count): (u64, u64),
        producer: &str,
        what: &str,
    ) -> Result<Arc<tokio::sync::Mutex<()>>, LimitReached> {
        let mut registry = self.lock();
        let workflow = registry
            .workflows
            .entry(id)
            .or_insert_with(|| Workflow::new(tenant.clone()));
        if workflow.halted || workflow.reserved.saturating_add(count) > limit {
            workflow.halted = true;
            let error = RecordedError::new(
                ErrorKind::RunawayGuard,
                (producer != flock_models::EXTERNAL_PRODUCER).then_some(producer),
                format!(
                    "the workflow reached its limit of {limit} artifacts; {what} from \
                     `{producer}` was dropped and no more agents are scheduled"
                ),
            );
            Self::push_error(workflow, error, self.max_errors);
            return Err(LimitReached { limit });
        }
        workflow.reserved += count;
        workflow.publishes += 1;
        workflow.last_activity_at = now_micros();
        let lock = Arc::clone(&workflow.publish_lock);
        registry.mark_active(id);
        let max = self.max_tracked;
        registry.evict(max);
        Ok(lock)
    }

    /// Counts `count` artifacts of workflow `id` as stored.
    pub(crate) fn stored(&self, id: Uuid, count: u64) {
        let mut registry = self.lock();
        if let Some(workflow) = registry.workflows.get_mut(&id) {
            workflow.stored += count;
            workflow.last_activity_at = now_micros();
        }
    }

    /// Ends a publish of `count` artifacts begun with [`Workflows::begin_publish`]; `stored`
    /// says whether they were stored (if not, their places under the runaway guard are given
    /// back). Returns whether the workflow just went idle.
    pub(crate) fn end_publish(&self, id: Uuid, stored: bool, count: u64) -> bool {
        let mut registry = self.lock();
        let Some(workflow) = registry.workflows.get_mut(&id) else {
            return false;
        };
        workflow.publishes = workflow.publishes.saturating_sub(1);
        if !stored {
            workflow.reserved = workflow.reserved.saturating_sub(count);
            if workflow.reserved == 0 && !workflow.is_active() && workflow.error_count == 0 {
                // Its only publish failed: leave no trace, as if it had never begun. Waiters
                // see the sender go and take the workflow as idle.
                registry.workflows.remove(&id);
                return true;
            }
        }
        let idle = registry.settle(id);
        if idle {
            let max = self.max_tracked;
            registry.evict(max);
        }
        idle
    }

    /// Counts a queued run of workflow `id`. The workflow is active already (the publish that
    /// schedules the run is pending), so it cannot be forgotten meanwhile.
    pub(crate) fn begin_run(&self, id: Uuid) {
        let mut registry = self.lock();
        if let Some(workflow) = registry.workflows.get_mut(&id) {
            workflow.runs += 1;
        }
        registry.mark_active(id);
    }

    /// Ends a run counted with [`Workflows::begin_run`]; returns whether the workflow just went
    /// idle.
    pub(crate) fn end_run(&self, id: Uuid) -> bool {
        let mut registry = self.lock();
        let Some(workflow) = registry.workflows.get_mut(&id) else {
            return false;
        };
        workflow.runs = workflow.runs.saturating_sub(1);
        workflow.last_activity_at = now_micros();
        let idle = registry.settle(id);
        if idle {
            let max = self.max_tracked;
            registry.evict(max);
        }
        idle
    }

    /// Notes activity (a run starting) on workflow `id`.
    pub(crate) fn touch(&self, id: Uuid) {
        if let Some(workflow) = self.lock().workflows.get_mut(&id) {
            workflow.last_activity_at = now_micros();
        }
    }

    /// Whether the runaway guard stopped workflow `id`.
    pub(crate) fn is_halted(&self, id: Uuid) -> bool {
        self.lock().workflows.get(&id).is_some_and(|w| w.halted)
    }

    /// Records an error on workflow `id`.
    pub(crate) fn record_error(&self, id: Uuid, error: RecordedError) {
        let mut registry = self.lock();
        if let Some(workflow) = registry.workflows.get_mut(&id) {
            Self::push_error(workflow, error, self.max_errors);
        }
    }

    fn push_error(workflow: &mut Workflow, error: RecordedError, max: usize) {
        workflow.error_count += 1;
        workflow.last_activity_at = error.at;
        if workflow.errors.len() < max {
            workflow.errors.push(error);
        }
    }

    /// The status of workflow `id`, if tracked.
    pub(crate) fn status(&self, id: Uuid) -> Option<CorrelationStatus> {
        self.lock().workflows.get(&id).map(|w| w.status(id))
    }

    /// Something to wait on until workflow `id` is idle.
    pub(crate) fn watch(&self, id: Uuid) -> Watch {
        match self.lock().workflows.get(&id) {
            Some(workflow) => Watch::Tracked(workflow.busy.subscribe()),
            None => Watch::Untracked,
        }
    }

    /// How many workflows are tracked.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().workflows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workflow_goes_active_then_idle_once() {
        let workflows = Workflows::new(10, 10);
        let id = Uuid::now_v7();
        workflows
            .begin_publish(id, &TenantId::default_tenant(), (5, 1), "external", "Idea")
            .unwrap();
        workflows.stored(id, 1);
        workflows.begin_run(id);
        assert!(!workflows.end_publish(id, true, 1));
        assert_eq!(workflows.status(id).unwrap().state, WorkflowState::Active);
        assert!(workflows.end_run(id));
        let status = workflows.status(id).unwrap();
        assert_eq!(status.state, WorkflowState::Completed);
        assert_eq!(status.artifact_count, 1);
        assert_eq!(status.pending_runs, 0);
    }

    #[test]
    fn the_guard_refuses_past_the_limit_and_records_each_refusal() {
        let workflows = Workflows::new(10, 1);
        let id = Uuid::now_v7();
        for _ in 0..2 {
            workflows
                .begin_publish(id, &TenantId::default_tenant(), (2, 1), "external", "Idea")
                .unwrap();
            workflows.stored(id, 1);
            workflows.end_publish(id, true, 1);
        }
        assert_eq!(
            workflows
                .begin_publish(id, &TenantId::default_tenant(), (2, 1), "loop", "Idea")
                .unwrap_err(),
            LimitReached { limit: 2 }
        );
        assert!(
            workflows
                .begin_publish(id, &TenantId::default_tenant(), (2, 1), "loop", "Idea")
                .is_err()
        );
        assert!(workflows.is_halted(id));
        let status = workflows.status(id).unwrap();
        assert_eq!(status.state, WorkflowState::Failed);
        assert_eq!(status.error_count, 2);
        assert_eq!(status.errors.len(), 1, "the list is bounded");
        assert_eq!(status.errors[0].kind, ErrorKind::RunawayGuard);
        assert_eq!(status.errors[0].agent.as_deref(), Some("loop"));
    }

    #[test]
    fn a_failed_first_publish_leaves_no_trace() {
        let workflows = Workflows::new(10, 10);
        let id = Uuid::now_v7();
        workflows
            .begin_publish(id, &TenantId::default_tenant(), (5, 1), "external", "Idea")
            .unwrap();
        assert!(workflows.end_publish(id, false, 1));
        assert!(workflows.status(id).is_none());
    }

    #[test]
    fn idle_workflows_are_evicted_least_recently_idle_first() {
        let workflows = Workflows::new(2, 10);
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let busy = Uuid::now_v7();
        workflows
            .begin_publish(
                busy,
                &TenantId::default_tenant(),
                (5, 1),
                "external",
                "Idea",
            )
            .unwrap();
        for &id in &ids {
            workflows
                .begin_publish(id, &TenantId::default_tenant(), (5, 1), "external", "Idea")
                .unwrap();
            workflows.stored(id, 1);
            workflows.end_publish(id, true, 1);
        }
        // The active one stays whatever its age; the idle ones go oldest first.
        assert_eq!(workflows.len(), 2);
        assert!(workflows.status(busy).is_some());
        assert!(workflows.status(ids[0]).is_none());
        assert!(workflows.status(ids[1]).is_none());
        assert!(workflows.status(ids[2]).is_some());
    }
}
