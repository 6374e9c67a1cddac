//! Agents declared in configuration (`[[agents]]`): the spec, its validation, and building the
//! command or HTTP agent it describes.

use std::sync::Arc;
use std::time::Duration;

use flock_models::{EXTERNAL_PRODUCER, TypeName, ValidationError};
use serde::{Deserialize, Serialize};

use crate::agent::{Agent, Subscription};
use crate::command::CommandAgent;
use crate::http::HttpAgent;

/// The longest `timeout_ms` accepted: one day.
const MAX_TIMEOUT_MS: u64 = 24 * 60 * 60 * 1000;

/// An agent declared in configuration: what it consumes and publishes, and either a program to
/// run or an HTTP endpoint to POST to.
///
/// ```toml
/// [[agents]]
/// name = "shouter"
/// consumes = ["Idea"]
/// publishes = ["Shout"]
/// command = ["python3", "agents/shout.py"]   # or: url = "http://127.0.0.1:7000/shout"
/// timeout_ms = 10000
/// env = ["SHOUT_LEVEL"]                      # a command's extra environment variables
/// ```
///
/// Both kinds receive `{"agent": name, "artifacts": [the consumed artifact]}` (on stdin, or as
/// the POST body) and answer `{"artifacts": [{"type", "payload", "tags"?}]}` (on stdout, or as
/// a 2xx JSON body). A command is spawned without a shell, in a process group of its own: a
/// timeout kills the whole group. It starts with an empty environment plus `PATH`, `HOME`,
/// `LANG` and the variables its `env` names (the server's store URL and secrets stay out), in
/// the orchestrator's working directory (relative paths resolve against it); processes it
/// leaves running after it exits are its own business. When it fails, the end of its standard
/// error (`stderr_bytes`, 4 KiB by default) goes into the error the run records, which clients
/// can read as a `WorkflowError`, unless `expose_stderr = false`: then it is only logged at
/// `debug`. URLs must be `http://`: agents are expected next to the
/// orchestrator (loopback, a private network or a sidecar), and keeping TLS out keeps this
/// crate's HTTP client small; put a local proxy in front of an `https` agent.
///
/// Deserializing checks only the shape (unknown keys are refused); [`AgentSpec::build`] checks
/// the values and names the offending field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// Its unique name, which its artifacts carry as `produced_by`: the rules of type names
    /// (ASCII letters, digits, `.`, `_`, `-`); `external` is reserved.
    pub name: String,
    /// The artifact types that wake it (at least one).
    pub consumes: Vec<String>,
    /// The artifact types it may publish; anything else it answers is an error.
    #[serde(default)]
    pub publishes: Vec<String>,
    /// The program and its arguments, run without a shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// The `http://` URL to POST to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// How long one run may take, in milliseconds; the orchestrator's default if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// A command's: the names of the server's environment variables it receives beside `PATH`,
    /// `HOME` and `LANG` (a name the server does not have is left out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// A command's: whether the end of its standard error goes into a failed run's error
    /// (`true` if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose_stderr: Option<bool>,
    /// A command's: how many bytes of the end of its standard error are kept, 1 to
    /// [`MAX_STDERR_BYTES`] ([`DEFAULT_STDERR_BYTES`] if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_bytes: Option<usize>,
}

/// The most of a command's standard error kept for its error: 64 KiB.
pub const MAX_STDERR_BYTES: usize = 64 * 1024;
/// How much of a command's standard error is kept when `stderr_bytes` is absent: 4 KiB.
pub const DEFAULT_STDERR_BYTES: usize = 4 * 1024;
/// The variables every command receives, when the server has them.
pub const COMMAND_BASE_ENV: [&str; 3] = ["PATH", "HOME", "LANG"];

