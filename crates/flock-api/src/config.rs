//! Configuration: built-in defaults, then a TOML file, then `FLOCK__SECTION__KEY` environment
//! variables, read once into typed values (the store URL, the SSRF allow-list, the agents'
//! specs) and checked once at start, with errors that name the bad key. The check builds the
//! agents; start-up takes them from [`CheckedSettings`].

use std::fmt;
use std::net::IpAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use flock_orchestrator::{Agent, OrchestratorConfig};
use flock_retry::{PolicyError, RetryPolicy};
use flock_schema::{TypeDeclaration, TypeSchemas};
use flock_store::{Retention, StoreUrl};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

mod agents;
mod types;

pub use agents::AgentTable;

/// The environment variable naming the configuration file when `--config` is not given.
pub const CONFIG_ENV: &str = "FLOCK_CONFIG";

/// Keys whose environment value is a comma-separated list.
const LIST_KEYS: &[&str] = &["webhooks.allowed_cidrs"];

/// Everything `flock-api serve` can be told.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The HTTP server.
    #[serde(default)]
    pub server: ServerSettings,
    /// Logging.
    #[serde(default)]
    pub log: LogSettings,
    /// Webhook delivery.
    #[serde(default)]
    pub webhooks: WebhookSettings,
    /// Idempotency keys on the publish routes.
    #[serde(default)]
    pub idempotency: IdempotencySettings,
    /// Who may call: API keys, or keyless on loopback.
    #[serde(default)]
    pub auth: AuthSettings,
    /// Where artifacts and deliveries live.
    #[serde(default)]
    pub store: StoreSettings,
    /// Agent concurrency, timeouts and the runaway guard.
    #[serde(default)]
    pub orchestrator: OrchestratorConfig,
    /// The request rate limit per caller (off by default).
    #[serde(default)]
    pub limits: LimitsSettings,
    /// The live event stream (`GET /api/v1/events`): its bounds.
    #[serde(default)]
    pub events: EventSettings,
    /// The declared artifact types, as `[[types]]` tables (`name`, `schema`): every publish
    /// of one is checked against its JSON Schema, and LLM agents answer in it.
    #[serde(default)]
    pub types: Vec<TypeDeclaration>,
    /// The agents, as `[[agents]]` tables.
    #[serde(default)]
    pub agents: Vec<AgentTable>,
}

/// `[limits]`: a token bucket per caller (its bearer token, or its address without one), off
/// unless `requests_per_sec` is set. A caller past it is answered 429 `too_many_requests` with
/// `Retry-After`. `/health` and the OpenAPI document are never limited.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSettings {
    /// Requests a second each caller may make on average; no limit when absent.
    pub requests_per_sec: Option<u32>,
    /// Requests a caller may make at once; `requests_per_sec` when absent.
    pub burst: Option<u32>,
}

/// `[events]`: the bounds of the live event stream. Events are this instance's: several
/// instances on one database each stream what they themselves publish and attempt.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventSettings {
    /// How many recent events are kept for `Last-Event-ID` resume (1,024 by default).
    pub buffer: usize,
    /// How many events may wait for one subscriber (256 by default); a subscriber that falls
    /// this far behind gets a last `stream.overflow` event and is disconnected.
    pub queue: usize,
    /// How many streams may be open at once (64 by default); one more is answered 503.
    pub max_subscribers: usize,
    /// How often an idle stream gets a heartbeat comment (15 s by default).
    pub heartbeat_ms: u64,
}

