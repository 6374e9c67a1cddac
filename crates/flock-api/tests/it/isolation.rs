//! Receiver isolation end to end, on every store: a receiver that never answers beside a good
//! one, a dead port's circuit breaker, `Retry-After` pausing a destination, a rate pacing one,
//! fair shares among ten destinations, deliveries held too long, and caps being per instance.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use flock_store::StoreUrl;
use flock_store::testing::PostgresTestDatabase;
use serde_json::{Value, json};

use crate::support::{LONG, Receiver, Script, TempDir, TestApp, free_port, settings};

/// Publishes `n` artifacts of type `Step` in one batch with a webhook to `url`; answers the
/// workflow.
async fn publish(app: &TestApp, url: &str, n: usize) -> String {
    let artifacts: Vec<Value> = (0..n)
        .map(|i| json!({"type": "Step", "payload": {"i": i}}))
        .collect();
    let answer = app
        .post(
            "/api/v1/artifacts/batch",
            &json!({"artifacts": artifacts, "webhook": {"url": url}}),
        )
        .await;
    assert_eq!(answer.status(), 202);
    let body: Value = answer.json().await.unwrap();
    body["correlation_id"].as_str().unwrap().to_owned()
}

/// `url`'s destination, as the destinations route lists it.
fn destination_of(url: &str) -> String {
    let after = url.find("://").unwrap() + 3;
    let end = url[after..].find('/').map_or(url.len(), |i| after + i);
    url[..end].to_owned()
}

