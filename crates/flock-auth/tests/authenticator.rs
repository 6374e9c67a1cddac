//! The `Authenticator` over a memory store that counts its calls: cache hits never reach the
//! store, revocations take effect at once here and after a poll elsewhere, expiry is checked on
//! every use, unknown keys are remembered within a bound and briefly, and uses are written in
//! batches.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use flock_auth::{
    ApiKey, AuthConfig, AuthError, Authenticator, KeyHash, KeyRecord, KeyStore, KeyStoreError,
    MAX_LIVE_KEYS_PER_TENANT, MemoryKeyStore, NewKey,
};
use flock_models::{Scope, Scopes, TenantId};
use time::OffsetDateTime;
use uuid::Uuid;

/// A memory store that counts lookups and use writes.
#[derive(Default)]
struct Counting {
    inner: MemoryKeyStore,
    finds: AtomicUsize,
    use_writes: AtomicUsize,
    uses_written: AtomicUsize,
}

#[async_trait]
impl KeyStore for Counting {
    async fn create(&self, record: &KeyRecord, hash: &KeyHash) -> Result<(), KeyStoreError> {
        self.inner.create(record, hash).await
    }
    async fn find(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, KeyStoreError> {
        self.finds.fetch_add(1, Ordering::SeqCst);
        self.inner.find(hash).await
    }
    async fn list(&self, tenant: Option<&TenantId>) -> Result<Vec<KeyRecord>, KeyStoreError> {
        self.inner.list(tenant).await
    }
    async fn revoke(
        &self,
        tenant: Option<&TenantId>,
        id: Uuid,
        at: OffsetDateTime,
    ) -> Result<Option<KeyRecord>, KeyStoreError> {
        self.inner.revoke(tenant, id, at).await
    }
    async fn revocations_since(
        &self,
        since: OffsetDateTime,
    ) -> Result<Vec<(Uuid, OffsetDateTime)>, KeyStoreError> {
        self.inner.revocations_since(since).await
    }
    async fn record_uses(&self, uses: &[(Uuid, OffsetDateTime)]) -> Result<(), KeyStoreError> {
        self.use_writes.fetch_add(1, Ordering::SeqCst);
        self.uses_written.fetch_add(uses.len(), Ordering::SeqCst);
        self.inner.record_uses(uses).await
    }
}

fn tenant() -> TenantId {
    TenantId::new("acme").unwrap()
}

fn scopes() -> Scopes {
    Scopes::none().with(Scope::Publish).with(Scope::Read)
}

fn new_key(expires_at: Option<OffsetDateTime>) -> NewKey {
    NewKey::new(tenant(), "test", scopes(), expires_at).unwrap()
}

fn setup(config: AuthConfig) -> (Arc<Counting>, Authenticator) {
    let store = Arc::new(Counting::default());
    let auth = Authenticator::new(store.clone(), config);
    (store, auth)
}

#[tokio::test]
async fn a_cached_key_is_checked_without_the_store() {
    let (store, auth) = setup(AuthConfig::default());
    let (key, record) = auth.create(new_key(None)).await.unwrap();
    for _ in 0..100 {
        let found = auth.authenticate(key.expose()).await.unwrap();
        assert_eq!(found.id, record.id);
        assert_eq!(found.tenant, tenant());
        assert_eq!(found.scopes, scopes());
    }
    assert_eq!(store.finds.load(Ordering::SeqCst), 1);
    assert_eq!(auth.cached(), (1, 0));
}

#[tokio::test]
async fn malformed_tokens_never_reach_the_store() {
    let (store, auth) = setup(AuthConfig::default());
    for bad in [
        "",
        "Bearer",
        "flk_short",
        "sk-0123456789",
        &"flk_".repeat(12),
    ] {
        assert!(matches!(
            auth.authenticate(bad).await,
            Err(AuthError::Malformed)
        ));
    }
    assert_eq!(store.finds.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_key_revoked_here_is_refused_at_once() {
    let (_, auth) = setup(AuthConfig::default());
    let (key, record) = auth.create(new_key(None)).await.unwrap();
    auth.authenticate(key.expose()).await.unwrap();
    // Another tenant cannot revoke it.
    let other = TenantId::new("other").unwrap();
    assert!(
        auth.revoke(Some(&other), record.id)
            .await
            .unwrap()
            .is_none()
    );
    auth.authenticate(key.expose()).await.unwrap();
    let revoked = auth
        .revoke(Some(&tenant()), record.id)
        .await
        .unwrap()
        .unwrap();
    assert!(revoked.revoked_at.is_some());
    assert!(matches!(
        auth.authenticate(key.expose()).await,
        Err(AuthError::Revoked)
    ));
    // Revoking again keeps the first revocation.
    let again = auth.revoke(None, record.id).await.unwrap().unwrap();
    assert_eq!(again.revoked_at, revoked.revoked_at);
    assert!(auth.revoke(None, Uuid::now_v7()).await.unwrap().is_none());
}

#[tokio::test]
async fn a_key_revoked_elsewhere_is_refused_after_the_next_poll() {
    let store = Arc::new(MemoryKeyStore::new());
    let here = Authenticator::new(store.clone(), AuthConfig::default());
    let there = Authenticator::new(store, AuthConfig::default());
    let (key, record) = here.create(new_key(None)).await.unwrap();
    let since = OffsetDateTime::now_utc() - Duration::from_secs(60);
    here.authenticate(key.expose()).await.unwrap();
    there.revoke(None, record.id).await.unwrap().unwrap();
    // The cache still holds it until the poll...
    here.authenticate(key.expose()).await.unwrap();
    assert_eq!(here.poll_revocations(since).await.unwrap(), 1);
    // ...which forgets it; the store says it is revoked.
    assert!(matches!(
        here.authenticate(key.expose()).await,
        Err(AuthError::Revoked)
    ));
}

#[tokio::test]
async fn the_running_poll_sees_a_revocation_elsewhere_within_two_periods() {
    let store = Arc::new(MemoryKeyStore::new());
    let config = AuthConfig {
        revocation_poll: Duration::from_millis(100),
        ..AuthConfig::default()
    };
    let here = Authenticator::new(store.clone(), config.clone());
    let there = Authenticator::new(store, config);
    let tasks = here.start();
    let (key, record) = here.create(new_key(None)).await.unwrap();
    here.authenticate(key.expose()).await.unwrap();
    there.revoke(None, record.id).await.unwrap().unwrap();
    let revoked = std::time::Instant::now();
    loop {
        if matches!(
            here.authenticate(key.expose()).await,
            Err(AuthError::Revoked)
        ) {
            break;
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(5),
            "the revocation never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = revoked.elapsed();
    tasks.stop().await;
    assert!(
        took <= Duration::from_millis(200) + Duration::from_millis(300),
        "{took:?}"
    );
}

#[tokio::test]
async fn expiry_is_checked_on_every_use() {
    let (store, auth) = setup(AuthConfig::default());
    let soon = OffsetDateTime::now_utc() + Duration::from_millis(300);
    let (key, _) = auth.create(new_key(Some(soon))).await.unwrap();
    auth.authenticate(key.expose()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(matches!(
        auth.authenticate(key.expose()).await,
        Err(AuthError::Expired)
    ));
    // From the cache: one lookup in all.
    assert_eq!(store.finds.load(Ordering::SeqCst), 1);
    let past = OffsetDateTime::now_utc() - Duration::from_secs(1);
    let (old, _) = auth.create(new_key(Some(past))).await.unwrap();
    assert!(matches!(
        auth.authenticate(old.expose()).await,
        Err(AuthError::Expired)
    ));
}

#[tokio::test]
async fn unknown_keys_are_remembered_briefly_and_within_a_bound() {
    let (store, auth) = setup(AuthConfig {
        miss_capacity: 4,
        miss_ttl: Duration::from_millis(300),
        ..AuthConfig::default()
    });
    let stranger = ApiKey::generate();
    for _ in 0..20 {
        assert!(matches!(
            auth.authenticate(stranger.expose()).await,
            Err(AuthError::Unknown)
        ));
    }
    assert_eq!(
        store.finds.load(Ordering::SeqCst),
        1,
        "misses are remembered"
    );
    for _ in 0..10 {
        let _ = auth.authenticate(ApiKey::generate().expose()).await;
    }
    assert!(auth.cached().1 <= 4, "{:?}", auth.cached());
    // A key that appears in the store later (created on another instance) works once the
    // miss has expired.
    let late = ApiKey::generate();
    assert!(matches!(
        auth.authenticate(late.expose()).await,
        Err(AuthError::Unknown)
    ));
    let record = KeyRecord {
        id: Uuid::now_v7(),
        tenant: tenant(),
        name: "late".to_owned(),
        scopes: scopes(),
        created_at: OffsetDateTime::now_utc(),
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
    };
    store.create(&record, &late.hash()).await.unwrap();
    assert!(matches!(
        auth.authenticate(late.expose()).await,
        Err(AuthError::Unknown)
    ));
    tokio::time::sleep(Duration::from_millis(350)).await;
    auth.authenticate(late.expose()).await.unwrap();
}

#[tokio::test]
async fn uses_are_written_in_batches_and_on_stop() {
    let (store, auth) = setup(AuthConfig {
        last_used_flush: Duration::from_secs(3600),
        ..AuthConfig::default()
    });
    let (a, record_a) = auth.create(new_key(None)).await.unwrap();
    let (b, _) = auth.create(new_key(None)).await.unwrap();
    let tasks = auth.start();
    for _ in 0..50 {
        auth.authenticate(a.expose()).await.unwrap();
        auth.authenticate(b.expose()).await.unwrap();
    }
    assert_eq!(store.use_writes.load(Ordering::SeqCst), 0);
    // Listing shows the uses not yet written.
    let listed = auth.list(Some(&tenant())).await.unwrap();
    assert!(
        listed.iter().all(|r| r.last_used_at.is_some()),
        "{listed:?}"
    );
    tasks.stop().await;
    assert_eq!(store.use_writes.load(Ordering::SeqCst), 1);
    assert_eq!(store.uses_written.load(Ordering::SeqCst), 2);
    let stored = store.inner.list(None).await.unwrap();
    let a_stored = stored.iter().find(|r| r.id == record_a.id).unwrap();
    assert!(a_stored.last_used_at.unwrap() >= record_a.created_at);
    assert_eq!(auth.flush_uses().await.unwrap(), 0);
}

#[tokio::test]
async fn a_tenant_has_a_bounded_number_of_live_keys() {
    let (_, auth) = setup(AuthConfig::default());
    let mut first = None;
    for _ in 0..MAX_LIVE_KEYS_PER_TENANT {
        let (_, record) = auth.create(new_key(None)).await.unwrap();
        first.get_or_insert(record.id);
    }
    let err = auth.create(new_key(None)).await.unwrap_err();
    assert!(matches!(err, AuthError::TooManyKeys { .. }));
    assert!(err.to_string().contains("revoke one first"), "{err}");
    auth.revoke(None, first.unwrap()).await.unwrap().unwrap();
    auth.create(new_key(None)).await.unwrap();
    // Other tenants are not affected.
    let other = NewKey::new(TenantId::new("other").unwrap(), "", scopes(), None).unwrap();
    auth.create(other).await.unwrap();
}

#[tokio::test]
async fn the_cache_of_found_keys_is_bounded() {
    let (_, auth) = setup(AuthConfig {
        cache_capacity: 3,
        ..AuthConfig::default()
    });
    let mut keys = Vec::new();
    for _ in 0..6 {
        keys.push(auth.create(new_key(None)).await.unwrap().0);
    }
    for key in &keys {
        auth.authenticate(key.expose()).await.unwrap();
    }
    assert_eq!(auth.cached().0, 3);
    // Evicted keys still work: they are read again.
    for key in &keys {
        auth.authenticate(key.expose()).await.unwrap();
    }
}
