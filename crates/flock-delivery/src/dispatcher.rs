//! The dispatcher: one loop that claims due deliveries from the outbox in batches, runs up to
//! `concurrency` attempts at once, records each result and reschedules retries by due time.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flock_retry::{Decision, GiveUp};
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tracing::{debug, error, warn};

use crate::config::{ConfigError, DeliveryConfig};
use crate::metrics::Metrics;
use crate::outbox::{
    AttemptView, ClaimedDelivery, ErrorKind, FailureReason, Outbox, OutboxError, Resolution,
};
use crate::sender::{Sender, error_chain};
use crate::ssrf::SsrfGuard;
use crate::time_util::{add, millis, until};

/// How often, at most, the pending gauge is refreshed while attempts keep completing.
const GAUGE_REFRESH: Duration = Duration::from_millis(200);

/// How long an idle dispatcher woken by an enqueue waits before claiming. The publish that
/// enqueued answers its client first instead of sharing the CPU with its own delivery (on two
/// cores that made publishes with a webhook take 1.8 times as long as those without), and
/// deliveries enqueued meanwhile are claimed as one batch. A busy dispatcher's slots do not
/// wait.
const ENQUEUE_COALESCE: Duration = Duration::from_millis(1);

/// The shortest sleep between two looks at the outbox when nothing woke the dispatcher.
const MIN_WAIT: Duration = Duration::from_millis(1);

/// A dispatcher, configured but not started: it owns the shared HTTP client and the SSRF guard.
///
/// [`Dispatcher::start`] spawns its loop on the current tokio runtime. The loop claims due
/// deliveries in batches (never more than the free attempt slots) and starts a task per slot;
/// a slot that finished its attempt claims the next due delivery itself and ends when nothing
/// is due, so a busy dispatcher hands work over without waking its loop. The loop sleeps until
/// the next due time, a new enqueue (then a millisecond more, so that the publish answers
/// first and a burst is claimed at once), a slot that ends or the poll interval, whichever
/// comes first; no task waits per pending delivery.
pub struct Dispatcher {
    shared: Arc<Shared>,
}

struct Shared {
    outbox: Arc<dyn Outbox>,
    sender: Sender,
    config: DeliveryConfig,
    metrics: Metrics,
}

impl Dispatcher {
    /// A dispatcher delivering from `outbox` as `config` says. Metric handles are registered
    /// here, so install a metrics recorder before.
    ///
    /// # Errors
    /// An invalid configuration, or an HTTP client that cannot be built.
    pub fn new(outbox: Arc<dyn Outbox>, config: DeliveryConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let guard = SsrfGuard::new(config.allowed_cidrs.iter().copied());
        let sender = Sender::new(&config, guard)?;
        Ok(Dispatcher {
            shared: Arc::new(Shared {
                outbox,
                sender,
                config,
                metrics: Metrics::register(),
            }),
        })
    }

    /// The SSRF guard it enforces (the API uses the same one to refuse literal addresses).
    pub fn guard(&self) -> &SsrfGuard {
        self.shared.sender.guard()
    }

    /// Starts the loop on the current tokio runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start(self) -> DispatcherHandle {
        let (stop, stopped) = watch::channel(None);
        let task = tokio::spawn(run(Arc::clone(&self.shared), stopped));
        DispatcherHandle {
            stop,
            task,
            shared: self.shared,
        }
    }
}

impl fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispatcher")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

/// A running dispatcher. Dropping it stops claiming and lets the attempts in flight finish in
/// the background; [`DispatcherHandle::shutdown`] does the same with a deadline and a report.
pub struct DispatcherHandle {
    stop: watch::Sender<Option<Instant>>,
    task: JoinHandle<usize>,
    shared: Arc<Shared>,
}

/// What [`DispatcherHandle::shutdown`] left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Deliveries in the outbox still waiting for an attempt.
    pub pending: u64,
    /// Attempts still running at the deadline, abandoned; their deliveries stay claimed until
    /// their leases expire, then any dispatcher on the same outbox claims them again.
    pub in_flight: u64,
    /// Whether the deadline passed before every attempt had finished.
    pub deadline_hit: bool,
}

