//! Flock's durable storage: artifacts and the webhook outbox in one database, SQLite (the
//! embedded default) or Postgres (for several instances), with group commit, leases that let
//! any instance take over another's work, redelivery and retention.
#![doc = include_str!("../README.md")]

mod durable;
mod error;
mod idempotency;
mod keys;
mod migrations;
mod ops;
mod postgres;
mod retention;
mod secrets;
mod sql;
mod sqlite;
mod storage;
#[cfg(feature = "testing")]
pub mod testing;
mod url;

pub use error::OpenError;
pub use retention::{Clock, Pruner, Retention};
pub use storage::Storage;
pub use url::{PostgresUrl, StoreUrl, UrlError};
