//! The in-memory outbox: a due-time heap of pending deliveries and a lease index of in-flight
//! ones, behind one short-held lock; no task or timer per delivery.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use flock_models::{Destination, NewDelivery, TenantId};
use flock_retry::GiveUp;
use time::OffsetDateTime;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::outbox::{
    AttemptView, ClaimedDelivery, DeliveryState, DeliveryView, ErrorKind, FailedQuery,
    HeldDeliveries, HoldReason, Lease, Outbox, OutboxCounts, OutboxError, Resolution,
};
use crate::time_util::add;

/// An [`Outbox`] in memory, for a single process (and for tests).
///
/// Pending deliveries sit in a binary heap ordered by due time; claimed ones in an index ordered
/// by lease expiry, so an expired lease is found as cheaply as a due delivery. Enqueueing takes
/// the lock briefly, never waits for anything else, and wakes the dispatcher. Delivered
/// deliveries keep their attempts (for listing) but drop their body, secret and custom headers;
/// failed ones keep them too, so that they can be redelivered, until they are pruned.
///
/// An ordered webhook's deliveries form a chain (pending ones by sequence): a claim that pops
/// one that is not first in its chain parks it, off the heap, and the one that leaves the
/// chain (delivered or finally failed) puts the next one back on the heap.
pub struct MemoryOutbox {
    state: Mutex<State>,
    notify: Notify,
}

#[derive(Default)]
struct State {
    entries: HashMap<Uuid, Entry>,
    by_correlation: HashMap<Uuid, Vec<Uuid>>,
    /// One element per pending delivery: (due, id). Elements whose delivery no longer has
    /// that due time are dropped when met.
    due: BTreeSet<(OffsetDateTime, Uuid)>,
    /// One element per in-flight delivery: (lease expiry, token) to id.
    leases: BTreeMap<(OffsetDateTime, u64), Uuid>,
    next_token: u64,
    /// The error text of the last attempt recorded, shared by the next one when equal.
    last_error: Option<Arc<str>>,
    pending: u64,
    in_flight: u64,
    /// Each ordered webhook's pending deliveries (waiting, parked or in flight), by sequence.
    chains: HashMap<(Uuid, u8), BTreeSet<(u64, Uuid)>>,
    /// Ordered deliveries that fell due while an earlier one of their webhook was pending: off
    /// the heap until they are first in their chain.
    parked: HashSet<Uuid>,
    /// The deliveries each destination holds, longest held first.
    held: HashMap<String, BTreeSet<(OffsetDateTime, Uuid)>>,
}

struct Entry {
    correlation_id: Uuid,
    tenant: TenantId,
    artifact_id: Uuid,
    sequence: u64,
    webhook: u8,
    ordered: bool,
    /// The custom headers' names (the values go with the delivery).
    header_names: Vec<String>,
    created_at: OffsetDateTime,
    attempts: Vec<StoredAttempt>,
    /// How many attempts were recorded before the delivery was last redelivered.
    round_start: u32,
    status: Status,
}

/// An attempt as kept in memory: [`AttemptView`] made compact, its error text shared with the
/// previous attempt recorded when equal (a dead receiver gives every attempt the same text).
struct StoredAttempt {
    started_at: OffsetDateTime,
    error: Option<Arc<str>>,
    number: u32,
    duration_ms: u32,
    status_code: Option<u16>,
    error_kind: Option<ErrorKind>,
}

impl StoredAttempt {
    fn new(attempt: AttemptView, last_error: &mut Option<Arc<str>>) -> Self {
        let error = attempt.error.map(|text| match last_error {
            Some(last) if **last == *text => Arc::clone(last),
            _ => {
                let shared: Arc<str> = text.into();
                *last_error = Some(Arc::clone(&shared));
                shared
            }
        });
        StoredAttempt {
            started_at: attempt.started_at,
            error,
            number: attempt.number,
            duration_ms: u32::try_from(attempt.duration_ms).unwrap_or(u32::MAX),
            status_code: attempt.status_code,
            error_kind: attempt.error_kind,
        }
    }

    fn view(&self) -> AttemptView {
        AttemptView {
            number: self.number,
            started_at: self.started_at,
            status_code: self.status_code,
            error_kind: self.error_kind,
            error: self.error.as_deref().map(str::to_owned),
            duration_ms: u64::from(self.duration_ms),
        }
    }
}

enum Status {
    Pending {
        delivery: Arc<NewDelivery>,
        due: OffsetDateTime,
    },
    InFlight {
        delivery: Arc<NewDelivery>,
        token: u64,
        expires_at: OffsetDateTime,
    },
    /// Held by its destination, off the heap until released or expired.
    Held {
        delivery: Arc<NewDelivery>,
        reason: HoldReason,
        since: OffsetDateTime,
    },
    Delivered {
        url: String,
        at: OffsetDateTime,
    },
    Failed {
        delivery: Arc<NewDelivery>,
        at: OffsetDateTime,
        reason: GiveUp,
    },
}

