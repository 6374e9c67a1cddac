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
/// ```
///
/// Both kinds receive `{"agent": name, "artifacts": [the consumed artifact]}` (on stdin, or as
/// the POST body) and answer `{"artifacts": [{"type", "payload", "tags"?}]}` (on stdout, or as
/// a 2xx JSON body). A command is spawned without a shell, in a process group of its own: a
/// timeout kills the whole group. It inherits the orchestrator's environment and working
/// directory (relative paths resolve against it); processes it leaves running after it exits
/// are its own business. URLs must be `http://`: agents are expected next to the
/// orchestrator (loopback, a private network or a sidecar), and keeping TLS out keeps this
/// crate's HTTP client small; put a local proxy in front of an `https` agent.
///
/// Deserializing checks only the shape (unknown keys are refused); [`AgentSpec::build`] checks
/// the values and names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
}

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
                Ok(Arc::new(CommandAgent::new(common, command.clone())))
            }
            (None, Some(url)) => {
                let uri =
                    check_url(url).map_err(|message| ValidationError::field("url", message))?;
                Ok(Arc::new(HttpAgent::new(common, uri)))
            }
        }
    }
}

impl AgentSpec {
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
