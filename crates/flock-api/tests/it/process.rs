//! The `flock-api` binary as a process: a config file with an environment override, SIGTERM
//! with a delivery in flight, configuration errors, and the `webhooks listen` receiver.

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{LONG, Receiver, Script, TempDir, TestApp, settings};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_flock-api");

/// A child process whose output lines arrive on channels; killed on drop if still running.
pub(crate) struct Process {
    pub(crate) child: Child,
    pub(crate) stdout: mpsc::Receiver<String>,
    pub(crate) stderr: mpsc::Receiver<String>,
}

impl Process {
    pub(crate) fn spawn(command: &mut Command) -> Process {
        let mut child = command
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        Process {
            child,
            stdout,
            stderr,
        }
    }

    /// Waits for a line containing `needle` on `stream`; returns it.
    pub(crate) fn wait_line(
        stream: &mpsc::Receiver<String>,
        needle: &str,
        seen: &mut Vec<String>,
    ) -> String {
        let deadline = Instant::now() + LONG;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match stream.recv_timeout(left) {
                Ok(line) => {
                    seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with {needle:?}; saw:\n{}", seen.join("\n")),
            }
        }
    }

    pub(crate) fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + LONG;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the process did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn terminate(&self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    }

    pub(crate) fn rest(stream: &mpsc::Receiver<String>) -> Vec<String> {
        stream.try_iter().collect()
    }

    /// `flock-api serve --config CONFIG` as a process, once it listens: the process, its
    /// address (`127.0.0.1:PORT`, from a text or a JSON log line) and the lines it wrote so far.
    pub(crate) fn serve(config: &str) -> (Process, String, Vec<String>) {
        let server = Process::spawn(Command::new(BIN).args(["serve", "--config", config]));
        let mut log = Vec::new();
        let line = Process::wait_line(&server.stderr, "listening on http://", &mut log);
        let address = address_in(&line)
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
            .collect();
        (server, address, log)
    }

