//! `cargo xtask`: the project's gates (tidy, format, lint, types, tests) as one command.

mod fuzz;
mod tidy;

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  ci [--keep-going]   run every gate: tidy, fmt, lint, check, test, openapi-fuzz
  tidy                check the rules of docs/ARCHITECTURE.md and the source standards:
                      layer 0 has no tokio; only flock-api knows actix-web, flock-delivery
                      and flock-llm reqwest, flock-store sqlx, flock-schema boon and
                      flock-signing hmac; every crate is named in
                      ARCHITECTURE; every .rs file opens with //!; every #[allow] and
                      #[expect] has a reason; no dbg!, todo! or unimplemented!
  fmt                 cargo fmt --all --check
  lint                cargo clippy --workspace --all-targets -- -D warnings
  check               cargo check --workspace --all-targets; cargo doc with -D warnings
  test                cargo nextest run --workspace (or cargo test), then the doc tests
  openapi-fuzz [--max-examples N] [--seed N] [--skip-if-missing]
                      build flock-api, start it on a free loopback port with SQLite in a
                      temporary directory, and run Schemathesis (`st run --checks all`,
                      stateful included, fixed seed and examples, a 300 s budget) against its
                      OpenAPI document; then every operation a link leads to must have
                      answered 2xx and the server must stop cleanly. `st` comes from
                      FLOCK_SCHEMATHESIS or `scripts/schemathesis.sh install`; when it is
                      missing the step fails, unless --skip-if-missing is given outside CI (no
                      CI variable): then it says loudly that it skipped (`ci` passes it)
  bench [ARGS...]     build flock-api and flock-bench in release, run flock-bench ARGS
                      (not part of ci; `bench --quick` for smaller counts, `bench --help`);
                      `--baseline-rev REV` also builds flock-api at git revision REV and
                      measures it side by side (flock-bench's `--baseline`)
";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let Some(command) = args.first() else {
        eprint!("{USAGE}");
        return ExitCode::FAILURE;
    };
    let flags = &args[1..];
    if command == "bench" {
        return bench(flags);
    }
    if command == "openapi-fuzz" {
        return match fuzz::Options::parse(flags) {
            Ok(options) => fuzz::run(&project_root(), &options),
            Err(message) => {
                eprintln!("xtask: openapi-fuzz: {message}\n\n{USAGE}");
                ExitCode::FAILURE
            }
        };
    }
    if command == "tidy" {
        if let Some(unknown) = flags.first() {
            eprintln!("xtask: unknown option `{unknown}`\n\n{USAGE}");
            return ExitCode::FAILURE;
        }
        return if tidy::run(&project_root()) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let keep_going = flags.iter().any(|f| f == "--keep-going");
    if let Some(unknown) = flags.iter().find(|f| *f != "--keep-going") {
        eprintln!("xtask: unknown option `{unknown}`\n\n{USAGE}");
        return ExitCode::FAILURE;
    }
    let steps = match command.as_str() {
        "ci" => ci(),
        "fmt" => fmt(),
        "lint" => lint(),
        "check" => check(),
        "test" => test(),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        other => {
            eprintln!("xtask: unknown command `{other}`\n\n{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    run_steps(&steps, keep_going)
}

/// One gate: a cargo invocation with its extra environment.
struct Step {
    name: &'static str,
    args: Vec<&'static str>,
    env: Vec<(&'static str, &'static str)>,
}

impl Step {
    fn new(name: &'static str, args: &[&'static str]) -> Self {
        Step {
            name,
            args: args.to_vec(),
            env: Vec::new(),
        }
    }

    fn env(mut self, key: &'static str, value: &'static str) -> Self {
        self.env.push((key, value));
        self
    }

    /// The command line a developer pastes to reproduce this step.
    fn reproduce(&self) -> String {
        let env: String = self.env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
        format!("{env}cargo {}", self.args.join(" "))
    }
}

/// Every gate, tidy first (it is the quickest and needs no build of the workspace), the fuzzer
/// of the OpenAPI document last.
fn ci() -> Vec<Step> {
    [tidy(), fmt(), lint(), check(), test(), openapi_fuzz()]
        .into_iter()
        .flatten()
        .collect()
}

/// `cargo xtask openapi-fuzz`, as its own step; outside CI it skips loudly when Schemathesis is
/// not installed.
fn openapi_fuzz() -> Vec<Step> {
    vec![Step::new(
        "openapi fuzz",
        &["xtask", "openapi-fuzz", "--skip-if-missing"],
    )]
}

/// `cargo xtask tidy`, run as its own step so that `ci` reports it like the others.
fn tidy() -> Vec<Step> {
    vec![Step::new("tidy", &["xtask", "tidy"])]
}

fn fmt() -> Vec<Step> {
    vec![Step::new("fmt", &["fmt", "--all", "--check"])]
}

fn lint() -> Vec<Step> {
    vec![Step::new(
        "clippy",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )]
}

fn check() -> Vec<Step> {
    vec![
        Step::new("check", &["check", "--workspace", "--all-targets"]),
        Step::new("doc", &["doc", "--workspace", "--no-deps"]).env("RUSTDOCFLAGS", "-D warnings"),
    ]
}

fn test() -> Vec<Step> {
    let unit = if has_nextest() {
        Step::new(
            "test (nextest)",
            &["nextest", "run", "--workspace", "--no-fail-fast"],
        )
    } else {
        Step::new("test", &["test", "--workspace", "--no-fail-fast"])
    };
    vec![
        unit,
        Step::new("doc tests", &["test", "--workspace", "--doc"]),
    ]
}

/// `cargo xtask bench`: a release build of the server and the benchmark program, then the
/// program, its arguments passed through; with `--baseline-rev REV`, also a release build of
/// the server at git revision REV, passed to the program as `--baseline`.
fn bench(args: &[String]) -> ExitCode {
    let (baseline_rev, args) = match split_baseline_rev(args) {
        Ok(split) => split,
        Err(message) => {
            eprintln!("xtask: {message}");
            return ExitCode::FAILURE;
        }
    };
    let build = Step::new(
        "build (release)",
        &[
            "build",
            "--release",
            "-p",
            "flock-api",
            "--bin",
            "flock-api",
            "-p",
            "flock-e2e",
            "--bin",
            "flock-bench",
        ],
    );
    if run_steps(&[build], false) != ExitCode::SUCCESS {
        return ExitCode::FAILURE;
    }
    let target = env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| project_root().join("target"), PathBuf::from);
    let release = target.join("release");
    let exe = env::consts::EXE_SUFFIX;
    let program = release.join(format!("flock-bench{exe}"));
    let server = release.join(format!("flock-api{exe}"));
    let mut command = Command::new(&program);
    command.arg("--server").arg(&server);
    if let Some(rev) = baseline_rev {
        match build_baseline(&rev, &target.join("bench-baseline")) {
            Ok(binary) => {
                command.arg("--baseline").arg(binary);
            }
            Err(message) => {
                eprintln!("xtask: the baseline at `{rev}`: {message}");
                return ExitCode::FAILURE;
            }
        }
    }
    command.args(&args).current_dir(project_root());
    eprintln!(
        "\n==> {} {}",
        program.display(),
        command
            .get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    match command.status() {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("xtask: could not start {}: {err}", program.display());
            ExitCode::FAILURE
        }
    }
}

/// Takes `--baseline-rev REV` (or `--baseline-rev=REV`) out of the benchmark's arguments.
fn split_baseline_rev(args: &[String]) -> Result<(Option<String>, Vec<String>), String> {
    let mut rev = None;
    let mut rest = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--baseline-rev" {
            let value = args
                .next()
                .ok_or("--baseline-rev needs a git revision, such as main or HEAD~3")?;
            rev = Some(value.clone());
        } else if let Some(value) = arg.strip_prefix("--baseline-rev=") {
            rev = Some(value.to_owned());
        } else {
            rest.push(arg.clone());
        }
    }
    Ok((rev, rest))
}

