//! Structured output against the real model: through a real orchestrator, an `Idea` becomes a
//! `Plan` that the agent published, within the bounded schema, asked for with a strict
//! `json_schema` response format.

use std::sync::Arc;

use flock_llm::LlmAgent;
use flock_models::ArtifactDraft;
use flock_orchestrator::{
    ArtifactQuery, Orchestrator, WORKFLOW_ERROR_TYPE, WaitOutcome, WorkflowState,
};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{
    LONG, TestServer, assert_bounded_plan, llm_url, object, plan_types, spec, ty,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idea_becomes_a_bounded_plan_through_the_orchestrator() {
    let Some(url) = llm_url("an_idea_becomes_a_bounded_plan_through_the_orchestrator") else {
        return;
    };
    // The proxy records what the agent sent on its way to the model server.
    let proxy = TestServer::proxy(&url).await;
    let types = plan_types();
    let agent = LlmAgent::builder("planner", spec(&proxy.base_url(), 400))
        .consumes([ty("Idea")])
        .publishes([ty("Plan")])
        .timeout(LONG)
        .types(Arc::clone(&types))
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
            ArtifactDraft::new(
                ty("Idea"),
                object(json!({"text": "Open a small bakery in the town centre"})),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        orchestrator.wait_idle(correlation, LONG).await,
        WaitOutcome::Idle
    );

    let artifacts = orchestrator
        .store()
        .query(&ArtifactQuery::correlation(correlation))
        .await
        .unwrap()
        .items;
    let kinds: Vec<&str> = artifacts.iter().map(|a| a.type_name.as_str()).collect();
    assert!(!kinds.contains(&WORKFLOW_ERROR_TYPE), "{artifacts:#?}");
    let plans: Vec<_> = artifacts
        .iter()
        .filter(|a| a.type_name.as_str() == "Plan")
        .collect();
    assert_eq!(plans.len(), 1, "{kinds:?}");
    let plan = plans[0];
    assert_eq!(plan.produced_by, "planner");
    assert_eq!(plan.correlation_id, correlation);
    assert_bounded_plan(&plan.payload);
    types.validate(&ty("Plan"), &plan.payload).unwrap();
    let status = orchestrator.status(correlation).await.unwrap().unwrap();
    assert_eq!(status.state, WorkflowState::Completed);

    // What went over the wire: one request, strict json_schema, the prompt and the input.
    let received = proxy.received();
    assert_eq!(received.len(), 1, "no retry was needed");
    let request = &received[0];
    assert_eq!(request.path, "/v1/chat/completions");
    assert_eq!(request.authorization, None);
    let body = &request.body;
    assert_eq!(body["model"], "smollm2");
    assert_eq!(body["temperature"], 0.0);
    assert_eq!(body["max_tokens"], 400);
    assert_eq!(body["response_format"]["type"], "json_schema");
    assert_eq!(body["response_format"]["json_schema"]["strict"], true);
    let schema = &body["response_format"]["json_schema"]["schema"];
    assert_eq!(
        schema["properties"]["artifacts"]["items"]["properties"]["type"]["enum"],
        json!(["Plan"])
    );
    assert_eq!(
        schema["$defs"]["Plan"]["properties"]["steps"]["maxItems"],
        3
    );
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["role"], "system");
    let system = messages[0]["content"].as_str().unwrap();
    assert!(system.starts_with("You are a planner."), "{system}");
    assert!(system.contains("\"maxItems\":3"), "{system}");
    assert_eq!(messages[1]["role"], "user");
    let user: Value = serde_json::from_str(messages[1]["content"].as_str().unwrap()).unwrap();
    assert_eq!(
        user,
        json!({"artifacts": [{
            "type": "Idea",
            "payload": {"text": "Open a small bakery in the town centre"},
            "produced_by": "external"
        }]})
    );
    orchestrator.shutdown(LONG).await;
}