impl MemoryOutbox {
    /// Deletes the workflows `prune` chooses among those without a pending delivery, with
    /// their deliveries, while no delivery can be added or finish; answers how many went.
    /// `prune` gets the test of a busy workflow and answers the workflows it deleted.
    pub(crate) fn prune_workflows_with(
        &self,
        prune: impl FnOnce(&dyn Fn(Uuid) -> bool) -> Vec<Uuid>,
    ) -> u64 {
        let mut state = self.lock();
        let gone = prune(&|workflow| state.has_pending(workflow));
        for workflow in &gone {
            state.remove_workflow(*workflow);
        }
        u64::try_from(gone.len()).unwrap_or(u64::MAX)
    }

    /// An empty outbox.
    pub fn new() -> Self {
        MemoryOutbox {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
        }
    }

    /// Adds deliveries, due at once, and wakes the dispatcher; never blocks on anything but a
    /// short lock. The synchronous form of [`Outbox::enqueue`].
    ///
    /// # Errors
    /// [`OutboxError::Duplicate`] for an id already present (or given twice); nothing is added.
    pub fn enqueue_now(&self, deliveries: Vec<NewDelivery>) -> Result<(), OutboxError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let now = OffsetDateTime::now_utc();
        {
            let mut state = self.lock();
            if deliveries.len() > 1 {
                let mut seen = HashSet::with_capacity(deliveries.len());
                if let Some(dup) = deliveries.iter().find(|d| !seen.insert(d.id)) {
                    return Err(OutboxError::Duplicate(dup.id));
                }
            }
            if let Some(dup) = deliveries
                .iter()
                .find(|d| state.entries.contains_key(&d.id))
            {
                return Err(OutboxError::Duplicate(dup.id));
            }
            state.entries.reserve(deliveries.len());
            for delivery in deliveries {
                let id = delivery.id;
                state
                    .by_correlation
                    .entry(delivery.correlation_id)
                    .or_default()
                    .push(id);
                state.due.insert((now, id));
                state.pending += 1;
                if delivery.ordered {
                    state.chain_mut(&delivery).insert((delivery.sequence, id));
                }
                state.entries.insert(
                    id,
                    Entry {
                        correlation_id: delivery.correlation_id,
                        tenant: delivery.tenant.clone(),
                        artifact_id: delivery.artifact_id,
                        sequence: delivery.sequence,
                        webhook: delivery.webhook,
                        ordered: delivery.ordered,
                        header_names: delivery
                            .headers
                            .as_deref()
                            .map(|h| h.names().map(str::to_owned).collect())
                            .unwrap_or_default(),
                        created_at: now,
                        attempts: Vec::new(),
                        round_start: 0,
                        status: Status::Pending {
                            delivery: Arc::new(delivery),
                            due: now,
                        },
                    },
                );
            }
        }
        self.notify.notify_one();
        Ok(())
    }

    /// Checks that `deliveries` could be enqueued: no id given twice or already present.
    ///
    /// # Errors
    /// [`OutboxError::Duplicate`] naming the first such id.
    pub(crate) fn check_new(&self, deliveries: &[NewDelivery]) -> Result<(), OutboxError> {
        let state = self.lock();
        let mut seen = HashSet::with_capacity(deliveries.len());
        match deliveries
            .iter()
            .find(|d| !seen.insert(d.id) || state.entries.contains_key(&d.id))
        {
            Some(dup) => Err(OutboxError::Duplicate(dup.id)),
            None => Ok(()),
        }
    }

    /// How many deliveries it holds, done ones included.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// [`Outbox::claim`], and with `past` [`Outbox::claim_past`].
    fn claim_leased(
        &self,
        now: OffsetDateTime,
        limit: usize,
        lease_for: Duration,
        past: Option<(&[String], Option<OffsetDateTime>)>,
    ) -> Vec<ClaimedDelivery> {
        let expires_at = add(now, lease_for);
        let claimed = self.lock().claim(now, limit, expires_at, past);
        claimed
            .into_iter()
            .map(|c| ClaimedDelivery {
                lease: Lease {
                    delivery_id: c.delivery.id,
                    token: c.token,
                    expires_at,
                    ordered: c.delivery.ordered,
                },
                delivery: c.delivery,
                attempt: c.attempt,
                round_attempt: c.round_attempt,
            })
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for MemoryOutbox {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryOutbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("MemoryOutbox")
            .field("deliveries", &state.entries.len())
            .field("pending", &state.pending)
            .field("in_flight", &state.in_flight)
            .finish_non_exhaustive()
    }
}

