//! What both database backends share: the group-commit writer that applies queued writes many
//! to a transaction, reads on the store's own runtime, and the `ArtifactStore` and `Outbox`
//! implementations on top of a [`Backend`].

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use flock_delivery::{
    AttemptView, ClaimedDelivery, DeliveryView, Lease, Outbox, OutboxCounts, OutboxError,
    RecordedAndClaimed, Resolution,
};
use flock_models::{Artifact, NewDelivery};
use flock_orchestrator::{ArtifactQuery, ArtifactStore, Page, StoreError};
use time::OffsetDateTime;
use tokio::runtime::Handle;
use tokio::sync::{Mutex, Notify, mpsc, oneshot};
use tracing::{debug, error};
use uuid::Uuid;

use crate::ops::{ClaimRequest, Done, Input, Op, OpError};
use crate::rows::ArtifactFields;
use crate::rows::DecodeError;

/// The most writes one transaction takes.
pub(crate) const MAX_BATCH: usize = 1024;

/// How many writes may wait for the writer before callers wait to queue theirs.
const QUEUE: usize = 8192;

/// The most done deliveries one prune write deletes; a prune of more takes several writes, so
/// other writes go in between.
pub(crate) const PRUNE_CHUNK: u64 = 5_000;

/// A read that failed: the database failed, or what it holds does not decode.
#[derive(Debug, Clone)]
pub(crate) struct ReadError(pub(crate) String);

impl From<sqlx::Error> for ReadError {
    fn from(err: sqlx::Error) -> Self {
        ReadError(err.to_string())
    }
}

impl From<DecodeError> for ReadError {
    fn from(err: DecodeError) -> Self {
        ReadError(err.to_string())
    }
}

/// A database behind a [`Durable`] store.
#[async_trait]
pub(crate) trait Backend: Send + Sync + 'static {
    /// Applies `ops` in one transaction and commits it, setting each op's outcome. An error
    /// means nothing was committed.
    async fn write(&self, ops: &mut [Op]) -> Result<(), sqlx::Error>;

    /// Why `op`, written alone, failed with `err`: a refusal of its own (a duplicate id) or a
    /// database failure.
    async fn explain(&self, op: &Op, err: sqlx::Error) -> OpError;

    async fn get(&self, id: Uuid) -> Result<Option<Artifact>, ReadError>;
    async fn query(&self, query: ArtifactQuery) -> Result<Page<Artifact>, ReadError>;
    async fn deliveries(&self, correlation_id: Uuid) -> Result<Vec<DeliveryView>, ReadError>;
    async fn delivery(&self, id: Uuid) -> Result<Option<DeliveryView>, ReadError>;
    async fn next_due(&self) -> Result<Option<OffsetDateTime>, ReadError>;
    async fn counts(&self) -> Result<OutboxCounts, ReadError>;

    /// Closes the connections.
    async fn close(&self);

    /// How long a writer may wait for more writes to join a batch that is much smaller than
    /// the one before: worth it where a commit is expensive (a disk flush), so that under load
    /// the writes that arrive a moment apart share one. Zero by default.
    fn linger(&self) -> Duration {
        Duration::ZERO
    }
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
pub(crate) struct Durable<B: Backend> {
    backend: Arc<B>,
    queue: mpsc::Sender<Message>,
    notify: Arc<Notify>,
    runtime: Handle,
    closed: AtomicBool,
}

impl<B: Backend> Durable<B> {
    /// Starts `writers` writer tasks on the current runtime.
    pub(crate) fn start(backend: B, writers: usize) -> Arc<Self> {
        let backend = Arc::new(backend);
        let (queue, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        let notify = Arc::new(Notify::new());
        let runtime = Handle::current();
        for _ in 0..writers.max(1) {
            runtime.spawn(writer(
                Arc::clone(&backend),
                Arc::clone(&receiver),
                Arc::clone(&notify),
            ));
        }
        Arc::new(Durable {
            backend,
            queue,
            notify,
            runtime,
            closed: AtomicBool::new(false),
        })
    }

    async fn submit(&self, input: Input) -> Result<Done, OpError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(OpError::Backend("the store is closed".to_owned()));
        }
        let (op, answer) = Op::new(input);
        self.queue
            .send(Message::Write(op))
            .await
            .map_err(|_| OpError::Backend("the store's writer has stopped".to_owned()))?;
        answer
            .await
            .map_err(|_| OpError::Backend("the store's writer has stopped".to_owned()))?
    }

    /// The database.
    pub(crate) fn backend(&self) -> &B {
        &self.backend
    }

    /// Runs a read on the store's runtime (whose I/O driver owns the connections).
    async fn read<T, F, Fut>(&self, read: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(Arc<B>) -> Fut,
        Fut: Future<Output = Result<T, ReadError>> + Send + 'static,
    {
        let task = self.runtime.spawn(read(Arc::clone(&self.backend)));
        match task.await {
            Ok(result) => result.map_err(|e| e.0),
            Err(e) => Err(format!("a storage read did not finish: {e}")),
        }
    }

    /// Lets queued writes finish, then closes the connections. Later writes fail.
    pub(crate) async fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let (done, closed) = oneshot::channel();
        if self.queue.send(Message::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
    }
}

