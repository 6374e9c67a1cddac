//! Integration tests of `flock-api`: the production app factory in process, real servers on
//! 127.0.0.1:0 with real webhook receivers, the `flock-api` binary as a process, and durable
//! stores (SQLite files in temporary directories; Postgres when `FLOCK_TEST_POSTGRES_URL`
//! names a server).

mod auth;
mod bad_input;
mod bulk;
mod config;
mod dashboard;
mod durable;
mod events;
mod idempotency;
mod isolation;
mod keys;
mod matrix;
mod options;
mod process;
mod routes;
mod secrets;
mod server;
mod support;
mod tenants;
mod types;