impl State {
    /// Claims up to `limit` deliveries due at `now` (or whose lease lapsed by then), earliest
    /// due first; with `past`, none to those destinations and none due before its `since`.
    fn claim(
        &mut self,
        now: OffsetDateTime,
        limit: usize,
        expires_at: OffsetDateTime,
        past: Option<(&[String], Option<OffsetDateTime>)>,
    ) -> Vec<Claimed> {
        let mut out = Vec::new();
        let skip = |delivery: &NewDelivery| {
            past.is_some_and(|(past, _)| {
                let destination = Destination::text_of(&delivery.url);
                past.iter().any(|p| p == destination)
            })
        };
        // Deliveries whose lease lapsed: their attempt never reported back.
        let lapsed: Vec<(OffsetDateTime, u64)> = (self.leases.range(..=(now, u64::MAX)))
            .filter(|(_, id)| match self.entries.get(id).map(|e| &e.status) {
                Some(Status::InFlight { delivery, .. }) => !skip(delivery),
                _ => true,
            })
            .map(|(key, _)| *key)
            .take(limit)
            .collect();
        for key in lapsed {
            let Some(id) = self.leases.remove(&key) else {
                continue;
            };
            let delivery = match self.entries.get(&id).map(|e| &e.status) {
                Some(Status::InFlight { delivery, .. }) => Arc::clone(delivery),
                _ => continue,
            };
            out.extend(self.lease(id, delivery, expires_at));
        }
        // Due deliveries, earliest first, looked at in runs of what is still wanted (an
        // ordered delivery behind an earlier one of its webhook is set aside, not claimed).
        let since = (past.and_then(|(_, since)| since))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
            .min(now);
        let end = Bound::Included((now, Uuid::max()));
        let mut from = Bound::Included((since, Uuid::nil()));
        while out.len() < limit {
            let mut stale = Vec::new();
            let mut run = Vec::new();
            for &(due, id) in self.due.range((from, end)) {
                match self.entries.get(&id).map(|e| &e.status) {
                    Some(Status::Pending {
                        delivery,
                        due: current,
                    }) if *current == due => {
                        if !skip(delivery) {
                            run.push((due, id, Arc::clone(delivery)));
                        }
                    }
                    _ => stale.push((due, id)),
                }
                if run.len() >= limit - out.len() {
                    break;
                }
            }
            for key in &stale {
                self.due.remove(key);
            }
            let Some(&(due, id, _)) = run.last() else {
                break;
            };
            from = Bound::Excluded((due, id));
            for (due, id, delivery) in run {
                self.due.remove(&(due, id));
                if delivery.ordered
                    && self
                        .chains
                        .get(&(delivery.correlation_id, delivery.webhook))
                        .and_then(BTreeSet::first)
                        .is_some_and(|&(_, first)| first != id)
                {
                    // An earlier delivery of its webhook is pending: wait off the queue for it.
                    self.parked.insert(id);
                    continue;
                }
                if let Some(claimed) = self.lease(id, delivery, expires_at) {
                    self.pending -= 1;
                    self.in_flight += 1;
                    out.push(claimed);
                }
            }
        }
        out
    }

    /// Leases delivery `id` (`delivery`, pending or whose lease lapsed) with a new token until
    /// `expires_at`, counting its next attempt.
    fn lease(
        &mut self,
        id: Uuid,
        delivery: Arc<NewDelivery>,
        expires_at: OffsetDateTime,
    ) -> Option<Claimed> {
        let token = self.new_token();
        let entry = self.entries.get_mut(&id)?;
        entry.status = Status::InFlight {
            delivery: Arc::clone(&delivery),
            token,
            expires_at,
        };
        let (attempt, round_attempt) = next_attempt(entry);
        self.leases.insert((expires_at, token), id);
        Some(Claimed {
            delivery,
            attempt,
            round_attempt,
            token,
        })
    }

    fn new_token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// Returns whether the delivery went back to waiting (so a dispatcher should look again).
    fn record(
        &mut self,
        lease: &Lease,
        attempt: AttemptView,
        resolution: Resolution,
    ) -> Result<bool, OutboxError> {
        let id = lease.delivery_id;
        let entry = self
            .entries
            .get_mut(&id)
            .ok_or(OutboxError::UnknownDelivery(id))?;
        let (delivery, expires_at) = match &entry.status {
            Status::InFlight {
                delivery,
                token,
                expires_at,
            } if *token == lease.token => (Arc::clone(delivery), *expires_at),
            _ => return Err(OutboxError::LeaseLost(id)),
        };
        self.leases.remove(&(expires_at, lease.token));
        self.in_flight -= 1;
        let finished = add(
            attempt.started_at,
            Duration::from_millis(attempt.duration_ms),
        );
        // Most deliveries have one attempt: grow one at a time rather than by doubling.
        entry.attempts.reserve_exact(1);
        entry
            .attempts
            .push(StoredAttempt::new(attempt, &mut self.last_error));
        let ordered = delivery
            .ordered
            .then(|| (delivery.correlation_id, delivery.webhook));
        let requeued = match resolution {
            Resolution::Delivered => {
                entry.status = Status::Delivered {
                    url: delivery.url.for_logs(),
                    at: finished,
                };
                ordered.is_some_and(|key| self.unchain(key, (delivery.sequence, id)))
            }
            Resolution::Failed(reason) => {
                entry.status = Status::Failed {
                    delivery: Arc::clone(&delivery),
                    at: finished,
                    reason,
                };
                ordered.is_some_and(|key| self.unchain(key, (delivery.sequence, id)))
            }
            Resolution::RetryAt(due) => {
                entry.status = Status::Pending { delivery, due };
                self.due.insert((due, id));
                self.pending += 1;
                true
            }
        };
        Ok(requeued)
    }