impl Default for EventSettings {
    fn default() -> Self {
        EventSettings {
            buffer: 1024,
            queue: 256,
            max_subscribers: 64,
            heartbeat_ms: 15_000,
        }
    }
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// Where artifacts and webhook deliveries live: `sqlite://flock.db` by default (a file
    /// relative to the working directory; `sqlite:///abs/path.db` for an absolute path),
    /// `postgres://USER:PASSWORD@HOST/DATABASE` for several instances on one database, or
    /// `memory://` (lost on restart). Checked as it is read; `Debug` hides a Postgres password.
    pub url: StoreUrl,
    /// How long delivered and failed deliveries (and their attempts) are kept after they were
    /// completed; 7 days by default. Artifacts are kept.
    pub retention_secs: u64,
    /// How often done deliveries past their retention are pruned; every minute by default.
    pub prune_interval_ms: u64,
    /// When set, a workflow whose newest artifact is older than this many seconds, and that has
    /// no pending delivery, is deleted with its artifacts, deliveries and attempts. Off by
    /// default: artifacts are kept. At least `idempotency.ttl_secs`, so that a replayed answer
    /// still finds its artifacts.
    pub artifact_retention_secs: Option<u64>,
}

/// The default `store.url`.
pub const DEFAULT_STORE_URL: &str = "sqlite://flock.db";

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            url: StoreUrl::parse(DEFAULT_STORE_URL).expect("the default store URL parses"),
            retention_secs: 7 * 24 * 60 * 60,
            prune_interval_ms: 60_000,
            artifact_retention_secs: None,
        }
    }
}

impl StoreSettings {
    /// The retention and pruning period.
    pub fn retention(&self) -> Retention {
        Retention {
            keep_for: Duration::from_secs(self.retention_secs),
            every: Duration::from_millis(self.prune_interval_ms),
            workflows_for: self.artifact_retention_secs.map(Duration::from_secs),
        }
    }
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address to listen on; `127.0.0.1` by default.
    pub host: IpAddr,
    /// Port to listen on; 8344 by default, 0 for any free port.
    pub port: u16,
    /// The largest request body accepted, in bytes; 1 MiB by default.
    pub body_limit_bytes: usize,
    /// How long a stop (SIGINT/SIGTERM) waits for running agents and in-flight deliveries.
    pub shutdown_grace_ms: u64,
    /// HTTP worker threads; the number of CPUs when absent.
    pub workers: Option<usize>,
    /// How long a request's body may take to arrive, in milliseconds (30 s by default): a
    /// slower body is answered 408 `request_timeout` and its connection closed, so slow-body
    /// connections cannot pile up. Headers must arrive within 5 s, or this when shorter.
    pub request_timeout_ms: u64,
    /// The most connections served at once (10,000 by default), shared evenly among the
    /// workers; past it new connections wait in the listen backlog until one closes.
    pub max_connections: usize,
    /// Serve `GET /metrics` without a key; `false` by default: it needs the `metrics` scope.
    pub metrics_open: bool,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            host: IpAddr::from([127, 0, 0, 1]),
            port: 8344,
            body_limit_bytes: 1024 * 1024,
            shutdown_grace_ms: 10_000,
            workers: None,
            request_timeout_ms: 30_000,
            max_connections: 10_000,
            metrics_open: false,
        }
    }
}

/// `[auth]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// `auto` (the default): keys are required unless the server listens on loopback only;
    /// `keys`: always required; `open`: never required (a warning at start).
    pub mode: AuthMode,
    /// How often each instance reads the keys revoked on others; 1 s by default. A key
    /// revoked elsewhere is refused within two of these.
    pub revocation_poll_ms: u64,
    /// How often the times keys were last used are written, in one batch; 10 s by default.
    pub last_used_flush_ms: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            mode: AuthMode::Auto,
            revocation_poll_ms: 1_000,
            last_used_flush_ms: 10_000,
        }
    }
}

