//! Bulk recovery on every store: `POST /api/v1/webhooks/deliveries/redeliver` queues again the
//! failed deliveries of the caller's tenant in its window, and only those (not the delivered,
//! the pending, the ones that failed before the window, or another tenant's); a repeat queues
//! nothing twice. The failed-deliveries listing shows the same window.

use std::time::{Duration, Instant};

use flock_api::config::AuthMode;
use flock_models::Scope;
use flock_store::StoreUrl;
use flock_store::testing::PostgresTestDatabase;
use serde_json::{Value, json};

use crate::support::{LONG, Receiver, Script, TempDir, TestApp, free_port, settings};

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

async fn publish(app: &TestApp, key: &str, url: &str) -> String {
    let body = json!({"type": "Note", "payload": {}, "webhook": {"url": url}});
    let (status, answer) = call(app, "POST", "/api/v1/artifacts", Some(&body), key).await;
    assert_eq!(status, 202, "{answer}");
    answer["correlation_id"].as_str().unwrap().to_owned()
}

/// The workflow's one delivery, once `state` holds for it.
async fn delivery_when(app: &TestApp, key: &str, correlation: &str, state: &str) -> Value {
    let deadline = Instant::now() + LONG;
    loop {
        let (_, body) = call(
            app,
            "GET",
            &format!("/api/v1/correlations/{correlation}/webhooks"),
            None,
            key,
        )
        .await;
        let delivery = body["deliveries"][0].clone();
        if delivery["state"] == state {
            return delivery;
        }
        assert!(Instant::now() < deadline, "never {state}: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn bulk_on(store: StoreUrl) {
    let mut s = settings();
    s.store.url = store;
    s.auth.mode = AuthMode::Keys;
    s.webhooks.retry.max_retries = 0;
    let app = TestApp::start(s).await;
    let acme = app
        .key("acme", &[Scope::Read, Scope::Publish, Scope::Redeliver])
        .await;
    let other = app
        .key("other", &[Scope::Read, Scope::Publish, Scope::Redeliver])
        .await;
    // Nothing listens on `down` yet: every attempt there fails at once.
    let port = free_port();
    let down = format!("http://127.0.0.1:{port}/hook");
    let up = Receiver::start(Script::default());
    let busy = Receiver::start(Script {
        hold: true,
        ..Script::default()
    });

    let before = publish(&app, &acme, &down).await;
    delivery_when(&app, &acme, &before, "failed").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let since = flock_models::timestamp::format_micros(time::OffsetDateTime::now_utc());
    // One after the other, so that they fail in this order.
    let first = publish(&app, &acme, &down).await;
    delivery_when(&app, &acme, &first, "failed").await;
    let failed = [first, publish(&app, &acme, &down).await];
    let delivered = publish(&app, &acme, &up.url).await;
    let pending = publish(&app, &acme, &busy.url).await;
    let others = publish(&app, &other, &down).await;
    for id in &failed {
        delivery_when(&app, &acme, id, "failed").await;
    }
    delivery_when(&app, &acme, &delivered, "delivered").await;
    delivery_when(&app, &other, &others, "failed").await;
    busy.wait_for(1).await;
    delivery_when(&app, &acme, &pending, "pending").await;

    // The listing shows the window's failed deliveries, the most recent first.
    let (status, page) = call(
        &app,
        "GET",
        &format!(
            "/api/v1/webhooks/deliveries/failed?since={}",
            since.replace('+', "%2B")
        ),
        None,
        &acme,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let listed: Vec<&str> = page["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["correlation_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [failed[1].as_str(), failed[0].as_str()], "{page}");
    assert_eq!(page["truncated"], false);
    assert_eq!(
        page["deliveries"][0]["attempts"][0]["error_kind"], "connect",
        "{page}"
    );

    // Now `down` answers, slowly: what is queued again stays pending meanwhile.
    let recovered = Receiver::start_at(
        port,
        Script {
            hold: true,
            ..Script::default()
        },
    );
    let window = json!({"since": since});
    let (status, answer) = call(
        &app,
        "POST",
        "/api/v1/webhooks/deliveries/redeliver",
        Some(&window),
        &acme,
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer, json!({"queued": 2, "more": false}));
    for id in &failed {
        delivery_when(&app, &acme, id, "pending").await;
    }
    delivery_when(&app, &acme, &before, "failed").await;
    delivery_when(&app, &acme, &delivered, "delivered").await;
    assert_eq!(
        delivery_when(&app, &acme, &pending, "pending").await["attempts"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    delivery_when(&app, &other, &others, "failed").await;
    // The same call again queues nothing twice.
    let (status, again) = call(
        &app,
        "POST",
        "/api/v1/webhooks/deliveries/redeliver",
        Some(&window),
        &acme,
    )
    .await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["queued"], 0, "{again}");
    // A workflow's own window; another tenant's call queues its own alone.
    let one = json!({"since": "2000-01-01T00:00:00Z", "correlation_id": before, "until": null});
    let (_, answer) = call(
        &app,
        "POST",
        "/api/v1/webhooks/deliveries/redeliver",
        Some(&one),
        &acme,
    )
    .await;
    assert_eq!(answer["queued"], 1, "{answer}");
    let (_, answer) = call(
        &app,
        "POST",
        "/api/v1/webhooks/deliveries/redeliver",
        Some(&window),
        &other,
    )
    .await;
    assert_eq!(answer["queued"], 1, "{answer}");
    // Bad windows are named.
    for (body, field) in [
        (json!({}), "since"),
        (json!({"since": "yesterday"}), "since"),
        (json!({"since": since, "destination": ""}), "destination"),
        (json!({"since": since, "tenant": "other"}), "tenant"),
    ] {
        let (status, answer) = call(
            &app,
            "POST",
            "/api/v1/webhooks/deliveries/redeliver",
            Some(&body),
            &acme,
        )
        .await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
    }
    recovered.release();
    busy.release();
    for id in &failed {
        delivery_when(&app, &acme, id, "delivered").await;
    }
    app.stop().await;
    recovered.stop().await;
    busy.stop().await;
    up.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_redelivery_queues_only_the_windows_failed_deliveries_once_in_memory() {
    bulk_on(StoreUrl::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_redelivery_queues_only_the_windows_failed_deliveries_once_on_sqlite() {
    let dir = TempDir::new();
    bulk_on(StoreUrl::Sqlite(dir.path().join("flock.db"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_redelivery_queues_only_the_windows_failed_deliveries_once_on_postgres() {
    let Some(db) = PostgresTestDatabase::create(
        "bulk::bulk_redelivery_queues_only_the_windows_failed_deliveries_once_on_postgres",
    )
    .await
    else {
        return;
    };
    bulk_on(db.url().clone()).await;
}