impl AgentSpec {
    /// Checks every field and builds the agent.
    ///
    /// # Errors
    /// The first invalid field, named by its path within the spec (`name`, `consumes[1]`,
    /// `command`, `command[0]`, `url`, `timeout_ms`); prefix it with the spec's own place
    /// (`agents[2]`) with [`ValidationError::within`].
    pub fn build(&self) -> Result<Arc<dyn Agent>, ValidationError> {
        let basics = self.basics()?;
        let common = Common {
            name: basics.name,
            subscriptions: vec![Subscription::to(basics.consumes)],
            publishes: basics.publishes,
            timeout: basics.timeout,
        };
        match (&self.command, &self.url) {
            (Some(_), Some(_)) => Err(ValidationError::field(
                "url",
                "give either `command` or `url`, not both",
            )),
            (None, None) => Err(ValidationError::field(
                "command",
                "one of `command` (a program to run) or `url` (an http:// endpoint) is required",
            )),
            (Some(command), None) => {
                check_command(command)?;
                let options = self.command_options()?;
                Ok(Arc::new(CommandAgent::new(
                    common,
                    command.clone(),
                    options,
                )))
            }
            (None, Some(url)) => {
                self.refuse_command_options("a url agent")?;
                let uri =
                    check_url(url).map_err(|message| ValidationError::field("url", message))?;
                Ok(Arc::new(HttpAgent::new(common, uri)))
            }
        }
    }
}

impl AgentSpec {
    /// Checks a command's `env`, `expose_stderr` and `stderr_bytes`.
    fn command_options(&self) -> Result<CommandOptions, ValidationError> {
        for (i, name) in self.env.iter().enumerate() {
            let valid = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err(ValidationError::field(
                    format!("env[{i}]"),
                    format!(
                        "`{name}` is not an environment variable name (ASCII letters, digits \
                         and `_`, not starting with a digit)"
                    ),
                ));
            }
        }
        let stderr_bytes = match self.stderr_bytes {
            None => DEFAULT_STDERR_BYTES,
            Some(bytes) if (1..=MAX_STDERR_BYTES).contains(&bytes) => bytes,
            Some(_) => {
                return Err(ValidationError::field(
                    "stderr_bytes",
                    format!(
                        "must be between 1 and {MAX_STDERR_BYTES}; to keep standard error out \
                         of errors, set expose_stderr = false"
                    ),
                ));
            }
        };
        let mut env: Vec<String> = COMMAND_BASE_ENV.iter().map(|&n| n.to_owned()).collect();
        for name in &self.env {
            if !env.contains(name) {
                env.push(name.clone());
            }
        }
        Ok(CommandOptions {
            env,
            expose_stderr: self.expose_stderr.unwrap_or(true),
            stderr_bytes,
        })
    }

    /// Refuses `env`, `expose_stderr` and `stderr_bytes` on an agent that runs no program
    /// (`what`: "a url agent"); hosts building agents of their own kinds use it too.
    ///
    /// # Errors
    /// The first of those keys that is set.
    pub fn refuse_command_options(&self, what: &str) -> Result<(), ValidationError> {
        let set = [
            ("env", !self.env.is_empty()),
            ("expose_stderr", self.expose_stderr.is_some()),
            ("stderr_bytes", self.stderr_bytes.is_some()),
        ];
        match set.into_iter().find(|(_, set)| *set) {
            Some((key, _)) => Err(ValidationError::field(
                key,
                format!("only a command agent has `{key}`, and this is {what}"),
            )),
            None => Ok(()),
        }
    }

    /// Checks what every configured agent has, whatever its kind: `name`, `consumes`,
    /// `publishes` and `timeout_ms` (not `command` or `url`). [`AgentSpec::build`] starts
    /// with it; a host that builds agents of kinds of its own from configuration (an LLM agent)
    /// uses it for the same rules and the same error fields.
    ///
    /// # Errors
    /// The first invalid field, named as [`AgentSpec::build`] names it.
    pub fn basics(&self) -> Result<AgentBasics, ValidationError> {
        check_agent_name(&self.name).map_err(|e| e.within("name"))?;
        if self.consumes.is_empty() {
            return Err(ValidationError::field(
                "consumes",
                "at least one artifact type is required",
            ));
        }
        let consumes = type_names(&self.consumes, "consumes")?;
        let publishes = type_names(&self.publishes, "publishes")?;
        let timeout = match self.timeout_ms {
            None => None,
            Some(ms) if (1..=MAX_TIMEOUT_MS).contains(&ms) => Some(Duration::from_millis(ms)),
            Some(_) => {
                return Err(ValidationError::field(
                    "timeout_ms",
                    format!("must be between 1 and {MAX_TIMEOUT_MS}"),
                ));
            }
        };
        Ok(AgentBasics {
            name: self.name.clone(),
            consumes,
            publishes,
            timeout,
        })
    }
}

