//! A store on a database: the group-commit writer that applies queued writes many to a
//! transaction, reads on the store's own runtime, and the `ArtifactStore` and `Outbox`
//! implementations on top of a [`Backend`].

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use flock_delivery::{
    AttemptView, ClaimedDelivery, DeliveryView, FailedQuery, HeldDeliveries, HoldReason, Lease,
    Outbox, OutboxCounts, OutboxError, RecordedAndClaimed, Resolution,
};
use flock_models::{Artifact, Destination, NewDelivery, TenantId};
use flock_orchestrator::{ArtifactQuery, ArtifactStore, Page, StoreError};
use time::OffsetDateTime;
use tokio::runtime::Handle;
use tokio::sync::{Mutex, Notify, mpsc, oneshot};
use tracing::{debug, error};
use uuid::Uuid;

use crate::error::Failure;
use crate::ops::{ClaimRequest, Done, Input, Op, OpError};
use crate::sql::batch::leases_at_insert;
use crate::sql::rows::ArtifactFields;

/// The most writes one transaction takes.
pub(crate) const MAX_BATCH: usize = 1024;

/// How many writes may wait for the writer before callers wait to queue theirs.
const QUEUE: usize = 8192;

/// The most done deliveries one prune write deletes; a prune of more takes several writes, so
/// other writes go in between.
pub(crate) const PRUNE_CHUNK: u64 = 5_000;

/// Workflows one write deletes at most (each costs a few statements), so that a prune holds
/// the writer only briefly between other writes.
pub(crate) const PRUNE_WORKFLOWS_CHUNK: u64 = 100;

/// The most deliveries written leased for this process's dispatcher that wait for it to take
/// them ([`Fresh`]); past it, a publish's deliveries are written due, for any claim.
const FRESH: usize = 256;

/// The deliveries this process's publishes wrote leased, in order, until its dispatcher takes
/// them: its next claims answer them first, without a write (a fresh delivery then costs the
/// database its insert and its record, not a claim that leases it and reads it back).
///
/// A publish's deliveries are written leased only when the dispatcher has claimed once (so
/// that its lease length is known) and [`FRESH`] leave room. One left waiting longer than
/// half its lease is dropped when found: its lease runs out and any claim takes it from the
/// database then, as one whose dispatcher stopped. The lease is what a claim would have
/// given, so across `kill -9`, and for other instances on the database, they are claimed
/// deliveries like any other.
#[derive(Default)]
struct Fresh {
    queue: VecDeque<ClaimedDelivery>,
    /// Room promised to publishes being written.
    reserved: usize,
    /// The dispatcher's lease, learnt from its claims.
    lease_for: Option<Duration>,
}

/// Room in [`Fresh`] promised to one publish until its write is answered.
struct Reservation<'a> {
    fresh: &'a std::sync::Mutex<Fresh>,
    count: usize,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut fresh = lock(self.fresh);
        fresh.reserved = fresh.reserved.saturating_sub(self.count);
    }
}

fn lock(fresh: &std::sync::Mutex<Fresh>) -> MutexGuard<'_, Fresh> {
    fresh.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A database behind a [`Durable`] store: its writes here, its reads in [`Reads`]. Errors are
/// the database's (stored data that does not decode included); the store says what failed.
#[async_trait]
pub(crate) trait Backend: Reads + Send + Sync + 'static {
    /// Applies `ops` in one transaction and commits it, setting each op's outcome. An error
    /// means nothing was committed.
    async fn write(&self, ops: &mut [Op]) -> Result<(), sqlx::Error>;

    /// Why `op`, written alone, failed with `err`: a refusal of its own (a duplicate id) or a
    /// database failure.
    async fn explain(&self, op: &Op, err: sqlx::Error) -> OpError;

    /// Closes the connections.
    async fn close(&self);

    /// How long a writer may wait for more writes to join a batch that is much smaller than
    /// the one before: worth it where a commit is expensive (a disk flush), so that under load
    /// the writes that arrive a moment apart share one.
    fn linger(&self) -> Duration;
}

