//! `MemoryStorage`: the blackboard's in-memory artifact store and the in-memory outbox as one
//! object, so publishing an artifact enqueues its deliveries in the same call.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use flock_models::{Artifact, NewDelivery, TenantId, WebhookArtifact, WebhookPayload};
use flock_orchestrator::{ArtifactQuery, ArtifactStore, MemoryStore, Page, StoreError};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::memory::MemoryOutbox;
use crate::outbox::{
    AttemptView, ClaimedDelivery, DeliveryView, FailedQuery, HeldDeliveries, HoldReason, Lease,
    Outbox, OutboxCounts, OutboxError, Resolution,
};

/// What a publish whose deliveries the outbox refused fails with (the refusal is its source).
const NOT_ENQUEUED: &str = "the artifact's deliveries cannot be enqueued";

/// Artifacts and webhook deliveries in memory: an [`ArtifactStore`] whose
/// [`publish`](ArtifactStore::publish) stores the artifact and then enqueues its deliveries in
/// the [`MemoryOutbox`], and an [`Outbox`] for the dispatcher. Share one `Arc<MemoryStorage>`
/// as both `Arc<dyn ArtifactStore>` and `Arc<dyn Outbox>`.
///
/// An artifact published with a delivery is stored as the span of the delivery's body that
/// holds it (`MemoryStore::insert_rendered`): its payload is in memory once, not twice.
///
/// A publish is all or nothing: its delivery ids are checked before the artifact is stored, so
/// a refused delivery leaves no artifact behind, and a refused artifact (a duplicate id)
/// enqueues nothing. (Only two publishes racing with the same fresh delivery id, which UUID v7
/// ids never are, could get past the check.)
#[derive(Debug, Default)]
pub struct MemoryStorage {
    artifacts: MemoryStore,
    outbox: MemoryOutbox,
}

impl MemoryStorage {
    /// Empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    /// The artifacts.
    pub fn artifacts(&self) -> &MemoryStore {
        &self.artifacts
    }

    /// The outbox.
    pub fn outbox(&self) -> &MemoryOutbox {
        &self.outbox
    }
}

#[async_trait]
impl ArtifactStore for MemoryStorage {
    async fn publish_all(
        &self,
        artifacts: &[Artifact],
        deliveries: Vec<NewDelivery>,
    ) -> Result<(), StoreError> {
        self.outbox
            .check_new(&deliveries)
            .map_err(|e| StoreError::backend_because(NOT_ENQUEUED, e))?;
        // An artifact's JSON inside its webhook body is kept once, by the store and the outbox:
        // each artifact's first delivery, found in one pass (a batch has up to 8,000).
        let mut first: HashMap<Uuid, &NewDelivery> = HashMap::with_capacity(artifacts.len());
        for delivery in &deliveries {
            first.entry(delivery.artifact_id).or_insert(delivery);
        }
        let rendered = artifacts
            .iter()
            .map(|artifact| {
                let shared = first.get(&artifact.id).and_then(|delivery| {
                    WebhookPayload::artifact_span(&delivery.body)
                        .map(|span| delivery.body.slice(span))
                });
                let json = shared.unwrap_or_else(|| Bytes::from(WebhookArtifact::render(artifact)));
                (artifact, json)
            })
            .collect();
        self.artifacts.insert_all_rendered(rendered)?;
        self.outbox
            .enqueue_now(deliveries)
            .map_err(|e| StoreError::backend_because(NOT_ENQUEUED, e))
    }

    async fn get(&self, id: Uuid) -> Result<Option<Artifact>, StoreError> {
        self.artifacts.get(id).await
    }

    async fn query(&self, query: &ArtifactQuery) -> Result<Page<Artifact>, StoreError> {
        self.artifacts.query(query).await
    }
}

/// The most workflows one [`Outbox::prune_workflows`] of a [`MemoryStorage`] deletes.
pub(crate) const PRUNE_WORKFLOWS: usize = 10_000;

#[async_trait]
impl Outbox for MemoryStorage {
    async fn enqueue(&self, deliveries: Vec<NewDelivery>) -> Result<(), OutboxError> {
        self.outbox.enqueue_now(deliveries)
    }

    async fn claim(
        &self,
        now: OffsetDateTime,
        limit: usize,
        lease_for: Duration,
    ) -> Result<Vec<ClaimedDelivery>, OutboxError> {
        self.outbox.claim(now, limit, lease_for).await
    }

    async fn claim_past(
        &self,
        now: OffsetDateTime,
        limit: usize,
        lease_for: Duration,
        past: &[String],
        since: Option<OffsetDateTime>,
    ) -> Result<Vec<ClaimedDelivery>, OutboxError> {
        (self.outbox)
            .claim_past(now, limit, lease_for, past, since)
            .await
    }

