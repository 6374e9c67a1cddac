//! Webhook options end to end: several webhooks on one publish, custom headers, ordered
//! delivery and batch publish, on real servers with real receivers and every store.

use std::collections::HashSet;
use std::time::Duration;

use flock_store::StoreUrl;
use flock_store::testing::PostgresTestDatabase;
use serde_json::{Value, json};

use crate::process::Process;
use crate::support::{Receiver, Script, TempDir, TestApp, settings, transform_agent};

/// Idea → Plan → Draft → Final: a three-agent chain, four artifacts per workflow.
fn three_agent_chain(dir: &TempDir, store: StoreUrl) -> flock_api::config::Settings {
    let mut s = settings();
    s.store.url = store;
    s.agents = vec![
        transform_agent(dir, "planner", "Idea", "Plan", 0.0),
        transform_agent(dir, "writer", "Plan", "Draft", 0.0),
        transform_agent(dir, "editor", "Draft", "Final", 0.0),
    ];
    s
}

async fn sync_publish(app: &TestApp, body: Value) -> String {
    let response = app.post("/api/v1/artifacts/sync", &body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["completed"], true, "{answer}");
    answer["correlation_id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_agent_chain_filtered_to_final_delivers_one_webhook_with_its_workflow_sequence() {
    let dir = TempDir::new();
    let app = TestApp::start(three_agent_chain(&dir, StoreUrl::Memory)).await;
    let receiver = Receiver::start(Script::default());
    let workflow = sync_publish(
        &app,
        json!({"type": "Idea", "payload": {}, "timeout": 20,
               "webhook": {"url": receiver.url, "secret": "s3cret", "types": ["Final"]}}),
    )
    .await;
    let received = receiver.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 1, "exactly one webhook");
    let payload = received[0].payload();
    assert_eq!(payload.artifact.type_name.as_str(), "Final");
    assert_eq!(
        payload.sequence, 4,
        "Final is the workflow's fourth artifact"
    );
    assert_eq!(payload.correlation_id.to_string(), workflow);
    received[0].verify("s3cret");
    app.stop().await;
    receiver.stop().await;
}

