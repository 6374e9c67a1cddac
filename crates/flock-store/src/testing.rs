//! Test helpers (the `testing` feature): a throw-away Postgres database per test (or benchmark
//! run), on the server that `FLOCK_TEST_POSTGRES_URL` names.

use std::fmt;
use std::str::FromStr as _;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _};

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
