//! Orchestrator components: code that hooks into the blackboard's life cycle (the webhook
//! delivery component is one).

use std::sync::Arc;

use async_trait::async_trait;
use flock_models::{Artifact, NewDelivery};
use uuid::Uuid;

/// What happens to a published artifact after an `on_artifact_published` hook.
#[derive(Debug, Clone, PartialEq)]
pub enum Flow {
    /// Pass it on unchanged to the next hook and then to the agents.
    Continue,
    /// Pass this artifact on instead (the stored one stays as it was stored).
    Replace(Arc<Artifact>),
    /// Wake no agents for it; later hooks are not called.
    Stop,
}

/// Whether an agent runs for an artifact, as an `on_before_schedule` hook decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleDecision {
    /// Schedule it (unless a later hook skips it).
    Continue,
    /// Do not run this agent for this artifact.
    Skip,
}

/// A component: a name, a priority and hooks, all with defaults that do nothing.
///
/// Hooks run in priority order, lower first; equal priorities keep registration order. A hook
/// that panics is logged as an error on the orchestrator and treated as if it had returned its
/// default; it never takes the orchestrator down.
#[async_trait]
pub trait Component: Send + Sync + 'static {
    /// A name for logs and errors.
    fn name(&self) -> &str;

    /// Lower runs first. The default is 100.
    fn priority(&self) -> i32 {
        100
    }

    /// Called once when the orchestrator starts.
    async fn on_initialize(&self) {}

    /// Called for every artifact just before it is stored, while the artifact's workflow holds
    /// its publish lock (so calls for one workflow come one at a time, in blackboard order).
    /// Deliveries pushed to `outbox` are stored in the same transaction as the artifact. It must
    /// be quick and must not block: no I/O here.
    fn before_store(&self, artifact: &Artifact, outbox: &mut Vec<NewDelivery>) {
        let _ = (artifact, outbox);
    }

    /// Called for every artifact after it is stored, before agents are woken.
    async fn on_artifact_published(&self, artifact: &Arc<Artifact>) -> Flow {
        let _ = artifact;
        Flow::Continue
    }

    /// Called before `agent` is scheduled to consume `artifact`.
    async fn on_before_schedule(&self, agent: &str, artifact: &Arc<Artifact>) -> ScheduleDecision {
        let _ = (agent, artifact);
        ScheduleDecision::Continue
    }

    /// Called each time workflow `correlation_id` goes idle: nothing queued, nothing running.
    /// When a publish leaves the workflow idle this runs on the publishing task, before the
    /// publish returns, so keep it short.
    async fn on_correlation_idle(&self, correlation_id: Uuid) {
        let _ = correlation_id;
    }

    /// Called once when the orchestrator shuts down, after agents have finished or the
    /// deadline passed.
    async fn on_shutdown(&self) {}
}
