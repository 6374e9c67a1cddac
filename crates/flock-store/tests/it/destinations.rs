//! The stored `destination` and `held` columns (migration `0007_destinations`): the generated
//! destination agrees with `flock_models::Destination` on awkward URLs, a parked ordered
//! delivery says why and since when it is held, and the holds' statements read the index of
//! held deliveries.

use std::collections::HashMap;

use flock_delivery::{HoldReason, Lease, Resolution};
use flock_models::{Destination, NewDelivery, WebhookUrl};
use flock_store::testing::hold_statements;
use sqlx::{Connection as _, Row as _};
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

/// The statements of the destinations' holds read the partial index `deliveries_held` on a
/// table of 20,000 deliveries (17,000 delivered, 1,000 waiting, 1,000 in flight and 1,000
/// held, over 50 destinations), analysed: a release reads a range of it in order, with no
/// sort. The plans are printed (`--no-capture`), as flock-store's README shows them.
async fn the_hold_statements_read_the_held_index(place: &Place) {
    let store = place.open().await;
    let outbox = store.outbox();
    let destination = |i: u64| format!("https://d{:02}.example", i % 50);
    for chunk in 0..20 {
        let a = artifact(Uuid::now_v7(), "Idea");
        let deliveries = (0..1000)
            .map(|i| NewDelivery {
                url: WebhookUrl::parse(&format!("{}/hook", destination(i))).unwrap(),
                ..delivery(&a, chunk * 1000 + i + 1)
            })
            .collect();
        outbox.enqueue(deliveries).await.unwrap();
    }
    let at = later(now(), 1);
    let claimed = outbox.claim(at, 2000, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 2000);
    let reasons = HoldReason::DESTINATION;
    for (i, chunk) in (0..).zip(claimed[..1000].chunks(100)) {
        let leases: Vec<Lease> = chunk.iter().map(|c| c.lease).collect();
        let reason = reasons[i % reasons.len()];
        let held = outbox.hold(&leases, reason, later(at, i64::try_from(i).unwrap()));
        assert_eq!(held.await, Ok(100));
    }
    store.close().await;
    let deliver = "UPDATE deliveries SET state = 'delivered', due_at = NULL, \
                   completed_at = created_at, body = NULL, secret = NULL WHERE id IN ( \
                   SELECT id FROM deliveries WHERE state = 'pending' AND due_at IS NOT NULL \
                   AND lease_token IS NULL ORDER BY id LIMIT 17000)";
    let plans = match place {
        Place::Memory => unreachable!("durable backends only"),
        Place::Sqlite(dir) => {
            let path = dir.path().join("flock.db");
            let url = format!("sqlite://{}", path.display());
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query(deliver).execute(&mut conn).await.unwrap();
            sqlx::query("ANALYZE").execute(&mut conn).await.unwrap();
            let micros =
                |at: time::OffsetDateTime| i64::try_from(at.unix_timestamp_nanos() / 1000).unwrap();
            let mut plans = Vec::new();
            for (name, statement) in hold_statements(false) {
                let explain = format!("EXPLAIN QUERY PLAN {statement}");
                let query = match name {
                    "release" => sqlx::query(&explain)
                        .bind(micros(at))
                        .bind(destination(7))
                        .bind(10_i64),
                    "expire" => sqlx::query(&explain)
                        .bind("destination_unavailable")
                        .bind(micros(at))
                        .bind(micros(later(at, 3)))
                        .bind(100_i64),
                    "held" => sqlx::query(&explain).bind(10_i64),
                    _ => sqlx::query(&explain).bind(10_i64).bind("default"),
                };
                let rows = query.fetch_all(&mut conn).await.unwrap();
                let lines: Vec<(i64, i64, String)> = (rows.iter())
                    .map(|r| (r.get("id"), r.get("parent"), r.get("detail")))
                    .collect();
                plans.push((name, sqlite_plan(&lines)));
            }
            conn.close().await.unwrap();
            plans
        }
        Place::Postgres(db) => {
            let mut conn = sqlx::PgConnection::connect(&db.url_text()).await.unwrap();
            sqlx::query(deliver).execute(&mut conn).await.unwrap();
            sqlx::query("ANALYZE deliveries")
                .execute(&mut conn)
                .await
                .unwrap();
            let mut plans = Vec::new();
            for (name, statement) in hold_statements(true) {
                let explain = format!("EXPLAIN {statement}");
                let query = match name {
                    "release" => sqlx::query(&explain)
                        .bind(at)
                        .bind(destination(7))
                        .bind(10_i64),
                    "expire" => sqlx::query(&explain)
                        .bind("destination_unavailable")
                        .bind(at)
                        .bind(later(at, 3))
                        .bind(100_i64),
                    "held" => sqlx::query(&explain).bind(10_i64),
                    _ => sqlx::query(&explain).bind(10_i64).bind("default"),
                };
                let rows = query.fetch_all(&mut conn).await.unwrap();
                let lines: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
                plans.push((name, lines.join("\n")));
            }
            conn.close().await.unwrap();
            plans
        }
    };
    let counts = "SELECT state || CASE WHEN held IS NOT NULL THEN ' held' \
                  WHEN lease_token IS NOT NULL THEN ' in flight' ELSE '' END, \
                  CAST(count(*) AS TEXT) FROM deliveries GROUP BY 1 ORDER BY 1";
    let row = |s: &str, n: &str| (s.to_owned(), Some(n.to_owned()));
    assert_eq!(
        pairs(place, counts).await,
        [
            row("delivered", "17000"),
            row("pending", "1000"),
            row("pending held", "1000"),
            row("pending in flight", "1000"),
        ]
    );
    for (name, plan) in &plans {
        println!("-- {name}\n{plan}\n");
        assert!(plan.contains("deliveries_held"), "{name}: {plan}");
    }
    let release = &plans[0].1;
    assert!(
        !release.contains("TEMP B-TREE") && !release.contains("Sort"),
        "a release reads the index in order: {release}"
    );
}
on_durable_backends!(the_hold_statements_read_the_held_index);

/// SQLite's query plan rows (`id`, `parent`, `detail`) as an indented tree.
fn sqlite_plan(rows: &[(i64, i64, String)]) -> String {
    let mut depth: HashMap<i64, usize> = HashMap::new();
    let mut lines = Vec::new();
    for (id, parent, detail) in rows {
        let level = depth.get(parent).map_or(0, |d| d + 1);
        depth.insert(*id, level);
        lines.push(format!("{}{detail}", "  ".repeat(level)));
    }
    lines.join("\n")
}
