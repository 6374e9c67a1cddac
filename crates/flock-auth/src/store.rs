//! Where keys live: the [`KeyStore`] trait, which the SQL stores of `flock-store` implement,
//! and [`MemoryKeyStore`].

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use flock_models::TenantId;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::key::KeyHash;
use crate::record::KeyRecord;

/// A store of API keys: records by the hash of their key. It never sees a key's text.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Stores a new key's record under its hash.
    async fn create(&self, record: &KeyRecord, hash: &KeyHash) -> Result<(), KeyStoreError>;

    /// The record whose key hashes to `hash`, revoked and expired ones included.
    async fn find(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, KeyStoreError>;

    /// The keys of `tenant` (of every tenant when `None`), oldest first, revoked ones included.
    async fn list(&self, tenant: Option<&TenantId>) -> Result<Vec<KeyRecord>, KeyStoreError>;

    /// Revokes key `id` of `tenant` (of any tenant when `None`) at `at`, unless it was revoked
    /// already (then its first revocation stands). `None` when no such key exists.
    async fn revoke(
        &self,
        tenant: Option<&TenantId>,
        id: Uuid,
        at: OffsetDateTime,
    ) -> Result<Option<KeyRecord>, KeyStoreError>;

    /// The ids of the keys revoked at or after `since`, with when.
    async fn revocations_since(
        &self,
        since: OffsetDateTime,
    ) -> Result<Vec<(Uuid, OffsetDateTime)>, KeyStoreError>;

    /// Records when keys were last used, one write for the whole batch; a time older than the
    /// one stored does not replace it.
    async fn record_uses(&self, uses: &[(Uuid, OffsetDateTime)]) -> Result<(), KeyStoreError>;
}

/// A key store that failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KeyStoreError {
    /// The database failed or holds something that does not decode; the message says which.
    #[error("key store: {0}")]
    Backend(String),
}

/// Keys in memory, lost when the process stops: for `store.url = "memory://"` and tests.
#[derive(Debug, Default)]
pub struct MemoryKeyStore {
    keys: Mutex<HashMap<KeyHash, KeyRecord>>,
}

impl MemoryKeyStore {
    /// An empty store.
    pub fn new() -> MemoryKeyStore {
        MemoryKeyStore::default()
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, HashMap<KeyHash, KeyRecord>> {
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl KeyStore for MemoryKeyStore {
    async fn create(&self, record: &KeyRecord, hash: &KeyHash) -> Result<(), KeyStoreError> {
        let mut keys = self.keys();
        if keys.contains_key(hash) || keys.values().any(|r| r.id == record.id) {
            return Err(KeyStoreError::Backend(format!(
                "key {} exists already",
                record.id
            )));
        }
        keys.insert(*hash, record.clone());
        Ok(())
    }

    async fn find(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, KeyStoreError> {
        Ok(self.keys().get(hash).cloned())
    }

    async fn list(&self, tenant: Option<&TenantId>) -> Result<Vec<KeyRecord>, KeyStoreError> {
        let mut list: Vec<KeyRecord> = self
            .keys()
            .values()
            .filter(|r| tenant.is_none_or(|t| &r.tenant == t))
            .cloned()
            .collect();
        list.sort_by_key(|r| (r.created_at, r.id));
        Ok(list)
    }

    async fn revoke(
        &self,
        tenant: Option<&TenantId>,
        id: Uuid,
        at: OffsetDateTime,
    ) -> Result<Option<KeyRecord>, KeyStoreError> {
        let mut keys = self.keys();
        let Some(record) = keys
            .values_mut()
            .find(|r| r.id == id && tenant.is_none_or(|t| &r.tenant == t))
        else {
            return Ok(None);
        };
        record.revoked_at.get_or_insert(at);
        Ok(Some(record.clone()))
    }

    async fn revocations_since(
        &self,
        since: OffsetDateTime,
    ) -> Result<Vec<(Uuid, OffsetDateTime)>, KeyStoreError> {
        Ok(self
            .keys()
            .values()
            .filter_map(|r| r.revoked_at.filter(|at| *at >= since).map(|at| (r.id, at)))
            .collect())
    }

    async fn record_uses(&self, uses: &[(Uuid, OffsetDateTime)]) -> Result<(), KeyStoreError> {
        let mut keys = self.keys();
        for (id, at) in uses {
            if let Some(record) = keys.values_mut().find(|r| r.id == *id)
                && record.last_used_at.is_none_or(|last| last < *at)
            {
                record.last_used_at = Some(*at);
            }
        }
        Ok(())
    }
}
