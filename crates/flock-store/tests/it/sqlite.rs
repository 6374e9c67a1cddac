//! What only the SQLite backend does: a private file, clear errors for a file that is not a
//! database or a path that cannot be created, and secrets cleared once delivered.

use flock_delivery::Resolution;
use flock_store::{OpenError, Storage, StoreUrl};
use uuid::Uuid;

use crate::support::{LEASE, TempDir, artifact, attempt, delivery, later, now};

#[tokio::test]
async fn the_database_file_is_private_to_its_owner() {
    let dir = TempDir::new();
    let path = dir.path().join("flock.db");
    let store = Storage::open(&StoreUrl::Sqlite(path.clone()))
        .await
        .unwrap();
    store
        .artifacts()
        .publish(&artifact(Uuid::now_v7(), "Idea"), Vec::new())
        .await
        .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        for suffix in ["", "-wal", "-shm"] {
            let file = format!("{}{suffix}", path.display());
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{file}: {mode:o}");
        }
    }
    store.close().await;
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_a_clear_error() {
    let dir = TempDir::new();
    let path = dir.path().join("notes.db");
    let notes = "these are my notes, not a database\n".repeat(200);
    std::fs::write(&path, &notes).unwrap();
    let err = Storage::open(&StoreUrl::Sqlite(path.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, OpenError::Sqlite { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("not a database"), "{text}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        notes,
        "the file is left alone"
    );
}

#[tokio::test]
async fn a_path_that_cannot_be_created_is_a_clear_error() {
    let dir = TempDir::new();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "x").unwrap();
    for path in [
        file.join("flock.db"),
        dir.path().join("missing/dir/flock.db"),
    ] {
        let err = Storage::open(&StoreUrl::Sqlite(path.clone()))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(
            text.starts_with("cannot open the SQLite database"),
            "{text}"
        );
    }
    let err = Storage::open(&StoreUrl::Sqlite(dir.path().to_path_buf()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("directory"), "{err}");
}

#[tokio::test]
async fn secrets_and_bodies_are_cleared_once_delivered() {
    use sqlx::Connection as _;

    let dir = TempDir::new();
    let path = dir.path().join("flock.db");
    let store = Storage::open(&StoreUrl::Sqlite(path.clone()))
        .await
        .unwrap();
    let outbox = store.outbox();
    let a = artifact(Uuid::now_v7(), "Idea");
    let (done, waiting) = (delivery(&a, 1), delivery(&a, 2));
    outbox
        .enqueue(vec![done.clone(), waiting.clone()])
        .await
        .unwrap();
    let claimed = outbox.claim(later(now(), 1), 2, LEASE).await.unwrap();
    let mine = claimed.iter().find(|c| c.delivery.id == done.id).unwrap();
    outbox
        .record(&mine.lease, attempt(1), Resolution::Delivered)
        .await
        .unwrap();
    store.close().await;

    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let rows: Vec<(Uuid, Option<String>, Option<Vec<u8>>)> =
        sqlx::query_as("SELECT id, secret, body FROM deliveries")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    for (id, secret, body) in rows {
        if id == done.id {
            assert_eq!((secret, body), (None, None));
        } else {
            assert_eq!(secret.as_deref(), Some("s3cret-value"));
            assert_eq!(body.as_deref(), Some(&waiting.body[..]));
        }
    }
    conn.close().await.unwrap();
}
