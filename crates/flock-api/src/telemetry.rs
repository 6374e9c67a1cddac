//! Logs and metrics: `tracing-subscriber` set up from the configuration (with `RUST_LOG` winning)
//! and the Prometheus recorder behind `GET /metrics`.

use std::io::IsTerminal as _;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};
pub use crate::log_lines::LogGuard;

/// Installs the global `tracing` subscriber: `RUST_LOG` when set, else `settings.level`; pretty
/// or JSON lines on standard error, with colours only when it is a terminal. A second call
/// (tests start several servers) keeps the first.
///
/// Lines are formatted where they are logged and written in batches by a thread of their own
/// (at most 20 ms after they were logged), so a request's log line costs no system call and
/// no wake-up of another thread (measured by `flock-bench --only logging`). Nothing is dropped:
/// when 4 MiB of lines wait, a caller that logs waits for the writer, as it would for standard
/// error itself. The lines still waiting are written when the returned guard drops (which
/// waits at most 1 s for them, so a stuck standard error cannot keep the process from
/// ending): hold it until the process ends.
///
/// # Errors
/// The writing thread could not be started.
pub fn setup_tracing(settings: &LogSettings) -> std::io::Result<LogGuard> {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.is_empty())
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| {
            EnvFilter::try_new(&settings.level).unwrap_or_else(|_| EnvFilter::new("info"))
        });
    let (writer, guard) = crate::log_lines::start(std::io::stderr())?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    let _already_set = match settings.format {
        LogFormat::Pretty => builder.with_target(true).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    Ok(guard)
}

/// Latency buckets in seconds, from 100 µs to 30 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// How often the recorder's histograms are drained when nobody scrapes `/metrics`.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Drains the recorder's histograms every [`UPKEEP_EVERY`], for as long as the server runs. The
/// recorder keeps every histogram sample until a render or an upkeep folds it into the buckets,
/// so a server nobody scrapes would otherwise grow with every request (measured: about
/// 300 MiB an hour at 1,000 publishes a second, by `flock-bench --soak-secs`).
pub(crate) async fn upkeep(handle: PrometheusHandle) {
    let mut every = tokio::time::interval(UPKEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        handle.run_upkeep();
    }
}

/// The process's Prometheus recorder, installed on first use. The `metrics` facade has one
/// recorder per process by design, so every server in the process shares it.
pub(crate) fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)
                .expect("the bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; the handle then renders
            // nothing, which /metrics shows rather than crashing.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}