/// `auth.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Keys are required unless the server listens on loopback only; there, a request without
    /// a key acts as tenant `default` with every scope.
    #[default]
    Auto,
    /// Keys are always required.
    Keys,
    /// No key is required anywhere; a request without one acts as tenant `default` with every
    /// scope. Must be chosen explicitly to serve without keys on a non-loopback address.
    Open,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `pretty` (for people) or `json` (for log pipelines).
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `flock_delivery=debug,info`; `RUST_LOG` wins over it.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: LogFormat::Pretty,
            level: "info".to_owned(),
        }
    }
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// `[webhooks]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// Removed: a server-wide secret signed every webhook whose request gave none, for anyone
    /// who could publish (a signing oracle). Such webhooks are now signed with their tenant's
    /// secret; setting `webhooks.default_secret` is an error that says so.
    #[serde(rename = "default_secret", deserialize_with = "removed_default_secret")]
    removed_default_secret: Option<()>,
    /// Address ranges the SSRF guard lets through, such as `127.0.0.1/32` for local
    /// development; a bare address counts as a range of one. Empty by default: no private,
    /// loopback or otherwise internal address.
    #[serde(deserialize_with = "networks")]
    pub allowed_cidrs: Vec<IpNet>,
    /// Deliveries in flight at once; 128 by default.
    pub concurrency: usize,
    /// Connect timeout per attempt.
    pub connect_timeout_ms: u64,
    /// Total timeout per attempt.
    pub timeout_ms: u64,
    /// How long a claim on a delivery lasts: when an instance dies (or is killed) with attempts
    /// in flight, their deliveries are attempted again once it lapses. Must exceed
    /// `timeout_ms`; 60 s by default.
    pub lease_ms: u64,
    /// The longest the dispatcher sleeps without looking at the outbox (for deliveries that
    /// other instances enqueued, and leases that expired); 1 s by default.
    pub poll_interval_ms: u64,
    /// The retry schedule.
    pub retry: RetrySettings,
    /// The most deliveries pending (waiting or in flight) in the whole store: past it a publish
    /// with a webhook is answered 429 `too_many_pending_deliveries`; 1,000,000 by default.
    pub max_pending: u64,
    /// The most deliveries one tenant may have pending; 100,000 by default.
    pub max_pending_per_tenant: u64,
    /// How long a tenant's previous webhook secret keeps signing after
    /// `POST /api/v1/webhook-secret/rotate` (beside the new one, in `webhook-signature`), so
    /// its receivers can move to the new secret: 86,400 (a day) by default, 0 to stop at once,
    /// at most [`MAX_SECRET_GRACE_SECS`] (30 days).
    pub secret_grace_secs: u64,
    /// Attempts in flight at once to one destination (`scheme://host[:port]`), at most; while
    /// other destinations have work, each gets a fair share of `concurrency` below it. Unset,
    /// half of `concurrency` (64 of the default 128): one receiver alone keeps its throughput,
    /// and a receiver that never answers leaves the other half of the slots to everyone else,
    /// whatever `concurrency` is set to. See [`WebhookSettings::per_destination_cap`].
    pub per_destination_concurrency: Option<usize>,
    /// Each destination's circuit breaker.
    pub breaker: BreakerSettings,
    /// How long a delivery may wait held by its destination (an open breaker, a pause, no free
    /// capacity) before it fails as `destination_unavailable`; 3,600 s by default.
    pub max_hold_secs: u64,
    /// Attempts per second to one destination, at most (a token bucket with a second of
    /// burst); no limit by default.
    pub per_destination_rate: Option<f64>,
}

/// `[webhooks.breaker]`: a destination's circuit breaker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSettings {
    /// Consecutive failed attempts (a network error, a timeout, a 5xx or a 429) that open it;
    /// 5 by default.
    pub failures: u32,
    /// The longest it stays open before its next probe: its cool-off starts at 1 s and doubles
    /// after every failed probe up to this; 300,000 (5 min) by default.
    pub max_open_ms: u64,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failures: 5,
            max_open_ms: 300_000,
        }
    }
}

/// The longest `webhooks.secret_grace_secs`: 30 days. A rotation is often the answer to a
/// leaked secret, and the old secret signs every delivery until its grace period ends; a
/// longer one would leave a leaked secret useful for that long.
pub const MAX_SECRET_GRACE_SECS: u64 = 30 * 24 * 60 * 60;

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            removed_default_secret: None,
            allowed_cidrs: Vec::new(),
            concurrency: 128,
            connect_timeout_ms: 5_000,
            timeout_ms: 10_000,
            lease_ms: 60_000,
            poll_interval_ms: 1_000,
            retry: RetrySettings::default(),
            max_pending: 1_000_000,
            max_pending_per_tenant: 100_000,
            secret_grace_secs: 86_400,
            per_destination_concurrency: None,
            breaker: BreakerSettings::default(),
            max_hold_secs: 3_600,
            per_destination_rate: None,
        }
    }
}