impl DispatcherHandle {
    /// Stops claiming at once, waits for the attempts in flight until `deadline` has passed,
    /// abandons those still running, and reports what is left. The stop takes effect when this
    /// is called, before the returned future is first polled.
    pub fn shutdown(self, deadline: Duration) -> impl Future<Output = ShutdownReport> + Send {
        let now = Instant::now();
        let at = now
            .checked_add(deadline)
            .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365));
        self.stop.send_replace(Some(at));
        let DispatcherHandle { stop, task, shared } = self;
        async move {
            let abandoned = match task.await {
                Ok(abandoned) => abandoned,
                Err(e) => {
                    error!(error = %e, "the webhook dispatcher loop ended abnormally");
                    0
                }
            };
            drop(stop);
            let counts = match shared.outbox.counts().await {
                Ok(counts) => counts,
                Err(e) => {
                    error!(error = %error_chain(&e), "could not count the deliveries left in the outbox");
                    Default::default()
                }
            };
            shared.metrics.in_flight.set(0.0);
            shared.metrics.pending.set(counts.pending as f64);
            let in_flight = u64::try_from(abandoned).unwrap_or(u64::MAX);
            ShutdownReport {
                pending: counts.pending,
                in_flight,
                deadline_hit: in_flight > 0,
            }
        }
    }

    /// Whether the loop is still running.
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// The outbox it delivers from.
    pub fn outbox(&self) -> &Arc<dyn Outbox> {
        &self.shared.outbox
    }

    /// The SSRF guard it enforces.
    pub fn guard(&self) -> &SsrfGuard {
        self.shared.sender.guard()
    }
}

impl fmt::Debug for DispatcherHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DispatcherHandle")
            .field("config", &self.shared.config)
            .field("running", &self.is_running())
            .finish_non_exhaustive()
    }
}

fn stop_requested(stop: &watch::Receiver<Option<Instant>>) -> bool {
    stop.has_changed().is_err() || stop.borrow().is_some()
}

/// The loop; returns how many attempts it abandoned at the shutdown deadline.
async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<Option<Instant>>) -> usize {
    let config = &shared.config;
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut gauge_refreshed: Option<Instant> = None;
    loop {
        while let Some(joined) = tasks.try_join_next() {
            check_joined(joined);
        }
        if stop_requested(&stop) {
            break;
        }
        let free = config.concurrency.saturating_sub(tasks.len());
        let mut claim_failed = false;
        if free > 0 {
            match shared
                .outbox
                .claim(OffsetDateTime::now_utc(), free, config.lease)
                .await
            {
                Ok(batch) => {
                    for claimed in batch {
                        tasks.spawn(work(Arc::clone(&shared), claimed, stop.clone()));
                    }
                }
                Err(e) => {
                    error!(error = %error_chain(&e), "claiming webhook deliveries failed");
                    claim_failed = true;
                }
            }
        }
        shared.metrics.in_flight.set(tasks.len() as f64);

        // With a free slot, sleep until the next due time (or an enqueue). With every slot busy,
        // the slots claim further work themselves; wake only for one that ends, the stop, or
        // now and then to refresh the gauges.
        let full = tasks.len() >= config.concurrency;
        let wait = if full || claim_failed {
            config.poll_interval
        } else {
            let wait = match shared.outbox.next_due().await {
                Ok(Some(at)) => until(at, OffsetDateTime::now_utc()),
                Ok(None) => config.poll_interval,
                Err(e) => {
                    error!(error = %error_chain(&e), "reading the next webhook due time failed");
                    config.poll_interval
                }
            };
            wait.clamp(MIN_WAIT, config.poll_interval)
        };
        if tasks.is_empty() || gauge_refreshed.is_none_or(|at| at.elapsed() >= GAUGE_REFRESH) {
            if let Ok(counts) = shared.outbox.counts().await {
                shared.metrics.pending.set(counts.pending as f64);
            }
            gauge_refreshed = Some(Instant::now());
        }

        tokio::select! {
            biased;
            _ = stop.changed() => {}
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => check_joined(joined),
            () = shared.outbox.enqueued(), if !full => {
                tokio::time::sleep(ENQUEUE_COALESCE).await;
            }
            () = tokio::time::sleep(wait) => {}
        }
    }

    let deadline = *stop.borrow();
    let drained = match deadline {
        Some(at) => tokio::time::timeout_at(at.into(), drain(&mut tasks))
            .await
            .is_ok(),
        None => {
            drain(&mut tasks).await;
            true
        }
    };
    let abandoned = if drained { 0 } else { tasks.len() };
    if abandoned > 0 {
        warn!(
            abandoned,
            "webhook attempts still running at the shutdown deadline were abandoned"
        );
    }
    tasks.shutdown().await;
    abandoned
}

async fn drain(tasks: &mut JoinSet<()>) {
    while let Some(joined) = tasks.join_next().await {
        check_joined(joined);
    }
}

fn check_joined(joined: Result<(), JoinError>) {
    if let Err(e) = joined
        && e.is_panic()
    {
        error!("a webhook attempt panicked; its delivery is claimed again when its lease expires");
    }
}