    /// Puts a failed delivery back in the due heap.
    fn redeliver(&mut self, id: Uuid, now: OffsetDateTime) -> Result<(), OutboxError> {
        let entry = self
            .entries
            .get_mut(&id)
            .ok_or(OutboxError::UnknownDelivery(id))?;
        let delivery = match &entry.status {
            Status::Failed { delivery, .. } => Arc::clone(delivery),
            Status::Pending { .. } | Status::InFlight { .. } | Status::Held { .. } => {
                return Err(OutboxError::NotRedeliverable {
                    id,
                    state: DeliveryState::Pending,
                });
            }
            Status::Delivered { .. } => {
                return Err(OutboxError::NotRedeliverable {
                    id,
                    state: DeliveryState::Delivered,
                });
            }
        };
        entry.round_start = u32::try_from(entry.attempts.len()).unwrap_or(u32::MAX);
        entry.status = Status::Pending {
            delivery: Arc::clone(&delivery),
            due: now,
        };
        if delivery.ordered {
            self.chain_mut(&delivery).insert((delivery.sequence, id));
        }
        self.due.insert((now, id));
        self.pending += 1;
        Ok(())
    }

    /// The chain of `delivery`'s ordered webhook.
    fn chain_mut(&mut self, delivery: &NewDelivery) -> &mut BTreeSet<(u64, Uuid)> {
        self.chains
            .entry((delivery.correlation_id, delivery.webhook))
            .or_default()
    }

    /// Takes a delivery that is no longer pending out of its chain and, when the chain's new
    /// first delivery is parked, puts it back on the heap; answers whether it did.
    fn unchain(&mut self, key: (Uuid, u8), link: (u64, Uuid)) -> bool {
        let Some(chain) = self.chains.get_mut(&key) else {
            return false;
        };
        chain.remove(&link);
        let Some(&(_, next)) = chain.first() else {
            self.chains.remove(&key);
            return false;
        };
        if !self.parked.remove(&next) {
            return false;
        }
        match self.entries.get(&next).map(|e| &e.status) {
            Some(Status::Pending { due, .. }) => {
                self.due.insert((*due, next));
                true
            }
            _ => false,
        }
    }

    /// Drops delivered and failed entries completed before `before`.
    fn prune(&mut self, before: OffsetDateTime) -> u64 {
        let gone: Vec<(Uuid, Uuid)> = self
            .entries
            .iter()
            .filter(|(_, entry)| match &entry.status {
                Status::Delivered { at, .. } | Status::Failed { at, .. } => *at < before,
                Status::Pending { .. } | Status::InFlight { .. } | Status::Held { .. } => false,
            })
            .map(|(id, entry)| (*id, entry.correlation_id))
            .collect();
        for (id, correlation_id) in &gone {
            self.entries.remove(id);
            if let Some(ids) = self.by_correlation.get_mut(correlation_id) {
                ids.retain(|other| other != id);
                if ids.is_empty() {
                    self.by_correlation.remove(correlation_id);
                }
            }
        }
        u64::try_from(gone.len()).unwrap_or(u64::MAX)
    }

    /// Whether workflow `correlation_id` has a delivery waiting or in flight.
    fn has_pending(&self, correlation_id: Uuid) -> bool {
        (self
            .by_correlation
            .get(&correlation_id)
            .into_iter()
            .flatten())
        .filter_map(|id| self.entries.get(id))
        .any(|e| {
            matches!(
                e.status,
                Status::Pending { .. } | Status::InFlight { .. } | Status::Held { .. }
            )
        })
    }

    /// Deletes the deliveries of workflow `correlation_id`, none of them pending.
    fn remove_workflow(&mut self, correlation_id: Uuid) {
        for id in self
            .by_correlation
            .remove(&correlation_id)
            .unwrap_or_default()
        {
            self.entries.remove(&id);
        }
    }

