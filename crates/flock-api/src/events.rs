//! The live event hub behind `GET /api/v1/events`: one per instance, bounded everywhere.
//!
//! Decisions, written once here:
//! - **Sources.** `artifact.published` and `workflow.idle` come from an orchestrator component
//!   ([`EventsComponent`]: `on_artifact_published`, `on_correlation_idle`); `delivery.attempted`,
//!   `delivery.delivered` and `delivery.failed` from the dispatcher's attempt observer
//!   ([`flock_delivery::AttemptObserver`]), called where the attempt metrics are counted, so an
//!   attempt whose result the outbox refused is streamed nowhere, as it is counted nowhere.
//! - **Order.** An artifact's `delivery.*` events come after its `artifact.published` event.
//!   Its deliveries are stored with it and can be attempted the moment the store commits,
//!   before the publishing task runs the hook that emits `artifact.published`; so the
//!   component's `before_store` *stages* an artifact that has deliveries, and the attempts of a
//!   staged artifact wait in the hub, to be emitted right after its published event. An artifact
//!   whose hook never runs for it (its store write failed, a component before this one stopped
//!   it or passed on an artifact with another id, the publish was dropped half-way) is unstaged
//!   after [`STAGED_FOR`] (checked whenever the hub stages an artifact or records an event),
//!   its waiting attempts emitted then; at most [`MAX_STAGED`] artifacts are staged at once
//!   (the oldest is unstaged for a new one), and at most [`MAX_WAITING`] events wait for one.
//! - **Ids.** Every event has an id, one more than the one before. Ids start at the
//!   microseconds since the Unix epoch when the hub was made, so a restarted instance goes on
//!   above the ids of the one before it (a client resuming across a restart is told it missed
//!   events, never handed events it already has under reused ids).
//! - **Resume.** The last `events.buffer` events are kept in a ring. A subscriber that sends
//!   `Last-Event-ID: n` first gets the kept events after `n` that its filters select; when `n`
//!   is older than the ring (or is no id this instance issued) it first gets a
//!   `stream.missed` event saying from which id on it has the events, and should reload what
//!   it shows.
//! - **Slow consumers.** Each subscriber has a queue of `events.queue` events. When an event
//!   finds it full, the subscriber is dropped from the hub at once (its slot is free again);
//!   its stream sends what is queued, then a last `stream.overflow` event saying why, and
//!   ends. The events it lost are in the ring for a while: reconnecting with `Last-Event-ID`
//!   resumes from them. What the hub holds is bounded: the ring, plus at most `events.queue`
//!   events per open stream, plus at most `events.max_subscribers` streams (the next one is
//!   answered 503 `overloaded`).
//! - **Heartbeat.** Every `events.heartbeat_ms` a stream sends the comment `: heartbeat`, which
//!   keeps proxies from closing it and tells the client it is alive. A client that left is
//!   noticed when its stream next writes (an event, or the heartbeat at the latest), and its
//!   slot is freed then.
//! - **Tenants.** Every event carries the tenant of its workflow; a subscriber sees only its
//!   own tenant's events. The control events (`stream.*`) carry no workflow data.
//! - **Instances.** The hub is in-process: on several instances sharing Postgres, each streams
//!   what it published and attempted itself. A client that needs every event connects to each.
//! - **Shutdown.** [`EventHub::close`] ends every stream with a `stream.closed` event, so that
//!   open streams do not hold the server's graceful stop.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use flock_delivery::{
    AttemptObserver, AttemptReport, AttemptView, DeliveryState, Resolution, failure_name,
};
use flock_models::{Artifact, NewDelivery, TenantId, TypeName, WebhookUrl};
use flock_orchestrator::{ArtifactQuery, ArtifactStore, Component, Flow};
use metrics::Counter;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::config::EventSettings;

