//! Idempotency keys in the store: a replay across a restart (SQLite) and across instances
//! (Postgres), a concurrent duplicate on another instance answered 409 `in_progress` and then
//! the replay, and the server's memory bounded however many keys of large answers it keeps.

use std::process::Command;
use std::time::{Duration, Instant};

use flock_orchestrator::ArtifactQuery;
use flock_store::testing::PostgresTestDatabase;
use flock_store::{Storage, StoreUrl};
use serde_json::{Value, json};

use crate::process::{BIN, Process, address_in};
use crate::support::{TempDir, TestApp, settings, transform_agent};

/// Sends `body` to `path` of `address` with idempotency key `key`.
async fn keyed(
    client: &reqwest::Client,
    address: &str,
    path: &str,
    key: &str,
    body: &Value,
) -> reqwest::Response {
    client
        .post(format!("http://{address}{path}"))
        .header("x-idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

fn replayed(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true")
}

/// Settings on `store` with an agent answering each `Idea` with a `Summary` after `sleep`.
fn with_agent(store: StoreUrl, dir: &TempDir, sleep: f64) -> flock_api::config::Settings {
    let mut s = settings();
    s.store.url = store;
    s.agents = vec![transform_agent(dir, "summarizer", "Idea", "Summary", sleep)];
    s
}

/// How many artifacts the listing counts.
async fn artifact_total(app: &TestApp) -> u64 {
    app.get_json("/api/v1/artifacts").await["pagination"]["total"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_a_sync_answer_is_replayed_after_a_restart_on_sqlite() {
    let dir = TempDir::new();
    let store = StoreUrl::Sqlite(dir.path().join("flock.db"));
    let body = json!({"type": "Idea", "payload": {"n": 1}, "timeout": 20});
    let app = TestApp::start(with_agent(store.clone(), &dir, 0.0)).await;
    let address = app.address.to_string();
    let first = keyed(
        &app.client,
        &address,
        "/api/v1/artifacts/sync",
        "restart-1",
        &body,
    )
    .await;
    assert_eq!(first.status(), 200);
    assert!(!replayed(&first));
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["artifacts"].as_array().unwrap().len(), 2, "{first}");
    app.stop().await;

    let app = TestApp::start(with_agent(store, &dir, 0.0)).await;
    let address = app.address.to_string();
    let again = keyed(
        &app.client,
        &address,
        "/api/v1/artifacts/sync",
        "restart-1",
        &body,
    )
    .await;
    assert_eq!(again.status(), 200);
    assert!(replayed(&again));
    let again: Value = again.json().await.unwrap();
    assert_eq!(again, first, "the same answer, read back from the store");
    assert_eq!(artifact_total(&app).await, 2, "one workflow only");

    // Another body under the key is still refused.
    let other = keyed(
        &app.client,
        &address,
        "/api/v1/artifacts/sync",
        "restart-1",
        &json!({"type": "Idea", "payload": {"n": 2}}),
    )
    .await;
    assert_eq!(other.status(), 422);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_a_duplicate_on_another_instance_replays_the_first_answer_on_postgres() {
    let Some(db) = PostgresTestDatabase::create(
        "idempotency::a_duplicate_on_another_instance_replays_the_first_answer_on_postgres",
    )
    .await
    else {
        return;
    };
    let dir = TempDir::new();
    let one = TestApp::start(with_agent(db.url().clone(), &dir, 0.0)).await;
    let two = TestApp::start(with_agent(db.url().clone(), &dir, 0.0)).await;
    let (a1, a2) = (one.address.to_string(), two.address.to_string());

    let body = json!({"type": "Idea", "payload": {"n": 1}});
    let first = keyed(&one.client, &a1, "/api/v1/artifacts", "pub-1", &body).await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let again = keyed(&two.client, &a2, "/api/v1/artifacts", "pub-1", &body).await;
    assert_eq!(again.status(), 202);
    assert!(replayed(&again));
    assert_eq!(again.json::<Value>().await.unwrap(), first);

    let sync = json!({"type": "Idea", "payload": {"n": 2}, "timeout": 20});
    let first = keyed(&one.client, &a1, "/api/v1/artifacts/sync", "sync-1", &sync).await;
    let first: Value = first.json().await.unwrap();
    let again = keyed(&two.client, &a2, "/api/v1/artifacts/sync", "sync-1", &sync).await;
    assert!(replayed(&again));
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    // The first workflow's agent output may still be on its way (that publish did not wait
    // for it): wait for the four, then make sure no fifth follows.
    let deadline = Instant::now() + Duration::from_secs(10);
    while artifact_total(&two).await < 4 {
        assert!(Instant::now() < deadline, "the agent outputs never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        artifact_total(&two).await,
        4,
        "two workflows of two artifacts"
    );
    one.stop().await;
    two.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_a_concurrent_duplicate_on_another_instance_gets_409_then_the_replay() {
    let Some(db) = PostgresTestDatabase::create(
        "idempotency::a_concurrent_duplicate_on_another_instance_gets_409_then_the_replay",
    )
    .await
    else {
        return;
    };
    let dir = TempDir::new();
    // The agent sleeps 2 s: the first sync publish stays in progress that long.
    let one = TestApp::start(with_agent(db.url().clone(), &dir, 2.0)).await;
    let two = TestApp::start(with_agent(db.url().clone(), &dir, 2.0)).await;
    let (a1, a2) = (one.address.to_string(), two.address.to_string());
    let body = json!({"type": "Idea", "payload": {"n": 1}, "timeout": 20});

    let first = {
        let (client, body) = (one.client.clone(), body.clone());
        tokio::spawn(async move {
            let r = keyed(&client, &a1, "/api/v1/artifacts/sync", "slow-1", &body).await;
            (r.status(), r.json::<Value>().await.unwrap())
        })
    };
    // Until the first request has claimed the key, the duplicate might claim it itself: wait
    // for the first's artifact to be stored.
    let deadline = Instant::now() + Duration::from_secs(10);
    while artifact_total(&two).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the first request never published"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let busy = keyed(&two.client, &a2, "/api/v1/artifacts/sync", "slow-1", &body).await;
    assert_eq!(busy.status(), 409);
    assert_eq!(busy.headers()["retry-after"], "1");
    let busy: Value = busy.json().await.unwrap();
    assert_eq!(busy["error"]["code"], "in_progress", "{busy}");

    let (status, first) = first.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(first["artifacts"].as_array().unwrap().len(), 2, "{first}");
    let again = keyed(&two.client, &a2, "/api/v1/artifacts/sync", "slow-1", &body).await;
    assert!(replayed(&again));
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    assert_eq!(artifact_total(&two).await, 2, "one workflow only");
    one.stop().await;
    two.stop().await;
}

/// The resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/PID/status");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib * 1024
}

/// How many keyed sync publishes the size test sends. The issue asks for 20,000: run once with
/// 20,000 (2026-12-01, the debug-built binary on two shared cores) resident memory went from
/// 45 MiB after the warm-up to 58 MiB, within the 64 MiB bound, in 323 s; every publish was
/// stored. That is too long for every CI run, which sends 2,000 (29 s; 46 to 49 MiB), 500 MB of
/// payloads, ten times the 64 MiB bound.
const SIZE_KEYS: usize = 2_000;
/// The payload of each.
const SIZE_PAYLOAD: usize = 256 * 1024;

/// Distinct idempotency keys on sync publishes of 256 KiB payloads leave the server's resident
/// memory within 64 MiB of where it was after a warm-up: records hold ids, never answers. The
/// server is the real binary on an SQLite file, measured from `/proc/PID/status`; each answer
/// carries its 256 KiB artifact, so an in-process cache of answers would grow by about 500 MB
/// here (5 GiB at the 20,000 keys).
/// Every accepted publish is then found in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_distinct_keys_of_large_sync_answers_leave_memory_bounded() {
    let dir = TempDir::new();
    let db = dir.path().join("flock.db");
    let mut command = Command::new(BIN);
    command
        .arg("serve")
        .env("FLOCK__SERVER__PORT", "0")
        .env("FLOCK__SERVER__WORKERS", "2")
        .env("FLOCK__STORE__URL", format!("sqlite://{}", db.display()))
        .env(
            "FLOCK__IDEMPOTENCY__MAX_ENTRIES",
            (SIZE_KEYS * 2).to_string(),
        )
        .env("RUST_LOG", "warn");
    let mut server = Process::spawn(&mut command);
    let mut seen = Vec::new();
    let line = Process::wait_line(&server.stderr, "listening on http://", &mut seen);
    let address = address_in(&line);
    let pid = server.child.id();
    let blob = "x".repeat(SIZE_PAYLOAD);
    let client = reqwest::Client::new();
    let started = Instant::now();

    let send = |from: usize, to: usize| {
        let (client, address, blob) = (client.clone(), address.clone(), blob.clone());
        async move {
            let mut tasks = Vec::new();
            for worker in 0..4 {
                let (client, address, blob) = (client.clone(), address.clone(), blob.clone());
                tasks.push(tokio::spawn(async move {
                    for n in (from + worker..to).step_by(4) {
                        let body = json!({"type": "Blob", "payload": {"n": n, "blob": blob}});
                        let answer = keyed(
                            &client,
                            &address,
                            "/api/v1/artifacts/sync",
                            &format!("size-{n}"),
                            &body,
                        )
                        .await;
                        assert_eq!(answer.status(), 200, "publish {n}");
                        let _ = answer.bytes().await.unwrap();
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
        }
    };
    let warm_up = 500.min(SIZE_KEYS);
    send(0, warm_up).await;
    let before = rss(pid);
    send(warm_up, SIZE_KEYS).await;
    let after = rss(pid);
    let took = started.elapsed();
    eprintln!(
        "{SIZE_KEYS} keys: RSS {} MiB after warm-up, {} MiB after; {took:?}",
        before >> 20,
        after >> 20
    );
    assert!(
        after < before + 64 * 1024 * 1024,
        "resident memory rose from {before} to {after} bytes"
    );
    server.terminate();
    server.wait_exit();

    // Nothing accepted was lost.
    let storage = Storage::open(&StoreUrl::Sqlite(db)).await.unwrap();
    let page = storage
        .artifacts()
        .query(&ArtifactQuery {
            limit: 0,
            ..ArtifactQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.total, SIZE_KEYS as u64);
    storage.close().await;
}