    fn next_due(&self) -> Option<OffsetDateTime> {
        let due = self.due.first().map(|(due, _)| *due);
        let lapse = self.leases.first_key_value().map(|(&(at, _), _)| at);
        match (due, lapse) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn view(&self, id: Uuid) -> Option<DeliveryView> {
        let entry = self.entries.get(&id)?;
        let mut held = None;
        let (url, state, failure, next_attempt_at, completed_at) = match &entry.status {
            Status::Pending { delivery, .. } if self.parked.contains(&id) => {
                held = Some((HoldReason::Ordered, None));
                (
                    delivery.url.for_logs(),
                    DeliveryState::Pending,
                    None,
                    None,
                    None,
                )
            }
            Status::Pending { delivery, due } => (
                delivery.url.for_logs(),
                DeliveryState::Pending,
                None,
                Some(*due),
                None,
            ),
            Status::Held {
                delivery,
                reason,
                since,
            } => {
                held = Some((*reason, Some(*since)));
                (
                    delivery.url.for_logs(),
                    DeliveryState::Pending,
                    None,
                    None,
                    None,
                )
            }
            Status::InFlight { delivery, .. } => (
                delivery.url.for_logs(),
                DeliveryState::Pending,
                None,
                None,
                None,
            ),
            Status::Delivered { url, at } => {
                (url.clone(), DeliveryState::Delivered, None, None, Some(*at))
            }
            Status::Failed {
                delivery,
                at,
                reason,
            } => (
                delivery.url.for_logs(),
                DeliveryState::Failed,
                Some(*reason),
                None,
                Some(*at),
            ),
        };
        Some(DeliveryView {
            id,
            correlation_id: entry.correlation_id,
            tenant: entry.tenant.clone(),
            artifact_id: entry.artifact_id,
            sequence: entry.sequence,
            url,
            state,
            failure,
            attempts: entry.attempts.iter().map(StoredAttempt::view).collect(),
            next_attempt_at,
            created_at: entry.created_at,
            completed_at,
            webhook: entry.webhook,
            ordered: entry.ordered,
            headers: entry.header_names.clone(),
            held: held.map(|(reason, _)| reason),
            held_since: held.and_then(|(_, since)| since),
        })
    }

    /// Holds the deliveries claimed under `leases`; answers how many.
    fn hold(&mut self, leases: &[Lease], reason: HoldReason, now: OffsetDateTime) -> u64 {
        let mut held = 0;
        for lease in leases {
            let Some(entry) = self.entries.get_mut(&lease.delivery_id) else {
                continue;
            };
            let (delivery, expires_at) = match &entry.status {
                Status::InFlight {
                    delivery,
                    token,
                    expires_at,
                } if *token == lease.token => (Arc::clone(delivery), *expires_at),
                _ => continue,
            };
            self.leases.remove(&(expires_at, lease.token));
            self.in_flight -= 1;
            self.pending += 1;
            (self
                .held
                .entry(Destination::of(&delivery.url).as_str().to_owned()))
            .or_default()
            .insert((now, lease.delivery_id));
            entry.status = Status::Held {
                delivery,
                reason,
                since: now,
            };
            held += 1;
        }
        held
    }

    /// Lets up to `limit` of `destination`'s held deliveries go, due at `now`.
    fn release(&mut self, destination: &str, limit: usize, now: OffsetDateTime) -> u64 {
        let Some(held) = self.held.get_mut(destination) else {
            return 0;
        };
        let mut released = 0;
        while released < limit {
            let Some((_, id)) = held.pop_first() else {
                break;
            };
            let Some(entry) = self.entries.get_mut(&id) else {
                continue;
            };
            let Status::Held { delivery, .. } = &entry.status else {
                continue;
            };
            entry.status = Status::Pending {
                delivery: Arc::clone(delivery),
                due: now,
            };
            self.due.insert((now, id));
            released += 1;
        }
        if held.is_empty() {
            self.held.remove(destination);
        }
        u64::try_from(released).unwrap_or(u64::MAX)
    }

    /// Fails up to `limit` deliveries held since before `held_before`.
    fn expire_holds(
        &mut self,
        held_before: OffsetDateTime,
        now: OffsetDateTime,
        limit: usize,
    ) -> (u64, bool) {
        let mut expired = Vec::new();
        for (destination, held) in &mut self.held {
            while expired.len() < limit {
                match held.first() {
                    Some(&(since, id)) if since < held_before => {
                        held.pop_first();
                        expired.push((destination.clone(), id));
                    }
                    _ => break,
                }
            }
        }
        self.held.retain(|_, held| !held.is_empty());
        let mut requeued = false;
        let mut failed = 0;
        for (_, id) in expired {
            let Some(entry) = self.entries.get_mut(&id) else {
                continue;
            };
            let Status::Held { delivery, .. } = &entry.status else {
                continue;
            };
            let delivery = Arc::clone(delivery);
            entry.status = Status::Failed {
                delivery: Arc::clone(&delivery),
                at: now,
                reason: GiveUp::DestinationUnavailable,
            };
            self.pending -= 1;
            failed += 1;
            if delivery.ordered {
                requeued |= self.unchain(
                    (delivery.correlation_id, delivery.webhook),
                    (delivery.sequence, id),
                );
            }
        }
        (failed, requeued)
    }

    /// The destinations holding deliveries, of `tenant` when given.
    fn held_by_destination(&self, tenant: Option<&TenantId>) -> Vec<HeldDeliveries> {
        let mut out = Vec::new();
        for (destination, held) in &self.held {
            let mut count = 0;
            let mut oldest = None;
            for (since, id) in held {
                if tenant.is_none_or(|t| self.entries.get(id).is_some_and(|e| &e.tenant == t)) {
                    count += 1;
                    oldest = oldest.or(Some(*since));
                }
            }
            if let Some(oldest) = oldest {
                out.push(HeldDeliveries {
                    destination: destination.clone(),
                    held: count,
                    oldest,
                });
            }
        }
        out
    }
}

/// The number of the entry's next attempt, overall and since it was last queued.
fn next_attempt(entry: &Entry) -> (u32, u32) {
    let recorded = u32::try_from(entry.attempts.len()).unwrap_or(u32::MAX);
    (
        recorded.saturating_add(1),
        recorded.saturating_sub(entry.round_start).saturating_add(1),
    )
}

struct Claimed {
    delivery: Arc<NewDelivery>,
    attempt: u32,
    round_attempt: u32,
    token: u64,
}

#[async_trait]
impl Outbox for MemoryOutbox {
    async fn enqueue(&self, deliveries: Vec<NewDelivery>) -> Result<(), OutboxError> {
        self.enqueue_now(deliveries)
    }

