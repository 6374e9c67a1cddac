//! What every request handler shares: the orchestrator, the outbox, the webhook registry, the
//! SSRF guard, the idempotency cache and the settings that shape answers.

use std::sync::Arc;

use flock_context::ContextRegistry;
use flock_delivery::{Outbox, SsrfGuard};
use flock_models::Secret;
use flock_orchestrator::Orchestrator;
use flock_store::Storage;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::idempotency::IdempotencyCache;

/// The state behind every route; one per server, shared by its workers.
pub struct AppState {
    /// The blackboard.
    pub orchestrator: Orchestrator,
    /// Where artifacts and deliveries live (the orchestrator's store and `outbox` are its).
    pub storage: Storage,
    /// Webhook deliveries, for the status routes.
    pub outbox: Arc<dyn Outbox>,
    /// Webhook contexts of running workflows, by correlation id.
    pub registry: Arc<ContextRegistry>,
    /// The SSRF guard, to refuse literal addresses at request time.
    pub guard: SsrfGuard,
    /// Signs webhooks whose request gave no secret.
    pub default_secret: Option<Secret>,
    /// Remembered answers of `X-Idempotency-Key` requests.
    pub(crate) idempotency: IdempotencyCache,
    /// The largest request body accepted, in bytes.
    pub body_limit: usize,
    /// Renders `GET /metrics`.
    pub metrics: PrometheusHandle,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("store", self.storage.url())
            .field("workflows_with_webhooks", &self.registry.len())
            .field("default_secret", &self.default_secret)
            .field("body_limit", &self.body_limit)
            .finish_non_exhaustive()
    }
}
