//! Through the orchestrator: publishing (and the agent's follow-up publish) completes while the
//! receiver holds every webhook request; fire and forget shown by a closed gate, not a clock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use flock_context::Webhooks;
use flock_delivery::{DeliveryConfig, DeliveryState, Outbox, WebhookDeliveryComponent};
use flock_models::{Artifact, ArtifactDraft, TypeName};
use flock_orchestrator::{
    Agent, AgentContext, AgentError, ArtifactQuery, ArtifactStore, Orchestrator, Subscription,
    WaitOutcome,
};
use serde_json::{Map, Value};
use tokio::sync::Semaphore;

use crate::receiver::{Receiver, Reply};
use crate::{Harness, requested, test_config};

/// Answers every `Idea` with a `Shout`.
struct Shouter {
    subscriptions: Vec<Subscription>,
    publishes: Vec<TypeName>,
}

#[async_trait]
impl Agent for Shouter {
    fn name(&self) -> &str {
        "shouter"
    }

    fn subscriptions(&self) -> &[Subscription] {
        &self.subscriptions
    }

    fn publishes(&self) -> &[TypeName] {
        &self.publishes
    }

    async fn run(
        &self,
        _ctx: AgentContext,
        inputs: Vec<Arc<Artifact>>,
    ) -> Result<Vec<ArtifactDraft>, AgentError> {
        let text = inputs[0]
            .payload
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut payload = Map::new();
        payload.insert("text".into(), Value::from(text.to_uppercase()));
        Ok(vec![ArtifactDraft::new(
            TypeName::new("Shout").unwrap(),
            payload,
        )])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_through_the_orchestrator_completes_while_the_receiver_is_held() {
    let gate = Arc::new(Semaphore::new(0));
    let receiver = Receiver::start(Vec::new(), Reply::ok().held_by(Arc::clone(&gate))).await;
    // Held requests must not time out while the test looks at them.
    let harness = Harness::start(DeliveryConfig {
        request_timeout: Duration::from_secs(120),
        lease: Duration::from_secs(240),
        ..test_config()
    });
    let webhooks = Arc::new(Webhooks::new(test_config().guard()));
    let store: Arc<dyn ArtifactStore> = harness.storage.clone();
    let orchestrator = Orchestrator::builder()
        .store(store)
        .component(Arc::new(WebhookDeliveryComponent::new(Arc::clone(
            &webhooks,
        ))))
        .agent(Arc::new(Shouter {
            subscriptions: vec![Subscription::to([TypeName::new("Idea").unwrap()])],
            publishes: vec![TypeName::new("Shout").unwrap()],
        }))
        .build()
        .await
        .unwrap();

    let mut payload = Map::new();
    payload.insert("text".into(), Value::from("hello"));
    let draft = ArtifactDraft::new(TypeName::new("Idea").unwrap(), payload);
    // As the API starts a workflow: register the webhook, then publish under its id.
    let (workflow, _) = webhooks
        .publish(
            vec![requested(&receiver.url("/flow"), Some("whsec_c2VjcmV0"))],
            |workflow| orchestrator.publish(workflow, draft),
        )
        .await
        .unwrap();

    // A webhook request is now held by the receiver, and stays held while the agent's output
    // is published and the workflow goes idle.
    receiver.wait_for(1).await;
    assert_eq!(
        orchestrator
            .wait_idle(workflow, Duration::from_secs(60))
            .await,
        WaitOutcome::Idle
    );
    let stored = orchestrator
        .store()
        .query(&ArtifactQuery::correlation(workflow))
        .await
        .unwrap();
    assert_eq!(stored.total, 2, "the Idea and the agent's Shout");
    let pending = harness.storage.deliveries(workflow).await.unwrap();
    assert_eq!(pending.len(), 2);
    assert!(
        pending
            .iter()
            .all(|d| d.state == DeliveryState::Pending && d.attempts.is_empty()),
        "nothing was answered before publishing completed: {pending:?}"
    );

    gate.add_permits(Semaphore::MAX_PERMITS / 2);
    let deadline = Instant::now() + Duration::from_secs(60);
    let delivered = loop {
        let views = harness.storage.deliveries(workflow).await.unwrap();
        if views.iter().all(|d| d.state == DeliveryState::Delivered) {
            break views;
        }
        assert!(Instant::now() < deadline, "not delivered: {views:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        delivered.iter().map(|d| d.sequence).collect::<Vec<_>>(),
        [1, 2]
    );
    let mut bodies: Vec<Value> = receiver
        .requests()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    bodies.sort_by_key(|b| b["sequence"].as_u64());
    assert_eq!(bodies.len(), 2, "each artifact delivered once");
    assert_eq!(bodies[0]["artifact"]["type"], "Idea");
    assert_eq!(bodies[0]["artifact"]["produced_by"], "external");
    assert_eq!(bodies[1]["artifact"]["type"], "Shout");
    assert_eq!(bodies[1]["artifact"]["produced_by"], "shouter");
    assert_eq!(bodies[1]["artifact"]["payload"]["text"], "HELLO");

    // The idle hook (on a task of its own) has the workflow's webhook forgotten.
    let deadline = Instant::now() + Duration::from_secs(60);
    while webhooks.is_registered(workflow) {
        assert!(Instant::now() < deadline, "the webhook was not forgotten");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    orchestrator.shutdown(Duration::from_secs(5)).await;
}