/// What happened: the kinds a client can filter on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum EventKind {
    /// An artifact was stored (a client's or an agent's).
    ArtifactPublished,
    /// A delivery attempt finished and was recorded.
    DeliveryAttempted,
    /// A delivery was delivered (a receiver answered 2xx).
    DeliveryDelivered,
    /// A delivery was given up.
    DeliveryFailed,
    /// A workflow has nothing queued or running any more.
    WorkflowIdle,
}

impl EventKind {
    /// Every kind, in the order the document lists them.
    pub(crate) const ALL: [EventKind; 5] = [
        EventKind::ArtifactPublished,
        EventKind::DeliveryAttempted,
        EventKind::DeliveryDelivered,
        EventKind::DeliveryFailed,
        EventKind::WorkflowIdle,
    ];

    /// The kind as the stream's `event:` field names it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventKind::ArtifactPublished => "artifact.published",
            EventKind::DeliveryAttempted => "delivery.attempted",
            EventKind::DeliveryDelivered => "delivery.delivered",
            EventKind::DeliveryFailed => "delivery.failed",
            EventKind::WorkflowIdle => "workflow.idle",
        }
    }

    /// The kind named `name`.
    pub(crate) fn from_name(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// One event, shared by every subscriber that gets it, and rendered as its SSE frame once, when
/// a stream or a replay first needs it: most events are never read (rendering each as it
/// happened cost about 9% of the server's CPU per publish and delivery, in a profile of
/// `flock-bench`).
#[derive(Debug)]
pub(crate) struct Event {
    id: u64,
    what: Draft,
    frame: OnceLock<Bytes>,
}

/// What an event says beyond its id, kind, workflow and time.
#[derive(Debug)]
enum Data {
    /// `artifact.published`: a summary of the artifact (never its payload, which the kept
    /// `Arc` holds while the event is in the ring: at most `events.buffer` events).
    Published(Arc<Artifact>),
    /// `workflow.idle`.
    Idle,
    /// `delivery.*`: the delivery and the attempt, shared by the events of one attempt.
    Attempt(Arc<Attempted>),
}

/// A recorded attempt, as its `delivery.*` events show it.
#[derive(Debug)]
struct Attempted {
    id: Uuid,
    artifact_id: Uuid,
    sequence: u64,
    url: WebhookUrl,
    state: DeliveryState,
    failure: Option<&'static str>,
    next_attempt_at: Option<OffsetDateTime>,
    attempt: AttemptView,
}

impl Event {
    /// The frame: `id:`, `event:` and one `data:` line of JSON.
    pub(crate) fn frame(&self) -> Bytes {
        (self.frame)
            .get_or_init(|| {
                Bytes::from(format!(
                    "id: {}\nevent: {}\ndata: {}\n\n",
                    self.id,
                    self.what.kind.as_str(),
                    self.json()
                ))
            })
            .clone()
    }

    /// The `data:` line.
    fn json(&self) -> serde_json::Value {
        let mut json = serde_json::json!({
            "id": self.id.to_string(),
            "kind": self.what.kind.as_str(),
            "correlation_id": self.what.correlation_id,
            "at": micros(self.what.at),
        });
        let (key, value) = match &self.what.data {
            Data::Idle => return json,
            Data::Published(artifact) => (
                "artifact",
                serde_json::json!(ArtifactSummary {
                    id: artifact.id,
                    type_name: artifact.type_name.as_str(),
                    produced_by: &artifact.produced_by,
                    created_at: micros(artifact.created_at),
                    tags: &artifact.tags,
                }),
            ),
            Data::Attempt(a) => {
                json["delivery"] = serde_json::json!({
                    "id": a.id,
                    "artifact_id": a.artifact_id,
                    "artifact_type": self.what.type_name.as_deref(),
                    "sequence": a.sequence,
                    "url": a.url.for_logs(),
                    "state": a.state.as_str(),
                    "failure": a.failure,
                    "next_attempt_at": a.next_attempt_at.map(micros),
                });
                ("attempt", serde_json::json!(a.attempt))
            }
        };
        json[key] = value;
        json
    }
}

/// What a subscriber asked for: its tenant, and optionally a workflow, artifact types and
/// kinds (each a set that must contain the event's).
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    pub(crate) correlation_id: Option<Uuid>,
    pub(crate) types: Vec<TypeName>,
    pub(crate) kinds: Vec<EventKind>,
}

