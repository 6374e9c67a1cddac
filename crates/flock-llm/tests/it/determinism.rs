//! At temperature 0 the real model answers the same input with the same artifact.

use flock_llm::LlmAgent;
use flock_orchestrator::Agent;

use crate::support::{LONG, assert_bounded_plan, context, idea, llm_url, plan_types, spec, ty};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_input_gives_the_same_artifact_at_temperature_zero() {
    let Some(url) = llm_url("the_same_input_gives_the_same_artifact_at_temperature_zero") else {
        return;
    };
    let agent = LlmAgent::builder("steady", spec(&url, 400))
        .consumes([ty("Idea")])
        .publishes([ty("Plan")])
        .timeout(LONG)
        .types(plan_types())
        .build()
        .unwrap();
    let text = "Plant a vegetable garden behind the school";
    // Two artifacts with the same content (their ids and times differ).
    let first = agent
        .run(context("steady"), vec![idea(text)])
        .await
        .unwrap();
    let second = agent
        .run(context("steady"), vec![idea(text)])
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].type_name, ty("Plan"));
    assert_bounded_plan(&first[0].payload);
    assert_eq!(first, second);
}
