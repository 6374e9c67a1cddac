//! The store and outbox behaviour every backend shares, checked on each.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use flock_delivery::{DeliveryState, GiveUp, Lease, OutboxCounts, OutboxError, Resolution};
use flock_orchestrator::{ArtifactQuery, StoreError};
use flock_store::{Pruner, Retention, Storage};
use uuid::Uuid;

use crate::support::{
    LEASE, artifact, attempt, delivery, later, now, on_durable_backends, on_every_backend,
};

async fn publish_writes_the_artifact_and_its_deliveries_together(store: &Storage) {
    let (artifacts, outbox) = (store.artifacts(), store.outbox());
    let cid = Uuid::now_v7();
    let acme = flock_models::TenantId::new("acme").unwrap();
    let first = artifact(cid, "Idea").owned_by(acme.clone());
    let deliveries = vec![delivery(&first, 1), delivery(&first, 2)];
    let ids: Vec<Uuid> = deliveries.iter().map(|d| d.id).collect();
    artifacts.publish(&first, deliveries).await.unwrap();

    let stored = artifacts.get(first.id).await.unwrap().unwrap();
    assert_eq!(stored, first);
    assert_eq!(
        serde_json::to_string(&stored.payload).unwrap(),
        r#"{"zebra":1,"apple":{"y":[1,2],"b":null},"mango":"ü"}"#,
        "the payload keeps its key order"
    );
    let views = outbox.deliveries(cid).await.unwrap();
    assert_eq!(views.iter().map(|v| v.id).collect::<Vec<_>>(), ids);
    for (view, sequence) in views.iter().zip(1..) {
        assert_eq!(view.sequence, sequence);
        assert_eq!(view.state, DeliveryState::Pending);
        assert_eq!(view.artifact_id, first.id);
        assert_eq!(view.tenant, acme, "a delivery is its artifact's tenant's");
        assert_eq!(view.url, "https://example.com/hook");
        assert!(view.next_attempt_at.is_some());
        assert!(view.attempts.is_empty());
    }
    assert_eq!(
        outbox.counts().await.unwrap(),
        OutboxCounts {
            pending: 2,
            in_flight: 0
        }
    );
    // An artifact without deliveries is stored alone.
    let quiet = artifact(cid, "Note");
    artifacts.publish(&quiet, Vec::new()).await.unwrap();
    assert_eq!(artifacts.get(quiet.id).await.unwrap(), Some(quiet));
    assert_eq!(outbox.deliveries(cid).await.unwrap().len(), 2);
    assert_eq!(artifacts.get(Uuid::now_v7()).await.unwrap(), None);
    assert!(outbox.delivery(Uuid::now_v7()).await.unwrap().is_none());
}
on_every_backend!(publish_writes_the_artifact_and_its_deliveries_together);

async fn a_failing_publish_leaves_neither_artifact_nor_deliveries(store: &Storage) {
    let (artifacts, outbox) = (store.artifacts(), store.outbox());
    let cid = Uuid::now_v7();
    let first = artifact(cid, "Idea");
    let kept = delivery(&first, 1);
    artifacts.publish(&first, vec![kept.clone()]).await.unwrap();

    // The same artifact again: refused, and its new delivery is not enqueued.
    let again = delivery(&first, 2);
    let err = artifacts
        .publish(&first, vec![again.clone()])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Duplicate(id) if id == first.id),
        "{err:?}"
    );
    assert!(outbox.delivery(again.id).await.unwrap().is_none());

    // A new artifact whose delivery cannot be written (its id is taken): the artifact is not
    // stored either.
    let second = artifact(cid, "Idea");
    let mut clash = delivery(&second, 2);
    clash.id = kept.id;
    assert!(artifacts.publish(&second, vec![clash]).await.is_err());
    assert_eq!(artifacts.get(second.id).await.unwrap(), None);
    assert_eq!(outbox.deliveries(cid).await.unwrap().len(), 1);
    assert_eq!(
        artifacts
            .query(&ArtifactQuery::correlation(cid))
            .await
            .unwrap()
            .total,
        1
    );
    assert_eq!(outbox.counts().await.unwrap().pending, 1);
}
on_every_backend!(a_failing_publish_leaves_neither_artifact_nor_deliveries);

