//! The [`Authenticator`]: checks a presented key against a bounded cache (a hit costs a hash
//! and a lock), looks misses up in the store a few at a time, remembers unknown keys briefly,
//! makes a revocation effective at once on this instance and, by polling the store's recent
//! revocations, within two poll periods on every other instance; and writes `last_used_at` in
//! batches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use flock_models::TenantId;
use time::OffsetDateTime;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::key::{ApiKey, KeyHash};
use crate::record::{KeyRecord, NewKey};
use crate::store::{KeyStore, KeyStoreError};

/// The most keys a tenant may have that are neither revoked nor expired.
pub const MAX_LIVE_KEYS_PER_TENANT: usize = 1_000;

/// How the [`Authenticator`] caches and polls. The defaults suit production.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Keys remembered (found ones, revoked and expired included); past it the oldest go.
    pub cache_capacity: usize,
    /// How long a found key is trusted before it is read again (a safety net: revocations
    /// reach the cache by the poll long before).
    pub max_age: Duration,
    /// Unknown keys remembered, so that a stream of wrong keys does not reach the store.
    pub miss_capacity: usize,
    /// How long an unknown key is remembered: a key created on another instance works here
    /// after at most this long.
    pub miss_ttl: Duration,
    /// How often the store's recent revocations are read. A key revoked on another instance is
    /// refused here within two of these (plus a read).
    pub revocation_poll: Duration,
    /// How far back each poll reads, before the previous poll: covers clocks of instances that
    /// differ by up to this much, and lookups that raced a revocation.
    pub revocation_overlap: Duration,
    /// How often uses are written to `last_used_at`, in one batch.
    pub last_used_flush: Duration,
    /// Store lookups in flight at once; further misses wait for one to finish.
    pub max_lookups: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            cache_capacity: 10_000,
            max_age: Duration::from_secs(300),
            miss_capacity: 10_000,
            miss_ttl: Duration::from_secs(1),
            revocation_poll: Duration::from_secs(1),
            revocation_overlap: Duration::from_secs(60),
            last_used_flush: Duration::from_secs(10),
            max_lookups: 16,
        }
    }
}

/// Why a key was refused, or a key could not be made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// The text cannot be a key.
    #[error("the bearer token is not a Flock API key")]
    Malformed,
    /// No key has this text.
    #[error("the API key is not known")]
    Unknown,
    /// The key was revoked.
    #[error("the API key was revoked")]
    Revoked,
    /// The key has expired.
    #[error("the API key has expired")]
    Expired,
    /// The tenant has as many live keys as it may.
    #[error(
        "tenant `{tenant}` has {MAX_LIVE_KEYS_PER_TENANT} keys that are neither revoked nor expired, the most it may have; revoke one first"
    )]
    TooManyKeys {
        /// The tenant.
        tenant: TenantId,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] KeyStoreError),
}

/// Checks keys and administers them. Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn KeyStore>,
    config: AuthConfig,
    state: Mutex<State>,
    lookups: Semaphore,
    flush_now: Notify,
}

#[derive(Default)]
struct State {
    hits: HashMap<KeyHash, Hit>,
    by_id: HashMap<Uuid, KeyHash>,
    misses: HashMap<KeyHash, Instant>,
    /// Ids known to be revoked, kept for the overlap: a lookup that raced the revocation
    /// cannot put the key back as usable.
    revoked: HashMap<Uuid, Instant>,
    /// Uses not yet written.
    uses: HashMap<Uuid, OffsetDateTime>,
}

struct Hit {
    record: Arc<KeyRecord>,
    fetched: Instant,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.inner.state();
        f.debug_struct("Authenticator")
            .field("cached", &state.hits.len())
            .field("misses", &state.misses.len())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// The cached answer for `hash`, if it is fresh; records the use of a usable key.
    fn answer(
        &mut self,
        hash: &KeyHash,
        now: OffsetDateTime,
        config: &AuthConfig,
    ) -> Option<Result<Arc<KeyRecord>, AuthError>> {
        if let Some(hit) = self.hits.get(hash)
            && hit.fetched.elapsed() < config.max_age
        {
            let record = Arc::clone(&hit.record);
            return Some(self.judge(record, now));
        }
        if let Some(missed) = self.misses.get(hash)
            && missed.elapsed() < config.miss_ttl
        {
            return Some(Err(AuthError::Unknown));
        }
        None
    }

    fn judge(
        &mut self,
        record: Arc<KeyRecord>,
        now: OffsetDateTime,
    ) -> Result<Arc<KeyRecord>, AuthError> {
        if record.revoked_at.is_some() {
            return Err(AuthError::Revoked);
        }
        if record.expired_at(now) {
            return Err(AuthError::Expired);
        }
        self.uses.insert(record.id, now);
        Ok(record)
    }

