//! Test support: a store per backend with its own file or database, and artifacts and
//! deliveries to put in it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use flock_delivery::{AttemptView, ErrorKind};
use flock_models::{Artifact, ArtifactDraft, NewDelivery, Secret, Tags, TypeName, WebhookUrl};
use flock_store::testing::PostgresTestDatabase;
use flock_store::{Storage, StoreUrl};
use serde_json::{Map, json};
use time::OffsetDateTime;
use uuid::Uuid;

/// A lease long enough never to expire by itself in a test.
pub(crate) const LEASE: Duration = Duration::from_secs(30);

/// A directory removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("flock-store-test-{}", Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where a test's store lives; keeps its file or database until dropped.
pub(crate) enum Place {
    Memory,
    Sqlite(TempDir),
    Postgres(PostgresTestDatabase),
}

impl Place {
    pub(crate) fn sqlite() -> Place {
        Place::Sqlite(TempDir::new())
    }

    pub(crate) async fn postgres(test: &str) -> Option<Place> {
        PostgresTestDatabase::create(test)
            .await
            .map(Place::Postgres)
    }

    pub(crate) fn url(&self) -> StoreUrl {
        match self {
            Place::Memory => StoreUrl::Memory,
            Place::Sqlite(dir) => StoreUrl::Sqlite(dir.path().join("flock.db")),
            Place::Postgres(db) => db.url().clone(),
        }
    }

    /// Opens (another) store on this place.
    pub(crate) async fn open(&self) -> Storage {
        Storage::open(&self.url()).await.unwrap()
    }
}

/// Runs `$body(&Storage)` on every backend: `memory`, `sqlite` and `postgres` tests in a module
/// named after the body.
macro_rules! on_every_backend {
    ($body:ident) => {
        mod $body {
            use crate::support::Place;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                let place = Place::Memory;
                let store = place.open().await;
                super::$body(&store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let place = Place::sqlite();
                let store = place.open().await;
                super::$body(&store).await;
                store.close().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(place) = Place::postgres(concat!(module_path!(), "::postgres")).await
                else {
                    return;
                };
                let store = place.open().await;
                super::$body(&store).await;
                store.close().await;
            }
        }
    };
}
pub(crate) use on_every_backend;

/// Runs `$body(&Place)` on the durable backends: `sqlite` and `postgres`.
macro_rules! on_durable_backends {
    ($body:ident) => {
        mod $body {
            use crate::support::Place;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$body(&Place::sqlite()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(place) = Place::postgres(concat!(module_path!(), "::postgres")).await
                else {
                    return;
                };
                super::$body(&place).await;
            }
        }
    };
}
pub(crate) use on_durable_backends;

/// An artifact of `type_name` in workflow `correlation_id`, with a payload whose keys are not
/// in alphabetical order.
pub(crate) fn artifact(correlation_id: Uuid, type_name: &str) -> Artifact {
    let payload: Map<String, serde_json::Value> = serde_json::from_value(
        json!({"zebra": 1, "apple": {"y": [1, 2], "b": null}, "mango": "ü"}),
    )
    .unwrap();
    let mut draft = ArtifactDraft::new(TypeName::new(type_name).unwrap(), payload);
    draft.tags = Tags::new(["t1", "t0"]).unwrap();
    Artifact::new(draft, "external", correlation_id)
}

/// A signed delivery announcing `artifact` as number `sequence`, to a URL with a query.
pub(crate) fn delivery(artifact: &Artifact, sequence: u64) -> NewDelivery {
    NewDelivery::new(
        artifact,
        sequence,
        WebhookUrl::parse("https://example.com/hook?token=abc").unwrap(),
        Some(Secret::new("s3cret-value").unwrap()),
    )
}

/// A failed attempt (HTTP 500), started now.
pub(crate) fn attempt(number: u32) -> AttemptView {
    AttemptView {
        number,
        started_at: OffsetDateTime::now_utc(),
        status_code: Some(500),
        error_kind: Some(ErrorKind::HttpStatus),
        error: Some("HTTP 500".into()),
        duration_ms: 3,
    }
}

/// `at` + `secs` seconds.
pub(crate) fn later(at: OffsetDateTime, secs: i64) -> OffsetDateTime {
    at + time::Duration::seconds(secs)
}

/// The current time in whole microseconds (what every backend keeps).
pub(crate) fn now() -> OffsetDateTime {
    flock_models::timestamp::now_micros()
}
