//! The stored `destination` and `held` columns (migration `0007_destinations`): the generated
//! destination agrees with `flock_models::Destination` on awkward URLs, and a parked ordered
//! delivery says why and since when it is held.

use flock_delivery::Resolution;
use flock_models::{Destination, NewDelivery, WebhookUrl};
use sqlx::Connection as _;
use uuid::Uuid;

use crate::support::{LEASE, Place, artifact, attempt, delivery, later, now, on_durable_backends};

/// Runs `query` on the place's database and answers its rows as text pairs.
async fn pairs(place: &Place, query: &str) -> Vec<(String, Option<String>)> {
    match place {
        Place::Memory => unreachable!("durable backends only"),
        Place::Sqlite(dir) => {
            let path = dir.path().join("flock.db");
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            let rows = sqlx::query_as(query).fetch_all(&mut conn).await.unwrap();
            conn.close().await.unwrap();
            rows
        }
        Place::Postgres(db) => {
            let mut conn = sqlx::PgConnection::connect(&db.url_text()).await.unwrap();
            let rows = sqlx::query_as(query).fetch_all(&mut conn).await.unwrap();
            conn.close().await.unwrap();
            rows
        }
    }
}

/// Every stored delivery's generated `destination` is `Destination::of` its URL: ports
/// (default or not), IPv6 hosts, upper-case input, a query or fragment and no path.
async fn the_stored_destination_agrees_with_the_type(place: &Place) {
    let urls = [
        "http://example.com/hook",
        "HTTPS://Example.COM/a/b?c=d#e",
        "http://example.com:80/x",
        "https://example.com:8443",
        "http://example.com?token=a/b",
        "http://example.com#frag/ment",
        "http://[::1]:8080/h",
        "https://[2001:DB8::1]:443/h?x=1",
        "http://127.0.0.1:9000/h/i/j",
    ];
    let store = place.open().await;
    let a = artifact(Uuid::now_v7(), "Idea");
    let deliveries: Vec<NewDelivery> = urls
        .iter()
        .zip(1..)
        .map(|(url, sequence)| NewDelivery {
            url: WebhookUrl::parse(url).unwrap(),
            ..delivery(&a, sequence)
        })
        .collect();
    store.artifacts().publish(&a, deliveries).await.unwrap();
    store.close().await;

    let rows = pairs(place, "SELECT url, destination FROM deliveries").await;
    assert_eq!(rows.len(), urls.len());
    for (url, destination) in rows {
        let expected = Destination::of(&WebhookUrl::from_stored(&url).unwrap());
        assert_eq!(destination.as_deref(), Some(expected.as_str()), "{url}");
    }
}
on_durable_backends!(the_stored_destination_agrees_with_the_type);

/// A claim that parks an ordered delivery behind an earlier one of its webhook marks it held
/// as `ordered`, with the time; the earlier one's final result releases it and clears both.
async fn a_parked_ordered_delivery_is_held_as_ordered(place: &Place) {
    let store = place.open().await;
    let (artifacts, outbox) = (store.artifacts(), store.outbox());
    let a = artifact(Uuid::now_v7(), "Idea");
    let chain: Vec<NewDelivery> = (1..=2)
        .map(|sequence| NewDelivery {
            ordered: true,
            ..delivery(&a, sequence)
        })
        .collect();
    artifacts.publish(&a, chain.clone()).await.unwrap();
    let at = later(now(), 1);
    let claimed = outbox.claim(at, 10, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].delivery.id, chain[0].id);
    let held = "SELECT COALESCE(held, '-'), \
                CASE WHEN held_since IS NULL THEN 'no' ELSE 'since' END \
                FROM deliveries ORDER BY sequence";
    let row = |h: &str, s: &str| (h.to_owned(), Some(s.to_owned()));
    assert_eq!(
        pairs(place, held).await,
        vec![row("-", "no"), row("ordered", "since")]
    );
    outbox
        .record(&claimed[0].lease, attempt(1), Resolution::Delivered)
        .await
        .unwrap();
    assert_eq!(
        pairs(place, held).await,
        vec![row("-", "no"), row("-", "no")],
        "released: no longer held"
    );
    let next = outbox.claim(at, 10, LEASE).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].delivery.id, chain[1].id);
    store.close().await;
}
on_durable_backends!(a_parked_ordered_delivery_is_held_as_ordered);
