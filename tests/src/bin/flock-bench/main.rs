//! `flock-bench`: Flock's figures beside the loopback ceiling, all against one receiver in one
//! run, with the same 1 KiB payloads; prints the machine, each run, and a Markdown table of
//! medians with the brief's targets. `cargo xtask bench` builds it and `flock-api` in release
//! and runs it. Exits non-zero with a message when something does not complete in time.

mod measure;
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
    /// The `flock-api` binary (default: beside this program).
    #[arg(long)]
    server: Option<PathBuf>,
    /// Run only these measurements (for profiling one of them); all by default.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Phase>,
    /// A Postgres server for the durable measurement (a URL whose user may create databases;
    /// the benchmark creates one and drops it). Default: the `FLOCK_TEST_POSTGRES_URL`
    /// variable; without either, the Postgres figures are skipped.
    #[arg(long)]
    postgres: Option<String>,
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
}

/// The counts of one run of the program.
#[derive(Debug, Clone, Copy)]
struct Plan {
    runs: usize,
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
        self.only.is_empty() || self.only.contains(&phase)
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
    let config = server_config().write(dir)?;
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

async fn run(options: &Options) -> anyhow::Result<()> {
    let plan = options.plan();
    let binary = match &options.server {
        Some(path) => path.clone(),
        None => flock_e2e::flock_api_binary()?,
    };
    let started = Instant::now();
    println!("# flock-bench");
    println!();
    println!("date:     {}", today());
    println!("machine:  {}", machine());
    println!("server:   {}", binary.display());
    println!(
        "plan:     {} runs; {} deliveries per throughput run; {} publishes of each kind per \
         latency run; {}/s for {} s; {} pending",
        plan.runs, plan.count, plan.samples, plan.rate, plan.seconds, plan.pending
    );
    println!("payload:  1,024-byte JSON object; {CONNECTIONS} connections per closed-loop client");
    println!();

    let mut table = Vec::new();
    let receiver = Receiver::start(Behaviour::default()).await?;
    let client = measure::client(CONNECTIONS)?;
    if options.runs(Phase::Throughput) || options.runs(Phase::Publish) || options.runs(Phase::Fixed)
    {
        let dir = Workdir::new()?;
        let server = start_server(binary.clone(), &dir).await?;
        println!("flock-api pid {} at {}", server.pid(), server.address());
        let api = format!("http://{}", server.address());
        // Warm-up: connections, allocators, the server's first workflows.
        let bodies = Arc::new(measure::signed_webhooks(1_000)?);
        let warm = plan.count.min(2_000);
        measure::ceiling(&client, &receiver, Arc::clone(&bodies), warm).await?;
        measure::flock(&client, &api, &receiver, warm).await?;
        if options.runs(Phase::Throughput) {
            let server = Some(server.pid());
            throughput(&plan, &client, &api, &receiver, bodies, server, &mut table).await?;
        }
        if options.runs(Phase::Publish) {
            publish_latency(&plan, &api, &receiver, &mut table).await?;
        }
        if options.runs(Phase::Fixed) {
            fixed_rate(&plan, &client, &api, &receiver, &mut table).await?;
        }
        stop(server).await?;
    }
    if options.runs(Phase::Durable) {
        durable(&plan, options, &binary, &client, &receiver, &mut table).await?;
    }
    if options.runs(Phase::Memory) {
        // The in-memory store, then the default store (an SQLite file), which keeps pending
        // deliveries out of the process.
        for store in [MemoryStore::Memory, MemoryStore::Sqlite] {
            let mut peaks = Vec::new();
            for run in 1..=plan.runs.min(3) {
                let (idle, peak) = memory(&binary, &client, plan.pending, store).await?;
                println!(
                    "memory run {run}: {} store, {} pending; flock-api resident at start \
                     {idle:.1} MiB, peak {peak:.1} MiB",
                    store.name(),
                    plan.pending
                );
                peaks.push(peak);
            }
            let peak = median(&peaks);
            table.push(format!(
                "| 5 | flock-api peak resident memory (VmHWM), {} pending, {} store | {peak:.1} \
                 MiB ({:.1} MB) | < 200 MB | {} |",
                plan.pending,
                store.name(),
                peak * 1.048_576,
                if plan.pending >= 100_000 {
                    verdict(peak * 1.048_576 < 200.0)
                } else {
                    "(the target is for 100,000)"
                }
            ));
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

/// 1 and 2: the ceiling and Flock, alternating run by run.
async fn throughput(
    plan: &Plan,
    client: &reqwest::Client,
    api: &str,
    receiver: &Receiver,
    bodies: Arc<Vec<measure::Prepared>>,
    server: Option<u32>,
    table: &mut Vec<String>,
) -> anyhow::Result<()> {
    let (mut ceilings, mut drains, mut flocks, mut publishes) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut drain_cpu, mut flock_cpu) = (Vec::new(), Vec::new());
    let per_delivery = |cpu: f64| cpu / plan.count as f64 * 1e6;
    for run in 1..=plan.runs {
        let ceiling = measure::ceiling(client, receiver, Arc::clone(&bodies), plan.count).await?;
        let cpu = cpu_seconds(server);
        let drain = measure::drain(client, api, receiver, plan.count).await?;
        let cpu_drained = cpu_seconds(server);
        let (flock, publish) = measure::flock(client, api, receiver, plan.count).await?;
        let cpu_flocked = cpu_seconds(server);
        drain_cpu.push(per_delivery(cpu_drained - cpu));
        flock_cpu.push(per_delivery(cpu_flocked - cpu_drained));
        println!(
            "throughput run {run}: ceiling {ceiling:>6.0} req/s; flock delivering \
             {drain:>6.0}/s ({:.2}); publish and deliver {flock:>6.0}/s ({:.2}), publishes \
             answered {publish:>6.0}/s; flock-api CPU per delivery {:.0} µs and {:.0} µs",
            drain / ceiling,
            flock / ceiling,
            per_delivery(cpu_drained - cpu),
            per_delivery(cpu_flocked - cpu_drained),
        );
        ceilings.push(ceiling);
        drains.push(drain);
        flocks.push(flock);
        publishes.push(publish);
    }
    let ratio = |xs: &[f64]| {
        median(
            &xs.iter()
                .zip(&ceilings)
                .map(|(x, c)| x / c)
                .collect::<Vec<_>>(),
        )
    };
    let (drain_ratio, flock_ratio) = (ratio(&drains), ratio(&flocks));
    table.push(format!(
        "| 1 | ceiling: plain pooled client, {CONNECTIONS} connections | {:.0} requests/s | | |",
        median(&ceilings)
    ));
    table.push(format!(
        "| 2 | Flock delivering: published through the API while the receiver held, then \
         released | {:.0} deliveries/s, {drain_ratio:.2} of the ceiling | ≥ 0.5 | {} |",
        median(&drains),
        verdict(drain_ratio >= 0.5)
    ));
    table.push(format!(
        "| 2 | Flock publishing and delivering at once, first publish to last delivery | {:.0} \
         deliveries/s, {flock_ratio:.2} of the ceiling ({:.0} publishes/s answered) | (≥ 0.5) | {} |",
        median(&flocks),
        median(&publishes),
        verdict(flock_ratio >= 0.5)
    ));
    if server.is_some() {
        table.push(format!(
            "| 2 | flock-api CPU time per delivery: publish (while held) and deliver; publish and \
             deliver at once | {:.0} µs; {:.0} µs | | |",
            median(&drain_cpu),
            median(&flock_cpu)
        ));
    }
    Ok(())
}

/// 6: the delivering and the publishing-and-delivering measurements of row 2, with each store,
/// each on a server of its own started for it (a fresh SQLite file in a temporary directory; a
/// fresh Postgres database, dropped after): memory beside the durable stores, in one run.
async fn durable(
    plan: &Plan,
    options: &Options,
    binary: &std::path::Path,
    client: &reqwest::Client,
    receiver: &Receiver,
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
    let (mut delivering, mut at_once, mut cpu, mut latency) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (name, admin) in stores {
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
        }
        .write(&dir)?;
        let binary = binary.to_path_buf();
        let server = tokio::task::spawn_blocking(move || {
            ServerProcess::spawn(&binary, &config, Duration::from_secs(60))
        })
        .await??;
        println!(
            "durable: {name}: flock-api pid {} at {}",
            server.pid(),
            server.address()
        );
        let api = format!("http://{}", server.address());
        let pid = Some(server.pid());
        measure::flock(client, &api, receiver, plan.count.min(2_000)).await?;
        let (mut drains, mut flocks, mut cpus) = (Vec::new(), Vec::new(), Vec::new());
        for run in 1..=plan.runs {
            let before = cpu_seconds(pid);
            let drain = measure::drain(client, &api, receiver, plan.count).await?;
            let between = cpu_seconds(pid);
            let (flock, publish) = measure::flock(client, &api, receiver, plan.count).await?;
            let after = cpu_seconds(pid);
            let per = |cpu: f64| cpu / plan.count as f64 * 1e6;
            println!(
                "durable run {run}: {name}: delivering {drain:>6.0}/s; publish and deliver \
                 {flock:>6.0}/s (publishes answered {publish:>6.0}/s); flock-api CPU per \
                 delivery {:.0} µs and {:.0} µs",
                per(between - before),
                per(after - between)
            );
            drains.push(drain);
            flocks.push(flock);
            cpus.push((per(between - before), per(after - between)));
        }
        // Publish latency with and without a webhook on this store, as in measurement 3.
        let (mut with50, mut without50) = (Vec::new(), Vec::new());
        for run in 1..=plan.runs.min(3) {
            let (mut with, mut without) =
                measure::publish_latency(&api, receiver, plan.samples).await?;
            let (w50, n50) = (percentile(&mut with, 50.0), percentile(&mut without, 50.0));
            println!(
                "durable publish latency run {run}: {name}: with webhook p50 {w50:.0} µs; \
                 without p50 {n50:.0} µs; ratio p50 {:.3}",
                w50 / n50
            );
            with50.push(w50);
            without50.push(n50);
        }
        stop(server).await?;
        drop(database);
        latency.push((name, median(&without50), median(&with50)));
        let (drain_cpu, flock_cpu): (Vec<f64>, Vec<f64>) = cpus.into_iter().unzip();
        delivering.push((name, median(&drains)));
        at_once.push((name, median(&flocks)));
        cpu.push((name, median(&drain_cpu), median(&flock_cpu)));
    }
    let list = |xs: &[(&str, f64)]| {
        xs.iter()
            .map(|(name, rate)| format!("{name} {rate:.0}/s"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let sqlite = delivering
        .iter()
        .find(|(name, _)| *name == "SQLite")
        .map_or(0.0, |(_, rate)| *rate);
    table.push(format!(
        "| 6 | deliveries per second by store, delivering (published while the receiver held, \
         then released), each store on a fresh server | {} | SQLite ≥ 10,000/s | {} |",
        list(&delivering),
        verdict(sqlite >= 10_000.0)
    ));
    table.push(format!(
        "| 6 | by store, publishing and delivering at once, first publish to last delivery | {} | | |",
        list(&at_once)
    ));
    table.push(format!(
        "| 6 | publish latency p50 by store, without / with a webhook (one at a time, interleaved) | {} | ≤ 1.05 | |",
        latency
            .iter()
            .map(|(name, without, with)| format!(
                "{name} {without:.0} / {with:.0} µs, ratio {:.3}",
                with / without
            ))
            .collect::<Vec<_>>()
            .join("; ")
    ));
    table.push(format!(
        "| 6 | flock-api CPU time per delivery by store: publish (while held) and deliver; at once | {} | | |",
        cpu.iter()
            .map(|(name, a, b)| format!("{name} {a:.0} µs, {b:.0} µs"))
            .collect::<Vec<_>>()
            .join("; ")
    ));
    Ok(())
}

/// 3: publish latency with and without a webhook, interleaved.
async fn publish_latency(
    plan: &Plan,
    api: &str,
    receiver: &Receiver,
    table: &mut Vec<String>,
) -> anyhow::Result<()> {
    let (mut with50, mut with99, mut without50, mut without99) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 1..=plan.runs {
        let (mut with, mut without) = measure::publish_latency(api, receiver, plan.samples).await?;
        let (w50, w99) = (percentile(&mut with, 50.0), percentile(&mut with, 99.0));
        let (n50, n99) = (
            percentile(&mut without, 50.0),
            percentile(&mut without, 99.0),
        );
        println!(
            "publish latency run {run}: with webhook p50 {w50:.0} µs p99 {w99:.0} µs; \
             without p50 {n50:.0} µs p99 {n99:.0} µs; ratio p50 {:.3}",
            w50 / n50
        );
        with50.push(w50);
        with99.push(w99);
        without50.push(n50);
        without99.push(n99);
    }
    let (w50, w99, n50, n99) = (
        median(&with50),
        median(&with99),
        median(&without50),
        median(&without99),
    );
    table.push(format!(
        "| 3 | publish latency without a webhook (one at a time, interleaved) | p50 {n50:.0} µs, p99 {n99:.0} µs | | |"
    ));
    table.push(format!(
        "| 3 | publish latency with a webhook (one at a time, interleaved) | p50 {w50:.0} µs, p99 {w99:.0} µs; ratio \
         p50 {:.3}, p99 {:.3} | p50 ≤ 1.05 | {} |",
        w50 / n50,
        w99 / n99,
        verdict(w50 / n50 <= 1.05)
    ));
    Ok(())
}

/// 4: creation to receiver 2xx at a fixed rate.
async fn fixed_rate(
    plan: &Plan,
    client: &reqwest::Client,
    api: &str,
    receiver: &Receiver,
    table: &mut Vec<String>,
) -> anyhow::Result<()> {
    let (mut p50s, mut p95s, mut p99s, mut rates) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 1..=plan.runs.min(3) {
        let mut fixed = measure::fixed_rate(client, api, receiver, plan.rate, plan.seconds).await?;
        let l = &mut fixed.latencies_ms;
        let (p50, p95, p99, max) = (
            percentile(l, 50.0),
            percentile(l, 95.0),
            percentile(l, 99.0),
            percentile(l, 100.0),
        );
        println!(
            "fixed rate run {run}: {:.0} sent/s, {} latencies: p50 {p50:.2} ms p95 {p95:.2} ms \
             p99 {p99:.2} ms max {max:.2} ms",
            fixed.sent_per_sec,
            l.len()
        );
        p50s.push(p50);
        p95s.push(p95);
        p99s.push(p99);
        rates.push(fixed.sent_per_sec);
    }
    let (p50, p95, p99) = (median(&p50s), median(&p95s), median(&p99s));
    table.push(format!(
        "| 4 | creation → receiver 2xx, {}/s open loop ({:.0}/s achieved) | p50 {p50:.2} ms, \
         p95 {p95:.2} ms, p99 {p99:.2} ms | p99 < 10 ms | {} |",
        plan.rate,
        median(&rates),
        verdict(p99 < 10.0)
    ));
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
            }
            .write(&dir)?;
            let binary = binary.to_path_buf();
            tokio::task::spawn_blocking(move || {
                ServerProcess::spawn(&binary, &config, Duration::from_secs(60))
            })
            .await??
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
        let health = api.get_json("/health").await?;
        let held = health["deliveries_pending"].as_u64().unwrap_or(0)
            + health["deliveries_in_flight"].as_u64().unwrap_or(0);
        if held as usize >= pending {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {held} of {pending} deliveries pending: {health}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the first attempts time out and be recorded, then read the peak.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let peak = server.memory_kib("VmHWM").context("VmHWM")? as f64 / 1024.0;
    stop(server).await?;
    Ok((idle, peak))
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