/// What a [`Backend`] reads, as the store and outbox traits answer it. A read owns its
/// backend, so that it can run on the store's runtime.
#[async_trait]
pub(crate) trait Reads {
    async fn get(self: Arc<Self>, id: Uuid) -> Result<Option<Artifact>, sqlx::Error>;
    async fn query(self: Arc<Self>, query: ArtifactQuery) -> Result<Page<Artifact>, sqlx::Error>;
    /// The deliveries whose `column` is `value` (a workflow's, or one by id), in sequence
    /// order, each with its attempts.
    async fn views(
        self: Arc<Self>,
        column: &'static str,
        value: Uuid,
    ) -> Result<Vec<DeliveryView>, sqlx::Error>;
    async fn failed(self: Arc<Self>, query: FailedQuery) -> Result<Vec<DeliveryView>, sqlx::Error>;
    async fn next_due(self: Arc<Self>) -> Result<Option<OffsetDateTime>, sqlx::Error>;
    async fn counts(self: Arc<Self>) -> Result<OutboxCounts, sqlx::Error>;
    async fn pending_by_tenant(self: Arc<Self>) -> Result<Vec<(TenantId, u64)>, sqlx::Error>;
    /// The destinations holding deliveries (of `tenant`'s only, when given), those holding the
    /// most first, at most `limit`.
    async fn held(
        self: Arc<Self>,
        tenant: Option<TenantId>,
        limit: usize,
    ) -> Result<Vec<HeldDeliveries>, sqlx::Error>;
}

#[allow(
    clippy::large_enum_variant,
    reason = "nearly every message is a write; boxing would allocate each"
)]
enum Message {
    Write(Op),
    Close(oneshot::Sender<()>),
}

/// A store on a database: writes go to writer tasks that commit them in batches (group
/// commit), reads run on the runtime the store was opened on. Both the [`ArtifactStore`] and
/// the [`Outbox`] of one database.
pub(crate) struct Durable {
    backend: Arc<dyn Backend>,
    queue: mpsc::Sender<Message>,
    notify: Arc<Notify>,
    fresh: Arc<std::sync::Mutex<Fresh>>,
    runtime: Handle,
    closed: AtomicBool,
}

