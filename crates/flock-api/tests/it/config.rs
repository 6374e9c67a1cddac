//! Configuration: defaults < file < environment, and errors that name the key.

use std::io::Write;
use std::sync::Arc;

use flock_api::config::{LogFormat, Settings};

pub(crate) fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn net(text: &str) -> ipnet::IpNet {
    text.parse().unwrap()
}

pub(crate) fn file(text: &str) -> tempfile_lite::TempFile {
    tempfile_lite::TempFile::with(text)
}

/// A throw-away file under the target directory, removed on drop.
pub(crate) mod tempfile_lite {
    use std::path::{Path, PathBuf};

    pub(crate) struct TempFile(PathBuf);

    impl TempFile {
        pub(crate) fn with(text: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("flock-config-{}", uuid::Uuid::now_v7()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("flock.toml");
            std::fs::write(&path, text).unwrap();
            TempFile(path)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

#[test]
fn defaults_without_file_or_env() {
    let s = Settings::load(None, env(&[("PATH", "/bin"), ("FLOCK_CONFIG", "x")])).unwrap();
    assert_eq!(s.server.port, 8344);
    assert_eq!(s.server.host.to_string(), "127.0.0.1");
    assert_eq!(s.server.body_limit_bytes, 1024 * 1024);
    assert_eq!(s.log.format, LogFormat::Pretty);
    assert!(s.webhooks.allowed_cidrs.is_empty());
    assert!(s.agents().is_empty());
    assert_eq!(
        s.webhooks.retry.policy(),
        flock_retry::RetryPolicy::default()
    );
    assert_eq!(s.idempotency.ttl_secs, 86_400);
    assert_eq!(s.store.url.to_string(), "sqlite://flock.db");
    assert_eq!(
        s.store.url,
        flock_store::StoreUrl::Sqlite("flock.db".into())
    );
    assert_eq!(s.store.retention_secs, 7 * 24 * 60 * 60);
    assert_eq!(s.store.prune_interval_ms, 60_000);
    assert_eq!(s.webhooks.lease_ms, 60_000);
    assert_eq!(s.webhooks.poll_interval_ms, 1_000);
    assert_eq!(s.webhooks.secret_grace_secs, 86_400);
    assert_eq!(
        (s.webhooks.concurrency, s.webhooks.per_destination_cap()),
        (128, 64)
    );
}

/// Unset, a destination's cap is half the slots whatever they are set to (a configuration
/// written for the old default of 64 slots keeps half of them free of a black hole); set, it
/// is what it says.
#[test]
fn the_per_destination_cap_follows_the_slots_unless_set() {
    let half = Settings::load(None, env(&[("FLOCK__WEBHOOKS__CONCURRENCY", "64")])).unwrap();
    assert_eq!(half.webhooks.per_destination_cap(), 32);
    assert_eq!(half.webhooks.isolation().per_destination_concurrency, 32);
    let one = Settings::load(None, env(&[("FLOCK__WEBHOOKS__CONCURRENCY", "1")])).unwrap();
    assert_eq!(one.webhooks.per_destination_cap(), 1);
    let set = Settings::load(
        None,
        env(&[
            ("FLOCK__WEBHOOKS__CONCURRENCY", "64"),
            ("FLOCK__WEBHOOKS__PER_DESTINATION_CONCURRENCY", "48"),
        ]),
    )
    .unwrap();
    assert_eq!(set.webhooks.per_destination_cap(), 48);
}

#[test]
fn the_store_url_never_shows_a_password() {
    let s = Settings::load(
        None,
        env(&[(
            "FLOCK__STORE__URL",
            "postgres://flock:hunter2@db.example/flock",
        )]),
    )
    .unwrap();
    let shown = format!("{s:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("flock:***@db.example"), "{shown}");
    assert!(matches!(s.store.url, flock_store::StoreUrl::Postgres(_)));
}

#[test]
fn file_then_environment_override() {
    let f = file(
        r#"
[server]
port = 9100
body_limit_bytes = 2048

[log]
format = "json"

[webhooks]
allowed_cidrs = ["10.0.0.0/8"]

[webhooks.retry]
base_delay_ms = 50
"#,
    );
    let s = Settings::load(Some(f.path()), env(&[])).unwrap();
    assert_eq!(s.server.port, 9100);
    assert_eq!(s.log.format, LogFormat::Json);
    assert_eq!(s.webhooks.retry.base_delay_ms, 50);

    let s = Settings::load(
        Some(f.path()),
        env(&[
            ("FLOCK__SERVER__PORT", "9000"),
            ("FLOCK__WEBHOOKS__ALLOWED_CIDRS", "127.0.0.1/32,::1/128"),
            ("FLOCK__WEBHOOKS__RETRY__MAX_RETRIES", "5"),
            ("FLOCK__LOG__LEVEL", "debug"),
        ]),
    )
    .unwrap();
    assert_eq!(s.server.port, 9000);
    assert_eq!(
        s.server.body_limit_bytes, 2048,
        "file values stay where env says nothing"
    );
    assert_eq!(
        s.webhooks.allowed_cidrs,
        [net("127.0.0.1/32"), net("::1/128")]
    );
    assert_eq!(s.webhooks.retry.max_retries, 5);
    assert_eq!(s.log.level, "debug");
}

#[test]
fn single_cidr_from_environment_is_a_list() {
    let s = Settings::load(
        None,
        env(&[("FLOCK__WEBHOOKS__ALLOWED_CIDRS", "127.0.0.1/32")]),
    )
    .unwrap();
    assert_eq!(s.webhooks.allowed_cidrs, [net("127.0.0.1/32")]);
    let s = Settings::load(
        None,
        env(&[("FLOCK__WEBHOOKS__ALLOWED_CIDRS", "127.0.0.1")]),
    )
    .unwrap();
    assert_eq!(s.webhooks.allowed_cidrs[0].to_string(), "127.0.0.1/32");
}

/// Environment, optional file text, and words the error must contain.
type Case<'a> = (Vec<(String, String)>, Option<&'a str>, &'a str);

#[test]
fn errors_name_the_bad_key() {
    let cases: Vec<Case<'_>> = vec![
        (env(&[("FLOCK__SERVER__PORT", "eighty")]), None, "port"),
        (env(&[("FLOCK__SERVER__PORT", "70000")]), None, "port"),
        (env(&[("FLOCK__SERVER__PROT", "1")]), None, "prot"),
        (env(&[("FLOCK__NOPE__X", "1")]), None, "nope"),
        (env(&[("FLOCK__LOG__FORMAT", "xml")]), None, "xml"),
        (
            env(&[("FLOCK__WEBHOOKS__ALLOWED_CIDRS", "127.0.0.1/32,banana")]),
            None,
            "webhooks.allowed_cidrs[1]",
        ),
        (
            env(&[("FLOCK__WEBHOOKS__DEFAULT_SECRET", "whsec_!!")]),
            None,
            "webhooks.default_secret",
        ),
        (
            env(&[("FLOCK__WEBHOOKS__CONCURRENCY", "0")]),
            None,
            "webhooks.concurrency",
        ),
        (
            env(&[("FLOCK__WEBHOOKS__PER_DESTINATION_CONCURRENCY", "0")]),
            None,
            "webhooks.per_destination_concurrency",
        ),
        (
            env(&[("FLOCK__WEBHOOKS__RETRY__FACTOR", "0")]),
            None,
            "webhooks.retry.factor",
        ),
        (
            env(&[("FLOCK__WEBHOOKS__RETRY__JITTER", "2")]),
            None,
            "webhooks.retry.jitter",
        ),
        (
            env(&[("FLOCK__SERVER__BODY_LIMIT_BYTES", "0")]),
            None,
            "server.body_limit_bytes",
        ),
        (env(&[("FLOCK__LOG__LEVEL", "info,[")]), None, "log.level"),
        (
            env(&[("FLOCK__STORE__URL", "mysql://db/flock")]),
            None,
            "store.url",
        ),
        (
            env(&[("FLOCK__STORE__URL", "sqlite://")]),
            None,
            "store.url",
        ),
        (
            env(&[("FLOCK__STORE__RETENTION_SECS", "0")]),
            None,
            "store.retention_secs",
        ),
        (
            env(&[("FLOCK__STORE__PRUNE_INTERVAL_MS", "0")]),
            None,
            "store.prune_interval_ms",
        ),
        (
            env(&[("FLOCK__WEBHOOKS__LEASE_MS", "10000")]),
            None,
            "webhooks.lease_ms",
        ),
        (
            env(&[("FLOCK__WEBHOOKS__POLL_INTERVAL_MS", "0")]),
            None,
            "webhooks.poll_interval_ms",
        ),
        (
            env(&[("FLOCK__WEBHOOKS__SECRET_GRACE_SECS", "2592001")]),
            None,
            "webhooks.secret_grace_secs",
        ),
        (
            env(&[("FLOCK__STORE__ARTIFACT_RETENTION_SECS", "60")]),
            None,
            "store.artifact_retention_secs",
        ),
        (env(&[]), Some("[server]\nport = \"x\"\n"), "port"),
        (env(&[]), Some("[server\n"), "flock.toml"),
        (
            env(&[]),
            Some("[webhooks]\ndefault_secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n"),
            "tenant's webhook secret",
        ),
    ];
    for (vars, text, words) in cases {
        let f = text.map(file);
        let err = Settings::load(f.as_ref().map(tempfile_lite::TempFile::path), vars.clone())
            .unwrap_err();
        let message = err.to_string();
        assert!(message.contains(words), "{vars:?} {text:?}: {message}");
    }
}

#[test]
fn missing_file_is_an_error_naming_it() {
    let err = Settings::load(
        Some(std::path::Path::new("/nonexistent/flock.toml")),
        env(&[]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/flock.toml"), "{err}");
    let _ = std::io::stdout().flush();
}

#[test]
fn config_file_from_flag_or_env() {
    let from_env = |_: &str| Some("from-env.toml".to_owned());
    assert_eq!(
        Settings::file_from(None, from_env).unwrap().to_str(),
        Some("from-env.toml")
    );
    assert_eq!(
        Settings::file_from(Some("flag.toml".into()), from_env)
            .unwrap()
            .to_str(),
        Some("flag.toml")
    );
    assert!(Settings::file_from(None, |_| None).is_none());
    assert!(Settings::file_from(None, |_| Some(String::new())).is_none());
}

const TWO_AGENTS: &str = r#"
[store]
url = "memory://"

[[agents]]
name = "shouter"
consumes = ["Idea"]
publishes = ["Shout"]
command = ["python3", "shout.py"]

[[agents]]
name = "echo"
consumes = ["Shout"]
url = "http://127.0.0.1:7000/echo"
"#;

#[tokio::test]
async fn the_check_builds_the_agents_once_and_start_up_takes_them() {
    let f = file(TWO_AGENTS);
    let checked = Settings::load(Some(f.path()), env(&[])).unwrap();
    let names: Vec<&str> = checked.agents().iter().map(|a| a.name()).collect();
    assert_eq!(names, ["shouter", "echo"]);
    assert!(format!("{checked:?}").contains(r#"agents: ["shouter", "echo"]"#));
    let before: Vec<usize> = checked.agents().iter().map(Arc::strong_count).collect();
    let (state, _dispatcher) = flock_api::startup::build_state(&checked).await.unwrap();
    // The orchestrator holds the very agents the check built: none was built again.
    for (agent, count) in checked.agents().iter().zip(before) {
        assert_eq!(Arc::strong_count(agent), count + 1, "{}", agent.name());
    }
    let listed: Vec<String> = state
        .orchestrator
        .agents()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(listed, ["shouter", "echo"]);
}

#[test]
fn agents_are_checked_with_the_other_settings() {
    let f = file(&TWO_AGENTS.replace("name = \"echo\"", "name = \"shouter\""));
    let err = Settings::load(Some(f.path()), env(&[])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "configuration: `agents[1].name`: another agent is already called `shouter`"
    );
    // Read without the checks, then checked: the same error.
    let read = Settings::read(Some(f.path()), env(&[])).unwrap();
    assert_eq!(read.agents.len(), 2);
    assert_eq!(read.check().unwrap_err().to_string(), err.to_string());
}
