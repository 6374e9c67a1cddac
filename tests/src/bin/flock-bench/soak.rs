//! The soak run (`--soak-secs N`, or `--only soak` for 30 minutes): the real binary on the
//! default store (an SQLite file) with retention on, publishing at `--rate` per second with a
//! webhook each, and an HTTP agent that answers every `Idea` with a `Summary` (so each publish
//! is two artifacts and two webhooks). Every sample prints the server's resident memory, the
//! database's size on disk (file, WAL and shared memory) and its open file descriptors; at the
//! end, the growth per hour over the second half of the run (once steady), and whether every
//! accepted publish was delivered.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use flock_e2e::{Behaviour, Receiver, ServerConfig, Workdir};
use tokio::sync::Semaphore;

use crate::measure;

/// Retention while soaking: short, so that the run reaches the steady state it measures.
const DELIVERY_RETENTION_SECS: u64 = 60;
/// Finished workflows go after this long (at least the idempotency TTL, set alike).
const ARTIFACT_RETENTION_SECS: u64 = 120;
/// Publishes in flight at most; past it the schedule waits (and the run reports falling behind).
const IN_FLIGHT: usize = 256;

/// One sample of the server.
#[derive(Debug, Clone, Copy)]
struct Sample {
    secs: f64,
    rss_mib: f64,
    db_mib: f64,
    fds: usize,
}

/// What the soak found, for the table.
pub(crate) struct Soak {
    pub(crate) secs: u64,
    pub(crate) sent_per_sec: f64,
    pub(crate) rss_growth_mib_per_hour: f64,
    pub(crate) rss_steady_mib: f64,
    pub(crate) db_growth_mib_per_hour: f64,
    pub(crate) db_steady_mib: f64,
    pub(crate) lost: u64,
}

/// Runs the soak against `binary` for `secs` seconds at `rate` publishes per second.
pub(crate) async fn soak(
    binary: &Path,
    client: &reqwest::Client,
    secs: u64,
    rate: u32,
) -> anyhow::Result<Soak> {
    let dir = Workdir::new()?;
    let receiver = Receiver::start(Behaviour::default()).await?;
    let agent = Receiver::start(Behaviour {
        answer: Some(Bytes::from_static(
            br#"{"artifacts":[{"type":"Summary","payload":{"ok":true}}]}"#,
        )),
        ..Behaviour::default()
    })
    .await?;
    let config = ServerConfig {
        store_url: format!("sqlite://{}", dir.path().join("flock.db").display()),
        store_toml: format!(
            "retention_secs = {DELIVERY_RETENTION_SECS}\nartifact_retention_secs = \
             {ARTIFACT_RETENTION_SECS}\nprune_interval_ms = 5000"
        ),
        extra_toml: format!(
            "[idempotency]\nttl_secs = {DELIVERY_RETENTION_SECS}\n\n[[agents]]\nname = \
             \"summarizer\"\nconsumes = [\"Idea\"]\npublishes = [\"Summary\"]\nurl = \"{}\"\n",
            agent.url()
        ),
        ..crate::server_config()
    };
    let server = crate::start_with(binary.to_path_buf(), config, &dir).await?;
    let pid = server.pid();
    let api = format!("http://{}/api/v1/artifacts", server.address());
    let db = dir.path().to_path_buf();
    println!(
        "soak: flock-api pid {pid}, SQLite in {}, {rate}/s for {secs} s; deliveries kept \
         {DELIVERY_RETENTION_SECS} s, finished workflows {ARTIFACT_RETENTION_SECS} s",
        db.display()
    );

    let request = Arc::new(measure::publish_body(Some(&receiver.url())));
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let every = Duration::from_secs((secs / 10).clamp(5, 60));
    let mut samples = Vec::new();
    let mut next_sample = every;
    let started = Instant::now();
    let total = u64::from(rate) * secs;
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for _ in 0..total {
        ticks.tick().await;
        let permit = Arc::clone(&slots).acquire_owned().await?;
        let (client, api, request) = (client.clone(), api.clone(), Arc::clone(&request));
        let (ok, no) = (Arc::clone(&accepted), Arc::clone(&refused));
        tokio::spawn(async move {
            match measure::post_once(&client, &api, &request).await {
                Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                Err(_) => no.fetch_add(1, Ordering::Relaxed),
            };
            drop(permit);
        });
        if started.elapsed() >= next_sample {
            let sample = sample(pid, &db, started)?;
            println!(
                "soak {:>5.0} s: resident {:.1} MiB, database {:.1} MiB, {} open fds; \
                 {} accepted, {} refused, {} webhooks received",
                sample.secs,
                sample.rss_mib,
                sample.db_mib,
                sample.fds,
                accepted.load(Ordering::Relaxed),
                refused.load(Ordering::Relaxed),
                receiver.count()
            );
            samples.push(sample);
            next_sample += every;
        }
    }
    let sent_secs = started.elapsed().as_secs_f64();
    // Every accepted publish is two webhooks (the Idea's and its Summary's).
    let _ = slots.acquire_many(IN_FLIGHT as u32).await?;
    let accepted = accepted.load(Ordering::Relaxed);
    let expected = usize::try_from(accepted * 2).unwrap_or(usize::MAX);
    let drained = receiver.wait_for(expected, Duration::from_secs(120)).await;
    let received = receiver.count() as u64;
    let lost = (accepted * 2).saturating_sub(received);
    if let Err(error) = drained {
        println!("soak: not every webhook arrived within 2 minutes: {error:#}");
    }
    crate::stop(server).await?;

    let steady: Vec<Sample> = samples
        .iter()
        .copied()
        .filter(|s| s.secs >= sent_secs / 2.0)
        .collect();
    let per_hour = |f: fn(&Sample) -> f64| slope(&steady, f) * 3_600.0;
    let last = steady
        .last()
        .copied()
        .context("no sample in the second half")?;
    Ok(Soak {
        secs,
        sent_per_sec: total as f64 / sent_secs,
        rss_growth_mib_per_hour: per_hour(|s| s.rss_mib),
        rss_steady_mib: last.rss_mib,
        db_growth_mib_per_hour: per_hour(|s| s.db_mib),
        db_steady_mib: last.db_mib,
        lost,
    })
}

/// The server's resident memory and open descriptors, and the database's size on disk.
fn sample(pid: u32, dir: &Path, started: Instant) -> anyhow::Result<Sample> {
    let rss = flock_e2e::server::proc_status_kib(pid, "VmRSS")? as f64 / 1024.0;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(Iterator::count)
        .unwrap_or(0);
    let db: u64 = ["flock.db", "flock.db-wal", "flock.db-shm"]
        .iter()
        .filter_map(|name| std::fs::metadata(dir.join(name)).ok())
        .map(|m| m.len())
        .sum();
    Ok(Sample {
        secs: started.elapsed().as_secs_f64(),
        rss_mib: rss,
        db_mib: db as f64 / (1024.0 * 1024.0),
        fds,
    })
}

/// The least-squares slope of `value` over the samples' times, per second.
fn slope(samples: &[Sample], value: fn(&Sample) -> f64) -> f64 {
    let n = samples.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mean_t = samples.iter().map(|s| s.secs).sum::<f64>() / n;
    let mean_v = samples.iter().map(value).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for s in samples {
        num += (s.secs - mean_t) * (value(s) - mean_v);
        den += (s.secs - mean_t).powi(2);
    }
    if den == 0.0 { 0.0 } else { num / den }
}
