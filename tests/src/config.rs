//! Server configuration for tests and benchmarks, written as the TOML file users write: the
//! store named explicitly, the SSRF allow-list, retry and shutdown timings, command agents
//! (small python3 scripts in a temporary directory), and any TOML a test adds (declared types,
//! LLM agents).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use flock_api::config::{CheckedSettings, Settings};

/// A directory for configuration files and agent scripts, removed on drop.
#[derive(Debug)]
pub struct Workdir(PathBuf);

impl Workdir {
    /// A new, empty directory under the system's temporary directory.
    ///
    /// # Errors
    /// The directory cannot be created.
    pub fn new() -> anyhow::Result<Workdir> {
        let dir = std::env::temp_dir().join(format!("flock-e2e-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir)?;
        Ok(Workdir(dir))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `text` to the file `name` in it and returns the file's path.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn write(&self, name: &str, text: &str) -> anyhow::Result<PathBuf> {
        let path = self.0.join(name);
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A command agent: consumes one type and publishes `outputs` artifacts of another, each
/// payload naming the artifact it consumed (`{"from": id, "by": agent, "n": i}`), tagged
/// `generated`.
#[derive(Debug, Clone)]
pub struct TransformAgent {
    /// The agent's name.
    pub name: String,
    /// The type it consumes.
    pub consumes: String,
    /// The type it publishes.
    pub publishes: String,
    /// How many artifacts one run publishes.
    pub outputs: usize,
}

impl TransformAgent {
    /// An agent `name` turning each `consumes` into one `publishes`.
    pub fn new(name: &str, consumes: &str, publishes: &str) -> Self {
        TransformAgent {
            name: name.to_owned(),
            consumes: consumes.to_owned(),
            publishes: publishes.to_owned(),
            outputs: 1,
        }
    }

    /// The same agent publishing `outputs` artifacts per run.
    #[must_use]
    pub fn outputs(mut self, outputs: usize) -> Self {
        self.outputs = outputs;
        self
    }
}

/// The agent program: reads `{"agent", "artifacts"}` on stdin, answers `{"artifacts": [...]}`
/// with `argv[2]` artifacts of type `argv[1]`.
const TRANSFORM_PY: &str = r#"import json, sys
request = json.load(sys.stdin)
consumed = request["artifacts"][0]
print(json.dumps({"artifacts": [{
    "type": sys.argv[1],
    "payload": {"from": consumed["id"], "by": request["agent"], "n": n},
    "tags": ["generated"],
} for n in range(int(sys.argv[2]))]}))
"#;

/// Idea → Plan → Draft → Review: three agents, so one publish gives four artifacts.
pub fn three_agent_chain() -> Vec<TransformAgent> {
    vec![
        TransformAgent::new("planner", "Idea", "Plan"),
        TransformAgent::new("writer", "Plan", "Draft"),
        TransformAgent::new("reviewer", "Draft", "Review"),
    ]
}

/// What a test or benchmark server is told. [`ServerConfig::write`] renders it as a TOML file.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `[store] url`, always written out so that tests keep their store when the default
    /// changes. `memory://` by default.
    pub store_url: String,
    /// Let webhooks go to 127.0.0.1 (`webhooks.allowed_cidrs = ["127.0.0.1/32"]`). Without it
    /// the allow-list is absent and the SSRF guard refuses loopback.
    pub allow_loopback: bool,
    /// The first retry wait, in milliseconds.
    pub retry_base_ms: u64,
    /// The longest retry wait, in milliseconds.
    pub retry_max_ms: u64,
    /// Per-attempt timeout, in milliseconds.
    pub webhook_timeout_ms: u64,
    /// Grace period of a stop, in milliseconds.
    pub shutdown_grace_ms: u64,
    /// HTTP worker threads (`None`: one per CPU).
    pub workers: Option<usize>,
    /// Log filter (`RUST_LOG` is removed from a server process's environment).
    pub log_level: String,
    /// Command agents.
    pub agents: Vec<TransformAgent>,
    /// TOML appended to the file as written: `[[types]]`, more `[[agents]]` (LLM agents).
    pub extra_toml: String,
    /// Lines written under `[store]` after its `url` (retention settings).
    pub store_toml: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            store_url: "memory://".to_owned(),
            allow_loopback: true,
            retry_base_ms: 50,
            retry_max_ms: 2_000,
            webhook_timeout_ms: 30_000,
            shutdown_grace_ms: 20_000,
            workers: Some(2),
            log_level: "info".to_owned(),
            agents: Vec::new(),
            extra_toml: String::new(),
            store_toml: String::new(),
        }
    }
}

impl ServerConfig {
    /// The configuration as TOML, with agent scripts written into `dir`; port 0 and JSON logs.
    ///
    /// # Errors
    /// A file that cannot be written.
    pub fn toml(&self, dir: &Workdir) -> anyhow::Result<String> {
        let mut text = String::new();
        writeln!(text, "[server]\nhost = \"127.0.0.1\"\nport = 0")?;
        writeln!(text, "shutdown_grace_ms = {}", self.shutdown_grace_ms)?;
        if let Some(workers) = self.workers {
            writeln!(text, "workers = {workers}")?;
        }
        writeln!(
            text,
            "\n[log]\nformat = \"json\"\nlevel = {}",
            quote(&self.log_level)
        )?;
        writeln!(text, "\n[store]\nurl = {}", quote(&self.store_url))?;
        if !self.store_toml.is_empty() {
            writeln!(text, "{}", self.store_toml)?;
        }
        writeln!(text, "\n[webhooks]")?;
        if self.allow_loopback {
            writeln!(text, "allowed_cidrs = [\"127.0.0.1/32\"]")?;
        }
        writeln!(text, "timeout_ms = {}", self.webhook_timeout_ms)?;
        writeln!(
            text,
            "\n[webhooks.retry]\nbase_delay_ms = {}\nmax_delay_ms = {}",
            self.retry_base_ms, self.retry_max_ms
        )?;
        if !self.agents.is_empty() {
            let script = dir.write("transform.py", TRANSFORM_PY)?;
            let script = script.to_string_lossy();
            for agent in &self.agents {
                writeln!(
                    text,
                    "\n[[agents]]\nname = {}\nconsumes = [{}]\npublishes = [{}]\ncommand = [\"python3\", {}, {}, \"{}\"]\ntimeout_ms = 30000",
                    quote(&agent.name),
                    quote(&agent.consumes),
                    quote(&agent.publishes),
                    quote(&script),
                    quote(&agent.publishes),
                    agent.outputs,
                )?;
            }
        }
        if !self.extra_toml.is_empty() {
            writeln!(text, "\n{}", self.extra_toml)?;
        }
        Ok(text)
    }

