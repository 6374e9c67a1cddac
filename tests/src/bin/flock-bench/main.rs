//! `flock-bench`: Flock's figures beside the loopback ceiling, all against one receiver in one
//! run, with the same 1 KiB payloads; prints the machine, each run, and a Markdown table of
//! medians with the brief's targets. `cargo xtask bench` builds it and `flock-api` in release
//! and runs it. Exits non-zero with a message when something does not complete in time.

mod external;
mod measure;
mod soak;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use flock_e2e::{Api, Behaviour, Receiver, ServerConfig, ServerProcess, Workdir};

use crate::measure::{CONNECTIONS, limit_for};
use crate::stats::{median, percentile};

/// Flock's benchmark: deliveries per second beside a plain client, publish latency,
/// creation-to-delivery latency at a fixed rate, and memory with deliveries pending.
#[derive(Debug, Parser)]
#[command(name = "flock-bench")]
struct Options {
    /// Smaller counts for a quick look (3 runs, 5,000 deliveries, 20,000 pending).
    #[arg(long)]
    quick: bool,
    /// Runs of each measurement (medians are quoted).
    #[arg(long)]
    runs: Option<usize>,
    /// Deliveries per throughput run (ceiling and Flock).
    #[arg(long)]
    count: Option<usize>,
    /// Publishes of each kind per publish-latency run.
    #[arg(long)]
    samples: Option<usize>,
    /// Deliveries per second of the fixed-rate latency run.
    #[arg(long, default_value_t = 1_000)]
    rate: u32,
    /// Seconds of each fixed-rate run.
    #[arg(long)]
    seconds: Option<u32>,
    /// Deliveries left pending for the memory measurement.
    #[arg(long)]
    pending: Option<usize>,
    /// Seconds of each `wrk` run of the external ceiling.
    #[arg(long)]
    wrk_secs: Option<u32>,
    /// The `flock-api` binary (default: beside this program).
    #[arg(long)]
    server: Option<PathBuf>,
    /// A second `flock-api` binary, the build before a change: every measurement then runs on
    /// both, run for run alternately, and the table gives each figure for both and their ratio.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Run only these measurements (for profiling one of them); all by default.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Phase>,
    /// A Postgres server for the durable measurement (a URL whose user may create databases;
    /// the benchmark creates one and drops it). Default: the `FLOCK_TEST_POSTGRES_URL`
    /// variable; without either, the Postgres figures are skipped.
    #[arg(long)]
    postgres: Option<String>,
    /// Runs the soak for this many seconds: `--rate` publishes per second with webhooks and an
    /// agent on the default store with retention on, sampling memory, database size and open
    /// files. Off unless given (or `--only soak`, which soaks for 30 minutes).
    #[arg(long)]
    soak_secs: Option<u64>,
}

/// One measurement of the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Phase {
    /// 1 and 2: the ceiling and Flock's deliveries per second.
    Throughput,
    /// 3: publish latency with and without a webhook.
    Publish,
    /// 4: creation-to-delivery latency at a fixed rate.
    Fixed,
    /// 5: peak memory with deliveries pending.
    Memory,
    /// 6: deliveries per second with each store: memory, SQLite, Postgres.
    Durable,
    /// 7: publish latency with API key authentication against open mode.
    Auth,
    /// 8: the soak (only when asked for: `--soak-secs`, or `--only soak`).
    Soak,
    /// 9: a noisy neighbour: a good receiver's creation-to-delivery p99 at 500/s, alone and
    /// beside a black hole holding 10,000 pending deliveries.
    Neighbour,
    /// 10: what the default log level (`info`, a line per request) costs: flock-api CPU time
    /// per delivery at `info` against `warn`, publishing and delivering at once on SQLite.
    Logging,
}

/// The counts of one run of the program.
#[derive(Debug, Clone, Copy)]
struct Plan {
    runs: usize,
    wrk_secs: u32,
    count: usize,
    samples: usize,
    rate: u32,
    seconds: u32,
    pending: usize,
}

impl Options {
    fn plan(&self) -> Plan {
        let (runs, count, samples, seconds, pending) = if self.quick {
            (3, 5_000, 500, 3, 20_000)
        } else {
            (5, 20_000, 2_000, 10, 100_000)
        };
        Plan {
            runs: self.runs.unwrap_or(runs).max(1),
            wrk_secs: self
                .wrk_secs
                .unwrap_or(if self.quick { 2 } else { 5 })
                .max(1),
            count: self.count.unwrap_or(count).max(1),
            samples: self.samples.unwrap_or(samples).max(1),
            rate: self.rate.max(1),
            seconds: self.seconds.unwrap_or(seconds).max(1),
            pending: self.pending.unwrap_or(pending).max(1),
        }
    }
}

impl Options {
    fn runs(&self, phase: Phase) -> bool {
        if phase == Phase::Soak {
            return self.soak_secs.is_some() || self.only.contains(&phase);
        }
        // `--soak-secs` alone runs the soak alone.
        let everything = self.only.is_empty() && self.soak_secs.is_none();
        everything || self.only.contains(&phase)
    }
}

fn main() -> ExitCode {
    let options = Options::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("flock-bench: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("flock-bench: FAILED: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The server as the benchmark runs it: the product's defaults (64 deliveries in flight,
/// 10 s per attempt, retries after 1 s, 2 s, 4 s), loopback allowed, memory store, logs at
/// `warn` (and the start-up lines) so that per-request log lines are not what is measured.
fn server_config() -> ServerConfig {
    ServerConfig {
        allow_loopback: true,
        retry_base_ms: 1_000,
        retry_max_ms: 300_000,
        webhook_timeout_ms: 10_000,
        shutdown_grace_ms: 10_000,
        workers: None,
        log_level: "warn,flock_api::startup=info".to_owned(),
        ..ServerConfig::default()
    }
}

async fn start_server(binary: PathBuf, dir: &Workdir) -> anyhow::Result<ServerProcess> {
    start_with(binary, server_config(), dir).await
}

async fn start_with(
    binary: PathBuf,
    config: ServerConfig,
    dir: &Workdir,
) -> anyhow::Result<ServerProcess> {
    let config = config.write(dir)?;
    tokio::task::spawn_blocking(move || {
        ServerProcess::spawn(&binary, &config, Duration::from_secs(60))
    })
    .await?
}

/// Stops a server with SIGTERM (so a profiler wrapping it can write its data), killing it
/// if it has not exited after 30 s.
async fn stop(server: ServerProcess) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || server.stop(Duration::from_secs(30))).await??;
    Ok(())
}

