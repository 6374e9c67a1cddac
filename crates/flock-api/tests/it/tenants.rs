//! Tenant isolation through the server, on every store: tenant B never sees tenant A's
//! artifacts (listed or by id, agent outputs included), workflow status, deliveries or
//! redelivery; an idempotency key of A's means nothing to B; and on a durable store the
//! stamps survive a restart (a workflow no longer tracked is rebuilt from the store with its
//! tenant).

use std::time::{Duration, Instant};

use flock_api::config::{AuthMode, Settings};
use flock_models::Scope;
use flock_store::StoreUrl;
use flock_store::testing::PostgresTestDatabase;
use serde_json::{Value, json};

use crate::support::{LONG, Receiver, Script, TempDir, TestApp, settings, transform_agent};

/// A request with `key`; the status and the JSON answer.
async fn call(
    app: &TestApp,
    method: &str,
    path: &str,
    body: Option<&Value>,
    key: &str,
) -> (u16, Value) {
    let mut request = app
        .client
        .request(method.parse().unwrap(), app.url(path))
        .header("authorization", format!("Bearer {key}"));
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Settings on `store` with keys required, an agent that turns an `Idea` into a `Summary`, and
/// one attempt per delivery (so a refused one fails at once and can be redelivered).
fn tenant_settings(store: StoreUrl, dir: &TempDir) -> Settings {
    let mut s = settings();
    s.store.url = store;
    s.auth.mode = AuthMode::Keys;
    s.webhooks.retry.max_retries = 0;
    s.agents = vec![transform_agent(dir, "summarizer", "Idea", "Summary", 0.0)];
    s
}

/// What tenant A made: its workflow, its artifacts (the published one and the agent's) and
/// its failed delivery.
struct Made {
    correlation: String,
    artifacts: Vec<String>,
    delivery: String,
}

/// Tenant A publishes an `Idea` with a webhook whose receiver refuses it, and waits for the
/// agent's `Summary` and for the delivery to fail.
async fn tenant_a_publishes(app: &TestApp, a: &str, receiver: &Receiver) -> Made {
    let publish = json!({"type": "Idea", "payload": {"title": "mine"}, "timeout": 20,
        "webhook": {"url": receiver.url, "secret": "s3cret"}});
    let (status, body) = call(app, "POST", "/api/v1/artifacts/sync", Some(&publish), a).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["completed"], true, "{body}");
    let correlation = body["correlation_id"].as_str().unwrap().to_owned();
    let artifacts: Vec<String> = (body["artifacts"].as_array().unwrap().iter())
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        artifacts.len(),
        2,
        "the Idea and the agent's Summary: {body}"
    );
    let deadline = Instant::now() + LONG;
    loop {
        let (status, body) = call(
            app,
            "GET",
            &format!("/api/v1/correlations/{correlation}/webhooks"),
            None,
            a,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let deliveries = body["deliveries"].as_array().unwrap();
        if deliveries.len() == 2 && deliveries.iter().all(|d| d["state"] == "failed") {
            return Made {
                correlation,
                artifacts,
                delivery: deliveries[0]["id"].as_str().unwrap().to_owned(),
            };
        }
        assert!(
            Instant::now() < deadline,
            "deliveries did not fail in time: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every way B could reach A's data finds nothing, and A still finds all of it.
async fn b_sees_nothing_of_a(app: &TestApp, a: &str, b: &str, made: &Made) {
    let not_found = |what: &str, (status, body): (u16, Value)| {
        assert_eq!(status, 404, "{what}: {body}");
        assert_eq!(body["error"]["code"], "not_found", "{what}: {body}");
    };
    let (status, list) = call(app, "GET", "/api/v1/artifacts?limit=500", None, b).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(
        list["pagination"]["total"], 0,
        "B lists none of A's artifacts: {list}"
    );
    let (_, list) = call(
        app,
        "GET",
        &format!("/api/v1/artifacts?correlation_id={}", made.correlation),
        None,
        b,
    )
    .await;
    assert_eq!(
        list["items"],
        json!([]),
        "not even by A's correlation id: {list}"
    );
    for id in &made.artifacts {
        not_found(
            "B gets A's artifact",
            call(app, "GET", &format!("/api/v1/artifacts/{id}"), None, b).await,
        );
        let (status, body) = call(app, "GET", &format!("/api/v1/artifacts/{id}"), None, a).await;
        assert_eq!(status, 200, "A gets its artifact: {body}");
    }
    let status_path = format!("/api/v1/correlations/{}/status", made.correlation);
    not_found(
        "B reads A's workflow status",
        call(app, "GET", &status_path, None, b).await,
    );
    let (status, body) = call(app, "GET", &status_path, None, a).await;
    assert_eq!(
        (status, body["artifact_count"].as_u64()),
        (200, Some(2)),
        "{body}"
    );
    let webhooks_path = format!("/api/v1/correlations/{}/webhooks", made.correlation);
    not_found(
        "B lists A's deliveries",
        call(app, "GET", &webhooks_path, None, b).await,
    );
    let redeliver = format!("/api/v1/webhooks/deliveries/{}/redeliver", made.delivery);
    not_found(
        "B redelivers A's delivery",
        call(app, "POST", &redeliver, None, b).await,
    );
    let (_, body) = call(app, "GET", &webhooks_path, None, a).await;
    let first = &body["deliveries"][0];
    assert_eq!(
        (
            first["state"].as_str(),
            first["attempts"].as_array().map(Vec::len)
        ),
        (Some("failed"), Some(1)),
        "B's redelivery left A's delivery alone: {body}"
    );
}

/// The whole check on one store.
async fn isolation_on(store: StoreUrl, dir: &TempDir) {
    let receiver = Receiver::start(Script {
        fail_first: usize::MAX,
        ..Script::default()
    });
    let app = TestApp::start(tenant_settings(store.clone(), dir)).await;
    let a = app.key("tenant-a", &Scope::ALL).await;
    let b = app.key("tenant-b", &Scope::ALL).await;
    let made = tenant_a_publishes(&app, &a, &receiver).await;
    b_sees_nothing_of_a(&app, &a, &b, &made).await;

    // The same idempotency key and body from B starts B's own workflow, not a replay of A's.
    let body = json!({"type": "Note", "payload": {"n": 1}});
    let with_key = |key: &str| {
        app.client
            .post(app.url("/api/v1/artifacts"))
            .header("authorization", format!("Bearer {key}"))
            .header("x-idempotency-key", "shared-key-1")
            .json(&body)
            .send()
    };
    let first: Value = with_key(&a).await.unwrap().json().await.unwrap();
    let from_b = with_key(&b).await.unwrap();
    assert!(from_b.headers().get("idempotent-replayed").is_none());
    let from_b: Value = from_b.json().await.unwrap();
    assert_ne!(
        first["correlation_id"], from_b["correlation_id"],
        "{first} {from_b}"
    );

    // A's redelivery of its own delivery is accepted.
    let redeliver = format!("/api/v1/webhooks/deliveries/{}/redeliver", made.delivery);
    let (status, body) = call(&app, "POST", &redeliver, None, &a).await;
    assert_eq!(status, 202, "{body}");
    app.stop().await;

    // A durable store keeps the stamps: after a restart the workflow is no longer tracked in
    // memory and is rebuilt from the store, still A's alone.
    if store != StoreUrl::Memory {
        let app = TestApp::start(tenant_settings(store, dir)).await;
        let a = app.key("tenant-a", &Scope::ALL).await;
        let b = app.key("tenant-b", &Scope::ALL).await;
        let status_path = format!("/api/v1/correlations/{}/status", made.correlation);
        let (status, body) = call(&app, "GET", &status_path, None, &b).await;
        assert_eq!(status, 404, "after a restart: {body}");
        let (status, body) = call(&app, "GET", &status_path, None, &a).await;
        assert_eq!(
            (status, body["artifact_count"].as_u64()),
            (200, Some(2)),
            "{body}"
        );
        let (_, list) = call(&app, "GET", "/api/v1/artifacts", None, &b).await;
        assert_eq!(list["pagination"]["total"], 1, "B's own Note only: {list}");
        app.stop().await;
    }
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenant_never_sees_or_redelivers_a_tenants_data_in_memory() {
    let dir = TempDir::new();
    isolation_on(StoreUrl::Memory, &dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenant_never_sees_or_redelivers_a_tenants_data_on_sqlite() {
    let dir = TempDir::new();
    isolation_on(StoreUrl::Sqlite(dir.path().join("flock.db")), &dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenant_never_sees_or_redelivers_a_tenants_data_on_postgres() {
    let Some(db) = PostgresTestDatabase::create(
        "tenants::another_tenant_never_sees_or_redelivers_a_tenants_data_on_postgres",
    )
    .await
    else {
        return;
    };
    let dir = TempDir::new();
    isolation_on(db.url().clone(), &dir).await;
}
