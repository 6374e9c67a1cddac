//! Integration tests of `flock-orchestrator`: real orchestrators with real agents, scripts and
//! a local HTTP server.

mod builder;
mod command_agents;
mod declared_types;
mod failures;
mod hooks;
mod http_agents;
mod metrics;
mod outbox;
mod shutdown;
mod spec;
mod support;
mod workflows;