/// Three webhooks with their own secrets and filters on one publish: each receiver gets
/// exactly its own artifacts, signed with its own secret, numbered in workflow order.
async fn several_webhooks_on(store: StoreUrl, dir: &TempDir) {
    let app = TestApp::start(three_agent_chain(dir, store)).await;
    let all = Receiver::start(Script::default());
    let plans = Receiver::start(Script::default());
    let ends = Receiver::start(Script::default());
    let workflow = sync_publish(
        &app,
        json!({"type": "Idea", "payload": {}, "timeout": 20, "webhooks": [
            {"url": all.url, "secret": "secret-all"},
            {"url": plans.url, "secret": "secret-plans", "types": ["Plan"]},
            {"url": ends.url, "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "types": ["Idea", "Final"]},
        ]}),
    )
    .await;
    let expect = [
        (
            &all,
            "secret-all",
            vec![(1, "Idea"), (2, "Plan"), (3, "Draft"), (4, "Final")],
        ),
        (&plans, "secret-plans", vec![(2, "Plan")]),
        (
            &ends,
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            vec![(1, "Idea"), (4, "Final")],
        ),
    ];
    for (receiver, _, wanted) in &expect {
        receiver.wait_for(wanted.len()).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ids = HashSet::new();
    for (receiver, secret, wanted) in expect {
        let received = receiver.received();
        let mut got: Vec<(u64, String)> = received
            .iter()
            .map(|r| {
                r.verify(secret);
                assert!(
                    ids.insert(r.header("webhook-id").to_owned()),
                    "one id per delivery"
                );
                let payload = r.payload();
                (
                    payload.sequence,
                    payload.artifact.type_name.as_str().to_owned(),
                )
            })
            .collect();
        got.sort();
        let wanted: Vec<(u64, String)> =
            wanted.into_iter().map(|(s, t)| (s, t.to_owned())).collect();
        assert_eq!(got, wanted);
        // Another webhook's secret does not verify this one's deliveries.
        let other = if secret == "secret-all" {
            "secret-plans"
        } else {
            "secret-all"
        };
        assert!(
            flock_signing::verify_webhook(
                |name| received[0].headers.get(name).map(String::as_str),
                &received[0].body,
                &[other]
            )
            .is_err()
        );
    }
    // The workflow lists seven deliveries, each naming its webhook.
    let listed = app
        .get_json(&format!("/api/v1/correlations/{workflow}/webhooks"))
        .await;
    let deliveries = listed["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 7, "{listed}");
    let mut per_webhook = [0; 3];
    for delivery in deliveries {
        per_webhook[delivery["webhook"].as_u64().unwrap() as usize] += 1;
    }
    assert_eq!(per_webhook, [4, 1, 2]);
    app.stop().await;
    for receiver in [all, plans, ends] {
        receiver.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_webhooks_each_get_their_own_artifacts_and_secret_in_memory() {
    let dir = TempDir::new();
    several_webhooks_on(StoreUrl::Memory, &dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_webhooks_each_get_their_own_artifacts_and_secret_on_sqlite() {
    let dir = TempDir::new();
    several_webhooks_on(StoreUrl::Sqlite(dir.path().join("flock.db")), &dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_webhooks_each_get_their_own_artifacts_and_secret_on_postgres() {
    let Some(db) = PostgresTestDatabase::create(
        "options::several_webhooks_each_get_their_own_artifacts_and_secret_on_postgres",
    )
    .await
    else {
        return;
    };
    let dir = TempDir::new();
    several_webhooks_on(db.url().clone(), &dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_webhook_options_are_refused_naming_the_field() {
    let app = TestApp::start(settings()).await;
    let hook = |extra: Value| {
        let mut webhook = json!({"url": "https://example.com/h"});
        webhook
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        webhook
    };
    let nine: Vec<Value> = (0..9).map(|_| hook(json!({}))).collect();
    let seventeen: serde_json::Map<String, Value> =
        (0..17).map(|i| (format!("X-H{i}"), json!("v"))).collect();
    let cases = [
        (
            json!({"webhooks": [hook(json!({})), hook(json!({})), hook(json!({"headers": {"Host": "evil"}}))]}),
            "webhooks[2].headers.Host",
        ),
        (
            json!({"webhooks": [hook(json!({"types": ["Plan", "no spaces"]}))]}),
            "webhooks[0].types[1]",
        ),
        (
            json!({"webhook": hook(json!({"headers": {"x-flock-signature": "v1,x"}}))}),
            "webhook.headers.x-flock-signature",
        ),
        (
            json!({"webhook": hook(json!({"headers": {"Webhook-Id": "1"}}))}),
            "webhook.headers.Webhook-Id",
        ),
        (
            json!({"webhook": hook(json!({"headers": {"Content-Length": "1"}}))}),
            "webhook.headers.Content-Length",
        ),
        (
            json!({"webhook": hook(json!({"headers": {"X-Token": "a\r\nInjected: yes"}}))}),
            "webhook.headers.X-Token",
        ),
        (
            json!({"webhook": hook(json!({"headers": {"X-Token": "x".repeat(1025)}}))}),
            "webhook.headers.X-Token",
        ),
        (
            json!({"webhook": hook(json!({"headers": {"Bad Name": "v"}}))}),
            "webhook.headers.Bad Name",
        ),
        (
            json!({"webhook": hook(json!({"headers": seventeen}))}),
            "webhook.headers",
        ),
        (
            json!({"webhook": hook(json!({"ordered": "yes"}))}),
            "webhook.ordered",
        ),
        (json!({"webhooks": nine}), "webhooks"),
        (
            json!({"webhooks": [hook(json!({}))], "webhook_url": "https://example.com/"}),
            "webhooks",
        ),
        (
            json!({"webhooks": [{"url": "http://10.0.0.1/h"}]}),
            "webhooks[0].url",
        ),
    ];
    for (extra, field) in cases {
        let mut body = json!({"type": "Idea", "payload": {}});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let answer = app.post("/api/v1/artifacts", &body).await;
        assert_eq!(answer.status(), 422, "{field}");
        let error: Value = answer.json().await.unwrap();
        assert_eq!(error["error"]["field"], field, "{error}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_headers_reach_the_receiver_and_no_log_answer_or_debug_output() {
    const TOKEN: &str = "Bearer tok-0d7c1e55-never-shown";
    const OTHER: &str = "tenant-token-5f3a-never-shown";
    let dir = TempDir::new();
    let db = dir.path().join("flock.db");
    let config = dir.write(
        "flock.toml",
        &format!(
            r#"
[server]
port = 0

[store]
url = "sqlite://{}"

[webhooks]
allowed_cidrs = ["127.0.0.1/32"]

[log]
format = "json"
level = "debug"
"#,
            db.display()
        ),
    );
    let receiver = Receiver::start(Script {
        fail_first: 1,
        ..Script::default()
    });
    let (server, address, mut log) = Process::serve(&config);
    let client = reqwest::Client::new();
    let body = json!({"type": "Idea", "payload": {"n": 1}, "webhook": {
        "url": receiver.url, "secret": "s3cret",
        "headers": {"Authorization": TOKEN, "X-Tenant-Token": OTHER}}});
    let answer = client
        .post(format!("http://{address}/api/v1/artifacts"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    let accepted: Value = answer.json().await.unwrap();
    let workflow = accepted["correlation_id"].as_str().unwrap().to_owned();
    // The first attempt fails, so the headers come back out of the store for the retry.
    let received = receiver.wait_for(2).await;
    for attempt in &received {
        assert_eq!(attempt.header("authorization"), TOKEN);
        assert_eq!(attempt.header("x-tenant-token"), OTHER);
        attempt.verify("s3cret");
    }
    let mut answers = String::new();
    for path in [
        format!("/api/v1/correlations/{workflow}/webhooks"),
        format!("/api/v1/correlations/{workflow}"),
        format!("/api/v1/artifacts?correlation_id={workflow}"),
    ] {
        let text = client
            .get(format!("http://{address}{path}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        answers.push_str(&text);
    }
    let listed: Value = serde_json::from_str(
        &client
            .get(format!(
                "http://{address}/api/v1/correlations/{workflow}/webhooks"
            ))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        listed["deliveries"][0]["headers"],
        json!(["Authorization", "X-Tenant-Token"]),
        "the view names the headers: {listed}"
    );
    assert!(server.stop(&mut log).await.success());
    let log = log.join("\n");
    assert!(
        log.contains(&workflow),
        "the log is about this workflow: {log}"
    );
    for secret in ["tok-0d7c1e55", OTHER] {
        assert!(!log.contains(secret), "a header value is in the log");
        assert!(!answers.contains(secret), "a header value is in an answer");
    }
    // Debug output of the request as parsed and of its delivery shows names only.
    let request = flock_models::ArtifactPublishRequest::from_value(body).unwrap();
    let debug = format!("{request:?} {request:#?}");
    assert!(debug.contains("Authorization"), "{debug}");
    assert!(
        !debug.contains("tok-0d7c1e55") && !debug.contains(OTHER),
        "{debug}"
    );
    receiver.stop().await;
}

/// `ordered` webhooks: with a receiver that fails the first two attempts of delivery 2,
/// deliveries 3 to 5 arrive after 2 is delivered, in sequence order; without `ordered` they
/// do not wait for it.
async fn ordered_on(store: StoreUrl) {
    let mut s = settings();
    s.store.url = store;
    let app = TestApp::start(s).await;
    for ordered in [true, false] {
        let receiver = Receiver::start(Script {
            fail_sequence: Some((2, 2)),
            ..Script::default()
        });
        let artifacts: Vec<Value> = (1..=5)
            .map(|n| json!({"type": "Step", "payload": {"n": n}}))
            .collect();
        let answer = app
            .post(
                "/api/v1/artifacts/batch",
                &json!({"artifacts": artifacts,
                        "webhook": {"url": receiver.url, "ordered": ordered}}),
            )
            .await;
        assert_eq!(answer.status(), 202);
        // Five deliveries and two failed attempts.
        let received = receiver.wait_for(7).await;
        let successes: Vec<u64> = received
            .iter()
            .filter(|r| r.status == 200)
            .map(|r| r.payload().sequence)
            .collect();
        let second_ok = successes.iter().position(|s| *s == 2).unwrap();
        if ordered {
            assert_eq!(successes, [1, 2, 3, 4, 5], "ordered: in sequence order");
            let attempts: Vec<u64> = received.iter().map(|r| r.payload().sequence).collect();
            assert_eq!(
                attempts,
                [1, 2, 2, 2, 3, 4, 5],
                "nothing after 2 before 2 succeeded"
            );
        } else {
            assert!(
                successes[..second_ok].iter().any(|s| *s > 2),
                "unordered: later deliveries do not wait for 2: {successes:?}"
            );
        }
        receiver.stop().await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_deliveries_wait_for_the_one_before_and_unordered_do_not_in_memory() {
    ordered_on(StoreUrl::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_deliveries_wait_for_the_one_before_and_unordered_do_not_on_sqlite() {
    let dir = TempDir::new();
    ordered_on(StoreUrl::Sqlite(dir.path().join("flock.db"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_deliveries_wait_for_the_one_before_and_unordered_do_not_on_postgres() {
    let Some(db) = PostgresTestDatabase::create(
        "options::ordered_deliveries_wait_for_the_one_before_and_unordered_do_not_on_postgres",
    )
    .await
    else {
        return;
    };
    ordered_on(db.url().clone()).await;
}

/// A batch of 1,000 is one write: with the database failing inserts part-way, none of it is
/// stored (and no webhook is left behind); then the same batch is stored whole, answered with
/// its ids in order, delivered with sequences 1 to 1,000, and replayed under its idempotency
/// key.
async fn a_batch_of_1000_on(store: StoreUrl) {
    let mut s = settings();
    s.store.url = store.clone();
    s.server.body_limit_bytes = 4 * 1024 * 1024;
    let app = TestApp::start(s).await;
    let receiver = Receiver::start(Script::default());
    let artifacts: Vec<Value> = (1..=1000)
        .map(|n| json!({"type": "Step", "payload": {"n": n}, "tags": ["batch"]}))
        .collect();
    let body =
        json!({"artifacts": artifacts, "webhook": {"url": receiver.url, "secret": "s3cret"}});

    flock_store::testing::refuse_artifacts_beyond(&store, 500)
        .await
        .unwrap();
    let refused = app.post("/api/v1/artifacts/batch", &body).await;
    assert_eq!(
        refused.status(),
        503,
        "a store failure is storage_unavailable"
    );
    let stored = app.get_json("/api/v1/artifacts?tag=batch&limit=1").await;
    assert_eq!(
        stored["pagination"]["total"], 0,
        "nothing of the batch: {stored}"
    );
    flock_store::testing::allow_artifacts(&store).await.unwrap();

    let answer = app
        .client
        .post(app.url("/api/v1/artifacts/batch"))
        .header("X-Idempotency-Key", "batch-1000")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    let accepted: Value = answer.json().await.unwrap();
    assert_eq!(accepted["status"], "accepted");
    let workflow = accepted["correlation_id"].as_str().unwrap().to_owned();
    let ids: Vec<String> = accepted["artifact_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 1000);
    // The ids are the artifacts' in the request's order.
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = app
            .get_json(&format!(
                "/api/v1/artifacts?correlation_id={workflow}&limit=500{}",
                cursor
                    .as_deref()
                    .map(|c| format!("&cursor={c}"))
                    .unwrap_or_default()
            ))
            .await;
        for item in page["items"].as_array().unwrap() {
            listed.push((
                item["id"].as_str().unwrap().to_owned(),
                item["payload"]["n"].as_u64().unwrap(),
            ));
        }
        match page["pagination"]["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(listed.len(), 1000);
    for (i, (id, n)) in listed.iter().enumerate() {
        assert_eq!((id, *n), (&ids[i], i as u64 + 1));
    }
    let received = receiver.wait_for(1000).await;
    let mut sequences: Vec<u64> = received
        .iter()
        .map(|r| {
            let payload = r.payload();
            assert_eq!(
                payload.artifact.payload["n"].as_u64(),
                Some(payload.sequence)
            );
            payload.sequence
        })
        .collect();
    sequences.sort_unstable();
    assert_eq!(
        sequences,
        (1..=1000).collect::<Vec<u64>>(),
        "1 to 1,000, no gap"
    );
    received[0].verify("s3cret");
    // The same request under the same key: the first answer again, nothing new stored.
    let replayed = app
        .client
        .post(app.url("/api/v1/artifacts/batch"))
        .header("X-Idempotency-Key", "batch-1000")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), 202);
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    let again: Value = replayed.json().await.unwrap();
    assert_eq!(again, accepted);
    let stored = app.get_json("/api/v1/artifacts?tag=batch&limit=1").await;
    assert_eq!(stored["pagination"]["total"], 1000);
    app.stop().await;
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_1000_is_stored_all_or_none_and_numbered_without_gap_on_sqlite() {
    let dir = TempDir::new();
    a_batch_of_1000_on(StoreUrl::Sqlite(dir.path().join("flock.db"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_1000_is_stored_all_or_none_and_numbered_without_gap_on_postgres() {
    let Some(db) = PostgresTestDatabase::create(
        "options::a_batch_of_1000_is_stored_all_or_none_and_numbered_without_gap_on_postgres",
    )
    .await
    else {
        return;
    };
    a_batch_of_1000_on(db.url().clone()).await;
}
