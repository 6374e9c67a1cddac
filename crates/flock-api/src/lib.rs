//! Flock's HTTP API: routes, errors, configuration and telemetry, composed from the
//! orchestrator and the delivery engine; plus the `flock-api` binary's commands.
#![doc = include_str!("../README.md")]

pub mod config;
pub mod error;
pub mod idempotency;
pub mod listen;
pub mod telemetry;
