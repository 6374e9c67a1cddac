//! Command agents with real scripts: output, bad JSON, non-zero exit, too much output, a
//! missing program, and timeouts and shutdown that leave no process behind.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use flock_orchestrator::{
    Agent, AgentSpec, ErrorKind, Orchestrator, RecordedError, WORKFLOW_ERROR_TYPE, WaitOutcome,
    WorkflowState,
};
use serde_json::json;
use uuid::Uuid;

use crate::support::{LONG, TempDir, artifacts, draft, types};

fn command_agent(name: &str, script: &str, timeout_ms: Option<u64>) -> Arc<dyn Agent> {
    AgentSpec {
        name: name.to_owned(),
        consumes: vec!["Idea".to_owned()],
        publishes: vec!["Shout".to_owned()],
        command: Some(vec!["sh".to_owned(), script.to_owned()]),
        url: None,
        timeout_ms,
        ..AgentSpec::default()
    }
    .build()
    .unwrap()
}

/// Runs one workflow with `agent` and returns its single recorded error, if any.
async fn run_one(agent: Arc<dyn Agent>, text: &str) -> (Orchestrator, Uuid, Option<RecordedError>) {
    let orchestrator = Orchestrator::builder().agent(agent).build().await.unwrap();
    let correlation = Uuid::now_v7();
    orchestrator
        .publish(correlation, draft("Idea", json!({"text": text})))
        .await
        .unwrap();
    assert_eq!(
        orchestrator.wait_idle(correlation, LONG).await,
        WaitOutcome::Idle
    );
    let status = orchestrator.status(correlation).await.unwrap().unwrap();
    assert!(status.errors.len() <= 1, "{:?}", status.errors);
    let error = status.errors.into_iter().next();
    (orchestrator, correlation, error)
}

