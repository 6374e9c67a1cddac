//! Shutdown: it waits for running agents, drops queued ones, refuses new work and reports.

use std::sync::Arc;
use std::time::Duration;

use flock_orchestrator::{ErrorKind, Orchestrator, OrchestratorConfig, PublishError, WaitOutcome};
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};
use uuid::Uuid;

use crate::support::{FnAgent, LONG, artifacts, draft, types};

/// An orchestrator whose `held` agent signals its start and waits for a permit of the gate;
/// its output would wake `next`.
async fn held(
    config: OrchestratorConfig,
) -> (Orchestrator, Arc<Semaphore>, mpsc::UnboundedReceiver<()>) {
    let gate = Arc::new(Semaphore::new(0));
    let (started_tx, started) = mpsc::unbounded_channel();
    let permits = Arc::clone(&gate);
    let orchestrator = Orchestrator::builder()
        .config(config)
        .agent(
            FnAgent::new("held", &["Idea"], &["Plan"])
                .timeout(LONG)
                .handler(move |_, _| {
                    let gate = Arc::clone(&permits);
                    let started = started_tx.clone();
                    async move {
                        started.send(()).unwrap();
                        gate.acquire().await.unwrap().forget();
                        Ok(vec![draft("Plan", json!({}))])
                    }
                })
                .build(),
        )
        .agent(
            FnAgent::new("next", &["Plan"], &["Final"])
                .transform("Final")
                .build(),
        )
        .build()
        .await
        .unwrap();
    (orchestrator, gate, started)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_a_running_agent() {
    let (orchestrator, gate, mut started) = held(OrchestratorConfig::default()).await;
    let correlation = Uuid::now_v7();
    orchestrator
        .publish(correlation, draft("Idea", json!({})))
        .await
        .unwrap();
    started.recv().await.unwrap();

    let stopping = tokio::spawn({
        let orchestrator = orchestrator.clone();
        async move { orchestrator.shutdown(LONG).await }
    });
    // The run is held, so shutdown cannot have finished; once shutdown has begun, new work is
    // refused. (The probe's type wakes no agent, so probes accepted before that add no runs.)
    while !matches!(
        orchestrator
            .publish(Uuid::now_v7(), draft("Probe", json!({})))
            .await,
        Err(PublishError::ShuttingDown)
    ) {
        tokio::task::yield_now().await;
    }
    assert!(!stopping.is_finished());

    gate.add_permits(1);
    let report = stopping.await.unwrap();
    assert!(report.finished_in_time);
    assert_eq!(report.runs_still_running, 0);
    assert_eq!(report.runs_not_started, 0);
    // The held run's output was stored, but woke nobody any more.
    assert_eq!(
        orchestrator.wait_idle(correlation, LONG).await,
        WaitOutcome::Idle
    );
    assert_eq!(
        types(&artifacts(&orchestrator, correlation).await),
        ["Idea", "Plan"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_deadline_runs_are_cancelled_and_queued_ones_dropped() {
    let config = OrchestratorConfig {
        max_concurrent_runs: 1,
        ..OrchestratorConfig::default()
    };
    let (orchestrator, _gate, mut started) = held(config).await;
    let first = Uuid::now_v7();
    let second = Uuid::now_v7();
    orchestrator
        .publish(first, draft("Idea", json!({})))
        .await
        .unwrap();
    started.recv().await.unwrap();
    // The only slot is taken: this run waits in the queue.
    orchestrator
        .publish(second, draft("Idea", json!({})))
        .await
        .unwrap();
    assert_eq!(
        orchestrator
            .status(second)
            .await
            .unwrap()
            .unwrap()
            .pending_runs,
        1
    );

    let report = orchestrator.shutdown(Duration::from_millis(50)).await;
    assert!(!report.finished_in_time);
    assert_eq!(report.runs_still_running, 1);
    assert_eq!(report.runs_not_started, 1);

    assert_eq!(orchestrator.wait_idle(first, LONG).await, WaitOutcome::Idle);
    assert_eq!(
        orchestrator.wait_idle(second, LONG).await,
        WaitOutcome::Idle
    );
    let first_status = orchestrator.status(first).await.unwrap().unwrap();
    assert_eq!(first_status.errors[0].kind, ErrorKind::Cancelled);
    assert_eq!(types(&artifacts(&orchestrator, first).await), ["Idea"]);
    assert_eq!(types(&artifacts(&orchestrator, second).await), ["Idea"]);
    assert!(started.try_recv().is_err(), "the queued run never started");

    // A second shutdown has nothing left to wait for.
    let again = orchestrator.shutdown(LONG).await;
    assert!(again.finished_in_time);
}
