//! `store.url`: which backend holds artifacts and deliveries, and where; parsed once, and shown
//! without a password.

use std::fmt;
use std::path::PathBuf;

/// Where artifacts and webhook deliveries live, as `store.url` names it.
///
/// - `memory://`: in memory, lost when the process stops;
/// - `sqlite://PATH`: an SQLite file, relative to the working directory (`sqlite://flock.db`)
///   or absolute (`sqlite:///var/lib/flock/flock.db`);
/// - `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?OPTIONS]` (or `postgresql://`): a
///   Postgres database that several instances may share.
///
/// `Display` and `Debug` never show a Postgres password.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `memory://`.
    Memory,
    /// `sqlite://PATH`.
    Sqlite(PathBuf),
    /// `postgres://...`.
    Postgres(PostgresUrl),
}

/// A Postgres connection URL. It may hold a password: `Display` and `Debug` replace it with
/// `***`; [`PostgresUrl::expose`] gives the full text.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl(String);

impl PostgresUrl {
    /// The URL with its password, to connect with.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its password replaced by `***`.
    pub fn redacted(&self) -> String {
        match url::Url::parse(&self.0) {
            Ok(mut url) => {
                if url.password().is_some() {
                    // Setting a password fails only for URLs that cannot have one.
                    let _ = url.set_password(Some("***"));
                }
                url.into()
            }
            Err(_) => "postgres://(unreadable)".to_owned(),
        }
    }
}

impl fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgresUrl({})", self.redacted())
    }
}

/// A `store.url` that names no supported store; the text says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UrlError(String);

const SCHEMES: &str = "use memory://, sqlite://PATH or postgres://USER@HOST/DATABASE";

impl StoreUrl {
    /// Parses a `store.url`.
    ///
    /// # Errors
    /// An unknown scheme, an SQLite URL without a path or with query parameters, or a Postgres
    /// URL that is not a URL with a host.
    pub fn parse(text: &str) -> Result<Self, UrlError> {
        let text = text.trim();
        if text == "memory://" || text == "memory:" {
            return Ok(StoreUrl::Memory);
        }
        if text.starts_with("memory:") {
            return Err(UrlError(format!(
                "`{text}`: the memory store takes nothing after memory://"
            )));
        }
        if let Some(path) = text.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(UrlError(
                    "an SQLite URL needs a file path: sqlite://flock.db (relative to the working \
                     directory) or sqlite:///absolute/path/flock.db"
                        .to_owned(),
                ));
            }
            if path.contains('?') || path.contains('#') {
                return Err(UrlError(
                    "an SQLite URL takes no query parameters or fragment; give only the file path"
                        .to_owned(),
                ));
            }
            return Ok(StoreUrl::Sqlite(PathBuf::from(path)));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            let url = url::Url::parse(text)
                .map_err(|e| UrlError(format!("not a valid Postgres URL: {e}")))?;
            if url.host_str().is_none_or(str::is_empty) {
                return Err(UrlError(
                    "a Postgres URL needs a host: postgres://USER@HOST/DATABASE".to_owned(),
                ));
            }
            return Ok(StoreUrl::Postgres(PostgresUrl(text.to_owned())));
        }
        let scheme = text.split("://").next().unwrap_or(text);
        Err(UrlError(format!(
            "`{scheme}` is not a supported store; {SCHEMES}"
        )))
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Memory => f.write_str("memory://"),
            StoreUrl::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            StoreUrl::Postgres(url) => fmt::Display::fmt(url, f),
        }
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreUrl({self})")
    }
}

impl std::str::FromStr for StoreUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StoreUrl::parse(s)
    }
}

/// A `store.url` in a configuration file is checked as it is read: one that names no supported
/// store is a deserialization error saying what is wrong.
impl<'de> serde::Deserialize<'de> for StoreUrl {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(deserializer)?;
        StoreUrl::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_backend() {
        assert_eq!(StoreUrl::parse("memory://").unwrap(), StoreUrl::Memory);
        assert_eq!(
            StoreUrl::parse("sqlite://flock.db").unwrap(),
            StoreUrl::Sqlite(PathBuf::from("flock.db"))
        );
        assert_eq!(
            StoreUrl::parse("sqlite:///var/lib/flock/flock.db").unwrap(),
            StoreUrl::Sqlite(PathBuf::from("/var/lib/flock/flock.db"))
        );
        let pg = StoreUrl::parse("postgres://flock:hunter2@db.example:5433/flock").unwrap();
        assert!(matches!(pg, StoreUrl::Postgres(_)));
        assert!(StoreUrl::parse("postgresql://db.example/flock").is_ok());
    }

    #[test]
    fn refuses_what_it_cannot_open() {
        for (text, words) in [
            ("mysql://db/flock", "`mysql` is not a supported store"),
            ("flock.db", "is not a supported store"),
            ("sqlite://", "needs a file path"),
            ("sqlite://flock.db?mode=ro", "no query parameters"),
            ("postgres://", "needs a host"),
            ("memory://x", "takes nothing after memory://"),
        ] {
            let err = StoreUrl::parse(text).unwrap_err().to_string();
            assert!(err.contains(words), "{text}: {err}");
        }
    }

    #[test]
    fn deserializes_as_it_parses() {
        let url: StoreUrl = serde_json::from_str(r#""sqlite://flock.db""#).unwrap();
        assert_eq!(url, StoreUrl::Sqlite(PathBuf::from("flock.db")));
        let err = serde_json::from_str::<StoreUrl>(r#""mysql://db/flock""#).unwrap_err();
        assert!(
            err.to_string().contains("`mysql` is not a supported store"),
            "{err}"
        );
        assert!(serde_json::from_str::<StoreUrl>("7").is_err());
    }

    #[test]
    fn never_shows_a_postgres_password() {
        let url = StoreUrl::parse("postgres://flock:hunter2@db.example/flock").unwrap();
        for shown in [url.to_string(), format!("{url:?}")] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("flock:***@db.example"), "{shown}");
        }
        let StoreUrl::Postgres(pg) = url else {
            unreachable!()
        };
        assert!(pg.expose().contains("hunter2"));
    }
}
