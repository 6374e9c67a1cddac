//! End-to-end support shared by the test suite and the `flock-bench` program: the server in
//! process or as the `flock-api` binary, recording receivers that verify signatures, command
//! agents from a configuration file, and a small API client.
#![doc = include_str!("../README.md")]

pub mod api;
pub mod config;
pub mod receiver;
pub mod server;

pub use api::{Api, metric};
pub use config::{ServerConfig, TransformAgent, Workdir, three_agent_chain};
pub use receiver::{Behaviour, Received, Receiver};
pub use server::{InProcessServer, ServerProcess, flock_api_binary, fresh_flock_api_binary};
