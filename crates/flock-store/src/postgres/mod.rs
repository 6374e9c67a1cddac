//! The Postgres backend, for several instances on one database: a few writer connections that
//! commit batches of writes with array-valued statements (`UNNEST`), claims that skip rows
//! another instance holds (`FOR UPDATE SKIP LOCKED`) and leases that let any instance take over
//! the work of one that died, and a pool of readers.

mod open;
mod write;

use std::time::Duration;

use async_trait::async_trait;
use sqlx::Postgres;
use sqlx::postgres::PgConnection;
use time::OffsetDateTime;

use crate::sql::Dialect;
use crate::sql::batch::{Answer, Batch};
use crate::sql::rows::{DecodeError, floor_micros};

pub(crate) use open::open;

/// Times are timestamps (whole microseconds); tags are a text array; a read transaction asks
/// for one snapshot.
#[async_trait]
impl Dialect for Postgres {
    type Time = OffsetDateTime;

    fn time(at: OffsetDateTime) -> OffsetDateTime {
        floor_micros(at)
    }

    fn from_time(stored: OffsetDateTime) -> Result<OffsetDateTime, DecodeError> {
        Ok(stored)
    }

    const TAGS: &'static str = "array_to_json(tags)::text AS tags";
    const HAS_TAG: (&'static str, &'static str) = (" AND ", " = ANY(tags)");
    const SNAPSHOT: Option<&'static str> =
        Some("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY");
    const BEGIN: &'static str = "BEGIN";
    const PRUNE: &'static str = write::PRUNE;
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";
    const WRITERS: usize = 2;
    // A commit waits for the server's disk flush (milliseconds), so under load sharing it is
    // worth a short wait.
    const LINGER: Duration = Duration::from_millis(2);

    async fn batch(
        conn: &mut PgConnection,
        batch: &Batch<'_>,
        _alone: bool,
    ) -> Result<Answer, sqlx::Error> {
        // One statement is a transaction of its own, or part of the one open.
        write::batch(conn, batch).await
    }
}
