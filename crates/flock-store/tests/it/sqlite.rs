//! What only the SQLite backend does: a private file, clear errors for a file that is not a
//! database or a path that cannot be created, and secrets cleared once delivered. And, on it,
//! how a database failure reaches the caller: as the source of the store's error.

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
async fn secrets_bodies_and_custom_header_values_are_cleared_once_delivered() {
    use sqlx::Connection as _;

    let dir = TempDir::new();
    let path = dir.path().join("flock.db");
    let store = Storage::open(&StoreUrl::Sqlite(path.clone()))
        .await
        .unwrap();
    let outbox = store.outbox();
    let a = artifact(Uuid::now_v7(), "Idea");
    let headers = flock_models::WebhookHeaders::from_pairs(vec![(
        "Authorization".to_owned(),
        "Bearer header-secret".to_owned(),
    )])
    .unwrap();
    let with_headers = |sequence| flock_models::NewDelivery {
        headers: Some(std::sync::Arc::new(headers.clone())),
        ..delivery(&a, sequence)
    };
    let (done, waiting) = (with_headers(1), with_headers(2));
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
    type Row = (
        Uuid,
        Option<String>,
        Option<Vec<u8>>,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<Row> =
        sqlx::query_as("SELECT id, secret, body, headers, header_names FROM deliveries")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    for (id, secret, body, values, names) in rows {
        assert_eq!(
            names.as_deref(),
            Some(r#"["Authorization"]"#),
            "names are kept"
        );
        if id == done.id {
            assert_eq!((secret, body, values), (None, None, None));
        } else {
            assert_eq!(secret.as_deref(), Some("s3cret-value"));
            assert_eq!(body.as_deref(), Some(&waiting.body[..]));
            assert_eq!(
                values.as_deref(),
                Some(r#"[["Authorization","Bearer header-secret"]]"#)
            );
        }
    }
    conn.close().await.unwrap();
}

#[tokio::test]
async fn a_database_failure_is_the_source_of_the_error_and_holds_no_secret() {
    use sqlx::Connection as _;
    use std::error::Error as _;

    let dir = TempDir::new();
    let path = dir.path().join("flock.db");
    let store = Storage::open(&StoreUrl::Sqlite(path.clone()))
        .await
        .unwrap();
    // The table goes away behind the store's back.
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query("DROP TABLE deliveries")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    let outbox = store.outbox();
    let a = artifact(Uuid::now_v7(), "Idea");
    let err = outbox.enqueue(vec![delivery(&a, 1)]).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "outbox backend failed: the publish could not be written"
    );
    let source = err.source().expect("the database's error").to_string();
    assert!(source.contains("no such table: deliveries"), "{source}");
    for shown in [format!("{err:?}"), source] {
        assert!(!shown.contains("s3cret-value"), "{shown}");
    }

    let err = store
        .artifacts()
        .publish(&a, vec![delivery(&a, 2)])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "storage backend failed: the publish could not be written"
    );
    assert!(
        err.source()
            .is_some_and(|s| s.to_string().contains("no such table"))
    );
    assert!(!format!("{err:?}").contains("s3cret-value"));

    let err = outbox.counts().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "outbox backend failed: cannot count deliveries"
    );
    assert!(
        err.source()
            .is_some_and(|s| s.to_string().contains("no such table"))
    );
    store.close().await;
}

#[tokio::test]
async fn names_of_an_earlier_build_still_list() {
    use flock_delivery::{DeliveryState, ErrorKind, GiveUp};
    use sqlx::Connection as _;

    let dir = TempDir::new();
    let path = dir.path().join("flock.db");
    let store = Storage::open(&StoreUrl::Sqlite(path.clone()))
        .await
        .unwrap();
    let outbox = store.outbox();
    let a = artifact(Uuid::now_v7(), "Idea");
    let d = delivery(&a, 1);
    outbox.enqueue(vec![d.clone()]).await.unwrap();
    let claimed = outbox.claim(later(now(), 1), 1, LEASE).await.unwrap();
    outbox
        .record(
            &claimed[0].lease,
            attempt(1),
            Resolution::Failed(GiveUp::Gone),
        )
        .await
        .unwrap();
    store.close().await;

    // What an earlier build wrote for a secret that could not sign.
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query("UPDATE deliveries SET failure = 'invalid_secret'")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE attempts SET error_kind = 'signing', \
         error = 'the webhook secret cannot sign: ...', status_code = NULL",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    let store = Storage::open(&StoreUrl::Sqlite(path)).await.unwrap();
    let view = store.outbox().delivery(d.id).await.unwrap().unwrap();
    assert_eq!(view.state, DeliveryState::Failed);
    assert_eq!(view.failure, Some(GiveUp::Exhausted));
    assert_eq!(view.attempts[0].error_kind, Some(ErrorKind::Other));
    assert_eq!(
        view.attempts[0].error.as_deref(),
        Some("the webhook secret cannot sign: ...")
    );
    // Shown with today's names, and listed by correlation too.
    let json = serde_json::to_value(&view).unwrap();
    assert_eq!(json["failure"], "exhausted");
    assert_eq!(json["attempts"][0]["error_kind"], "other");
    let listed = store.outbox().deliveries(a.correlation_id).await.unwrap();
    assert_eq!(listed, vec![view]);
    store.close().await;
}
