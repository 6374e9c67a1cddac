//! Receiver isolation, the dispatcher's side: per destination (the normalised
//! `scheme://host[:port]` of a webhook URL, [`flock_models::Destination`]), an in-flight cap
//! shared fairly among the destinations with work, a circuit breaker, and pauses (a
//! `Retry-After`, or the optional rate limit).
//!
//! The [`Gate`] is bookkeeping in memory, per dispatcher (so per instance: two
//! instances on one database each allow a destination its cap, and each keep their own
//! breaker). It decides, for each claimed delivery, whether it goes now or is *held* (the
//! dispatcher then hands it back to the outbox with [`Outbox::hold`](crate::Outbox::hold),
//! where it waits with no due time, spends no attempt and holds no slot), and, as attempts
//! finish and time passes, how many held deliveries of which destination to *release*
//! ([`Outbox::release`](crate::Outbox::release)).
//!
//! - **Cap and fairness.** A destination may have `limit` attempts in flight: its cap
//!   ([`Isolation::per_destination_concurrency`]) while it is the only destination with work,
//!   otherwise its fair share of the dispatcher's slots, `ceil(concurrency / active)` (at
//!   least 1, at most the cap), where the active destinations are those with attempts in
//!   flight or deliveries held for capacity. A finished attempt releases one held delivery of
//!   the active destination with the fewest attempts in flight (ties: the one released longest
//!   ago), so a freed slot goes to whoever is furthest below its share.
//! - **Breaker.** [`Isolation::breaker_failures`] consecutive failed attempts (a network error,
//!   a timeout, a 5xx or a 429) open it for a cool-off of 1 s, doubled after every failed
//!   probe up to [`Isolation::breaker_max_open`]. When the cool-off ends it is half-open: one
//!   held delivery is released to probe, the destination's other deliveries are held. A probe
//!   that does not fail closes it (any answer but a 5xx or 429 shows the receiver is there)
//!   and releases up to the destination's limit; one that fails opens it again.
//! - **Pauses.** A 429 or 503 with `Retry-After` pauses the destination until then (at most
//!   the breaker's longest cool-off); with [`Isolation::per_destination_rate`], a token bucket
//!   (one second of burst) pauses it until its next token.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use flock_retry::Outcome;
use time::OffsetDateTime;

use crate::outbox::HoldReason;
use crate::time_util::add;

/// The most destinations a gate keeps state for. A destination with nothing in flight, nothing
/// held, no failure, no pause and a closed breaker has no state; past the bound, the state of
/// one with nothing in flight is forgotten (its breaker closed).
pub const MAX_TRACKED_DESTINATIONS: usize = 10_000;

/// How long released deliveries count as on their way to their destination.
const INCOMING_FOR: Duration = Duration::from_millis(50);

/// The first cool-off of an opened breaker; it doubles after every failed probe.
pub const FIRST_COOL_OFF: Duration = Duration::from_secs(1);

/// Receiver isolation's settings. `Default` gives the production defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Isolation {
    /// Attempts in flight at once to one destination, at most. Default 64, what the whole
    /// dispatcher had before receiver isolation, and half of its default concurrency (128): one
    /// receiver alone keeps its throughput (with a cap of 32, a lone receiver on SQLite got
    /// about three quarters of it, measured in docs/benchmarks.md: an attempt's record and the
    /// next claim are one write, and fewer attempts in flight make smaller batches of them),
    /// and a black hole leaves at least half the slots to everyone else.
    pub per_destination_concurrency: usize,
    /// Consecutive failed attempts that open a destination's breaker. Default 5.
    pub breaker_failures: u32,
    /// The longest a breaker stays open before its next probe. Default 5 min.
    pub breaker_max_open: Duration,
    /// How long a delivery may stay held before it fails as `destination_unavailable`.
    /// Default 1 h.
    pub max_hold: Duration,
    /// Attempts per second to one destination, at most; `None` (the default) for no limit.
    pub per_destination_rate: Option<f64>,
    /// How often the dispatcher fails the deliveries held too long, and releases deliveries held
    /// by a destination nobody here is working on (an instance that stopped, say). Default 5 s.
    pub sweep_every: Duration,
}

impl Default for Isolation {
    fn default() -> Self {
        Isolation {
            per_destination_concurrency: 64,
            breaker_failures: 5,
            breaker_max_open: Duration::from_secs(300),
            max_hold: Duration::from_secs(3_600),
            per_destination_rate: None,
            sweep_every: Duration::from_secs(5),
        }
    }
}

