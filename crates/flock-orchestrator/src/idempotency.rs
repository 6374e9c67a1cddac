//! Idempotency records: what a publish under an `X-Idempotency-Key` answered, kept where every
//! instance sees it, so a retry that reaches another instance, or comes after a restart, gets
//! the first answer again instead of a second workflow.
//!
//! The trait lives here, beside [`ArtifactStore`](crate::ArtifactStore), because a record is
//! about publishes: it names a correlation id and the ids of stored artifacts, and a replay
//! reads those artifacts back from the artifact store. `flock-store` implements it in SQL (it
//! already depends on this crate, and must not depend on `flock-api`), and `flock-api` uses
//! it; [`MemoryIdempotency`] is the in-memory one, for `memory://` and tests.
//!
//! A record holds a bounded answer, never the artifacts' bodies: the status, the correlation
//! id and, for a sync publish, the ids of its artifacts in order (at most
//! [`MAX_ANSWER_ARTIFACTS`]), `completed` and `duration_ms`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use flock_models::TenantId;
use time::OffsetDateTime;
use uuid::Uuid;

/// How long a claimed key stays `in_progress` at most: longer than the longest sync publish
/// (300 s) with room to spare. A record still in progress past it was left by an instance that
/// stopped mid-request, and the key is free again (a retry then publishes afresh: the
/// alternative is refusing the key until its whole TTL is over).
pub const IN_PROGRESS_LEASE: Duration = Duration::from_secs(600);

/// The most artifact ids a record keeps for a sync answer: 10,000 ids are about 370 KB. A sync
/// answer has at most `orchestrator.max_artifacts_per_correlation` artifacts (1,000 by default,
/// with no upper bound of its own); an answer with more than this many is replayed with its
/// first [`MAX_ANSWER_ARTIFACTS`].
pub const MAX_ANSWER_ARTIFACTS: usize = 10_000;

/// A keyed request: whose key, which route, and the digest of what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRequest {
    /// The caller's tenant: keys of different tenants never meet.
    pub tenant: TenantId,
    /// The key as the client sent it.
    pub key: String,
    /// The route it was sent to.
    pub route: String,
    /// SHA-256 of the route and the request's canonical JSON.
    pub fingerprint: [u8; 32],
}

/// How long records live and how many a tenant keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdempotencyLimits {
    /// How long a completed record is replayed, from its claim.
    pub ttl: Duration,
    /// How many records a tenant keeps at most: past it, its oldest completed ones are
    /// forgotten first (at least 1).
    pub max_per_tenant: u64,
}

/// The remembered part of a sync answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncAnswer {
    /// The answer's artifacts, in its order (at most [`MAX_ANSWER_ARTIFACTS`]).
    pub artifact_ids: Vec<Uuid>,
    /// Whether the workflow went idle before the timeout.
    pub completed: bool,
    /// How long the first request took.
    pub duration_ms: u64,
}

/// A remembered answer: enough to render it again, bounded in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedAnswer {
    /// Its HTTP status.
    pub status: u16,
    /// The workflow the request started.
    pub correlation_id: Uuid,
    /// For a sync publish, the rest of its answer.
    pub sync: Option<SyncAnswer>,
}

impl RecordedAnswer {
    /// `answer` with at most [`MAX_ANSWER_ARTIFACTS`] artifact ids.
    #[must_use]
    pub fn bounded(mut self) -> Self {
        if let Some(sync) = &mut self.sync {
            sync.artifact_ids.truncate(MAX_ANSWER_ARTIFACTS);
        }
        self
    }
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The key is this request's now: answer it, then [`IdempotencyStore::complete`] or
    /// [`IdempotencyStore::release`] with this token.
    Claimed(Uuid),
    /// The same request was answered: this is its answer.
    Replay(RecordedAnswer),
    /// The same request is still being answered (here or on another instance).
    InProgress,
    /// The key was used with a different request (another body or route).
    Conflict,
}

/// An idempotency store failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdempotencyError {
    /// The backend failed; the message says how.
    #[error("idempotency store: {0}")]
    Backend(String),
}

/// Where idempotency records live. Claims are atomic: of two requests claiming one key at once,
/// on one instance or two sharing a database, one gets [`ClaimOutcome::Claimed`]. Expired
/// records count as absent.
#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claims `request`'s key at `now`, or says what holds it. A new record is `in_progress`
    /// for [`IN_PROGRESS_LEASE`]; claiming also forgets expired records (a bounded batch) and
    /// the tenant's oldest completed ones past `limits.max_per_tenant`.
    ///
    /// # Errors
    /// [`IdempotencyError::Backend`].
    async fn claim(
        &self,
        request: &IdempotencyRequest,
        now: OffsetDateTime,
        limits: IdempotencyLimits,
    ) -> Result<ClaimOutcome, IdempotencyError>;

    /// Records `answer` for the key claimed with `token`; it is replayed until `ttl` after the
    /// claim. Nothing happens when the claim is no longer the token's.
    ///
    /// # Errors
    /// [`IdempotencyError::Backend`].
    async fn complete(
        &self,
        tenant: &TenantId,
        key: &str,
        token: Uuid,
        answer: &RecordedAnswer,
        ttl: Duration,
    ) -> Result<(), IdempotencyError>;

    /// Forgets the key claimed with `token` while it is still in progress (its request failed),
    /// so that a retry starts afresh.
    ///
    /// # Errors
    /// [`IdempotencyError::Backend`].
    async fn release(
        &self,
        tenant: &TenantId,
        key: &str,
        token: Uuid,
    ) -> Result<(), IdempotencyError>;
}

