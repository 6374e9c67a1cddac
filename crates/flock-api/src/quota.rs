//! Pending-delivery quotas (`webhooks.max_pending`, `webhooks.max_pending_per_tenant`): a
//! publish with a webhook is refused with 429 `too_many_pending_deliveries` before anything is
//! stored while its tenant, or the whole store, has that many deliveries pending, so a dead
//! receiver or a flood cannot grow the outbox without bound.
//!
//! The counts come from the store (`Outbox::pending_by_tenant`, every instance's deliveries),
//! read again at most once per [`REFRESH`] in the background of a publish; publishes admitted
//! since the last read are added to it. Between reads a count may be high (deliveries that
//! completed since), never low for this instance's own publishes, so the bound errs towards
//! refusing. Other instances' publishes are seen at the next read: with several instances the
//! bound can be passed by what they admit within one [`REFRESH`].
//!
//! The counts hold one entry per tenant with deliveries pending or admitted since the last
//! read; a read replaces them all, so they are bounded by the tenants that publish.
//!
//! What is accepted is never dropped: an accepted workflow's agent outputs get their deliveries
//! whatever the counts, so the bound is on admission, not on the outbox itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use flock_delivery::Outbox;
use flock_models::TenantId;

use crate::error::{ApiError, ErrorCode};

/// How often the counts are read from the store, at most; also the `Retry-After` of a refusal.
pub(crate) const REFRESH: Duration = Duration::from_secs(1);

/// The quotas and the counts they are checked against.
pub(crate) struct PendingQuota {
    outbox: Arc<dyn Outbox>,
    max_pending: u64,
    max_per_tenant: u64,
    counts: Arc<Mutex<Counts>>,
}

#[derive(Default)]
struct Counts {
    /// Pending deliveries per tenant: the store's last answer plus what was admitted since.
    by_tenant: HashMap<TenantId, u64>,
    total: u64,
    /// When the store was last asked, if ever.
    read_at: Option<Instant>,
    /// A read is running.
    reading: bool,
}

impl PendingQuota {
    pub(crate) fn new(outbox: Arc<dyn Outbox>, max_pending: u64, max_per_tenant: u64) -> Self {
        PendingQuota {
            outbox,
            max_pending,
            max_per_tenant,
            counts: Arc::new(Mutex::new(Counts::default())),
        }
    }

    /// Admits a publish of `tenant` that enqueues up to `deliveries` deliveries, counting them,
    /// or refuses it. A publish is refused when the tenant or the server is at its limit
    /// already; one that is admitted may pass the limit by its own deliveries (at most a batch
    /// of 1,000 artifacts on 8 webhooks), so a tenant's count never exceeds its limit by more
    /// than one publish.
    /// The first call reads the counts before answering; later ones start a read in the
    /// background when the counts are older than [`REFRESH`].
    ///
    /// # Errors
    /// 429 `too_many_pending_deliveries` with `Retry-After`; 503 `storage_unavailable` when the
    /// first read fails.
    pub(crate) async fn admit(&self, tenant: &TenantId, deliveries: u64) -> Result<(), ApiError> {
        let first = self.lock().read_at.is_none();
        if first {
            let read = self.outbox.pending_by_tenant().await?;
            Self::store(&self.counts, read);
        } else {
            self.refresh_if_stale();
        }
        let mut counts = self.lock();
        let mine = counts.by_tenant.get(tenant).copied().unwrap_or(0);
        let refuse = |message: String| {
            ApiError::new(ErrorCode::TooManyPendingDeliveries, message)
                .retry_after(REFRESH.as_secs())
        };
        if mine >= self.max_per_tenant {
            return Err(refuse(format!(
                "tenant `{tenant}` has {mine} webhook deliveries pending, its limit \
                 (webhooks.max_pending_per_tenant); nothing was stored"
            )));
        }
        if counts.total >= self.max_pending {
            return Err(refuse(format!(
                "the server has {} webhook deliveries pending, its limit (webhooks.max_pending); \
                 nothing was stored",
                counts.total
            )));
        }
        match counts.by_tenant.get_mut(tenant) {
            Some(n) => *n += deliveries,
            None => {
                counts.by_tenant.insert(tenant.clone(), deliveries);
            }
        }
        counts.total += deliveries;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a read of the counts unless one is running or the last is recent.
    fn refresh_if_stale(&self) {
        {
            let mut counts = self.lock();
            let fresh = counts.read_at.is_some_and(|at| at.elapsed() < REFRESH);
            if fresh || counts.reading {
                return;
            }
            counts.reading = true;
        }
        let (outbox, shared) = (Arc::clone(&self.outbox), Arc::clone(&self.counts));
        tokio::spawn(async move {
            match outbox.pending_by_tenant().await {
                Ok(read) => Self::store(&shared, read),
                Err(error) => {
                    // Keep the counts we have; the next publish past REFRESH tries again.
                    tracing::warn!(%error, "could not count pending deliveries for the quotas");
                    let mut counts = shared.lock().unwrap_or_else(PoisonError::into_inner);
                    counts.reading = false;
                    counts.read_at = Some(Instant::now());
                }
            }
        });
    }

    /// Replaces the counts with a read from the store.
    fn store(shared: &Mutex<Counts>, read: Vec<(TenantId, u64)>) {
        let mut counts = shared.lock().unwrap_or_else(PoisonError::into_inner);
        counts.total = read.iter().map(|(_, n)| n).sum();
        counts.by_tenant = read.into_iter().collect();
        counts.read_at = Some(Instant::now());
        counts.reading = false;
    }
}

impl std::fmt::Debug for PendingQuota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingQuota")
            .field("max_pending", &self.max_pending)
            .field("max_per_tenant", &self.max_per_tenant)
            .finish_non_exhaustive()
    }
}