impl Durable {
    /// Starts `writers` writer tasks on the current runtime.
    pub(crate) fn start(backend: impl Backend, writers: usize) -> Arc<Self> {
        let backend: Arc<dyn Backend> = Arc::new(backend);
        let (queue, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        let notify = Arc::new(Notify::new());
        let fresh = Arc::default();
        let runtime = Handle::current();
        for _ in 0..writers.max(1) {
            runtime.spawn(writer(
                Arc::clone(&backend),
                Arc::clone(&receiver),
                Arc::clone(&notify),
                Arc::clone(&fresh),
            ));
        }
        Arc::new(Durable {
            backend,
            queue,
            notify,
            fresh,
            runtime,
            closed: AtomicBool::new(false),
        })
    }

    /// Queues a write and waits until its batch committed; `outcome` takes the answer apart.
    async fn write<T>(
        &self,
        input: Input,
        outcome: impl FnOnce(Done) -> Option<T>,
    ) -> Result<T, OpError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Failure::new("the store is closed").into());
        }
        let kind = input.kind();
        let (op, answer) = Op::new(input);
        let stopped = || Failure::new("the store's writer has stopped");
        self.queue
            .send(Message::Write(op))
            .await
            .map_err(|_| stopped())?;
        let done = answer.await.map_err(|_| stopped())??;
        outcome(done).ok_or_else(|| {
            Failure::new(format!("the writer answered a {kind} with another outcome")).into()
        })
    }

    /// Writes a publish of `artifacts` and `deliveries`, those that can go at once leased for
    /// the dispatcher when [`Fresh`] has room for them.
    async fn publish(
        &self,
        artifacts: Vec<ArtifactFields>,
        deliveries: Vec<NewDelivery>,
    ) -> Result<(), OpError> {
        let count = deliveries.iter().filter(|d| leases_at_insert(d)).count();
        let lease_for = {
            let mut fresh = lock(&self.fresh);
            let room = FRESH.saturating_sub(fresh.queue.len() + fresh.reserved);
            let lease_for = fresh.lease_for.filter(|_| count > 0 && count <= room);
            if lease_for.is_some() {
                fresh.reserved += count;
            }
            lease_for
        };
        let _reserved = lease_for.map(|_| Reservation {
            fresh: &self.fresh,
            count,
        });
        let input = Input::Publish {
            artifacts,
            deliveries,
            lease_for,
        };
        self.write(input, Done::applied).await
    }

    /// Up to `limit` of the deliveries written leased for the dispatcher, oldest first, none
    /// to the destinations `past` (those stay for a later claim); learns the dispatcher's
    /// lease length.
    fn take_fresh(
        &self,
        now: OffsetDateTime,
        limit: usize,
        lease_for: Duration,
        past: &[String],
    ) -> Vec<ClaimedDelivery> {
        let mut fresh = lock(&self.fresh);
        fresh.lease_for = Some(lease_for);
        let keep_past = now + lease_for / 2;
        let mut taken = Vec::new();
        let mut passed = Vec::new();
        while taken.len() < limit
            && let Some(claimed) = fresh.queue.pop_front()
        {
            if claimed.lease.expires_at <= keep_past {
                // Dropped: claimed from the database once its lease runs out.
            } else if past
                .iter()
                .any(|p| p == Destination::text_of(&claimed.delivery.url))
            {
                passed.push(claimed);
            } else {
                taken.push(claimed);
            }
        }
        for claimed in passed.into_iter().rev() {
            fresh.queue.push_front(claimed);
        }
        taken
    }

    /// A claim: the deliveries leased for the dispatcher first (none to the destinations
    /// `past`), then, for the rest of the limit, the database's claim `input` makes; those due
    /// longest first. When the database's claim fails, what was taken is put back.
    async fn claim_leased_first(
        &self,
        request: ClaimRequest,
        past: &[String],
        input: impl FnOnce(ClaimRequest) -> Input,
    ) -> Result<Vec<ClaimedDelivery>, OutboxError> {
        let mut taken = self.take_fresh(request.now, request.limit, request.lease_for, past);
        let rest = request.limit - taken.len();
        if rest == 0 {
            return Ok(taken);
        }
        let claimed = self.write(
            input(ClaimRequest {
                limit: rest,
                ..request
            }),
            |done| match done {
                Done::Claimed(claimed) => Some(claimed),
                _ => None,
            },
        );
        match claimed.await {
            Ok(mut claimed) => {
                claimed.append(&mut taken);
                Ok(claimed)
            }
            Err(err) => {
                self.put_back(taken);
                Err(err.into())
            }
        }
    }

    /// Puts back what [`Durable::take_fresh`] took, for a claim that failed.
    fn put_back(&self, taken: Vec<ClaimedDelivery>) {
        let mut fresh = lock(&self.fresh);
        for claimed in taken.into_iter().rev() {
            fresh.queue.push_front(claimed);
        }
    }

    /// Runs `read` of the backend on the store's runtime (whose I/O driver owns the
    /// connections); `what` names it in an error.
    async fn read<T: Send + 'static, F>(
        &self,
        what: &str,
        read: impl FnOnce(Arc<dyn Backend>) -> F,
    ) -> Result<T, Failure>
    where
        F: Future<Output = Result<T, sqlx::Error>> + Send + 'static,
    {
        match self.runtime.spawn(read(Arc::clone(&self.backend))).await {
            Ok(result) => result.map_err(|e| Failure::database(what, e)),
            Err(e) => Err(Failure::new(format!(
                "{what}: the read did not finish: {e}"
            ))),
        }
    }

    /// Prunes in writes of at most `chunk` (`prune` of each limit), so that other writes go in
    /// between, until one prunes fewer; answers how many went in all.
    async fn prune_in_chunks(
        &self,
        chunk: u64,
        prune: impl Fn(u64) -> Input,
    ) -> Result<u64, OpError> {
        let mut total = 0u64;
        loop {
            let pruned = self.write(prune(chunk), |done| match done {
                Done::Pruned(count) => Some(count),
                _ => None,
            });
            let count = pruned.await?;
            total = total.saturating_add(count);
            if count < chunk {
                return Ok(total);
            }
        }
    }

    /// Lets queued writes finish, then closes the connections. Later writes fail. Deliveries
    /// written leased for the dispatcher that it never took are held for capacity first, as
    /// the dispatcher holds what it claimed and could not start, so that the next start (or
    /// another instance) releases them without waiting for their leases to run out.
    pub(crate) async fn close(&self) {
        let left: Vec<Lease> = {
            let mut fresh = lock(&self.fresh);
            fresh.lease_for = None;
            fresh.queue.drain(..).map(|c| c.lease).collect()
        };
        if !left.is_empty() && !self.closed.load(Ordering::Acquire) {
            let input = Input::Hold {
                leases: left,
                reason: HoldReason::Capacity,
                now: OffsetDateTime::now_utc(),
            };
            if let Err(e) = self.write(input, Done::moved).await {
                error!(error = %OutboxError::from(e), "holding the deliveries no claim took at closing failed; they are claimed again once their leases expire");
            }
        }
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let (done, closed) = oneshot::channel();
        if self.queue.send(Message::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
    }
}