/// Where a destination's circuit breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Deliveries go.
    Closed,
    /// Deliveries are held until the next probe.
    Open,
    /// One delivery probes; the others are held.
    HalfOpen,
}

impl BreakerState {
    /// The state as its snake-case name, as shown and counted.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// One destination as a dispatcher sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationState {
    /// `scheme://host[:port]`.
    pub destination: String,
    /// Its breaker.
    pub state: BreakerState,
    /// Failed attempts in a row.
    pub consecutive_failures: u32,
    /// Attempts in flight from this dispatcher.
    pub in_flight: usize,
    /// When the open breaker lets its next probe go.
    pub next_probe_at: Option<OffsetDateTime>,
    /// Until when the destination is paused (`Retry-After` or its rate limit).
    pub paused_until: Option<OffsetDateTime>,
}

/// A breaker that changed state, to count and log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transition {
    pub(crate) destination: String,
    pub(crate) to: BreakerState,
}

/// Held deliveries of a destination to let go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Release {
    pub(crate) destination: String,
    pub(crate) limit: usize,
    /// The destination's confirmed holds when it was asked.
    pub(crate) holds: u64,
}

/// What the gate decided about a claimed delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Attempt it now; report its outcome with [`Gate::finish`].
    Go,
    /// Hold it.
    Hold(HoldReason),
}

/// What follows from a finished attempt or from time passing.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Follow {
    pub(crate) transitions: Vec<Transition>,
    pub(crate) releases: Vec<Release>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Breaker {
    Closed,
    Open {
        until: OffsetDateTime,
        cool_off: Duration,
    },
    HalfOpen {
        probing: bool,
        cool_off: Duration,
    },
}

#[derive(Debug, Clone)]
struct Dest {
    in_flight: usize,
    failures: u32,
    breaker: Breaker,
    paused_until: Option<OffsetDateTime>,
    /// Tokens left and when they were counted, with a rate limit.
    bucket: Option<(f64, OffsetDateTime)>,
    /// Whether the outbox may hold deliveries of this destination that this gate should
    /// release (it held some, or released some and got all it asked for).
    holding: bool,
    /// Counts the holds of this destination the outbox confirmed: a release that got fewer
    /// than it asked clears `holding` only if no hold was confirmed since it was asked.
    holds: u64,
    /// When, in releases, this destination last had one: for round-robin among equals.
    released_at: u64,
    /// Deliveries released and not claimed yet: slots on their way to it. Counted for
    /// [`INCOMING_FOR`] after the last release only: a released delivery another instance
    /// claimed never comes.
    incoming: usize,
    /// When the last release was asked.
    released: Option<Instant>,
    /// When an attempt last finished.
    finished: Option<Instant>,
}

impl Dest {
    fn new() -> Self {
        Dest {
            in_flight: 0,
            failures: 0,
            breaker: Breaker::Closed,
            paused_until: None,
            bucket: None,
            holding: false,
            holds: 0,
            released_at: 0,
            incoming: 0,
            released: None,
            finished: None,
        }
    }

    /// Nothing worth keeping at `now`: forgotten, it would start again with a full bucket of
    /// `rate`, so one whose bucket has not refilled is kept.
    fn pristine(&self, now: OffsetDateTime, rate: Option<f64>) -> bool {
        let refilled = match (self.bucket, rate) {
            (Some((tokens, at)), Some(rate)) => {
                tokens + (now - at).as_seconds_f64().max(0.0) * rate >= rate.max(1.0)
            }
            _ => true,
        };
        self.in_flight == 0
            && self.failures == 0
            && self.breaker == Breaker::Closed
            && self.paused_until.is_none()
            && !self.holding
            && refilled
    }

    /// Whether it can take an attempt now, its limit aside.
    fn open_for_work(&self) -> bool {
        self.breaker == Breaker::Closed && self.paused_until.is_none()
    }

    /// Its attempts in flight and the deliveries on their way to it.
    fn load(&self) -> usize {
        let incoming = match self.released {
            Some(at) if at.elapsed() < INCOMING_FOR => self.incoming,
            _ => 0,
        };
        self.in_flight + incoming
    }

    /// Counts towards the fair share: it has attempts in flight, or deliveries held that could
    /// go.
    fn active(&self) -> bool {
        self.in_flight > 0 || (self.holding && self.open_for_work())
    }
}