/// Builds `flock-api` in release from git revision `rev`, exported (not checked out) under
/// `dir`, and returns the binary, kept per commit so a later run reuses it. The builds share
/// one target directory under `dir`, so only what changed between revisions is rebuilt.
fn build_baseline(rev: &str, dir: &Path) -> Result<PathBuf, String> {
    let git = |args: &[&str]| -> Result<String, String> {
        let output = Command::new("git")
            .args(args)
            .current_dir(project_root())
            .output()
            .map_err(|e| format!("could not run git: {e}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "--verify", &format!("{rev}^{{commit}}")])?;
    let exe = env::consts::EXE_SUFFIX;
    let binary = dir.join(format!("flock-api-{commit}{exe}"));
    if binary.is_file() {
        eprintln!("\n==> baseline {rev} ({commit}): {}", binary.display());
        return Ok(binary);
    }
    let source = dir.join(format!("src-{commit}"));
    if !source.join("Cargo.toml").is_file() {
        std::fs::create_dir_all(&source).map_err(|e| format!("{}: {e}", source.display()))?;
        eprintln!("\n==> exporting {rev} ({commit}) to {}", source.display());
        let archive = Command::new("git")
            .args(["archive", "--format=tar", &commit])
            .current_dir(project_root())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("could not run git archive: {e}"))?;
        let stdout = archive.stdout.ok_or("git archive gave no output")?;
        let status = Command::new("tar")
            .arg("-x")
            .arg("-C")
            .arg(&source)
            .stdin(stdout)
            .status()
            .map_err(|e| format!("could not run tar: {e}"))?;
        if !status.success() {
            return Err(format!("tar could not unpack {commit}"));
        }
    }
    let target = dir.join("target");
    eprintln!("\n==> building the baseline's flock-api in release ({commit})");
    let status = cargo()
        .args([
            "build",
            "--release",
            "-p",
            "flock-api",
            "--bin",
            "flock-api",
        ])
        .current_dir(&source)
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .map_err(|e| format!("could not run cargo: {e}"))?;
    if !status.success() {
        return Err("its build failed".to_owned());
    }
    std::fs::copy(
        target.join("release").join(format!("flock-api{exe}")),
        &binary,
    )
    .map_err(|e| format!("{}: {e}", binary.display()))?;
    Ok(binary)
}

fn has_nextest() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn cargo() -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(project_root());
    cmd
}

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

fn run_steps(steps: &[Step], keep_going: bool) -> ExitCode {
    let total = Instant::now();
    let mut failed: Vec<&Step> = Vec::new();
    for step in steps {
        eprintln!("\n==> {} ({})", step.name, step.reproduce());
        let started = Instant::now();
        let mut cmd = cargo();
        cmd.args(&step.args);
        for (key, value) in &step.env {
            cmd.env(key, value);
        }
        let ok = match cmd.status() {
            Ok(status) => status.success(),
            Err(err) => {
                eprintln!("xtask: could not start cargo: {err}");
                false
            }
        };
        let secs = started.elapsed().as_secs_f64();
        if ok {
            eprintln!("==> {} passed in {secs:.1}s", step.name);
        } else {
            eprintln!(
                "==> {} FAILED after {secs:.1}s; reproduce with: {}",
                step.name,
                step.reproduce()
            );
            failed.push(step);
            if !keep_going {
                break;
            }
        }
    }
    let secs = total.elapsed().as_secs_f64();
    if failed.is_empty() {
        eprintln!("\nall {} steps passed in {secs:.1}s", steps.len());
        ExitCode::SUCCESS
    } else {
        eprintln!("\n{} step(s) failed in {secs:.1}s:", failed.len());
        for step in failed {
            eprintln!("  {}: {}", step.name, step.reproduce());
        }
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(steps: &[Step]) -> Vec<&'static str> {
        steps.iter().map(|s| s.name).collect()
    }

    #[test]
    fn ci_runs_every_gate_in_order() {
        let ci = ci();
        let names = names(&ci);
        assert_eq!(&names[..5], ["tidy", "fmt", "clippy", "check", "doc"]);
        assert!(names[5].starts_with("test"), "{names:?}");
        assert_eq!(names[6], "doc tests");
        assert_eq!(names[7..], ["openapi fuzz"]);
    }

    #[test]
    fn each_step_says_how_to_reproduce_it() {
        assert_eq!(tidy()[0].reproduce(), "cargo xtask tidy");
        assert_eq!(fmt()[0].reproduce(), "cargo fmt --all --check");
        assert_eq!(
            lint()[0].reproduce(),
            "cargo clippy --workspace --all-targets -- -D warnings"
        );
        let check = check();
        assert_eq!(
            check[0].reproduce(),
            "cargo check --workspace --all-targets"
        );
        assert_eq!(
            check[1].reproduce(),
            "RUSTDOCFLAGS=-D warnings cargo doc --workspace --no-deps"
        );
        let test = test();
        assert!(test[0].reproduce().contains("--workspace"));
        assert_eq!(test[1].reproduce(), "cargo test --workspace --doc");
        assert_eq!(
            openapi_fuzz()[0].reproduce(),
            "cargo xtask openapi-fuzz --skip-if-missing"
        );
    }

    #[test]
    fn the_baseline_revision_is_taken_out_of_the_bench_arguments() {
        let args = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let (rev, rest) = split_baseline_rev(&args(&[
            "--quick",
            "--baseline-rev",
            "main",
            "--only",
            "fixed",
        ]))
        .unwrap();
        assert_eq!(rev.as_deref(), Some("main"));
        assert_eq!(rest, args(&["--quick", "--only", "fixed"]));
        let (rev, rest) = split_baseline_rev(&args(&["--baseline-rev=HEAD~2"])).unwrap();
        assert_eq!(rev.as_deref(), Some("HEAD~2"));
        assert!(rest.is_empty());
        assert!(split_baseline_rev(&args(&["--baseline-rev"])).is_err());
        assert_eq!(split_baseline_rev(&args(&["--quick"])).unwrap().0, None);
    }

    #[test]
    fn the_project_root_holds_the_workspace_manifest() {
        let manifest = std::fs::read_to_string(project_root().join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"));
    }
}