impl Filter {
    fn selects(&self, tenant: &TenantId, event: &Event) -> bool {
        event.what.tenant == *tenant
            && self
                .correlation_id
                .is_none_or(|c| c == event.what.correlation_id)
            && (self.kinds.is_empty() || self.kinds.contains(&event.what.kind))
            && (self.types.is_empty()
                || event
                    .what
                    .type_name
                    .as_deref()
                    .is_some_and(|t| self.types.iter().any(|want| want.as_str() == t)))
    }
}

/// A subscriber as the hub holds it.
struct Subscriber {
    tenant: TenantId,
    filter: Filter,
    queue: mpsc::Sender<Arc<Event>>,
    /// Set when the hub dropped it for a full queue, before its sender is dropped.
    overflowed: Arc<AtomicBool>,
}

struct Inner {
    next_id: u64,
    ring: VecDeque<Arc<Event>>,
    subscribers: HashMap<u64, Subscriber>,
    next_subscriber: u64,
    closed: bool,
    /// Staged artifacts (stored with deliveries, published event not yet emitted) and the
    /// events that wait for it.
    staged: HashMap<Uuid, Vec<Draft>>,
    /// When each artifact was staged, oldest first (entries of artifacts since published are
    /// skipped when reached).
    staged_order: VecDeque<(Instant, Uuid)>,
}

/// An event before it is recorded (and given its id): what [`EventHub::emit`] takes.
#[derive(Debug)]
struct Draft {
    kind: EventKind,
    tenant: TenantId,
    correlation_id: Uuid,
    /// The type of the artifact it concerns (`None` for `workflow.idle`), shared by the events
    /// of one attempt.
    type_name: Option<Arc<str>>,
    /// When it happened (an event that waited for its artifact's is recorded later).
    at: OffsetDateTime,
    data: Data,
}

/// How long a staged artifact's attempts wait for its published event at most.
const STAGED_FOR: Duration = Duration::from_secs(5);

/// How many artifacts are staged at most.
const MAX_STAGED: usize = 4_096;

/// How many events wait for one staged artifact at most; the next ones are emitted at once.
const MAX_WAITING: usize = 64;

/// What one call recorded, counted in the metrics and logged once the hub's lock is released.
#[derive(Default)]
struct Emitted {
    /// Events recorded, by kind (in the order of [`EventKind::ALL`]).
    kinds: [u64; EventKind::ALL.len()],
    overflowed: usize,
    open: usize,
}

impl Emitted {
    fn report(self, counters: &[Counter; EventKind::ALL.len()]) {
        for (counter, n) in counters.iter().zip(self.kinds) {
            if n > 0 {
                counter.increment(n);
            }
        }
        if self.overflowed > 0 {
            metrics::counter!("flock_events_overflows_total").increment(self.overflowed as u64);
            metrics::gauge!("flock_events_subscribers").set(self.open as f64);
            tracing::info!(
                subscribers = self.overflowed,
                "event stream subscribers fell behind by a full queue and were disconnected"
            );
        }
    }
}

/// The hub: the ring of recent events and the open subscriptions.
pub(crate) struct EventHub {
    inner: Mutex<Inner>,
    settings: EventSettings,
    /// `flock_events_total` by kind (in the order of [`EventKind::ALL`]), registered once:
    /// the recorder is installed before the hub is made.
    counters: [Counter; EventKind::ALL.len()],
    /// A workflow's tenant, from its first artifact until it goes idle (so that the idle event
    /// can carry it without a read); bounded, with the store asked for the rest.
    tenants: Mutex<HashMap<Uuid, TenantId>>,
    store: Arc<dyn ArtifactStore>,
}

