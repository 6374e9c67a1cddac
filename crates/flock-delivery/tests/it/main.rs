//! Integration tests of flock-delivery: the dispatcher, the outbox, the SSRF guard and the
//! webhook component against real HTTP receivers on 127.0.0.1.

mod component;
mod connections;
mod delivery;
mod orchestrator;
mod receiver;
mod retries;
mod secrets;
mod shutdown;
mod ssrf;

use std::sync::Arc;
use std::time::{Duration, Instant};

use flock_delivery::{
    DeliveryConfig, DeliveryState, DeliveryView, Dispatcher, DispatcherHandle, MemoryStorage,
    Outbox,
};
use flock_models::{
    Artifact, ArtifactDraft, NewDelivery, RequestedWebhook, Secret, TypeName, WebhookConfig,
    WebhookForm, WebhookUrl,
};
use flock_retry::RetryPolicy;
use serde_json::json;
use uuid::Uuid;

/// A configuration for tests: 127.0.0.1 allowed, short waits (100 ms, 200 ms, 400 ms), four
/// attempts, and timeouts that only bound failures.
pub(crate) fn test_config() -> DeliveryConfig {
    DeliveryConfig {
        allowed_cidrs: vec!["127.0.0.1/32".parse().unwrap()],
        retry: RetryPolicy {
            base_delay: Duration::from_millis(100),
            ..RetryPolicy::default()
        },
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(10),
        ..DeliveryConfig::default()
    }
}

/// [`test_config`] with one attempt per delivery: a failure is final at once.
pub(crate) fn one_attempt_config() -> DeliveryConfig {
    DeliveryConfig {
        retry: RetryPolicy {
            max_retries: 0,
            ..test_config().retry
        },
        ..test_config()
    }
}

/// An artifact of workflow `correlation_id`.
pub(crate) fn artifact(correlation_id: Uuid, n: u64) -> Artifact {
    let payload = json!({"n": n, "text": "hello"});
    let draft = ArtifactDraft::new(
        TypeName::new("Idea").unwrap(),
        payload.as_object().unwrap().clone(),
    );
    Artifact::new(draft, "external", correlation_id)
}

/// A delivery of a fresh artifact to `url`, signed with `secret` when given.
pub(crate) fn delivery(url: &str, secret: Option<&str>) -> NewDelivery {
    let correlation_id = Uuid::now_v7();
    NewDelivery::new(
        &artifact(correlation_id, 1),
        1,
        WebhookUrl::parse(url).unwrap(),
        secret.map(|s| Secret::new(s).unwrap()),
    )
}

/// A webhook as a publish request gives it (nested form), to `url`, signed with `secret` when
/// given.
pub(crate) fn requested(url: &str, secret: Option<&str>) -> RequestedWebhook {
    RequestedWebhook {
        config: WebhookConfig::new(url, secret).unwrap(),
        form: WebhookForm::Nested,
    }
}

/// Memory storage with a dispatcher running on it.
pub(crate) struct Harness {
    pub(crate) storage: Arc<MemoryStorage>,
    pub(crate) dispatcher: DispatcherHandle,
}

impl Harness {
    pub(crate) fn start(config: DeliveryConfig) -> Self {
        let storage = Arc::new(MemoryStorage::new());
        let outbox: Arc<dyn Outbox> = storage.clone();
        let dispatcher = Dispatcher::new(outbox, config).unwrap().start();
        Harness {
            storage,
            dispatcher,
        }
    }

    pub(crate) async fn enqueue(&self, delivery: NewDelivery) -> Uuid {
        let id = delivery.id;
        self.storage.enqueue(vec![delivery]).await.unwrap();
        id
    }

    /// Waits until delivery `id` is delivered or failed (panics after a generous minute).
    pub(crate) async fn finished(&self, id: Uuid) -> DeliveryView {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let view = self.storage.delivery(id).await.unwrap().expect("enqueued");
            if view.state != DeliveryState::Pending {
                return view;
            }
            assert!(Instant::now() < deadline, "still pending: {view:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