/// The destinations route's entry for `url`'s destination, if listed.
async fn destination(app: &TestApp, url: &str) -> Option<Value> {
    let page = app.get_json("/api/v1/webhooks/destinations").await;
    let name = destination_of(url);
    page["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["destination"] == name.as_str())
        .cloned()
}

/// Waits until `check` holds, polling; panics with `what` after [`LONG`].
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + LONG;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn postgres(name: &str) -> Option<PostgresTestDatabase> {
    PostgresTestDatabase::create(&format!("isolation::{name}")).await
}

/// Runs `test` on memory, SQLite and Postgres (skipped without a test database).
macro_rules! on_every_store {
    ($test:ident: $memory:ident, $sqlite:ident, $postgres:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $memory() {
            $test(StoreUrl::Memory).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            let dir = TempDir::new();
            $test(StoreUrl::Sqlite(dir.path().join("flock.db"))).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            let Some(db) = postgres(stringify!($postgres)).await else {
                return;
            };
            $test(db.url().clone()).await;
        }
    };
}

/// 1,000 deliveries to a receiver that accepts and never answers and 100 to a good one,
/// interleaved: every good delivery arrives within a second of its publish, and the black hole
/// never has more than its cap (64 of 128 slots) in flight.
async fn black_hole_beside_a_good_receiver(store: StoreUrl) {
    let mut s = settings();
    s.store.url = store;
    // No attempt to the black hole times out during the test: each holds its slot throughout.
    s.webhooks.timeout_ms = 10_000;
    s.server.shutdown_grace_ms = 100;
    let cap = s.webhooks.per_destination_cap();
    assert_eq!(
        (cap, s.webhooks.concurrency),
        (64, 128),
        "the default cap and slots"
    );
    let app = TestApp::start(s).await;
    let hole = Receiver::start(Script {
        hold: true,
        ..Script::default()
    });
    let good = Receiver::start(Script::default());

    let mut published: HashMap<String, Instant> = HashMap::new();
    let mut most_in_flight = 0;
    for _ in 0..10 {
        publish(&app, &hole.url, 100).await;
        for _ in 0..10 {
            let at = Instant::now();
            published.insert(publish(&app, &good.url, 1).await, at);
        }
        if let Some(hole) = destination(&app, &hole.url).await {
            most_in_flight = most_in_flight.max(hole["in_flight"].as_u64().unwrap());
        }
    }
    let received = good.wait_for(100).await;
    for request in &received {
        let workflow = request.payload().correlation_id.to_string();
        let took = request.at - published[&workflow];
        assert!(
            took < Duration::from_secs(1),
            "a good delivery took {took:?} beside the black hole"
        );
    }
    // Before the first attempt timed out, the black hole got its cap, and no more.
    assert!(
        hole.received().len() <= cap,
        "the black hole got {} requests at once",
        hole.received().len()
    );
    assert!(most_in_flight <= cap as u64, "{most_in_flight} in flight");
    let listed = destination(&app, &hole.url).await.unwrap();
    assert_eq!(listed["in_flight"], cap, "{listed}");
    assert_eq!(hole.received().len(), cap);
    // The rest waits: held in the store, or (up to the cap) claimed and parked in memory.
    eventually("the rest of the black hole's deliveries held", async || {
        let listed = destination(&app, &hole.url).await?;
        (listed["held"].as_u64()? >= (1_000 - 2 * cap) as u64).then_some(())
    })
    .await;
    hole.release();
    app.stop().await;
}

on_every_store!(black_hole_beside_a_good_receiver:
    a_black_hole_leaves_a_good_receiver_its_slots_in_memory,
    a_black_hole_leaves_a_good_receiver_its_slots_on_sqlite,
    a_black_hole_leaves_a_good_receiver_its_slots_on_postgres);

/// The views of a workflow's deliveries.
async fn deliveries(app: &TestApp, workflow: &str) -> Vec<Value> {
    let body = app
        .get_json(&format!("/api/v1/correlations/{workflow}/webhooks"))
        .await;
    body["deliveries"].as_array().unwrap().clone()
}

/// A dead port: five failures open the breaker, and deliveries that come while it is open
/// spend no attempt. The receiver comes up: a probe closes the breaker, and every delivery
/// arrives exactly once.
async fn dead_port(store: StoreUrl) {
    let mut s = settings();
    s.store.url = store;
    let app = TestApp::start(s).await;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook");

    let first = publish(&app, &url, 5).await;
    eventually("five failed attempts open the breaker", async || {
        let d = destination(&app, &url).await?;
        (d["state"] == "open").then_some(())
    })
    .await;
    let later = publish(&app, &url, 20).await;
    let held = eventually("the later deliveries are held", async || {
        let views = deliveries(&app, &later).await;
        views
            .iter()
            .all(|d| d["held"] == "breaker")
            .then_some(views)
    })
    .await;
    for view in &held {
        assert_eq!(view["attempts"], json!([]), "no attempt while open: {view}");
        assert_eq!(view["state"], "pending");
        assert!(view["held_since"].is_string(), "{view}");
    }

    let receiver = Receiver::start_at(port, Script::default());
    let mut ids: HashMap<String, usize> = HashMap::new();
    for request in receiver.wait_for(25).await {
        *ids.entry(request.header("webhook-id").to_owned())
            .or_default() += 1;
    }
    // Nothing more comes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 25);
    assert_eq!(ids.len(), 25, "every delivery, once: {ids:?}");
    for workflow in [&first, &later] {
        for view in deliveries(&app, workflow).await {
            assert_eq!(view["state"], "delivered", "{view}");
        }
    }
    let d = destination(&app, &url).await;
    assert!(
        d.as_ref().is_none_or(|d| d["state"] == "closed"),
        "closed: {d:?}"
    );
    receiver.stop().await;
    app.stop().await;
}

on_every_store!(dead_port:
    a_dead_ports_breaker_opens_and_a_probe_closes_it_in_memory,
    a_dead_ports_breaker_opens_and_a_probe_closes_it_on_sqlite,
    a_dead_ports_breaker_opens_and_a_probe_closes_it_on_postgres);

/// A 429 with `Retry-After: 2` pauses the whole destination for about two seconds: the
/// deliveries published after it wait too.
async fn retry_after(store: StoreUrl) {
    let mut s = settings();
    s.store.url = store;
    let app = TestApp::start(s).await;
    let receiver = Receiver::start(Script {
        too_many_first: Some((1, 2)),
        ..Script::default()
    });
    publish(&app, &receiver.url, 1).await;
    let paused_at = receiver.wait_for(1).await[0].at;
    publish(&app, &receiver.url, 5).await;
    let received = receiver.wait_for(7).await;
    assert_eq!(received[0].status, 429);
    for request in &received[1..] {
        let after = request.at - paused_at;
        assert!(
            after >= Duration::from_millis(1_900) && after < Duration::from_secs(4),
            "a request came {after:?} after the 429"
        );
    }
    receiver.stop().await;
    app.stop().await;
}

on_every_store!(retry_after:
    retry_after_pauses_the_whole_destination_in_memory,
    retry_after_pauses_the_whole_destination_on_sqlite,
    retry_after_pauses_the_whole_destination_on_postgres);

/// `per_destination_rate` paces each destination with a token bucket of one second's worth:
/// at 4 a second, 12 deliveries to one receiver arrive as a burst of 4 and then one every
/// quarter of a second, each once; another destination's 3 are not held behind them.
async fn rate(store: StoreUrl) {
    const RATE: f64 = 4.0;
    let mut s = settings();
    s.store.url = store;
    s.webhooks.per_destination_rate = Some(RATE);
    let app = TestApp::start(s).await;
    let (paced, other) = (
        Receiver::start(Script::default()),
        Receiver::start(Script::default()),
    );
    publish(&app, &paced.url, 12).await;
    let published = Instant::now();
    publish(&app, &other.url, 3).await;
    let received = paced.wait_for(12).await;
    let first = received[0].at;
    let offsets: Vec<Duration> = received.iter().map(|r| r.at - first).collect();
    for (i, request) in received.iter().enumerate() {
        // The i-th (from 0) needs i - 3 tokens past the bucket's 4, at 4 a second.
        let earliest = Duration::from_secs_f64(((i as f64) - 3.0).max(0.0) / RATE);
        let after = request.at - first;
        assert!(
            after + Duration::from_millis(100) >= earliest,
            "delivery {i} came {after:?} after the first, before its token ({earliest:?}); \
             all: {offsets:?}"
        );
    }
    let span = received[11].at - first;
    assert!(
        span < Duration::from_secs(5),
        "paced, not stalled: the 12th came {span:?} after the first"
    );
    let ids: std::collections::HashSet<&str> =
        received.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), 12, "each delivery once");
    for request in other.wait_for(3).await {
        let after = request.at - published;
        assert!(
            after < Duration::from_secs(1),
            "another destination's delivery came {after:?} after its publish"
        );
    }
    paced.stop().await;
    other.stop().await;
    app.stop().await;
}

