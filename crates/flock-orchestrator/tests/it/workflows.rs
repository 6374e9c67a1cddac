//! Workflows: chains under one correlation, isolation between workflows, waiting, status.

use std::sync::Arc;
use std::time::Duration;

use flock_models::EXTERNAL_PRODUCER;
use flock_orchestrator::{ErrorKind, Orchestrator, OrchestratorConfig, WaitOutcome, WorkflowState};
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};
use uuid::Uuid;

use crate::support::{FnAgent, LONG, artifacts, draft, types};

async fn chain() -> Orchestrator {
    Orchestrator::builder()
        .agent(
            FnAgent::new("a", &["Idea"], &["Plan"])
                .transform("Plan")
                .build(),
        )
        .agent(
            FnAgent::new("b", &["Plan"], &["Draft"])
                .transform("Draft")
                .build(),
        )
        .agent(
            FnAgent::new("c", &["Draft"], &["Final"])
                .transform("Final")
                .build(),
        )
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_publishes_in_order_under_one_correlation() {
    let orchestrator = chain().await;
    let correlation = Uuid::now_v7();
    let idea = orchestrator
        .publish(correlation, draft("Idea", json!({"text": "hello"})))
        .await
        .unwrap();
    assert_eq!(idea.produced_by, EXTERNAL_PRODUCER);
    assert_eq!(idea.correlation_id, correlation);

    assert_eq!(
        orchestrator.wait_idle(correlation, LONG).await,
        WaitOutcome::Idle
    );
    let all = artifacts(&orchestrator, correlation).await;
    assert_eq!(types(&all), ["Idea", "Plan", "Draft", "Final"]);
    let producers: Vec<&str> = all.iter().map(|a| a.produced_by.as_str()).collect();
    assert_eq!(producers, ["external", "a", "b", "c"]);
    for pair in all.windows(2) {
        assert_eq!(
            pair[1].payload["from"],
            json!(pair[0].id),
            "each consumed the one before"
        );
        assert!(pair[0].created_at <= pair[1].created_at);
        assert!(pair[0].id < pair[1].id, "UUID v7 ids sort by creation");
    }
    assert!(all.iter().all(|a| a.correlation_id == correlation));

    let status = orchestrator.status(correlation).await.unwrap().unwrap();
    assert_eq!(status.state, WorkflowState::Completed);
    assert_eq!(status.artifact_count, 4);
    assert_eq!(status.error_count, 0);
    assert_eq!(status.pending_runs, 0);
    assert!(status.started_at <= status.last_activity_at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_workflows_stay_apart() {
    let orchestrator = chain().await;
    let correlations: Vec<Uuid> = (0..8).map(|_| Uuid::now_v7()).collect();
    let publishes = correlations.iter().map(|&c| {
        let orchestrator = orchestrator.clone();
        async move {
            orchestrator
                .publish(c, draft("Idea", json!({"for": c})))
                .await
                .unwrap()
        }
    });
    futures_util::future::join_all(publishes).await;
    for &correlation in &correlations {
        assert_eq!(
            orchestrator.wait_idle(correlation, LONG).await,
            WaitOutcome::Idle
        );
        let all = artifacts(&orchestrator, correlation).await;
        assert_eq!(types(&all), ["Idea", "Plan", "Draft", "Final"]);
        assert_eq!(all[0].payload["for"], json!(correlation));
        assert!(all.iter().all(|a| a.correlation_id == correlation));
        for pair in all.windows(2) {
            assert_eq!(pair[1].payload["from"], json!(pair[0].id));
        }
        let status = orchestrator.status(correlation).await.unwrap().unwrap();
        assert_eq!(status.artifact_count, 4);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_idle_of_a_short_workflow_does_not_wait_for_a_slow_one() {
    let gate = Arc::new(Semaphore::new(0));
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let held = Arc::clone(&gate);
    let orchestrator = Orchestrator::builder()
        .agent(
            FnAgent::new("slow", &["Slow"], &["Done"])
                .timeout(LONG)
                .handler(move |_, _| {
                    let gate = Arc::clone(&held);
                    let started = started_tx.clone();
                    async move {
                        started.send(()).unwrap();
                        let _permit = gate.acquire().await.unwrap();
                        Ok(vec![draft("Done", json!({}))])
                    }
                })
                .build(),
        )
        .agent(
            FnAgent::new("fast", &["Fast"], &["Done"])
                .transform("Done")
                .build(),
        )
        .build()
        .await
        .unwrap();

    let slow = Uuid::now_v7();
    let fast = Uuid::now_v7();
    orchestrator
        .publish(slow, draft("Slow", json!({})))
        .await
        .unwrap();
    started.recv().await.unwrap();
    orchestrator
        .publish(fast, draft("Fast", json!({})))
        .await
        .unwrap();

    assert_eq!(orchestrator.wait_idle(fast, LONG).await, WaitOutcome::Idle);
    assert_eq!(
        types(&artifacts(&orchestrator, fast).await),
        ["Fast", "Done"]
    );
    // The slow workflow is provably still held.
    let status = orchestrator.status(slow).await.unwrap().unwrap();
    assert_eq!(status.state, WorkflowState::Active);
    assert_eq!(status.pending_runs, 1);
    assert_eq!(
        orchestrator
            .wait_idle(slow, Duration::from_millis(20))
            .await,
        WaitOutcome::TimedOut
    );

    gate.add_permits(1);
    assert_eq!(orchestrator.wait_idle(slow, LONG).await, WaitOutcome::Idle);
    assert_eq!(
        types(&artifacts(&orchestrator, slow).await),
        ["Slow", "Done"]
    );
}

#[tokio::test]
async fn unknown_workflows_are_not_found() {
    let orchestrator = chain().await;
    let nobody = Uuid::now_v7();
    assert_eq!(orchestrator.status(nobody).await.unwrap(), None);
    assert_eq!(
        orchestrator.wait_idle(nobody, LONG).await,
        WaitOutcome::NotFound
    );
}

#[tokio::test]
async fn a_workflow_without_subscribers_is_idle_at_once() {
    let orchestrator = chain().await;
    let correlation = Uuid::now_v7();
    orchestrator
        .publish(correlation, draft("Nobody", json!({})))
        .await
        .unwrap();
    // Nothing was scheduled: idle as soon as publish returned.
    assert_eq!(
        orchestrator.wait_idle(correlation, Duration::ZERO).await,
        WaitOutcome::Idle
    );
    let status = orchestrator.status(correlation).await.unwrap().unwrap();
    assert_eq!(status.state, WorkflowState::Completed);
    assert_eq!(status.artifact_count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgotten_workflows_are_rebuilt_from_the_store() {
    let config = OrchestratorConfig {
        max_tracked_workflows: 1,
        ..OrchestratorConfig::default()
    };
    let orchestrator = Orchestrator::builder()
        .config(config)
        .agent(
            FnAgent::new("a", &["Idea"], &["Plan"])
                .transform("Plan")
                .build(),
        )
        .agent(
            FnAgent::new("broken", &["Idea"], &[])
                .handler(|_, _| async { Err(flock_orchestrator::AgentError::Failed("no".into())) })
                .build(),
        )
        .build()
        .await
        .unwrap();
    let first = Uuid::now_v7();
    orchestrator
        .publish(first, draft("Idea", json!({})))
        .await
        .unwrap();
    assert_eq!(orchestrator.wait_idle(first, LONG).await, WaitOutcome::Idle);
    let tracked = orchestrator.status(first).await.unwrap().unwrap();

    // A second workflow pushes the first, idle, out of memory.
    let second = Uuid::now_v7();
    orchestrator
        .publish(second, draft("Other", json!({})))
        .await
        .unwrap();
    let rebuilt = orchestrator.status(first).await.unwrap().unwrap();
    assert_eq!(rebuilt.state, WorkflowState::Failed);
    assert_eq!(
        rebuilt.artifact_count, 3,
        "Idea, Plan and the WorkflowError"
    );
    assert_eq!(rebuilt.error_count, 1);
    assert_eq!(rebuilt.pending_runs, 0);
    assert_eq!(rebuilt.errors.len(), 1);
    assert_eq!(rebuilt.errors[0].kind, ErrorKind::Failed);
    assert_eq!(rebuilt.errors[0].agent.as_deref(), Some("broken"));
    assert_eq!(rebuilt.errors[0].message, tracked.errors[0].message);
    assert!(rebuilt.started_at >= tracked.started_at);
    assert!(rebuilt.last_activity_at <= tracked.last_activity_at);
    assert_eq!(orchestrator.wait_idle(first, LONG).await, WaitOutcome::Idle);
}

#[tokio::test]
async fn status_serializes_for_the_api() {
    let orchestrator = chain().await;
    let correlation = Uuid::now_v7();
    orchestrator
        .publish(correlation, draft("Nobody", json!({})))
        .await
        .unwrap();
    let status = orchestrator.status(correlation).await.unwrap().unwrap();
    let value = serde_json::to_value(&status).unwrap();
    assert_eq!(value["state"], "completed");
    assert_eq!(value["artifact_count"], 1);
    assert_eq!(value["correlation_id"], json!(correlation));
    assert!(value["started_at"].as_str().unwrap().ends_with('Z'));
    let back: flock_orchestrator::CorrelationStatus = serde_json::from_value(value).unwrap();
    assert_eq!(back, status);
}

/// A store whose writes never finish, announcing each attempt.
struct StuckStore {
    entered: mpsc::UnboundedSender<()>,
}

#[async_trait::async_trait]
impl flock_orchestrator::ArtifactStore for StuckStore {
    async fn publish_all(
        &self,
        _artifacts: &[flock_models::Artifact],
        _deliveries: Vec<flock_models::NewDelivery>,
    ) -> Result<(), flock_orchestrator::StoreError> {
        self.entered.send(()).unwrap();
        std::future::pending().await
    }

    async fn get(
        &self,
        _id: Uuid,
    ) -> Result<Option<flock_models::Artifact>, flock_orchestrator::StoreError> {
        Ok(None)
    }

    async fn query(
        &self,
        _query: &flock_orchestrator::ArtifactQuery,
    ) -> Result<flock_orchestrator::Page<flock_models::Artifact>, flock_orchestrator::StoreError>
    {
        Ok(flock_orchestrator::Page::empty())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_dropped_half_way_leaves_no_stuck_workflow() {
    let (entered, mut store_entered) = mpsc::unbounded_channel();
    let orchestrator = Orchestrator::builder()
        .store(Arc::new(StuckStore { entered }))
        .build()
        .await
        .unwrap();
    let correlation = Uuid::now_v7();
    let publishing = tokio::spawn({
        let orchestrator = orchestrator.clone();
        async move {
            orchestrator
                .publish(correlation, draft("Idea", json!({})))
                .await
        }
    });
    store_entered.recv().await.unwrap();
    assert_eq!(
        orchestrator
            .status(correlation)
            .await
            .unwrap()
            .unwrap()
            .state,
        WorkflowState::Active
    );
    // The caller goes away (a client disconnecting) while the store is writing.
    publishing.abort();
    assert!(publishing.await.unwrap_err().is_cancelled());
    assert_eq!(orchestrator.status(correlation).await.unwrap(), None);
    assert_eq!(
        orchestrator.wait_idle(correlation, LONG).await,
        WaitOutcome::NotFound
    );
}

/// A server publishes from short-lived per-worker runtimes; the runs it starts belong to the
/// orchestrator's runtime and go on after the publishing runtime is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_outlive_the_runtime_that_published() {
    let gate = Arc::new(Semaphore::new(0));
    let held = Arc::clone(&gate);
    let orchestrator = Orchestrator::builder()
        .agent(
            FnAgent::new("slow", &["Idea"], &["Plan"])
                .handler(move |_ctx, _inputs| {
                    let gate = Arc::clone(&held);
                    async move {
                        let _permit = gate.acquire().await.unwrap();
                        Ok(vec![draft("Plan", json!({}))])
                    }
                })
                .build(),
        )
        .build()
        .await
        .unwrap();
    let correlation = Uuid::now_v7();
    let publisher = orchestrator.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime
            .block_on(publisher.publish(correlation, draft("Idea", json!({}))))
            .unwrap();
        // The publishing runtime ends here, with the run still held by the gate.
    })
    .join()
    .unwrap();
    gate.add_permits(1);
    assert_eq!(
        orchestrator.wait_idle(correlation, LONG).await,
        WaitOutcome::Idle
    );
    assert_eq!(
        types(&artifacts(&orchestrator, correlation).await),
        ["Idea", "Plan"]
    );
}
