//! The dispatcher: one loop that claims due deliveries from the outbox in batches, runs up to
//! `concurrency` attempts at once, records each result and reschedules retries by due time.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use flock_models::Destination;
use flock_retry::{Decision, Outcome, RetryPolicy};
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tracing::{debug, error, info, warn};

use crate::config::{ConfigError, DeliveryConfig};
use crate::gate::{Admit, BreakerState, DestinationState, Follow, Gate};
use crate::metrics::Metrics;
use crate::observer::{AttemptObserver, AttemptReport};
use crate::outbox::{
    AttemptView, ClaimedDelivery, ErrorKind, HoldReason, Outbox, OutboxError, Resolution,
    failure_name,
};
use crate::secrets::TenantSecrets;
use crate::sender::{Sender, Sent, error_chain};
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

/// How often, at most, the loop claims past a destination that alone has work and is at its
/// cap (to find other destinations' deliveries behind its backlog).
const SATURATED_LOOK: Duration = Duration::from_millis(50);

/// How far before its last look the loop's next look past a saturated destination starts:
/// what came due since then, with room for writes that committed a little after they took
/// their time (on Postgres, another instance's transaction).
const LOOK_OVERLAP: time::Duration = time::Duration::milliseconds(100);

/// How often, at least, a look past a saturated destination looks at everything due (a clock
/// of another instance behind this one's may date its deliveries before the last look).
const FULL_LOOK: Duration = Duration::from_secs(1);

/// While destinations hold deliveries, a look of the loop claims this many times the slots
/// (holding for capacity what it cannot start), so that a backlog published one destination
/// after another is seen, and shared, soon. With the slots once over, a backlog still unseen
/// took most of a run on Postgres (every claimed delivery beyond the free slots is held one
/// by one, and the loop looks only when a slot is free): ten equal backlogs got 0.81 to 1.30
/// of an equal share under load, against 0.90 to 1.10 with four times (and the build with
/// once over failed CI's fairness test at 50%).
///
/// The cost: a destination alone holds and releases again what a look claims past its cap.
/// While it answers, it is spared that ([`ANSWERING`]); while it does not, its backlog is held
/// as before, which is what lets a look reach the backlogs published behind it.
const CONTENDED_LOOK: usize = 4;

/// A destination alone that finished an attempt this recently is *answering*. At its cap (or
/// with deliveries parked, which its slots take as they free) the loop then claims only past
/// it (as once its parking is full), and looks past it at once when it becomes so (what is
/// behind its backlog may be other destinations' that nobody has seen); below its cap, the
/// loop claims no more than it can start and park. Either way a look claims none of its
/// backlog to hold and release again.
///
/// Measured (docs/benchmarks.md), a burst queued while its receiver held its answers, then
/// drained, on SQLite:
/// - the wide look always: 27,494 holds in a run draining at 4,112/s;
/// - spared at its cap while it answers: twice as fast, still about 5,000 holds a run (below
///   its cap a look claimed every free slot, or four times the slots, and the loop took the
///   parked deliveries that a slot between two attempts counted on);
/// - as now: 1,167 holds in three runs, 1.23 times the drain of the build before isolation
///   (median of ten runs in two sessions).
///
/// Sparing every lone destination at its cap, answering or not, drained at 10,333/s with 763
/// holds, but lost the Postgres fairness (2 of 7 loaded runs outside 20%): a lone destination
/// that does not answer while others' backlogs arrive behind its own must have its backlog
/// held, or the claims reach the others only once they got through it.
const ANSWERING: Duration = Duration::from_millis(100);

/// The most held deliveries one sweep fails, and the most destinations it looks at.
const SWEEP_LIMIT: usize = 1_000;