    /// Writes the configuration file `flock.toml` (and the agent scripts) into `dir`.
    ///
    /// # Errors
    /// A file that cannot be written.
    pub fn write(&self, dir: &Workdir) -> anyhow::Result<PathBuf> {
        let text = self.toml(dir)?;
        dir.write("flock.toml", &text)
    }

    /// The settings the server loads from that file (no environment overrides), as the binary
    /// would load them.
    ///
    /// # Errors
    /// A file that cannot be written, or settings the server refuses.
    pub fn settings(&self, dir: &Workdir) -> anyhow::Result<CheckedSettings> {
        let path = self.write(dir)?;
        Ok(Settings::load(Some(&path), Vec::new())?)
    }
}

/// A TOML basic string.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_loads_with_the_store_and_agents_named() {
        let dir = Workdir::new().unwrap();
        let config = ServerConfig {
            agents: three_agent_chain(),
            ..ServerConfig::default()
        };
        let settings = config.settings(&dir).unwrap();
        assert_eq!(settings.store.url, flock_store::StoreUrl::Memory);
        assert_eq!(settings.server.port, 0);
        let allowed: Vec<String> = settings
            .webhooks
            .allowed_cidrs
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(allowed, ["127.0.0.1/32"]);
        assert_eq!(settings.agents.len(), 3);
        assert_eq!(settings.agents().len(), 3, "the agents are built");
        let closed = ServerConfig {
            allow_loopback: false,
            ..ServerConfig::default()
        };
        assert!(
            closed
                .settings(&dir)
                .unwrap()
                .webhooks
                .allowed_cidrs
                .is_empty()
        );
    }
}
