//! The server under test: in this process (`flock_api::startup::Application` on 127.0.0.1:0),
//! or the built `flock-api` binary as a child process with its configuration file, killed by
//! its PID when dropped.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use flock_api::config::CheckedSettings;
use flock_api::startup::{Application, StopReport};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The server running in this process, on the current tokio runtime.
pub struct InProcessServer {
    address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<StopReport>>>,
}

impl InProcessServer {
    /// Builds the application from `settings` (use port 0) and serves it.
    ///
    /// # Errors
    /// Settings the application refuses, or no free port.
    pub async fn start(settings: CheckedSettings) -> anyhow::Result<InProcessServer> {
        let app = Application::build(settings).await?;
        let address = app.address();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        Ok(InProcessServer {
            address,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops it as SIGTERM does (no new requests, then agents and deliveries within the grace
    /// period) and reports what was left.
    ///
    /// # Errors
    /// The server failed.
    pub async fn stop(mut self) -> anyhow::Result<StopReport> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.context("the server task")?,
            None => anyhow::bail!("already stopped"),
        }
    }
}

impl Drop for InProcessServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The environment variable naming the `flock-api` binary to run, overriding the search.
pub const BINARY_ENV: &str = "FLOCK_API_BIN";

/// The built `flock-api` binary.
///
/// Cargo gives an integration test the path of its own package's binaries only
/// (`CARGO_BIN_EXE_<name>`), not of a dependency's, so the binary is found beside the running
/// executable: `target/<profile>/flock-api`, next to `target/<profile>/deps/` where test
/// binaries live, or next to `target/<profile>/flock-bench`. `cargo nextest run --workspace`,
/// `cargo test --workspace` and `cargo xtask ci` build it (flock-api's own tests need it);
/// after `cargo test -p flock-e2e` alone, run `cargo build -p flock-api` first. `FLOCK_API_BIN`
/// names another binary.
///
/// # Errors
/// No binary there, with the command that builds it.
pub fn flock_api_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(BINARY_ENV) {
        let path = PathBuf::from(path);
        anyhow::ensure!(
            path.is_file(),
            "{BINARY_ENV} names {}, which is not a file",
            path.display()
        );
        return Ok(path);
    }
    let exe = std::env::current_exe().context("the running executable's path")?;
    let name = format!("flock-api{}", std::env::consts::EXE_SUFFIX);
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(&name))
        .find(|candidate| candidate.is_file())
        .with_context(|| {
            format!(
                "no flock-api binary beside {}; build it with `cargo build -p flock-api` \
                 (add --release for a release test binary) or name one in {BINARY_ENV}",
                exe.display()
            )
        })
}

/// The `flock-api` binary, refused when a source file of the workspace's crates (under
/// `crates/*/src`, or a crate's README, which is its crate doc) is newer than it: a stale binary
/// would test old code.
///
/// # Errors
/// No binary, or a stale one, with the command that builds it.
pub fn fresh_flock_api_binary() -> anyhow::Result<PathBuf> {
    let binary = flock_api_binary()?;
    if std::env::var_os(BINARY_ENV).is_some() {
        return Ok(binary);
    }
    let built = std::fs::metadata(&binary)?.modified()?;
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates");
    if let Some((_, newer)) = newest_source(&crates).filter(|(at, _)| *at > built) {
        anyhow::bail!(
            "{} is older than {}; rebuild it with `cargo build -p flock-api`",
            binary.display(),
            newer.display()
        );
    }
    Ok(binary)
}

/// The most recently modified file among `crates/*/src/**` and `crates/*/README.md`.
fn newest_source(crates: &Path) -> Option<(SystemTime, PathBuf)> {
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    let mut consider = |path: PathBuf, meta: &std::fs::Metadata| {
        if let Ok(at) = meta.modified()
            && newest.as_ref().is_none_or(|(n, _)| at > *n)
        {
            newest = Some((at, path));
        }
    };
    let mut stack = Vec::new();
    for krate in std::fs::read_dir(crates).ok()?.flatten() {
        let readme = krate.path().join("README.md");
        if let Ok(meta) = std::fs::metadata(&readme) {
            consider(readme, &meta);
        }
        stack.push(krate.path().join("src"));
    }
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                consider(entry.path(), &meta);
            }
        }
    }
    newest
}

