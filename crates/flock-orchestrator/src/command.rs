//! Command agents: a program spawned for each run, JSON on its stdin and stdout, in a process
//! group of its own so that a timeout kills it and everything it started.

use std::io;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flock_models::{Artifact, ArtifactDraft, TypeName};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::agent::{Agent, AgentContext, AgentError, AgentKind, Subscription};
use crate::exchange::{MAX_ANSWER_BYTES, parse_answer, request_body};
use crate::spec::{CommandOptions, Common};

/// A program run once per agent run. See [`AgentSpec`](crate::AgentSpec).
pub(crate) struct CommandAgent {
    common: Common,
    /// The program and its arguments (validated: at least the program).
    command: Vec<String>,
    options: CommandOptions,
}

impl CommandAgent {
    pub(crate) fn new(common: Common, command: Vec<String>, options: CommandOptions) -> Self {
        CommandAgent {
            common,
            command,
            options,
        }
    }
}

#[async_trait]
impl Agent for CommandAgent {
    fn name(&self) -> &str {
        &self.common.name
    }

    fn subscriptions(&self) -> &[Subscription] {
        &self.common.subscriptions
    }

    fn publishes(&self) -> &[TypeName] {
        &self.common.publishes
    }

    fn timeout(&self) -> Option<Duration> {
        self.common.timeout
    }

    fn kind(&self) -> AgentKind {
        AgentKind::Command
    }

    async fn run(
        &self,
        _ctx: AgentContext,
        inputs: Vec<Arc<Artifact>>,
    ) -> Result<Vec<ArtifactDraft>, AgentError> {
        let body = request_body(&self.common.name, &inputs)?;
        let stdout = run_program(&self.command, &self.options, &body).await?;
        parse_answer(&stdout)
    }
}

/// Runs `command` with `input` on its stdin, with only the environment `options` pass through;
/// returns its stdout if it exits successfully.
///
/// The program leads a new process group. If this future is dropped before the program was
/// reaped (the orchestrator's timeout, shutdown) the whole group is killed with `SIGKILL` and
/// the program reaped in the background.
async fn run_program(
    command: &[String],
    options: &CommandOptions,
    input: &[u8],
) -> Result<Vec<u8>, AgentError> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| AgentError::Failed("the command is empty".to_owned()))?;
    let passed = options
        .env
        .iter()
        .filter_map(|name| std::env::var_os(name).map(|value| (name, value)));
    let mut child = Command::new(program)
        .args(args)
        .env_clear()
        .envs(passed)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| AgentError::Process {
            status: format!("could not start `{program}`: {e}"),
            stderr: String::new(),
        })?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let mut group = ProcessGroup::new(child);

    let write = async {
        if let Some(mut stdin) = stdin {
            match stdin.write_all(input).await {
                // A program may well not read its input.
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
                Err(e) => {
                    return Err(AgentError::Process {
                        status: format!("could not write its input: {e}"),
                        stderr: String::new(),
                    });
                }
                Ok(()) => {}
            }
            // Dropping stdin closes it: the program sees the end of its input.
        }
        Ok(())
    };
    let read_out = async {
        match stdout {
            Some(stdout) => read_bounded(stdout, MAX_ANSWER_BYTES).await,
            None => Ok(Vec::new()),
        }
    };
    let read_err = async {
        match stderr {
            Some(stderr) => Ok(read_tail(stderr, options.stderr_bytes).await),
            None => Ok(String::new()),
        }
    };
    // On the first error the other futures are dropped and so is `group`, which kills the
    // program and its children.
    let ((), stdout, stderr) = tokio::try_join!(write, read_out, read_err)?;
    if !stderr.is_empty() {
        tracing::debug!(stderr, "agent program wrote to stderr");
    }
    // What a failed run's error may show: clients read it as a `WorkflowError`.
    let stderr = if options.expose_stderr {
        stderr
    } else {
        "(not shown: expose_stderr = false)".to_owned()
    };
    let status = group.wait().await.map_err(|e| AgentError::Process {
        status: format!("could not wait for it: {e}"),
        stderr: stderr.clone(),
    })?;
    if !status.success() {
        return Err(AgentError::Process {
            status: describe(status),
            stderr,
        });
    }
    Ok(stdout)
}

/// How a program ended, in words: `exit status: 3`, `signal: 9 (SIGKILL)`.
fn describe(status: ExitStatus) -> String {
    status.to_string()
}

/// Reads everything, failing once more than `limit` bytes came.
async fn read_bounded(reader: impl AsyncRead + Unpin, limit: usize) -> Result<Vec<u8>, AgentError> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(cap)
        .read_to_end(&mut out)
        .await
        .map_err(|e| AgentError::InvalidOutput(format!("could not read its stdout: {e}")))?;
    if out.len() > limit {
        return Err(AgentError::InvalidOutput(format!(
            "stdout exceeded {limit} bytes; the program was killed"
        )));
    }
    Ok(out)
}

/// Reads everything, keeping only the last `keep` bytes, as text.
async fn read_tail(mut reader: impl AsyncRead + Unpin, keep: usize) -> String {
    let mut tail: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 8 * 1024];
    let mut cut = false;
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend_from_slice(&chunk[..n]);
                if tail.len() > 2 * keep {
                    tail.drain(..tail.len() - keep);
                    cut = true;
                }
            }
        }
    }
    if tail.len() > keep {
        tail.drain(..tail.len() - keep);
        cut = true;
    }
    let text = String::from_utf8_lossy(&tail);
    let text = text.trim_end();
    if cut {
        format!("...{text}")
    } else {
        text.to_owned()
    }
}

/// A spawned program leading its own process group. Until [`ProcessGroup::wait`] has reaped
/// the program, dropping this kills the whole group.
///
/// The group is only ever signalled while its leader is not yet reaped: the leader's pid, the
/// group's id, cannot be reused by another process meanwhile.
struct ProcessGroup {
    child: Option<Child>,
    pgid: Option<Pid>,
}

impl ProcessGroup {
    fn new(child: Child) -> Self {
        let pgid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw);
        ProcessGroup {
            child: Some(child),
            pgid,
        }
    }

    /// Waits for the program to exit and reaps it; the group is not signalled afterwards.
    async fn wait(&mut self) -> io::Result<ExitStatus> {
        let Some(child) = self.child.as_mut() else {
            return Err(io::Error::other("the program was already reaped"));
        };
        let status = child.wait().await?;
        self.child = None;
        Ok(status)
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pgid) = self.pgid {
            match killpg(pgid, Signal::SIGKILL) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(error) => tracing::warn!(%error, "could not kill an agent's process group"),
            }
        }
        // Reap the leader; without a runtime, tokio's own orphan reaping takes over.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = child.wait().await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_tail_keeps_the_end() {
        let data: Vec<u8> = (0..20_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let tail = read_tail(&data[..], 100).await;
        assert!(tail.starts_with("..."));
        assert_eq!(tail.len(), 103);
        assert!(data.ends_with(&tail.as_bytes()[3..]));
        assert_eq!(read_tail(&b"short\n"[..], 100).await, "short");
    }

    #[tokio::test]
    async fn bounded_reads_refuse_too_much() {
        assert_eq!(read_bounded(&b"12345"[..], 5).await.unwrap(), b"12345");
        assert!(matches!(
            read_bounded(&b"123456"[..], 5).await,
            Err(AgentError::InvalidOutput(m)) if m.contains("exceeded 5 bytes")
        ));
    }
}
