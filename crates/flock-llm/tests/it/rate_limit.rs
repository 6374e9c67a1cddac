//! A 429 with `Retry-After` from a small local server: the agent waits as long as asked, longer
//! than its policy's own backoff, then succeeds.

use std::time::Duration;

use flock_llm::LlmAgent;
use flock_orchestrator::Agent;
use flock_retry::RetryPolicy;
use hyper::StatusCode;
use serde_json::json;

use crate::support::{Answer, LONG, TestServer, completion, context, idea, plan_types, spec, ty};

#[tokio::test]
async fn a_429_is_retried_after_the_wait_it_asks_for() {
    let server = TestServer::start(|n, _| async move {
        if n == 0 {
            Answer::json(
                StatusCode::TOO_MANY_REQUESTS,
                &json!({"error": {"message": "Rate limit reached"}}),
            )
            .header("retry-after", "1")
        } else {
            Answer::json(
                StatusCode::OK,
                &completion(
                    r#"{"artifacts": [{"type": "Plan", "payload": {"title": "Wait", "steps": ["Rest"]}}]}"#,
                    "stop",
                ),
            )
        }
    })
    .await;
    let agent = LlmAgent::builder("patient", spec(&server.base_url(), 64))
        .consumes([ty("Idea")])
        .publishes([ty("Plan")])
        .timeout(LONG)
        // Its own backoff is 10 ms: only Retry-After can explain a wait of a second.
        .retry_policy(RetryPolicy {
            max_retries: 2,
            base_delay: Duration::from_millis(10),
            factor: 1,
            max_delay: Duration::from_secs(30),
            jitter: 0.0,
        })
        .types(plan_types())
        .build()
        .unwrap();
    let drafts = agent
        .run(context("patient"), vec![idea("Queue politely")])
        .await
        .unwrap();
    assert_eq!(drafts[0].payload["title"], "Wait");
    let received = server.received();
    assert_eq!(received.len(), 2);
    let waited = received[1].at - received[0].at;
    assert!(waited >= Duration::from_secs(1), "waited {waited:?}");
    assert!(waited < Duration::from_secs(10), "waited {waited:?}");
}