/// The `flock-api` binary running as a child process (`serve --config FILE`), its standard
/// output and error collected line by line. Dropping it kills the process (by its PID) if it
/// is still running.
pub struct ServerProcess {
    child: Child,
    address: SocketAddr,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl ServerProcess {
    /// Starts `binary serve --config config` with `RUST_LOG` removed and waits, at most
    /// `limit`, for the line that says where it listens.
    ///
    /// # Errors
    /// The process cannot start, exits, or does not say where it listens in time.
    pub fn spawn(binary: &Path, config: &Path, limit: Duration) -> anyhow::Result<ServerProcess> {
        Self::spawn_with_env(binary, config, &[], limit)
    }

    /// [`ServerProcess::spawn`] with `env` added to the process's environment (an LLM agent's
    /// API key, say).
    ///
    /// # Errors
    /// As [`ServerProcess::spawn`].
    pub fn spawn_with_env(
        binary: &Path,
        config: &Path,
        env: &[(&str, &str)],
        limit: Duration,
    ) -> anyhow::Result<ServerProcess> {
        let mut child = Command::new(binary)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .env_remove("RUST_LOG")
            .env_remove("FLOCK_CONFIG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let (tx, lines) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            forward(out, tx.clone());
        }
        if let Some(err) = child.stderr.take() {
            forward(err, tx);
        }
        let mut process = ServerProcess {
            child,
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            lines,
            log: Vec::new(),
        };
        let line = process.wait_for_line("listening on http://", limit)?;
        process.address =
            address_in(&line).with_context(|| format!("no address in the line {line:?}"))?;
        Ok(process)
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits, at most `limit`, for an output line containing `needle`, and returns it.
    ///
    /// # Errors
    /// No such line in time (the error shows the output so far).
    pub fn wait_for_line(&mut self, needle: &str, limit: Duration) -> anyhow::Result<String> {
        if let Some(line) = self.log.iter().find(|l| l.contains(needle)) {
            return Ok(line.clone());
        }
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return Ok(line);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) if !left.is_zero() => {}
                Err(_) => anyhow::bail!(
                    "no output line with {needle:?} within {limit:?}; output:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// Every output line so far.
    pub fn log(&mut self) -> &[String] {
        self.log.extend(self.lines.try_iter());
        &self.log
    }

    /// Sends SIGTERM to the process.
    ///
    /// # Errors
    /// The signal cannot be sent.
    pub fn terminate(&self) -> anyhow::Result<()> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        Ok(())
    }

    /// Stops it: SIGTERM, then up to `limit` for it to exit, then SIGKILL.
    ///
    /// # Errors
    /// The signal cannot be sent, or the process could not be waited for.
    pub fn stop(mut self, limit: Duration) -> anyhow::Result<Option<ExitStatus>> {
        if !self.is_running() {
            return Ok(self.child.try_wait()?);
        }
        self.terminate()?;
        match self.wait_exit(limit) {
            Ok(status) => Ok(Some(status)),
            Err(_) => {
                self.child.kill()?;
                self.child.wait()?;
                Ok(None)
            }
        }
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits, at most `limit`, for the process to exit.
    ///
    /// # Errors
    /// Still running after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the process is still running after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A memory line of `/proc/PID/status` (`VmHWM`, the peak resident set, or `VmRSS`) in KiB.
    ///
    /// # Errors
    /// No such line (not Linux, or the process is gone).
    pub fn memory_kib(&self, field: &str) -> anyhow::Result<u64> {
        proc_status_kib(self.child.id(), field)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A memory line of `/proc/PID/status` in KiB.
///
/// # Errors
/// No such line.
pub fn proc_status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

fn forward(reader: impl std::io::Read + Send + 'static, tx: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
}

/// `... listening on http://127.0.0.1:PORT ...` → `127.0.0.1:PORT`.
fn address_in(line: &str) -> Option<SocketAddr> {
    let start = line.find("http://")? + "http://".len();
    line[start..]
        .split(|c: char| c == '/' || c == '"' || c.is_whitespace())
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_address_in_a_log_line() {
        let line = r#"{"level":"INFO","message":"flock-api listening on http://127.0.0.1:40123","address":"127.0.0.1:40123"}"#;
        assert_eq!(
            address_in(line),
            Some(SocketAddr::from(([127, 0, 0, 1], 40123)))
        );
        assert_eq!(address_in("nothing here"), None);
    }

    #[test]
    fn reads_its_own_peak_memory() {
        let kib = proc_status_kib(std::process::id(), "VmHWM").unwrap();
        assert!(kib > 0);
    }
}
