//! Routes through the production app factory in process (`init_service`), with access to the
//! shared state: the workflows' webhooks are forgotten as workflows go idle; the default secret
//! signs.

use std::time::{Duration, Instant};

use actix_web::test::{self, TestRequest};
use flock_api::create_app;
use flock_api::startup::build_state;
use flock_orchestrator::WaitOutcome;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{LONG, settings};

#[actix_web::test]
async fn webhooks_are_forgotten_once_workflows_are_idle() {
    let (state, _dispatcher) = build_state(&settings().check().unwrap()).await.unwrap();
    let app = test::init_service(create_app(state.clone())).await;
    let mut correlations = Vec::new();
    for i in 0..20 {
        let req = TestRequest::post()
            .uri("/api/v1/artifacts")
            .set_json(json!({"type": "Idea", "payload": {"i": i},
                             "webhook": {"url": format!("https://example.com/hook/{i}"), "secret": format!("s{i}")}}))
            .to_request();
        let answer: Value = test::call_and_read_body_json(&app, req).await;
        correlations.push(Uuid::parse_str(answer["correlation_id"].as_str().unwrap()).unwrap());
    }
    for correlation in &correlations {
        assert_eq!(
            state.orchestrator.wait_idle(*correlation, LONG).await,
            WaitOutcome::Idle
        );
    }
    let deadline = Instant::now() + LONG;
    while !state.webhooks.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} webhooks left behind",
            state.webhooks.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Every workflow got its delivery, to its own URL.
    for (i, correlation) in correlations.iter().enumerate() {
        let deliveries = state
            .storage
            .outbox()
            .deliveries(*correlation)
            .await
            .unwrap();
        assert_eq!(deliveries.len(), 1);
        assert_eq!(deliveries[0].url, format!("https://example.com/hook/{i}"));
    }
}

#[actix_web::test]
async fn a_refused_publish_leaves_no_webhook_behind() {
    let (state, _dispatcher) = build_state(&settings().check().unwrap()).await.unwrap();
    let app = test::init_service(create_app(state.clone())).await;
    state.orchestrator.shutdown(Duration::from_millis(10)).await;
    let req = TestRequest::post()
        .uri("/api/v1/artifacts")
        .set_json(json!({"type": "Idea", "payload": {}, "webhook_url": "https://example.com/h"}))
        .to_request();
    let response = test::call_service(&app, req).await;
    assert_eq!(response.status(), 503);
    let body: Value = test::read_body_json(response).await;
    assert_eq!(body["error"]["code"], "shutting_down");
    assert!(state.webhooks.is_empty());
}
