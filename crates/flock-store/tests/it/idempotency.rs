//! Idempotency records in every store: a claim, its completion and replay, a conflicting
//! request, a duplicate in progress, a released key, expiry, the per-tenant bound and tenant
//! separation; durable stores keep records across a reopen.

use std::time::Duration;

use flock_models::TenantId;
use flock_orchestrator::{
    ClaimOutcome, IdempotencyLimits, IdempotencyRequest, RecordedAnswer, SyncAnswer,
};
use flock_store::Storage;
use uuid::Uuid;

use crate::support::{Place, later, now, on_durable_backends, on_every_backend};

const LIMITS: IdempotencyLimits = IdempotencyLimits {
    ttl: Duration::from_secs(60),
    max_per_tenant: 100,
};

fn request(tenant: &str, key: &str, body: u8) -> IdempotencyRequest {
    IdempotencyRequest {
        tenant: TenantId::new(tenant).unwrap(),
        key: key.to_owned(),
        route: "publish_sync".to_owned(),
        fingerprint: [body; 32],
    }
}

fn sync_answer() -> RecordedAnswer {
    RecordedAnswer {
        status: 200,
        correlation_id: Uuid::now_v7(),
        sync: Some(SyncAnswer {
            artifact_ids: vec![Uuid::now_v7(), Uuid::now_v7()],
            completed: true,
            duration_ms: 12,
        }),
    }
}

fn claimed(outcome: ClaimOutcome) -> Uuid {
    match outcome {
        ClaimOutcome::Claimed(token) => token,
        other => panic!("expected a claim, got {other:?}"),
    }
}

async fn idempotency_claim_complete_replay_conflict_and_release(store: &Storage) {
    let ids = store.idempotency();
    let t0 = now();
    let first = request("acme", "k1", 1);
    let token = claimed(ids.claim(&first, t0, LIMITS).await.unwrap());
    assert_eq!(
        ids.claim(&first, t0, LIMITS).await.unwrap(),
        ClaimOutcome::InProgress
    );
    assert_eq!(
        ids.claim(&request("acme", "k1", 2), t0, LIMITS)
            .await
            .unwrap(),
        ClaimOutcome::Conflict
    );
    // Another tenant's key of the same name is its own.
    claimed(
        ids.claim(&request("other", "k1", 1), t0, LIMITS)
            .await
            .unwrap(),
    );

    let answer = sync_answer();
    let tenant = first.tenant.clone();
    // A stranger's token completes nothing.
    ids.complete(&tenant, "k1", Uuid::now_v7(), &answer, LIMITS.ttl)
        .await
        .unwrap();
    assert_eq!(
        ids.claim(&first, t0, LIMITS).await.unwrap(),
        ClaimOutcome::InProgress
    );
    ids.complete(&tenant, "k1", token, &answer, LIMITS.ttl)
        .await
        .unwrap();
    assert_eq!(
        ids.claim(&first, later(t0, 1), LIMITS).await.unwrap(),
        ClaimOutcome::Replay(answer.clone())
    );
    let publish = RecordedAnswer {
        status: 202,
        correlation_id: Uuid::now_v7(),
        sync: None,
    };
    let token = claimed(
        ids.claim(&request("acme", "k2", 1), t0, LIMITS)
            .await
            .unwrap(),
    );
    ids.complete(&tenant, "k2", token, &publish, LIMITS.ttl)
        .await
        .unwrap();
    assert_eq!(
        ids.claim(&request("acme", "k2", 1), t0, LIMITS)
            .await
            .unwrap(),
        ClaimOutcome::Replay(publish)
    );

    // A released key (its request failed) is free again; a completed one is not released.
    let token = claimed(
        ids.claim(&request("acme", "k3", 1), t0, LIMITS)
            .await
            .unwrap(),
    );
    ids.release(&tenant, "k3", token).await.unwrap();
    claimed(
        ids.claim(&request("acme", "k3", 2), t0, LIMITS)
            .await
            .unwrap(),
    );
    ids.release(&tenant, "k1", token).await.unwrap();
    assert!(matches!(
        ids.claim(&first, t0, LIMITS).await.unwrap(),
        ClaimOutcome::Replay(_)
    ));

    // Past its TTL a record counts as absent: the key is claimed afresh, even by another body.
    let expired = later(t0, 61);
    claimed(
        ids.claim(&request("acme", "k1", 9), expired, LIMITS)
            .await
            .unwrap(),
    );
}
on_every_backend!(idempotency_claim_complete_replay_conflict_and_release);

async fn idempotency_a_tenant_keeps_its_newest_records_up_to_its_bound(store: &Storage) {
    let ids = store.idempotency();
    let limits = IdempotencyLimits {
        ttl: Duration::from_secs(60),
        max_per_tenant: 3,
    };
    let t0 = now();
    let tenant = TenantId::new("bounded").unwrap();
    for n in 0..5_i64 {
        let key = format!("k{n}");
        let at = t0 + Duration::from_millis(u64::try_from(n).unwrap());
        let token = claimed(
            ids.claim(&request("bounded", &key, 1), at, limits)
                .await
                .unwrap(),
        );
        ids.complete(&tenant, &key, token, &sync_answer(), limits.ttl)
            .await
            .unwrap();
    }
    let at = t0 + Duration::from_millis(10);
    // The two oldest were forgotten (claimed afresh); the newest three replay.
    for n in 2..5 {
        let outcome = ids
            .claim(&request("bounded", &format!("k{n}"), 1), at, limits)
            .await
            .unwrap();
        assert!(
            matches!(outcome, ClaimOutcome::Replay(_)),
            "k{n}: {outcome:?}"
        );
    }
    claimed(
        ids.claim(&request("bounded", "k0", 1), at, limits)
            .await
            .unwrap(),
    );
    // Another tenant is not trimmed by this one's keys.
    let token = claimed(
        ids.claim(&request("calm", "c", 1), t0, limits)
            .await
            .unwrap(),
    );
    ids.complete(
        &TenantId::new("calm").unwrap(),
        "c",
        token,
        &sync_answer(),
        limits.ttl,
    )
    .await
    .unwrap();
    for n in 10..15 {
        ids.claim(&request("bounded", &format!("k{n}"), 1), at, limits)
            .await
            .unwrap();
    }
    assert!(matches!(
        ids.claim(&request("calm", "c", 1), at, limits)
            .await
            .unwrap(),
        ClaimOutcome::Replay(_)
    ));
}
on_every_backend!(idempotency_a_tenant_keeps_its_newest_records_up_to_its_bound);

async fn idempotency_records_survive_a_reopen(place: &Place) {
    let store = place.open().await;
    let t0 = now();
    let answer = sync_answer();
    let token = claimed(
        store
            .idempotency()
            .claim(&request("acme", "durable", 1), t0, LIMITS)
            .await
            .unwrap(),
    );
    store
        .idempotency()
        .complete(
            &TenantId::new("acme").unwrap(),
            "durable",
            token,
            &answer,
            LIMITS.ttl,
        )
        .await
        .unwrap();
    store.close().await;
    let store = place.open().await;
    assert_eq!(
        store
            .idempotency()
            .claim(&request("acme", "durable", 1), t0, LIMITS)
            .await
            .unwrap(),
        ClaimOutcome::Replay(answer)
    );
    store.close().await;
}
on_durable_backends!(idempotency_records_survive_a_reopen);
