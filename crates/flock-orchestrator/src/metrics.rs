//! The orchestrator's metrics, through the `metrics` facade: whoever installs a recorder (the
//! API's Prometheus exporter) sees them; without one they cost next to nothing.

use std::time::Duration;

use crate::workflow::ErrorKind;

/// Artifacts stored, external and agent outputs alike.
const ARTIFACTS_PUBLISHED: &str = "flock_artifacts_published_total";
/// Agent runs by `agent` and `outcome`.
const AGENT_RUNS: &str = "flock_agent_runs_total";
/// Agent run durations by `agent`, in seconds.
const AGENT_RUN_DURATION: &str = "flock_agent_run_duration_seconds";
/// Errors recorded on workflows, by `kind`.
const WORKFLOW_ERRORS: &str = "flock_workflow_errors_total";

/// Describes the orchestrator's metrics to the installed recorder (help texts and units).
/// Call it once after installing one; without it the metrics work, undescribed.
///
/// - `flock_artifacts_published_total`: artifacts stored;
/// - `flock_agent_runs_total{agent, outcome}`: runs by outcome (`ok`, `error`, `timeout`,
///   `panic`, `cancelled`);
/// - `flock_agent_run_duration_seconds{agent}`: how long runs took;
/// - `flock_workflow_errors_total{kind}`: errors recorded on workflows, by kind.
pub fn describe_metrics() {
    metrics::describe_counter!(ARTIFACTS_PUBLISHED, "Artifacts stored on the blackboard.");
    metrics::describe_counter!(AGENT_RUNS, "Agent runs by agent and outcome.");
    metrics::describe_histogram!(
        AGENT_RUN_DURATION,
        metrics::Unit::Seconds,
        "How long agent runs took."
    );
    metrics::describe_counter!(WORKFLOW_ERRORS, "Errors recorded on workflows, by kind.");
}

pub(crate) fn artifact_published() {
    metrics::counter!(ARTIFACTS_PUBLISHED).increment(1);
}

pub(crate) fn agent_run(agent: &str, outcome: &'static str, took: Duration) {
    metrics::counter!(AGENT_RUNS, "agent" => agent.to_owned(), "outcome" => outcome).increment(1);
    metrics::histogram!(AGENT_RUN_DURATION, "agent" => agent.to_owned()).record(took.as_secs_f64());
}

pub(crate) fn workflow_error(kind: ErrorKind) {
    metrics::counter!(WORKFLOW_ERRORS, "kind" => kind.as_str()).increment(1);
}