async fn concurrent_publishes_commit_together_and_a_bad_one_fails_alone(store: &Storage) {
    let artifacts = store.artifacts();
    let cid = Uuid::now_v7();
    let taken = artifact(cid, "Idea");
    artifacts.publish(&taken, Vec::new()).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..300u64 {
        let artifacts = Arc::clone(&artifacts);
        let a = if i == 150 {
            taken.clone()
        } else {
            artifact(cid, "Idea")
        };
        tasks.push(tokio::spawn(async move {
            let d = delivery(&a, i + 1);
            artifacts.publish(&a, vec![d]).await
        }));
    }
    let mut failed = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => {}
            Err(StoreError::Duplicate(id)) => {
                assert_eq!(id, taken.id);
                failed += 1;
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(failed, 1);
    let page = artifacts
        .query(&ArtifactQuery::correlation(cid))
        .await
        .unwrap();
    assert_eq!(page.total, 300);
    assert_eq!(store.outbox().deliveries(cid).await.unwrap().len(), 299);
}
on_every_backend!(concurrent_publishes_commit_together_and_a_bad_one_fails_alone);

async fn enqueue_refuses_duplicates_whole(store: &Storage) {
    let outbox = store.outbox();
    let a = artifact(Uuid::now_v7(), "Idea");
    let d = delivery(&a, 1);
    outbox.enqueue(vec![d.clone()]).await.unwrap();
    let fresh = delivery(&a, 2);
    assert_eq!(
        outbox.enqueue(vec![fresh.clone(), d.clone()]).await,
        Err(OutboxError::Duplicate(d.id))
    );
    assert!(outbox.delivery(fresh.id).await.unwrap().is_none());
    assert_eq!(
        outbox.enqueue(vec![fresh.clone(), fresh.clone()]).await,
        Err(OutboxError::Duplicate(fresh.id))
    );
    assert!(outbox.delivery(fresh.id).await.unwrap().is_none());
    outbox.enqueue(Vec::new()).await.unwrap();
    assert_eq!(outbox.counts().await.unwrap().pending, 1);
}
on_every_backend!(enqueue_refuses_duplicates_whole);

async fn claims_due_deliveries_once_in_order(store: &Storage) {
    let outbox = store.outbox();
    let cid = Uuid::now_v7();
    let acme = flock_models::TenantId::new("acme").unwrap();
    let a = artifact(cid, "Idea").owned_by(acme.clone());
    outbox
        .enqueue((1..=5).map(|s| delivery(&a, s)).collect())
        .await
        .unwrap();
    let at = later(now(), 1);
    let first = outbox.claim(at, 3, LEASE).await.unwrap();
    let second = outbox.claim(at, 10, LEASE).await.unwrap();
    let sequences: Vec<u64> = first
        .iter()
        .chain(&second)
        .map(|c| c.delivery.sequence)
        .collect();
    assert_eq!(sequences, [1, 2, 3, 4, 5]);
    assert!(
        first
            .iter()
            .chain(&second)
            .all(|c| c.attempt == 1 && c.round_attempt == 1)
    );
    let claimed = &first[0];
    assert_eq!(
        claimed.delivery.secret.as_ref().unwrap().expose(),
        "s3cret-value"
    );
    assert_eq!(
        claimed.delivery.url.as_str(),
        "https://example.com/hook?token=abc"
    );
    assert_eq!(claimed.delivery.artifact_created_at, a.created_at);
    assert_eq!(
        claimed.delivery.tenant, acme,
        "a claim knows whose delivery it is"
    );
    assert!(!claimed.delivery.body.is_empty());
    assert!(outbox.claim(at, 10, LEASE).await.unwrap().is_empty());
    assert_eq!(
        outbox.counts().await.unwrap(),
        OutboxCounts {
            pending: 0,
            in_flight: 5
        }
    );
    assert!(outbox.claim(at, 0, LEASE).await.unwrap().is_empty());
}
on_every_backend!(claims_due_deliveries_once_in_order);

async fn claimed_bodies_are_the_enqueued_bytes(store: &Storage) {
    let outbox = store.outbox();
    let a = artifact(Uuid::now_v7(), "Idea");
    let mut unsigned = delivery(&a, 1);
    unsigned.secret = None;
    let signed = delivery(&a, 2);
    outbox
        .enqueue(vec![unsigned.clone(), signed.clone()])
        .await
        .unwrap();
    let claimed = outbox.claim(later(now(), 1), 2, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 2);
    for c in claimed {
        let original = if c.delivery.id == unsigned.id {
            &unsigned
        } else {
            &signed
        };
        assert_eq!(*c.delivery, *original);
    }
}
on_every_backend!(claimed_bodies_are_the_enqueued_bytes);

async fn a_retry_waits_for_its_due_time_and_attempts_count_up(store: &Storage) {
    let outbox = store.outbox();
    let a = artifact(Uuid::now_v7(), "Idea");
    let d = delivery(&a, 1);
    outbox.enqueue(vec![d.clone()]).await.unwrap();
    let at = later(now(), 1);
    assert!(outbox.next_due().await.unwrap().unwrap() <= at);
    let claimed = outbox.claim(at, 1, LEASE).await.unwrap().remove(0);
    assert_eq!(
        outbox.next_due().await.unwrap(),
        Some(claimed.lease.expires_at),
        "while claimed, the lease's expiry is when it may be claimed again"
    );
    let retry_at = later(at, 60);
    outbox
        .record(&claimed.lease, attempt(1), Resolution::RetryAt(retry_at))
        .await
        .unwrap();
    assert_eq!(outbox.next_due().await.unwrap(), Some(retry_at));
    let view = outbox.delivery(d.id).await.unwrap().unwrap();
    assert_eq!(view.next_attempt_at, Some(retry_at));
    assert_eq!(view.state, DeliveryState::Pending);
    assert!(outbox.claim(at, 1, LEASE).await.unwrap().is_empty());
    let again = outbox.claim(retry_at, 1, LEASE).await.unwrap().remove(0);
    assert_eq!((again.attempt, again.round_attempt), (2, 2));
    outbox
        .record(&again.lease, attempt(2), Resolution::Delivered)
        .await
        .unwrap();
    let view = outbox.delivery(d.id).await.unwrap().unwrap();
    assert_eq!(view.state, DeliveryState::Delivered);
    assert_eq!(
        view.attempts.iter().map(|a| a.number).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(view.attempts[0].status_code, Some(500));
    assert_eq!(view.attempts[0].error.as_deref(), Some("HTTP 500"));
    assert_eq!(view.attempts[0].duration_ms, 3);
    assert!(view.completed_at.is_some());
    assert_eq!(view.next_attempt_at, None);
    assert_eq!(outbox.next_due().await.unwrap(), None);
    assert_eq!(outbox.counts().await.unwrap(), OutboxCounts::default());
}
on_every_backend!(a_retry_waits_for_its_due_time_and_attempts_count_up);

async fn an_expired_lease_is_claimed_again_and_the_stale_token_cannot_record(store: &Storage) {
    let outbox = store.outbox();
    let a = artifact(Uuid::now_v7(), "Idea");
    let d = delivery(&a, 1);
    outbox.enqueue(vec![d.clone()]).await.unwrap();
    let at = later(now(), 1);
    let old = outbox.claim(at, 1, LEASE).await.unwrap().remove(0);
    assert!(outbox.claim(at, 1, LEASE).await.unwrap().is_empty());
    let new = outbox
        .claim(old.lease.expires_at, 1, LEASE)
        .await
        .unwrap()
        .remove(0);
    assert_ne!(new.lease.token, old.lease.token);
    assert_eq!(new.attempt, 1, "the lost attempt was never recorded");
    assert_eq!(
        outbox
            .record(&old.lease, attempt(1), Resolution::Delivered)
            .await,
        Err(OutboxError::LeaseLost(d.id))
    );
    outbox
        .record(&new.lease, attempt(1), Resolution::Failed(GiveUp::Gone))
        .await
        .unwrap();
    assert_eq!(
        outbox
            .record(&new.lease, attempt(2), Resolution::Delivered)
            .await,
        Err(OutboxError::LeaseLost(d.id)),
        "a lease records once"
    );
    let view = outbox.delivery(d.id).await.unwrap().unwrap();
    assert_eq!(view.state, DeliveryState::Failed);
    assert_eq!(view.failure, Some(GiveUp::Gone));
    assert_eq!(view.attempts.len(), 1);
    assert_eq!(outbox.counts().await.unwrap(), OutboxCounts::default());

    let mut unknown = new.lease;
    unknown.delivery_id = Uuid::now_v7();
    assert_eq!(
        outbox
            .record(&unknown, attempt(1), Resolution::Delivered)
            .await,
        Err(OutboxError::UnknownDelivery(unknown.delivery_id))
    );
}
on_every_backend!(an_expired_lease_is_claimed_again_and_the_stale_token_cannot_record);

async fn records_from_many_slots_at_once_each_land(store: &Storage) {
    let outbox = store.outbox();
    let cid = Uuid::now_v7();
    let a = artifact(cid, "Idea");
    outbox
        .enqueue((1..=200).map(|s| delivery(&a, s)).collect())
        .await
        .unwrap();
    let claimed = outbox.claim(later(now(), 1), 200, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 200);
    let mut tasks = Vec::new();
    for (i, c) in claimed.into_iter().enumerate() {
        let outbox = Arc::clone(&outbox);
        tasks.push(tokio::spawn(async move {
            let resolution = match i % 3 {
                0 => Resolution::Delivered,
                1 => Resolution::Failed(GiveUp::Exhausted),
                _ => Resolution::RetryAt(later(now(), 3600)),
            };
            outbox.record(&c.lease, attempt(1), resolution).await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let views = outbox.deliveries(cid).await.unwrap();
    assert_eq!(views.len(), 200);
    assert!(views.iter().all(|v| v.attempts.len() == 1));
    let count = |state| views.iter().filter(|v| v.state == state).count();
    assert_eq!(count(DeliveryState::Delivered), 67);
    assert_eq!(count(DeliveryState::Failed), 67);
    assert_eq!(count(DeliveryState::Pending), 66);
    assert_eq!(
        outbox.counts().await.unwrap(),
        OutboxCounts {
            pending: 66,
            in_flight: 0
        }
    );
}
on_every_backend!(records_from_many_slots_at_once_each_land);

/// Records at once, some under leases since lost: each current one lands and each stale one is
/// refused, whichever of them share a batch (a batch that applies only some of its records
/// answers which).
async fn records_at_once_under_current_and_lost_leases_each_get_their_own_answer(store: &Storage) {
    let outbox = store.outbox();
    let cid = Uuid::now_v7();
    let a = artifact(cid, "Idea");
    outbox
        .enqueue((1..=64).map(|s| delivery(&a, s)).collect())
        .await
        .unwrap();
    let old = outbox.claim(later(now(), 1), 64, LEASE).await.unwrap();
    assert_eq!(old.len(), 64);
    let expired = old[0].lease.expires_at;
    let new = outbox.claim(expired, 64, LEASE).await.unwrap();
    assert_eq!(new.len(), 64);
    // Even sequences under their current lease, odd ones under the lost one.
    let leases: Vec<(Lease, bool)> = (new.iter().zip(&old))
        .map(|(n, o)| {
            assert_eq!(n.delivery.id, o.delivery.id);
            match n.delivery.sequence % 2 {
                0 => (n.lease, true),
                _ => (o.lease, false),
            }
        })
        .collect();
    let answers = futures_util::future::join_all(
        leases
            .iter()
            .map(|(lease, _)| outbox.record(lease, attempt(1), Resolution::Delivered)),
    )
    .await;
    for ((lease, current), answer) in leases.iter().zip(answers) {
        match current {
            true => assert_eq!(answer, Ok(()), "{}", lease.delivery_id),
            false => assert_eq!(answer, Err(OutboxError::LeaseLost(lease.delivery_id))),
        }
    }
    let views = outbox.deliveries(cid).await.unwrap();
    for view in &views {
        let (state, attempts) = match view.sequence % 2 {
            0 => (DeliveryState::Delivered, 1),
            _ => (DeliveryState::Pending, 0),
        };
        assert_eq!(
            (view.state, view.attempts.len()),
            (state, attempts),
            "{}",
            view.id
        );
    }
    assert_eq!(
        outbox.counts().await.unwrap(),
        OutboxCounts {
            pending: 0,
            in_flight: 32
        },
        "the deliveries of the lost leases are still in flight under their current ones"
    );
}
on_every_backend!(records_at_once_under_current_and_lost_leases_each_get_their_own_answer);

async fn views_never_hold_the_secret_or_the_query(store: &Storage) {
    let outbox = store.outbox();
    let cid = Uuid::now_v7();
    let a = artifact(cid, "Idea");
    outbox
        .enqueue(vec![delivery(&a, 1), delivery(&a, 2)])
        .await
        .unwrap();
    let c = outbox
        .claim(later(now(), 1), 1, LEASE)
        .await
        .unwrap()
        .remove(0);
    outbox
        .record(&c.lease, attempt(1), Resolution::Delivered)
        .await
        .unwrap();
    let views = outbox.deliveries(cid).await.unwrap();
    let json = serde_json::to_string(&views).unwrap();
    assert!(!json.contains("s3cret-value"), "{json}");
    assert!(!json.contains("token=abc"), "{json}");
    assert!(!format!("{views:?}{store:?}").contains("s3cret-value"));
    assert!(views.iter().all(|v| v.url == "https://example.com/hook"));
}
on_every_backend!(views_never_hold_the_secret_or_the_query);

async fn a_failed_delivery_is_redelivered_with_a_fresh_budget(store: &Storage) {
    let outbox = store.outbox();
    let a = artifact(Uuid::now_v7(), "Idea");
    let d = delivery(&a, 1);
    outbox.enqueue(vec![d.clone()]).await.unwrap();
    let at = later(now(), 1);
    let first = outbox.claim(at, 1, LEASE).await.unwrap().remove(0);
    assert_eq!(
        outbox.redeliver(d.id, at).await,
        Err(OutboxError::NotRedeliverable {
            id: d.id,
            state: DeliveryState::Pending
        }),
        "in flight is pending"
    );
    outbox
        .record(&first.lease, attempt(1), Resolution::RetryAt(later(at, 1)))
        .await
        .unwrap();
    assert_eq!(
        outbox.redeliver(d.id, at).await,
        Err(OutboxError::NotRedeliverable {
            id: d.id,
            state: DeliveryState::Pending
        }),
        "waiting for a retry is pending"
    );
    let second = outbox
        .claim(later(at, 1), 1, LEASE)
        .await
        .unwrap()
        .remove(0);
    outbox
        .record(
            &second.lease,
            attempt(2),
            Resolution::Failed(GiveUp::Exhausted),
        )
        .await
        .unwrap();
    let unknown = Uuid::now_v7();
    assert_eq!(
        outbox.redeliver(unknown, at).await,
        Err(OutboxError::UnknownDelivery(unknown))
    );

    let requeued_at = later(at, 2);
    outbox.redeliver(d.id, requeued_at).await.unwrap();
    let view = outbox.delivery(d.id).await.unwrap().unwrap();
    assert_eq!(view.state, DeliveryState::Pending);
    assert_eq!(view.failure, None);
    assert_eq!(view.completed_at, None);
    assert_eq!(view.next_attempt_at, Some(requeued_at));
    assert_eq!(view.attempts.len(), 2, "the history is kept");
    assert_eq!(outbox.counts().await.unwrap().pending, 1);

    let third = outbox.claim(requeued_at, 1, LEASE).await.unwrap().remove(0);
    assert_eq!(third.delivery.id, d.id, "the same webhook-id");
    assert_eq!(*third.delivery, d, "the same body and secret");
    assert_eq!((third.attempt, third.round_attempt), (3, 1));
    outbox
        .record(&third.lease, attempt(3), Resolution::Delivered)
        .await
        .unwrap();
    let view = outbox.delivery(d.id).await.unwrap().unwrap();
    assert_eq!(view.state, DeliveryState::Delivered);
    assert_eq!(
        view.attempts.iter().map(|a| a.number).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(
        outbox.redeliver(d.id, requeued_at).await,
        Err(OutboxError::NotRedeliverable {
            id: d.id,
            state: DeliveryState::Delivered
        })
    );
}
on_every_backend!(a_failed_delivery_is_redelivered_with_a_fresh_budget);

async fn prune_deletes_only_done_deliveries_completed_before_the_cutoff(store: &Storage) {
    let (artifacts, outbox) = (store.artifacts(), store.outbox());
    let cid = Uuid::now_v7();
    let a = artifact(cid, "Idea");
    let deliveries: Vec<_> = (1..=3).map(|s| delivery(&a, s)).collect();
    artifacts.publish(&a, deliveries.clone()).await.unwrap();
    let at = later(now(), 1);
    let mut claimed = outbox.claim(at, 2, LEASE).await.unwrap();
    let failed = claimed.pop().unwrap();
    let delivered = claimed.pop().unwrap();
    outbox
        .record(&delivered.lease, attempt(1), Resolution::Delivered)
        .await
        .unwrap();
    outbox
        .record(&failed.lease, attempt(1), Resolution::Failed(GiveUp::Gone))
        .await
        .unwrap();
    let before = later(now(), -3600);
    assert_eq!(
        outbox.prune(before).await.unwrap(),
        0,
        "completed after the cutoff"
    );
    assert_eq!(outbox.deliveries(cid).await.unwrap().len(), 3);
    assert_eq!(outbox.prune(later(now(), 3600)).await.unwrap(), 2);
    let left = outbox.deliveries(cid).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].state, DeliveryState::Pending);
    assert!(
        outbox
            .delivery(delivered.delivery.id)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        outbox.redeliver(failed.delivery.id, at).await,
        Err(OutboxError::UnknownDelivery(failed.delivery.id))
    );
    assert_eq!(
        artifacts.get(a.id).await.unwrap(),
        Some(a),
        "artifacts are kept"
    );
    assert_eq!(outbox.prune(later(now(), 3600)).await.unwrap(), 0);
}
on_every_backend!(prune_deletes_only_done_deliveries_completed_before_the_cutoff);

async fn the_pruner_uses_its_clock_and_period(store: &Storage) {
    let outbox = store.outbox();
    let cid = Uuid::now_v7();
    let a = artifact(cid, "Idea");
    outbox
        .enqueue(vec![delivery(&a, 1), delivery(&a, 2)])
        .await
        .unwrap();
    let c = outbox
        .claim(later(now(), 1), 1, LEASE)
        .await
        .unwrap()
        .remove(0);
    outbox
        .record(&c.lease, attempt(1), Resolution::Delivered)
        .await
        .unwrap();
    let retention = Retention {
        keep_for: Duration::from_secs(7 * 24 * 3600),
        every: Duration::from_millis(20),
        workflows_for: None,
    };
    // Today nothing is old enough.
    let pruner = Pruner::start(Arc::clone(&outbox), retention);
    tokio::time::sleep(Duration::from_millis(100)).await;
    pruner.stop().await;
    assert_eq!(outbox.deliveries(cid).await.unwrap().len(), 2);
    // Eight days on, the delivered one goes; the pending one stays.
    let pruner = Pruner::start_with_clock(
        Arc::clone(&outbox),
        retention,
        Arc::new(|| later(now(), 8 * 24 * 3600)),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while outbox.deliveries(cid).await.unwrap().len() != 1 {
        assert!(std::time::Instant::now() < deadline, "never pruned");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pruner.stop().await;
    let left = outbox.deliveries(cid).await.unwrap();
    assert_eq!(left[0].state, DeliveryState::Pending);
}
on_every_backend!(the_pruner_uses_its_clock_and_period);

/// Two stores on one database (two instances): every delivery is claimed by exactly one.
async fn two_instances_claim_each_delivery_once(place: &crate::support::Place) {
    let first = place.open().await;
    let second = place.open().await;
    let a = artifact(Uuid::now_v7(), "Idea");
    first
        .outbox()
        .enqueue((1..=300).map(|s| delivery(&a, s)).collect())
        .await
        .unwrap();
    let claim_all = |store: Storage| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..1000 {
                let batch = store
                    .outbox()
                    .claim(later(now(), 1), 7, LEASE)
                    .await
                    .unwrap();
                if batch.is_empty() {
                    break;
                }
                got.extend(batch.into_iter().map(|c| c.delivery.id));
            }
            got
        })
    };
    let (one, two) = (claim_all(first.clone()), claim_all(second.clone()));
    let (one, two) = (one.await.unwrap(), two.await.unwrap());
    let all: HashSet<Uuid> = one.iter().chain(&two).copied().collect();
    assert_eq!(one.len() + two.len(), 300, "{} + {}", one.len(), two.len());
    assert_eq!(all.len(), 300);
    first.close().await;
    second.close().await;
}
on_durable_backends!(two_instances_claim_each_delivery_once);

async fn a_slot_records_and_claims_its_next_delivery_in_one_call(store: &Storage) {
    let outbox = store.outbox();
    let cid = Uuid::now_v7();
    let a = artifact(cid, "Idea");
    outbox
        .enqueue((1..=3).map(|s| delivery(&a, s)).collect())
        .await
        .unwrap();
    let at = later(now(), 1);
    let first = outbox.claim(at, 1, LEASE).await.unwrap().remove(0);
    let both = outbox
        .record_and_claim(
            &first.lease,
            attempt(1),
            Resolution::Delivered,
            at,
            1,
            LEASE,
        )
        .await;
    both.recorded.unwrap();
    let second = both.claimed.unwrap().remove(0);
    assert_eq!(second.delivery.sequence, 2);
    // A lost lease is refused, and the slot still gets its next delivery.
    let both = outbox
        .record_and_claim(
            &first.lease,
            attempt(1),
            Resolution::Delivered,
            at,
            5,
            LEASE,
        )
        .await;
    assert_eq!(
        both.recorded,
        Err(OutboxError::LeaseLost(first.delivery.id))
    );
    let rest = both.claimed.unwrap();
    assert_eq!(
        rest.iter().map(|c| c.delivery.sequence).collect::<Vec<_>>(),
        [3]
    );
    let views = outbox.deliveries(cid).await.unwrap();
    assert_eq!(views[0].state, DeliveryState::Delivered);
    assert_eq!(views[0].attempts.len(), 1);
    assert_eq!(
        outbox.counts().await.unwrap(),
        OutboxCounts {
            pending: 0,
            in_flight: 2
        }
    );
}
on_every_backend!(a_slot_records_and_claims_its_next_delivery_in_one_call);

async fn many_slots_recording_and_claiming_at_once_deliver_everything_once(store: &Storage) {
    let outbox = store.outbox();
    let cid = Uuid::now_v7();
    let a = artifact(cid, "Idea");
    outbox
        .enqueue((1..=500).map(|s| delivery(&a, s)).collect())
        .await
        .unwrap();
    let mut slots = Vec::new();
    for _ in 0..32 {
        let outbox = Arc::clone(&outbox);
        slots.push(tokio::spawn(async move {
            let mut done = Vec::new();
            let mut next = outbox.claim(later(now(), 1), 1, LEASE).await.unwrap().pop();
            for _ in 0..1000 {
                let Some(c) = next.take() else { break };
                done.push(c.delivery.id);
                let both = outbox
                    .record_and_claim(
                        &c.lease,
                        attempt(1),
                        Resolution::Delivered,
                        later(now(), 1),
                        1,
                        LEASE,
                    )
                    .await;
                both.recorded.unwrap();
                next = both.claimed.unwrap().pop();
            }
            done
        }));
    }
    let mut all = Vec::new();
    for slot in slots {
        all.extend(slot.await.unwrap());
    }
    let distinct: HashSet<Uuid> = all.iter().copied().collect();
    assert_eq!((all.len(), distinct.len()), (500, 500));
    let views = outbox.deliveries(cid).await.unwrap();
    assert!(
        views
            .iter()
            .all(|v| v.state == DeliveryState::Delivered && v.attempts.len() == 1)
    );
    assert_eq!(outbox.counts().await.unwrap(), OutboxCounts::default());
}
on_every_backend!(many_slots_recording_and_claiming_at_once_deliver_everything_once);

async fn pending_deliveries_are_counted_per_tenant_until_they_finish(store: &Storage) {
    let outbox = store.outbox();
    let tenant = |name: &str| flock_models::TenantId::new(name).unwrap();
    let a = artifact(Uuid::now_v7(), "Idea").owned_by(tenant("acme"));
    let b = artifact(Uuid::now_v7(), "Idea").owned_by(tenant("other"));
    outbox
        .enqueue(vec![delivery(&a, 1), delivery(&a, 2), delivery(&b, 1)])
        .await
        .unwrap();
    let mut counts = outbox.pending_by_tenant().await.unwrap();
    counts.sort();
    assert_eq!(counts, [(tenant("acme"), 2), (tenant("other"), 1)]);
    // In flight still counts; delivered does not.
    let claimed = outbox.claim(later(now(), 1), 3, LEASE).await.unwrap();
    let mut counts = outbox.pending_by_tenant().await.unwrap();
    counts.sort();
    assert_eq!(counts, [(tenant("acme"), 2), (tenant("other"), 1)]);
    for c in claimed
        .iter()
        .filter(|c| c.delivery.tenant == tenant("other"))
    {
        outbox
            .record(&c.lease, attempt(1), Resolution::Delivered)
            .await
            .unwrap();
    }
    assert_eq!(
        outbox.pending_by_tenant().await.unwrap(),
        [(tenant("acme"), 2)]
    );
}
on_every_backend!(pending_deliveries_are_counted_per_tenant_until_they_finish);

async fn finished_workflows_are_pruned_with_their_artifacts_and_deliveries(store: &Storage) {
    let (artifacts, outbox) = (store.artifacts(), store.outbox());
    let hours_ago = |h: i64| now() - time::Duration::hours(h);
    let old = |cid: Uuid| {
        let mut a = artifact(cid, "Idea");
        a.created_at = hours_ago(2);
        a
    };
    let (finished, waiting, growing, fresh) = (
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    );
    let finished_artifact = old(finished);
    let waiting_artifact = old(waiting);
    artifacts
        .publish(&finished_artifact, vec![delivery(&finished_artifact, 1)])
        .await
        .unwrap();
    artifacts
        .publish(&waiting_artifact, vec![delivery(&waiting_artifact, 1)])
        .await
        .unwrap();
    artifacts.publish(&old(growing), Vec::new()).await.unwrap();
    artifacts
        .publish(&artifact(fresh, "Idea"), Vec::new())
        .await
        .unwrap();
    artifacts
        .publish(&artifact(growing, "Note"), Vec::new())
        .await
        .unwrap();
    // The finished workflow's delivery is delivered; the waiting one's stays pending.
    let claimed = outbox.claim(later(now(), 1), 10, LEASE).await.unwrap();
    let finished_claim = claimed
        .iter()
        .find(|c| c.delivery.correlation_id == finished);
    outbox
        .record(
            &finished_claim.unwrap().lease,
            attempt(1),
            Resolution::Delivered,
        )
        .await
        .unwrap();

    assert_eq!(outbox.prune_workflows(hours_ago(1)).await.unwrap(), 1);
    assert_eq!(artifacts.get(finished_artifact.id).await.unwrap(), None);
    assert!(outbox.deliveries(finished).await.unwrap().is_empty());
    let left = |cid: Uuid| {
        let artifacts = Arc::clone(&artifacts);
        async move {
            let page = artifacts.query(&ArtifactQuery::correlation(cid)).await;
            page.unwrap().total
        }
    };
    assert_eq!(left(finished).await, 0);
    assert_eq!(
        left(waiting).await,
        1,
        "a pending delivery keeps its workflow"
    );
    assert_eq!(
        left(growing).await,
        2,
        "a recent artifact keeps its workflow"
    );
    assert_eq!(left(fresh).await, 1);
    // Once its delivery is done, the waiting workflow goes too; nothing else does.
    let waiting_claim = claimed
        .iter()
        .find(|c| c.delivery.correlation_id == waiting);
    outbox
        .record(
            &waiting_claim.unwrap().lease,
            attempt(1),
            Resolution::Failed(GiveUp::Gone),
        )
        .await
        .unwrap();
    assert_eq!(outbox.prune_workflows(hours_ago(1)).await.unwrap(), 1);
    assert_eq!(left(waiting).await, 0);
    assert!(outbox.deliveries(waiting).await.unwrap().is_empty());
    assert_eq!((left(growing).await, left(fresh).await), (2, 1));
    assert_eq!(outbox.prune_workflows(hours_ago(1)).await.unwrap(), 0);
}
on_every_backend!(finished_workflows_are_pruned_with_their_artifacts_and_deliveries);

/// An ordered webhook's deliveries go one at a time in sequence order: a later one waits
/// while an earlier one is pending (waiting for a retry or in flight), and goes once that one
/// is delivered or has finally failed. A redelivered earlier delivery is pending again, so the
/// later ones still pending wait for it once more. Another webhook of the workflow, unordered,
/// and another workflow's ordered webhook do not wait.
async fn an_ordered_webhooks_deliveries_go_one_at_a_time_in_sequence_order(store: &Storage) {
    let (artifacts, outbox) = (store.artifacts(), store.outbox());
    let cid = Uuid::now_v7();
    let a = artifact(cid, "Idea");
    let ordered = |sequence| flock_models::NewDelivery {
        ordered: true,
        ..delivery(&a, sequence)
    };
    let chain: Vec<_> = (1..=4).map(ordered).collect();
    let other_webhook = flock_models::NewDelivery {
        webhook: 1,
        ..delivery(&a, 2)
    };
    let b = artifact(Uuid::now_v7(), "Idea");
    let other_workflow = flock_models::NewDelivery {
        ordered: true,
        ..delivery(&b, 1)
    };
    let mut all = chain.clone();
    all.push(other_webhook.clone());
    artifacts.publish(&a, all).await.unwrap();
    artifacts
        .publish(&b, vec![other_workflow.clone()])
        .await
        .unwrap();
    let ids = |claimed: &[flock_delivery::ClaimedDelivery]| -> HashSet<Uuid> {
        claimed.iter().map(|c| c.delivery.id).collect()
    };
    let mut at = later(now(), 1);
    let first = outbox.claim(at, 10, LEASE).await.unwrap();
    assert_eq!(
        ids(&first),
        HashSet::from([chain[0].id, other_webhook.id, other_workflow.id]),
        "the head of each ordered chain, and the unordered delivery"
    );
    let head = first.iter().find(|c| c.delivery.id == chain[0].id).unwrap();
    assert!(head.lease.ordered && head.delivery.ordered);
    assert_eq!(outbox.counts().await.unwrap().pending, 3, "the parked wait");
    // A retry of the head: the others still wait.
    outbox
        .record(&head.lease, attempt(1), Resolution::RetryAt(later(at, 1)))
        .await
        .unwrap();
    at = later(at, 1);
    let retried = outbox.claim(at, 10, LEASE).await.unwrap();
    assert_eq!(ids(&retried), HashSet::from([chain[0].id]));
    // The head fails for good: the second goes.
    outbox
        .record(
            &retried[0].lease,
            attempt(2),
            Resolution::Failed(GiveUp::Exhausted),
        )
        .await
        .unwrap();
    let second = outbox.claim(at, 10, LEASE).await.unwrap();
    assert_eq!(ids(&second), HashSet::from([chain[1].id]));
    outbox
        .record(&second[0].lease, attempt(1), Resolution::Delivered)
        .await
        .unwrap();
    let third = outbox.claim(at, 10, LEASE).await.unwrap();
    assert_eq!(ids(&third), HashSet::from([chain[2].id]));
    // The first is redelivered while the third is in flight: the fourth now waits for the
    // first too.
    outbox.redeliver(chain[0].id, at).await.unwrap();
    outbox
        .record(&third[0].lease, attempt(1), Resolution::Delivered)
        .await
        .unwrap();
    let again = outbox.claim(at, 10, LEASE).await.unwrap();
    assert_eq!(
        ids(&again),
        HashSet::from([chain[0].id]),
        "the redelivered first"
    );
    assert!(outbox.claim(at, 10, LEASE).await.unwrap().is_empty());
    outbox
        .record(&again[0].lease, attempt(3), Resolution::Delivered)
        .await
        .unwrap();
    let fourth = outbox.claim(at, 10, LEASE).await.unwrap();
    assert_eq!(ids(&fourth), HashSet::from([chain[3].id]));
    let view = outbox.delivery(chain[3].id).await.unwrap().unwrap();
    assert!(view.ordered);
    assert_eq!(view.webhook, 0);
    let listed = outbox.deliveries(cid).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|v| (v.sequence, v.webhook))
            .collect::<Vec<_>>(),
        [(1, 0), (2, 0), (2, 1), (3, 0), (4, 0)],
        "by sequence, then webhook"
    );
}
on_every_backend!(an_ordered_webhooks_deliveries_go_one_at_a_time_in_sequence_order);

/// Several artifacts published together are stored together, in order, with their
/// deliveries: an id already stored refuses the whole write.
async fn artifacts_published_together_are_stored_all_or_none(store: &Storage) {
    let (artifacts, outbox) = (store.artifacts(), store.outbox());
    let cid = Uuid::now_v7();
    let batch: Vec<_> = (0..3).map(|_| artifact(cid, "Idea")).collect();
    let deliveries: Vec<_> = (batch.iter().zip(1..))
        .map(|(a, s)| delivery(a, s))
        .collect();
    artifacts
        .publish_all(&batch, deliveries.clone())
        .await
        .unwrap();
    let page = artifacts
        .query(&ArtifactQuery::correlation(cid))
        .await
        .unwrap();
    assert_eq!(
        page.items.iter().map(|a| a.id).collect::<Vec<_>>(),
        batch.iter().map(|a| a.id).collect::<Vec<_>>()
    );
    assert_eq!(outbox.deliveries(cid).await.unwrap().len(), 3);
    // A new pair whose second artifact is already stored: neither is.
    let fresh = artifact(cid, "Idea");
    let err = artifacts
        .publish_all(
            &[fresh.clone(), batch[1].clone()],
            vec![delivery(&fresh, 4)],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Duplicate(id) if id == batch[1].id),
        "{err:?}"
    );
    assert_eq!(artifacts.get(fresh.id).await.unwrap(), None);
    assert_eq!(outbox.deliveries(cid).await.unwrap().len(), 3);
}
on_every_backend!(artifacts_published_together_are_stored_all_or_none);
