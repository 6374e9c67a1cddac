//! Declared types: every publish of one is checked against its schema before anything is
//! stored, a client's publish refused with the failing path, an agent's output turned into a
//! recorded error and a `WorkflowError` naming it.

use std::sync::Arc;

use flock_orchestrator::{
    BuildError, ErrorKind, Orchestrator, PublishError, WORKFLOW_ERROR_TYPE, WaitOutcome,
    WorkflowState,
};
use flock_schema::{TypeDeclaration, TypeSchemas};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{FnAgent, LONG, artifacts, draft, types};

/// `Plan`: a short title and one to three steps, nothing else.
fn plan_types() -> Arc<TypeSchemas> {
    Arc::new(
        TypeSchemas::new(&[TypeDeclaration {
            name: "Plan".to_owned(),
            schema: json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["title", "steps"],
                "properties": {
                    "title": {"type": "string", "maxLength": 20},
                    "steps": {"type": "array", "minItems": 1, "maxItems": 3,
                              "items": {"type": "string", "minLength": 1}}
                }
            }),
        }])
        .unwrap(),
    )
}

fn good_plan() -> Value {
    json!({"title": "t", "steps": ["a", "b"]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_that_violates_its_schema_is_refused_before_anything_is_stored() {
    let orchestrator = Orchestrator::builder()
        .types(plan_types())
        .build()
        .await
        .unwrap();
    let refused = Uuid::now_v7();
    let cases = [
        (
            json!({"title": "t", "steps": ["a", "b", "c", "d"]}),
            "payload.steps",
            "maximum 3 items",
        ),
        (
            json!({"title": "t", "steps": ["a", ""]}),
            "payload.steps[1]",
            "length",
        ),
        (
            json!({"title": 7, "steps": ["a"]}),
            "payload.title",
            "want string",
        ),
        (
            json!({"title": "t"}),
            "payload",
            "missing properties 'steps'",
        ),
    ];
    for (payload, field, words) in cases {
        let error = orchestrator
            .publish(refused, draft("Plan", payload.clone()))
            .await
            .unwrap_err();
        let PublishError::InvalidPayload(error) = error else {
            panic!("{payload}: not a schema refusal: {error}");
        };
        assert_eq!(error.field_name(), Some(field), "{payload}: {error}");
        assert!(error.message().contains(words), "{payload}: {error}");
        assert!(
            error.message().contains("schema of `Plan`"),
            "{payload}: {error}"
        );
    }
    // Nothing was stored, nothing is tracked.
    assert!(artifacts(&orchestrator, refused).await.is_empty());
    assert!(orchestrator.status(refused).await.unwrap().is_none());
    assert_eq!(
        orchestrator.wait_idle(refused, LONG).await,
        WaitOutcome::NotFound
    );

    // A payload the schema accepts, and any payload of a type nobody declared, are published.
    let accepted = Uuid::now_v7();
    orchestrator
        .publish(accepted, draft("Plan", good_plan()))
        .await
        .unwrap();
    orchestrator
        .publish(accepted, draft("Note", json!({"anything": [1, "two"]})))
        .await
        .unwrap();
    assert_eq!(
        types(&artifacts(&orchestrator, accepted).await),
        ["Plan", "Note"]
    );
    orchestrator.shutdown(LONG).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_output_that_violates_its_schema_publishes_nothing_and_becomes_a_workflow_error() {
    let orchestrator = Orchestrator::builder()
        .types(plan_types())
        .agent(
            FnAgent::new("sloppy", &["Idea"], &["Plan"])
                .handler(|_, _| async {
                    Ok(vec![
                        draft("Plan", good_plan()),
                        draft("Plan", json!({"title": "t", "steps": ["a", "b", "c", "d"]})),
                    ])
                })
                .build(),
        )
        .agent(
            FnAgent::new("careful", &["Idea"], &["Plan"])
                .handler(|_, _| async { Ok(vec![draft("Plan", good_plan())]) })
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
    let plans: Vec<&str> = all
        .iter()
        .filter(|a| a.type_name.as_str() == "Plan")
        .map(|a| a.produced_by.as_str())
        .collect();
    assert_eq!(plans, ["careful"], "none of the sloppy run's outputs");
    let errors: Vec<_> = all
        .iter()
        .filter(|a| a.type_name == WORKFLOW_ERROR_TYPE)
        .collect();
    assert_eq!(errors.len(), 1, "{all:?}");
    assert_eq!(errors[0].produced_by, "sloppy");
    assert_eq!(errors[0].payload["error"], "invalid_output");
    let message = errors[0].payload["message"].as_str().unwrap();
    assert!(
        message.starts_with("artifacts[1].payload.steps: does not match the schema of `Plan`"),
        "{message}"
    );
    assert!(
        message.contains("none of its 2 outputs was published"),
        "{message}"
    );

    let status = orchestrator.status(correlation).await.unwrap().unwrap();
    assert_eq!(status.state, WorkflowState::Failed);
    assert_eq!(status.errors.len(), 1);
    assert_eq!(status.errors[0].kind, ErrorKind::InvalidOutput);
    assert_eq!(status.errors[0].agent.as_deref(), Some("sloppy"));
    assert_eq!(status.errors[0].message, message);
    orchestrator.shutdown(LONG).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workflow_error_type_cannot_be_declared() {
    let types = TypeSchemas::new(&[TypeDeclaration {
        name: WORKFLOW_ERROR_TYPE.to_owned(),
        schema: json!({"type": "object"}),
    }])
    .unwrap();
    let error = Orchestrator::builder()
        .types(Arc::new(types))
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(&error, BuildError::ReservedType(t) if t == WORKFLOW_ERROR_TYPE),
        "{error}"
    );
    assert!(error.to_string().contains("cannot be declared"), "{error}");
}
