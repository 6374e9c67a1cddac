//! The webhook component driven directly: sequences 1..n of one workflow, each delivered once;
//! nothing for a workflow without a webhook; the webhook is forgotten when the workflow is idle.

use std::collections::HashSet;
use std::sync::Arc;

use flock_context::Webhooks;
use flock_delivery::{DeliveryState, Outbox, WebhookDeliveryComponent};
use flock_orchestrator::{ArtifactStore, Component};
use uuid::Uuid;

use crate::receiver::Receiver;
use crate::{Harness, artifact, requested, test_config};

#[tokio::test]
async fn sequences_one_to_n_of_a_workflow_are_each_delivered_once() {
    const N: u64 = 40;
    let receiver = Receiver::ok().await;
    let harness = Harness::start(test_config());
    let webhooks = Arc::new(Webhooks::new(test_config().guard()));
    let component = WebhookDeliveryComponent::new(Arc::clone(&webhooks));
    assert_eq!(component.name(), "webhook_delivery");
    assert_eq!(component.priority(), 200);

    let workflow = webhooks
        .register(requested(&receiver.url("/flow"), Some("flow-secret")))
        .unwrap();
    let quiet = Uuid::now_v7();

    let mut artifact_ids = HashSet::new();
    for n in 1..=N {
        let published = artifact(workflow, n);
        artifact_ids.insert(published.id.to_string());
        let mut outbox = Vec::new();
        component.before_store(&published, &mut outbox);
        assert_eq!(outbox.len(), 1);
        assert_eq!(outbox[0].sequence, n);
        harness.storage.publish(&published, outbox).await.unwrap();

        // A workflow without a webhook gets no delivery.
        let other = artifact(quiet, n);
        let mut none = Vec::new();
        component.before_store(&other, &mut none);
        assert!(none.is_empty());
        harness.storage.publish(&other, none).await.unwrap();
    }
    assert_eq!(harness.storage.artifacts().len() as u64, 2 * N);

    let requests = receiver.wait_for(N as usize).await;
    let mut sequences: Vec<u64> = Vec::new();
    let mut webhook_ids = HashSet::new();
    for request in &requests {
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["correlation_id"], workflow.to_string());
        assert!(artifact_ids.contains(body["artifact"]["id"].as_str().unwrap()));
        sequences.push(body["sequence"].as_u64().unwrap());
        webhook_ids.insert(request.header("webhook-id").unwrap().to_owned());
    }
    sequences.sort_unstable();
    assert_eq!(sequences, (1..=N).collect::<Vec<_>>());
    assert_eq!(webhook_ids.len(), N as usize);

    let views = wait_all_done(&harness, workflow).await;
    assert_eq!(views.len() as u64, N);
    assert!(views.iter().all(|v| v.state == DeliveryState::Delivered));
    assert!(views.iter().all(|v| v.attempts.len() == 1));
    assert_eq!(
        views.iter().map(|v| v.sequence).collect::<Vec<_>>(),
        (1..=N).collect::<Vec<_>>()
    );
    assert!(harness.storage.deliveries(quiet).await.unwrap().is_empty());
    assert_eq!(receiver.requests().len() as u64, N, "each delivered once");

    component.on_correlation_idle(workflow).await;
    assert!(!webhooks.is_registered(workflow));
    let after = artifact(workflow, N + 1);
    let mut none = Vec::new();
    component.before_store(&after, &mut none);
    assert!(none.is_empty(), "no context, no delivery");
}

async fn wait_all_done(harness: &Harness, workflow: Uuid) -> Vec<flock_delivery::DeliveryView> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let views = harness.storage.deliveries(workflow).await.unwrap();
        if views.iter().all(|v| v.state != DeliveryState::Pending) {
            return views;
        }
        assert!(std::time::Instant::now() < deadline, "still pending");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