/// How many workflows' tenants the hub remembers between their first artifact and their idle.
const MAX_REMEMBERED_TENANTS: usize = 65_536;

/// Why a subscription was refused.
#[derive(Debug)]
pub(crate) enum SubscribeError {
    /// `events.max_subscribers` streams are open.
    Full(usize),
    /// The server is stopping.
    Closed,
}

/// An open subscription: what to send first, then the queue.
pub(crate) struct Subscription {
    /// A `stream.missed` frame when the resume point is older than the ring.
    pub(crate) missed: Option<Bytes>,
    /// Kept events after the resume point, oldest first.
    pub(crate) backlog: Vec<Arc<Event>>,
    pub(crate) queue: mpsc::Receiver<Arc<Event>>,
    pub(crate) overflowed: Arc<AtomicBool>,
    hub: Arc<EventHub>,
    id: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.lock().subscribers.remove(&self.id);
        metrics::gauge!("flock_events_subscribers").set(self.hub.subscriber_count() as f64);
    }
}

impl EventHub {
    /// An empty hub bounded by `settings`; `store` names a workflow's tenant when the hub no
    /// longer remembers it.
    pub(crate) fn new(settings: EventSettings, store: Arc<dyn ArtifactStore>) -> Arc<Self> {
        let start = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000;
        Arc::new(EventHub {
            inner: Mutex::new(Inner {
                next_id: u64::try_from(start).unwrap_or(1).max(1),
                ring: VecDeque::with_capacity(settings.buffer.min(4096)),
                subscribers: HashMap::new(),
                next_subscriber: 0,
                closed: false,
                staged: HashMap::new(),
                staged_order: VecDeque::new(),
            }),
            settings,
            counters: EventKind::ALL
                .map(|kind| metrics::counter!("flock_events_total", "kind" => kind.as_str())),
            tenants: Mutex::new(HashMap::new()),
            store,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The settings it was made with.
    pub(crate) fn settings(&self) -> &EventSettings {
        &self.settings
    }

    /// How many streams are open.
    pub(crate) fn subscriber_count(&self) -> usize {
        self.lock().subscribers.len()
    }

    /// Opens a subscription of `tenant` with `filter`, resuming after `last_id` when given.
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        tenant: TenantId,
        filter: Filter,
        last_id: Option<u64>,
    ) -> Result<Subscription, SubscribeError> {
        let (tx, rx) = mpsc::channel(self.settings.queue);
        let overflowed = Arc::new(AtomicBool::new(false));
        let mut inner = self.lock();
        if inner.closed {
            return Err(SubscribeError::Closed);
        }
        if inner.subscribers.len() >= self.settings.max_subscribers {
            return Err(SubscribeError::Full(self.settings.max_subscribers));
        }
        let mut missed = None;
        let mut backlog = Vec::new();
        if let Some(last) = last_id {
            let oldest = inner.ring.front().map_or(inner.next_id, |e| e.id);
            // `last` is fine when the event after it is kept (or not yet made).
            let known = last
                .checked_add(1)
                .is_some_and(|after| after >= oldest && after <= inner.next_id);
            if !known {
                missed = Some(control_frame(
                    "stream.missed",
                    &serde_json::json!({
                        "last_event_id": last.to_string(),
                        "oldest_kept_id": oldest.to_string(),
                        "message": "events after Last-Event-ID are no longer kept (or it is no id of this instance); reload what you show, then go on from here",
                    }),
                ));
            }
            backlog = (inner.ring.iter())
                .filter(|e| e.id > last || !known)
                .filter(|e| filter.selects(&tenant, e))
                .cloned()
                .collect();
        }
        let id = inner.next_subscriber;
        inner.next_subscriber += 1;
        inner.subscribers.insert(
            id,
            Subscriber {
                tenant,
                filter,
                queue: tx,
                overflowed: Arc::clone(&overflowed),
            },
        );
        let open = inner.subscribers.len();
        drop(inner);
        metrics::gauge!("flock_events_subscribers").set(open as f64);
        Ok(Subscription {
            missed,
            backlog,
            queue: rx,
            overflowed,
            hub: Arc::clone(self),
            id,
        })
    }

    /// Runs `f` under the hub's lock, after unstaging what is due to be (keeping at most `keep`
    /// staged); what it recorded is counted and logged once the lock is released.
    fn locked(&self, keep: usize, f: impl FnOnce(&mut Inner, &mut Emitted)) {
        let mut inner = self.lock();
        let mut out = Emitted::default();
        self.unstage_old(&mut inner, Instant::now(), keep, &mut out);
        f(&mut inner, &mut out);
        drop(inner);
        out.report(&self.counters);
    }

    /// Stages `artifact_id`, stored with deliveries: until its published event, the events of
    /// its attempts wait (see the module docs).
    fn stage(&self, artifact_id: Uuid) {
        self.locked(MAX_STAGED - 1, |inner, _| {
            inner.staged.insert(artifact_id, Vec::new());
            inner.staged_order.push_back((Instant::now(), artifact_id));
        });
    }

    /// Emits an artifact's published event, then the events that waited for it.
    fn published(&self, artifact_id: Uuid, event: Draft) {
        self.locked(MAX_STAGED, |inner, out| {
            self.record(inner, event, out);
            for waiting in inner.staged.remove(&artifact_id).unwrap_or_default() {
                self.record(inner, waiting, out);
            }
        });
    }

    /// Emits the events of one attempt of `artifact_id`'s deliveries, in order and under one
    /// lock, or keeps each for the artifact's published event when the artifact is staged.
    fn attempted(&self, artifact_id: Uuid, events: impl IntoIterator<Item = Draft>) {
        self.locked(MAX_STAGED, |inner, out| {
            for event in events {
                match inner.staged.get_mut(&artifact_id) {
                    Some(waiting) if waiting.len() < MAX_WAITING => waiting.push(event),
                    _ => self.record(inner, event, out),
                }
            }
        });
    }

    /// Records an event and hands it to every subscriber that selects it.
    fn emit(&self, event: Draft) {
        self.locked(MAX_STAGED, |inner, out| self.record(inner, event, out));
    }

    /// Unstages the artifacts staged longer than [`STAGED_FOR`], and the oldest ones while the
    /// order holds more than `keep` (it also holds artifacts published since, dropped when
    /// reached), emitting what waited for them.
    fn unstage_old(&self, inner: &mut Inner, now: Instant, keep: usize, out: &mut Emitted) {
        while let Some(&(since, artifact_id)) = inner.staged_order.front() {
            let live = inner.staged.contains_key(&artifact_id);
            let young = now.duration_since(since) < STAGED_FOR;
            if live && young && inner.staged_order.len() <= keep {
                break;
            }
            inner.staged_order.pop_front();
            for waiting in inner.staged.remove(&artifact_id).unwrap_or_default() {
                self.record(inner, waiting, out);
            }
        }
    }

    /// Records `draft` in the ring and hands it to every subscriber that selects it; a
    /// subscriber whose queue is full is dropped (its stream ends with `stream.overflow`).
    fn record(&self, inner: &mut Inner, draft: Draft, out: &mut Emitted) {
        if inner.closed {
            return;
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let kind = draft.kind;
        let event = Arc::new(Event {
            id,
            what: draft,
            frame: OnceLock::new(),
        });
        if inner.ring.len() >= self.settings.buffer {
            inner.ring.pop_front();
        }
        inner.ring.push_back(Arc::clone(&event));
        let mut dropped = Vec::new();
        for (sub_id, sub) in &inner.subscribers {
            if !sub.filter.selects(&sub.tenant, &event) {
                continue;
            }
            match sub.queue.try_send(Arc::clone(&event)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    sub.overflowed.store(true, Ordering::Release);
                    dropped.push(*sub_id);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => dropped.push(*sub_id),
            }
        }
        out.overflowed += dropped.len();
        for sub_id in dropped {
            inner.subscribers.remove(&sub_id);
        }
        if let Some(i) = EventKind::ALL.iter().position(|k| *k == kind) {
            out.kinds[i] += 1;
        }
        out.open = inner.subscribers.len();
    }

    /// Ends every stream (each gets `stream.closed`) and refuses new ones: the server is
    /// stopping.
    pub(crate) fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.subscribers.clear();
    }

    /// Whether [`EventHub::close`] was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    fn remember_tenant(&self, correlation_id: Uuid, tenant: &TenantId) {
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        if tenants.len() < MAX_REMEMBERED_TENANTS || tenants.contains_key(&correlation_id) {
            tenants
                .entry(correlation_id)
                .or_insert_with(|| tenant.clone());
        }
    }

    async fn tenant_of(&self, correlation_id: Uuid) -> Option<TenantId> {
        let remembered =
            (self.tenants.lock().unwrap_or_else(PoisonError::into_inner)).remove(&correlation_id);
        if remembered.is_some() {
            return remembered;
        }
        let query = ArtifactQuery {
            limit: 1,
            ..ArtifactQuery::correlation(correlation_id)
        };
        match self.store.query(&query).await {
            Ok(page) => page.items.into_iter().next().map(|a| a.tenant),
            Err(e) => {
                tracing::warn!(%correlation_id, error = %e, "cannot read a workflow's tenant for its idle event");
                None
            }
        }
    }
}

impl std::fmt::Debug for EventHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHub")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A control frame: no id (so `Last-Event-ID` stays at the last real event), the event name
/// and its JSON.
pub(crate) fn control_frame(name: &str, data: &serde_json::Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// The heartbeat comment.
pub(crate) const HEARTBEAT: &[u8] = b": heartbeat\n\n";

fn micros(at: OffsetDateTime) -> String {
    flock_models::timestamp::format_micros(at)
}

/// What an `artifact.published` event says of its artifact: never its payload (the stream
/// stays small and bounded; read the artifact by id).
#[derive(Serialize)]
struct ArtifactSummary<'a> {
    id: Uuid,
    #[serde(rename = "type")]
    type_name: &'a str,
    produced_by: &'a str,
    created_at: String,
    tags: &'a flock_models::Tags,
}

/// The orchestrator component that feeds the hub with `artifact.published` and
/// `workflow.idle`. It runs after the webhook component (priority 300).
pub(crate) struct EventsComponent {
    hub: Arc<EventHub>,
}

impl EventsComponent {
    pub(crate) fn new(hub: Arc<EventHub>) -> Self {
        EventsComponent { hub }
    }
}

#[async_trait]
impl Component for EventsComponent {
    fn name(&self) -> &str {
        "events"
    }