/// Per-destination caps, breakers and pauses; see the module docs.
#[derive(Debug)]
pub(crate) struct Gate {
    config: Isolation,
    concurrency: usize,
    dests: HashMap<String, Dest>,
    releases: u64,
}

/// Whether `outcome` counts against its destination's breaker.
pub(crate) fn breaker_failure(outcome: &Outcome) -> bool {
    match outcome {
        Outcome::Status { code, .. } => *code == 429 || *code >= 500,
        Outcome::ConnectError | Outcome::Timeout | Outcome::OtherError => true,
        Outcome::Blocked => false,
    }
}

impl Gate {
    pub(crate) fn new(config: Isolation, concurrency: usize) -> Self {
        Gate {
            config,
            concurrency,
            dests: HashMap::new(),
            releases: 0,
        }
    }

    /// How many attempts `dest` may have in flight now.
    fn limit(&self, dest: &str) -> usize {
        let active = self.dests.values().filter(|d| d.active()).count();
        self.limit_among(self.dests.get(dest), active)
    }

    /// The limit of destination `d` (`None`: one without state) when `active` destinations
    /// are active.
    fn limit_among(&self, d: Option<&Dest>, active: usize) -> usize {
        let cap = self.config.per_destination_concurrency;
        let others = active - usize::from(d.is_some_and(Dest::active));
        if others == 0 {
            return cap;
        }
        self.concurrency.div_ceil(others + 1).clamp(1, cap)
    }

    /// Among the destinations other than `dest` that hold deliveries and could take one more,
    /// the one with the least load (attempts in flight and deliveries on their way), the one
    /// released longest ago among equals: the destination furthest below its share.
    fn starved(&self, dest: &str) -> Option<(&str, usize)> {
        let active = self.dests.values().filter(|d| d.active()).count();
        (self.dests.iter())
            .filter(|(name, d)| name.as_str() != dest && d.holding && d.open_for_work())
            .filter(|(_, d)| d.load() < self.limit_among(Some(d), active))
            .min_by_key(|(_, d)| (d.load(), d.released_at))
            .map(|(name, d)| (name.as_str(), d.load()))
    }

    fn entry(&mut self, dest: &str) -> &mut Dest {
        if !self.dests.contains_key(dest) {
            if self.dests.len() >= MAX_TRACKED_DESTINATIONS {
                let forget = (self.dests.iter())
                    .find(|(_, d)| d.in_flight == 0)
                    .map(|(name, _)| name.clone());
                if let Some(forget) = forget {
                    self.dests.remove(&forget);
                }
            }
            self.dests.insert(dest.to_owned(), Dest::new());
        }
        self.dests
            .get_mut(dest)
            .unwrap_or_else(|| unreachable!("inserted above"))
    }

    /// Whether a claimed delivery to `dest` goes now. A delivery that goes counts as in flight
    /// until [`Gate::finish`]. One held because another destination is further below its share
    /// hands its slot over: `follow` releases one of that destination's. Without a `slot` free
    /// (a claim that looked past the free slots) it is held for capacity.
    pub(crate) fn admit(&mut self, dest: &str, now: OffsetDateTime, slot: bool) -> (Admit, Follow) {
        let mut follow = Follow::default();
        if !slot {
            let d = self.entry(dest);
            d.incoming = d.incoming.saturating_sub(1);
            return (Admit::Hold(HoldReason::Capacity), follow);
        }
        let transitions = &mut follow.transitions;
        let limit = self.limit(dest);
        let starved = self
            .starved(dest)
            .map(|(name, load)| (name.to_owned(), load));
        let rate = self.config.per_destination_rate;
        let d = self.entry(dest);
        d.incoming = d.incoming.saturating_sub(1);
        if let Breaker::Open { until, cool_off } = d.breaker
            && now >= until
        {
            d.breaker = Breaker::HalfOpen {
                probing: false,
                cool_off,
            };
            transitions.push(Transition {
                destination: dest.to_owned(),
                to: BreakerState::HalfOpen,
            });
        }
        if d.paused_until.is_some_and(|until| now >= until) {
            d.paused_until = None;
        }
        let admit = match d.breaker {
            Breaker::Open { .. } | Breaker::HalfOpen { probing: true, .. } => {
                Admit::Hold(HoldReason::Breaker)
            }
            _ if d.paused_until.is_some() => Admit::Hold(HoldReason::Paused),
            Breaker::HalfOpen { .. } | Breaker::Closed if d.in_flight >= limit => {
                Admit::Hold(HoldReason::Capacity)
            }
            Breaker::HalfOpen { .. } | Breaker::Closed
                if starved
                    .as_ref()
                    .is_some_and(|(_, least)| d.in_flight > *least) =>
            {
                if let Some((name, _)) = &starved {
                    let release = self.release(name, 1);
                    follow.releases.push(release);
                }
                return (Admit::Hold(HoldReason::Capacity), follow);
            }
            _ => match rate.map(|rate| take_token(&mut d.bucket, rate, now)) {
                Some(Err(next)) => {
                    d.paused_until = Some(next);
                    Admit::Hold(HoldReason::Paused)
                }
                None | Some(Ok(())) => {
                    if let Breaker::HalfOpen { cool_off, .. } = d.breaker {
                        d.breaker = Breaker::HalfOpen {
                            probing: true,
                            cool_off,
                        };
                    }
                    d.in_flight += 1;
                    Admit::Go
                }
            },
        };
        (admit, follow)
    }

