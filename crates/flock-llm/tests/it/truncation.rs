//! An answer cut off by `max_tokens` against the real model: the agent tells the model and asks
//! once more, then the run fails as a recorded `WorkflowError` naming the reason, and the
//! workflow ends.

use std::sync::Arc;

use flock_llm::LlmAgent;
use flock_models::ArtifactDraft;
use flock_orchestrator::{
    ArtifactQuery, ErrorKind, Orchestrator, WORKFLOW_ERROR_TYPE, WaitOutcome, WorkflowState,
};
use serde_json::json;
use uuid::Uuid;

use crate::support::{LONG, TestServer, llm_url, object, plan_types, spec, ty};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_answer_is_retried_once_then_fails_the_run() {
    let Some(url) = llm_url("a_cut_off_answer_is_retried_once_then_fails_the_run") else {
        return;
    };
    let proxy = TestServer::proxy(&url).await;
    // Eight tokens cannot hold {"artifacts": [{"type": "Plan", "payload": ...}]}.
    let agent = LlmAgent::builder("terse", spec(&proxy.base_url(), 8))
        .consumes([ty("Idea")])
        .publishes([ty("Plan")])
        .timeout(LONG)
        .types(plan_types())
        .build()
        .unwrap();
    let orchestrator = Orchestrator::builder()
        .agent(Arc::new(agent))
        .build()
        .await
        .unwrap();
    let correlation = Uuid::now_v7();
    orchestrator
        .publish(
            correlation,
            ArtifactDraft::new(ty("Idea"), object(json!({"text": "Learn to juggle"}))),
        )
        .await
        .unwrap();
    assert_eq!(
        orchestrator.wait_idle(correlation, LONG).await,
        WaitOutcome::Idle
    );

    let status = orchestrator.status(correlation).await.unwrap().unwrap();
    assert_eq!(status.state, WorkflowState::Failed);
    assert_eq!(status.errors.len(), 1, "{:?}", status.errors);
    let error = &status.errors[0];
    assert_eq!(error.kind, ErrorKind::InvalidOutput);
    assert_eq!(error.agent.as_deref(), Some("terse"));
    assert!(
        error
            .message
            .contains("the answer was cut off: finish_reason length (max_tokens 8)"),
        "{}",
        error.message
    );
    assert!(
        error.message.contains("again after the model was told"),
        "{}",
        error.message
    );

    let artifacts = orchestrator
        .store()
        .query(&ArtifactQuery::correlation(correlation))
        .await
        .unwrap()
        .items;
    let kinds: Vec<&str> = artifacts.iter().map(|a| a.type_name.as_str()).collect();
    assert_eq!(kinds, ["Idea", WORKFLOW_ERROR_TYPE]);
    let workflow_error = &artifacts[1];
    assert_eq!(workflow_error.produced_by, "terse");
    assert!(
        workflow_error.payload["message"]
            .as_str()
            .unwrap()
            .contains("finish_reason length"),
        "{:?}",
        workflow_error.payload
    );

    // Exactly one retry, and it carried the cut-off answer and what was wrong with it.
    let received = proxy.received();
    assert_eq!(received.len(), 2, "one request and one retry");
    let first = received[0].body["messages"].as_array().unwrap();
    let retry = received[1].body["messages"].as_array().unwrap();
    assert_eq!(first.len(), 2);
    assert_eq!(retry.len(), 4);
    assert_eq!(retry[..2], first[..]);
    assert_eq!(retry[2]["role"], "assistant");
    assert!(!retry[2]["content"].as_str().unwrap().is_empty());
    assert_eq!(retry[3]["role"], "user");
    let feedback = retry[3]["content"].as_str().unwrap();
    assert!(
        feedback.contains("cut off (finish_reason length, at most 8 tokens)"),
        "{feedback}"
    );
    orchestrator.shutdown(LONG).await;
}
