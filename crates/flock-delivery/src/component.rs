//! `WebhookDeliveryComponent`: the orchestrator component that hands every artifact of a
//! workflow with a webhook to [`Webhooks`] for its delivery, written with the artifact.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use flock_context::Webhooks;
use flock_models::{Artifact, NewDelivery};
use flock_orchestrator::Component;
use uuid::Uuid;

/// Announces every artifact of a workflow that has a webhook: register it with the orchestrator
/// to get webhooks. A thin adapter between the orchestrator's hooks and [`Webhooks`], which
/// owns the workflows' webhooks.
///
/// In [`Component::before_store`], called while the artifact's workflow holds its publish lock,
/// it pushes the deliveries [`Webhooks::deliveries_for`] builds (the workflow's next sequence
/// number, the body rendered once, one delivery per webhook that wants the artifact; nothing
/// for a workflow without a webhook) for the
/// store to write together with the artifact. So sequence numbers follow blackboard order, an
/// artifact is never stored without its delivery, and no I/O happens on the publishing path.
///
/// In [`Component::on_correlation_idle`] it has [`Webhooks`] forget the workflow: the workflow
/// has nothing queued or running, so every artifact it will ever have is enqueued.
pub struct WebhookDeliveryComponent {
    webhooks: Arc<Webhooks>,
}

impl WebhookDeliveryComponent {
    /// The component's name.
    pub const NAME: &'static str = "webhook_delivery";
    /// Its priority: after components that may replace or stop artifacts.
    pub const PRIORITY: i32 = 200;

    /// A component that announces the artifacts of the workflows `webhooks` holds.
    pub fn new(webhooks: Arc<Webhooks>) -> Self {
        WebhookDeliveryComponent { webhooks }
    }

    /// The owner it asks.
    pub fn webhooks(&self) -> &Arc<Webhooks> {
        &self.webhooks
    }
}

impl fmt::Debug for WebhookDeliveryComponent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookDeliveryComponent")
            .field("webhooks", &self.webhooks)
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
        outbox.extend(self.webhooks.deliveries_for(artifact));
    }

    async fn on_correlation_idle(&self, correlation_id: Uuid) {
        self.webhooks.forget(correlation_id);
    }
}
