//! `cargo xtask`: the project's gates (tidy, format, lint, types, tests) as one command.

mod tidy;

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  ci [--keep-going]   run every gate: tidy, fmt, lint, check, test
  tidy                check the rules of docs/ARCHITECTURE.md and the source standards:
                      layer 0 has no tokio; only flock-api, flock-delivery and flock-store
                      know actix-web, reqwest and sqlx; every crate is named in
                      ARCHITECTURE; every .rs file opens with //!; every #[allow] and
                      #[expect] has a reason; no dbg!, todo! or unimplemented!
  fmt                 cargo fmt --all --check
  lint                cargo clippy --workspace --all-targets -- -D warnings
  check               cargo check --workspace --all-targets; cargo doc with -D warnings
  test                cargo nextest run --workspace (or cargo test), then the doc tests
  bench [ARGS...]     build flock-api and flock-bench in release, run flock-bench ARGS
                      (not part of ci; `bench --quick` for smaller counts, `bench --help`)
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

/// Every gate, tidy first (it is the quickest and needs no build of the workspace).
fn ci() -> Vec<Step> {
    [tidy(), fmt(), lint(), check(), test()]
        .into_iter()
        .flatten()
        .collect()
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
/// program, its arguments passed through.
fn bench(args: &[String]) -> ExitCode {
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
    let release = env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| project_root().join("target"), PathBuf::from)
        .join("release");
    let exe = env::consts::EXE_SUFFIX;
    let program = release.join(format!("flock-bench{exe}"));
    let server = release.join(format!("flock-api{exe}"));
    eprintln!(
        "\n==> {} --server {} {}",
        program.display(),
        server.display(),
        args.join(" ")
    );
    match Command::new(&program)
        .arg("--server")
        .arg(&server)
        .args(args)
        .current_dir(project_root())
        .status()
    {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("xtask: could not start {}: {err}", program.display());
            ExitCode::FAILURE
        }
    }
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
    }

    #[test]
    fn the_project_root_holds_the_workspace_manifest() {
        let manifest = std::fs::read_to_string(project_root().join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"));
    }
}
