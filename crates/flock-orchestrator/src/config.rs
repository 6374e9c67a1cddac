//! The orchestrator's limits and defaults, readable from a configuration file.

use std::time::Duration;

use flock_models::ValidationError;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Limits and defaults of an [`Orchestrator`](crate::Orchestrator).
///
/// Every field has a default, so a configuration file names only what it changes. In a file the
/// timeout is given in milliseconds as `default_agent_timeout_ms`; unknown keys are refused.
///
/// ```
/// use std::time::Duration;
/// use flock_orchestrator::OrchestratorConfig;
///
/// let config: OrchestratorConfig =
///     serde_json::from_str(r#"{"max_concurrent_runs": 4, "default_agent_timeout_ms": 5000}"#)
///         .unwrap();
/// assert_eq!(config.max_concurrent_runs, 4);
/// assert_eq!(config.default_agent_timeout, Duration::from_secs(5));
/// assert_eq!(config.max_artifacts_per_correlation, 1_000);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrchestratorConfig {
    /// How many agent runs execute at once, across all workflows (default 16). Runs past it
    /// wait in a queue, first come first served, and count as pending work of their workflow.
    pub max_concurrent_runs: usize,
    /// The runaway guard: at most this many artifacts per correlation (default 1,000). Past it
    /// the correlation schedules no more runs, and whatever it would still publish is dropped
    /// and recorded as an error.
    pub max_artifacts_per_correlation: u64,
    /// How long an agent run may take when the agent does not say (default 30 s).
    #[serde(
        rename = "default_agent_timeout_ms",
        serialize_with = "millis::serialize",
        deserialize_with = "millis::deserialize"
    )]
    pub default_agent_timeout: Duration,
    /// How many agent runs may wait for a slot (default 10,000). While this many wait, a
    /// client's publish is refused with [`PublishError::Overloaded`](crate::PublishError)
    /// before anything is stored; runs that artifacts already accepted wake are still queued,
    /// so the queue may pass the bound by what those workflows still publish (each at most
    /// `max_artifacts_per_correlation`), and nothing accepted is dropped.
    pub max_queued_runs: usize,
    /// How many workflows are tracked in memory (default 10,000). Past it the idle ones are
    /// forgotten, least recently active first; their status is then rebuilt from the store.
    /// Each tracked workflow costs about 600 bytes (its idle signal, publish lock and counts).
    pub max_tracked_workflows: usize,
    /// How many errors are kept per workflow for its status (default 100): the first ones,
    /// which usually explain the rest. All of them are counted.
    pub max_recorded_errors: usize,
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        OrchestratorConfig {
            max_concurrent_runs: 16,
            max_artifacts_per_correlation: 1_000,
            default_agent_timeout: Duration::from_secs(30),
            max_queued_runs: 10_000,
            max_tracked_workflows: 10_000,
            max_recorded_errors: 100,
        }
    }
}

/// The most concurrent runs accepted: far more than any machine runs usefully, far fewer than
/// the semaphore's own ceiling.
const MAX_CONCURRENT_RUNS: usize = 1 << 20;

impl OrchestratorConfig {
    /// Checks every limit; the error names the field as it is spelled in a configuration file.
    ///
    /// # Errors
    /// A limit of zero (none of them may be), a zero timeout, or more than 1,048,576
    /// concurrent runs.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.max_concurrent_runs == 0 || self.max_concurrent_runs > MAX_CONCURRENT_RUNS {
            return Err(ValidationError::field(
                "max_concurrent_runs",
                format!("must be between 1 and {MAX_CONCURRENT_RUNS}"),
            ));
        }
        if self.max_artifacts_per_correlation == 0 {
            return Err(ValidationError::field(
                "max_artifacts_per_correlation",
                "must be at least 1",
            ));
        }
        if self.default_agent_timeout.is_zero() {
            return Err(ValidationError::field(
                "default_agent_timeout_ms",
                "must be at least 1",
            ));
        }
        if self.max_queued_runs == 0 {
            return Err(ValidationError::field(
                "max_queued_runs",
                "must be at least 1",
            ));
        }
        if self.max_tracked_workflows == 0 {
            return Err(ValidationError::field(
                "max_tracked_workflows",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// A [`Duration`] as a whole number of milliseconds.
mod millis {
    use super::{Deserialize, Deserializer, Duration, Serializer};

    pub(super) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let config = OrchestratorConfig::default();
        config.validate().unwrap();
        let text = serde_json::to_string(&config).unwrap();
        assert!(
            text.contains("\"default_agent_timeout_ms\":30000"),
            "{text}"
        );
        let back: OrchestratorConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn each_bad_limit_names_its_field() {
        type Spoil = fn(&mut OrchestratorConfig);
        let cases: [(Spoil, &str); 5] = [
            (|c| c.max_concurrent_runs = 0, "max_concurrent_runs"),
            (
                |c| c.max_concurrent_runs = usize::MAX,
                "max_concurrent_runs",
            ),
            (
                |c| c.max_artifacts_per_correlation = 0,
                "max_artifacts_per_correlation",
            ),
            (
                |c| c.default_agent_timeout = Duration::ZERO,
                "default_agent_timeout_ms",
            ),
            (|c| c.max_tracked_workflows = 0, "max_tracked_workflows"),
        ];
        for (spoil, field) in cases {
            let mut config = OrchestratorConfig::default();
            spoil(&mut config);
            let err = config.validate().unwrap_err();
            assert_eq!(err.field_name(), Some(field));
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = serde_json::from_str::<OrchestratorConfig>(r#"{"max_runs": 3}"#).unwrap_err();
        assert!(err.to_string().contains("max_runs"), "{err}");
    }
}