/// A `flock-api` binary under measurement: this build, and the build before a change when
/// `--baseline` names one.
struct Build {
    /// Empty when only one build is measured (the rows then read as they always did).
    label: &'static str,
    binary: PathBuf,
}

/// A running server of one build, as the measurements reach it.
struct Target {
    label: &'static str,
    api: String,
    pid: Option<u32>,
}

impl Target {
    fn of(label: &'static str, server: &ServerProcess) -> Self {
        Target {
            label,
            api: format!("http://{}", server.address()),
            pid: Some(server.pid()),
        }
    }

    /// `" [label]"`, or nothing when one build is measured.
    fn tag(&self) -> String {
        tag(self.label)
    }
}

fn tag(label: &str) -> String {
    if label.is_empty() {
        String::new()
    } else {
        format!(" [{label}]")
    }
}

/// The pairs of a run in the order they are measured: this build first on odd runs, the
/// baseline first on even ones, so neither always goes first (the first of a pair was
/// measured faster in most runs of two identical builds).
fn in_turn<T>(run: usize, pairs: impl Iterator<Item = T>) -> Vec<T> {
    let mut pairs: Vec<T> = pairs.collect();
    if run.is_multiple_of(2) {
        pairs.reverse();
    }
    pairs
}

/// The row comparing this build with the baseline: each `(what, this build, baseline)` with
/// their ratio; nothing when one build is measured.
fn comparison(table: &mut Vec<String>, number: &str, figures: &[(String, f64, f64)]) {
    if figures.is_empty() {
        return;
    }
    let text = figures
        .iter()
        .map(|(what, new, old)| format!("{what}: {new:.0} vs {old:.0}, ratio {:.3}", new / old))
        .collect::<Vec<_>>()
        .join("; ");
    table.push(format!(
        "| {number} | this build against the baseline, side by side | {text} | | |"
    ));
}