    async fn claim(
        &self,
        now: OffsetDateTime,
        limit: usize,
        lease_for: Duration,
    ) -> Result<Vec<ClaimedDelivery>, OutboxError> {
        Ok(self.claim_leased(now, limit, lease_for, None))
    }

    async fn claim_past(
        &self,
        now: OffsetDateTime,
        limit: usize,
        lease_for: Duration,
        past: &[String],
        since: Option<OffsetDateTime>,
    ) -> Result<Vec<ClaimedDelivery>, OutboxError> {
        Ok(self.claim_leased(now, limit, lease_for, Some((past, since))))
    }

    async fn record(
        &self,
        lease: &Lease,
        attempt: AttemptView,
        resolution: Resolution,
    ) -> Result<(), OutboxError> {
        let requeued = self.lock().record(lease, attempt, resolution)?;
        if requeued {
            self.notify.notify_one();
        }
        Ok(())
    }

    async fn deliveries(&self, correlation_id: Uuid) -> Result<Vec<DeliveryView>, OutboxError> {
        let state = self.lock();
        let mut views: Vec<DeliveryView> = state
            .by_correlation
            .get(&correlation_id)
            .into_iter()
            .flatten()
            .filter_map(|id| state.view(*id))
            .collect();
        drop(state);
        views.sort_by_key(|v| (v.sequence, v.webhook, v.created_at));
        Ok(views)
    }

    async fn delivery(&self, id: Uuid) -> Result<Option<DeliveryView>, OutboxError> {
        Ok(self.lock().view(id))
    }

    /// Looks at every delivery held: the memory outbox has no index by failure time (it holds
    /// what one process made since it started).
    async fn failed(&self, query: &FailedQuery) -> Result<Vec<DeliveryView>, OutboxError> {
        let state = self.lock();
        let mut views: Vec<DeliveryView> = (state.entries.iter())
            .filter(|(_, entry)| {
                matches!(entry.status, Status::Failed { .. }) && entry.tenant == query.tenant
            })
            .filter_map(|(id, _)| state.view(*id))
            .filter(|view| query.matches(view))
            .collect();
        drop(state);
        views.sort_by_key(|v| Reverse((v.completed_at, v.id)));
        views.truncate(query.limit);
        Ok(views)
    }

    async fn next_due(&self) -> Result<Option<OffsetDateTime>, OutboxError> {
        Ok(self.lock().next_due())
    }

    async fn counts(&self) -> Result<OutboxCounts, OutboxError> {
        let state = self.lock();
        Ok(OutboxCounts {
            pending: state.pending,
            in_flight: state.in_flight,
        })
    }

    async fn pending_by_tenant(&self) -> Result<Vec<(TenantId, u64)>, OutboxError> {
        let state = self.lock();
        let mut counts: HashMap<&TenantId, u64> = HashMap::new();
        for entry in state.entries.values() {
            if matches!(
                entry.status,
                Status::Pending { .. } | Status::InFlight { .. } | Status::Held { .. }
            ) {
                *counts.entry(&entry.tenant).or_default() += 1;
            }
        }
        Ok(counts.into_iter().map(|(t, n)| (t.clone(), n)).collect())
    }

    async fn redeliver(&self, id: Uuid, now: OffsetDateTime) -> Result<(), OutboxError> {
        self.lock().redeliver(id, now)?;
        self.notify.notify_one();
        Ok(())
    }

    async fn hold(
        &self,
        leases: &[Lease],
        reason: HoldReason,
        now: OffsetDateTime,
    ) -> Result<u64, OutboxError> {
        if reason == HoldReason::Ordered {
            return Err(OutboxError::backend(
                "a delivery is held as `ordered` only by a claim, never by hold",
            ));
        }
        Ok(self.lock().hold(leases, reason, now))
    }

    async fn release(
        &self,
        destination: &str,
        limit: usize,
        now: OffsetDateTime,
    ) -> Result<u64, OutboxError> {
        let released = self.lock().release(destination, limit, now);
        if released > 0 {
            self.notify.notify_one();
        }
        Ok(released)
    }

    async fn expire_holds(
        &self,
        held_before: OffsetDateTime,
        now: OffsetDateTime,
        limit: usize,
    ) -> Result<u64, OutboxError> {
        let (failed, requeued) = self.lock().expire_holds(held_before, now, limit);
        if requeued {
            self.notify.notify_one();
        }
        Ok(failed)
    }

