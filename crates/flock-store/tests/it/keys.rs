//! API keys in every store: found by hash, listed by tenant, revoked once, their revocations
//! read back, uses written in a batch; durable stores keep them across a reopen and never hold
//! a key's text.

use std::sync::Arc;
use std::time::Duration;

use flock_auth::{AuthConfig, Authenticator, KeyStore, NewKey};
use flock_models::{Scope, Scopes, TenantId, timestamp};
use flock_store::Storage;
use uuid::Uuid;

use crate::support::{Place, on_durable_backends, on_every_backend};

fn tenant(name: &str) -> TenantId {
    TenantId::new(name).unwrap()
}

fn new(name: &str, tenant_name: &str) -> NewKey {
    let scopes = Scopes::none().with(Scope::Publish).with(Scope::KeysManage);
    let expires = timestamp::now_micros() + Duration::from_secs(3600);
    NewKey::new(tenant(tenant_name), name, scopes, Some(expires)).unwrap()
}

async fn keys_are_found_by_hash_listed_revoked_and_used(store: &Storage) {
    let keys: Arc<dyn KeyStore> = store.keys();
    let auth = Authenticator::new(Arc::clone(&keys), AuthConfig::default());
    let before = timestamp::now_micros();
    let (a, record_a) = auth.create(new("a", "acme")).await.unwrap();
    let (_, record_b) = auth.create(new("b ü", "acme")).await.unwrap();
    let (_, record_c) = auth.create(new("c", "other")).await.unwrap();
    assert_eq!(keys.find(&a.hash()).await.unwrap(), Some(record_a.clone()));
    let stranger = flock_auth::ApiKey::generate();
    assert_eq!(keys.find(&stranger.hash()).await.unwrap(), None);
    let acme: Vec<Uuid> = keys
        .list(Some(&tenant("acme")))
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(acme, [record_a.id, record_b.id]);
    assert_eq!(keys.list(None).await.unwrap().len(), 3);
    assert_eq!(keys.list(None).await.unwrap()[1], record_b);

    // Revocation is the tenant's; the first one stands.
    let at = timestamp::now_micros();
    assert_eq!(
        keys.revoke(Some(&tenant("other")), record_a.id, at)
            .await
            .unwrap(),
        None
    );
    let revoked = keys
        .revoke(Some(&tenant("acme")), record_a.id, at)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.revoked_at, Some(at));
    let later = at + Duration::from_secs(5);
    let again = keys
        .revoke(None, record_a.id, later)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.revoked_at, Some(at));
    assert_eq!(keys.revoke(None, Uuid::now_v7(), at).await.unwrap(), None);
    assert_eq!(
        keys.revocations_since(before).await.unwrap(),
        [(record_a.id, at)]
    );
    assert!(keys.revocations_since(later).await.unwrap().is_empty());

    // Uses in one batch; an older time does not replace a newer one.
    let used = timestamp::now_micros();
    keys.record_uses(&[(record_b.id, used), (record_c.id, used)])
        .await
        .unwrap();
    keys.record_uses(&[(record_b.id, used - Duration::from_secs(60))])
        .await
        .unwrap();
    let listed = keys.list(None).await.unwrap();
    let b = listed.iter().find(|r| r.id == record_b.id).unwrap();
    assert_eq!(b.last_used_at, Some(used));
    assert_eq!(b.name, "b ü");
    assert_eq!(b.expires_at, record_b.expires_at);
    assert!(
        listed
            .iter()
            .find(|r| r.id == record_a.id)
            .unwrap()
            .last_used_at
            .is_none()
    );
}
on_every_backend!(keys_are_found_by_hash_listed_revoked_and_used);

async fn keys_survive_a_reopen_and_only_their_hash_is_stored(place: &Place) {
    let store = place.open().await;
    let auth = Authenticator::new(store.keys(), AuthConfig::default());
    let (key, record) = auth.create(new("kept", "acme")).await.unwrap();
    auth.authenticate(key.expose()).await.unwrap();
    assert_eq!(auth.flush_uses().await.unwrap(), 1);
    store.close().await;
    let store = place.open().await;
    let again = Authenticator::new(store.keys(), AuthConfig::default());
    let found = again.authenticate(key.expose()).await.unwrap();
    assert_eq!(found.id, record.id);
    assert!(found.last_used_at.is_some());
    store.close().await;
    if let Place::Sqlite(dir) = place {
        let mut files = 0;
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains(&key.expose()[4..]),
                "the key's text is in the file"
            );
            files += usize::from(text.contains(&key.hash().to_hex()));
        }
        assert!(files >= 1, "the hash is stored");
    }
}
on_durable_backends!(keys_survive_a_reopen_and_only_their_hash_is_stored);
