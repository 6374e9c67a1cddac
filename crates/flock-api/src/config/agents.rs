//! `[[agents]]`: one table per agent. Its kind (a `command` to run, a `url` to POST to, or an
//! `llm` to ask) is decided here and nowhere else, and the agent is built from it: command and
//! URL agents by the orchestrator's [`AgentSpec`], LLM agents by `flock-llm`.

use std::sync::Arc;

use flock_llm::{LlmAgent, LlmSpec};
use flock_models::ValidationError;
use flock_orchestrator::{Agent, AgentSpec};
use flock_schema::TypeSchemas;
use serde::Deserialize;

use super::{RetrySettings, policy_error_key};

/// One `[[agents]]` table: what the agent consumes and publishes, and exactly one of `command`,
/// `url` or `llm`.
///
/// ```toml
/// [[agents]]
/// name = "planner"
/// consumes = ["Idea"]
/// publishes = ["Plan"]
/// timeout_ms = 60000
/// llm = { base_url = "http://127.0.0.1:8080/v1", model = "smollm2", system = "You plan.", temperature = 0.0, max_tokens = 512 }
/// retry = { max_retries = 3, base_delay_ms = 1000 }   # LLM agents only; the default
/// ```
///
/// Deserializing checks only the shape (unknown keys are refused);
/// [`Settings::check`](crate::config::Settings::check) checks the values and builds the agent,
/// naming the offending key (`agents[2].llm.model`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentTable {
    /// Its unique name, which its artifacts carry as `produced_by`.
    pub name: String,
    /// The artifact types that wake it (at least one).
    pub consumes: Vec<String>,
    /// The artifact types it may publish (an LLM agent: at least one).
    #[serde(default)]
    pub publishes: Vec<String>,
    /// A program and its arguments, run without a shell for each artifact.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// An `http://` URL POSTed to for each artifact.
    #[serde(default)]
    pub url: Option<String>,
    /// A model asked over an OpenAI-compatible chat completions API for each artifact.
    #[serde(default)]
    pub llm: Option<LlmSpec>,
    /// How an LLM agent retries requests answered 429 or 5xx or that could not connect
    /// (`flock_retry`'s default if absent: four attempts, 1 s, 2 s and 4 s apart); the same
    /// keys as `[webhooks.retry]`.
    #[serde(default)]
    pub retry: Option<RetrySettings>,
    /// How long one run may take, in milliseconds, retries included; the orchestrator's
    /// default if absent.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// A command's: the server's environment variables it receives beside `PATH`, `HOME` and
    /// `LANG` (nothing else of the server's environment reaches it).
    #[serde(default)]
    pub env: Vec<String>,
    /// A command's: whether the end of its standard error goes into a failed run's
    /// `WorkflowError`, which clients read (`true` if absent).
    #[serde(default)]
    pub expose_stderr: Option<bool>,
    /// A command's: how many bytes of the end of its standard error are kept (4096 if absent,
    /// at most 65536).
    #[serde(default)]
    pub stderr_bytes: Option<usize>,
}

/// What an agent is, as its table says.
enum Kind<'a> {
    /// `command` or `url`: the orchestrator builds it.
    Orchestrator,
    /// `llm`: `flock-llm` builds it.
    Llm(&'a LlmSpec),
}

impl AgentTable {
    /// Checks the table and builds its agent; `types` are the declared types an LLM agent's
    /// answers must match.
    ///
    /// # Errors
    /// The first invalid value, named by its path within the table (`command`, `llm.model`,
    /// `retry.factor`, `consumes[1]`).
    pub(crate) fn build(
        &self,
        types: &Arc<TypeSchemas>,
    ) -> Result<Arc<dyn Agent>, ValidationError> {
        match self.kind()? {
            Kind::Orchestrator => {
                if self.retry.is_some() {
                    return Err(ValidationError::field(
                        "retry",
                        "only an `llm` agent retries its requests; a command or url agent runs \
                         once per artifact",
                    ));
                }
                self.spec().build()
            }
            Kind::Llm(llm) => {
                let spec = self.spec();
                spec.refuse_command_options("an llm agent")?;
                let basics = spec.basics()?;
                let mut builder = LlmAgent::builder(basics.name, llm.clone())
                    .consumes(basics.consumes)
                    .publishes(basics.publishes)
                    .types(Arc::clone(types));
                if let Some(timeout) = basics.timeout {
                    builder = builder.timeout(timeout);
                }
                if let Some(retry) = &self.retry {
                    let policy = retry.policy();
                    policy.validate().map_err(|e| {
                        ValidationError::field(
                            format!("retry.{}", policy_error_key(&e)),
                            e.to_string(),
                        )
                    })?;
                    builder = builder.retry_policy(policy);
                }
                Ok(Arc::new(builder.build()?))
            }
        }
    }

    /// The one place an agent's kind is decided: exactly one of `command`, `url` and `llm`.
    fn kind(&self) -> Result<Kind<'_>, ValidationError> {
        let given: Vec<&str> = [
            ("command", self.command.is_some()),
            ("url", self.url.is_some()),
            ("llm", self.llm.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect();
        match (given.as_slice(), &self.llm) {
            ([], _) => Err(ValidationError::field(
                "command",
                "one of `command` (a program to run), `url` (an http:// endpoint) or `llm` (a \
                 model to ask) is required",
            )),
            (["llm"], Some(llm)) => Ok(Kind::Llm(llm)),
            ([_], _) => Ok(Kind::Orchestrator),
            ([first, second, ..], _) => Err(ValidationError::field(
                *second,
                format!(
                    "give exactly one of `command`, `url` or `llm`, not both `{first}` and \
                     `{second}`"
                ),
            )),
        }
    }

    /// The orchestrator's view of the table.
    fn spec(&self) -> AgentSpec {
        AgentSpec {
            name: self.name.clone(),
            consumes: self.consumes.clone(),
            publishes: self.publishes.clone(),
            command: self.command.clone(),
            url: self.url.clone(),
            timeout_ms: self.timeout_ms,
            env: self.env.clone(),
            expose_stderr: self.expose_stderr,
            stderr_bytes: self.stderr_bytes,
        }
    }
}

/// A command or URL agent's spec as a table (for settings built in code).
impl From<AgentSpec> for AgentTable {
    fn from(spec: AgentSpec) -> Self {
        AgentTable {
            name: spec.name,
            consumes: spec.consumes,
            publishes: spec.publishes,
            command: spec.command,
            url: spec.url,
            llm: None,
            retry: None,
            timeout_ms: spec.timeout_ms,
            env: spec.env,
            expose_stderr: spec.expose_stderr,
            stderr_bytes: spec.stderr_bytes,
        }
    }
}
