//! `WebhookDeliveryComponent`: the orchestrator component that turns every artifact of a
//! workflow with a webhook into one delivery, written with the artifact.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use flock_context::ContextRegistry;
use flock_models::{Artifact, NewDelivery};
use flock_orchestrator::Component;
use uuid::Uuid;

/// Announces every artifact of a workflow that has a webhook: register it with the orchestrator
/// to get webhooks.
///
/// In [`Component::before_store`], called while the artifact's workflow holds its publish lock,
/// it looks up the workflow's [`WebhookContext`](flock_context::WebhookContext) in the registry
/// by the artifact's correlation id; without one it does nothing; with one it takes the next
/// sequence number and pushes the delivery (its body rendered once, here) for the store to write
/// together with the artifact. So sequence numbers follow blackboard order, an artifact is never
/// stored without its delivery, and no I/O happens on the publishing path.
///
/// In [`Component::on_correlation_idle`] it removes the workflow's context from the registry:
/// the workflow has nothing queued or running, so every artifact it will ever have is enqueued.
pub struct WebhookDeliveryComponent {
    registry: Arc<ContextRegistry>,
}

impl WebhookDeliveryComponent {
    /// The component's name.
    pub const NAME: &'static str = "webhook_delivery";
    /// Its priority: after components that may replace or stop artifacts.
    pub const PRIORITY: i32 = 200;

    /// A component that finds workflows' webhooks in `registry`.
    pub fn new(registry: Arc<ContextRegistry>) -> Self {
        WebhookDeliveryComponent { registry }
    }

    /// The registry it reads.
    pub fn registry(&self) -> &Arc<ContextRegistry> {
        &self.registry
    }
}

impl fmt::Debug for WebhookDeliveryComponent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookDeliveryComponent")
            .field("workflows", &self.registry.len())
            .finish()
    }
}

#[async_trait]
impl Component for WebhookDeliveryComponent {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn priority(&self) -> i32 {
        Self::PRIORITY
    }

    fn before_store(&self, artifact: &Artifact, outbox: &mut Vec<NewDelivery>) {
        let Some(context) = self.registry.get(&artifact.correlation_id) else {
            return;
        };
        outbox.push(NewDelivery::new(
            artifact,
            context.next_sequence(),
            context.url().clone(),
            context.secret().cloned(),
        ));
    }

    async fn on_correlation_idle(&self, correlation_id: Uuid) {
        self.registry.remove(&correlation_id);
    }
}
