//! Durable stores through the server: deliveries that survive `kill -9` and a restart, two
//! instances on one Postgres database, redelivery, retention pruning, and clear errors for a
//! database that cannot be opened.

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use flock_store::testing::PostgresTestDatabase;
use serde_json::{Value, json};

use crate::process::{BIN, Process, address_in};
use crate::support::{LONG, Receiver, Script, TempDir, TestApp, free_port, settings};

/// Environment for a server process on `store`, with fast retries (many of them, at most 1 s
/// apart), short leases and a quick poll, so that work left behind is picked up soon.
fn durable_env(store: &str) -> Vec<(&'static str, String)> {
    vec![
        ("FLOCK__SERVER__PORT", "0".to_owned()),
        ("FLOCK__SERVER__WORKERS", "2".to_owned()),
        ("FLOCK__STORE__URL", store.to_owned()),
        ("FLOCK__WEBHOOKS__ALLOWED_CIDRS", "127.0.0.1/32".to_owned()),
        ("FLOCK__WEBHOOKS__TIMEOUT_MS", "2000".to_owned()),
        ("FLOCK__WEBHOOKS__LEASE_MS", "3000".to_owned()),
        ("FLOCK__WEBHOOKS__POLL_INTERVAL_MS", "200".to_owned()),
        ("FLOCK__WEBHOOKS__RETRY__MAX_RETRIES", "1000".to_owned()),
        ("FLOCK__WEBHOOKS__RETRY__BASE_DELAY_MS", "200".to_owned()),
        ("FLOCK__WEBHOOKS__RETRY__MAX_DELAY_MS", "1000".to_owned()),
    ]
}