    fn priority(&self) -> i32 {
        300
    }

    fn before_store(&self, artifact: &Artifact, outbox: &mut Vec<NewDelivery>) {
        if !outbox.is_empty() {
            self.hub.stage(artifact.id);
        }
    }

    async fn on_artifact_published(&self, artifact: &Arc<Artifact>) -> Flow {
        self.hub
            .remember_tenant(artifact.correlation_id, &artifact.tenant);
        let event = Draft {
            kind: EventKind::ArtifactPublished,
            tenant: artifact.tenant.clone(),
            correlation_id: artifact.correlation_id,
            type_name: Some(Arc::from(artifact.type_name.as_str())),
            at: OffsetDateTime::now_utc(),
            data: Data::Published(Arc::clone(artifact)),
        };
        self.hub.published(artifact.id, event);
        Flow::Continue
    }

    async fn on_correlation_idle(&self, correlation_id: Uuid) {
        let Some(tenant) = self.hub.tenant_of(correlation_id).await else {
            return;
        };
        self.hub.emit(Draft {
            kind: EventKind::WorkflowIdle,
            tenant,
            correlation_id,
            type_name: None,
            at: OffsetDateTime::now_utc(),
            data: Data::Idle,
        });
    }
}

/// The dispatcher's observer: every recorded attempt is `delivery.attempted`, followed by
/// `delivery.delivered` or `delivery.failed` when it settled the delivery.
pub(crate) struct EventsObserver {
    hub: Arc<EventHub>,
}

impl EventsObserver {
    pub(crate) fn new(hub: Arc<EventHub>) -> Self {
        EventsObserver { hub }
    }
}

impl AttemptObserver for EventsObserver {
    fn attempted(&self, report: &AttemptReport<'_>) {
        let delivery = report.delivery;
        let type_name = artifact_type_of(&delivery.body);
        let (state, failure, next_attempt_at) = match report.resolution {
            Resolution::Delivered => (DeliveryState::Delivered, None, None),
            Resolution::RetryAt(at) => (DeliveryState::Pending, None, Some(at)),
            Resolution::Failed(reason) => (DeliveryState::Failed, Some(failure_name(reason)), None),
        };
        let attempted = Arc::new(Attempted {
            id: delivery.id,
            artifact_id: delivery.artifact_id,
            sequence: delivery.sequence,
            url: delivery.url.clone(),
            state,
            failure,
            next_attempt_at,
            attempt: report.attempt.clone(),
        });
        let settled = match report.resolution {
            Resolution::Delivered => Some(EventKind::DeliveryDelivered),
            Resolution::Failed(_) => Some(EventKind::DeliveryFailed),
            Resolution::RetryAt(_) => None,
        };
        let at = OffsetDateTime::now_utc();
        let events = std::iter::once(EventKind::DeliveryAttempted)
            .chain(settled)
            .map(|kind| Draft {
                kind,
                tenant: delivery.tenant.clone(),
                correlation_id: delivery.correlation_id,
                type_name: type_name.clone(),
                at,
                data: Data::Attempt(Arc::clone(&attempted)),
            });
        self.hub.attempted(delivery.artifact_id, events);
    }
}

/// The artifact type a webhook body announces. The body is rendered by this project in a fixed
/// order (`{"event_type":..,"correlation_id":..,"sequence":..,"artifact":{"id":..,"type":"..."`),
/// so the type is found near its start without parsing the payload; any other body is parsed.
fn artifact_type_of(body: &[u8]) -> Option<Arc<str>> {
    const MARK: &[u8] = b"\"type\":\"";
    let head = &body[..body.len().min(256)];
    let artifact = head.windows(12).position(|w| w == b"\"artifact\":{")?;
    let rest = &head[artifact..];
    if let Some(at) = rest.windows(MARK.len()).position(|w| w == MARK) {
        let name = &rest[at + MARK.len()..];
        if let Some(end) = name.iter().position(|b| *b == b'"')
            && let Ok(text) = std::str::from_utf8(&name[..end])
            && TypeName::new(text).is_ok()
        {
            return Some(Arc::from(text));
        }
    }
    #[derive(serde::Deserialize)]
    struct Body {
        artifact: Inner,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        #[serde(rename = "type")]
        type_name: String,
    }
    serde_json::from_slice::<Body>(body)
        .ok()
        .map(|b| Arc::from(b.artifact.type_name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_type_is_read_off_a_rendered_body_and_off_any_other() {
        let body = br#"{"event_type":"artifact.created","correlation_id":"0190","sequence":1,"artifact":{"id":"x","type":"Idea","payload":{"type":"no"}}}"#;
        assert_eq!(artifact_type_of(body).as_deref(), Some("Idea"));
        let reordered = br#"{"artifact":{"payload":{"a":1},"type":"Plan"}}"#;
        assert_eq!(artifact_type_of(reordered).as_deref(), Some("Plan"));
        assert_eq!(artifact_type_of(b"not json"), None);
    }

    fn hub() -> Arc<EventHub> {
        EventHub::new(
            EventSettings::default(),
            Arc::new(flock_orchestrator::MemoryStore::new()),
        )
    }

    fn draft(kind: EventKind) -> Draft {
        Draft {
            kind,
            tenant: TenantId::new("acme").unwrap(),
            correlation_id: Uuid::nil(),
            type_name: None,
            at: OffsetDateTime::now_utc(),
            data: Data::Idle,
        }
    }

    fn kept(hub: &EventHub) -> Vec<EventKind> {
        hub.lock().ring.iter().map(|e| e.what.kind).collect()
    }

    #[test]
    fn a_staged_artifacts_attempts_wait_for_its_published_event() {
        let hub = hub();
        let (staged, other) = (Uuid::now_v7(), Uuid::now_v7());
        hub.stage(staged);
        // The dispatcher finished before the publishing task ran its hook.
        hub.attempted(staged, [draft(EventKind::DeliveryAttempted)]);
        hub.attempted(staged, [draft(EventKind::DeliveryDelivered)]);
        // An artifact that is not staged (published earlier, or elsewhere) is not held up.
        hub.attempted(other, [draft(EventKind::DeliveryFailed)]);
        assert_eq!(kept(&hub), [EventKind::DeliveryFailed]);
        hub.published(staged, draft(EventKind::ArtifactPublished));
        assert_eq!(
            kept(&hub),
            [
                EventKind::DeliveryFailed,
                EventKind::ArtifactPublished,
                EventKind::DeliveryAttempted,
                EventKind::DeliveryDelivered
            ]
        );
        // Published, it is no longer staged: its next attempts go out at once.
        hub.attempted(staged, [draft(EventKind::DeliveryAttempted)]);
        assert_eq!(kept(&hub).len(), 5);
        assert!(hub.lock().staged.is_empty());
    }

    #[test]
    fn an_artifact_whose_hook_never_runs_is_unstaged_after_a_while_and_staging_is_bounded() {
        let hub = hub();
        let lost = Uuid::now_v7();
        hub.stage(lost);
        hub.attempted(lost, [draft(EventKind::DeliveryAttempted)]);
        assert!(kept(&hub).is_empty());
        {
            let mut inner = hub.lock();
            let mut out = Emitted::default();
            hub.unstage_old(
                &mut inner,
                Instant::now() + STAGED_FOR,
                MAX_STAGED,
                &mut out,
            );
        }
        assert_eq!(kept(&hub), [EventKind::DeliveryAttempted]);

        // Staging more than the bound unstages the oldest, emitting what waited for it.
        let first = Uuid::now_v7();
        hub.stage(first);
        hub.attempted(first, [draft(EventKind::DeliveryDelivered)]);
        for _ in 0..MAX_STAGED {
            hub.stage(Uuid::now_v7());
        }
        let inner = hub.lock();
        assert_eq!(inner.staged.len(), MAX_STAGED);
        assert!(inner.staged_order.len() <= MAX_STAGED);
        assert!(!inner.staged.contains_key(&first));
        assert_eq!(
            inner.ring.back().map(|e| e.what.kind),
            Some(EventKind::DeliveryDelivered)
        );
        drop(inner);

        // Events waiting for one artifact are bounded too.
        let busy = Uuid::now_v7();
        hub.stage(busy);
        let before = kept(&hub).len();
        for _ in 0..=MAX_WAITING {
            hub.attempted(busy, [draft(EventKind::DeliveryAttempted)]);
        }
        assert_eq!(kept(&hub).len(), before + 1);
    }
}