    /// The outbox held `n` deliveries of `dest` (after [`Admit::Hold`]).
    pub(crate) fn held(&mut self, dest: &str, n: u64) {
        if n > 0 {
            let d = self.entry(dest);
            d.holding = true;
            d.holds += 1;
        }
    }

    /// An admitted attempt to `dest` finished in `outcome` at `now`: the breaker learns from
    /// it, a `Retry-After` pauses the destination, and the freed slot goes to a destination
    /// holding deliveries.
    pub(crate) fn finish(&mut self, dest: &str, outcome: &Outcome, now: OffsetDateTime) -> Follow {
        let mut follow = Follow::default();
        let failures = self.config.breaker_failures;
        let max_open = self.config.breaker_max_open;
        let d = self.entry(dest);
        d.in_flight = d.in_flight.saturating_sub(1);
        d.finished = Some(Instant::now());
        if let Outcome::Status {
            code: 429 | 503,
            retry_after: Some(wait),
        } = outcome
        {
            let until = add(now, (*wait).min(max_open));
            d.paused_until = Some(d.paused_until.map_or(until, |at| at.max(until)));
        }
        let mut closed = false;
        if breaker_failure(outcome) {
            d.failures = d.failures.saturating_add(1);
            let reopen = match d.breaker {
                Breaker::HalfOpen { cool_off, .. } => Some((cool_off * 2).min(max_open)),
                Breaker::Closed if d.failures >= failures => Some(FIRST_COOL_OFF.min(max_open)),
                _ => None,
            };
            if let Some(cool_off) = reopen {
                d.breaker = Breaker::Open {
                    until: add(now, cool_off),
                    cool_off,
                };
                follow.transitions.push(Transition {
                    destination: dest.to_owned(),
                    to: BreakerState::Open,
                });
            }
        } else {
            d.failures = 0;
            if d.breaker != Breaker::Closed {
                d.breaker = Breaker::Closed;
                closed = true;
                follow.transitions.push(Transition {
                    destination: dest.to_owned(),
                    to: BreakerState::Closed,
                });
            }
        }
        if closed && d.holding && d.paused_until.is_none() {
            let in_flight = d.in_flight;
            let limit = self.limit(dest);
            follow
                .releases
                .push(self.release(dest, limit.saturating_sub(in_flight)));
        } else if let Some((name, load)) = self.starved("").map(|(n, l)| (n.to_owned(), l)) {
            // The freed slot goes to the destination furthest below its share, in chunks of a
            // quarter of its limit: a destination alone at a cap of 64 is released sixteen at
            // a time, not once per attempt (each release is a write).
            let want = self.limit(&name).saturating_sub(load);
            if want >= (self.limit(&name) / 4).max(1) {
                follow.releases.push(self.release(&name, want));
            }
        }
        let rate = self.config.per_destination_rate;
        if self.dests.get(dest).is_some_and(|d| d.pristine(now, rate)) {
            self.dests.remove(dest);
        }
        follow
    }

    fn release(&mut self, dest: &str, limit: usize) -> Release {
        self.releases += 1;
        let stamp = self.releases;
        let mut holds = 0;
        if let Some(d) = self.dests.get_mut(dest) {
            d.released_at = stamp;
            d.incoming += limit;
            d.released = Some(Instant::now());
            holds = d.holds;
        }
        Release {
            destination: dest.to_owned(),
            limit,
            holds,
        }
    }

