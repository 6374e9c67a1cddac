//! Flock's blackboard orchestrator: a store of typed artifacts, agents that subscribe to
//! artifact types and publish new ones, component hooks, and per-workflow tracking by
//! correlation id.
#![doc = include_str!("../README.md")]

mod agent;
mod command;
mod component;
mod config;
mod exchange;
mod http;
mod idempotency;
mod metrics;
mod orchestrator;
mod spec;
mod store;
mod workflow;

pub use agent::{Agent, AgentContext, AgentError, AgentKind, PayloadPredicate, Subscription};
pub use component::{Component, Flow, ScheduleDecision};
pub use config::OrchestratorConfig;
pub use idempotency::{
    ClaimOutcome, IN_PROGRESS_LEASE, IdempotencyError, IdempotencyLimits, IdempotencyRequest,
    IdempotencyStore, MAX_ANSWER_ARTIFACTS, MemoryIdempotency, RecordedAnswer, SyncAnswer,
};
pub use metrics::describe_metrics;
pub use orchestrator::{
    AgentInfo, BuildError, Orchestrator, OrchestratorBuilder, PublishError, ShutdownReport,
    WORKFLOW_ERROR_TYPE,
};
pub use spec::{AgentBasics, AgentSpec, COMMAND_BASE_ENV, DEFAULT_STDERR_BYTES, MAX_STDERR_BYTES};
pub use store::{ArtifactQuery, ArtifactStore, MemoryStore, Page, StoreError};
pub use workflow::{CorrelationStatus, ErrorKind, RecordedError, WaitOutcome, WorkflowState};
