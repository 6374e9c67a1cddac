//! Flock's blackboard orchestrator: a store of typed artifacts, agents that subscribe to
//! artifact types and publish new ones, component hooks, and per-workflow tracking by
//! correlation id.
#![doc = include_str!("../README.md")]

mod agent;
mod component;
mod store;

pub use agent::{Agent, AgentContext, AgentError, PayloadPredicate, Subscription};
pub use component::{Component, Flow, ScheduleDecision};
pub use store::{ArtifactQuery, ArtifactStore, MemoryStore, Page, StoreError};