    /// The outbox let `got` of the deliveries `release` asked for go: fewer means it holds no
    /// more of them, unless a hold was confirmed since.
    pub(crate) fn released(&mut self, release: &Release, got: u64) {
        let dest = release.destination.as_str();
        let got = usize::try_from(got).unwrap_or(usize::MAX);
        if let Some(d) = self.dests.get_mut(dest) {
            d.incoming = d.incoming.saturating_sub(release.limit.saturating_sub(got));
        }
        let rate = self.config.per_destination_rate;
        if got < release.limit
            && let Some(d) = self.dests.get_mut(dest)
            && d.holds == release.holds
        {
            d.holding = false;
            if d.pristine(OffsetDateTime::now_utc(), rate) {
                self.dests.remove(dest);
            }
        }
    }

    /// When [`Gate::wake`] next has something to do.
    pub(crate) fn next_wake(&self) -> Option<OffsetDateTime> {
        (self.dests.values())
            .filter_map(|d| match d.breaker {
                Breaker::Open { until, .. } => Some(until),
                _ => d.paused_until.filter(|_| d.holding),
            })
            .min()
    }

    /// The breakers whose cool-off ended turn half-open and release a probe; the pauses that
    /// ended release up to their destination's limit.
    pub(crate) fn wake(&mut self, now: OffsetDateTime) -> Follow {
        let mut follow = Follow::default();
        // Destinations kept only for a bucket that has refilled since go now.
        let rate = self.config.per_destination_rate;
        (self.dests).retain(|_, d| d.bucket.is_none() || !d.pristine(now, rate));
        let names: Vec<String> = self.dests.keys().cloned().collect();
        for name in names {
            let limit = self.limit(&name);
            let Some(d) = self.dests.get_mut(&name) else {
                continue;
            };
            let mut release = 0;
            if let Breaker::Open { until, cool_off } = d.breaker
                && now >= until
            {
                d.breaker = Breaker::HalfOpen {
                    probing: false,
                    cool_off,
                };
                follow.transitions.push(Transition {
                    destination: name.clone(),
                    to: BreakerState::HalfOpen,
                });
                release = 1;
            }
            if d.paused_until.is_some_and(|until| now >= until) {
                d.paused_until = None;
                if d.breaker == Breaker::Closed {
                    release = limit.saturating_sub(d.in_flight);
                    if self.config.per_destination_rate.is_some() {
                        release = release.min(1);
                    }
                }
            }
            if release > 0 && d.holding {
                follow.releases.push(self.release(&name, release));
            }
        }
        follow
    }

    /// The sweep found `held` deliveries held by `dest`: release up to its limit unless this
    /// gate is working on it (attempts in flight, whose ends release more; a breaker not
    /// closed, or a pause, whose ends do). Held deliveries with nothing here to release them
    /// (another instance held them and stopped, or took the last ones released) go again.
    /// A half-open breaker whose probe found nothing to release (its release came back empty,
    /// the held deliveries being another writer's at that moment) gets one now: without it,
    /// nothing would ever probe.
    pub(crate) fn adopt(&mut self, dest: &str, held: u64) -> Option<Release> {
        if let Some(d) = self.dests.get_mut(dest)
            && d.in_flight == 0
            && d.paused_until.is_none()
            && matches!(d.breaker, Breaker::HalfOpen { probing: false, .. })
        {
            d.holding = true;
            return Some(self.release(dest, 1));
        }
        if let Some(d) = self.dests.get(dest)
            && (d.in_flight > 0 || !d.open_for_work())
        {
            return None;
        }
        let limit = self.limit(dest);
        self.entry(dest).holding = true;
        let limit = limit.min(usize::try_from(held).unwrap_or(usize::MAX));
        Some(self.release(dest, limit))
    }

    /// Every destination with state, by name.
    pub(crate) fn snapshot(&self) -> Vec<DestinationState> {
        let mut states: Vec<DestinationState> = (self.dests.iter())
            .map(|(name, d)| {
                let (state, next_probe_at) = match d.breaker {
                    Breaker::Closed => (BreakerState::Closed, None),
                    Breaker::Open { until, .. } => (BreakerState::Open, Some(until)),
                    Breaker::HalfOpen { .. } => (BreakerState::HalfOpen, None),
                };
                DestinationState {
                    destination: name.clone(),
                    state,
                    consecutive_failures: d.failures,
                    in_flight: d.in_flight,
                    next_probe_at,
                    paused_until: d.paused_until,
                }
            })
            .collect();
        states.sort_by(|a, b| a.destination.cmp(&b.destination));
        states
    }