/// A dispatcher, configured but not started: it owns the shared HTTP client, which enforces the
/// SSRF guard of its configuration ([`DeliveryConfig::guard`]).
///
/// [`Dispatcher::start`] spawns its loop on the current tokio runtime. The loop claims due
/// deliveries in batches (never more than the free attempt slots) and starts a task per slot;
/// a slot that finished its attempt claims the next due delivery itself and ends when nothing
/// is due, so a busy dispatcher hands work over without waking its loop. The loop sleeps until
/// the next due time, a new enqueue (then a millisecond more, so that the publish answers
/// first and a burst is claimed at once), a slot that ends or the poll interval, whichever
/// comes first; no task waits per pending delivery.
///
/// Each claimed delivery passes its destination's gate first (receiver isolation: the
/// per-destination cap shared fairly, the circuit breaker, pauses; see
/// [`Isolation`](crate::Isolation)); one that may not go now is held in the outbox
/// ([`Outbox::hold`]) and released when it may. While one destination alone has work and is
/// at its cap, what was claimed past the cap waits in memory (up to the cap), and once that
/// is full, or while the destination answers (it finished an attempt in the last 100 ms),
/// the loop claims past it ([`Outbox::claim_past`]), so its backlog is neither leased nor
/// held; below its cap, one that answers is claimed no more than it can start and keep in
/// memory. The gate is this dispatcher's: caps and breakers are per instance.
pub struct Dispatcher {
    shared: Arc<Shared>,
}

struct Shared {
    outbox: Arc<dyn Outbox>,
    sender: Sender,
    config: DeliveryConfig,
    metrics: Metrics,
    observer: Option<Arc<dyn AttemptObserver>>,
    gate: Arc<Mutex<Gate>>,
    parked: Mutex<Parked>,
}

/// Claimed deliveries waiting in memory, under their leases, for a slot of their destination:
/// while one destination alone has work and is at its cap, up to its cap of what was claimed
/// past it waits here, rather than being held in the outbox and released again (two more
/// writes each). The slots of that destination take them first as they free.
#[derive(Default)]
struct Parked {
    /// By destination ([`Destination`]'s text).
    by_destination: HashMap<String, VecDeque<ClaimedDelivery>>,
    len: usize,
}

impl Parked {
    /// The longest parked delivery of `destination` whose lease lasts past `lease_needed`;
    /// those whose lease ends sooner are dropped (the outbox hands them out again when it
    /// ends).
    fn pop(&mut self, destination: &str, lease_needed: OffsetDateTime) -> Option<ClaimedDelivery> {
        let queue = self.by_destination.get_mut(destination)?;
        let mut found = None;
        while let Some(claimed) = queue.pop_front() {
            self.len -= 1;
            if claimed.lease.expires_at > lease_needed {
                found = Some(claimed);
                break;
            }
        }
        if queue.is_empty() {
            self.by_destination.remove(destination);
        }
        found
    }

    /// Parks `claimed` unless its destination has `cap` parked already (or `limit` are parked
    /// in all); gives it back if not.
    fn park(
        &mut self,
        claimed: ClaimedDelivery,
        destination: &Destination,
        cap: usize,
        limit: usize,
    ) -> Option<ClaimedDelivery> {
        if self.of(destination.as_str()) >= cap || self.len >= limit {
            return Some(claimed);
        }
        (self.by_destination)
            .entry(destination.as_str().to_owned())
            .or_default()
            .push_back(claimed);
        self.len += 1;
        None
    }

    /// How many of `destination`'s deliveries are parked.
    fn of(&self, destination: &str) -> usize {
        self.by_destination
            .get(destination)
            .map_or(0, VecDeque::len)
    }

    /// Takes every parked delivery out.
    fn drain(&mut self) -> Vec<ClaimedDelivery> {
        self.len = 0;
        self.by_destination.drain().flat_map(|(_, q)| q).collect()
    }
}

impl Shared {
    fn gate(&self) -> MutexGuard<'_, Gate> {
        self.gate.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn parked(&self) -> MutexGuard<'_, Parked> {
        self.parked.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A view of a dispatcher's destinations that can be had before it starts (for the API's
/// state) and read while it runs.
#[derive(Clone)]
pub struct Destinations(Arc<Mutex<Gate>>);

impl Destinations {
    /// The destinations the dispatcher keeps state for (attempts in flight, failures, a breaker
    /// not closed, a pause, deliveries it holds), by name.
    pub fn snapshot(&self) -> Vec<DestinationState> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .snapshot()
    }
}