impl WebhookSettings {
    /// `secret_grace_secs` as a duration.
    pub fn secret_grace(&self) -> Duration {
        Duration::from_secs(self.secret_grace_secs)
    }

    /// Attempts in flight at once to one destination: `per_destination_concurrency`, or half
    /// of `concurrency` (at least 1) when unset.
    pub fn per_destination_cap(&self) -> usize {
        self.per_destination_concurrency
            .unwrap_or((self.concurrency / 2).max(1))
    }

    /// The receiver isolation settings, for the dispatcher.
    pub fn isolation(&self) -> flock_delivery::Isolation {
        flock_delivery::Isolation {
            per_destination_concurrency: self.per_destination_cap(),
            breaker_failures: self.breaker.failures,
            breaker_max_open: Duration::from_millis(self.breaker.max_open_ms),
            max_hold: Duration::from_secs(self.max_hold_secs),
            per_destination_rate: self.per_destination_rate,
            // A short max_hold_secs is looked at often enough to keep its word.
            sweep_every: (Duration::from_secs(self.max_hold_secs) / 4)
                .clamp(Duration::from_millis(100), Duration::from_secs(5)),
        }
    }
}

/// `webhooks.allowed_cidrs`: CIDR ranges or bare addresses, each checked as it is read (so an
/// error names its index: `webhooks.allowed_cidrs[1]`).
/// Refuses `webhooks.default_secret`, whatever its value, and says what replaced it.
fn removed_default_secret<'de, D: Deserializer<'de>>(_: D) -> Result<Option<()>, D::Error> {
    Err(serde::de::Error::custom(
        "webhooks.default_secret was removed: a webhook without a secret of its own is signed \
         with its tenant's webhook secret, which `POST /api/v1/webhook-secret/rotate` creates \
         or rotates and shows; remove the setting",
    ))
}

fn networks<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<IpNet>, D::Error> {
    /// One entry of the list.
    struct Network(IpNet);

    impl<'de> Deserialize<'de> for Network {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            let text = String::deserialize(deserializer)?;
            let text = text.trim();
            text.parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                .map(Network)
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "`{text}` is not a CIDR range such as 127.0.0.1/32"
                    ))
                })
        }
    }

    let list = Vec::<Network>::deserialize(deserializer)?;
    Ok(list.into_iter().map(|Network(net)| net).collect())
}

/// `[webhooks.retry]`: after failed attempt n, wait `base_delay_ms × factor^(n-1)`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    /// Retries after the first attempt (3: four attempts in all).
    pub max_retries: u32,
    /// The first wait.
    pub base_delay_ms: u64,
    /// Growth of each wait.
    pub factor: u32,
    /// No wait is longer, `Retry-After` included.
    pub max_delay_ms: u64,
    /// Spread of each wait, 0 to 1.
    pub jitter: f64,
}

impl Default for RetrySettings {
    fn default() -> Self {
        let policy = RetryPolicy::default();
        RetrySettings {
            max_retries: policy.max_retries,
            base_delay_ms: millis(policy.base_delay),
            factor: policy.factor,
            max_delay_ms: millis(policy.max_delay),
            jitter: policy.jitter,
        }
    }
}

impl RetrySettings {
    /// The policy these settings describe.
    pub fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_retries: self.max_retries,
            base_delay: Duration::from_millis(self.base_delay_ms),
            factor: self.factor,
            max_delay: Duration::from_millis(self.max_delay_ms),
            jitter: self.jitter,
        }
    }
}

/// `[idempotency]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdempotencySettings {
    /// How long a key's answer is replayed, from its first use. Records live in the store.
    pub ttl_secs: u64,
    /// How many keys each tenant keeps at most; its oldest answered ones go first.
    pub max_entries: usize,
}