/// One writer: takes the first queued write and every other one already waiting (up to
/// [`MAX_BATCH`]), applies them in one transaction, answers each, and starts over. There is no
/// waiting to fill a batch: under load, writes queue up while a batch commits and form the next.
async fn writer<B: Backend>(
    backend: Arc<B>,
    receiver: Arc<Mutex<mpsc::Receiver<Message>>>,
    notify: Arc<Notify>,
) {
    let linger = backend.linger();
    let mut last_batch = 0usize;
    loop {
        let mut ops = Vec::new();
        let mut close = None;
        {
            let mut receiver = receiver.lock().await;
            match receiver.recv().await {
                Some(Message::Write(op)) => ops.push(op),
                Some(Message::Close(done)) => close = Some(done),
                None => return,
            }
            while ops.len() < MAX_BATCH && close.is_none() {
                match receiver.try_recv() {
                    Ok(Message::Write(op)) => ops.push(op),
                    Ok(Message::Close(done)) => close = Some(done),
                    Err(_) => break,
                }
            }
            // Under load (the last batch was large), wait a moment for the writes that are
            // about to arrive rather than paying a commit for a few.
            if !linger.is_zero() && ops.len() < last_batch / 2 && close.is_none() {
                let until = tokio::time::Instant::now() + linger;
                while ops.len() < last_batch / 2 {
                    match tokio::time::timeout_at(until, receiver.recv()).await {
                        Ok(Some(Message::Write(op))) => ops.push(op),
                        Ok(Some(Message::Close(done))) => {
                            close = Some(done);
                            break;
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
            }
            last_batch = ops.len();
            if close.is_some() {
                // Closing: the writes queued so far still go in, then the connections close.
                while let Ok(message) = receiver.try_recv() {
                    match message {
                        Message::Write(op) => ops.push(op),
                        Message::Close(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            }
        }
        while !ops.is_empty() {
            let rest = if ops.len() > MAX_BATCH {
                ops.split_off(MAX_BATCH)
            } else {
                Vec::new()
            };
            commit(&*backend, ops, &notify).await;
            ops = rest;
        }
        if let Some(done) = close {
            backend.close().await;
            let _ = done.send(());
            return;
        }
    }
}

/// Applies a batch; when it fails as a whole, applies its writes one at a time so that one bad
/// write fails alone.
async fn commit<B: Backend>(backend: &B, mut ops: Vec<Op>, notify: &Notify) {
    let count = ops.len();
    let result = backend.write(&mut ops).await;
    let wake = match result {
        Ok(()) => answer(ops),
        Err(err) if count == 1 => {
            if let Some(op) = ops.pop() {
                let failure = backend.explain(&op, err).await;
                op.fail(failure);
            }
            false
        }
        Err(err) => {
            debug!(error = %err, writes = count, "a batch of writes failed; applying them one at a time");
            let mut wake = false;
            for mut op in ops {
                op.outcome = None;
                let mut one = vec![op];
                match backend.write(&mut one).await {
                    Ok(()) => wake |= answer(one),
                    Err(err) => {
                        if let Some(op) = one.pop() {
                            let failure = backend.explain(&op, err).await;
                            if let OpError::Backend(text) = &failure {
                                error!(error = %text, "a storage write failed");
                            }
                            op.fail(failure);
                        }
                    }
                }
            }
            wake
        }
    };
    if wake {
        notify.notify_one();
    }
}

fn answer(ops: Vec<Op>) -> bool {
    let mut wake = false;
    for op in ops {
        wake |= op.answer_committed();
    }
    wake
}

fn unexpected(done: &Done) -> String {
    format!("the writer answered with an unexpected outcome: {done:?}")
}

#[async_trait]
impl<B: Backend> ArtifactStore for Durable<B> {
    async fn publish(
        &self,
        artifact: &Artifact,
        deliveries: Vec<NewDelivery>,
    ) -> Result<(), StoreError> {
        let row = ArtifactFields::of(artifact).map_err(|e| {
            StoreError::Backend(format!(
                "the payload of artifact {} does not render: {e}",
                artifact.id
            ))
        })?;
        match self
            .submit(Input::Publish {
                artifact: Some(row),
                deliveries,
            })
            .await?
        {
            Done::Stored => Ok(()),
            other => Err(StoreError::Backend(unexpected(&other))),
        }
    }

    async fn get(&self, id: Uuid) -> Result<Option<Artifact>, StoreError> {
        self.read(move |b| async move { b.get(id).await })
            .await
            .map_err(StoreError::Backend)
    }

    async fn query(&self, query: &ArtifactQuery) -> Result<Page<Artifact>, StoreError> {
        let query = query.clone();
        self.read(move |b| async move { b.query(query).await })
            .await
            .map_err(StoreError::Backend)
    }
}

#[async_trait]
impl<B: Backend> Outbox for Durable<B> {
    async fn enqueue(&self, deliveries: Vec<NewDelivery>) -> Result<(), OutboxError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        match self
            .submit(Input::Publish {
                artifact: None,
                deliveries,
            })
            .await?
        {
            Done::Stored => Ok(()),
            other => Err(OutboxError::Backend(unexpected(&other))),
        }
    }

    async fn claim(
        &self,
        now: OffsetDateTime,
        limit: usize,
        lease_for: Duration,
    ) -> Result<Vec<ClaimedDelivery>, OutboxError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        match self
            .submit(Input::Claim {
                now,
                limit,
                lease_for,
            })
            .await?
        {
            Done::Claimed(claimed) => Ok(claimed),
            other => Err(OutboxError::Backend(unexpected(&other))),
        }
    }

    async fn record(
        &self,
        lease: &Lease,
        attempt: AttemptView,
        resolution: Resolution,
    ) -> Result<(), OutboxError> {
        match self
            .submit(Input::Record {
                lease: *lease,
                attempt,
                resolution,
                then_claim: None,
            })
            .await?
        {
            Done::Recorded => Ok(()),
            other => Err(OutboxError::Backend(unexpected(&other))),
        }
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
        let answer = self
            .submit(Input::Record {
                lease: *lease,
                attempt,
                resolution,
                then_claim: Some(ClaimRequest {
                    now,
                    limit,
                    lease_for,
                }),
            })
            .await;
        match answer {
            Ok(Done::RecordedThenClaimed { recorded, claimed }) => RecordedAndClaimed {
                recorded: recorded.map_err(|r| OpError::Refused(r).into()),
                claimed: Ok(claimed),
            },
            Ok(other) => {
                let err = OutboxError::Backend(unexpected(&other));
                RecordedAndClaimed {
                    recorded: Err(err.clone()),
                    claimed: Err(err),
                }
            }
            Err(err) => {
                let err = OutboxError::from(err);
                RecordedAndClaimed {
                    recorded: Err(err.clone()),
                    claimed: Err(err),
                }
            }
        }
    }

    async fn deliveries(&self, correlation_id: Uuid) -> Result<Vec<DeliveryView>, OutboxError> {
        self.read(move |b| async move { b.deliveries(correlation_id).await })
            .await
            .map_err(OutboxError::Backend)
    }

    async fn delivery(&self, id: Uuid) -> Result<Option<DeliveryView>, OutboxError> {
        self.read(move |b| async move { b.delivery(id).await })
            .await
            .map_err(OutboxError::Backend)
    }

    async fn next_due(&self) -> Result<Option<OffsetDateTime>, OutboxError> {
        self.read(|b| async move { b.next_due().await })
            .await
            .map_err(OutboxError::Backend)
    }

    async fn counts(&self) -> Result<OutboxCounts, OutboxError> {
        self.read(|b| async move { b.counts().await })
            .await
            .map_err(OutboxError::Backend)
    }

    async fn redeliver(&self, id: Uuid, now: OffsetDateTime) -> Result<(), OutboxError> {
        match self.submit(Input::Redeliver { id, now }).await? {
            Done::Redelivered => Ok(()),
            other => Err(OutboxError::Backend(unexpected(&other))),
        }
    }

    async fn prune(&self, completed_before: OffsetDateTime) -> Result<u64, OutboxError> {
        let mut total = 0u64;
        loop {
            match self
                .submit(Input::Prune {
                    before: completed_before,
                    limit: PRUNE_CHUNK,
                })
                .await?
            {
                Done::Pruned(count) => {
                    total = total.saturating_add(count);
                    if count < PRUNE_CHUNK {
                        return Ok(total);
                    }
                }
                other => return Err(OutboxError::Backend(unexpected(&other))),
            }
        }
    }

    async fn enqueued(&self) {
        self.notify.notified().await;
    }
}