    async fn held(
        &self,
        tenant: Option<&TenantId>,
        limit: usize,
    ) -> Result<Vec<HeldDeliveries>, OutboxError> {
        let mut held = self.lock().held_by_destination(tenant);
        held.sort_by(|a, b| b.held.cmp(&a.held).then(a.destination.cmp(&b.destination)));
        held.truncate(limit);
        Ok(held)
    }

    async fn prune(&self, completed_before: OffsetDateTime) -> Result<u64, OutboxError> {
        Ok(self.lock().prune(completed_before))
    }

    async fn prune_workflows(&self, _: OffsetDateTime) -> Result<u64, OutboxError> {
        Ok(0)
    }

    async fn enqueued(&self) {
        self.notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use flock_models::{Artifact, ArtifactDraft, Secret, TypeName, WebhookUrl};
    use serde_json::Map;

    use super::*;

    fn delivery(correlation_id: Uuid, sequence: u64) -> NewDelivery {
        let draft = ArtifactDraft::new(TypeName::new("Idea").unwrap(), Map::new());
        let artifact = Artifact::new(draft, "external", correlation_id);
        NewDelivery::new(
            &artifact,
            sequence,
            WebhookUrl::parse("https://example.com/hook?token=abc").unwrap(),
            Some(Secret::new("s3cret-value").unwrap()),
        )
    }

    fn attempt(number: u32) -> AttemptView {
        AttemptView {
            number,
            started_at: OffsetDateTime::now_utc(),
            status_code: Some(500),
            error_kind: Some(ErrorKind::HttpStatus),
            error: Some("HTTP 500".into()),
            duration_ms: 3,
        }
    }

    const LEASE: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn claims_due_deliveries_once_in_order() {
        let outbox = MemoryOutbox::new();
        let cid = Uuid::now_v7();
        outbox
            .enqueue_now((1..=5).map(|s| delivery(cid, s)).collect())
            .unwrap();
        let now = OffsetDateTime::now_utc();
        let first = outbox.claim(now, 3, LEASE).await.unwrap();
        let second = outbox.claim(now, 10, LEASE).await.unwrap();
        let sequences: Vec<u64> = first
            .iter()
            .chain(&second)
            .map(|c| c.delivery.sequence)
            .collect();
        assert_eq!(sequences, [1, 2, 3, 4, 5]);
        assert!(first.iter().chain(&second).all(|c| c.attempt == 1));
        assert!(outbox.claim(now, 10, LEASE).await.unwrap().is_empty());
        assert_eq!(
            outbox.counts().await.unwrap(),
            OutboxCounts {
                pending: 0,
                in_flight: 5
            }
        );
    }

    #[tokio::test]
    async fn retry_waits_for_its_due_time_and_counts_attempts() {
        let outbox = MemoryOutbox::new();
        let cid = Uuid::now_v7();
        outbox.enqueue_now(vec![delivery(cid, 1)]).unwrap();
        let now = OffsetDateTime::now_utc();
        let claimed = outbox.claim(now, 1, LEASE).await.unwrap().remove(0);
        let retry_at = add(now, Duration::from_secs(60));
        outbox
            .record(&claimed.lease, attempt(1), Resolution::RetryAt(retry_at))
            .await
            .unwrap();
        assert_eq!(outbox.next_due().await.unwrap(), Some(retry_at));
        assert!(outbox.claim(now, 1, LEASE).await.unwrap().is_empty());
        let again = outbox.claim(retry_at, 1, LEASE).await.unwrap().remove(0);
        assert_eq!(again.attempt, 2);
        outbox
            .record(&again.lease, attempt(2), Resolution::Delivered)
            .await
            .unwrap();
        let view = outbox.delivery(claimed.delivery.id).await.unwrap().unwrap();
        assert_eq!(view.state, DeliveryState::Delivered);
        assert_eq!(view.attempts.len(), 2);
        assert_eq!(view.url, "https://example.com/hook");
        assert_eq!(outbox.next_due().await.unwrap(), None);
        assert_eq!(outbox.counts().await.unwrap(), OutboxCounts::default());
    }

    #[tokio::test]
    async fn an_expired_lease_is_claimed_again_and_the_old_one_cannot_record() {
        let outbox = MemoryOutbox::new();
        outbox
            .enqueue_now(vec![delivery(Uuid::now_v7(), 1)])
            .unwrap();
        let now = OffsetDateTime::now_utc();
        let old = outbox.claim(now, 1, LEASE).await.unwrap().remove(0);
        assert_eq!(outbox.next_due().await.unwrap(), Some(old.lease.expires_at));
        assert!(outbox.claim(now, 1, LEASE).await.unwrap().is_empty());
        let later = old.lease.expires_at;
        let new = outbox.claim(later, 1, LEASE).await.unwrap().remove(0);
        assert_ne!(new.lease.token, old.lease.token);
        assert_eq!(new.attempt, 1, "the lost attempt was never recorded");
        assert_eq!(
            outbox
                .record(&old.lease, attempt(1), Resolution::Delivered)
                .await,
            Err(OutboxError::LeaseLost(old.delivery.id))
        );
        outbox
            .record(&new.lease, attempt(1), Resolution::Failed(GiveUp::Gone))
            .await
            .unwrap();
        let view = outbox.delivery(old.delivery.id).await.unwrap().unwrap();
        assert_eq!(view.state, DeliveryState::Failed);
        assert_eq!(view.failure, Some(GiveUp::Gone));
        assert_eq!(view.attempts.len(), 1);
        assert_eq!(outbox.counts().await.unwrap(), OutboxCounts::default());
    }

    #[tokio::test]
    async fn a_failed_delivery_is_redelivered_with_a_fresh_budget_and_its_history() {
        let outbox = MemoryOutbox::new();
        outbox
            .enqueue_now(vec![delivery(Uuid::now_v7(), 1)])
            .unwrap();
        let now = OffsetDateTime::now_utc();
        let first = outbox.claim(now, 1, LEASE).await.unwrap().remove(0);
        let id = first.delivery.id;
        assert_eq!(
            outbox.redeliver(id, now).await,
            Err(OutboxError::NotRedeliverable {
                id,
                state: DeliveryState::Pending
            })
        );
        outbox
            .record(
                &first.lease,
                attempt(1),
                Resolution::Failed(GiveUp::Exhausted),
            )
            .await
            .unwrap();
        let unknown = Uuid::now_v7();
        assert_eq!(
            outbox.redeliver(unknown, now).await,
            Err(OutboxError::UnknownDelivery(unknown))
        );
        outbox.redeliver(id, now).await.unwrap();
        assert_eq!(outbox.counts().await.unwrap().pending, 1);
        let again = outbox.claim(now, 1, LEASE).await.unwrap().remove(0);
        assert_eq!((again.attempt, again.round_attempt), (2, 1));
        assert_eq!(again.delivery.id, id);
        outbox
            .record(&again.lease, attempt(2), Resolution::Delivered)
            .await
            .unwrap();
        let view = outbox.delivery(id).await.unwrap().unwrap();
        assert_eq!(view.state, DeliveryState::Delivered);
        assert_eq!(view.attempts.len(), 2);
        assert_eq!(
            outbox.redeliver(id, now).await,
            Err(OutboxError::NotRedeliverable {
                id,
                state: DeliveryState::Delivered
            })
        );
    }

    #[tokio::test]
    async fn prune_drops_only_done_deliveries_completed_before_the_cutoff() {
        let outbox = MemoryOutbox::new();
        let cid = Uuid::now_v7();
        outbox
            .enqueue_now(vec![delivery(cid, 1), delivery(cid, 2), delivery(cid, 3)])
            .unwrap();
        let now = OffsetDateTime::now_utc();
        let mut claimed = outbox.claim(now, 2, LEASE).await.unwrap();
        let failed = claimed.pop().unwrap();
        let delivered = claimed.pop().unwrap();
        outbox
            .record(&delivered.lease, attempt(1), Resolution::Delivered)
            .await
            .unwrap();
        outbox
            .record(&failed.lease, attempt(1), Resolution::Failed(GiveUp::Gone))
            .await
            .unwrap();
        assert_eq!(outbox.prune(now).await.unwrap(), 0, "completed after now");
        let later = add(OffsetDateTime::now_utc(), Duration::from_secs(1));
        assert_eq!(outbox.prune(later).await.unwrap(), 2);
        let left = outbox.deliveries(cid).await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].state, DeliveryState::Pending);
        assert_eq!(outbox.len(), 1);
        assert_eq!(
            outbox.redeliver(failed.delivery.id, later).await,
            Err(OutboxError::UnknownDelivery(failed.delivery.id))
        );
    }