/// Starts the server with `env` and returns it with its address.
fn start_server(env: &[(&'static str, String)]) -> (Process, String) {
    let mut command = Command::new(BIN);
    command.arg("serve");
    for (key, value) in env {
        command.env(key, value);
    }
    let server = Process::spawn(&mut command);
    let mut seen = Vec::new();
    let line = Process::wait_line(&server.stderr, "listening on http://", &mut seen);
    let address = address_in(&line);
    (server, address)
}

/// Publishes `count` artifacts, each its own workflow with one webhook to `url`, eight at a
/// time; returns their correlation ids.
async fn publish_many(address: &str, url: &str, count: usize) -> Vec<String> {
    let client = reqwest::Client::new();
    let mut correlations = Vec::with_capacity(count);
    let mut pending = Vec::new();
    for n in 0..count {
        let (client, address, url) = (client.clone(), address.to_owned(), url.to_owned());
        pending.push(tokio::spawn(async move {
            let answer = client
                .post(format!("http://{address}/api/v1/artifacts"))
                .json(&json!({"type": "Idea", "payload": {"n": n}, "webhook": {"url": url, "secret": "k"}}))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 202);
            let body: Value = answer.json().await.unwrap();
            body["correlation_id"].as_str().unwrap().to_owned()
        }));
        if pending.len() == 8 {
            for task in pending.drain(..) {
                correlations.push(task.await.unwrap());
            }
        }
    }
    for task in pending {
        correlations.push(task.await.unwrap());
    }
    correlations
}

/// Waits until `receiver` got requests with `count` distinct `webhook-id`s; returns them.
async fn distinct_ids(receiver: &Receiver, count: usize, limit: Duration) -> HashSet<String> {
    let deadline = Instant::now() + limit;
    loop {
        let ids: HashSet<String> = receiver
            .received()
            .iter()
            .map(|r| r.header("webhook-id").to_owned())
            .collect();
        if ids.len() >= count {
            return ids;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {count} distinct deliveries arrived",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops a server with SIGTERM off the async runtime and returns its exit status.
async fn terminate(server: Process) -> std::process::ExitStatus {
    server.terminate();
    tokio::task::spawn_blocking(move || {
        let mut server = server;
        server.wait_exit()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_deliveries_survive_kill_9_and_arrive_after_a_restart() {
    const COUNT: usize = 1_000;
    let dir = TempDir::new();
    let store = format!("sqlite://{}", dir.path().join("flock.db").display());
    let env = durable_env(&store);
    // The receiver's port is chosen now; nothing listens there until the restart.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook");

    let (mut first, address) = start_server(&env);
    let correlations = publish_many(&address, &url, COUNT).await;
    assert_eq!(correlations.len(), COUNT);
    // Let the dispatcher try (and fail) a while, so deliveries are in flight and retrying.
    tokio::time::sleep(Duration::from_millis(500)).await;
    first.child.kill().unwrap();
    let status = first.child.wait().unwrap();
    assert!(!status.success(), "killed: {status:?}");

    let (second, address) = start_server(&env);
    let receiver = Receiver::start_at(port, Script::default());
    let ids = distinct_ids(&receiver, COUNT, Duration::from_secs(90)).await;
    assert_eq!(ids.len(), COUNT);
    for received in receiver.received().iter().take(20) {
        received.verify("k");
    }

    // The artifacts survived the restart too, and the API lists them.
    let client = reqwest::Client::new();
    let page: Value = client
        .get(format!(
            "http://{address}/api/v1/artifacts?type=Idea&limit=5"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["pagination"]["total"], COUNT);
    assert_eq!(page["items"].as_array().unwrap().len(), 5);
    let one: Value = client
        .get(format!(
            "http://{address}/api/v1/correlations/{}/webhooks",
            correlations[0]
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let delivery = &one["deliveries"][0];
    assert!(
        ids.contains(delivery["id"].as_str().unwrap()),
        "the listed delivery is one that arrived: {one}"
    );
    assert!(!delivery["attempts"].as_array().unwrap().is_empty());

    let status = terminate(second).await;
    assert!(status.success(), "{status:?}");
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_postgres_deliver_everything_when_one_is_killed() {
    const COUNT: usize = 300;
    let Some(db) = PostgresTestDatabase::create(
        "durable::two_instances_on_one_postgres_deliver_everything_when_one_is_killed",
    )
    .await
    else {
        return;
    };
    let env = durable_env(&db.url_text());
    let (mut first, first_address) = start_server(&env);
    let (second, second_address) = start_server(&env);
    // Every answer takes a while, so the first instance has attempts in flight when it dies.
    let receiver = Receiver::start(Script {
        delay: Duration::from_millis(200),
        ..Script::default()
    });
    let url = receiver.url.clone();
    let mut correlations = publish_many(&first_address, &url, COUNT / 2).await;
    correlations.extend(publish_many(&second_address, &url, COUNT / 2).await);
    receiver.wait_for(20).await;
    first.child.kill().unwrap();
    let _ = first.child.wait().unwrap();

    // The second instance delivers what both enqueued, the dead one's in-flight work once its
    // leases expire.
    let ids = distinct_ids(&receiver, COUNT, Duration::from_secs(90)).await;
    assert_eq!(ids.len(), COUNT);
    let client = reqwest::Client::new();
    let deadline = Instant::now() + LONG;
    for correlation in correlations.iter().take(30) {
        loop {
            let body: Value = client
                .get(format!(
                    "http://{second_address}/api/v1/correlations/{correlation}/webhooks"
                ))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if body["deliveries"][0]["state"] == "delivered" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "never recorded as delivered: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let status = terminate(second).await;
    assert!(status.success(), "{status:?}");
    receiver.stop().await;
}

/// Settings for an in-process server on an SQLite file in `dir`.
fn sqlite_settings(dir: &TempDir) -> flock_api::config::Settings {
    let mut s = settings();
    s.store.url = flock_store::StoreUrl::Sqlite(dir.path().join("flock.db"));
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_is_redelivered_with_the_same_webhook_id() {
    let dir = TempDir::new();
    let app = TestApp::start(sqlite_settings(&dir)).await;
    // Nothing listens on the port yet: every attempt fails until the budget (four attempts,
    // fast in tests) is spent.
    let port = free_port();
    let answer: Value = app
        .post(
            "/api/v1/artifacts",
            &json!({"type": "Idea", "payload": {}, "webhook": {"url": format!("http://127.0.0.1:{port}/hook"), "secret": "s3cret"}}),
        )
        .await
        .json()
        .await
        .unwrap();
    let correlation = answer["correlation_id"].as_str().unwrap();
    let failed = app
        .deliveries_until(correlation, |d| d.len() == 1 && d[0]["state"] == "failed")
        .await;
    assert_eq!(failed[0]["failure"], "exhausted");
    assert_eq!(failed[0]["attempts"].as_array().unwrap().len(), 4);
    let id = failed[0]["id"].as_str().unwrap().to_owned();

    // The receiver is up now; the failed delivery is queued again.
    let receiver = Receiver::start_at(port, Script::default());
    let redelivered = app
        .client
        .post(app.url(&format!("/api/v1/webhooks/deliveries/{id}/redeliver")))
        .send()
        .await
        .unwrap();
    assert_eq!(redelivered.status(), 202);
    let view: Value = redelivered.json().await.unwrap();
    assert_eq!(view["id"], id.as_str());
    assert_eq!(view["correlation_id"], correlation);
    assert_eq!(view["failure"], Value::Null);
    assert_eq!(
        view["attempts"].as_array().unwrap().len(),
        4,
        "history kept"
    );
    assert!(!view.to_string().contains("s3cret"));

    let got = receiver.wait_for(1).await;
    assert_eq!(got[0].header("webhook-id"), id, "the same webhook-id");
    got[0].verify("s3cret");
    let delivered = app
        .deliveries_until(correlation, |d| d[0]["state"] == "delivered")
        .await;
    let attempts = delivered[0]["attempts"].as_array().unwrap();
    let numbers: Vec<u64> = attempts
        .iter()
        .map(|a| a["number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5], "numbers keep counting up");
    assert_eq!(attempts[4]["status_code"], 200);

    // A delivered delivery is not redelivered; neither is an unknown one.
    let again = app
        .client
        .post(app.url(&format!("/api/v1/webhooks/deliveries/{id}/redeliver")))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["error"]["code"], "conflict");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("delivered"),
        "{body}"
    );
    app.stop().await;
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivery_answers_404_for_unknown_deliveries_and_409_for_pending_ones() {
    let app = TestApp::start(settings()).await;
    for (method, path, status, code) in [
        (
            "POST",
            format!(
                "/api/v1/webhooks/deliveries/{}/redeliver",
                uuid::Uuid::now_v7()
            ),
            404,
            "not_found",
        ),
        (
            "POST",
            "/api/v1/webhooks/deliveries/not-a-uuid/redeliver".to_owned(),
            404,
            "not_found",
        ),
        (
            "GET",
            format!(
                "/api/v1/webhooks/deliveries/{}/redeliver",
                uuid::Uuid::now_v7()
            ),
            405,
            "method_not_allowed",
        ),
    ] {
        let response = app
            .client
            .request(method.parse().unwrap(), app.url(&path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{method} {path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{method} {path}: {body}");
    }
    // A delivery whose receiver holds its answer is in flight: pending.
    let receiver = Receiver::start(Script {
        hold: true,
        ..Script::default()
    });
    let answer: Value = app
        .post(
            "/api/v1/artifacts",
            &json!({"type": "Idea", "payload": {}, "webhook": {"url": receiver.url}}),
        )
        .await
        .json()
        .await
        .unwrap();
    receiver.wait_for(1).await;
    let correlation = answer["correlation_id"].as_str().unwrap();
    let pending = app.deliveries_until(correlation, |d| d.len() == 1).await;
    let id = pending[0]["id"].as_str().unwrap();
    let response = app
        .client
        .post(app.url(&format!("/api/v1/webhooks/deliveries/{id}/redeliver")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "conflict");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("pending")
    );
    receiver.release();
    app.deliveries_until(correlation, |d| d[0]["state"] == "delivered")
        .await;
    app.stop().await;
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_deliveries_are_pruned_after_their_retention_and_artifacts_stay() {
    let dir = TempDir::new();
    let mut s = sqlite_settings(&dir);
    s.store.retention_secs = 1;
    s.store.prune_interval_ms = 100;
    let app = TestApp::start(s).await;
    let receiver = Receiver::start(Script::default());
    let answer: Value = app
        .post(
            "/api/v1/artifacts",
            &json!({"type": "Idea", "payload": {"keep": true}, "webhook": {"url": receiver.url}}),
        )
        .await
        .json()
        .await
        .unwrap();
    let correlation = answer["correlation_id"].as_str().unwrap();
    let delivered = app
        .deliveries_until(correlation, |d| {
            d.len() == 1 && d[0]["state"] == "delivered"
        })
        .await;
    let id = delivered[0]["id"].as_str().unwrap().to_owned();
    // A second later (and a prune or two on), the delivery and its attempts are gone.
    let deadline = Instant::now() + LONG;
    loop {
        let response = app
            .get(&format!("/api/v1/correlations/{correlation}/webhooks"))
            .await;
        let gone = match response.status().as_u16() {
            404 => true,
            200 => {
                let body: Value = response.json().await.unwrap();
                body["deliveries"].as_array().unwrap().is_empty()
            }
            other => panic!("unexpected status {other}"),
        };
        if gone {
            break;
        }
        assert!(Instant::now() < deadline, "never pruned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let response = app
        .client
        .post(app.url(&format!("/api/v1/webhooks/deliveries/{id}/redeliver")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404, "pruned");
    let artifacts = app
        .get_json(&format!("/api/v1/artifacts?correlation_id={correlation}"))
        .await;
    assert_eq!(artifacts["pagination"]["total"], 1, "artifacts are kept");
    app.stop().await;
    receiver.stop().await;
}

#[test]
fn a_database_that_cannot_be_opened_is_a_clear_error_at_start() {
    let dir = TempDir::new();
    let notes = dir.write("notes.db", &"not a database at all\n".repeat(100));
    let plain = dir.write("plain-file", "x");
    let under_a_file = format!("{plain}/flock.db");
    let closed = free_port();
    let closed_at = format!("127.0.0.1:{closed}");
    // (store URL, words the error must contain)
    let cases = [
        (
            format!("sqlite://{notes}"),
            vec!["store.url", notes.as_str(), "not a database"],
        ),
        (
            format!("sqlite://{under_a_file}"),
            vec!["store.url", under_a_file.as_str(), "Not a directory"],
        ),
        (
            "mysql://db/flock".to_owned(),
            vec!["store.url", "not a supported store"],
        ),
        (
            // Nothing listens there: the connection is refused at once.
            format!("postgres://flock:hunter2@127.0.0.1:{closed}/flock"),
            vec![
                "store.url",
                "cannot connect to the Postgres database",
                closed_at.as_str(),
                "Connection refused",
            ],
        ),
    ];
    for (url, words) in cases {
        let output = Command::new(BIN)
            .arg("serve")
            .env("FLOCK__SERVER__PORT", "0")
            .env("FLOCK__STORE__URL", &url)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{url} should fail");
        for word in words {
            assert!(
                stderr.contains(word),
                "{url}: {word:?} missing from: {stderr}"
            );
        }
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!stderr.contains("listening on"), "{stderr}");
        assert!(
            !stderr.contains("hunter2"),
            "a password in the error: {stderr}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(&notes).unwrap(),
        "not a database at all\n".repeat(100),
        "the file is left alone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_workflows_are_pruned_with_their_artifacts_when_artifact_retention_is_set() {
    let dir = TempDir::new();
    let mut s = sqlite_settings(&dir);
    s.idempotency.ttl_secs = 1;
    s.store.artifact_retention_secs = Some(1);
    s.store.prune_interval_ms = 100;
    let app = TestApp::start(s).await;
    let receiver = Receiver::start(Script::default());
    let answer: Value = app
        .post(
            "/api/v1/artifacts",
            &json!({"type": "Idea", "payload": {}, "webhook_url": receiver.url}),
        )
        .await
        .json()
        .await
        .unwrap();
    let correlation = answer["correlation_id"].as_str().unwrap().to_owned();
    // Nothing accepted is lost: the webhook arrives before its workflow may go.
    receiver.wait_for(1).await;
    let deadline = Instant::now() + LONG;
    loop {
        let listed = app.get_json("/api/v1/artifacts").await;
        if listed["pagination"]["total"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "never pruned: {listed}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let webhooks = app
        .get(&format!("/api/v1/correlations/{correlation}/webhooks"))
        .await;
    let deliveries: Value = webhooks.json().await.unwrap();
    assert!(
        deliveries["deliveries"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{deliveries}"
    );
    receiver.stop().await;
    app.stop().await;
}