async fn run(options: &Options) -> anyhow::Result<()> {
    let plan = options.plan();
    let binary = match &options.server {
        Some(path) => path.clone(),
        None => flock_e2e::flock_api_binary()?,
    };
    let builds: Vec<Build> = match &options.baseline {
        None => vec![Build { label: "", binary }],
        Some(baseline) => vec![
            Build {
                label: "this build",
                binary,
            },
            Build {
                label: "baseline",
                binary: baseline.clone(),
            },
        ],
    };
    let started = Instant::now();
    println!("# flock-bench");
    println!();
    println!("date:     {}", today());
    println!("machine:  {}", machine());
    for build in &builds {
        println!("server:   {}{}", build.binary.display(), tag(build.label));
    }
    println!(
        "plan:     {} runs; {} deliveries per throughput run; {} publishes of each kind per \
         latency run; {}/s for {} s; {} pending",
        plan.runs, plan.count, plan.samples, plan.rate, plan.seconds, plan.pending
    );
    println!("payload:  1,024-byte JSON object; {CONNECTIONS} connections per closed-loop client");
    if builds.len() > 1 {
        println!("builds:   every run measures each build in turn, this build first");
    }
    println!();

    let mut table = Vec::new();
    let receiver = Receiver::start(Behaviour::default()).await?;
    let client = measure::client(CONNECTIONS)?;
    let external = if options.runs(Phase::Throughput) || options.runs(Phase::Durable) {
        match external::Tools::find() {
            Some(tools) => Some(External {
                nginx: tools.start_nginx()?,
                tools,
            }),
            None => {
                println!(
                    "external ceiling: wrk or nginx is missing (`{}`); going on with the plain \
                     client's ceiling alone",
                    external::INSTALL
                );
                None
            }
        }
    } else {
        None
    };
    let mut ceilings = None;
    if options.runs(Phase::Throughput) || options.runs(Phase::Publish) || options.runs(Phase::Fixed)
    {
        let bodies = Arc::new(measure::signed_webhooks(1_000)?);
        let warm = plan.count.min(2_000);
        let mut servers = Vec::new();
        let mut targets = Vec::new();
        for build in &builds {
            let dir = Workdir::new()?;
            let server = start_server(build.binary.clone(), &dir).await?;
            println!(
                "flock-api pid {} at {}{}",
                server.pid(),
                server.address(),
                tag(build.label)
            );
            let target = Target::of(build.label, &server);
            // Warm-up: connections, allocators, the server's first workflows.
            measure::ceiling(&client, &receiver, Arc::clone(&bodies), warm).await?;
            measure::flock(&client, &target.api, &receiver, warm).await?;
            servers.push((dir, server));
            targets.push(target);
        }
        if options.runs(Phase::Throughput) {
            ceilings = Some(
                throughput(
                    &plan,
                    &client,
                    &targets,
                    &receiver,
                    bodies,
                    external.as_ref(),
                    &mut table,
                )
                .await?,
            );
        }
        if options.runs(Phase::Publish) {
            publish_latency(&plan, &targets, &receiver, &mut table).await?;
        }
        if options.runs(Phase::Fixed) {
            fixed_rate(&plan, &client, &targets, &receiver, &mut table).await?;
        }
        for (_dir, server) in servers {
            stop(server).await?;
        }
    }
    if options.runs(Phase::Durable) {
        let ceilings = match ceilings {
            Some(ceilings) => ceilings,
            None => {
                let bodies = Arc::new(measure::signed_webhooks(1_000)?);
                Ceilings::measure(&plan, &client, &receiver, &bodies, external.as_ref()).await?
            }
        };
        durable(
            &plan, options, &builds, &client, &receiver, &ceilings, &mut table,
        )
        .await?;
    }
    if options.runs(Phase::Auth) {
        auth_latency(&plan, &builds, &mut table).await?;
    }
    if options.runs(Phase::Neighbour) {
        neighbour(&plan, &builds[0].binary, &client, &receiver, &mut table).await?;
    }
    if options.runs(Phase::Logging) {
        logging(&plan, &builds, &client, &receiver, &mut table).await?;
    }
    if options.runs(Phase::Soak) {
        let secs = options.soak_secs.unwrap_or(30 * 60).max(10);
        let soak = soak::soak(&builds[0].binary, &client, secs, plan.rate).await?;
        let flat = |growth: f64, steady: f64| verdict(growth.abs() < 0.10 * steady.max(1.0));
        table.push(format!(
            "| 8 | soak, {} s at {:.0}/s with webhooks and an agent: resident memory growth per \
             hour over the second half | {:+.1} MiB/h (at {:.1} MiB) | flat within 10% | {} |",
            soak.secs,
            soak.sent_per_sec,
            soak.rss_growth_mib_per_hour,
            soak.rss_steady_mib,
            flat(soak.rss_growth_mib_per_hour, soak.rss_steady_mib)
        ));
        table.push(format!(
            "| 8 | soak: database growth per hour over the second half (retention on) | \
             {:+.1} MiB/h (at {:.1} MiB) | bounded by retention | {} |",
            soak.db_growth_mib_per_hour,
            soak.db_steady_mib,
            flat(soak.db_growth_mib_per_hour, soak.db_steady_mib)
        ));
        table.push(format!(
            "| 8 | soak: accepted publishes whose two webhooks never arrived | {} | 0 | {} |",
            soak.lost,
            verdict(soak.lost == 0)
        ));
    }
    if options.runs(Phase::Memory) {
        // The in-memory store, then the default store (an SQLite file), which keeps pending
        // deliveries out of the process.
        for store in [MemoryStore::Memory, MemoryStore::Sqlite] {
            let mut peaks: Vec<Vec<f64>> = vec![Vec::new(); builds.len()];
            for run in 1..=plan.runs.min(3) {
                for (build, peaks) in in_turn(run, builds.iter().zip(&mut peaks)) {
                    let (idle, peak) = memory(&build.binary, &client, plan.pending, store).await?;
                    println!(
                        "memory run {run}{}: {} store, {} pending; flock-api resident at \
                         start {idle:.1} MiB, peak {peak:.1} MiB",
                        tag(build.label),
                        store.name(),
                        plan.pending
                    );
                    peaks.push(peak);
                }
            }
            for (build, peaks) in builds.iter().zip(&peaks) {
                let peak = median(peaks);
                table.push(format!(
                    "| 5 | flock-api peak resident memory (VmHWM), {} pending, {} store{} | \
                     {peak:.1} MiB ({:.1} MB) | < 200 MB | {} |",
                    plan.pending,
                    store.name(),
                    tag(build.label),
                    peak * 1.048_576,
                    if plan.pending >= 100_000 {
                        verdict(peak * 1.048_576 < 200.0)
                    } else {
                        "(the target is for 100,000)"
                    }
                ));
            }
            if let [new, old] = peaks.as_slice() {
                comparison(
                    &mut table,
                    "5",
                    &[(
                        format!("peak MiB, {} store", store.name()),
                        median(new),
                        median(old),
                    )],
                );
            }
        }
    }

    println!();
    println!("| # | measure | median | target | |");
    println!("|---|---|---|---|---|");
    for row in table {
        println!("{row}");
    }
    println!();
    println!("whole program: {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

/// `nginx` and the `wrk` that posts to it: the external ceiling.
struct External {
    tools: external::Tools,
    nginx: external::Nginx,
}

/// The two ceilings every Flock throughput figure is a ratio to: the plain pooled client
/// posting to this program's receiver, and `wrk` posting to `nginx` (when both are installed).
#[derive(Debug, Clone, Copy)]
struct Ceilings {
    plain: f64,
    external: Option<f64>,
}

impl Ceilings {
    /// Medians of a few runs of each, for measurements that did not take their own.
    async fn measure(
        plan: &Plan,
        client: &reqwest::Client,
        receiver: &Receiver,
        bodies: &Arc<Vec<measure::Prepared>>,
        external: Option<&External>,
    ) -> anyhow::Result<Ceilings> {
        let (mut plain, mut wrk) = (Vec::new(), Vec::new());
        for run in 1..=plan.runs.min(3) {
            let ceiling =
                measure::ceiling(client, receiver, Arc::clone(bodies), plan.count).await?;
            plain.push(ceiling);
            let line = match external {
                Some(external) => {
                    let rate = wrk_ceiling(plan, external, bodies).await?;
                    wrk.push(rate);
                    format!("; wrk → nginx {rate:>6.0} req/s")
                }
                None => String::new(),
            };
            println!("ceilings run {run}: plain client {ceiling:>6.0} req/s{line}");
        }
        Ok(Ceilings {
            plain: median(&plain),
            external: external.map(|_| median(&wrk)),
        })
    }

    /// `rate` as a ratio to each ceiling: `0.67 of the plain client, 0.18 of wrk → nginx`.
    fn ratios(&self, rate: f64) -> String {
        let mut text = format!("{:.2} of the plain client", rate / self.plain);
        if let Some(external) = self.external {
            text.push_str(&format!(", {:.2} of wrk → nginx", rate / external));
        }
        text
    }
}

/// One `wrk` run against `nginx` with the first of `bodies`, off the async runtime.
async fn wrk_ceiling(
    plan: &Plan,
    external: &External,
    bodies: &[measure::Prepared],
) -> anyhow::Result<f64> {
    let request = bodies.first().context("no webhook body")?.clone();
    let secs = plan.wrk_secs;
    tokio::task::block_in_place(|| external.tools.wrk(&external.nginx, &request, secs))
}

/// What the throughput runs measured on one build.
#[derive(Default)]
struct Rates {
    drains: Vec<f64>,
    flocks: Vec<f64>,
    publishes: Vec<f64>,
    drain_cpu: Vec<f64>,
    flock_cpu: Vec<f64>,
}

/// 1 and 2: the ceilings and Flock, alternating run by run (and build by build).
async fn throughput(
    plan: &Plan,
    client: &reqwest::Client,
    targets: &[Target],
    receiver: &Receiver,
    bodies: Arc<Vec<measure::Prepared>>,
    external: Option<&External>,
    table: &mut Vec<String>,
) -> anyhow::Result<Ceilings> {
    let (mut ceilings, mut wrks) = (Vec::new(), Vec::new());
    let mut rates: Vec<Rates> = targets.iter().map(|_| Rates::default()).collect();
    let per_delivery = |cpu: f64| cpu / plan.count as f64 * 1e6;
    for run in 1..=plan.runs {
        let ceiling = measure::ceiling(client, receiver, Arc::clone(&bodies), plan.count).await?;
        let wrk = match external {
            Some(external) => {
                let rate = wrk_ceiling(plan, external, &bodies).await?;
                wrks.push(rate);
                format!("; wrk → nginx {rate:>6.0} req/s")
            }
            None => String::new(),
        };
        println!("throughput run {run}: ceiling {ceiling:>6.0} req/s{wrk}");
        ceilings.push(ceiling);
        for (target, rates) in in_turn(run, targets.iter().zip(&mut rates)) {
            let cpu = cpu_seconds(target.pid);
            let drain = measure::drain(client, &target.api, receiver, plan.count).await?;
            let cpu_drained = cpu_seconds(target.pid);
            let (flock, publish) =
                measure::flock(client, &target.api, receiver, plan.count).await?;
            let cpu_flocked = cpu_seconds(target.pid);
            println!(
                "throughput run {run}{}: flock delivering {drain:>6.0}/s ({:.2}); publish and \
                 deliver {flock:>6.0}/s ({:.2}), publishes answered {publish:>6.0}/s; flock-api \
                 CPU per delivery {:.0} µs and {:.0} µs",
                target.tag(),
                drain / ceiling,
                flock / ceiling,
                per_delivery(cpu_drained - cpu),
                per_delivery(cpu_flocked - cpu_drained),
            );
            rates.drain_cpu.push(per_delivery(cpu_drained - cpu));
            rates
                .flock_cpu
                .push(per_delivery(cpu_flocked - cpu_drained));
            rates.drains.push(drain);
            rates.flocks.push(flock);
            rates.publishes.push(publish);
        }
    }
    let measured = Ceilings {
        plain: median(&ceilings),
        external: external.map(|_| median(&wrks)),
    };
    // The plain client's ratio run by run (each Flock run sits beside its own ceiling run).
    let ratio = |xs: &[f64]| {
        median(
            &xs.iter()
                .zip(&ceilings)
                .map(|(x, c)| x / c)
                .collect::<Vec<_>>(),
        )
    };
    let beside_wrk = |rate: f64| {
        measured.external.map_or_else(String::new, |wrk| {
            format!(", {:.2} of wrk → nginx", rate / wrk)
        })
    };
    table.push(format!(
        "| 1 | ceiling: plain pooled client, {CONNECTIONS} connections | {:.0} requests/s | | |",
        measured.plain
    ));
    match measured.external {
        Some(wrk) => table.push(format!(
            "| 1 | external ceiling: wrk → nginx (`return 200`), the same bodies, {CONNECTIONS} \
             connections | {wrk:.0} requests/s | | |"
        )),
        None => table.push(format!(
            "| 1 | external ceiling: wrk → nginx | not measured: `{}` | | |",
            external::INSTALL
        )),
    }
    for (target, rates) in targets.iter().zip(&rates) {
        let (drain_ratio, flock_ratio) = (ratio(&rates.drains), ratio(&rates.flocks));
        let (drain, flock) = (median(&rates.drains), median(&rates.flocks));
        let tag = target.tag();
        table.push(format!(
            "| 2 | Flock delivering: published through the API while the receiver held, then \
             released{tag} | {drain:.0} deliveries/s, {drain_ratio:.2} of the plain client{} | \
             ≥ 0.5 | {} |",
            beside_wrk(drain),
            verdict(drain_ratio >= 0.5)
        ));
        table.push(format!(
            "| 2 | Flock publishing and delivering at once, first publish to last delivery{tag} | \
             {flock:.0} deliveries/s, {flock_ratio:.2} of the plain client{} ({:.0} publishes/s \
             answered) | (≥ 0.5) | {} |",
            beside_wrk(flock),
            median(&rates.publishes),
            verdict(flock_ratio >= 0.5)
        ));
        table.push(format!(
            "| 2 | flock-api CPU time per delivery: publish (while held) and deliver; publish and \
             deliver at once{tag} | {:.0} µs; {:.0} µs | | |",
            median(&rates.drain_cpu),
            median(&rates.flock_cpu)
        ));
    }
    if let [new, old] = rates.as_slice() {
        comparison(
            table,
            "2",
            &[
                (
                    "delivering /s".to_owned(),
                    median(&new.drains),
                    median(&old.drains),
                ),
                (
                    "at once /s".to_owned(),
                    median(&new.flocks),
                    median(&old.flocks),
                ),
                (
                    "CPU µs per delivery, delivering".to_owned(),
                    median(&new.drain_cpu),
                    median(&old.drain_cpu),
                ),
                (
                    "CPU µs per delivery, at once".to_owned(),
                    median(&new.flock_cpu),
                    median(&old.flock_cpu),
                ),
            ],
        );
    }
    Ok(measured)
}

/// What one store measured on one build.
#[derive(Default)]
struct StoreRuns {
    rates: Rates,
    with50: Vec<f64>,
    without50: Vec<f64>,
}

/// 6: the delivering and the publishing-and-delivering measurements of row 2, with each store,
/// each on a server of its own started for it (a fresh SQLite file in a temporary directory; a
/// fresh Postgres database, dropped after): memory beside the durable stores, in one run.
async fn durable(
    plan: &Plan,
    options: &Options,
    builds: &[Build],
    client: &reqwest::Client,
    receiver: &Receiver,
    ceilings: &Ceilings,
    table: &mut Vec<String>,
) -> anyhow::Result<()> {
    let postgres = options
        .postgres
        .clone()
        .or_else(|| std::env::var("FLOCK_TEST_POSTGRES_URL").ok())
        .filter(|url| !url.is_empty());
    let mut stores: Vec<(&str, Option<String>)> = vec![("memory", None), ("SQLite", None)];
    if postgres.is_some() {
        stores.push(("Postgres", postgres));
    } else {
        println!("durable: no Postgres server (--postgres or FLOCK_TEST_POSTGRES_URL); skipped");
    }
    let per = |cpu: f64| cpu / plan.count as f64 * 1e6;
    // (store, build label, what it measured)
    let mut measured: Vec<(&str, &'static str, StoreRuns)> = Vec::new();
    for (name, admin) in stores {
        // One server per build, each with a fresh store of this kind.
        let mut servers = Vec::new();
        for build in builds {
            let dir = Workdir::new()?;
            let database = match &admin {
                Some(admin) => Some(
                    flock_store::testing::PostgresTestDatabase::create_on(admin)
                        .await
                        .map_err(|e| anyhow::anyhow!("Postgres: {e}"))?,
                ),
                None => None,
            };
            let store_url = match (&database, name) {
                (Some(db), _) => db.url_text(),
                (None, "SQLite") => format!("sqlite://{}", dir.path().join("flock.db").display()),
                (None, _) => "memory://".to_owned(),
            };
            let config = ServerConfig {
                store_url,
                ..server_config()
            };
            let server = start_with(build.binary.clone(), config, &dir).await?;
            println!(
                "durable: {name}{}: flock-api pid {} at {}",
                tag(build.label),
                server.pid(),
                server.address()
            );
            let target = Target::of(build.label, &server);
            measure::flock(client, &target.api, receiver, plan.count.min(2_000)).await?;
            servers.push((dir, database, server, target, StoreRuns::default()));
        }
        for run in 1..=plan.runs {
            for (_, _, _, target, runs) in in_turn(run, servers.iter_mut()) {
                let before = cpu_seconds(target.pid);
                let drain = measure::drain(client, &target.api, receiver, plan.count).await?;
                let between = cpu_seconds(target.pid);
                let (flock, publish) =
                    measure::flock(client, &target.api, receiver, plan.count).await?;
                let after = cpu_seconds(target.pid);
                println!(
                    "durable run {run}: {name}{}: delivering {drain:>6.0}/s; publish and deliver \
                     {flock:>6.0}/s (publishes answered {publish:>6.0}/s); flock-api CPU per \
                     delivery {:.0} µs and {:.0} µs",
                    target.tag(),
                    per(between - before),
                    per(after - between)
                );
                runs.rates.drains.push(drain);
                runs.rates.flocks.push(flock);
                runs.rates.publishes.push(publish);
                runs.rates.drain_cpu.push(per(between - before));
                runs.rates.flock_cpu.push(per(after - between));
            }
        }
        // Publish latency with and without a webhook on this store, as in measurement 3.
        for run in 1..=plan.runs.min(3) {
            for (_, _, _, target, runs) in in_turn(run, servers.iter_mut()) {
                let (mut with, mut without) =
                    measure::publish_latency(&target.api, receiver, plan.samples).await?;
                let (w50, n50) = (percentile(&mut with, 50.0), percentile(&mut without, 50.0));
                println!(
                    "durable publish latency run {run}: {name}{}: with webhook p50 {w50:.0} µs; \
                     without p50 {n50:.0} µs; ratio p50 {:.3}",
                    target.tag(),
                    w50 / n50
                );
                runs.with50.push(w50);
                runs.without50.push(n50);
            }
        }
        for (_dir, database, server, target, runs) in servers {
            stop(server).await?;
            drop(database);
            measured.push((name, target.label, runs));
        }
    }
    let listed = |figure: &dyn Fn(&StoreRuns) -> String| {
        measured
            .iter()
            .map(|(name, label, runs)| format!("{name}{} {}", tag(label), figure(runs)))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let sqlite = measured
        .iter()
        .find(|(name, label, _)| *name == "SQLite" && *label == builds[0].label)
        .map_or(0.0, |(_, _, runs)| median(&runs.rates.drains));
    table.push(format!(
        "| 6 | deliveries per second by store, delivering (published while the receiver held, \
         then released), each store on a fresh server | {} | SQLite ≥ 10,000/s | {} |",
        listed(&|r| {
            let rate = median(&r.rates.drains);
            format!("{rate:.0}/s ({})", ceilings.ratios(rate))
        }),
        verdict(sqlite >= 10_000.0)
    ));
    table.push(format!(
        "| 6 | by store, publishing and delivering at once, first publish to last delivery | {} | | |",
        listed(&|r| {
            let rate = median(&r.rates.flocks);
            format!("{rate:.0}/s ({})", ceilings.ratios(rate))
        })
    ));
    table.push(format!(
        "| 6 | publish latency p50 by store, without / with a webhook (one at a time, interleaved) | {} | ≤ 1.05 | |",
        listed(&|r| {
            let (without, with) = (median(&r.without50), median(&r.with50));
            format!("{without:.0} / {with:.0} µs, ratio {:.3}", with / without)
        })
    ));
    table.push(format!(
        "| 6 | flock-api CPU time per delivery by store: publish (while held) and deliver; at once | {} | | |",
        listed(&|r| format!(
            "{:.0} µs, {:.0} µs",
            median(&r.rates.drain_cpu),
            median(&r.rates.flock_cpu)
        ))
    ));
    if builds.len() > 1 {
        let mut figures = Vec::new();
        for pair in measured.chunks(2) {
            if let [(name, _, new), (_, _, old)] = pair {
                figures.push((
                    format!("{name} delivering /s"),
                    median(&new.rates.drains),
                    median(&old.rates.drains),
                ));
                figures.push((
                    format!("{name} at once /s"),
                    median(&new.rates.flocks),
                    median(&old.rates.flocks),
                ));
                figures.push((
                    format!("{name} CPU µs per delivery at once"),
                    median(&new.rates.flock_cpu),
                    median(&old.rates.flock_cpu),
                ));
                figures.push((
                    format!("{name} publish p50 µs with a webhook"),
                    median(&new.with50),
                    median(&old.with50),
                ));
            }
        }
        comparison(table, "6", &figures);
    }
    Ok(())
}

/// The log levels measurement 10 compares: the server's default, and `warn` with the start-up
/// lines (which say where it listens), as every other measurement runs.
const LOG_LEVELS: [(&str, &str); 2] = [
    ("info (the default)", "info"),
    ("warn", "warn,flock_api::startup=info"),
];

/// 10: what the default log level costs in server CPU: for each build, two fresh servers on
/// the default store (an SQLite file in a temporary directory), one logging at `info` (the
/// default, a line per request) and one at `warn`, each writing its lines to a pipe this
/// program reads, as a process supervisor would; run for run, taking turns, the publishing and
/// delivering at once of row 2 against each, and flock-api's CPU time per delivery.
async fn logging(
    plan: &Plan,
    builds: &[Build],
    client: &reqwest::Client,
    receiver: &Receiver,
    table: &mut Vec<String>,
) -> anyhow::Result<()> {
    let per = |cpu: f64| cpu / plan.count as f64 * 1e6;
    // Per build: a server at each level, with its CPU µs per delivery and its deliveries per
    // second, run by run.
    let mut servers = Vec::new();
    for build in builds {
        for (name, level) in LOG_LEVELS {
            let dir = Workdir::new()?;
            let config = ServerConfig {
                store_url: format!("sqlite://{}", dir.path().join("flock.db").display()),
                log_level: level.to_owned(),
                ..server_config()
            };
            let server = start_with(build.binary.clone(), config, &dir).await?;
            println!(
                "logging: {name}{}: flock-api pid {} at {}",
                tag(build.label),
                server.pid(),
                server.address()
            );
            let target = Target::of(build.label, &server);
            measure::flock(client, &target.api, receiver, plan.count.min(2_000)).await?;
            servers.push((dir, server, target, Vec::<f64>::new(), Vec::<f64>::new()));
        }
    }
    // Per build: the runs' ratios, info over warn.
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); builds.len()];
    for run in 1..=plan.runs {
        for (_, _, target, cpu, rates) in in_turn(run, servers.iter_mut()) {
            let before = cpu_seconds(target.pid);
            let (rate, _) = measure::flock(client, &target.api, receiver, plan.count).await?;
            cpu.push(per(cpu_seconds(target.pid) - before));
            rates.push(rate);
        }
        for (pair, ratios) in servers.chunks(LOG_LEVELS.len()).zip(&mut ratios) {
            if let [
                (_, _, target, info, info_rates),
                (_, _, _, warn, warn_rates),
            ] = pair
            {
                let (info, warn) = (info[run - 1], warn[run - 1]);
                println!(
                    "logging run {run}{}: SQLite, publish and deliver at once ({:.0}/s and \
                     {:.0}/s); flock-api CPU per delivery at {} {info:.0} µs, at {} {warn:.0} \
                     µs; ratio {:.3}",
                    target.tag(),
                    info_rates[run - 1],
                    warn_rates[run - 1],
                    LOG_LEVELS[0].0,
                    LOG_LEVELS[1].0,
                    info / warn
                );
                ratios.push(info / warn);
            }
        }
    }
    let mut medians = Vec::new();
    for (pair, ratios) in servers.chunks(LOG_LEVELS.len()).zip(&ratios) {
        if let [(_, _, target, info, _), (_, _, _, warn, _)] = pair {
            let (info, warn, ratio) = (median(info), median(warn), median(ratios));
            table.push(format!(
                "| 10 | flock-api CPU time per delivery at the default log level (`info`, a line \
                 per request to a pipe) against `warn`, SQLite, publishing and delivering at \
                 once, alternating{} | {info:.0} µs vs {warn:.0} µs; ratio {ratio:.3} | ≤ 1.03 | \
                 {} |",
                target.tag(),
                verdict(ratio <= 1.03)
            ));
            medians.push((info, warn));
        }
    }
    for (_dir, server, ..) in servers {
        stop(server).await?;
    }
    if let [new, old] = medians.as_slice() {
        comparison(
            table,
            "10",
            &[
                ("CPU µs per delivery at info".to_owned(), new.0, old.0),
                ("CPU µs per delivery at warn".to_owned(), new.1, old.1),
            ],
        );
    }
    Ok(())
}

/// 3: publish latency with and without a webhook, interleaved.
async fn publish_latency(
    plan: &Plan,
    targets: &[Target],
    receiver: &Receiver,
    table: &mut Vec<String>,
) -> anyhow::Result<()> {
    // Per build: p50 and p99 with, p50 and p99 without.
    let mut figures: Vec<[Vec<f64>; 4]> = targets.iter().map(|_| Default::default()).collect();
    for run in 1..=plan.runs {
        for (target, [with50, with99, without50, without99]) in
            in_turn(run, targets.iter().zip(&mut figures))
        {
            let (mut with, mut without) =
                measure::publish_latency(&target.api, receiver, plan.samples).await?;
            let (w50, w99) = (percentile(&mut with, 50.0), percentile(&mut with, 99.0));
            let (n50, n99) = (
                percentile(&mut without, 50.0),
                percentile(&mut without, 99.0),
            );
            println!(
                "publish latency run {run}{}: with webhook p50 {w50:.0} µs p99 {w99:.0} µs; \
                 without p50 {n50:.0} µs p99 {n99:.0} µs; ratio p50 {:.3}",
                target.tag(),
                w50 / n50
            );
            with50.push(w50);
            with99.push(w99);
            without50.push(n50);
            without99.push(n99);
        }
    }
    for (target, [with50, with99, without50, without99]) in targets.iter().zip(&figures) {
        let (w50, w99, n50, n99) = (
            median(with50),
            median(with99),
            median(without50),
            median(without99),
        );
        let tag = target.tag();
        table.push(format!(
            "| 3 | publish latency without a webhook (one at a time, interleaved){tag} | p50 {n50:.0} µs, p99 {n99:.0} µs | | |"
        ));
        table.push(format!(
            "| 3 | publish latency with a webhook (one at a time, interleaved){tag} | p50 {w50:.0} µs, p99 {w99:.0} µs; ratio \
             p50 {:.3}, p99 {:.3} | p50 ≤ 1.05 | {} |",
            w50 / n50,
            w99 / n99,
            verdict(w50 / n50 <= 1.05)
        ));
    }
    if let [new, old] = figures.as_slice() {
        comparison(
            table,
            "3",
            &[
                (
                    "p50 µs without a webhook".to_owned(),
                    median(&new[2]),
                    median(&old[2]),
                ),
                (
                    "p50 µs with a webhook".to_owned(),
                    median(&new[0]),
                    median(&old[0]),
                ),
            ],
        );
    }
    Ok(())
}

/// A server of `binary` on an SQLite file in `auth.mode` `mode`; for `keys`, with a key made
/// offline by `flock-api keys create` before the start.
async fn auth_server(
    binary: &std::path::Path,
    mode: &str,
    dir: &Workdir,
) -> anyhow::Result<(ServerProcess, Option<String>)> {
    let config = ServerConfig {
        store_url: format!("sqlite://{}", dir.path().join("flock.db").display()),
        extra_toml: format!("[auth]\nmode = \"{mode}\"\n"),
        ..server_config()
    };
    let path = config.write(dir)?;
    let key = if mode == "keys" {
        let output = std::process::Command::new(binary)
            .args([
                "keys", "create", "--tenant", "bench", "--scope", "publish", "--config",
            ])
            .arg(&path)
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "flock-api keys create: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let out = String::from_utf8_lossy(&output.stdout);
        Some(out.lines().next().unwrap_or_default().to_owned())
    } else {
        None
    };
    let binary = binary.to_path_buf();
    let server = tokio::task::spawn_blocking(move || {
        ServerProcess::spawn(&binary, &path, Duration::from_secs(60))
    })
    .await??;
    Ok((server, key))
}

/// 7: publish latency with a key (`auth.mode = "keys"`) against open mode (no key), two
/// servers of each build on SQLite files, publishes one at a time alternating between them.
async fn auth_latency(
    plan: &Plan,
    builds: &[Build],
    table: &mut Vec<String>,
) -> anyhow::Result<()> {
    for build in builds {
        let (keyed_dir, open_dir) = (Workdir::new()?, Workdir::new()?);
        let (keyed, key) = auth_server(&build.binary, "keys", &keyed_dir).await?;
        let (open, _) = auth_server(&build.binary, "open", &open_dir).await?;
        let key = key.unwrap_or_default();
        let (keyed_api, open_api) = (
            format!("http://{}", keyed.address()),
            format!("http://{}", open.address()),
        );
        let (mut keyed50, mut keyed99, mut open50, mut open99) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for run in 1..=plan.runs {
            let (mut with, mut without) =
                measure::keyed_and_open_latency(&keyed_api, &key, &open_api, plan.samples).await?;
            let (k50, k99) = (percentile(&mut with, 50.0), percentile(&mut with, 99.0));
            let (o50, o99) = (
                percentile(&mut without, 50.0),
                percentile(&mut without, 99.0),
            );
            println!(
                "auth latency run {run}{}: with a key (keys mode) p50 {k50:.0} µs p99 {k99:.0} µs; \
                 open mode p50 {o50:.0} µs p99 {o99:.0} µs; ratio p50 {:.3}",
                tag(build.label),
                k50 / o50
            );
            keyed50.push(k50);
            keyed99.push(k99);
            open50.push(o50);
            open99.push(o99);
        }
        stop(keyed).await?;
        stop(open).await?;
        let (k50, k99, o50, o99) = (
            median(&keyed50),
            median(&keyed99),
            median(&open50),
            median(&open99),
        );
        let ratio = k50 / o50;
        table.push(format!(
            "| 7 | publish latency with an API key (keys mode) against open mode, SQLite, one at a \
             time, alternating{} | p50 {k50:.0} vs {o50:.0} µs, p99 {k99:.0} vs {o99:.0} µs; ratio \
             p50 {ratio:.3} | p50 ≤ 1.03 | {} |",
            tag(build.label),
            verdict(ratio <= 1.03)
        ));
    }
    Ok(())
}

/// 4: creation to receiver 2xx at a fixed rate.
async fn fixed_rate(
    plan: &Plan,
    client: &reqwest::Client,
    targets: &[Target],
    receiver: &Receiver,
    table: &mut Vec<String>,
) -> anyhow::Result<()> {
    // Per build: p50, p95, p99 and the achieved rate of each run.
    let mut figures: Vec<[Vec<f64>; 4]> = targets.iter().map(|_| Default::default()).collect();
    for run in 1..=plan.runs.min(3) {
        for (target, [p50s, p95s, p99s, rates]) in in_turn(run, targets.iter().zip(&mut figures)) {
            let mut fixed =
                measure::fixed_rate(client, &target.api, receiver, plan.rate, plan.seconds).await?;
            let l = &mut fixed.latencies_ms;
            let (p50, p95, p99, max) = (
                percentile(l, 50.0),
                percentile(l, 95.0),
                percentile(l, 99.0),
                percentile(l, 100.0),
            );
            println!(
                "fixed rate run {run}{}: {:.0} sent/s, {} latencies: p50 {p50:.2} ms p95 \
                 {p95:.2} ms p99 {p99:.2} ms max {max:.2} ms",
                target.tag(),
                fixed.sent_per_sec,
                l.len()
            );
            p50s.push(p50);
            p95s.push(p95);
            p99s.push(p99);
            rates.push(fixed.sent_per_sec);
        }
    }
    for (target, [p50s, p95s, p99s, rates]) in targets.iter().zip(&figures) {
        let (p50, p95, p99) = (median(p50s), median(p95s), median(p99s));
        table.push(format!(
            "| 4 | creation → receiver 2xx, {}/s open loop ({:.0}/s achieved){} | p50 {p50:.2} ms, \
             p95 {p95:.2} ms, p99 {p99:.2} ms | p99 < 10 ms | {} |",
            plan.rate,
            median(rates),
            target.tag(),
            verdict(p99 < 10.0)
        ));
    }
    if let [new, old] = figures.as_slice() {
        // In microseconds, so the comparison's whole numbers keep their precision.
        comparison(
            table,
            "4",
            &[
                (
                    "p50 µs".to_owned(),
                    median(&new[0]) * 1e3,
                    median(&old[0]) * 1e3,
                ),
                (
                    "p99 µs".to_owned(),
                    median(&new[2]) * 1e3,
                    median(&old[2]) * 1e3,
                ),
            ],
        );
    }
    Ok(())
}

/// The store of a memory measurement.
#[derive(Debug, Clone, Copy)]
enum MemoryStore {
    /// `memory://`.
    Memory,
    /// An SQLite file in the run's directory (the product's default store).
    Sqlite,
}

impl MemoryStore {
    fn name(self) -> &'static str {
        match self {
            MemoryStore::Memory => "memory",
            MemoryStore::Sqlite => "SQLite",
        }
    }
}

/// A fresh server on `store`; `pending` artifacts published with a webhook to a receiver that
/// never answers; its resident memory at start and its peak (VmHWM) once all are pending, in
/// MiB.
async fn memory(
    binary: &std::path::Path,
    client: &reqwest::Client,
    pending: usize,
    store: MemoryStore,
) -> anyhow::Result<(f64, f64)> {
    let dead = Receiver::start(Behaviour {
        never_answer: true,
        ..Behaviour::default()
    })
    .await?;
    let dir = Workdir::new()?;
    let server = match store {
        MemoryStore::Memory => start_server(binary.to_path_buf(), &dir).await?,
        MemoryStore::Sqlite => {
            let config = ServerConfig {
                store_url: format!("sqlite://{}", dir.path().join("flock.db").display()),
                ..server_config()
            };
            start_with(binary.to_path_buf(), config, &dir).await?
        }
    };
    let api_url = format!("http://{}", server.address());
    let api = Api::new(server.address())?;
    println!(
        "memory: flock-api pid {} at {}",
        server.pid(),
        server.address()
    );
    let idle = server.memory_kib("VmRSS")? as f64 / 1024.0;
    let url = format!("{api_url}/api/v1/artifacts");
    let body = Arc::new(vec![measure::publish_body(Some(&dead.url()))]);
    measure::closed_loop(client, &url, body, pending, 202).await?;
    // Every publish was answered, so every delivery is in the outbox; check it.
    let deadline = Instant::now() + limit_for(pending);
    loop {
        let metrics = api.metrics().await?;
        let gauge = |name| flock_e2e::metric(&metrics, name, &[]).unwrap_or(0.0);
        let held =
            gauge("flock_webhook_deliveries_pending") + gauge("flock_webhook_deliveries_in_flight");
        if held as usize >= pending {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {held} of {pending} deliveries pending or in flight"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the first attempts time out and be recorded, then read the peak.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let peak = server.memory_kib("VmHWM").context("VmHWM")? as f64 / 1024.0;
    stop(server).await?;
    Ok((idle, peak))
}

/// The good receiver's rate in the noisy-neighbour measurement, per second.
const NEIGHBOUR_RATE: u32 = 500;
/// The black hole's pending deliveries in the noisy-neighbour measurement.
const NEIGHBOUR_PENDING: usize = 10_000;

/// 9: a good receiver's creation-to-delivery latency at 500/s on the default store (SQLite),
/// alone and then beside a black hole (a receiver that reads each request and never answers)
/// holding 10,000 pending deliveries, side by side in each run. Only this build: a build
/// without receiver isolation gives every slot to the black hole, and the good receiver's
/// deliveries wait behind its 10-second timeouts for minutes.
async fn neighbour(
    plan: &Plan,
    binary: &std::path::Path,
    client: &reqwest::Client,
    receiver: &Receiver,
    table: &mut Vec<String>,
) -> anyhow::Result<()> {
    let mut ratios = Vec::new();
    let (mut alone_p99s, mut beside_p99s) = (Vec::new(), Vec::new());
    for run in 1..=plan.runs.min(3) {
        let dir = Workdir::new()?;
        let config = ServerConfig {
            store_url: format!("sqlite://{}", dir.path().join("flock.db").display()),
            ..server_config()
        };
        let server = start_with(binary.to_path_buf(), config, &dir).await?;
        let api = Api::new(server.address())?;
        let api_url = format!("http://{}", server.address());
        println!(
            "neighbour run {run}: flock-api pid {} at {}",
            server.pid(),
            server.address()
        );
        let mut alone =
            measure::fixed_rate(client, &api_url, receiver, NEIGHBOUR_RATE, plan.seconds).await?;
        let hole = Receiver::start(Behaviour {
            never_answer: true,
            ..Behaviour::default()
        })
        .await?;
        let body = Arc::new(vec![measure::publish_body(Some(&hole.url()))]);
        let url = format!("{api_url}/api/v1/artifacts");
        measure::closed_loop(client, &url, body, NEIGHBOUR_PENDING, 202).await?;
        // Every delivery to the black hole in flight or held before the measurement starts.
        let deadline = Instant::now() + limit_for(NEIGHBOUR_PENDING);
        let destination = {
            let url = hole.url();
            let after = url.find("://").map_or(0, |i| i + 3);
            let end = url[after..].find('/').map_or(url.len(), |i| after + i);
            url[..end].to_owned()
        };
        loop {
            let page = api.get_json("/api/v1/webhooks/destinations").await?;
            let waiting = page["destinations"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|d| d["destination"] == destination.as_str())
                .map(|d| d["in_flight"].as_u64().unwrap_or(0) + d["held"].as_u64().unwrap_or(0))
                .sum::<u64>();
            if waiting as usize >= NEIGHBOUR_PENDING {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {waiting} of {NEIGHBOUR_PENDING} black-hole deliveries in flight or held"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut beside =
            measure::fixed_rate(client, &api_url, receiver, NEIGHBOUR_RATE, plan.seconds).await?;
        let (alone_p99, beside_p99) = (
            percentile(&mut alone.latencies_ms, 99.0),
            percentile(&mut beside.latencies_ms, 99.0),
        );
        println!(
            "neighbour run {run}: good receiver p99 alone {alone_p99:.2} ms ({:.0}/s), beside a black hole of {NEIGHBOUR_PENDING} {beside_p99:.2} ms ({:.0}/s); ratio {:.2}",
            alone.sent_per_sec,
            beside.sent_per_sec,
            beside_p99 / alone_p99
        );
        ratios.push(beside_p99 / alone_p99);
        alone_p99s.push(alone_p99);
        beside_p99s.push(beside_p99);
        stop(server).await?;
    }
    let ratio = median(&ratios);
    table.push(format!(
        "| 9 | noisy neighbour (SQLite): a good receiver's creation → 2xx p99 at {NEIGHBOUR_RATE}/s \
         alone, then beside a black hole holding {NEIGHBOUR_PENDING} pending | {:.2} ms alone, \
         {:.2} ms beside: ratio {ratio:.2} | ≤ 1.5 | {} |",
        median(&alone_p99s),
        median(&beside_p99s),
        verdict(ratio <= 1.5)
    ));
    Ok(())
}

/// CPU seconds (user and system, all threads) a process has used so far; 0 without `/proc`.
fn cpu_seconds(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else { return 0.0 };
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start at the state, field 3;
    // utime and stime are fields 14 and 15, in clock ticks of 1/100 s.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn today() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute()
    )
}

/// Cores, CPU model and memory, from the OS.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} cores, {model}, {memory_gib:.0} GiB, Linux {}",
        kernel.trim()
    )
}
