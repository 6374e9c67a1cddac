//! Fifty workflows at once, each with its own receiver and secret: each receiver gets exactly
//! its own workflow's artifacts, sequences 1..n without gaps or duplicates, all signed with its
//! own secret.

use std::collections::BTreeSet;

use flock_e2e::{Behaviour, Receiver, ServerConfig, TransformAgent};
use serde_json::json;

use crate::{LONG, in_process, settled};

const WORKFLOWS: usize = 50;
/// The request's artifact and three outputs of one agent run: n = 4 per workflow.
const PER_WORKFLOW: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_workflows_never_cross() {
    // One agent run per workflow publishing three artifacts keeps the python processes (the
    // slow part on a loaded machine) at fifty.
    let config = ServerConfig {
        agents: vec![TransformAgent::new("splitter", "Idea", "Part").outputs(PER_WORKFLOW - 1)],
        ..ServerConfig::default()
    };
    let (_dir, server, api) = in_process(&config).await;
    let mut receivers = Vec::with_capacity(WORKFLOWS);
    for _ in 0..WORKFLOWS {
        receivers.push(Receiver::start(Behaviour::recording()).await.unwrap());
    }
    let secret = |i: usize| format!("secret-of-workflow-{i}");

    let publishes = receivers.iter().enumerate().map(|(i, receiver)| {
        let body = json!({"type": "Idea", "payload": {"workflow": i},
                          "webhook": {"url": receiver.url(), "secret": secret(i)}});
        let api = &api;
        async move { api.publish(&body).await.unwrap() }
    });
    let correlations = futures_util::future::join_all(publishes).await;
    assert_eq!(
        correlations.iter().collect::<BTreeSet<_>>().len(),
        WORKFLOWS,
        "one correlation id per request"
    );

    // Wait until every workflow is idle and every one of its deliveries answered, so nothing
    // more can arrive anywhere; then look at what each receiver got.
    for correlation in &correlations {
        assert_eq!(settled(&api, correlation).await, "completed");
        api.deliveries_until(correlation, LONG, |d| {
            d.len() == PER_WORKFLOW && d.iter().all(|x| x["state"] == "delivered")
        })
        .await
        .unwrap();
    }
    for (i, (receiver, correlation)) in receivers.iter().zip(&correlations).enumerate() {
        let received = receiver.received();
        assert_eq!(received.len(), PER_WORKFLOW, "receiver {i}");
        let mut sequences = Vec::new();
        for request in &received {
            request.verify(&secret(i)).unwrap();
            let other = (i + 1) % WORKFLOWS;
            assert!(request.verify(&secret(other)).is_err(), "receiver {i}");
            let payload = request.payload().unwrap();
            assert_eq!(
                &payload.correlation_id.to_string(),
                correlation,
                "receiver {i}"
            );
            if payload.sequence == 1 {
                assert_eq!(payload.artifact.payload["workflow"], json!(i));
            }
            sequences.push(payload.sequence);
        }
        sequences.sort_unstable();
        assert_eq!(
            sequences,
            (1..=PER_WORKFLOW as u64).collect::<Vec<_>>(),
            "receiver {i}"
        );
    }
    drop(receivers);
    server.stop().await.unwrap();
}