/// One attempt slot: makes the attempt it was given, then keeps claiming the next due
/// delivery for itself (so a busy dispatcher hands work over without waking its loop) until
/// nothing is due or the dispatcher stops.
async fn work(
    shared: Arc<Shared>,
    claimed: ClaimedDelivery,
    stop: watch::Receiver<Option<Instant>>,
) {
    let mut next = Some(claimed);
    while let Some(claimed) = next.take() {
        next = attempt(&shared, claimed, &stop).await;
    }
}

/// One attempt: send, classify, record (and, unless the dispatcher is stopping, claim the
/// slot's next delivery in the same call), log, count. Returns the next delivery, if any.
async fn attempt(
    shared: &Shared,
    claimed: ClaimedDelivery,
    stop: &watch::Receiver<Option<Instant>>,
) -> Option<ClaimedDelivery> {
    let delivery = &*claimed.delivery;
    let started_at = OffsetDateTime::now_utc();
    let clock = Instant::now();
    let sent = shared.sender.send(delivery, started_at).await;
    let duration = clock.elapsed();
    let finished = OffsetDateTime::now_utc();

    let resolution = if sent.kind == Some(ErrorKind::Signing) {
        Resolution::Failed(FailureReason::InvalidSecret)
    } else {
        match shared
            .config
            .retry
            .decide(claimed.round_attempt, &sent.outcome, fastrand::f64())
        {
            Decision::Delivered => Resolution::Delivered,
            Decision::RetryAfter(wait) => Resolution::RetryAt(add(finished, wait)),
            Decision::GiveUp(GiveUp::Gone) => Resolution::Failed(FailureReason::Gone),
            Decision::GiveUp(GiveUp::Blocked) => Resolution::Failed(FailureReason::Blocked),
            Decision::GiveUp(GiveUp::Exhausted) => Resolution::Failed(FailureReason::Exhausted),
        }
    };
    let latency = finished - delivery.artifact_created_at;
    let record = AttemptView {
        number: claimed.attempt,
        started_at,
        status_code: sent.status,
        error_kind: sent.kind,
        error: sent.error,
        duration_ms: millis(duration),
    };
    let error_kind = record.error_kind.map(ErrorKind::as_str);
    let error_text = record.error.clone();

    let (recorded, next) = if stop_requested(stop) {
        let recorded = shared
            .outbox
            .record(&claimed.lease, record, resolution)
            .await;
        (recorded, None)
    } else {
        let both = shared
            .outbox
            .record_and_claim(
                &claimed.lease,
                record,
                resolution,
                OffsetDateTime::now_utc(),
                1,
                shared.config.lease,
            )
            .await;
        let next = match both.claimed {
            Ok(mut batch) => batch.pop(),
            Err(e) => {
                error!(error = %error_chain(&e), "claiming webhook deliveries failed");
                None
            }
        };
        (both.recorded, next)
    };
    match recorded {
        Ok(()) => {}
        Err(OutboxError::LeaseLost(_)) => {
            debug!(
                correlation_id = %delivery.correlation_id,
                sequence = delivery.sequence,
                delivery_id = %delivery.id,
                attempt = claimed.attempt,
                "webhook attempt finished after its lease lapsed; its result was dropped"
            );
            return next;
        }
        Err(e) => {
            error!(
                correlation_id = %delivery.correlation_id,
                sequence = delivery.sequence,
                delivery_id = %delivery.id,
                attempt = claimed.attempt,
                error = %error_chain(&e),
                "recording a webhook attempt failed"
            );
            return next;
        }
    }

    shared.metrics.attempt(sent.kind);
    match resolution {
        Resolution::Delivered => {
            shared.metrics.delivered.increment(1);
            shared.metrics.latency.record(latency.as_seconds_f64());
            debug!(
                correlation_id = %delivery.correlation_id,
                sequence = delivery.sequence,
                delivery_id = %delivery.id,
                url = %delivery.url.for_logs(),
                attempt = claimed.attempt,
                status = sent.status,
                duration_ms = millis(duration),
                "webhook delivered"
            );
        }
        Resolution::RetryAt(at) => {
            debug!(
                correlation_id = %delivery.correlation_id,
                sequence = delivery.sequence,
                delivery_id = %delivery.id,
                url = %delivery.url.for_logs(),
                attempt = claimed.attempt,
                error_kind,
                error = error_text.as_deref(),
                retry_in_ms = millis(until(at, finished)),
                "webhook attempt failed; retrying"
            );
        }
        Resolution::Failed(reason) => {
            shared.metrics.failed.increment(1);
            warn!(
                correlation_id = %delivery.correlation_id,
                sequence = delivery.sequence,
                delivery_id = %delivery.id,
                url = %delivery.url.for_logs(),
                attempts = claimed.attempt,
                reason = reason.as_str(),
                error_kind,
                error = error_text.as_deref(),
                "webhook delivery failed"
            );
        }
    }
    next
}
