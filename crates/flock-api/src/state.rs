//! What every request handler shares: the orchestrator, the storage, the workflows' webhooks, the
//! tenants' webhook secrets, the idempotency records and the settings that shape answers. Each part
//! once.

use std::sync::Arc;

use flock_context::Webhooks;
use flock_delivery::TenantSecrets;
use flock_orchestrator::Orchestrator;
use flock_store::Storage;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::auth::Auth;
use crate::idempotency::Idempotency;

/// The state behind every route; one per server, shared by its workers.
pub struct AppState {
    /// The blackboard.
    pub orchestrator: Orchestrator,
    /// Where artifacts and deliveries live (the orchestrator's store and the dispatcher's
    /// outbox are its); the status routes read deliveries through [`Storage::outbox`].
    pub storage: Storage,
    /// Every live workflow's webhook: checks a request's webhook (SSRF guard, default secret)
    /// and registers it when a workflow starts.
    pub webhooks: Arc<Webhooks>,
    /// Remembered answers of `X-Idempotency-Key` requests, in the store
    /// ([`Storage::idempotency`]) so every instance on it and the next process agree.
    pub(crate) idempotency: Idempotency,
    /// The request rate limit, when `[limits]` sets one.
    pub(crate) rate_limit: Option<crate::limits::RateLimiter>,
    /// How large a request body may be and how long it may take to arrive.
    pub body_limit: crate::body::BodyLimit,
    /// Renders `GET /metrics`.
    pub metrics: PrometheusHandle,
    /// The pending-delivery quotas a publish with a webhook is admitted by.
    pub(crate) quota: crate::quota::PendingQuota,
    /// Serve `GET /metrics` without a key (`server.metrics_open`).
    pub metrics_open: bool,
    /// How requests are authenticated: the policy and the key checker.
    pub(crate) auth: Arc<Auth>,
    /// Each tenant's webhook secrets, read through a 1 s cache
    /// ([`flock_delivery::CachedTenantSecrets`] over [`Storage::secrets`]): the rotation
    /// route replaces them, and the sender signs deliveries without a secret of their own
    /// with them. Share this one, so a rotation here is seen at once by this instance.
    pub secrets: Arc<dyn TenantSecrets>,
    /// How long a rotated-away secret keeps signing (`webhooks.secret_grace_secs`).
    pub secret_grace: std::time::Duration,
    /// The live event hub behind `GET /api/v1/events`.
    pub(crate) events: Arc<crate::events::EventHub>,
    /// The dispatcher's destinations, for `GET /api/v1/webhooks/destinations`.
    pub destinations: flock_delivery::Destinations,
}

impl AppState {
    /// The API keys: create, list, revoke, check.
    pub fn keys(&self) -> &flock_auth::Authenticator {
        &self.auth.keys
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("store", self.storage.url())
            .field("webhooks", &self.webhooks)
            .field("body_limit", &self.body_limit)
            .field("auth", &self.auth.policy)
            .finish_non_exhaustive()
    }
}