/// Microseconds since the Unix epoch, saturating.
fn micros(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}

/// A duration in microseconds, saturating.
fn span(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

#[derive(Debug)]
struct Record {
    route: String,
    fingerprint: [u8; 32],
    token: Uuid,
    answer: Option<RecordedAnswer>,
    created_at: i64,
    expires_at: i64,
}

#[derive(Debug, Default)]
struct TenantRecords {
    records: HashMap<String, Record>,
    /// `(created_at, key)` of every record, oldest first.
    order: BTreeSet<(i64, String)>,
}

impl TenantRecords {
    fn remove(&mut self, key: &str) {
        if let Some(record) = self.records.remove(key) {
            self.order.remove(&(record.created_at, key.to_owned()));
        }
    }

    /// Forgets expired records, and the oldest completed ones past `max`.
    fn trim(&mut self, now: i64, max: u64) {
        let max = usize::try_from(max.max(1)).unwrap_or(usize::MAX);
        let mut gone = Vec::new();
        let mut left = self.records.len();
        for (_, key) in &self.order {
            let Some(record) = self.records.get(key) else {
                continue;
            };
            if record.expires_at <= now || (left > max && record.answer.is_some()) {
                gone.push(key.clone());
                left -= 1;
            } else if left <= max {
                break;
            }
        }
        for key in gone {
            self.remove(&key);
        }
    }
}

/// Idempotency records in memory, for `memory://` and tests: one process's, lost when it stops.
#[derive(Debug, Default)]
pub struct MemoryIdempotency {
    tenants: Mutex<HashMap<TenantId, TenantRecords>>,
}

impl MemoryIdempotency {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many records `tenant` has, expired ones included until they are trimmed.
    pub fn len(&self, tenant: &TenantId) -> usize {
        self.lock().get(tenant).map_or(0, |t| t.records.len())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, TenantRecords>> {
        self.tenants.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl IdempotencyStore for MemoryIdempotency {
    async fn claim(
        &self,
        request: &IdempotencyRequest,
        now: OffsetDateTime,
        limits: IdempotencyLimits,
    ) -> Result<ClaimOutcome, IdempotencyError> {
        let now = micros(now);
        let mut tenants = self.lock();
        let tenant = tenants.entry(request.tenant.clone()).or_default();
        if let Some(record) = tenant.records.get(&request.key) {
            if record.expires_at > now {
                return Ok(
                    if record.route != request.route || record.fingerprint != request.fingerprint {
                        ClaimOutcome::Conflict
                    } else {
                        match &record.answer {
                            Some(answer) => ClaimOutcome::Replay(answer.clone()),
                            None => ClaimOutcome::InProgress,
                        }
                    },
                );
            }
            tenant.remove(&request.key);
        }
        let token = Uuid::now_v7();
        tenant.records.insert(
            request.key.clone(),
            Record {
                route: request.route.clone(),
                fingerprint: request.fingerprint,
                token,
                answer: None,
                created_at: now,
                expires_at: now.saturating_add(span(IN_PROGRESS_LEASE)),
            },
        );
        tenant.order.insert((now, request.key.clone()));
        tenant.trim(now, limits.max_per_tenant);
        Ok(ClaimOutcome::Claimed(token))
    }

    async fn complete(
        &self,
        tenant: &TenantId,
        key: &str,
        token: Uuid,
        answer: &RecordedAnswer,
        ttl: Duration,
    ) -> Result<(), IdempotencyError> {
        let mut tenants = self.lock();
        if let Some(record) = tenants
            .get_mut(tenant)
            .and_then(|t| t.records.get_mut(key))
            .filter(|r| r.token == token && r.answer.is_none())
        {
            record.answer = Some(answer.clone().bounded());
            record.expires_at = record.created_at.saturating_add(span(ttl));
        }
        Ok(())
    }

    async fn release(
        &self,
        tenant: &TenantId,
        key: &str,
        token: Uuid,
    ) -> Result<(), IdempotencyError> {
        let mut tenants = self.lock();
        if let Some(records) = tenants.get_mut(tenant)
            && records
                .records
                .get(key)
                .is_some_and(|r| r.token == token && r.answer.is_none())
        {
            records.remove(key);
        }
        Ok(())
    }
}