    /// Whether `dest` is the only destination with work here (no other has attempts in flight
    /// or holds deliveries).
    pub(crate) fn alone(&self, dest: &str) -> bool {
        !(self.dests.iter()).any(|(name, d)| name != dest && (d.in_flight > 0 || d.holding))
    }

    /// The destination that alone has work here (attempts in flight or deliveries held), if one
    /// is, with how many more attempts its limit lets start (none: it is saturated, and a claim
    /// would find it more deliveries it cannot take).
    pub(crate) fn lone(&self) -> Option<(&str, usize)> {
        let mut busy = self
            .dests
            .iter()
            .filter(|(_, d)| d.in_flight > 0 || d.holding);
        let (name, d) = busy.next()?;
        if busy.next().is_some() {
            return None;
        }
        Some((name.as_str(), self.limit(name).saturating_sub(d.in_flight)))
    }

    /// Whether `dest` finished an attempt within `within`.
    pub(crate) fn answering(&self, dest: &str, within: Duration) -> bool {
        (self.dests.get(dest))
            .and_then(|d| d.finished)
            .is_some_and(|at| at.elapsed() < within)
    }

    /// Whether a destination holds deliveries that could go.
    pub(crate) fn contended(&self) -> bool {
        self.dests.values().any(|d| d.holding && d.open_for_work())
    }

    /// How many breakers are open or half-open.
    pub(crate) fn open_breakers(&self) -> usize {
        (self.dests.values())
            .filter(|d| d.breaker != Breaker::Closed)
            .count()
    }
}