/// One writer: takes every write queued (at least one, up to [`MAX_BATCH`]), applies them in
/// one transaction, answers each, and starts over. Under load, writes queue up while a batch
/// commits and form the next; when that one is under half the last, the writer waits up to
/// [`Backend::linger`] for more to join it.
async fn writer(
    backend: Arc<dyn Backend>,
    receiver: Arc<Mutex<mpsc::Receiver<Message>>>,
    notify: Arc<Notify>,
    fresh: Arc<std::sync::Mutex<Fresh>>,
) {
    let linger = backend.linger();
    let closing = |messages: &[Message]| messages.iter().any(|m| matches!(m, Message::Close(_)));
    let mut last_batch = 0usize;
    loop {
        let mut messages = Vec::new();
        {
            let mut receiver = receiver.lock().await;
            if receiver.recv_many(&mut messages, MAX_BATCH).await == 0 {
                return;
            }
            // Under load (the last batch was large), wait a moment for the writes that are
            // about to arrive rather than paying a commit for a few.
            let until = tokio::time::Instant::now() + linger;
            while !linger.is_zero() && messages.len() < last_batch / 2 && !closing(&messages) {
                let wanted = last_batch / 2 - messages.len();
                let more = receiver.recv_many(&mut messages, wanted);
                if !matches!(tokio::time::timeout_at(until, more).await, Ok(n) if n > 0) {
                    break;
                }
            }
            if closing(&messages) {
                // Closing: the writes queued so far still go in, then the connections close.
                while let Ok(message) = receiver.try_recv() {
                    messages.push(message);
                }
            }
        }
        let (mut ops, mut closes) = (Vec::with_capacity(messages.len()), Vec::new());
        for message in messages {
            match message {
                Message::Write(op) => ops.push(op),
                Message::Close(done) => closes.push(done),
            }
        }
        last_batch = ops.len();
        while !ops.is_empty() {
            let rest = ops.split_off(ops.len().min(MAX_BATCH));
            commit(&*backend, ops, &notify, &fresh).await;
            ops = rest;
        }
        if !closes.is_empty() {
            backend.close().await;
            for done in closes {
                let _ = done.send(());
            }
            return;
        }
    }
}

/// Applies a batch; when it fails as a whole, applies its writes one at a time so that one bad
/// write fails alone.
async fn commit(
    backend: &dyn Backend,
    mut ops: Vec<Op>,
    notify: &Notify,
    fresh: &std::sync::Mutex<Fresh>,
) {
    let count = ops.len();
    let mut wake = false;
    match backend.write(&mut ops).await {
        Ok(()) => wake = answer(ops, fresh),
        Err(err) if count == 1 => fail(backend, ops, err, false).await,
        Err(err) => {
            debug!(error = %err, writes = count, "a batch of writes failed; applying them one at a time");
            for mut op in ops {
                op.outcome = None;
                let mut one = vec![op];
                match backend.write(&mut one).await {
                    Ok(()) => wake |= answer(one, fresh),
                    Err(err) => fail(backend, one, err, true).await,
                }
            }
        }
    }
    if wake {
        notify.notify_one();
    }
}

/// Answers each of `ops` (committed) with its outcome, the deliveries publishes leased for the
/// dispatcher queued for it first; returns whether one may give the dispatcher something to do.
fn answer(mut ops: Vec<Op>, fresh: &std::sync::Mutex<Fresh>) -> bool {
    for op in &mut ops {
        if let Some(Ok(done @ Done::Published(_))) = &mut op.outcome
            && let Done::Published(leased) = std::mem::replace(done, Done::Applied)
        {
            lock(fresh).queue.extend(leased);
        }
    }
    ops.into_iter()
        .fold(false, |wake, op| op.answer_committed() | wake)
}

