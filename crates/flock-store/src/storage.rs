//! `Storage`: the store that `store.url` names, opened and migrated, as the orchestrator's
//! artifact store and the dispatcher's outbox.

use std::fmt;
use std::sync::Arc;

use flock_auth::{KeyStore, MemoryKeyStore};
use flock_delivery::{MemoryStorage, MemoryTenantSecrets, Outbox, TenantSecrets};
use flock_orchestrator::{ArtifactStore, IdempotencyStore, MemoryIdempotency};

use crate::durable::Durable;
use crate::error::OpenError;
use crate::keys::KeyPool;
use crate::url::StoreUrl;

/// Artifacts and webhook deliveries in one database (or in memory), opened from a
/// [`StoreUrl`].
///
/// [`Storage::artifacts`] and [`Storage::outbox`] are the same database: the orchestrator
/// publishes an artifact and its deliveries in one transaction (the transactional outbox), and
/// the dispatcher claims and records them. Cheap to clone; clones share the database.
#[derive(Clone)]
pub struct Storage {
    url: StoreUrl,
    artifacts: Arc<dyn ArtifactStore>,
    outbox: Arc<dyn Outbox>,
    keys: Arc<dyn KeyStore>,
    secrets: Arc<dyn TenantSecrets>,
    idempotency: Arc<dyn IdempotencyStore>,
    closer: Option<Arc<Durable>>,
}

impl Storage {
    /// Opens the store `url` names: for SQLite, creates the file if needed (readable and
    /// writable by its owner only: it holds webhook secrets) and its schema; for Postgres,
    /// connects and migrates; for `memory://`, an empty in-memory store. Then starts the
    /// writer that commits writes in batches. Call it inside a tokio runtime: the store does
    /// its database I/O on that runtime.
    ///
    /// # Errors
    /// A file that cannot be created or is not a database, a server that cannot be reached, or
    /// a schema that cannot be migrated; the message names the file or server and the reason.
    pub async fn open(url: &StoreUrl) -> Result<Storage, OpenError> {
        let (store, pool) = match url {
            StoreUrl::Memory => return Ok(Storage::memory()),
            StoreUrl::Sqlite(path) => crate::sqlite::open(path).await?,
            StoreUrl::Postgres(pg) => crate::postgres::open(pg).await?,
        };
        // Keys, tenant secrets and idempotency records go through the readers' pool.
        let tables = Arc::new(KeyPool::new(pool));
        Ok(Storage {
            url: url.clone(),
            artifacts: store.clone(),
            outbox: store.clone(),
            keys: tables.clone(),
            secrets: tables.clone(),
            idempotency: tables,
            closer: Some(store),
        })
    }

    /// An empty in-memory store ([`MemoryStorage`]): lost when the process stops.
    pub fn memory() -> Storage {
        let storage = Arc::new(MemoryStorage::new());
        Storage {
            url: StoreUrl::Memory,
            artifacts: storage.clone(),
            outbox: storage,
            keys: Arc::new(MemoryKeyStore::new()),
            secrets: Arc::new(MemoryTenantSecrets::new()),
            idempotency: Arc::new(MemoryIdempotency::new()),
            closer: None,
        }
    }

    /// The URL it was opened from.
    pub fn url(&self) -> &StoreUrl {
        &self.url
    }

    /// The artifact store, for the orchestrator.
    pub fn artifacts(&self) -> Arc<dyn ArtifactStore> {
        Arc::clone(&self.artifacts)
    }

    /// The outbox, for the dispatcher and the delivery routes.
    pub fn outbox(&self) -> Arc<dyn Outbox> {
        Arc::clone(&self.outbox)
    }

    /// The API keys: their SHA-256 hashes and records, never a key itself.
    pub fn keys(&self) -> Arc<dyn KeyStore> {
        Arc::clone(&self.keys)
    }

    /// Each tenant's webhook secrets (the current one and, in its grace period, the previous
    /// one), in the same database; not cached: wrap it in
    /// [`flock_delivery::CachedTenantSecrets`] for the sender's hot path.
    pub fn secrets(&self) -> Arc<dyn TenantSecrets> {
        Arc::clone(&self.secrets)
    }

    /// The idempotency records of the publish routes' `X-Idempotency-Key`s, in the same
    /// database, so that every instance sharing it, and the next process on it, replays the
    /// same answer ([`MemoryIdempotency`] for `memory://`).
    pub fn idempotency(&self) -> Arc<dyn IdempotencyStore> {
        Arc::clone(&self.idempotency)
    }

    /// Lets the writes already queued commit, then closes the connections; later writes fail.
    /// Dropping every clone closes them too, without waiting.
    pub async fn close(&self) {
        if let Some(closer) = &self.closer {
            closer.close().await;
        }
    }
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Storage")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}
