//! Failing agents: errors are recorded and published as `WorkflowError` artifacts, the rest of
//! the workflow and other workflows go on; the runaway guard stops self-feeding loops.

use std::collections::BTreeSet;
use std::time::Duration;

use flock_orchestrator::{
    AgentError, ErrorKind, Orchestrator, OrchestratorConfig, PublishError, Subscription,
    WORKFLOW_ERROR_TYPE, WaitOutcome, WorkflowState,
};
use serde_json::json;
use uuid::Uuid;

use crate::support::{FnAgent, LONG, artifacts, draft, ty, types};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_panicking_and_slow_agents_end_as_recorded_errors() {
    let orchestrator = Orchestrator::builder()
        .agent(
            FnAgent::new("fails", &["Idea"], &["Never"])
                .handler(|_, _| async { Err(AgentError::Failed("boom".into())) })
                .build(),
        )
        .agent(
            FnAgent::new("panics", &["Idea"], &["Never"])
                .handler(|_, _| async { panic!("kaboom") })
                .build(),
        )
        .agent(
            FnAgent::new("slow", &["Idea"], &["Never"])
                .timeout(Duration::from_millis(100))
                .handler(|_, _| std::future::pending())
                .build(),
        )
        .agent(
            FnAgent::new("good", &["Idea"], &["Plan"])
                .transform("Plan")
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

    let correlation = Uuid::now_v7();
    orchestrator
        .publish(correlation, draft("Idea", json!({})))
        .await
        .unwrap();
    assert_eq!(
        orchestrator.wait_idle(correlation, LONG).await,
        WaitOutcome::Idle
    );

    let all = artifacts(&orchestrator, correlation).await;
    let ordinary: Vec<&str> = types(&all)
        .into_iter()
        .filter(|t| *t != WORKFLOW_ERROR_TYPE)
        .collect();
    assert_eq!(
        ordinary,
        ["Idea", "Plan", "Final"],
        "the healthy branch went on"
    );

    let published_errors: BTreeSet<(String, String)> = all
        .iter()
        .filter(|a| a.type_name == WORKFLOW_ERROR_TYPE)
        .map(|a| {
            assert_eq!(a.payload["agent"], json!(a.produced_by));
            assert_eq!(a.payload["consumed"], json!([all[0].id]));
            (
                a.produced_by.clone(),
                a.payload["error"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String)> = [
        ("fails", "failed"),
        ("panics", "panic"),
        ("slow", "timeout"),
    ]
    .into_iter()
    .map(|(a, e)| (a.to_owned(), e.to_owned()))
    .collect();
    assert_eq!(published_errors, expected);

    let status = orchestrator.status(correlation).await.unwrap().unwrap();
    assert_eq!(status.state, WorkflowState::Failed);
    assert_eq!(status.error_count, 3);
    assert_eq!(status.artifact_count, 6);
    let mut recorded: Vec<(ErrorKind, &str, &str)> = status
        .errors
        .iter()
        .map(|e| (e.kind, e.agent.as_deref().unwrap(), e.message.as_str()))
        .collect();
    recorded.sort_by_key(|(_, agent, _)| *agent);
    assert_eq!(recorded[0].0, ErrorKind::Failed);
    assert_eq!(recorded[0].2, "boom");
    assert_eq!(recorded[1].0, ErrorKind::Panic);
    assert!(recorded[1].2.contains("kaboom"), "{}", recorded[1].2);
    assert_eq!(recorded[2].0, ErrorKind::Timeout);
    assert!(recorded[2].2.contains("100 ms"), "{}", recorded[2].2);

    // The orchestrator is none the worse: another workflow runs the same way.
    let again = Uuid::now_v7();
    orchestrator
        .publish(again, draft("Idea", json!({})))
        .await
        .unwrap();
    assert_eq!(orchestrator.wait_idle(again, LONG).await, WaitOutcome::Idle);
    assert_eq!(
        orchestrator
            .status(again)
            .await
            .unwrap()
            .unwrap()
            .error_count,
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeclared_output_type_fails_the_run_and_publishes_none_of_it() {
    let orchestrator = Orchestrator::builder()
        .agent(
            FnAgent::new("sloppy", &["Idea"], &["Plan"])
                .handler(|_, _| async {
                    Ok(vec![draft("Plan", json!({})), draft("Gossip", json!({}))])
                })
                .build(),
        )
        .build()
        .await
        .unwrap();
    let correlation = Uuid::now_v7();
    orchestrator
        .publish(correlation, draft("Idea", json!({})))
        .await
        .unwrap();
    assert_eq!(
        orchestrator.wait_idle(correlation, LONG).await,
        WaitOutcome::Idle
    );

    assert_eq!(
        types(&artifacts(&orchestrator, correlation).await),
        ["Idea", WORKFLOW_ERROR_TYPE]
    );
    let status = orchestrator.status(correlation).await.unwrap().unwrap();
    assert_eq!(status.state, WorkflowState::Failed);
    assert_eq!(status.errors[0].kind, ErrorKind::UndeclaredOutput);
    assert!(
        status.errors[0].message.contains("Gossip"),
        "{}",
        status.errors[0].message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runaway_guard_stops_a_self_feeding_loop() {
    let config = OrchestratorConfig {
        max_artifacts_per_correlation: 25,
        ..OrchestratorConfig::default()
    };
    let orchestrator = Orchestrator::builder()
        .config(config)
        .agent(
            FnAgent::new("echo", &[], &["Ping"])
                .subscription(Subscription::to([ty("Ping")]).including_own_output())
                .transform("Ping")
                .build(),
        )
        .build()
        .await
        .unwrap();
    let correlation = Uuid::now_v7();
    orchestrator
        .publish(correlation, draft("Ping", json!({})))
        .await
        .unwrap();
    assert_eq!(
        orchestrator.wait_idle(correlation, LONG).await,
        WaitOutcome::Idle
    );

    let all = artifacts(&orchestrator, correlation).await;
    assert_eq!(
        all.len(),
        25,
        "exactly the limit, and no WorkflowError past it"
    );
    assert!(all.iter().all(|a| a.type_name == "Ping"));
    assert_eq!(all[24].payload["hops"], 24);

    let status = orchestrator.status(correlation).await.unwrap().unwrap();
    assert_eq!(status.state, WorkflowState::Failed);
    assert_eq!(status.artifact_count, 25);
    assert_eq!(status.error_count, 1);
    assert_eq!(status.errors[0].kind, ErrorKind::RunawayGuard);
    assert_eq!(status.errors[0].agent.as_deref(), Some("echo"));
    assert!(
        status.errors[0].message.contains("25"),
        "{}",
        status.errors[0].message
    );

    // The workflow takes nothing more, from anyone.
    let err = orchestrator
        .publish(correlation, draft("Ping", json!({})))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PublishError::LimitReached { limit: 25, .. }),
        "{err:?}"
    );
    assert_eq!(artifacts(&orchestrator, correlation).await.len(), 25);
}
