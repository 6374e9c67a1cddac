//! `before_store` deliveries: they reach the store with their artifact, numbered in store
//! order; the memory store, which has no outbox, refuses them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use flock_models::{Artifact, NewDelivery, WebhookUrl};
use flock_orchestrator::{
    ArtifactQuery, ArtifactStore, Component, MemoryStore, Orchestrator, Page, PublishError,
    StoreError, WaitOutcome,
};
use serde_json::json;
use uuid::Uuid;

use crate::support::{FnAgent, LONG, draft};

/// A store for this test: a memory store that also keeps the deliveries it is given, in the
/// order it stored them.
#[derive(Default)]
struct RecordingStore {
    artifacts: MemoryStore,
    deliveries: Mutex<Vec<NewDelivery>>,
}

#[async_trait]
impl ArtifactStore for RecordingStore {
    async fn publish_all(
        &self,
        artifacts: &[Artifact],
        deliveries: Vec<NewDelivery>,
    ) -> Result<(), StoreError> {
        // Both under one lock: the artifacts and their deliveries land together.
        let mut kept = self.deliveries.lock().unwrap();
        for artifact in artifacts {
            self.artifacts.insert(artifact)?;
        }
        kept.extend(deliveries);
        Ok(())
    }

    async fn get(&self, id: Uuid) -> Result<Option<Artifact>, StoreError> {
        self.artifacts.get(id).await
    }

    async fn query(&self, query: &ArtifactQuery) -> Result<Page<Artifact>, StoreError> {
        self.artifacts.query(query).await
    }
}

/// Numbers each workflow's artifacts 1, 2, 3, ... in `before_store`, as the webhook component
/// does, and pushes one delivery for each.
#[derive(Default)]
struct Numberer {
    counters: Mutex<HashMap<Uuid, u64>>,
}

impl Component for Numberer {
    fn name(&self) -> &str {
        "numberer"
    }

    fn before_store(&self, artifact: &Artifact, outbox: &mut Vec<NewDelivery>) {
        let mut counters = self.counters.lock().unwrap();
        let sequence = counters.entry(artifact.correlation_id).or_default();
        *sequence += 1;
        let url = WebhookUrl::parse("https://receiver.example/hook").unwrap();
        outbox.push(NewDelivery::new(artifact, *sequence, url, None));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_reach_the_store_numbered_in_store_order() {
    let store = Arc::new(RecordingStore::default());
    let mut builder = Orchestrator::builder()
        .store(Arc::clone(&store) as Arc<dyn ArtifactStore>)
        .component(Arc::new(Numberer::default()));
    // Five agents fan out concurrently, each publishing several outputs.
    for i in 0..5 {
        builder = builder.agent(
            FnAgent::new(&format!("fan{i}"), &["Idea"], &["Out"])
                .handler(move |_, _| async move {
                    Ok((0..4)
                        .map(|n| draft("Out", json!({"agent": i, "n": n})))
                        .collect())
                })
                .build(),
        );
    }
    let orchestrator = builder.build().await.unwrap();
    let correlations: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    for &c in &correlations {
        orchestrator
            .publish(c, draft("Idea", json!({})))
            .await
            .unwrap();
    }
    for &c in &correlations {
        assert_eq!(orchestrator.wait_idle(c, LONG).await, WaitOutcome::Idle);
    }

    let deliveries = store.deliveries.lock().unwrap().clone();
    assert_eq!(deliveries.len(), 3 * 21);
    for &c in &correlations {
        let stored: Vec<Uuid> = orchestrator
            .store()
            .query(&ArtifactQuery::correlation(c))
            .await
            .unwrap()
            .items
            .iter()
            .map(|a| a.id)
            .collect();
        let mine: Vec<&NewDelivery> = deliveries
            .iter()
            .filter(|d| d.correlation_id == c)
            .collect();
        // One delivery per artifact, numbered 1..=21 without gaps, in store order.
        let sequences: Vec<u64> = mine.iter().map(|d| d.sequence).collect();
        assert_eq!(sequences, (1..=21).collect::<Vec<u64>>());
        let announced: Vec<Uuid> = mine.iter().map(|d| d.artifact_id).collect();
        assert_eq!(announced, stored);
        let body: serde_json::Value = serde_json::from_slice(&mine[0].body).unwrap();
        assert_eq!(body["sequence"], 1);
        assert_eq!(body["artifact"]["type"], "Idea");
    }
}

#[tokio::test]
async fn the_memory_store_has_no_outbox() {
    let orchestrator = Orchestrator::builder()
        .component(Arc::new(Numberer::default()))
        .build()
        .await
        .unwrap();
    let correlation = Uuid::now_v7();
    let err = orchestrator
        .publish(correlation, draft("Idea", json!({})))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PublishError::Store(StoreError::NoOutbox)),
        "{err:?}"
    );
    // Nothing was published, and the failed publish left no workflow behind.
    assert_eq!(orchestrator.status(correlation).await.unwrap(), None);
    assert_eq!(
        orchestrator.wait_idle(correlation, LONG).await,
        WaitOutcome::NotFound
    );
}
