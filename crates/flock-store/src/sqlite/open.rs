//! Opening an SQLite store: the file, created private if needed, checked and migrated; then the
//! writer, the readers and the checkpointer.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions as _, Connection as _, Sqlite};
use tokio::sync::watch;
use tracing::warn;

use crate::durable::Durable;
use crate::error::OpenError;
use crate::keys::Pool;
use crate::sql::{Background, Dialect as _, Sql};

/// How long a connection waits for a lock held by another connection (another process on the
/// same file, or a checkpoint).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Reader connections.
const READERS: u32 = 4;

/// How often a connection of its own copies the WAL into the database file (a passive
/// checkpoint: it never blocks the writer), so that the writer does not stop to do it.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// The writer connection's page cache, in KiB (negative: a size rather than a page count).
const WRITER_CACHE_KIB: &str = "-16384";

/// WAL pages past which the writer checkpoints by itself anyway (64 MiB of 4 KiB pages): a
/// safety net should the checkpointer fall behind.
const WRITER_CHECKPOINT_PAGES: &str = "16384";

/// Opens (creating it if needed, readable and writable by its owner only) and migrates the
/// database at `path`, and starts its writer; answers the store and its readers' pool.
pub(crate) async fn open(path: &Path) -> Result<(Arc<Durable>, Pool), OpenError> {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let shown = absolute.display().to_string();
    let fail = |e: &dyn std::fmt::Display| OpenError::Sqlite {
        path: shown.clone(),
        reason: e.to_string(),
    };
    if std::fs::metadata(&absolute).is_ok_and(|m| m.is_dir()) {
        return Err(fail(&"it is a directory"));
    }
    create_private(&absolute).map_err(|e| fail(&e))?;
    let options = SqliteConnectOptions::new()
        .filename(&absolute)
        .create_if_missing(false)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(false)
        .statement_cache_capacity(256)
        .pragma("temp_store", "memory")
        .pragma("wal_autocheckpoint", WRITER_CHECKPOINT_PAGES);
    // One connection first, to check and migrate. A file that is not a database passes the
    // connection pragmas in some cases; reading the schema does not.
    let mut first = options.connect().await.map_err(|e| fail(&e))?;
    sqlx::query("SELECT count(*) FROM sqlite_master")
        .fetch_one(&mut first)
        .await
        .map_err(|e| fail(&e))?;
    crate::migrations::run(crate::migrations::SQLITE, &mut first, &shown).await?;
    let _ = first.close().await;
    // The writer keeps a larger page cache (the pages it appends to and the indexes it
    // updates); readers and the checkpointer keep SQLite's default (about 2 MB), so that memory
    // does not grow with the number of connections times the database's size.
    let writer_options = options.clone().pragma("cache_size", WRITER_CACHE_KIB);
    let writer = pool(writer_options, 1).await.map_err(|e| fail(&e))?;
    let readers = pool(options.clone(), READERS).await.map_err(|e| fail(&e))?;
    let checkpoints = options.connect().await.map_err(|e| fail(&e))?;
    let (stop, stopped) = watch::channel(false);
    let background = Background {
        stop,
        task: tokio::spawn(checkpoint(checkpoints, stopped)),
    };
    let store = Durable::start(
        Sql::new(writer, readers.clone(), Some(background)),
        Sqlite::WRITERS,
    );
    Ok((store, Pool::Sqlite(readers)))
}

/// Connections that live as long as the store.
async fn pool(options: SqliteConnectOptions, size: u32) -> Result<SqlitePool, sqlx::Error> {
    SqlitePoolOptions::new()
        .max_connections(size)
        .min_connections(1)
        .test_before_acquire(false)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(Duration::from_secs(60))
        .connect_with(options)
        .await
}

/// Copies the WAL into the database file now and then, until told to stop.
async fn checkpoint(mut conn: SqliteConnection, mut stopped: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            () = tokio::time::sleep(CHECKPOINT_EVERY) => {}
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&mut conn)
            .await
        {
            warn!(error = %e, "an SQLite checkpoint failed; the writer checkpoints by itself past its limit");
        }
    }
    let _ = conn.close().await;
}

/// Creates the file if it does not exist, readable and writable by its owner only: it holds
/// webhook secrets. (SQLite gives its `-wal` and `-shm` files the same permissions.)
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}
