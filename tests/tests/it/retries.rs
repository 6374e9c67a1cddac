//! A receiver that fails twice, then accepts: the delivery succeeds on attempt 3, the attempts
//! are listed by the API, and the server's own `/metrics` counts them (the binary as a process,
//! so the counts are this test's alone).

use std::collections::HashSet;

use flock_e2e::{Behaviour, Receiver, ServerConfig, metric};
use serde_json::json;

use crate::{LONG, process};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_twice_then_accepting_delivers_on_attempt_three() {
    let (_dir, server, api) = process(&ServerConfig::default());
    let receiver = Receiver::start(Behaviour {
        fail_first: 2,
        record: true,
        ..Behaviour::default()
    })
    .await
    .unwrap();

    let correlation = api
        .publish(&json!({"type": "Idea", "payload": {"n": 1},
                         "webhook": {"url": receiver.url(), "secret": "topsecret"}}))
        .await
        .unwrap();
    let deliveries = api
        .deliveries_until(&correlation, LONG, |d| {
            d.len() == 1 && d[0]["state"] != "pending"
        })
        .await
        .unwrap();
    let delivery = &deliveries[0];
    assert_eq!(delivery["state"], "delivered", "{delivery:#}");
    assert_eq!(delivery["sequence"], 1);
    let attempts = delivery["attempts"].as_array().unwrap();
    let codes: Vec<u64> = attempts
        .iter()
        .map(|a| a["status_code"].as_u64().unwrap())
        .collect();
    assert_eq!(codes, [500, 500, 200]);
    let numbers: Vec<u64> = attempts
        .iter()
        .map(|a| a["number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2, 3]);
    assert_eq!(attempts[0]["error_kind"], "http_status");
    assert!(attempts[2]["error_kind"].is_null());
    assert!(!delivery.to_string().contains("topsecret"));

    // Three requests, all signed, all with the delivery's id.
    let received = receiver.received();
    assert_eq!(received.len(), 3);
    for request in &received {
        request.verify("topsecret").unwrap();
    }
    let ids: HashSet<&str> = received.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids, HashSet::from([delivery["id"].as_str().unwrap()]));

    let text = api.metrics().await.unwrap();
    let attempts = "flock_webhook_attempts_total";
    assert_eq!(
        metric(&text, attempts, &[("result", "http_status")]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, attempts, &[("result", "success")]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "flock_webhook_deliveries_total",
            &[("outcome", "delivered")]
        ),
        Some(1.0),
        "{text}"
    );
    let failed = metric(
        &text,
        "flock_webhook_deliveries_total",
        &[("outcome", "failed")],
    );
    assert_eq!(failed.unwrap_or(0.0), 0.0, "{text}");
    assert_eq!(
        metric(&text, "flock_webhook_delivery_latency_seconds_count", &[]),
        Some(1.0),
        "{text}"
    );
    drop(server);
}