/// What every agent declared in configuration has, checked by [`AgentSpec::basics`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentBasics {
    /// Its name (the rules of type names, not `external`).
    pub name: String,
    /// The types that wake it, each once, in the order written (at least one).
    pub consumes: Vec<TypeName>,
    /// The types it may publish, each once, in the order written.
    pub publishes: Vec<TypeName>,
    /// How long one run may take; the orchestrator's default if `None`.
    pub timeout: Option<Duration>,
}

/// What a command agent runs with beyond its command.
pub(crate) struct CommandOptions {
    /// The variables passed through from the server's environment: the base ones and `env`.
    pub(crate) env: Vec<String>,
    /// Whether the end of standard error goes into a failed run's error.
    pub(crate) expose_stderr: bool,
    /// How many bytes of the end of standard error are kept.
    pub(crate) stderr_bytes: usize,
}

/// What command and HTTP agents have in common.
pub(crate) struct Common {
    pub(crate) name: String,
    pub(crate) subscriptions: Vec<Subscription>,
    pub(crate) publishes: Vec<TypeName>,
    pub(crate) timeout: Option<Duration>,
}

/// Checks an agent name: the rules of type names, and not the reserved `external`.
pub(crate) fn check_agent_name(name: &str) -> Result<(), ValidationError> {
    if name == EXTERNAL_PRODUCER {
        return Err(ValidationError::whole(format!(
            "`{EXTERNAL_PRODUCER}` is reserved for artifacts published by clients"
        )));
    }
    TypeName::new(name)
        .map(drop)
        .map_err(|e| ValidationError::whole(e.message().replace("type name", "name")))
}

/// Validates a list of type names, dropping repeats; errors name `field[i]`.
fn type_names(names: &[String], field: &str) -> Result<Vec<TypeName>, ValidationError> {
    let mut out: Vec<TypeName> = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let type_name =
            TypeName::new(name.as_str()).map_err(|e| e.within(&format!("{field}[{i}]")))?;
        if !out.contains(&type_name) {
            out.push(type_name);
        }
    }
    Ok(out)
}

fn check_command(command: &[String]) -> Result<(), ValidationError> {
    let Some(program) = command.first() else {
        return Err(ValidationError::field(
            "command",
            "must name a program: [\"program\", \"arg\", ...]",
        ));
    };
    if program.trim().is_empty() {
        return Err(ValidationError::field(
            "command[0]",
            "the program must not be empty",
        ));
    }
    if let Some(i) = command.iter().position(|part| part.contains('\0')) {
        return Err(ValidationError::field(
            format!("command[{i}]"),
            "must not contain a NUL character",
        ));
    }
    Ok(())
}

/// Parses an agent URL: `http://host[:port][/path]`, nothing else.
fn check_url(url: &str) -> Result<hyper::Uri, String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("not a valid URL ({e}); expected http://host[:port]/path"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(
                "https is not supported for agents; use an http:// URL (agents are expected \
                 next to the orchestrator; put a local proxy in front of a remote https agent)"
                    .to_owned(),
            );
        }
        Some(other) => {
            return Err(format!(
                "the scheme `{other}` is not supported; use http://"
            ));
        }
        None => return Err("expected an absolute URL: http://host[:port]/path".to_owned()),
    }
    let Some(authority) = uri.authority() else {
        return Err("the URL has no host".to_owned());
    };
    if authority.as_str().contains('@') {
        return Err("credentials in the URL are not supported".to_owned());
    }
    if authority.host().is_empty() {
        return Err("the URL has no host".to_owned());
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_http_only_with_a_host() {
        assert!(check_url("http://127.0.0.1:7000/shout").is_ok());
        assert!(check_url("http://agents.internal/run?x=1").is_ok());
        for (url, expected) in [
            ("https://example.com/a", "https is not supported"),
            ("ftp://example.com/a", "scheme `ftp`"),
            ("/relative", "absolute URL"),
            ("http://user:pw@example.com/", "credentials"),
            ("http:// bad", "not a valid URL"),
        ] {
            let err = check_url(url).unwrap_err();
            assert!(err.contains(expected), "{url}: {err}");
        }
    }

    #[test]
    fn agent_names_follow_type_name_rules() {
        assert!(check_agent_name("shouter-2.v1").is_ok());
        assert!(
            check_agent_name("external")
                .unwrap_err()
                .message()
                .contains("reserved")
        );
        assert!(
            check_agent_name("")
                .unwrap_err()
                .message()
                .contains("name must not be empty")
        );
        assert!(check_agent_name("a b").is_err());
    }
}
