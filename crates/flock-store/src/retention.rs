//! Retention: a task that deletes delivered and failed deliveries (with their attempts, and so
//! their bodies and secrets) once they have been done for longer than the retention period,
//! and, when asked to, finished workflows with their artifacts once they are older than theirs.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use flock_delivery::Outbox;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info};

/// How long done deliveries are kept, and how often the pruner looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// A delivered or failed delivery is deleted once it was completed longer ago than this.
    /// Default 7 days.
    pub keep_for: Duration,
    /// How often the pruner runs (it also runs at start). Default 60 s.
    pub every: Duration,
    /// When set, a workflow whose newest artifact is older than this, and that has no pending
    /// delivery, is deleted with its artifacts and deliveries. Off (`None`) by default: artifacts
    /// are kept.
    pub workflows_for: Option<Duration>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep_for: Duration::from_secs(7 * 24 * 60 * 60),
            every: Duration::from_secs(60),
            workflows_for: None,
        }
    }
}

/// Where the pruner reads the time: the system clock, or a test's.
pub type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// A running pruner. Dropping it stops it.
pub struct Pruner {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Pruner {
    /// Starts pruning `outbox` on the current tokio runtime, by the system clock.
    pub fn start(outbox: Arc<dyn Outbox>, retention: Retention) -> Pruner {
        Pruner::start_with_clock(outbox, retention, Arc::new(OffsetDateTime::now_utc))
    }

    /// Starts pruning `outbox` with the time read from `clock`.
    pub fn start_with_clock(outbox: Arc<dyn Outbox>, retention: Retention, clock: Clock) -> Pruner {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(outbox, retention, clock, stopped));
        Pruner { stop, task }
    }

    /// Stops it, waiting for a prune in progress to end.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        let _ = (&mut self.task).await;
    }
}

impl Drop for Pruner {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl fmt::Debug for Pruner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pruner")
            .field("running", &!self.task.is_finished())
            .finish()
    }
}

async fn run(
    outbox: Arc<dyn Outbox>,
    retention: Retention,
    clock: Clock,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        if *stopped.borrow() {
            return;
        }
        let now = clock();
        let ago = |keep| {
            time::Duration::try_from(keep)
                .ok()
                .and_then(|k| now.checked_sub(k))
        };
        if let Some(cutoff) = ago(retention.keep_for) {
            match outbox.prune(cutoff).await {
                Ok(0) => {}
                Ok(deleted) => info!(
                    deleted,
                    keep_for_secs = retention.keep_for.as_secs(),
                    "pruned done webhook deliveries past their retention"
                ),
                Err(e) => error!(error = %e, "pruning webhook deliveries failed"),
            }
        }
        if let Some(finished) = retention.workflows_for.and_then(ago) {
            match outbox.prune_workflows(finished).await {
                Ok(0) => {}
                Ok(deleted) => info!(
                    deleted,
                    "pruned finished workflows past their retention, with their artifacts"
                ),
                Err(e) => error!(error = %e, "pruning finished workflows failed"),
            }
        }
        tokio::select! {
            changed = stopped.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(retention.every) => {}
        }
    }
}