impl Default for IdempotencySettings {
    fn default() -> Self {
        IdempotencySettings {
            ttl_secs: 24 * 60 * 60,
            max_entries: 10_000,
        }
    }
}

/// The key of a retry table that a policy error is about.
fn policy_error_key(error: &PolicyError) -> &'static str {
    match error {
        PolicyError::ZeroFactor => "factor",
        PolicyError::JitterOutOfRange(_) => "jitter",
        PolicyError::BaseAboveMax => "base_delay_ms",
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Configuration that could not be loaded or makes no sense; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed, or a value has the wrong type.
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    /// A value that is not acceptable: refused as it was read (a store URL that names no
    /// store, an allow-list entry that is no address range) or by the checks.
    #[error("configuration: `{key}`: {message}")]
    Invalid {
        /// The dotted key.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// A value that did not parse is named by its key the way the checks name theirs
/// (``configuration: `store.url`: ...``); other loading errors are kept as they are.
fn load_error(err: config::ConfigError) -> ConfigError {
    match err {
        config::ConfigError::At {
            error,
            origin: None,
            key: Some(key),
        } => match *error {
            config::ConfigError::Message(message) => invalid(key, message),
            error => ConfigError::Load(config::ConfigError::At {
                error: Box::new(error),
                origin: None,
                key: Some(key),
            }),
        },
        other => ConfigError::Load(other),
    }
}

impl Settings {
    /// Loads defaults, then `file` if given, then the `FLOCK__...` variables of `env` (pass
    /// `std::env::vars()`), and checks the result (see [`Settings::check`]).
    ///
    /// # Errors
    /// An unreadable file, an unknown key, a value of the wrong type or an unacceptable value,
    /// each named by its key.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<CheckedSettings, ConfigError> {
        Self::read(file, env)?.check()
    }

    /// Reads defaults, then `file` if given, then the `FLOCK__...` variables of `env`, into
    /// typed values without the checks that need more than one value, nor building the agents;
    /// [`Settings::check`] does both. For tests that adjust settings before they start a
    /// server.
    ///
    /// # Errors
    /// An unreadable file, an unknown key, or a value of the wrong type or form (a store URL
    /// that names no store, an allow-list entry that is not an address range), each named by
    /// its key.
    pub fn read(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let vars: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("FLOCK__"))
            .collect();
        let mut environment = Environment::with_prefix("FLOCK")
            .prefix_separator("__")
            .separator("__")
            .list_separator(",")
            .try_parsing(true)
            .source(Some(vars));
        for key in LIST_KEYS {
            environment = environment.with_list_parse_key(key);
        }
        let mut builder = Config::builder();
        if let Some(path) = file {
            builder = builder.add_source(File::from(path).format(FileFormat::Toml).required(true));
        }
        builder
            .add_source(environment)
            .build()
            .and_then(Config::try_deserialize)
            .map_err(load_error)
    }

    /// Checks every value, compiles the declared types and builds the configured agents, once:
    /// start-up takes them from the result. An LLM agent's API key is read here, from the
    /// variable its `llm.api_key_env` names.
    ///
    /// # Errors
    /// The first unacceptable value, named by its key (`types[i].schema` for a declared type,
    /// `agents[i].field` for an agent, `agents[i].llm.model` within its `llm` table).
    pub fn check(self) -> Result<CheckedSettings, ConfigError> {
        self.validate()?;
        let types = types::compile(&self.types)?;
        let agents = self.build_agents(&types)?;
        Ok(CheckedSettings {
            settings: self,
            types,
            agents,
        })
    }

    /// The file named by `--config`, else by `FLOCK_CONFIG`, else none.
    pub fn file_from(
        flag: Option<PathBuf>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Option<PathBuf> {
        flag.or_else(|| env(CONFIG_ENV).filter(|v| !v.is_empty()).map(PathBuf::from))
    }

    /// Checks values that parse but make no sense.
    ///
    /// # Errors
    /// The first unacceptable value, named by its key.
    fn validate(&self) -> Result<(), ConfigError> {
        if self.server.body_limit_bytes == 0 {
            return Err(invalid("server.body_limit_bytes", "must be at least 1"));
        }
        for (key, value) in [
            ("events.buffer", self.events.buffer),
            ("events.queue", self.events.queue),
            ("events.max_subscribers", self.events.max_subscribers),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if self.events.heartbeat_ms < 100 {
            return Err(invalid("events.heartbeat_ms", "must be at least 100"));
        }
        if self.limits.requests_per_sec == Some(0) {
            return Err(invalid(
                "limits.requests_per_sec",
                "must be at least 1 when given (leave it out for no limit)",
            ));
        }
        if self.limits.burst == Some(0) {
            return Err(invalid("limits.burst", "must be at least 1 when given"));
        }
        if self.limits.burst.is_some() && self.limits.requests_per_sec.is_none() {
            return Err(invalid(
                "limits.burst",
                "is only used with limits.requests_per_sec, which is not set",
            ));
        }
        if self.server.request_timeout_ms == 0 {
            return Err(invalid("server.request_timeout_ms", "must be at least 1"));
        }
        if self.server.max_connections == 0 {
            return Err(invalid("server.max_connections", "must be at least 1"));
        }
        if self.server.workers == Some(0) {
            return Err(invalid("server.workers", "must be at least 1 when given"));
        }
        self.log_filter_check()?;
        let w = &self.webhooks;
        if w.concurrency == 0 {
            return Err(invalid("webhooks.concurrency", "must be at least 1"));
        }
        if w.connect_timeout_ms == 0 {
            return Err(invalid("webhooks.connect_timeout_ms", "must be at least 1"));
        }
        if w.timeout_ms == 0 {
            return Err(invalid("webhooks.timeout_ms", "must be at least 1"));
        }
        if w.per_destination_concurrency == Some(0) {
            return Err(invalid(
                "webhooks.per_destination_concurrency",
                "must be at least 1 when given (unset: half of webhooks.concurrency)",
            ));
        }
        if w.breaker.failures == 0 {
            return Err(invalid("webhooks.breaker.failures", "must be at least 1"));
        }
        if w.breaker.max_open_ms < 1_000 {
            return Err(invalid(
                "webhooks.breaker.max_open_ms",
                "must be at least 1000 (the first cool-off is 1 s)",
            ));
        }
        if w.max_hold_secs == 0 {
            return Err(invalid("webhooks.max_hold_secs", "must be at least 1"));
        }
        if w.per_destination_rate
            .is_some_and(|rate| !(rate.is_finite() && rate > 0.0))
        {
            return Err(invalid(
                "webhooks.per_destination_rate",
                "must be a number of requests per second above 0 when given",
            ));
        }
        w.retry.policy().validate().map_err(|e| {
            invalid(
                format!("webhooks.retry.{}", policy_error_key(&e)),
                e.to_string(),
            )
        })?;
        if self.idempotency.max_entries == 0 {
            return Err(invalid("idempotency.max_entries", "must be at least 1"));
        }
        if self.idempotency.ttl_secs == 0 {
            return Err(invalid("idempotency.ttl_secs", "must be at least 1"));
        }
        if w.lease_ms <= w.timeout_ms {
            return Err(invalid(
                "webhooks.lease_ms",
                format!(
                    "must exceed webhooks.timeout_ms ({}), or attempts still running would be claimed again",
                    w.timeout_ms
                ),
            ));
        }
        if self.auth.revocation_poll_ms == 0 {
            return Err(invalid("auth.revocation_poll_ms", "must be at least 1"));
        }
        if self.auth.last_used_flush_ms == 0 {
            return Err(invalid("auth.last_used_flush_ms", "must be at least 1"));
        }
        if w.poll_interval_ms == 0 {
            return Err(invalid("webhooks.poll_interval_ms", "must be at least 1"));
        }
        if w.max_pending == 0 {
            return Err(invalid("webhooks.max_pending", "must be at least 1"));
        }
        if w.max_pending_per_tenant == 0 {
            return Err(invalid(
                "webhooks.max_pending_per_tenant",
                "must be at least 1",
            ));
        }
        if w.secret_grace_secs > MAX_SECRET_GRACE_SECS {
            return Err(invalid(
                "webhooks.secret_grace_secs",
                format!(
                    "must be at most {MAX_SECRET_GRACE_SECS} (30 days): a rotated secret, \
                     perhaps a leaked one, signs every delivery until its grace period ends"
                ),
            ));
        }
        if self.store.retention_secs == 0 {
            return Err(invalid("store.retention_secs", "must be at least 1"));
        }
        if self.store.prune_interval_ms == 0 {
            return Err(invalid("store.prune_interval_ms", "must be at least 1"));
        }
        if let Some(keep) = self.store.artifact_retention_secs
            && keep < self.idempotency.ttl_secs
        {
            return Err(invalid(
                "store.artifact_retention_secs",
                format!(
                    "must be at least idempotency.ttl_secs ({}), or a replayed answer could \
                     name artifacts already deleted",
                    self.idempotency.ttl_secs
                ),
            ));
        }
        self.orchestrator.validate().map_err(|e| {
            invalid(
                format!("orchestrator.{}", e.field_name().unwrap_or_default()),
                e.message(),
            )
        })?;
        Ok(())
    }

    /// The configured agents, built.
    ///
    /// # Errors
    /// An invalid agent, named as `agents[i].field`, or two agents with one name.
    fn build_agents(&self, types: &Arc<TypeSchemas>) -> Result<Vec<Arc<dyn Agent>>, ConfigError> {
        let mut names = std::collections::HashSet::new();
        self.agents
            .iter()
            .enumerate()
            .map(|(i, table)| {
                let agent = table.build(types).map_err(|e| {
                    let key = match e.field_name() {
                        Some(f) if f.starts_with('[') => format!("agents[{i}]{f}"),
                        Some(f) => format!("agents[{i}].{f}"),
                        None => format!("agents[{i}]"),
                    };
                    invalid(key, e.message())
                })?;
                if !names.insert(agent.name().to_owned()) {
                    return Err(invalid(
                        format!("agents[{i}].name"),
                        format!("another agent is already called `{}`", agent.name()),
                    ));
                }
                Ok(agent)
            })
            .collect()
    }

    fn log_filter_check(&self) -> Result<(), ConfigError> {
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map(drop)
            .map_err(|e| invalid("log.level", format!("not a valid filter: {e}")))
    }

    /// How long a request may take to arrive (`server.request_timeout_ms`).
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.server.request_timeout_ms)
    }

    /// The grace period of a stop.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.server.shutdown_grace_ms)
    }
}

