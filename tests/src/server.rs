//! The server under test: in this process (`flock_api::startup::Application` on 127.0.0.1:0),
//! or the built `flock-api` binary as a child process with its configuration file, killed by
//! its PID when dropped.

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
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

/// The output lines a [`ServerProcess`] keeps: its last this many. Its standard output and
/// error are read as they are written (a process supervisor reads them so too, and a pipe
/// nobody reads would stop the server once full), but not all are kept: at `info` the server
/// writes a line per request, and a benchmark's runs of tens of thousands of requests would
/// otherwise all be held for the life of the process. Tests look for a handful of lines
/// (where it listens, what a stop said), well within this.
pub const KEPT_LINES: usize = 10_000;

/// The `flock-api` binary running as a child process (`serve --config FILE`), its standard
/// output and error read line by line, the last [`KEPT_LINES`] kept. Dropping it kills the
/// process (by its PID) if it is still running.
pub struct ServerProcess {
    child: Child,
    address: SocketAddr,
    output: Arc<Output>,
    /// The kept lines as [`ServerProcess::log`] last copied them.
    log: Vec<String>,
}

/// A process's output lines as its reader threads deliver them.
#[derive(Default)]
struct Output {
    lines: Mutex<Lines>,
    /// Notified at each line and when a stream ends.
    changed: Condvar,
}

#[derive(Default)]
struct Lines {
    /// The last [`KEPT_LINES`] lines.
    kept: VecDeque<String>,
    /// Lines read so far, kept or not.
    read: u64,
    /// Streams (standard output, standard error) not yet at their end.
    open: usize,
}

impl Lines {
    /// The number, counting from 0 over every line read, of the first line kept.
    fn first_kept(&self) -> u64 {
        self.read - self.kept.len() as u64
    }
}

impl Output {
    fn lock(&self) -> MutexGuard<'_, Lines> {
        self.lines.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, line: String) {
        let mut lines = self.lock();
        if lines.kept.len() == KEPT_LINES {
            lines.kept.pop_front();
        }
        lines.kept.push_back(line);
        lines.read += 1;
        drop(lines);
        self.changed.notify_all();
    }

    fn close(&self) {
        self.lock().open -= 1;
        self.changed.notify_all();
    }
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
        let output = Arc::new(Output::default());
        let (out, err) = (child.stdout.take(), child.stderr.take());
        // Counted before either reader starts, so that one ending at once counts down from it.
        output.lock().open = usize::from(out.is_some()) + usize::from(err.is_some());
        if let Some(out) = out {
            forward(out, Arc::clone(&output));
        }
        if let Some(err) = err {
            forward(err, Arc::clone(&output));
        }
        let mut process = ServerProcess {
            child,
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            output,
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

    /// Waits, at most `limit`, for an output line containing `needle` (among the lines kept so
    /// far, then those that follow), and returns it.
    ///
    /// # Errors
    /// No such line in time, or the output ended without one (the error shows the lines kept).
    pub fn wait_for_line(&mut self, needle: &str, limit: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + limit;
        let mut lines = self.output.lock();
        // Lines before this one (counting every line read) have been looked at.
        let mut looked = lines.first_kept();
        loop {
            let skip = usize::try_from(looked.saturating_sub(lines.first_kept()))?;
            if let Some(line) = lines.kept.iter().skip(skip).find(|l| l.contains(needle)) {
                return Ok(line.clone());
            }
            looked = lines.read;
            let left = deadline.saturating_duration_since(Instant::now());
            if lines.open == 0 || left.is_zero() {
                let kept: Vec<&str> = lines.kept.iter().map(String::as_str).collect();
                anyhow::bail!(
                    "no output line with {needle:?} within {limit:?}; output:\n{}",
                    kept.join("\n")
                );
            }
            lines = self
                .output
                .changed
                .wait_timeout(lines, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// The output lines so far: every one, or the last [`KEPT_LINES`] of a server that has
    /// written more.
    pub fn log(&mut self) -> &[String] {
        self.log.clear();
        self.log.extend(self.output.lock().kept.iter().cloned());
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

/// Reads `reader` line by line into `output` on a thread of its own, until its end.
fn forward(reader: impl std::io::Read + Send + 'static, output: Arc<Output>) {
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            output.push(line);
        }
        output.close();
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