const SHOUT: &str = r#"
input=$(cat)
text=$(printf '%s' "$input" | sed -n 's/.*"text":"\([^"]*\)".*/\1/p' | tr 'a-z' 'A-Z')
agent=$(printf '%s' "$input" | sed -n 's/^{"agent":"\([^"]*\)".*/\1/p')
printf '{"artifacts":[{"type":"Shout","payload":{"text":"%s","agent":"%s"},"tags":["loud","b"]}]}\n' "$text" "$agent"
echo "a note on stderr" >&2
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_reads_its_input_and_its_output_is_published() {
    let dir = TempDir::new();
    let script = dir.script("shout.sh", SHOUT);
    let (orchestrator, correlation, error) =
        run_one(command_agent("shouter", &script, None), "hello").await;
    assert_eq!(error, None);
    let all = artifacts(&orchestrator, correlation).await;
    assert_eq!(types(&all), ["Idea", "Shout"]);
    let shout = &all[1];
    assert_eq!(shout.payload["text"], "HELLO");
    assert_eq!(shout.payload["agent"], "shouter");
    assert_eq!(shout.produced_by, "shouter");
    assert_eq!(shout.tags.iter().collect::<Vec<_>>(), ["b", "loud"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_json_is_an_invalid_output_error() {
    let dir = TempDir::new();
    let script = dir.script("bad.sh", "cat > /dev/null\necho '{\"artifacts\": [oops'\n");
    let (orchestrator, correlation, error) =
        run_one(command_agent("bad", &script, None), "x").await;
    let error = error.unwrap();
    assert_eq!(error.kind, ErrorKind::InvalidOutput);
    assert!(
        error.message.contains("not valid JSON"),
        "{}",
        error.message
    );
    let all = artifacts(&orchestrator, correlation).await;
    assert_eq!(types(&all), ["Idea", WORKFLOW_ERROR_TYPE]);
    assert_eq!(all[1].payload["error"], "invalid_output");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_artifact_in_the_answer_is_named() {
    let dir = TempDir::new();
    let script = dir.script(
        "wrong.sh",
        "echo '{\"artifacts\": [{\"type\": \"Shout\", \"payload\": {}}, {\"type\": \"bad type\", \"payload\": {}}]}'\n",
    );
    let (_, _, error) = run_one(command_agent("wrong", &script, None), "x").await;
    let error = error.unwrap();
    assert_eq!(error.kind, ErrorKind::InvalidOutput);
    assert!(
        error.message.contains("artifacts[1].type"),
        "{}",
        error.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_zero_exit_keeps_the_end_of_stderr() {
    let dir = TempDir::new();
    let script = dir.script(
        "fail.sh",
        "i=0\nwhile [ $i -lt 2000 ]; do echo \"noise line $i\" >&2; i=$((i+1)); done\n\
         echo 'the real reason' >&2\nexit 3\n",
    );
    let (_, _, error) = run_one(command_agent("failing", &script, None), "x").await;
    let error = error.unwrap();
    assert_eq!(error.kind, ErrorKind::Process);
    assert!(
        error.message.contains("exit status: 3"),
        "{}",
        error.message
    );
    assert!(
        error.message.contains("the real reason"),
        "{}",
        error.message
    );
    assert!(
        !error.message.contains("noise line 0\n"),
        "only the tail is kept"
    );
    assert!(
        error.message.len() < 5 * 1024,
        "bounded: {} bytes",
        error.message.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_much_output_is_refused() {
    let dir = TempDir::new();
    let script = dir.script("flood.sh", "head -c 17000000 /dev/zero\n");
    let (_, _, error) = run_one(command_agent("flood", &script, None), "x").await;
    let error = error.unwrap();
    assert_eq!(error.kind, ErrorKind::InvalidOutput);
    assert!(
        error.message.contains("stdout exceeded"),
        "{}",
        error.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_program_is_a_process_error() {
    let agent = AgentSpec {
        name: "ghost".to_owned(),
        consumes: vec!["Idea".to_owned()],
        publishes: vec![],
        command: Some(vec!["/nonexistent/flock-agent".to_owned()]),
        url: None,
        timeout_ms: None,
        ..AgentSpec::default()
    }
    .build()
    .unwrap();
    let (_, _, error) = run_one(agent, "x").await;
    let error = error.unwrap();
    assert_eq!(error.kind, ErrorKind::Process);
    assert!(
        error.message.contains("could not start"),
        "{}",
        error.message
    );
}

/// A script that starts a child, writes both pids (each file appears complete), then waits
/// forever.
const SPAWNS_AND_HANGS: &str = r#"
sleep 1000 &
echo $! > "$1/child.tmp" && mv "$1/child.tmp" "$1/child.pid"
echo $$ > "$1/leader.tmp" && mv "$1/leader.tmp" "$1/leader.pid"
wait
"#;

fn hanging_agent(dir: &TempDir, name: &str, timeout_ms: u64) -> Arc<dyn Agent> {
    let script = dir.script("hang.sh", SPAWNS_AND_HANGS);
    AgentSpec {
        name: name.to_owned(),
        consumes: vec!["Idea".to_owned()],
        publishes: vec![],
        command: Some(vec![
            "sh".to_owned(),
            script,
            dir.path().to_str().unwrap().to_owned(),
        ]),
        url: None,
        timeout_ms: Some(timeout_ms),
        ..AgentSpec::default()
    }
    .build()
    .unwrap()
}

fn read_pid(dir: &Path, file: &str) -> u32 {
    let text = std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{file} was not written: {e}"));
    text.trim().parse().unwrap()
}

/// Whether process `pid` still runs: it exists and is not a zombie waiting to be reaped.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        // The state follows the parenthesised command name.
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

/// Waits until none of `pids` runs; fails after a generous bound.
async fn assert_all_gone(pids: &[u32]) {
    let deadline = tokio::time::Instant::now() + LONG;
    while pids.iter().any(|&pid| alive(pid)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "processes {pids:?} survived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_kills_the_script_and_its_child() {
    let dir = TempDir::new();
    // Long enough for `sh` to start and write the pids on a busy machine.
    let (_, _, error) = run_one(hanging_agent(&dir, "hangs", 2_000), "x").await;
    let error = error.unwrap();
    assert_eq!(error.kind, ErrorKind::Timeout);
    let pids = [
        read_pid(dir.path(), "leader.pid"),
        read_pid(dir.path(), "child.pid"),
    ];
    assert_all_gone(&pids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_past_its_deadline_kills_the_script_and_its_child() {
    let dir = TempDir::new();
    let orchestrator = Orchestrator::builder()
        .agent(hanging_agent(&dir, "hangs", 3_600_000))
        .build()
        .await
        .unwrap();
    let correlation = Uuid::now_v7();
    orchestrator
        .publish(correlation, draft("Idea", json!({})))
        .await
        .unwrap();
    // Wait until the script has started its child.
    let deadline = tokio::time::Instant::now() + LONG;
    while !dir.path().join("leader.pid").exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the script never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pids = [
        read_pid(dir.path(), "leader.pid"),
        read_pid(dir.path(), "child.pid"),
    ];

    let report = orchestrator.shutdown(Duration::from_millis(50)).await;
    assert!(!report.finished_in_time);
    assert_eq!(report.runs_still_running, 1);
    assert_all_gone(&pids).await;
    assert_eq!(
        orchestrator.wait_idle(correlation, LONG).await,
        WaitOutcome::Idle
    );
    let status = orchestrator.status(correlation).await.unwrap().unwrap();
    assert_eq!(status.state, WorkflowState::Failed);
    assert_eq!(status.errors[0].kind, ErrorKind::Cancelled);
}
