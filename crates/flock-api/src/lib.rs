//! Flock's HTTP API: routes, errors, configuration and telemetry, composed from the
//! orchestrator and the delivery engine; plus the `flock-api` binary's commands.
#![doc = include_str!("../README.md")]

mod app;
mod auth;
mod body;
pub mod config;
pub(crate) mod error;
mod events;
pub(crate) mod idempotency;
pub mod keys_cli;
mod limits;
pub mod listen;
mod log_lines;
mod openapi;
mod quota;
mod routes;
pub mod startup;
mod state;
pub mod telemetry;

pub use app::create_app;
pub use body::BodyLimit;
pub use state::AppState;
