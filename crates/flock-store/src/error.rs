//! Why a store could not be opened, and how a database failure is passed on: as the source of
//! the `Backend` variant of `StoreError` and `OutboxError`.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use flock_delivery::OutboxError;
use flock_orchestrator::StoreError;

/// A store that could not be opened: the URL names no store, or the database cannot be
/// reached, created, read or migrated. The message names the file or the server (never a
/// password) and the reason.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The URL names no supported store.
    #[error(transparent)]
    Url(#[from] crate::url::UrlError),
    /// The SQLite file cannot be created, opened or read as a database.
    #[error("cannot open the SQLite database {path}: {reason}")]
    Sqlite {
        /// The file, made absolute.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The Postgres server cannot be reached or refused the connection.
    #[error("cannot connect to the Postgres database {url}: {reason}")]
    Postgres {
        /// The URL, without its password.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The database opened, but its schema could not be created or migrated.
    #[error("cannot migrate the database {at}: {reason}")]
    Migrate {
        /// The file or URL (without its password).
        at: String,
        /// What went wrong.
        reason: String,
    },
}

/// A read or write that failed for want of the database: what failed, and why (the database's
/// own error, when there is one).
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    what: String,
    source: Option<Arc<dyn Error + Send + Sync>>,
}

impl Failure {
    /// A failure with no database error behind it (the store is closed, say).
    pub(crate) fn new(what: impl Into<String>) -> Failure {
        Failure {
            what: what.into(),
            source: None,
        }
    }

    /// `what` failed because of the database's `err`.
    pub(crate) fn database(what: impl Into<String>, err: sqlx::Error) -> Failure {
        Failure {
            what: what.into(),
            source: Some(Arc::new(DatabaseError(err))),
        }
    }
}

/// What failed, and the database's error after it (for the store's own logs).
impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)?;
        match &self.source {
            Some(source) => write!(f, ": {source}"),
            None => Ok(()),
        }
    }
}

impl From<Failure> for StoreError {
    fn from(failure: Failure) -> Self {
        StoreError::Backend {
            message: failure.what,
            source: failure.source,
        }
    }
}

impl From<Failure> for OutboxError {
    fn from(failure: Failure) -> Self {
        OutboxError::Backend {
            message: failure.what,
            source: failure.source,
        }
    }
}

/// The database's own error, as the source of a [`Failure`]. `Debug` shows what `Display`
/// shows: the driver's message, which never holds bound values, and not the server's detail,
/// which may quote a row, secrets and all.
#[derive(thiserror::Error)]
#[error("{0}")]
struct DatabaseError(sqlx::Error);

impl fmt::Debug for DatabaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}
