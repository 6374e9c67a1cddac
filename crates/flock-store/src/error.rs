//! Why a store could not be opened.

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
