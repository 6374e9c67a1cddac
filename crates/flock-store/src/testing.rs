//! Test helpers (the `testing` feature): a throw-away Postgres database per test (or benchmark
//! run), on the server that `FLOCK_TEST_POSTGRES_URL` names, and a failure injected into a
//! database's artifact inserts (a real trigger, so a write really fails part-way), and the
//! statements of the destinations' holds, whose plans tests check.

use std::fmt;
use std::str::FromStr as _;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _};

use crate::sql::Dialect;
use crate::sql::holds::{expire_statement, held_statement, release_statement};
use crate::url::StoreUrl;

/// The environment variable naming a Postgres server for tests, such as
/// `postgres://postgres@127.0.0.1:5432/postgres`. Tests that need Postgres are skipped (and say
/// so) without it.
pub const POSTGRES_ENV: &str = "FLOCK_TEST_POSTGRES_URL";

/// A database created for one test and dropped (with `FORCE`) when this is dropped.
pub struct PostgresTestDatabase {
    admin: String,
    name: String,
    url: StoreUrl,
}

impl PostgresTestDatabase {
    /// Creates a fresh database on the server `FLOCK_TEST_POSTGRES_URL` names; `None` (after
    /// printing that `test` was skipped) when the variable is not set.
    ///
    /// # Panics
    /// When the variable is set but the database cannot be created: a test should fail then.
    pub async fn create(test: &str) -> Option<PostgresTestDatabase> {
        let Some(admin) = std::env::var(POSTGRES_ENV).ok().filter(|v| !v.is_empty()) else {
            eprintln!("skipped {test}: set {POSTGRES_ENV} to run it against Postgres");
            return None;
        };
        match PostgresTestDatabase::create_on(&admin).await {
            Ok(db) => Some(db),
            Err(e) => panic!("{POSTGRES_ENV}: {e}"),
        }
    }

    /// Creates a fresh database on the server `admin` (a Postgres URL whose user may create
    /// databases) names.
    ///
    /// # Errors
    /// A URL that is not a Postgres URL, a server that cannot be reached, or a database that
    /// cannot be created; the text says which.
    pub async fn create_on(admin: &str) -> Result<PostgresTestDatabase, String> {
        let name = format!("flock_test_{}", uuid::Uuid::now_v7().simple());
        let mut conn = PgConnectOptions::from_str(admin)
            .map_err(|e| format!("not a Postgres URL: {e}"))?
            .connect()
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .map_err(|e| format!("cannot create the database {name}: {e}"))?;
        let _ = conn.close().await;
        let mut url = url::Url::parse(admin).map_err(|e| format!("not a URL: {e}"))?;
        url.set_path(&format!("/{name}"));
        let url = StoreUrl::parse(url.as_str()).map_err(|e| e.to_string())?;
        Ok(PostgresTestDatabase {
            admin: admin.to_owned(),
            name,
            url,
        })
    }

    /// The database's URL.
    pub fn url(&self) -> &StoreUrl {
        &self.url
    }

    /// The database's URL as text (with its password, if any).
    pub fn url_text(&self) -> String {
        match &self.url {
            StoreUrl::Postgres(pg) => pg.expose().to_owned(),
            other => other.to_string(),
        }
    }
}

impl Drop for PostgresTestDatabase {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Dropping needs a connection of its own, away from the test's runtime (which may be
        // the one being dropped).
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async move {
                let mut conn = PgConnectOptions::from_str(&admin)
                    .ok()?
                    .connect()
                    .await
                    .ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .ok()?;
                conn.close().await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("could not drop the test database {}", self.name);
        }
    }
}

impl fmt::Debug for PostgresTestDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresTestDatabase")
            .field("url", &self.url)
            .finish()
    }
}

