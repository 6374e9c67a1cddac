//! Tenant webhook secrets in every store: a tenant's first secret made when first asked for,
//! rotation with a grace period for the previous one, its expiry, tenants kept apart, and
//! callers racing on a new tenant (on durable stores, two instances sharing the database)
//! ending with one secret.

use std::sync::Arc;
use std::time::Duration;

use flock_delivery::TenantSecrets;
use flock_models::{TenantId, timestamp};
use flock_store::Storage;

use crate::support::{Place, on_durable_backends, on_every_backend};

fn tenant(name: &str) -> TenantId {
    TenantId::new(name).unwrap()
}

async fn a_first_secret_is_made_once_and_rotations_keep_the_previous_one_in_grace(store: &Storage) {
    let secrets = store.secrets();
    let acme = tenant("acme");
    let now = timestamp::now_micros();
    let first = secrets.signing(&acme, now).await.unwrap();
    assert!(first.current().expose().starts_with("whsec_"));
    assert!(first.previous().is_none() && first.previous_until().is_none());
    assert_eq!(
        secrets.signing(&acme, now).await.unwrap().current(),
        first.current(),
        "made once"
    );
    // Per tenant.
    let other = secrets.signing(&tenant("other"), now).await.unwrap();
    assert_ne!(other.current(), first.current());

    // A rotation: a new current secret, the old one signing until now + grace.
    let grace = Duration::from_secs(3600);
    let rotated = secrets.rotate(&acme, now, grace).await.unwrap();
    assert_ne!(rotated.current(), first.current());
    assert_eq!(rotated.previous(), Some(first.current()));
    assert_eq!(rotated.previous_until(), Some(now + grace));
    let within = secrets
        .signing(&acme, now + Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(within.current(), rotated.current());
    assert_eq!(within.previous(), Some(first.current()));
    assert!(within.previous_key().is_some());
    let header = within.standard_signatures("msg_1", 1_700_000_000, b"{}");
    assert_eq!(header.split(' ').count(), 2, "{header}");
    // The other tenant is untouched.
    let unchanged = secrets.signing(&tenant("other"), now).await.unwrap();
    assert_eq!(unchanged.current(), other.current());
    assert!(unchanged.previous().is_none());

    // Past the grace period the previous secret no longer signs, and stays forgotten.
    let after = secrets.signing(&acme, now + grace).await.unwrap();
    assert_eq!(after.current(), rotated.current());
    assert!(after.previous().is_none());
    assert!(
        secrets
            .signing(&acme, now + Duration::from_secs(60))
            .await
            .unwrap()
            .previous()
            .is_none(),
        "an expired previous secret is cleared, not only hidden"
    );

    // A rotation within the grace period replaces the previous secret.
    let second = secrets
        .rotate(&acme, now + Duration::from_secs(10), grace)
        .await
        .unwrap();
    let third = secrets
        .rotate(&acme, now + Duration::from_secs(20), grace)
        .await
        .unwrap();
    assert_eq!(third.previous(), Some(second.current()));
    assert_eq!(
        third.previous_until(),
        Some(now + Duration::from_secs(20) + grace)
    );
    // No grace: the old secret stops signing at once.
    let abrupt = secrets.rotate(&acme, now, Duration::ZERO).await.unwrap();
    assert!(abrupt.previous().is_none());

    // Rotating a tenant that has no secret yet makes its first.
    let fresh = secrets.rotate(&tenant("new"), now, grace).await.unwrap();
    assert!(fresh.previous().is_none());
    assert_eq!(
        secrets
            .signing(&tenant("new"), now)
            .await
            .unwrap()
            .current(),
        fresh.current()
    );
}
on_every_backend!(a_first_secret_is_made_once_and_rotations_keep_the_previous_one_in_grace);

/// Eight callers ask for a new tenant's secret at once, through `stores` in turn.
async fn racing_callers_agree(stores: &[Storage], name: &str) {
    let now = timestamp::now_micros();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let secrets: Arc<dyn TenantSecrets> = stores[i % stores.len()].secrets();
        let tenant = tenant(name);
        tasks.push(tokio::spawn(async move {
            secrets.signing(&tenant, now).await.unwrap()
        }));
    }
    let mut seen = Vec::new();
    for task in tasks {
        seen.push(task.await.unwrap().current().clone());
    }
    assert!(seen.iter().all(|s| *s == seen[0]), "one secret for all");
    for store in stores {
        let again = store.secrets().signing(&tenant(name), now).await.unwrap();
        assert_eq!(again.current(), &seen[0]);
    }
}

async fn concurrent_callers_on_a_new_tenant_end_with_one_secret(store: &Storage) {
    for round in 0..5 {
        racing_callers_agree(std::slice::from_ref(store), &format!("race-{round}")).await;
    }
}
on_every_backend!(concurrent_callers_on_a_new_tenant_end_with_one_secret);

async fn two_instances_agree_on_a_new_tenant_and_see_each_others_rotations(place: &Place) {
    let stores = [place.open().await, place.open().await];
    for round in 0..5 {
        racing_callers_agree(&stores, &format!("race-{round}")).await;
    }
    let now = timestamp::now_micros();
    let acme = tenant("acme");
    let first = stores[0].secrets().signing(&acme, now).await.unwrap();
    let rotated = stores[1]
        .secrets()
        .rotate(&acme, now, Duration::from_secs(60))
        .await
        .unwrap();
    let seen = stores[0].secrets().signing(&acme, now).await.unwrap();
    assert_eq!(seen.current(), rotated.current());
    assert_eq!(seen.previous(), Some(first.current()));
    for store in &stores {
        store.close().await;
    }
    // Kept across a reopen.
    let store = place.open().await;
    let reopened = store.secrets().signing(&acme, now).await.unwrap();
    assert_eq!(reopened.current(), rotated.current());
    assert_eq!(reopened.previous(), Some(first.current()));
    store.close().await;
}
on_durable_backends!(two_instances_agree_on_a_new_tenant_and_see_each_others_rotations);
