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

/// Once the dispatcher has claimed (which tells the store its lease), a publish's deliveries
/// are written leased for this process: its next claim answers them without a claim of the
/// database, under a lease that records. Another instance on the database cannot claim them
/// until that lease runs out, as after a `kill -9` of this one.
async fn a_publish_after_a_claim_is_leased_for_this_process(place: &Place) {
    let store = place.open().await;
    let other = place.open().await;
    let (artifacts, outbox) = (store.artifacts(), store.outbox());
    assert!(outbox.claim(now(), 10, LEASE).await.unwrap().is_empty());
    let a = artifact(Uuid::now_v7(), "Idea");
    let (sent, died) = (delivery(&a, 1), delivery(&a, 2));
    artifacts.publish(&a, vec![sent.clone()]).await.unwrap();
    outbox.enqueue(vec![died.clone()]).await.unwrap();
    let counts = outbox.counts().await.unwrap();
    assert_eq!((counts.pending, counts.in_flight), (0, 2), "both leased");
    assert!(
        (other
            .outbox()
            .claim(later(now(), 1), 10, LEASE)
            .await
            .unwrap())
        .is_empty(),
        "another instance claims neither"
    );

    let claimed = outbox.claim(now(), 1, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(*claimed[0].delivery, sent, "same id, body and secret");
    assert_eq!((claimed[0].attempt, claimed[0].round_attempt), (1, 1));
    outbox
        .record(&claimed[0].lease, attempt(1), Resolution::Delivered)
        .await
        .unwrap();
    let view = outbox.delivery(sent.id).await.unwrap().unwrap();
    assert_eq!(
        (view.state, view.attempts.len()),
        (DeliveryState::Delivered, 1)
    );

    // This process never takes the second (it died): once its lease has run out, another
    // instance claims it, and its first attempt is still to come.
    let expired = later(now(), i64::try_from(LEASE.as_secs()).unwrap() + 1);
    let resumed = other.outbox().claim(expired, 10, LEASE).await.unwrap();
    assert_eq!(resumed.len(), 1);
    assert_eq!(*resumed[0].delivery, died);
    assert_eq!(resumed[0].attempt, 1);
    other.close().await;
    store.close().await;
}
on_durable_backends!(a_publish_after_a_claim_is_leased_for_this_process);

/// At most 256 deliveries wait leased for this process's dispatcher; the rest are written due,
/// for any claim (here another instance's). A delivery left waiting longer than half its lease
/// is not answered any more: it is claimed from the database once its lease has run out.
async fn deliveries_leased_for_the_dispatcher_are_bounded_and_age(place: &Place) {
    let store = place.open().await;
    let other = place.open().await;
    let outbox = store.outbox();
    assert!(outbox.claim(now(), 10, LEASE).await.unwrap().is_empty());
    let a = artifact(Uuid::now_v7(), "Idea");
    let deliveries: Vec<_> = (1..=300).map(|n| delivery(&a, n)).collect();
    for d in &deliveries {
        outbox.enqueue(vec![d.clone()]).await.unwrap();
    }
    let due = other
        .outbox()
        .claim(later(now(), 1), 1000, LEASE)
        .await
        .unwrap();
    let due: Vec<_> = due.iter().map(|c| c.delivery.id).collect();
    let beyond: Vec<_> = deliveries[256..].iter().map(|d| d.id).collect();
    assert_eq!(due, beyond, "the 44 past the bound, to any claim");
    let fresh = outbox.claim(now(), 1000, LEASE).await.unwrap();
    assert_eq!(fresh.len(), 256);

    // The room is free again: one more is leased, then left waiting past half its lease.
    let late = delivery(&a, 301);
    outbox.enqueue(vec![late.clone()]).await.unwrap();
    let half = later(now(), i64::try_from(LEASE.as_secs() / 2).unwrap() + 1);
    assert!(outbox.claim(half, 10, LEASE).await.unwrap().is_empty());
    let expired = later(now(), i64::try_from(LEASE.as_secs()).unwrap() + 1);
    // (With the 256 taken above and never recorded: their leases ran out too.)
    let again = outbox.claim(expired, 1000, LEASE).await.unwrap();
    let again: Vec<_> = again.iter().map(|c| c.delivery.id).collect();
    assert!(again.contains(&late.id), "{again:?}");
    other.close().await;
    store.close().await;
}
on_durable_backends!(deliveries_leased_for_the_dispatcher_are_bounded_and_age);

/// A store that closes with deliveries leased for its dispatcher that it never took holds them
/// for capacity, as the dispatcher holds what it claimed and could not start: the next start
/// releases them at once instead of after their lease.
async fn closing_holds_what_the_dispatcher_never_took(place: &Place) {
    let store = place.open().await;
    let outbox = store.outbox();
    assert!(outbox.claim(now(), 10, LEASE).await.unwrap().is_empty());
    let a = artifact(Uuid::now_v7(), "Idea");
    let d = delivery(&a, 1);
    outbox.enqueue(vec![d.clone()]).await.unwrap();
    store.close().await;

    let store = place.open().await;
    let view = store.outbox().delivery(d.id).await.unwrap().unwrap();
    assert_eq!(view.state, DeliveryState::Pending);
    assert_eq!(view.held, Some(flock_delivery::HoldReason::Capacity));
    let counts = store.outbox().counts().await.unwrap();
    assert_eq!((counts.pending, counts.in_flight), (1, 0));
    store.close().await;
}
on_durable_backends!(closing_holds_what_the_dispatcher_never_took);

/// A claim past a destination takes the deliveries leased for the dispatcher to other
/// destinations, and leaves that destination's for a later claim.
async fn a_claim_past_a_destination_leaves_its_leased_deliveries_waiting(place: &Place) {
    let store = place.open().await;
    let outbox = store.outbox();
    assert!(outbox.claim(now(), 10, LEASE).await.unwrap().is_empty());
    let a = artifact(Uuid::now_v7(), "Idea");
    let to = |host: &str, sequence| flock_models::NewDelivery {
        url: flock_models::WebhookUrl::parse(&format!("https://{host}/hook")).unwrap(),
        ..delivery(&a, sequence)
    };
    let (busy, other) = (to("busy.example", 1), to("other.example", 2));
    outbox.enqueue(vec![busy.clone()]).await.unwrap();
    outbox.enqueue(vec![other.clone()]).await.unwrap();
    let past = ["https://busy.example".to_owned()];
    let claimed = (outbox.claim_past(now(), 10, LEASE, &past, None).await).unwrap();
    let claimed: Vec<_> = claimed.iter().map(|c| c.delivery.id).collect();
    assert_eq!(claimed, [other.id]);
    let claimed = outbox.claim(now(), 10, LEASE).await.unwrap();
    let claimed: Vec<_> = claimed.iter().map(|c| c.delivery.id).collect();
    assert_eq!(claimed, [busy.id]);
    store.close().await;
}
on_durable_backends!(a_claim_past_a_destination_leaves_its_leased_deliveries_waiting);