/// Answers the one write of `ops`, which failed alone with `err`, with why; a database failure
/// is logged when `log`.
async fn fail(backend: &dyn Backend, mut ops: Vec<Op>, err: sqlx::Error, log: bool) {
    if let Some(op) = ops.pop() {
        let failure = backend.explain(&op, err).await;
        if let (true, OpError::Backend(failure)) = (log, &failure) {
            error!(error = %failure, "a storage write failed");
        }
        op.fail(failure);
    }
}

#[async_trait]
impl ArtifactStore for Durable {
    async fn publish_all(
        &self,
        artifacts: &[Artifact],
        deliveries: Vec<NewDelivery>,
    ) -> Result<(), StoreError> {
        let rows = (artifacts.iter())
            .map(|artifact| {
                ArtifactFields::of(artifact).map_err(|e| {
                    let what = format!("the payload of artifact {} does not render", artifact.id);
                    StoreError::backend_because(what, e)
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(self.publish(rows, deliveries).await?)
    }

    async fn get(&self, id: Uuid) -> Result<Option<Artifact>, StoreError> {
        Ok(self.read("cannot read an artifact", |b| b.get(id)).await?)
    }

    async fn query(&self, query: &ArtifactQuery) -> Result<Page<Artifact>, StoreError> {
        let query = query.clone();
        Ok(self
            .read("cannot query artifacts", |b| b.query(query))
            .await?)
    }
}

#[async_trait]
impl Outbox for Durable {
    async fn enqueue(&self, deliveries: Vec<NewDelivery>) -> Result<(), OutboxError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        Ok(self.publish(Vec::new(), deliveries).await?)
    }

    async fn claim(
        &self,
        now: OffsetDateTime,
        limit: usize,
        lease_for: Duration,
    ) -> Result<Vec<ClaimedDelivery>, OutboxError> {
        let request = ClaimRequest {
            now,
            limit,
            lease_for,
        };
        self.claim_leased_first(request, &[], Input::Claim).await
    }

    async fn claim_past(
        &self,
        now: OffsetDateTime,
        limit: usize,
        lease_for: Duration,
        past: &[String],
        since: Option<OffsetDateTime>,
    ) -> Result<Vec<ClaimedDelivery>, OutboxError> {
        let request = ClaimRequest {
            now,
            limit,
            lease_for,
        };
        let input = |request| Input::ClaimPast {
            request,
            past: past.to_vec(),
            since,
        };
        self.claim_leased_first(request, past, input).await
    }

    async fn record(
        &self,
        lease: &Lease,
        attempt: AttemptView,
        resolution: Resolution,
    ) -> Result<(), OutboxError> {
        let input = Input::Record {
            lease: *lease,
            attempt,
            resolution,
            then_claim: None,
        };
        Ok(self.write(input, Done::applied).await?)
    }

    async fn record_and_claim(
        &self,
        lease: &Lease,
        attempt: AttemptView,
        resolution: Resolution,
        now: OffsetDateTime,
        limit: usize,
        lease_for: Duration,
    ) -> RecordedAndClaimed {
        let mut taken = self.take_fresh(now, limit, lease_for, &[]);
        let rest = limit - taken.len();
        let input = Input::Record {
            lease: *lease,
            attempt,
            resolution,
            then_claim: (rest > 0).then_some(ClaimRequest {
                now,
                limit: rest,
                lease_for,
            }),
        };
        let answer = self.write(input, |done| match done {
            Done::RecordedThenClaimed { recorded, claimed } => Some((recorded, claimed)),
            Done::Applied => Some((Ok(()), Vec::new())),
            _ => None,
        });
        match answer.await {
            Ok((recorded, mut claimed)) => RecordedAndClaimed {
                recorded: recorded.map_err(OutboxError::from),
                claimed: Ok({
                    claimed.append(&mut taken);
                    claimed
                }),
            },
            // A record refused alone (it claimed nothing): what was taken stands.
            Err(OpError::Refused(refusal)) if rest == 0 => RecordedAndClaimed {
                recorded: Err(refusal.into()),
                claimed: Ok(taken),
            },
            Err(err) => {
                self.put_back(taken);
                let err = OutboxError::from(err);
                RecordedAndClaimed {
                    recorded: Err(err.clone()),
                    claimed: Err(err),
                }
            }
        }
    }

    async fn deliveries(&self, correlation_id: Uuid) -> Result<Vec<DeliveryView>, OutboxError> {
        let what = "cannot list a workflow's deliveries";
        Ok(self
            .read(what, |b| b.views("correlation_id", correlation_id))
            .await?)
    }

    async fn delivery(&self, id: Uuid) -> Result<Option<DeliveryView>, OutboxError> {
        let views = self.read("cannot read a delivery", |b| b.views("id", id));
        Ok(views.await?.pop())
    }

    async fn failed(&self, query: &FailedQuery) -> Result<Vec<DeliveryView>, OutboxError> {
        let query = query.clone();
        Ok(self
            .read("cannot list failed deliveries", |b| b.failed(query))
            .await?)
    }

    async fn next_due(&self) -> Result<Option<OffsetDateTime>, OutboxError> {
        Ok(self
            .read("cannot read the next due time", Reads::next_due)
            .await?)
    }

    async fn counts(&self) -> Result<OutboxCounts, OutboxError> {
        Ok(self.read("cannot count deliveries", Reads::counts).await?)
    }

    async fn pending_by_tenant(&self) -> Result<Vec<(TenantId, u64)>, OutboxError> {
        let count = Reads::pending_by_tenant;
        Ok(self
            .read("cannot count deliveries by tenant", count)
            .await?)
    }

    async fn redeliver(&self, id: Uuid, now: OffsetDateTime) -> Result<(), OutboxError> {
        let input = Input::Redeliver { id, now };
        Ok(self.write(input, Done::applied).await?)
    }

    async fn hold(
        &self,
        leases: &[Lease],
        reason: HoldReason,
        now: OffsetDateTime,
    ) -> Result<u64, OutboxError> {
        if reason == HoldReason::Ordered {
            // Only a claim parks an ordered delivery, behind an earlier one of its webhook,
            // whose result lets it go; held as ordered otherwise, nothing would.
            return Err(OutboxError::backend(
                "a delivery is held as `ordered` only by a claim",
            ));
        }
        if leases.is_empty() {
            return Ok(0);
        }
        let input = Input::Hold {
            leases: leases.to_vec(),
            reason,
            now,
        };
        Ok(self.write(input, Done::moved).await?)
    }

    async fn release(
        &self,
        destination: &str,
        limit: usize,
        now: OffsetDateTime,
    ) -> Result<u64, OutboxError> {
        if limit == 0 {
            return Ok(0);
        }
        let input = Input::Release {
            destination: destination.to_owned(),
            limit,
            now,
        };
        Ok(self.write(input, Done::moved).await?)
    }

    async fn expire_holds(
        &self,
        held_before: OffsetDateTime,
        now: OffsetDateTime,
        limit: usize,
    ) -> Result<u64, OutboxError> {
        if limit == 0 {
            return Ok(0);
        }
        let input = Input::ExpireHolds {
            held_before,
            now,
            limit,
        };
        Ok(self.write(input, Done::moved).await?)
    }

    async fn held(
        &self,
        tenant: Option<&TenantId>,
        limit: usize,
    ) -> Result<Vec<HeldDeliveries>, OutboxError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let tenant = tenant.cloned();
        Ok(self
            .read("cannot count held deliveries", |b| b.held(tenant, limit))
            .await?)
    }

    async fn prune(&self, completed_before: OffsetDateTime) -> Result<u64, OutboxError> {
        let before = completed_before;
        let prune = |limit| Input::Prune { before, limit };
        Ok(self.prune_in_chunks(PRUNE_CHUNK, prune).await?)
    }

    async fn prune_workflows(&self, finished_before: OffsetDateTime) -> Result<u64, OutboxError> {
        let before = finished_before;
        let prune = |limit| Input::PruneWorkflows { before, limit };
        Ok(self.prune_in_chunks(PRUNE_WORKFLOWS_CHUNK, prune).await?)
    }

    async fn enqueued(&self) {
        self.notify.notified().await;
    }
}