    fn remember(
        &mut self,
        hash: KeyHash,
        mut record: KeyRecord,
        config: &AuthConfig,
    ) -> Arc<KeyRecord> {
        if record.revoked_at.is_none() && self.revoked.contains_key(&record.id) {
            record.revoked_at = Some(OffsetDateTime::now_utc());
        }
        if self.hits.len() >= config.cache_capacity && !self.hits.contains_key(&hash) {
            let oldest = self
                .hits
                .iter()
                .min_by_key(|(_, hit)| hit.fetched)
                .map(|(hash, hit)| (*hash, hit.record.id));
            if let Some((hash, id)) = oldest {
                self.hits.remove(&hash);
                self.by_id.remove(&id);
            }
        }
        let record = Arc::new(record);
        self.by_id.insert(record.id, hash);
        self.misses.remove(&hash);
        self.hits.insert(
            hash,
            Hit {
                record: Arc::clone(&record),
                fetched: Instant::now(),
            },
        );
        record
    }

    fn remember_miss(&mut self, hash: KeyHash, config: &AuthConfig) {
        if self.misses.len() >= config.miss_capacity {
            self.misses.retain(|_, at| at.elapsed() < config.miss_ttl);
        }
        if self.misses.len() >= config.miss_capacity {
            let oldest = self
                .misses
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(h, _)| *h);
            if let Some(oldest) = oldest {
                self.misses.remove(&oldest);
            }
        }
        self.misses.insert(hash, Instant::now());
    }

    fn forget(&mut self, id: Uuid) {
        self.revoked.insert(id, Instant::now());
        if let Some(hash) = self.by_id.remove(&id) {
            self.hits.remove(&hash);
        }
        self.uses.remove(&id);
    }
}

impl Authenticator {
    /// An authenticator over `store`. Call [`Authenticator::start`] to poll revocations and
    /// write uses.
    pub fn new(store: Arc<dyn KeyStore>, config: AuthConfig) -> Authenticator {
        let lookups = Semaphore::new(config.max_lookups.max(1));
        Authenticator {
            inner: Arc::new(Inner {
                store,
                config,
                state: Mutex::new(State::default()),
                lookups,
                flush_now: Notify::new(),
            }),
        }
    }

    /// The record of the key `presented`, if it works now: from the cache when it is there,
    /// else from the store.
    ///
    /// # Errors
    /// A text that cannot be a key, an unknown, revoked or expired key, or a store that failed.
    pub async fn authenticate(&self, presented: &str) -> Result<Arc<KeyRecord>, AuthError> {
        let hash = KeyHash::of_presented(presented).map_err(|_| AuthError::Malformed)?;
        let config = &self.inner.config;
        if let Some(answer) = self
            .inner
            .state()
            .answer(&hash, OffsetDateTime::now_utc(), config)
        {
            return answer;
        }
        let _permit = self
            .inner
            .lookups
            .acquire()
            .await
            .map_err(|_| KeyStoreError::Backend("the authenticator is closed".to_owned()))?;
        // Another request may have looked it up while this one waited.
        if let Some(answer) = self
            .inner
            .state()
            .answer(&hash, OffsetDateTime::now_utc(), config)
        {
            return answer;
        }
        let found = self.inner.store.find(&hash).await?;
        let mut state = self.inner.state();
        let flush = state.uses.len() >= config.cache_capacity;
        let answer = match found {
            None => {
                state.remember_miss(hash, config);
                Err(AuthError::Unknown)
            }
            Some(record) => {
                let record = state.remember(hash, record, config);
                state.judge(record, OffsetDateTime::now_utc())
            }
        };
        drop(state);
        if flush {
            self.inner.flush_now.notify_one();
        }
        answer
    }

    /// Creates a key; the answer holds its text, which nothing keeps.
    ///
    /// # Errors
    /// The tenant has [`MAX_LIVE_KEYS_PER_TENANT`] live keys, or the store failed.
    pub async fn create(&self, new: NewKey) -> Result<(ApiKey, KeyRecord), AuthError> {
        let now = OffsetDateTime::now_utc();
        let live = self
            .inner
            .store
            .list(Some(new.tenant()))
            .await?
            .iter()
            .filter(|r| r.usable_at(now))
            .count();
        if live >= MAX_LIVE_KEYS_PER_TENANT {
            return Err(AuthError::TooManyKeys {
                tenant: new.tenant().clone(),
            });
        }
        let key = ApiKey::generate();
        let record = new.record(now);
        self.inner.store.create(&record, &key.hash()).await?;
        Ok((key, record))
    }

