//! Integration tests of `flock-store`: one behaviour, checked on every backend (in memory, an
//! SQLite file in a temporary directory and, when `FLOCK_TEST_POSTGRES_URL` names a server, a
//! Postgres database of its own), plus what only durable or SQLite stores do.

mod behaviour;
mod destinations;
mod durable;
mod holds;
mod idempotency;
mod keys;
mod query;
mod secrets;
mod sqlite;
mod support;
