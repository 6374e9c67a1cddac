//! Flock's LLM agent kind: an agent that asks an OpenAI-compatible chat completions API for the
//! artifacts to publish, with structured output checked against the declared types' JSON
//! Schemas.
#![doc = include_str!("../README.md")]

mod agent;
mod metrics;
mod protocol;
mod spec;

pub use agent::{LlmAgent, LlmAgentBuilder};
pub use metrics::describe_metrics;
pub use spec::{ApiKey, LlmSpec};