    async fn record(
        &self,
        lease: &Lease,
        attempt: AttemptView,
        resolution: Resolution,
    ) -> Result<(), OutboxError> {
        self.outbox.record(lease, attempt, resolution).await
    }

    async fn deliveries(&self, correlation_id: Uuid) -> Result<Vec<DeliveryView>, OutboxError> {
        self.outbox.deliveries(correlation_id).await
    }

    async fn delivery(&self, id: Uuid) -> Result<Option<DeliveryView>, OutboxError> {
        self.outbox.delivery(id).await
    }

    async fn failed(&self, query: &FailedQuery) -> Result<Vec<DeliveryView>, OutboxError> {
        self.outbox.failed(query).await
    }

    async fn next_due(&self) -> Result<Option<OffsetDateTime>, OutboxError> {
        self.outbox.next_due().await
    }

    async fn counts(&self) -> Result<OutboxCounts, OutboxError> {
        self.outbox.counts().await
    }

    async fn pending_by_tenant(&self) -> Result<Vec<(TenantId, u64)>, OutboxError> {
        self.outbox.pending_by_tenant().await
    }

    async fn redeliver(&self, id: Uuid, now: OffsetDateTime) -> Result<(), OutboxError> {
        self.outbox.redeliver(id, now).await
    }

    async fn hold(
        &self,
        leases: &[Lease],
        reason: HoldReason,
        now: OffsetDateTime,
    ) -> Result<u64, OutboxError> {
        self.outbox.hold(leases, reason, now).await
    }

    async fn release(
        &self,
        destination: &str,
        limit: usize,
        now: OffsetDateTime,
    ) -> Result<u64, OutboxError> {
        self.outbox.release(destination, limit, now).await
    }

    async fn expire_holds(
        &self,
        held_before: OffsetDateTime,
        now: OffsetDateTime,
        limit: usize,
    ) -> Result<u64, OutboxError> {
        self.outbox.expire_holds(held_before, now, limit).await
    }

    async fn held(
        &self,
        tenant: Option<&TenantId>,
        limit: usize,
    ) -> Result<Vec<HeldDeliveries>, OutboxError> {
        self.outbox.held(tenant, limit).await
    }

    async fn prune(&self, completed_before: OffsetDateTime) -> Result<u64, OutboxError> {
        self.outbox.prune(completed_before).await
    }

    /// At most 10,000 workflows a call, so that the store is not locked for long;
    /// the pruner calls again at its next round.
    async fn prune_workflows(&self, finished_before: OffsetDateTime) -> Result<u64, OutboxError> {
        let artifacts = &self.artifacts;
        Ok(self.outbox.prune_workflows_with(|busy| {
            artifacts.prune_workflows(finished_before, PRUNE_WORKFLOWS, busy)
        }))
    }

    async fn enqueued(&self) {
        self.outbox.enqueued().await;
    }
}

#[cfg(test)]
mod tests {
    use flock_models::{ArtifactDraft, Secret, Tags, TypeName, WebhookUrl};
    use serde_json::json;

    use super::*;

    fn artifact(correlation_id: Uuid) -> Artifact {
        let payload = json!({"text": "x".repeat(1_000), "nested": {"timestamp": "t", "n": 1.5}});
        let mut draft = ArtifactDraft::new(
            TypeName::new("Idea").unwrap(),
            payload.as_object().unwrap().clone(),
        );
        draft.tags = Tags::new(["b", "a"]).unwrap();
        Artifact::new(draft, "external", correlation_id)
    }

    #[tokio::test]
    async fn artifacts_read_back_equal_with_and_without_a_delivery() {
        let storage = MemoryStorage::new();
        let correlation_id = Uuid::now_v7();
        let with = artifact(correlation_id);
        let delivery = NewDelivery::new(
            &with,
            1,
            WebhookUrl::parse("https://example.com/hook").unwrap(),
            Some(Secret::new("s3cret").unwrap()),
        );
        storage.publish(&with, vec![delivery]).await.unwrap();
        let without = artifact(correlation_id);
        storage.publish(&without, Vec::new()).await.unwrap();

        assert_eq!(storage.get(with.id).await.unwrap(), Some(with.clone()));
        assert_eq!(
            storage.get(without.id).await.unwrap(),
            Some(without.clone())
        );
        let page = storage
            .query(&ArtifactQuery::correlation(correlation_id))
            .await
            .unwrap();
        assert_eq!(page.items, [with, without]);
        assert_eq!(storage.outbox().len(), 1);
    }
}
