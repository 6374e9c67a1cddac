//! The SQLite backend, the embedded default: one file in WAL mode, one writer connection that
//! commits batches of writes, a small pool of readers, and a connection of its own that
//! checkpoints the WAL.
//!
//! Durability: `synchronous = NORMAL` in WAL mode. A committed transaction is in the WAL file
//! before the commit returns, so it survives the process dying in any way (`kill -9`
//! included); the WAL is synced to disk at checkpoints, not at every commit, so a power loss or
//! an operating system crash may lose the last transactions before the checkpoint (the
//! database stays consistent).

mod open;
mod write;

use std::time::Duration;

use async_trait::async_trait;
use sqlx::Sqlite;
use sqlx::sqlite::SqliteConnection;
use time::OffsetDateTime;

use crate::sql::Dialect;
use crate::sql::batch::{Answer, Batch};
use crate::sql::rows::{DecodeError, from_micros, micros};

pub(crate) use open::open;

/// Times are microseconds since the Unix epoch; tags are stored as JSON; a transaction reads
/// one snapshot from its first read on.
#[async_trait]
impl Dialect for Sqlite {
    type Time = i64;

    fn time(at: OffsetDateTime) -> i64 {
        micros(at)
    }

    fn from_time(stored: i64) -> Result<OffsetDateTime, DecodeError> {
        from_micros(stored)
    }

    const TAGS: &'static str = "tags";
    const HAS_TAG: (&'static str, &'static str) = (
        " AND EXISTS (SELECT 1 FROM json_each(artifacts.tags) WHERE json_each.value = ",
        ")",
    );
    const SNAPSHOT: Option<&'static str> = None;
    // Takes the write lock at once, so that another process's writer makes it wait (the busy
    // timeout) rather than fail.
    const BEGIN: &'static str = "BEGIN IMMEDIATE";
    const PRUNE: &'static str = write::PRUNE;
    const SKIP_LOCKED: &'static str = "";
    const WRITERS: usize = 1;
    // A commit costs no disk flush here, but each one writes every page it changed to the WAL
    // again (the tables' and indexes' last pages, each time), and each batch runs its whole
    // statement text: under load (the last batch large), a millisecond's wait for more writes
    // measured 0.84 to 1.02 of the CPU per delivery without it (median about 0.96, six runs).
    // A writer waits only when its batch is under half its last one, so at low load (batches of
    // one or two writes) no write waits.
    const LINGER: Duration = Duration::from_millis(1);

    async fn batch(
        conn: &mut SqliteConnection,
        batch: &Batch<'_>,
        alone: bool,
    ) -> Result<Answer, sqlx::Error> {
        write::batch(conn, batch, alone).await
    }
}