on_every_store!(rate:
    a_rate_paces_its_destination_alone_in_memory,
    a_rate_paces_its_destination_alone_on_sqlite,
    a_rate_paces_its_destination_alone_on_postgres);

/// Ten destinations with equal backlogs, published one after the other: over the run, each
/// gets between 80% and 120% of an equal share of the deliveries. The receivers hold their
/// answers until every backlog is published, so that the run starts from equal backlogs.
///
/// With 64 slots and a cap of 32 (the defaults are 128 and 64): the first two destinations
/// take every slot while the backlogs are published, and with twice the slots that head start
/// is a larger part of a window this short. (With the defaults and backlogs of 1,000, memory
/// and SQLite measured within 10%; Postgres mostly within 20%, with outliers.)
///
/// Backlogs of 600 make a window of about 3,500 deliveries, 350 a destination: four runs with
/// both cores kept busy measured memory and SQLite within 2%, Postgres within 8%. With 300 the
/// window ended when the first destination was done, after about 800, and Postgres's shares
/// once reached 0.79 to 1.26 under the whole suite's load.
async fn fairness(store: StoreUrl, within: f64) {
    let mut s = settings();
    s.store.url = store;
    s.webhooks.concurrency = 64;
    s.webhooks.per_destination_concurrency = Some(32);
    let slots = s.webhooks.concurrency;
    let app = TestApp::start(s).await;
    let receivers: Vec<Receiver> = (0..10)
        .map(|_| {
            Receiver::start(Script {
                hold: true,
                delay: Duration::from_millis(20),
                ..Script::default()
            })
        })
        .collect();
    const BACKLOG: usize = 600;
    for receiver in &receivers {
        publish(&app, &receiver.url, BACKLOG).await;
    }
    let counts = || -> Vec<usize> { receivers.iter().map(|r| r.received().len()).collect() };
    // Every slot is taken (the first two destinations published have their cap each).
    eventually("every slot taken", async || {
        (counts().iter().sum::<usize>() >= slots).then_some(())
    })
    .await;
    for receiver in &receivers {
        receiver.release();
    }
    // Past the start: what the first destinations had in flight is answered, and every
    // destination has had a delivery (claims go by due time, so a backlog published behind
    // others is first seen when the claims reach it).
    let start = eventually("every destination served, and a tenth more", async || {
        let counts = counts();
        (counts.iter().sum::<usize>() >= slots + BACKLOG && counts.iter().all(|n| *n > 0))
            .then_some(counts)
    })
    .await;
    // Up to seven tenths of all, or one destination done, whichever comes first.
    let end = eventually("seven tenths, or one destination done", async || {
        let counts = counts();
        (counts.iter().sum::<usize>() >= BACKLOG * 7 || counts.iter().any(|n| *n >= BACKLOG))
            .then_some(counts)
    })
    .await;
    let shares: Vec<usize> = end.iter().zip(&start).map(|(e, s)| e - s).collect();
    let mean = shares.iter().sum::<usize>() as f64 / shares.len() as f64;
    for (i, share) in shares.iter().enumerate() {
        let ratio = *share as f64 / mean;
        assert!(
            (1.0 - within..=1.0 + within).contains(&ratio),
            "destination {i} got {share} against a mean of {mean:.1}: {shares:?}"
        );
    }
    for receiver in receivers {
        receiver.stop().await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_destinations_share_the_slots_fairly_in_memory() {
    fairness(StoreUrl::Memory, 0.2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_destinations_share_the_slots_fairly_on_sqlite() {
    let dir = TempDir::new();
    fairness(StoreUrl::Sqlite(dir.path().join("flock.db")), 0.2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_destinations_share_the_slots_fairly_on_postgres() {
    let Some(db) = postgres("ten_destinations_share_the_slots_fairly_on_postgres").await else {
        return;
    };
    fairness(db.url().clone(), 0.2).await;
}

/// A delivery held longer than `max_hold_secs` fails as `destination_unavailable`, and can be
/// redelivered once the receiver is back.
async fn held_too_long(store: StoreUrl) {
    let mut s = settings();
    s.store.url = store;
    s.webhooks.max_hold_secs = 2;
    // Probes (each lets one held delivery go) at 1, 3, 7, 11 s...: rare enough that the later
    // deliveries stay held past max_hold_secs, often enough that the redelivery goes soon.
    s.webhooks.breaker.max_open_ms = 4_000;
    let app = TestApp::start(s).await;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    publish(&app, &url, 5).await;
    eventually("the breaker opens", async || {
        let d = destination(&app, &url).await?;
        (d["state"] == "open").then_some(())
    })
    .await;
    let later = publish(&app, &url, 3).await;
    let failed = eventually("held deliveries fail", async || {
        let views = deliveries(&app, &later).await;
        views
            .iter()
            .all(|d| d["state"] == "failed")
            .then_some(views)
    })
    .await;
    for view in &failed {
        assert_eq!(view["failure"], "destination_unavailable", "{view}");
        assert_eq!(view["held"], Value::Null);
    }
    let receiver = Receiver::start_at(port, Script::default());
    let id = failed[0]["id"].as_str().unwrap();
    let answer = app
        .post(
            &format!("/api/v1/webhooks/deliveries/{id}/redeliver"),
            &json!({}),
        )
        .await;
    assert_eq!(answer.status(), 202, "{:?}", answer.text().await);
    eventually("the redelivered one arrives", async || {
        receiver
            .received()
            .iter()
            .any(|r| r.header("webhook-id") == id)
            .then_some(())
    })
    .await;
    receiver.stop().await;
    app.stop().await;
}

on_every_store!(held_too_long:
    a_delivery_held_too_long_fails_and_can_be_redelivered_in_memory,
    a_delivery_held_too_long_fails_and_can_be_redelivered_on_sqlite,
    a_delivery_held_too_long_fails_and_can_be_redelivered_on_postgres);

/// Two instances on one Postgres each allow a destination its own cap: caps (and breakers) are
/// per instance, so a receiver that holds every answer sees both instances' caps at once, and
/// no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_are_per_instance_on_one_postgres() {
    let Some(db) = postgres("caps_are_per_instance_on_one_postgres").await else {
        return;
    };
    let start = || {
        let mut s = settings();
        s.store.url = db.url().clone();
        s.webhooks.per_destination_concurrency = Some(2);
        // The receiver counts requests: none may time out and be tried again meanwhile.
        s.webhooks.timeout_ms = 30_000;
        s.webhooks.poll_interval_ms = 50;
        s.server.shutdown_grace_ms = 100;
        TestApp::start(s)
    };
    let one = start().await;
    let two = start().await;
    let receiver = Receiver::start(Script {
        hold: true,
        ..Script::default()
    });
    // The first instance takes its cap (and parks or holds the rest) before the second has
    // work: the second then finds its own deliveries.
    publish(&one, &receiver.url, 10).await;
    receiver.wait_for(2).await;
    publish(&two, &receiver.url, 10).await;
    receiver.wait_for(4).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.received().len(),
        4,
        "two instances, a cap of two each"
    );
    receiver.release();
    receiver.wait_for(20).await;
    receiver.stop().await;
    one.stop().await;
    two.stop().await;
}