/// The statements of receiver isolation's holds that read the index `deliveries_held`, as
/// Postgres runs them (`postgres`) or SQLite does, by name: `release` (`$1` due time, `$2`
/// destination, `$3` limit), `expire` (`$1` failure, `$2` now, `$3` held before, `$4`
/// limit), `held` (`$1` limit) and `held of a tenant` (`$1` limit, `$2` tenant). Times are
/// bound as each database stores them: microseconds (SQLite), timestamps (Postgres).
pub fn hold_statements(postgres: bool) -> [(&'static str, String); 4] {
    let skip_locked = if postgres {
        <sqlx::Postgres as Dialect>::SKIP_LOCKED
    } else {
        <sqlx::Sqlite as Dialect>::SKIP_LOCKED
    };
    [
        ("release", release_statement(skip_locked)),
        ("expire", expire_statement(skip_locked)),
        ("held", held_statement(false)),
        ("held of a tenant", held_statement(true)),
    ]
}

/// Makes the database at `url` fail every artifact insert once it holds `keep` artifacts: a
/// trigger raises an error (named `injected failure`), as a full disk or a lost connection
/// would fail a write part-way. Tests use it to show that a write of many artifacts stores
/// all of them or none. [`allow_artifacts`] removes the trigger.
///
/// # Errors
/// A memory store (which has no database), or a database that cannot be reached or altered.
pub async fn refuse_artifacts_beyond(url: &StoreUrl, keep: u64) -> Result<(), String> {
    let statements: Vec<String> = match url {
        StoreUrl::Memory => return Err("a memory store has no database to alter".to_owned()),
        StoreUrl::Sqlite(_) => vec![format!(
            "CREATE TRIGGER flock_test_refuse BEFORE INSERT ON artifacts \
             WHEN (SELECT count(*) FROM artifacts) >= {keep} \
             BEGIN SELECT RAISE(ABORT, 'injected failure: no more artifacts'); END"
        )],
        StoreUrl::Postgres(_) => vec![
            format!(
                "CREATE FUNCTION flock_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN IF (SELECT count(*) FROM artifacts) >= {keep} THEN \
                 RAISE EXCEPTION 'injected failure: no more artifacts'; END IF; \
                 RETURN NEW; END $$"
            ),
            "CREATE TRIGGER flock_test_refuse BEFORE INSERT ON artifacts \
             FOR EACH ROW EXECUTE FUNCTION flock_test_refuse()"
                .to_owned(),
        ],
    };
    run(url, &statements).await
}

/// Removes what [`refuse_artifacts_beyond`] installed.
///
/// # Errors
/// As [`refuse_artifacts_beyond`].
pub async fn allow_artifacts(url: &StoreUrl) -> Result<(), String> {
    let statements = match url {
        StoreUrl::Memory => return Err("a memory store has no database to alter".to_owned()),
        StoreUrl::Sqlite(_) => vec!["DROP TRIGGER flock_test_refuse".to_owned()],
        StoreUrl::Postgres(_) => vec![
            "DROP TRIGGER flock_test_refuse ON artifacts".to_owned(),
            "DROP FUNCTION flock_test_refuse()".to_owned(),
        ],
    };
    run(url, &statements).await
}

/// Runs `statements` on a connection of their own to the database at `url`.
async fn run(url: &StoreUrl, statements: &[String]) -> Result<(), String> {
    match url {
        StoreUrl::Memory => Err("a memory store has no database".to_owned()),
        StoreUrl::Sqlite(path) => {
            let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .connect()
                .await
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            for statement in statements {
                sqlx::query(statement)
                    .execute(&mut conn)
                    .await
                    .map_err(|e| format!("{statement}: {e}"))?;
            }
            conn.close().await.map_err(|e| e.to_string())
        }
        StoreUrl::Postgres(pg) => {
            let mut conn = PgConnectOptions::from_str(pg.expose())
                .map_err(|e| format!("not a Postgres URL: {e}"))?
                .connect()
                .await
                .map_err(|e| format!("cannot connect: {e}"))?;
            for statement in statements {
                sqlx::query(statement)
                    .execute(&mut conn)
                    .await
                    .map_err(|e| format!("{statement}: {e}"))?;
            }
            conn.close().await.map_err(|e| e.to_string())
        }
    }
}
