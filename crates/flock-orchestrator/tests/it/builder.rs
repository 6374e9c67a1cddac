//! Building an orchestrator: names, configuration, agents listed.

use flock_orchestrator::{BuildError, Orchestrator, OrchestratorConfig};

use crate::support::FnAgent;

#[tokio::test]
async fn duplicate_agent_names_are_refused() {
    let err = Orchestrator::builder()
        .agent(FnAgent::new("twin", &["Idea"], &[]).build())
        .agent(FnAgent::new("twin", &["Plan"], &[]).build())
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BuildError::DuplicateAgent(name) if name == "twin"),
        "{err}"
    );
}

#[tokio::test]
async fn invalid_agent_names_are_refused() {
    for name in ["external", "", "has space"] {
        let err = Orchestrator::builder()
            .agent(FnAgent::new(name, &["Idea"], &[]).build())
            .build()
            .await
            .unwrap_err();
        assert!(
            matches!(&err, BuildError::InvalidAgentName { name: n, .. } if n == name),
            "{err}"
        );
    }
}

#[tokio::test]
async fn an_invalid_configuration_is_refused_naming_the_field() {
    let config = OrchestratorConfig {
        max_concurrent_runs: 0,
        ..OrchestratorConfig::default()
    };
    let err = Orchestrator::builder()
        .config(config)
        .build()
        .await
        .unwrap_err();
    let BuildError::InvalidConfig(error) = err else {
        panic!("{err}");
    };
    assert_eq!(error.field_name(), Some("max_concurrent_runs"));
}

#[tokio::test]
async fn rust_agents_are_listed_with_the_default_timeout() {
    let orchestrator = Orchestrator::builder()
        .agent(FnAgent::new("a", &["Idea"], &["Plan"]).build())
        .build()
        .await
        .unwrap();
    let agents = orchestrator.agents();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0].name, "a");
    assert_eq!(agents[0].kind, flock_orchestrator::AgentKind::Rust);
    assert_eq!(agents[0].consumes, [crate::support::ty("Idea")]);
    assert_eq!(agents[0].publishes, [crate::support::ty("Plan")]);
    assert_eq!(agents[0].timeout_ms, 30_000);
}