impl fmt::Debug for Destinations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Destinations").finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// A dispatcher delivering from `outbox` as `config` says. Metric handles are registered
    /// here, so install a metrics recorder before.
    ///
    /// # Errors
    /// An invalid configuration, or an HTTP client that cannot be built.
    pub fn new(outbox: Arc<dyn Outbox>, config: DeliveryConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let sender = Sender::new(&config, config.guard())?;
        let gate = Arc::new(Mutex::new(Gate::new(
            config.isolation.clone(),
            config.concurrency,
        )));
        Ok(Dispatcher {
            shared: Arc::new(Shared {
                outbox,
                sender,
                config,
                metrics: Metrics::register(),
                observer: None,
                gate,
                parked: Mutex::new(Parked::default()),
            }),
        })
    }

    /// Signs the deliveries that carry no secret of their own with their tenant's webhook
    /// secrets, read from `secrets` when each attempt is made (so a rotation applies to
    /// deliveries already queued). Without it they go unsigned.
    #[must_use]
    pub fn tenant_secrets(mut self, secrets: Arc<dyn TenantSecrets>) -> Self {
        // Nothing else holds `shared` before `start`: a `Dispatcher` is not `Clone`.
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.sender.secrets = Some(secrets);
        }
        self
    }

    /// Reports every recorded attempt to `observer` too, where the metrics count it (the API's
    /// event stream hears of attempts this way, not by a second path).
    #[must_use]
    pub fn observer(mut self, observer: Arc<dyn AttemptObserver>) -> Self {
        // Nothing else holds `shared` before `start`: a `Dispatcher` is not `Clone`.
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.observer = Some(observer);
        }
        self
    }

    /// Its destinations' states, to read while it runs.
    pub fn destinations(&self) -> Destinations {
        Destinations(Arc::clone(&self.shared.gate))
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

    /// Its destinations' states.
    pub fn destinations(&self) -> Destinations {
        Destinations(Arc::clone(&self.shared.gate))
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
    let mut swept: Option<Instant> = None;
    // Whether new work was enqueued since the loop last claimed, and when it last claimed
    // past a saturated destination.
    let mut enqueued = true;
    let mut looked: Option<Instant> = None;
    let mut was_saturated = false;
    // Where the next look past a saturated destination starts (that destination, the due
    // time), and when a look last started from the beginning.
    let mut look_from: Option<(String, OffsetDateTime)> = None;
    let mut looked_in_full: Option<Instant> = None;
    loop {
        while let Some(joined) = tasks.try_join_next() {
            check_joined(joined);
        }
        if stop_requested(&stop) {
            break;
        }
        let woke = shared.gate().wake(OffsetDateTime::now_utc());
        follow(&shared, woke).await;
        if swept.is_none_or(|at| at.elapsed() >= config.isolation.sweep_every) {
            sweep(&shared).await;
            swept = Some(Instant::now());
        }
        // One destination alone, *saturated*: at its cap and answering (ANSWERING) or with its
        // parking full, or answering with deliveries parked (its slots take them as they free;
        // were the loop to take them too, a slot between its attempt and its next would find
        // its freed place taken, and the delivery it claimed held). The loop then claims past
        // it (`Outbox::claim_past`), only when new work came in (it may be another
        // destination's), at most every SATURATED_LOOK.
        let cap = config.isolation.per_destination_concurrency;
        let saturated_by: Option<String> = {
            let gate = shared.gate();
            let parked = shared.parked();
            gate.lone()
                .filter(|&(dest, room)| {
                    let (answering, parked) = (gate.answering(dest, ANSWERING), parked.of(dest));
                    (room == 0 && (answering || parked >= cap)) || (answering && parked > 0)
                })
                .map(|(dest, _)| dest.to_owned())
        };
        let saturated = saturated_by.is_some();
        // Becoming saturated, the loop looks past the destination at once: the deliveries
        // behind its backlog may be other destinations' that nobody has seen yet.
        if saturated && !was_saturated {
            enqueued = true;
            looked = None;
        }
        was_saturated = saturated;
        // Parked deliveries whose destination has a slot again go first (a saturated
        // destination's slots take its own as they free).
        let parked = match saturated {
            true => Vec::new(),
            false => shared.parked().drain(),
        };
        if !parked.is_empty() {
            let free = config.concurrency.saturating_sub(tasks.len());
            for (claimed, destination) in admit(&shared, parked, free).await {
                tasks.spawn(work(
                    Arc::clone(&shared),
                    claimed,
                    destination,
                    stop.clone(),
                ));
            }
        }
        let free = config.concurrency.saturating_sub(tasks.len());
        let mut claim_failed = false;
        let look_now =
            !saturated || (enqueued && looked.is_none_or(|at| at.elapsed() >= SATURATED_LOOK));
        if free > 0 && look_now {
            enqueued = false;
            if saturated {
                looked = Some(Instant::now());
            }
            // A destination alone, answering and not saturated: claim no more than it can
            // start and park, so that none of what is claimed is held (and released again).
            // Else, while destinations hold deliveries, look past the free slots
            // (CONTENDED_LOOK).
            let look = {
                let gate = shared.gate();
                match gate.lone() {
                    Some((dest, room)) if !saturated && gate.answering(dest, ANSWERING) => {
                        free.min(room + cap.saturating_sub(shared.parked().of(dest)))
                    }
                    _ if gate.contended() => free.max(CONTENDED_LOOK * config.concurrency),
                    _ => free,
                }
            };
            let now = OffsetDateTime::now_utc();
            let claimed = match &saturated_by {
                None => shared.outbox.claim(now, look, config.lease).await,
                Some(past) => {
                    // From where the last look past it got to, or from the start now and then.
                    let since = match &look_from {
                        Some((dest, since))
                            if dest == past
                                && looked_in_full.is_some_and(|at| at.elapsed() < FULL_LOOK) =>
                        {
                            Some(*since)
                        }
                        _ => {
                            looked_in_full = Some(Instant::now());
                            None
                        }
                    };
                    let claimed = (shared.outbox)
                        .claim_past(now, look, config.lease, std::slice::from_ref(past), since)
                        .await;
                    // A full batch may have left some before `now`: start there again.
                    if claimed.as_ref().is_ok_and(|batch| batch.len() < look) {
                        look_from = Some((past.clone(), now - LOOK_OVERLAP));
                    }
                    claimed
                }
            };
            match claimed {
                Ok(batch) => {
                    // A full batch past a saturated destination may have more behind it: look
                    // again (at the same pace) even without new work.
                    if saturated && batch.len() >= look {
                        enqueued = true;
                    }
                    for (claimed, destination) in admit(&shared, batch, free).await {
                        tasks.spawn(work(
                            Arc::clone(&shared),
                            claimed,
                            destination,
                            stop.clone(),
                        ));
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
        let wait = if full || claim_failed || saturated {
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
        let wait = match (saturated && enqueued, looked) {
            (true, Some(at)) => wait.min(SATURATED_LOOK.saturating_sub(at.elapsed()).max(MIN_WAIT)),
            _ => wait,
        };
        // A breaker's cool-off or a pause that ends wakes the loop to release what it held.
        let wait = match shared.gate().next_wake() {
            Some(at) => wait.min(until(at, OffsetDateTime::now_utc()).max(MIN_WAIT)),
            None => wait,
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
                enqueued = true;
                tokio::time::sleep(ENQUEUE_COALESCE).await;
            }
            () = tokio::time::sleep(wait) => {}
        }
    }

    // Parked deliveries are held, so that the next start (or another instance) finds them.
    let parked = shared.parked().drain();
    let leases: Vec<_> = parked.iter().map(|c| c.lease).collect();
    if !leases.is_empty()
        && let Err(e) = (shared.outbox)
            .hold(&leases, HoldReason::Capacity, OffsetDateTime::now_utc())
            .await
    {
        error!(error = %error_chain(&e), "holding parked webhook deliveries at shutdown failed; they are claimed again once their leases expire");
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

/// Passes claimed deliveries through their destinations' gate: answers those that go now (at
/// most `slots`), each with its destination, and holds the others in the outbox.
async fn admit(
    shared: &Shared,
    batch: Vec<ClaimedDelivery>,
    slots: usize,
) -> Vec<(ClaimedDelivery, Destination)> {
    if batch.is_empty() {
        return Vec::new();
    }
    let now = OffsetDateTime::now_utc();
    let mut go = Vec::with_capacity(batch.len());
    let mut held: Vec<(HoldReason, ClaimedDelivery, Destination)> = Vec::new();
    let mut follows = Follow::default();
    {
        let mut gate = shared.gate();
        for claimed in batch {
            let destination = Destination::of(&claimed.delivery.url);
            let slot = go.len() < slots;
            let (admitted, follow) = gate.admit(destination.as_str(), now, slot);
            follows.transitions.extend(follow.transitions);
            follows.releases.extend(follow.releases);
            match admitted {
                Admit::Go => go.push((claimed, destination)),
                Admit::Hold(HoldReason::Capacity)
                    if gate.alone(destination.as_str())
                        && claimed.lease.expires_at > add(now, shared.config.request_timeout) =>
                {
                    let cap = shared.config.isolation.per_destination_concurrency;
                    let refused = (shared.parked()).park(
                        claimed,
                        &destination,
                        cap,
                        shared.config.concurrency,
                    );
                    if let Some(claimed) = refused {
                        held.push((HoldReason::Capacity, claimed, destination));
                    }
                }
                Admit::Hold(reason) => held.push((reason, claimed, destination)),
            }
        }
    }
    for reason in HoldReason::DESTINATION {
        let leases: Vec<_> = (held.iter())
            .filter(|(r, ..)| *r == reason)
            .map(|(_, claimed, _)| claimed.lease)
            .collect();
        if leases.is_empty() {
            continue;
        }
        match shared.outbox.hold(&leases, reason, now).await {
            Ok(n) => {
                shared.metrics.held(reason, n);
                let mut gate = shared.gate();
                for (_, _, destination) in held.iter().filter(|(r, ..)| *r == reason) {
                    gate.held(destination.as_str(), n);
                }
            }
            Err(e) => {
                // Still leased: claimed again once the lease expires.
                error!(error = %error_chain(&e), "holding webhook deliveries failed");
                continue;
            }
        }
        for (_, claimed, destination) in held.iter().filter(|(r, ..)| *r == reason) {
            let delivery = &claimed.delivery;
            debug!(
                correlation_id = %delivery.correlation_id,
                sequence = delivery.sequence,
                delivery_id = %delivery.id,
                destination = %destination,
                reason = reason.as_str(),
                "webhook delivery held by its destination"
            );
        }
    }
    // After the holds: a slot handed to a starved destination may release what was just held.
    follow(shared, follows).await;
    go
}

/// Counts and logs breaker transitions, and lets go the held deliveries the gate releases.
async fn follow(shared: &Shared, follow: Follow) {
    for transition in &follow.transitions {
        shared.metrics.transition(transition.to);
        match transition.to {
            BreakerState::Open => warn!(
                destination = %transition.destination,
                "a destination's circuit breaker opened: its deliveries are held until a probe succeeds"
            ),
            BreakerState::HalfOpen => debug!(
                destination = %transition.destination,
                "a destination's circuit breaker is half-open: one delivery probes"
            ),
            BreakerState::Closed => info!(
                destination = %transition.destination,
                "a destination's circuit breaker closed: its held deliveries go again"
            ),
        }
    }
    if !follow.transitions.is_empty() {
        let open = shared.gate().open_breakers();
        shared.metrics.breakers_open.set(open as f64);
    }
    for release in follow.releases {
        if release.limit == 0 {
            continue;
        }
        // A database with several writers can miss held deliveries that another writer is
        // letting go at the same moment (the rows it chose changed under it): ask once more
        // before taking a short answer to mean that nothing more is held.
        let mut got = 0;
        for _ in 0..2 {
            let asked = release.limit - usize::try_from(got).unwrap_or(release.limit);
            match (shared.outbox)
                .release(&release.destination, asked, OffsetDateTime::now_utc())
                .await
            {
                Ok(n) => got += n,
                Err(e) => {
                    error!(error = %error_chain(&e), destination = %release.destination,
                        "releasing held webhook deliveries failed; the hold sweep tries again");
                    break;
                }
            }
            if usize::try_from(got).is_ok_and(|got| got >= release.limit) {
                break;
            }
        }
        shared.gate().released(&release, got);
    }
}

/// Fails the deliveries held longer than `max_hold`, refreshes the held gauge, and releases
/// the deliveries of destinations this dispatcher is not working on (held by an instance that
/// stopped, say).
async fn sweep(shared: &Shared) {
    let now = OffsetDateTime::now_utc();
    let max_hold = shared.config.isolation.max_hold;
    let held_before = time::Duration::try_from(max_hold)
        .ok()
        .and_then(|max_hold| now.checked_sub(max_hold))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    match shared
        .outbox
        .expire_holds(held_before, now, SWEEP_LIMIT)
        .await
    {
        Ok(0) => {}
        Ok(expired) => {
            shared.metrics.failed.increment(expired);
            warn!(
                expired,
                max_hold_secs = max_hold.as_secs(),
                reason = failure_name(flock_retry::GiveUp::DestinationUnavailable),
                "webhook deliveries held longer than max_hold_secs failed"
            );
        }
        Err(e) => {
            error!(error = %error_chain(&e), "failing webhook deliveries held too long failed");
        }
    }
    let held = match shared.outbox.held(None, SWEEP_LIMIT).await {
        Ok(held) => held,
        Err(e) => {
            error!(error = %error_chain(&e), "counting held webhook deliveries failed");
            return;
        }
    };
    shared
        .metrics
        .held
        .set(held.iter().map(|h| h.held).sum::<u64>() as f64);
    let releases = {
        let mut gate = shared.gate();
        (held.iter())
            .filter_map(|h| gate.adopt(&h.destination, h.held))
            .collect()
    };
    follow(
        shared,
        Follow {
            transitions: Vec::new(),
            releases,
        },
    )
    .await;
}

/// One attempt slot: makes the attempt it was given, then keeps claiming the next due
/// delivery for itself (so a busy dispatcher hands work over without waking its loop) until
/// nothing is due or the dispatcher stops.
async fn work(
    shared: Arc<Shared>,
    claimed: ClaimedDelivery,
    destination: Destination,
    stop: watch::Receiver<Option<Instant>>,
) {
    let mut next = Some((claimed, destination));
    while let Some((claimed, destination)) = next.take() {
        next = attempt(&shared, claimed, destination, &stop).await;
    }
}

/// One attempt: send, then [`decide`] what its outcome means for the delivery, [`record`] it
/// (and, unless the dispatcher is stopping, claim the slot's next delivery in the same call),
/// and [`log`] it. Returns the next delivery, if any.
async fn attempt(
    shared: &Shared,
    claimed: ClaimedDelivery,
    destination: Destination,
    stop: &watch::Receiver<Option<Instant>>,
) -> Option<(ClaimedDelivery, Destination)> {
    let started_at = OffsetDateTime::now_utc();
    let clock = Instant::now();
    let sent = shared.sender.send(&claimed.delivery, started_at).await;
    let duration = clock.elapsed();
    let finished = OffsetDateTime::now_utc();
    let freed = (shared.gate()).finish(destination.as_str(), &sent.outcome, finished);
    // What the freed slot lets go is released first, so that this slot's next claim can take
    // it (a destination further below its share than the next due delivery's gets the slot).
    follow(shared, freed).await;

    let resolution = decide(
        &shared.config.retry,
        claimed.round_attempt,
        &sent.outcome,
        finished,
        fastrand::f64(),
    );
    let attempt_record = AttemptView::new(
        claimed.attempt,
        started_at,
        &sent.outcome,
        sent.error.clone(),
        millis(duration),
    );
    // The record goes to the outbox; an observer hears of it once the outbox accepted it.
    let observed = shared
        .observer
        .as_ref()
        .map(|o| (o, attempt_record.clone()));
    let (recorded, next) = record(shared, &claimed, attempt_record, resolution, stop).await;
    if recorded.is_ok()
        && let Some((observer, attempt)) = observed
    {
        observer.attempted(&AttemptReport {
            delivery: &claimed.delivery,
            attempt: &attempt,
            resolution,
        });
    }
    log(
        shared,
        &claimed,
        &Finished {
            sent: &sent,
            resolution,
            duration,
            finished,
        },
        recorded,
    );
    // A delivery parked for this destination takes the slot first (it was claimed before
    // `next`, which parks in turn if it cannot go).
    let lease_needed = add(OffsetDateTime::now_utc(), shared.config.request_timeout);
    let batch: Vec<ClaimedDelivery> = (shared.parked().pop(destination.as_str(), lease_needed))
        .into_iter()
        .chain(next)
        .collect();
    admit(shared, batch, 1).await.pop()
}

/// What an attempt that ended at `finished` in `outcome` means for its delivery: delivered,
/// retried at a time, or failed with a reason. `round_attempt` is the attempt's number in the
/// current round (the number the policy counts); `sample` feeds the jitter. Pure.
fn decide(
    policy: &RetryPolicy,
    round_attempt: u32,
    outcome: &Outcome,
    finished: OffsetDateTime,
    sample: f64,
) -> Resolution {
    match policy.decide(round_attempt, outcome, sample) {
        Decision::Delivered => Resolution::Delivered,
        Decision::RetryAfter(wait) => Resolution::RetryAt(add(finished, wait)),
        Decision::GiveUp(reason) => Resolution::Failed(reason),
    }
}

/// Hands the attempt and its resolution to the outbox under the attempt's lease and, unless the
/// dispatcher is stopping, claims the slot's next delivery in the same call. Returns the
/// record's result and the next delivery, if any.
async fn record(
    shared: &Shared,
    claimed: &ClaimedDelivery,
    attempt: AttemptView,
    resolution: Resolution,
    stop: &watch::Receiver<Option<Instant>>,
) -> (Result<(), OutboxError>, Option<ClaimedDelivery>) {
    if stop_requested(stop) {
        let recorded = shared
            .outbox
            .record(&claimed.lease, attempt, resolution)
            .await;
        return (recorded, None);
    }
    let both = shared
        .outbox
        .record_and_claim(
            &claimed.lease,
            attempt,
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
}

/// An attempt as [`log`] reports it.
struct Finished<'a> {
    sent: &'a Sent,
    resolution: Resolution,
    duration: Duration,
    finished: OffsetDateTime,
}

/// Reports an attempt: a log line, and, once its record was accepted, the metrics (the attempt
/// by its outcome, the delivery by its resolution, the latency of a delivered one). A result
/// the outbox refused is logged and counted nowhere.
fn log(
    shared: &Shared,
    claimed: &ClaimedDelivery,
    attempt: &Finished<'_>,
    recorded: Result<(), OutboxError>,
) {
    let delivery = &*claimed.delivery;
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
            return;
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
            return;
        }
    }

    let outcome = &attempt.sent.outcome;
    let error_kind = ErrorKind::of(outcome).map(ErrorKind::as_str);
    let error_text = attempt.sent.error.as_deref();
    shared.metrics.attempt(outcome);
    match attempt.resolution {
        Resolution::Delivered => {
            shared.metrics.delivered.increment(1);
            let latency = attempt.finished - delivery.artifact_created_at;
            shared.metrics.latency.record(latency.as_seconds_f64());
            debug!(
                correlation_id = %delivery.correlation_id,
                sequence = delivery.sequence,
                delivery_id = %delivery.id,
                url = %delivery.url.for_logs(),
                attempt = claimed.attempt,
                status = outcome.status_code(),
                duration_ms = millis(attempt.duration),
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
                error = error_text,
                retry_in_ms = millis(until(at, attempt.finished)),
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
                reason = failure_name(reason),
                error_kind,
                error = error_text,
                "webhook delivery failed"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use flock_retry::GiveUp;
    use time::macros::datetime;

    use super::*;

    #[test]
    fn decisions_follow_the_outcome_and_the_round() {
        let policy = RetryPolicy::default();
        let at = datetime!(2026-11-28 12:00:00 UTC);
        let status = |code| Outcome::Status {
            code,
            retry_after: None,
        };
        let cases = [
            (1, status(204), Resolution::Delivered),
            (
                1,
                status(500),
                Resolution::RetryAt(at + Duration::from_secs(1)),
            ),
            (
                3,
                Outcome::Timeout,
                Resolution::RetryAt(at + Duration::from_secs(4)),
            ),
            (
                1,
                Outcome::Status {
                    code: 429,
                    retry_after: Some(Duration::from_secs(30)),
                },
                Resolution::RetryAt(at + Duration::from_secs(30)),
            ),
            (4, status(500), Resolution::Failed(GiveUp::Exhausted)),
            (
                4,
                Outcome::ConnectError,
                Resolution::Failed(GiveUp::Exhausted),
            ),
            (
                1,
                Outcome::OtherError,
                Resolution::RetryAt(at + Duration::from_secs(1)),
            ),
            (1, status(410), Resolution::Failed(GiveUp::Gone)),
            (1, Outcome::Blocked, Resolution::Failed(GiveUp::Blocked)),
        ];
        for (round_attempt, outcome, expected) in cases {
            assert_eq!(
                decide(&policy, round_attempt, &outcome, at, 0.5),
                expected,
                "attempt {round_attempt}: {outcome:?}"
            );
        }
    }
}
