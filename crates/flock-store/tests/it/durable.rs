//! What only durable stores do: keep everything across a restart, a crash included, and hand
//! the work of a process that died to the next one once its leases expire.

use flock_delivery::{DeliveryState, Resolution};
use flock_orchestrator::ArtifactQuery;
use uuid::Uuid;

use crate::support::{LEASE, Place, artifact, attempt, delivery, later, now, on_durable_backends};

async fn everything_survives_a_crash_and_in_flight_work_resumes(place: &Place) {
    let cid = Uuid::now_v7();
    let first = artifact(cid, "Idea");
    let second = artifact(cid, "Shout");
    let (claimed, retrying) = {
        let store = place.open().await;
        let (artifacts, outbox) = (store.artifacts(), store.outbox());
        artifacts
            .publish(&first, vec![delivery(&first, 1)])
            .await
            .unwrap();
        artifacts
            .publish(&second, vec![delivery(&second, 2)])
            .await
            .unwrap();
        let at = later(now(), 1);
        let mut claimed = outbox.claim(at, 2, LEASE).await.unwrap();
        let retrying = claimed.pop().unwrap();
        outbox
            .record(
                &retrying.lease,
                attempt(1),
                Resolution::RetryAt(later(at, 5)),
            )
            .await
            .unwrap();
        // The process dies: no close, the claimed delivery stays in flight.
        (claimed.pop().unwrap(), retrying)
    };

    let store = place.open().await;
    let (artifacts, outbox) = (store.artifacts(), store.outbox());
    let page = artifacts
        .query(&ArtifactQuery::correlation(cid))
        .await
        .unwrap();
    assert_eq!(page.items, vec![first.clone(), second.clone()]);
    let views = outbox.deliveries(cid).await.unwrap();
    assert_eq!(views.len(), 2);
    assert!(views.iter().all(|v| v.state == DeliveryState::Pending));
    let counts = outbox.counts().await.unwrap();
    assert_eq!((counts.pending, counts.in_flight), (1, 1));

    // The retry is due at its time; the in-flight one once its lease has expired.
    let resumed = outbox
        .claim(claimed.lease.expires_at, 10, LEASE)
        .await
        .unwrap();
    let ids: Vec<Uuid> = resumed.iter().map(|c| c.delivery.id).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&claimed.delivery.id) && ids.contains(&retrying.delivery.id));
    for c in &resumed {
        let expected = if c.delivery.id == claimed.delivery.id {
            (1, &claimed)
        } else {
            (2, &retrying)
        };
        assert_eq!(c.attempt, expected.0);
        assert_eq!(
            *c.delivery, *expected.1.delivery,
            "same id, body and secret"
        );
    }
    // The dead process's lease can no longer record.
    assert!(
        outbox
            .record(&claimed.lease, attempt(1), Resolution::Delivered)
            .await
            .is_err()
    );
    store.close().await;
}
on_durable_backends!(everything_survives_a_crash_and_in_flight_work_resumes);

async fn a_closed_store_refuses_writes_and_reopens(place: &Place) {
    let store = place.open().await;
    let a = artifact(Uuid::now_v7(), "Idea");
    store.artifacts().publish(&a, Vec::new()).await.unwrap();
    store.close().await;
    store.close().await;
    let b = artifact(Uuid::now_v7(), "Idea");
    assert!(store.artifacts().publish(&b, Vec::new()).await.is_err());
    let again = place.open().await;
    assert_eq!(again.artifacts().get(a.id).await.unwrap(), Some(a));
    assert_eq!(again.artifacts().get(b.id).await.unwrap(), None);
    again.close().await;
}
on_durable_backends!(a_closed_store_refuses_writes_and_reopens);

/// A writer connection left unused goes back to its pool before the writer asks the pool for
/// one (the pool may have no other): a write after a pause answers at once.
async fn a_write_after_a_pause_answers_at_once(place: &Place) {
    let store = place.open().await;
    let outbox = store.outbox();
    let cid = Uuid::now_v7();
    for sequence in 1..=3 {
        let a = artifact(cid, "Idea");
        let started = std::time::Instant::now();
        let written = outbox.enqueue(vec![delivery(&a, sequence)]);
        tokio::time::timeout(std::time::Duration::from_secs(5), written)
            .await
            .expect("the write answers within 5 s")
            .unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // Longer than a writer keeps its connection unused.
        tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    }
    assert_eq!(outbox.deliveries(cid).await.unwrap().len(), 3);
    store.close().await;
}

on_durable_backends!(a_write_after_a_pause_answers_at_once);
