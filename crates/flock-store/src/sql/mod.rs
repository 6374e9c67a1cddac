//! The SQL core both databases share. [`Sql`] is the backend of a durable store on SQLite or
//! Postgres: its reads (`read`), its writes (`write`) and the taking apart of a batch (`batch`)
//! are written once, on sqlx's generic API; a [`Dialect`] says what differs, and each
//! database's module implements it.
//!
//! The `impl` blocks of the core repeat the same bounds: that sqlx can run the shared
//! statements on `D` (both its drivers can). Rust does not carry a trait's `where` clauses to
//! its users, so they cannot be said once on [`Dialect`].

pub(crate) mod batch;
pub(crate) mod holds;
mod read;
pub(crate) mod rows;
mod write;

use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::{Database, Decode, Encode, Pool, Type};
use time::OffsetDateTime;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use batch::{Answer, Batch};
use rows::DecodeError;

/// What differs between the databases, below the statements they share. Shared statements are
/// written once with numbered placeholders (`$1`), which both drivers bind; the locking clauses
/// (Postgres's `FOR UPDATE SKIP LOCKED`) belong to each database's own batch and prune
/// statements.
#[async_trait]
pub(crate) trait Dialect: Database {
    /// A time as stored: microseconds since the Unix epoch (SQLite), or a timestamp (Postgres).
    type Time: Value<Self> + Unpin + 'static;

    /// `at`, rounded down to whole microseconds, as stored.
    fn time(at: OffsetDateTime) -> Self::Time;

    /// A stored time.
    fn from_time(stored: Self::Time) -> Result<OffsetDateTime, DecodeError>;

    /// The `tags` column as a JSON array of strings, named `tags`.
    const TAGS: &'static str;

    /// A filter for artifacts that carry a tag: the SQL before and after the bound tag.
    const HAS_TAG: (&'static str, &'static str);

    /// What makes a read transaction see one snapshot, when `BEGIN` alone does not.
    const SNAPSHOT: Option<&'static str>;

    /// Begins the transaction of a batch that holds more than its batch statement.
    const BEGIN: &'static str;

    /// Deletes at most `$2` delivered or failed deliveries completed before `$1`, with their
    /// attempts, and answers how many.
    const PRUNE: &'static str;

    /// What a subquery that picks rows to update ends with so that writers of other instances
    /// skip the rows one holds rather than wait for them (Postgres's `FOR UPDATE SKIP
    /// LOCKED`); empty where one writer holds the whole database (SQLite).
    const SKIP_LOCKED: &'static str;

    /// Writer tasks, each with a connection of its own.
    const WRITERS: usize;

    /// How long a writer waits to fill a batch much smaller than its last (`Backend::linger`).
    const LINGER: Duration;

    /// Runs the batch statement: writes `batch`'s artifacts, deliveries and records, then
    /// claims; in a transaction of its own when `alone`, else in the one open. Answers which
    /// records applied and what was claimed. An error means the statement failed; an answer
    /// that cannot be read, once it committed, is in the [`Answer`].
    async fn batch(
        conn: &mut Self::Connection,
        batch: &Batch<'_>,
        alone: bool,
    ) -> Result<Answer, sqlx::Error>;
}

/// A value the shared statements bind and read.
pub(crate) trait Value<D: Database>:
    for<'q> Encode<'q, D> + for<'r> Decode<'r, D> + Type<D> + Send + Sync
{
}

impl<D: Database, T> Value<D> for T where
    T: for<'q> Encode<'q, D> + for<'r> Decode<'r, D> + Type<D> + Send + Sync
{
}

/// How long a writer connection is kept unused; longer, and the pool tests it first.
const KEEP_IDLE: Duration = Duration::from_secs(1);

/// A durable store's backend on database `D`: a pool of writer connections (one per writer
/// task), a pool of readers, and maybe a task of its own to stop on closing.
pub(crate) struct Sql<D: Dialect> {
    writer: Pool<D>,
    /// Writer connections between batches, and since when. A batch keeps its connection
    /// rather than giving it back to the pool, which tests it with a round trip before the
    /// next batch can have it; one whose batch failed, or that waited longer than
    /// [`KEEP_IDLE`], goes back to the pool to be tested.
    kept: std::sync::Mutex<Vec<(PoolConnection<D>, Instant)>>,
    readers: Pool<D>,
    background: Mutex<Option<Background>>,
}

/// A task that runs beside a store until it closes.
pub(crate) struct Background {
    pub(crate) stop: watch::Sender<bool>,
    pub(crate) task: JoinHandle<()>,
}

impl<D: Dialect> Sql<D> {
    pub(crate) fn new(writer: Pool<D>, readers: Pool<D>, background: Option<Background>) -> Self {
        Sql {
            writer,
            kept: std::sync::Mutex::new(Vec::new()),
            readers,
            background: Mutex::new(background),
        }
    }
}
