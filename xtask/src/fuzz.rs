//! `cargo xtask openapi-fuzz`: Schemathesis, a property-based fuzzer nobody here wrote, against
//! the real `flock-api` binary. The server runs on a free loopback port with an SQLite store in
//! a temporary directory and the loopback allow-list, in `auth.mode = "keys"`, with an API key
//! that `flock-api keys create` made in that store before the start (every scope); Schemathesis
//! sends it on every request, and its `ignored_auth` check sends requests without it or with a
//! wrong one, which must be refused. Schemathesis reads the server's own
//! OpenAPI document and runs every check, stateful ones included, with a fixed seed, a fixed
//! number of examples per operation and a time budget. Whatever the document lists is fuzzed,
//! so routes added later are covered without a change here.
//!
//! Afterwards the server's own request counters (`/metrics`) show what each operation answered;
//! every operation an OpenAPI link leads to must have answered 2xx at least once (the links let
//! the stateful phase reach it), and the server must still be up, stop cleanly on SIGTERM and
//! have logged no panic.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Test cases per operation and phase (`--max-examples`).
pub(crate) const MAX_EXAMPLES: u32 = 100;
/// The seed every run draws from, so a failure is reproduced by running again.
pub(crate) const SEED: u64 = 20_261_128;
/// How long Schemathesis may take before the step fails.
const BUDGET: Duration = Duration::from_secs(300);
/// Schemathesis workers. One: with several threads, Hypothesis's description of its strategies
/// raced into a `Runtime Error` now and then, and the server is not what limits the speed.
const WORKERS: u32 = 1;
/// Where the fuzzer's pins, hooks and requirements live, under the project root.
const FUZZ_DIR: &str = "xtask/openapi-fuzz";
/// The environment variable naming the `st` executable.
const ST_ENV: &str = "FLOCK_SCHEMATHESIS";

/// What `cargo xtask openapi-fuzz` was asked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Options {
    pub(crate) max_examples: u32,
    pub(crate) seed: u64,
    /// Outside CI (no `CI` variable), succeed with a loud notice when Schemathesis is missing.
    pub(crate) skip_if_missing: bool,
}

impl Options {
    pub(crate) fn parse(args: &[String]) -> Result<Self, String> {
        let mut options = Options {
            max_examples: MAX_EXAMPLES,
            seed: SEED,
            skip_if_missing: false,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--max-examples" => options.max_examples = number(arg, args.next())?,
                "--seed" => options.seed = number(arg, args.next())?,
                "--skip-if-missing" => options.skip_if_missing = true,
                other => return Err(format!("unknown option `{other}`")),
            }
        }
        Ok(options)
    }
}

/// The number an option is given.
fn number<T: std::str::FromStr>(name: &str, value: Option<&String>) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    value
        .ok_or_else(|| format!("{name} needs a number"))?
        .parse()
        .map_err(|e| format!("{name}: {e}"))
}