    #[tokio::test]
    async fn duplicates_are_refused_whole() {
        let outbox = MemoryOutbox::new();
        let d = delivery(Uuid::now_v7(), 1);
        outbox.enqueue_now(vec![d.clone()]).unwrap();
        let fresh = delivery(d.correlation_id, 2);
        assert_eq!(
            outbox.enqueue_now(vec![fresh, d.clone()]),
            Err(OutboxError::Duplicate(d.id))
        );
        assert_eq!(outbox.len(), 1);
    }

    #[tokio::test]
    async fn lists_a_correlation_by_sequence_without_secrets() {
        let outbox = MemoryOutbox::new();
        let cid = Uuid::now_v7();
        let other = Uuid::now_v7();
        outbox
            .enqueue_now(vec![delivery(cid, 2), delivery(other, 1), delivery(cid, 1)])
            .unwrap();
        let views = outbox.deliveries(cid).await.unwrap();
        assert_eq!(views.iter().map(|v| v.sequence).collect::<Vec<_>>(), [1, 2]);
        let json = serde_json::to_string(&views).unwrap();
        assert!(!json.contains("s3cret-value"));
        assert!(!json.contains("token=abc"));
        assert!(!format!("{outbox:?}{views:?}").contains("s3cret-value"));
        let back: Vec<DeliveryView> = serde_json::from_str(&json).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].state, DeliveryState::Pending);
    }
}