/// Takes a token from a bucket of `rate` per second holding at most one second's worth
/// (`None`: full); `Err` with when the next token is there when none is.
fn take_token(
    bucket: &mut Option<(f64, OffsetDateTime)>,
    rate: f64,
    now: OffsetDateTime,
) -> Result<(), OffsetDateTime> {
    let burst = rate.max(1.0);
    let (tokens, at) = bucket.unwrap_or((burst, now));
    let elapsed = (now - at).as_seconds_f64().max(0.0);
    let tokens = (tokens + elapsed * rate).min(burst);
    if tokens >= 1.0 {
        *bucket = Some((tokens - 1.0, now));
        return Ok(());
    }
    *bucket = Some((tokens, now));
    let wait = Duration::from_secs_f64(((1.0 - tokens) / rate).max(0.001));
    Err(add(now, wait))
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    const A: &str = "http://a.example";
    const B: &str = "http://b.example";
    const T0: OffsetDateTime = datetime!(2026-12-01 12:00:00 UTC);

    fn gate(cap: usize, concurrency: usize) -> Gate {
        Gate::new(
            Isolation {
                per_destination_concurrency: cap,
                ..Isolation::default()
            },
            concurrency,
        )
    }

    fn status(code: u16) -> Outcome {
        Outcome::Status {
            code,
            retry_after: None,
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_destination_alone_gets_its_cap_and_shares_fairly_once_another_has_work() {
        let mut gate = gate(4, 6);
        for _ in 0..4 {
            assert_eq!(gate.admit(A, T0, true).0, Admit::Go);
        }
        assert_eq!(gate.admit(A, T0, true).0, Admit::Hold(HoldReason::Capacity));
        gate.held(A, 1);
        // B has work: its share is ceil(6 / 2) = 3.
        for _ in 0..3 {
            assert_eq!(gate.admit(B, T0, true).0, Admit::Go);
        }
        assert_eq!(gate.admit(B, T0, true).0, Admit::Hold(HoldReason::Capacity));
        gate.held(B, 1);
        // A finishes one: A is over its share (4 > 3), B at it; A's own held one is not
        // released while A is at or over its share.
        let follow = gate.finish(A, &status(200), T0);
        assert_eq!(follow.releases, []);
        let follow = gate.finish(A, &status(200), T0);
        // A has 2 in flight, below its share of 3, and holds: one of A's goes.
        assert_eq!(follow.releases[0].destination, A);
        assert_eq!(follow.releases[0].limit, 1);
        // B finishes: B (2 in flight) is now the furthest below.
        let follow = gate.finish(B, &status(204), T0);
        assert_eq!(follow.releases[0].destination, B);
    }

    #[test]
    fn a_destination_alone_is_lone_with_the_room_its_cap_leaves_until_another_has_work() {
        let mut gate = gate(4, 8);
        assert_eq!(gate.lone(), None);
        for _ in 0..3 {
            assert_eq!(gate.admit(A, T0, true).0, Admit::Go);
        }
        assert_eq!(gate.lone(), Some((A, 1)));
        assert_eq!(gate.admit(A, T0, true).0, Admit::Go);
        assert_eq!(gate.lone(), Some((A, 0)));
        assert!(!gate.answering(A, Duration::from_secs(60)));
        gate.finish(A, &status(200), T0);
        assert_eq!(gate.lone(), Some((A, 1)));
        assert!(gate.answering(A, Duration::from_secs(60)));
        // Another destination with work: nobody is alone.
        assert_eq!(gate.admit(B, T0, true).0, Admit::Go);
        assert_eq!(gate.lone(), None);
        gate.finish(B, &status(200), T0);
        assert_eq!(gate.lone(), Some((A, 1)));
    }

    #[test]
    fn five_failures_open_the_breaker_and_a_probe_closes_it() {
        let mut gate = gate(8, 64);
        for _ in 0..5 {
            assert_eq!(gate.admit(A, T0, true).0, Admit::Go);
        }
        for i in 0..4 {
            let follow = gate.finish(A, &Outcome::ConnectError, T0);
            assert_eq!(follow.transitions, [], "failure {i}");
        }
        let follow = gate.finish(A, &status(503), T0);
        assert_eq!(
            follow.transitions,
            [Transition {
                destination: A.to_owned(),
                to: BreakerState::Open
            }]
        );
        assert_eq!(gate.admit(A, T0, true).0, Admit::Hold(HoldReason::Breaker));
        gate.held(A, 1);
        assert_eq!(gate.next_wake(), Some(T0 + secs(1)));
        // Other destinations are not affected.
        assert_eq!(gate.admit(B, T0, true).0, Admit::Go);

        // The cool-off ends: half-open, one probe released.
        let follow = gate.wake(T0 + secs(1));
        assert_eq!(follow.transitions[0].to, BreakerState::HalfOpen);
        assert_eq!(follow.releases[0].limit, 1);
        assert_eq!(gate.admit(A, T0 + secs(1), true).0, Admit::Go);
        assert_eq!(
            gate.admit(A, T0 + secs(1), true).0,
            Admit::Hold(HoldReason::Breaker)
        );
        // The probe fails: open again for twice as long.
        gate.finish(A, &Outcome::Timeout, T0 + secs(1));
        assert_eq!(gate.next_wake(), Some(T0 + secs(3)));
        gate.wake(T0 + secs(3));
        assert_eq!(gate.admit(A, T0 + secs(3), true).0, Admit::Go);
        // A 2xx closes it and releases up to the limit.
        let follow = gate.finish(A, &status(200), T0 + secs(3));
        assert_eq!(follow.transitions[0].to, BreakerState::Closed);
        assert_eq!(follow.releases[0].limit, 8);
        let a = gate.snapshot().into_iter().find(|s| s.destination == A);
        assert_eq!(
            a.map(|a| (a.state, a.consecutive_failures)),
            Some((BreakerState::Closed, 0))
        );
    }

    #[test]
    fn the_cool_off_doubles_up_to_its_bound() {
        let mut gate = Gate::new(
            Isolation {
                breaker_failures: 1,
                breaker_max_open: secs(3),
                ..Isolation::default()
            },
            64,
        );
        gate.admit(A, T0, true);
        gate.finish(A, &Outcome::Timeout, T0);
        let mut at = T0;
        for expected in [1, 2, 3, 3] {
            assert_eq!(gate.next_wake(), Some(at + secs(expected)));
            at += secs(expected);
            gate.wake(at);
            assert_eq!(gate.admit(A, at, true).0, Admit::Go);
            gate.finish(A, &Outcome::ConnectError, at);
        }
    }

    #[test]
    fn retry_after_pauses_the_destination_and_a_4xx_is_no_failure() {
        let mut gate = gate(8, 64);
        gate.admit(A, T0, true);
        gate.finish(
            A,
            &Outcome::Status {
                code: 429,
                retry_after: Some(secs(2)),
            },
            T0,
        );
        assert_eq!(
            gate.admit(A, T0 + secs(1), true).0,
            Admit::Hold(HoldReason::Paused)
        );
        gate.held(A, 1);
        assert_eq!(gate.next_wake(), Some(T0 + secs(2)));
        let follow = gate.wake(T0 + secs(2));
        assert_eq!(follow.releases[0].limit, 8);
        assert_eq!(gate.admit(A, T0 + secs(2), true).0, Admit::Go);
        for _ in 0..10 {
            gate.finish(A, &status(404), T0);
            gate.admit(A, T0, true);
        }
        assert_eq!(gate.open_breakers(), 0);
    }

    #[test]
    fn a_rate_limit_paces_with_a_token_bucket() {
        let mut gate = Gate::new(
            Isolation {
                per_destination_rate: Some(2.0),
                ..Isolation::default()
            },
            64,
        );
        // A burst of two, then one every half second.
        assert_eq!(gate.admit(A, T0, true).0, Admit::Go);
        assert_eq!(gate.admit(A, T0, true).0, Admit::Go);
        assert_eq!(gate.admit(A, T0, true).0, Admit::Hold(HoldReason::Paused));
        gate.held(A, 1);
        assert_eq!(gate.next_wake(), Some(T0 + Duration::from_millis(500)));
        let follow = gate.wake(T0 + Duration::from_millis(500));
        assert_eq!(follow.releases[0].limit, 1);
        assert_eq!(
            gate.admit(A, T0 + Duration::from_millis(500), true).0,
            Admit::Go
        );
    }

    /// A destination whose attempts all ended keeps its bucket until it refills: forgetting it
    /// (as a quiet destination is) would hand it a full burst again.
    #[test]
    fn a_rate_limited_destination_keeps_its_bucket_while_it_refills() {
        let mut gate = Gate::new(
            Isolation {
                per_destination_rate: Some(4.0),
                ..Isolation::default()
            },
            64,
        );
        for _ in 0..4 {
            assert_eq!(gate.admit(A, T0, true).0, Admit::Go);
        }
        for _ in 0..4 {
            gate.finish(A, &status(200), T0);
        }
        let soon = T0 + Duration::from_millis(100);
        assert_eq!(gate.admit(A, soon, true).0, Admit::Hold(HoldReason::Paused));
        // Refilled (a second's worth): forgotten once its last attempt ends.
        let later = T0 + Duration::from_secs(2);
        assert_eq!(gate.admit(A, later, true).0, Admit::Go);
        gate.finish(A, &status(200), later + Duration::from_secs(1));
        assert!(gate.snapshot().is_empty());
        // One whose bucket was still refilling when its last attempt ended goes once it has.
        assert_eq!(gate.admit(B, T0, true).0, Admit::Go);
        gate.finish(B, &status(200), T0);
        assert_eq!(gate.snapshot().len(), 1, "kept while its bucket refills");
        gate.wake(T0 + Duration::from_millis(100));
        assert_eq!(gate.snapshot().len(), 1);
        gate.wake(T0 + Duration::from_millis(300));
        assert!(gate.snapshot().is_empty(), "forgotten once refilled");
    }

    #[test]
    fn a_quiet_destination_leaves_no_state_and_the_sweep_adopts_orphans() {
        let mut gate = gate(8, 64);
        gate.admit(A, T0, true);
        gate.finish(A, &status(200), T0);
        assert!(gate.snapshot().is_empty());
        // Held by someone else: released up to the limit.
        let release = gate.adopt(B, 100).unwrap();
        assert_eq!(release.limit, 8);
        gate.released(&release, 3);
        assert!(gate.snapshot().is_empty());
        // Not while attempts are in flight: their ends release more.
        gate.admit(B, T0, true);
        assert_eq!(gate.adopt(B, 100), None);
        // A half-open breaker whose probe release found nothing gets one from the sweep.
        let mut gate = Gate::new(
            Isolation {
                breaker_failures: 1,
                ..Isolation::default()
            },
            64,
        );
        gate.admit(A, T0, true);
        gate.finish(A, &Outcome::Timeout, T0);
        gate.held(A, 1);
        let probe = gate.wake(T0 + secs(1)).releases.pop().unwrap();
        gate.released(&probe, 0);
        assert_eq!(gate.adopt(A, 1).map(|r| r.limit), Some(1));
        assert_eq!(gate.admit(A, T0 + secs(1), true).0, Admit::Go);
    }
}