/// Runs the step; the project's root is `root`.
pub(crate) fn run(root: &Path, options: &Options) -> ExitCode {
    let st = match locate(root) {
        Ok(st) => st,
        Err(Missing::Misconfigured(message)) => {
            eprintln!("xtask: {message}");
            return ExitCode::FAILURE;
        }
        Err(Missing::NotInstalled(message)) => {
            let in_ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
            if options.skip_if_missing && !in_ci {
                eprintln!(
                    "\n==> openapi fuzz SKIPPED: {message}\n\
                     ==> This step runs in CI (`.ci/run` installs Schemathesis); to run it here:\n\
                     ==>   scripts/schemathesis.sh install && cargo xtask openapi-fuzz\n"
                );
                return ExitCode::SUCCESS;
            }
            eprintln!(
                "xtask: {message}\nInstall it with `scripts/schemathesis.sh install` (a virtual \
                 environment outside the repository), or name an `st` in {ST_ENV}."
            );
            return ExitCode::FAILURE;
        }
    };
    match fuzz(root, &st, options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: openapi fuzz: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Why Schemathesis cannot be run.
enum Missing {
    /// Not installed where it is looked for.
    NotInstalled(String),
    /// Named or installed wrongly: always a failure.
    Misconfigured(String),
}

/// The pinned Schemathesis version, from the requirements file.
fn pinned_version(root: &Path) -> Result<String, Missing> {
    let requirements = root.join(FUZZ_DIR).join("requirements.txt");
    let text = fs::read_to_string(&requirements)
        .map_err(|e| Missing::Misconfigured(format!("{}: {e}", requirements.display())))?;
    text.lines()
        .find_map(|line| line.trim().strip_prefix("schemathesis=="))
        .map(str::to_owned)
        .ok_or_else(|| {
            Missing::Misconfigured(format!("{} pins no schemathesis", requirements.display()))
        })
}

/// `st` from `FLOCK_SCHEMATHESIS`, else where `scripts/schemathesis.sh install` puts it; either
/// must be the pinned version.
fn locate(root: &Path) -> Result<PathBuf, Missing> {
    let version = pinned_version(root)?;
    let st = if let Some(named) = std::env::var_os(ST_ENV).filter(|v| !v.is_empty()) {
        let st = PathBuf::from(named);
        if !st.is_file() {
            return Err(Missing::Misconfigured(format!(
                "{ST_ENV} names {}, which is not there",
                st.display()
            )));
        }
        st
    } else {
        let cache = std::env::var_os("FLOCK_SCHEMATHESIS_CACHE")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_CACHE_HOME")
                    .map(|d| PathBuf::from(d).join("flock-schemathesis"))
            })
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/flock-schemathesis"))
            })
            .ok_or_else(|| {
                Missing::NotInstalled("no HOME to look for Schemathesis in".to_owned())
            })?;
        let venv = cache.join(format!("venv-{version}"));
        let st = venv.join("bin").join("st");
        if !st.is_file() {
            return Err(Missing::NotInstalled(format!(
                "Schemathesis {version} is not installed ({} is missing and {ST_ENV} is unset)",
                st.display()
            )));
        }
        let wanted = fs::read(root.join(FUZZ_DIR).join("requirements.txt")).ok();
        if fs::read(venv.join("flock-requirements.txt")).ok() != wanted {
            return Err(Missing::NotInstalled(format!(
                "{} was installed from other pins than {FUZZ_DIR}/requirements.txt",
                venv.display()
            )));
        }
        st
    };
    let output = Command::new(&st)
        .arg("--version")
        .output()
        .map_err(|e| Missing::Misconfigured(format!("could not run {}: {e}", st.display())))?;
    let said = String::from_utf8_lossy(&output.stdout);
    if !said.contains(&version) {
        return Err(Missing::Misconfigured(format!(
            "{} is `{}`, not the pinned Schemathesis {version}",
            st.display(),
            said.trim()
        )));
    }
    Ok(st)
}

