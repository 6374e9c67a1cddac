//! The schema migrations of each backend, embedded in the binary: the files under
//! `migrations/sqlite` and `migrations/postgres`, applied in version order when a store opens
//! (sqlx's migrator records which ones a database has, and takes a lock so that several
//! instances starting at once apply each one once).

use std::borrow::Cow;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;

use sqlx::Acquire;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migrate, MigrateError, Migration, MigrationSource, MigrationType, Migrator};

use crate::error::OpenError;

/// One migration file: version, description and SQL.
type File = (i64, &'static str, &'static str);

/// The SQLite migrations, oldest first.
pub(crate) const SQLITE: &[File] = &[
    (
        1,
        "initial",
        include_str!("../migrations/sqlite/0001_initial.sql"),
    ),
    (
        2,
        "tenants",
        include_str!("../migrations/sqlite/0002_tenants.sql"),
    ),
    (
        3,
        "api_keys",
        include_str!("../migrations/sqlite/0003_api_keys.sql"),
    ),
    (
        4,
        "tenant_secrets",
        include_str!("../migrations/sqlite/0004_tenant_secrets.sql"),
    ),
    (
        5,
        "idempotency",
        include_str!("../migrations/sqlite/0005_idempotency.sql"),
    ),
    (
        6,
        "webhook_options",
        include_str!("../migrations/sqlite/0006_webhook_options.sql"),
    ),
    (
        7,
        "destinations",
        include_str!("../migrations/sqlite/0007_destinations.sql"),
    ),
];

/// The Postgres migrations, oldest first.
pub(crate) const POSTGRES: &[File] = &[
    (
        1,
        "initial",
        include_str!("../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "tenants",
        include_str!("../migrations/postgres/0002_tenants.sql"),
    ),
    (
        3,
        "api_keys",
        include_str!("../migrations/postgres/0003_api_keys.sql"),
    ),
    (
        4,
        "tenant_secrets",
        include_str!("../migrations/postgres/0004_tenant_secrets.sql"),
    ),
    (
        5,
        "idempotency",
        include_str!("../migrations/postgres/0005_idempotency.sql"),
    ),
    (
        6,
        "webhook_options",
        include_str!("../migrations/postgres/0006_webhook_options.sql"),
    ),
    (
        7,
        "destinations",
        include_str!("../migrations/postgres/0007_destinations.sql"),
    ),
];

/// Migrations compiled into the binary.
#[derive(Debug)]
struct Embedded(&'static [File]);

impl MigrationSource<'static> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 'static>> {
        let migrations = self
            .0
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    Cow::Borrowed(sql),
                    false,
                )
            })
            .collect();
        Box::pin(std::future::ready(Ok(migrations)))
    }
}

/// Applies the `files` a database lacks, through `conn`; `at` names the database in an error.
pub(crate) async fn run<'c, A>(files: &'static [File], conn: A, at: &str) -> Result<(), OpenError>
where
    A: Acquire<'c>,
    <A::Connection as Deref>::Target: Migrate,
{
    let fail = |e: MigrateError| OpenError::Migrate {
        at: at.to_owned(),
        reason: e.to_string(),
    };
    let migrator = Migrator::new(Embedded(files)).await.map_err(fail)?;
    migrator.run(conn).await.map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file in a migrations directory is embedded, in order, under its own version.
    #[test]
    fn every_migration_file_is_embedded() {
        for (dir, files) in [("sqlite", SQLITE), ("postgres", POSTGRES)] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .join(dir);
            let mut names: Vec<String> = std::fs::read_dir(&path)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            assert_eq!(names.len(), files.len(), "{dir}: {names:?}");
            for (name, (version, description, sql)) in names.iter().zip(files) {
                assert_eq!(name, &format!("{version:04}_{description}.sql"));
                assert_eq!(*sql, std::fs::read_to_string(path.join(name)).unwrap());
            }
        }
    }

    /// A database migrated by a build that had the keys' migration (3) but not the tenants'
    /// (2) takes the tenants' one later, out of order, and its rows belong to `default`.
    #[tokio::test]
    async fn a_database_without_the_tenants_migration_gets_it_later() {
        use sqlx::Connection as _;
        let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        let before: &'static [File] = Box::leak(vec![SQLITE[0], SQLITE[2]].into_boxed_slice());
        assert_eq!((before[0].0, before[1].0), (1, 3));
        run(before, &mut conn, "memory").await.unwrap();
        sqlx::query(
            "INSERT INTO artifacts (id, type_name, payload, produced_by, correlation_id, tags, \
             created_at) VALUES (x'01', 'Idea', '{}', 'external', x'02', '[]', 0)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        run(SQLITE, &mut conn, "memory").await.unwrap();
        let tenant: String = sqlx::query_scalar("SELECT tenant FROM artifacts")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(tenant, "default");
    }
}