    /// Sends SIGTERM, waits for the exit (off the runtime's threads) and appends the rest of
    /// what the process wrote to `log`; answers its exit status.
    pub(crate) async fn stop(self, log: &mut Vec<String>) -> std::process::ExitStatus {
        self.terminate();
        let (status, server) = tokio::task::spawn_blocking(move || {
            let mut server = self;
            let status = server.wait_exit();
            (status, server)
        })
        .await
        .unwrap();
        log.extend(Process::rest(&server.stdout));
        log.extend(Process::rest(&server.stderr));
        status
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn lines(reader: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// `listening on http://127.0.0.1:PORT` -> `127.0.0.1:PORT`.
pub(crate) fn address_in(line: &str) -> String {
    let start = line.find("http://").unwrap() + "http://".len();
    line[start..]
        .split(|c: char| c == '/' || c.is_whitespace())
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_delivery_finish_then_exits_zero() {
    let dir = TempDir::new();
    let config = dir.write(
        "flock.toml",
        r#"
[server]
port = 8344
shutdown_grace_ms = 15000

[webhooks]
allowed_cidrs = ["127.0.0.1/32"]
"#,
    );
    let mut server = Process::spawn(
        Command::new(BIN)
            .args(["serve", "--config", &config])
            .env("FLOCK__SERVER__PORT", "0")
            .env("FLOCK__STORE__URL", "memory://"),
    );
    let mut seen = Vec::new();
    let line = Process::wait_line(&server.stderr, "listening on http://", &mut seen);
    let address = address_in(&line);
    assert!(
        !address.ends_with(":8344"),
        "the environment overrides the file's port: {address}"
    );

    // Every delivery takes 1.5 s at the receiver.
    let receiver = Receiver::start(Script {
        delay: Duration::from_millis(1_500),
        ..Script::default()
    });
    let client = reqwest::Client::new();
    let accepted = client
        .post(format!("http://{address}/api/v1/artifacts"))
        .json(&json!({"type": "Idea", "payload": {}, "webhook": {"url": receiver.url, "secret": "k"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);
    receiver.wait_for(1).await;
    assert_eq!(receiver.answered(), 0, "the delivery is in flight");
    server.terminate();
    let status = tokio::task::spawn_blocking(move || {
        let status = server.wait_exit();
        (status, server)
    })
    .await
    .unwrap();
    let (status, server) = status;
    assert_eq!(
        receiver.answered(),
        1,
        "the in-flight delivery finished before the exit"
    );
    let mut log = seen;
    log.extend(Process::rest(&server.stderr));
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        log.join("\n")
    );
    assert!(
        log.iter().any(|l| l.contains("SIGTERM received")),
        "{}",
        log.join("\n")
    );
    assert!(
        log.iter().any(|l| l.contains("stopped cleanly")),
        "{}",
        log.join("\n")
    );
    receiver.stop().await;
}

#[test]
fn configuration_errors_name_the_key_and_exit_non_zero() {
    let dir = TempDir::new();
    let bad_agent = dir.write(
        "agents.toml",
        r#"
[[agents]]
name = "shouter"
consumes = ["Idea"]
publishes = ["Shout"]
command = []
"#,
    );
    // (arguments, environment, words the error must contain)
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            vec!["serve"],
            vec![("FLOCK__SERVER__PORT", "eighty")],
            "server.port",
        ),
        (
            vec!["serve"],
            vec![("FLOCK__WEBHOOKS__ALLOWED_CIDRS", "banana")],
            "webhooks.allowed_cidrs[0]",
        ),
        (
            vec!["serve", "--config", &bad_agent],
            vec![],
            "agents[0].command",
        ),
        (
            vec!["serve", "--config", "/nonexistent/flock.toml"],
            vec![],
            "/nonexistent/flock.toml",
        ),
        (
            vec!["serve"],
            vec![("FLOCK_CONFIG", "/nonexistent/env.toml")],
            "/nonexistent/env.toml",
        ),
    ];
    for (args, env, words) in cases {
        let output = Command::new(BIN)
            .args(&args)
            .env("FLOCK__STORE__URL", "memory://")
            .envs(env.clone())
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} {env:?} should fail");
        assert!(stderr.contains(words), "{args:?} {env:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_verifies_prints_and_fails_on_purpose() {
    let mut listener = Process::spawn(Command::new(BIN).args([
        "webhooks",
        "listen",
        "--port",
        "0",
        "--secret",
        "s3cret",
        "--fail-first",
        "1",
    ]));
    let mut seen = Vec::new();
    let first = Process::wait_line(&listener.stdout, "listening on", &mut seen);
    assert!(first.contains("verifying"), "{first}");
    let url = format!("http://{}/hook", address_in(&first));

    let app = TestApp::start(settings()).await;
    let answer: serde_json::Value = app
        .post(
            "/api/v1/artifacts",
            &json!({"type": "Idea", "payload": {}, "webhook": {"url": url, "secret": "s3cret"}}),
        )
        .await
        .json()
        .await
        .unwrap();
    let correlation = answer["correlation_id"].as_str().unwrap();
    let failed = Process::wait_line(&listener.stdout, "-> 500", &mut seen);
    let passed = Process::wait_line(&listener.stdout, "-> 200", &mut seen);
    for line in [&failed, &passed] {
        assert!(
            line.contains("seq=1") && line.contains("type=Idea"),
            "{line}"
        );
        assert!(line.contains("signatures=valid"), "{line}");
    }
    let deliveries = app
        .deliveries_until(correlation, |d| {
            d.len() == 1 && d[0]["state"] == "delivered"
        })
        .await;
    assert!(
        passed.contains(deliveries[0]["id"].as_str().unwrap()),
        "the line names the delivery id"
    );
    app.stop().await;
    let _ = listener.child.kill();
    let _ = listener.child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_says_loudly_when_a_signature_fails() {
    let listener = Process::spawn(
        Command::new(BIN).args(["webhooks", "listen", "--port", "0", "--secret", "other"]),
    );
    let mut seen = Vec::new();
    let first = Process::wait_line(&listener.stdout, "listening on", &mut seen);
    let url = format!("http://{}/hook", address_in(&first));
    let app = TestApp::start(settings()).await;
    app.post(
        "/api/v1/artifacts",
        &json!({"type": "Idea", "payload": {}, "webhook_url": url, "webhook_secret": "s3cret"}),
    )
    .await;
    let line = Process::wait_line(&listener.stdout, "signatures=INVALID", &mut seen);
    assert!(line.contains("-> 200"), "{line}");
    let mut errors = Vec::new();
    let alarm = Process::wait_line(&listener.stderr, "SIGNATURE CHECK FAILED", &mut errors);
    assert!(alarm.contains("X-Flock-Signature"), "{alarm}");
    app.stop().await;
}

#[test]
fn listen_refuses_bad_options() {
    for (args, words) in [
        (
            vec!["webhooks", "listen", "--port", "0", "--secret", ""],
            "omit it",
        ),
        (
            vec!["webhooks", "listen", "--port", "0", "--status", "99"],
            "99",
        ),
        (vec!["webhooks", "listen"], "--port"),
    ] {
        let output = Command::new(BIN).args(&args).output().unwrap();
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(words), "{args:?}: {stderr}");
    }
}

/// Prints the names of the environment it was started with (`/proc/self/environ`: exactly what
/// the orchestrator passed, whatever the interpreter adds later) as an `Env` artifact.
const PRINTS_ITS_ENVIRONMENT: &str = r#"
import json, sys
json.load(sys.stdin)
names = sorted(e.split(b"=", 1)[0].decode() for e in open("/proc/self/environ", "rb").read().split(b"\0") if e)
print(json.dumps({"artifacts": [{"type": "Env", "payload": {"names": names}}]}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_agents_get_only_the_environment_and_stderr_they_are_allowed() {
    let dir = TempDir::new();
    let env_script = dir.write("env.py", PRINTS_ITS_ENVIRONMENT);
    // The interpreter itself, not a wrapper script on PATH that adds variables of its own.
    let python = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .unwrap();
    let python = String::from_utf8(python.stdout).unwrap().trim().to_owned();
    let config = dir.write(
        "flock.toml",
        &format!(
            r#"
[server]
port = 0

[[agents]]
name = "env-printer"
consumes = ["Idea"]
publishes = ["Env"]
command = ["{python}", "{env_script}"]
env = ["AGENT_TOKEN", "NOT_SET_ANYWHERE"]

[[agents]]
name = "quiet-failer"
consumes = ["Idea"]
command = ["sh", "-c", "echo the database password is hunter2 >&2; exit 3"]
expose_stderr = false

[[agents]]
name = "loud-failer"
consumes = ["Idea"]
command = ["sh", "-c", "printf 'BEGINNING%.0s' 1 2 3 4 5 6 7 8 >&2; echo ' the end is here' >&2; exit 4"]
stderr_bytes = 16
"#
        ),
    );
    let mut server = Process::spawn(
        Command::new(BIN)
            .args(["serve", "--config", &config])
            .env("FLOCK__STORE__URL", "memory://")
            .env("AGENT_TOKEN", "agent-token-value")
            .env("SERVER_ONLY_SECRET", "hunter2")
            .env("LANG", "C.UTF-8"),
    );
    let mut seen = Vec::new();
    let line = Process::wait_line(&server.stderr, "listening on http://", &mut seen);
    let address = address_in(&line);
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{address}/api/v1/artifacts/sync"))
        .json(&json!({"type": "Idea", "payload": {}, "timeout": 30}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let artifacts = answer["artifacts"].as_array().expect("artifacts");
    let env = artifacts
        .iter()
        .find(|a| a["type"] == "Env")
        .unwrap_or_else(|| panic!("no Env artifact: {answer:#}"));
    let names: BTreeSet<&str> = env["payload"]["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    // The server's own variables (its store URL, anything secret) stay out; the base names and
    // the listed one come through; a listed name the server does not have is left out.
    let allowed = BTreeSet::from(["PATH", "HOME", "LANG", "AGENT_TOKEN"]);
    assert!(names.is_subset(&allowed), "{names:?}");
    for expected in ["PATH", "LANG", "AGENT_TOKEN"] {
        assert!(names.contains(expected), "{expected} missing: {names:?}");
    }
    let error_of = |agent: &str| -> String {
        artifacts
            .iter()
            .find(|a| a["type"] == "WorkflowError" && a["payload"]["agent"] == agent)
            .unwrap_or_else(|| panic!("no WorkflowError of {agent}: {answer:#}"))["payload"]["message"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let quiet = error_of("quiet-failer");
    assert!(quiet.contains("exit status: 3"), "{quiet}");
    assert!(!quiet.contains("hunter2"), "{quiet}");
    assert!(quiet.contains("expose_stderr = false"), "{quiet}");
    let loud = error_of("loud-failer");
    assert!(loud.contains("exit status: 4"), "{loud}");
    assert!(loud.ends_with("...the end is here"), "{loud}");
    assert!(!loud.contains("BEGINNING"), "{loud}");
    server.terminate();
    let status = tokio::task::spawn_blocking(move || server.wait_exit())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}