/// A server process this step started, stopped by its PID when dropped.
struct Server {
    child: Child,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn fuzz(root: &Path, st: &Path, options: &Options) -> Result<(), String> {
    let started = Instant::now();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("\n==> building flock-api (cargo build -p flock-api --bin flock-api)");
    let built = Command::new(&cargo)
        .args(["build", "-p", "flock-api", "--bin", "flock-api"])
        .current_dir(root)
        .status()
        .map_err(|e| format!("could not run cargo: {e}"))?;
    if !built.success() {
        return Err("the build of flock-api failed".to_owned());
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let binary = target
        .join("debug")
        .join(format!("flock-api{}", std::env::consts::EXE_SUFFIX));
    let work = target
        .join("openapi-fuzz")
        .join(format!("run-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let work = work
        .canonicalize()
        .map_err(|e| format!("{}: {e}", work.display()))?;

    let result = fuzz_in(root, st, options, &binary, &work);
    match &result {
        Ok(()) => {
            let _ = fs::remove_dir_all(&work);
            eprintln!(
                "==> openapi fuzz passed in {:.1}s",
                started.elapsed().as_secs_f64()
            );
        }
        Err(_) => eprintln!(
            "==> the server's log and the fuzzer's report are in {}",
            work.display()
        ),
    }
    result
}

fn fuzz_in(
    root: &Path,
    st: &Path,
    options: &Options,
    binary: &Path,
    work: &Path,
) -> Result<(), String> {
    // Webhooks go to a loopback port where nothing listens: refused at once, never elsewhere.
    let webhook_port = closed_port()?;
    let key = create_key(binary, work)?;
    let mut server = start_server(binary, work)?;
    let address = wait_for_address(&mut server)?;
    wait_for_health(&mut server, address)?;
    let base = format!("http://{address}");
    eprintln!("==> flock-api on {base} (SQLite in {})", work.display());

    let mut command = Command::new(st);
    command
        .arg("--config-file")
        .arg(root.join(FUZZ_DIR).join("schemathesis.toml"))
        .arg("run")
        .arg(format!("{base}/api/v1/openapi.json"))
        .args(["--checks", "all"])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--max-examples", &options.max_examples.to_string()])
        .args(["--seed", &options.seed.to_string()])
        .args(["--workers", &WORKERS.to_string()])
        .args(["--generation-database", "none"])
        .args(["--request-timeout", "30"])
        // The event stream answers 200 and never ends: a request to it only ever times out.
        // Its own tests (flock-api `events::`) read it with a client that stops.
        .args(["--exclude-path", "/api/v1/events"])
        .args(["--report", "junit", "--report-dir"])
        .arg(work.join("report"))
        .arg("--no-color")
        .env("PYTHONPATH", root.join(FUZZ_DIR))
        .env("SCHEMATHESIS_HOOKS", "flock_fuzz_hooks")
        .env("FLOCK_FUZZ_WEBHOOK_PORT", webhook_port.to_string())
        // `[auth.openapi.bearer]` of schemathesis.toml: the key for the document's `bearer`
        // scheme, which Schemathesis leaves out where it checks that auth is not ignored.
        .env("FLOCK_FUZZ_KEY", &key)
        .current_dir(work);
    eprintln!(
        "==> {} run {base}/api/v1/openapi.json (bearer: the key) --checks all --phases examples,coverage,fuzzing,stateful --max-examples {} --seed {} --workers {WORKERS} (budget {}s)",
        st.display(),
        options.max_examples,
        options.seed,
        BUDGET.as_secs()
    );
    let fuzzed = run_within(&mut command, BUDGET)?;

    let mut problems = Vec::new();
    if !fuzzed {
        problems.push("Schemathesis found failures (above)".to_owned());
    }
    if let Ok(Some(status)) = server.child.try_wait() {
        problems.push(format!("the server died during the run ({status})"));
    } else {
        match answers(address, &key) {
            Ok((table, unreached)) => {
                eprintln!(
                    "\n==> what each operation answered (the server's own counters):\n{table}"
                );
                if !unreached.is_empty() {
                    problems.push(format!(
                        "no 2xx from operations that OpenAPI links lead to: {}",
                        unreached.join(", ")
                    ));
                }
            }
            Err(e) => problems.push(e),
        }
        if let Err(e) = stop(&mut server) {
            problems.push(e);
        }
    }
    let log = fs::read_to_string(&server.log).unwrap_or_default();
    if let Some(panic) = log.lines().find(|l| l.contains("panicked")) {
        problems.push(format!("the server panicked: {panic}"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// A loopback port where nothing listens (it was free a moment ago).
fn closed_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free loopback port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// The binary with only this step's settings: nothing from the caller's environment shapes it.
fn flock_api(binary: &Path, work: &Path) -> Command {
    let mut command = Command::new(binary);
    for (key, _) in std::env::vars_os() {
        if let Some(key) = key.to_str()
            && (key.starts_with("FLOCK_") || key == "RUST_LOG")
        {
            command.env_remove(key);
        }
    }
    command
        .env(
            "FLOCK__STORE__URL",
            format!("sqlite://{}", work.join("flock.db").display()),
        )
        .env("FLOCK__AUTH__MODE", "keys")
        .current_dir(work)
        .stdin(Stdio::null());
    command
}

/// A key with every scope, made offline in the step's store: `flock-api keys create` prints it
/// alone on its first line.
fn create_key(binary: &Path, work: &Path) -> Result<String, String> {
    let mut command = flock_api(binary, work);
    command.args([
        "keys",
        "create",
        "--tenant",
        "fuzz",
        "--name",
        "openapi-fuzz",
    ]);
    for scope in ["publish", "read", "redeliver", "keys:manage", "metrics"] {
        command.args(["--scope", scope]);
    }
    let output = command
        .output()
        .map_err(|e| format!("could not run {} keys create: {e}", binary.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    match stdout.lines().next() {
        Some(key) if output.status.success() && key.starts_with("flk_") => Ok(key.to_owned()),
        _ => Err(format!(
            "flock-api keys create failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )),
    }
}

fn start_server(binary: &Path, work: &Path) -> Result<Server, String> {
    let log = work.join("server.log");
    let out = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let child = flock_api(binary, work)
        .env("FLOCK__SERVER__HOST", "127.0.0.1")
        .env("FLOCK__SERVER__PORT", "0")
        .env("FLOCK__SERVER__WORKERS", "2")
        .env("FLOCK__WEBHOOKS__ALLOWED_CIDRS", "127.0.0.1/32")
        .env("FLOCK__WEBHOOKS__RETRY__MAX_RETRIES", "0")
        .env("FLOCK__LOG__FORMAT", "json")
        .env("FLOCK__LOG__LEVEL", "info")
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("could not start {}: {e}", binary.display()))?;
    Ok(Server { child, log })
}

/// The address the server logs that it listens on.
fn wait_for_address(server: &mut Server) -> Result<SocketAddr, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(format!(
                "the server exited at start ({status}): {}",
                fs::read_to_string(&server.log).unwrap_or_default()
            ));
        }
        let file = File::open(&server.log).map_err(|e| e.to_string())?;
        for line in BufReader::new(file).lines().map_while(Result::ok) {
            let Ok(entry) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            // The JSON log puts fields beside the message.
            let address = entry["address"]
                .as_str()
                .or(entry["fields"]["address"].as_str());
            if let Some(address) = address
                && let Ok(address) = address.parse()
            {
                return Ok(address);
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
    Err("the server did not say where it listens within 60s".to_owned())
}

fn wait_for_health(server: &mut Server, address: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((200, _)) = get(address, "/health", None) {
            return Ok(());
        }
        if Instant::now() > deadline || matches!(server.child.try_wait(), Ok(Some(_))) {
            return Err("the server did not answer /health".to_owned());
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `command` to its end, or kills it when `budget` has passed; whether it succeeded.
fn run_within(command: &mut Command, budget: Duration) -> Result<bool, String> {
    let mut child = command
        .spawn()
        .map_err(|e| format!("could not start Schemathesis: {e}"))?;
    let deadline = Instant::now() + budget;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Ok(status.success());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "Schemathesis took more than its budget of {}s and was stopped",
                budget.as_secs()
            ));
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// SIGTERM, then the exit status: a clean stop exits 0.
fn stop(server: &mut Server) -> Result<(), String> {
    let pid = server.child.id().to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .map_err(|e| format!("could not run kill: {e}"))?;
    if !sent.success() {
        return Err(format!("could not send SIGTERM to the server ({pid})"));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(status) = server.child.try_wait().map_err(|e| e.to_string())? {
            return if status.success() {
                Ok(())
            } else {
                Err(format!(
                    "the server did not stop cleanly on SIGTERM ({status})"
                ))
            };
        }
        thread::sleep(Duration::from_millis(100));
    }
    Err("the server did not stop within 30s of SIGTERM".to_owned())
}

/// A GET over a fresh connection: the status and the body.
fn get(address: SocketAddr, path: &str, key: Option<&str>) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))
        .map_err(|e| format!("{address}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let authorization = key.map_or_else(String::new, |key| {
        format!("Authorization: Bearer {key}\r\n")
    });
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\n{authorization}Connection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("GET {path}: no HTTP answer"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("GET {path}: no status in `{head}`"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

/// The body of a chunked answer.
fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        body.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    body
}

/// What each documented operation answered, as a table, and the operations that links lead to
/// but that never answered 2xx.
fn answers(address: SocketAddr, key: &str) -> Result<(String, Vec<String>), String> {
    let (status, document) = get(address, "/api/v1/openapi.json", None)?;
    if status != 200 {
        return Err(format!("the document answered {status}"));
    }
    let document: Value =
        serde_json::from_str(&document).map_err(|e| format!("the document: {e}"))?;
    let (status, metrics) = get(address, "/metrics", Some(key))?;
    if status != 200 {
        return Err(format!("/metrics answered {status}"));
    }
    let counts = request_counts(&metrics);
    // By path, then method: the table reads like the document.
    let mut operations = BTreeMap::new();
    let mut targets = BTreeSet::new();
    for (path, methods) in document["paths"].as_object().into_iter().flatten() {
        for (method, operation) in methods.as_object().into_iter().flatten() {
            let id = operation["operationId"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            operations.insert((path.clone(), method.to_uppercase()), id);
            let links = operation["responses"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(_, response)| response["links"].as_object())
                .flatten();
            for (_, link) in links {
                if let Some(target) = link["operationId"].as_str() {
                    targets.insert(target.to_owned());
                }
            }
        }
    }
    let mut table = String::new();
    let mut unreached = Vec::new();
    for ((path, method), id) in &operations {
        let statuses = counts
            .get(&(method.clone(), path.clone()))
            .cloned()
            .unwrap_or_default();
        let shown: Vec<String> = statuses.iter().map(|(s, n)| format!("{s}x{n}")).collect();
        let linked = if targets.contains(id) {
            " (linked)"
        } else {
            ""
        };
        table.push_str(&format!(
            "    {method} {path}{linked}: {}\n",
            shown.join(" ")
        ));
        if targets.contains(id) && !statuses.keys().any(|s| s.starts_with('2')) {
            unreached.push(format!("{method} {path}"));
        }
    }
    Ok((table, unreached))
}

/// `flock_http_requests_total` by (method, route), each by status.
fn request_counts(metrics: &str) -> BTreeMap<(String, String), BTreeMap<String, u64>> {
    let mut counts: BTreeMap<(String, String), BTreeMap<String, u64>> = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("flock_http_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split("\",")
                .find_map(|pair| pair.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
        };
        let (Some(method), Some(route), Some(status)) =
            (label("method"), label("route"), label("status"))
        else {
            continue;
        };
        let n = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
        *counts
            .entry((method, route))
            .or_default()
            .entry(status)
            .or_default() += n;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_default_to_the_fixed_budget() {
        let args = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            Options::parse(&[]).unwrap(),
            Options {
                max_examples: MAX_EXAMPLES,
                seed: SEED,
                skip_if_missing: false
            }
        );
        let parsed = Options::parse(&args(&[
            "--seed",
            "7",
            "--max-examples",
            "3",
            "--skip-if-missing",
        ]))
        .unwrap();
        assert_eq!(
            parsed,
            Options {
                max_examples: 3,
                seed: 7,
                skip_if_missing: true
            }
        );
        assert!(Options::parse(&args(&["--seed"])).is_err());
        assert!(Options::parse(&args(&["--seed", "x"])).is_err());
        assert!(Options::parse(&args(&["--fast"])).is_err());
    }

    #[test]
    fn request_counts_read_the_servers_counters() {
        let metrics = "# TYPE flock_http_requests_total counter\n\
            flock_http_requests_total{method=\"POST\",route=\"/api/v1/webhooks/deliveries/{id}/redeliver\",status=\"202\"} 3\n\
            flock_http_requests_total{method=\"POST\",route=\"/api/v1/webhooks/deliveries/{id}/redeliver\",status=\"404\"} 10\n\
            flock_http_requests_total{method=\"GET\",route=\"/health\",status=\"200\"} 1\n\
            flock_http_request_duration_seconds_count{method=\"GET\",route=\"/health\"} 1\n";
        let counts = request_counts(metrics);
        let redeliver = &counts[&(
            "POST".to_owned(),
            "/api/v1/webhooks/deliveries/{id}/redeliver".to_owned(),
        )];
        assert_eq!(redeliver["202"], 3);
        assert_eq!(redeliver["404"], 10);
        assert_eq!(counts.len(), 2);
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(dechunk("4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n"), "Wikipedia");
    }

    #[test]
    fn the_pinned_version_is_read_from_the_requirements() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let Ok(version) = pinned_version(root) else {
            panic!("{FUZZ_DIR}/requirements.txt pins no schemathesis");
        };
        assert!(version.starts_with("4."), "{version}");
    }
}