/// Settings that passed every check, with the agents they configure built: what
/// [`Application::build`](crate::startup::Application::build) and
/// [`build_state`](crate::startup::build_state) take. Reads as the [`Settings`] it holds; a
/// clone shares the built agents.
#[derive(Clone)]
pub struct CheckedSettings {
    settings: Settings,
    types: Arc<TypeSchemas>,
    agents: Vec<Arc<dyn Agent>>,
}

impl CheckedSettings {
    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The declared types, compiled (in `[[types]]` order).
    pub fn types(&self) -> &Arc<TypeSchemas> {
        &self.types
    }

    /// The configured agents, built (in `[[agents]]` order).
    pub fn agents(&self) -> &[Arc<dyn Agent>] {
        &self.agents
    }
}

impl Deref for CheckedSettings {
    type Target = Settings;

    fn deref(&self) -> &Settings {
        &self.settings
    }
}

impl fmt::Debug for CheckedSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckedSettings")
            .field("settings", &self.settings)
            .field(
                "types",
                &self
                    .types
                    .names()
                    .map(flock_models::TypeName::as_str)
                    .collect::<Vec<_>>(),
            )
            .field(
                "agents",
                &self.agents.iter().map(|a| a.name()).collect::<Vec<_>>(),
            )
            .finish()
    }
}