    /// The keys of `tenant` (of every tenant when `None`), oldest first.
    ///
    /// # Errors
    /// The store failed.
    pub async fn list(&self, tenant: Option<&TenantId>) -> Result<Vec<KeyRecord>, AuthError> {
        let mut list = self.inner.store.list(tenant).await?;
        // Uses not yet written are shown as they will be.
        let state = self.inner.state();
        for record in &mut list {
            if let Some(at) = state.uses.get(&record.id)
                && record.last_used_at.is_none_or(|last| last < *at)
            {
                record.last_used_at = Some(*at);
            }
        }
        Ok(list)
    }

    /// Revokes key `id` of `tenant` (of any tenant when `None`); this instance refuses it from
    /// now on. `None` when there is no such key.
    ///
    /// # Errors
    /// The store failed.
    pub async fn revoke(
        &self,
        tenant: Option<&TenantId>,
        id: Uuid,
    ) -> Result<Option<KeyRecord>, AuthError> {
        let revoked = self
            .inner
            .store
            .revoke(tenant, id, flock_models::timestamp::now_micros())
            .await?;
        if revoked.is_some() {
            self.inner.state().forget(id);
        }
        Ok(revoked)
    }

    /// Reads the revocations since the last poll (less the overlap) and forgets those keys.
    ///
    /// # Errors
    /// The store failed.
    pub async fn poll_revocations(&self, since: OffsetDateTime) -> Result<usize, AuthError> {
        let revoked = self.inner.store.revocations_since(since).await?;
        let overlap = self.inner.config.revocation_overlap;
        let mut state = self.inner.state();
        for (id, _) in &revoked {
            state.forget(*id);
        }
        state.revoked.retain(|_, at| at.elapsed() < overlap);
        let ttl = self.inner.config.miss_ttl;
        state.misses.retain(|_, at| at.elapsed() < ttl);
        Ok(revoked.len())
    }

    /// Writes the uses recorded since the last write, in one batch.
    ///
    /// # Errors
    /// The store failed; those uses are dropped (a later use writes its time again).
    pub async fn flush_uses(&self) -> Result<usize, AuthError> {
        let uses: Vec<(Uuid, OffsetDateTime)> = std::mem::take(&mut self.inner.state().uses)
            .into_iter()
            .collect();
        if uses.is_empty() {
            return Ok(0);
        }
        let uses: Vec<(Uuid, OffsetDateTime)> = uses
            .into_iter()
            .map(|(id, at)| (id, flock_models::timestamp::truncate_micros(at)))
            .collect();
        self.inner.store.record_uses(&uses).await?;
        Ok(uses.len())
    }

    /// Keys held in the cache (found and unknown ones), for tests and metrics.
    pub fn cached(&self) -> (usize, usize) {
        let state = self.inner.state();
        (state.hits.len(), state.misses.len())
    }

    /// Starts polling revocations and writing uses on the current tokio runtime.
    pub fn start(&self) -> AuthTasks {
        let (stop, mut stopped) = watch::channel(false);
        let auth = self.clone();
        let task = tokio::spawn(async move {
            let config = auth.inner.config.clone();
            let mut poll = tokio::time::interval(config.revocation_poll);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut flush = tokio::time::interval(config.last_used_flush);
            flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            flush.tick().await;
            let mut since = OffsetDateTime::now_utc() - config.revocation_overlap;
            loop {
                tokio::select! {
                    _ = poll.tick() => {
                        let started = OffsetDateTime::now_utc();
                        match auth.poll_revocations(since).await {
                            Ok(_) => since = started - config.revocation_overlap,
                            Err(err) => tracing::warn!(error = %err, "cannot read revoked API keys; keys revoked on other instances are not seen until this works again"),
                        }
                    }
                    _ = flush.tick() => auth.flush_logged().await,
                    () = auth.inner.flush_now.notified() => auth.flush_logged().await,
                    _ = stopped.changed() => break,
                }
            }
            auth.flush_logged().await;
        });
        AuthTasks { stop, task }
    }

    async fn flush_logged(&self) {
        if let Err(err) = self.flush_uses().await {
            tracing::warn!(error = %err, "cannot write when API keys were last used");
        }
    }
}

/// The running poll and writer; [`AuthTasks::stop`] writes the last uses.
#[derive(Debug)]
pub struct AuthTasks {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl AuthTasks {
    /// Stops polling and writes the uses not yet written.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
