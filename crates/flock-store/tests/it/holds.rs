//! Receiver isolation's holds, on every backend (the memory outbox by the same tests): a
//! delivery its destination may not take now is held without spending an attempt, released
//! the longest held first, and failed as `destination_unavailable` once held too long.

use std::collections::HashSet;

use flock_delivery::{
    ClaimedDelivery, DeliveryState, FailedQuery, GiveUp, HeldDeliveries, HoldReason, Lease,
    OutboxCounts, OutboxError, Resolution,
};
use flock_models::{Artifact, NewDelivery, TenantId, WebhookUrl};
use flock_store::Storage;
use uuid::Uuid;

use crate::support::{LEASE, artifact, attempt, delivery, later, now, on_every_backend};

/// A delivery of `artifact`, number `sequence`, to `destination` (`scheme://host[:port]`).
fn to(destination: &str, artifact: &Artifact, sequence: u64) -> NewDelivery {
    NewDelivery {
        url: WebhookUrl::parse(&format!("{destination}/hook?token=abc")).unwrap(),
        ..delivery(artifact, sequence)
    }
}

/// The lease under which `id` was claimed.
fn lease_of(claimed: &[ClaimedDelivery], id: Uuid) -> Lease {
    claimed
        .iter()
        .find(|c| c.delivery.id == id)
        .map(|c| c.lease)
        .unwrap()
}

fn ids(claimed: &[ClaimedDelivery]) -> HashSet<Uuid> {
    claimed.iter().map(|c| c.delivery.id).collect()
}

fn tenant(name: &str) -> TenantId {
    TenantId::new(name).unwrap()
}

/// A held delivery spends no attempt, holds no lease, is neither claimed nor due, and still
/// counts as pending; a lease that is no longer current holds nothing.
async fn a_held_delivery_spends_no_attempt_and_waits(store: &Storage) {
    let outbox = store.outbox();
    let a = artifact(Uuid::now_v7(), "Idea").owned_by(tenant("acme"));
    let (held, sent) = (delivery(&a, 1), delivery(&a, 2));
    outbox
        .enqueue(vec![held.clone(), sent.clone()])
        .await
        .unwrap();
    let at = later(now(), 1);
    let claimed = outbox.claim(at, 10, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 2);
    let lease = lease_of(&claimed, held.id);

    assert_eq!(outbox.hold(&[lease], HoldReason::Capacity, at).await, Ok(1));
    let view = outbox.delivery(held.id).await.unwrap().unwrap();
    assert_eq!(view.state, DeliveryState::Pending);
    assert_eq!(view.held, Some(HoldReason::Capacity));
    assert_eq!(view.held_since, Some(at));
    assert_eq!(view.next_attempt_at, None);
    assert!(view.attempts.is_empty(), "no attempt spent");
    assert_eq!(
        outbox.counts().await.unwrap(),
        OutboxCounts {
            pending: 1,
            in_flight: 1
        },
        "held is pending, not in flight"
    );

    // Its lease is gone: holding or recording under it does nothing, as does a token this
    // store never handed out.
    assert_eq!(outbox.hold(&[lease], HoldReason::Breaker, at).await, Ok(0));
    let foreign = Lease {
        token: u64::MAX,
        ..lease_of(&claimed, sent.id)
    };
    assert_eq!(outbox.hold(&[foreign], HoldReason::Paused, at).await, Ok(0));
    assert_eq!(
        outbox
            .record(&lease, attempt(1), Resolution::Delivered)
            .await,
        Err(OutboxError::LeaseLost(held.id))
    );
    assert_eq!(
        outbox.redeliver(held.id, at).await,
        Err(OutboxError::NotRedeliverable {
            id: held.id,
            state: DeliveryState::Pending
        }),
        "a held delivery is pending"
    );
    let view = outbox.delivery(held.id).await.unwrap().unwrap();
    assert_eq!(
        view.held,
        Some(HoldReason::Capacity),
        "still held as it was"
    );
    assert!(view.attempts.is_empty());

    outbox
        .record(
            &lease_of(&claimed, sent.id),
            attempt(1),
            Resolution::Delivered,
        )
        .await
        .unwrap();
    assert_eq!(outbox.next_due().await.unwrap(), None, "nothing is due");
    assert!(
        (outbox.claim(later(at, 3600), 10, LEASE).await.unwrap()).is_empty(),
        "no claim takes a held delivery, however late"
    );
    assert_eq!(
        outbox.pending_by_tenant().await.unwrap(),
        [(tenant("acme"), 1)]
    );
    assert_eq!(outbox.hold(&[], HoldReason::Capacity, at).await, Ok(0));
}
on_every_backend!(a_held_delivery_spends_no_attempt_and_waits);

/// A release lets the longest-held of its destination's deliveries go, due at once, to be
/// claimed again with the attempt numbers they had; other destinations' stay held.
async fn a_release_lets_the_longest_held_of_its_destination_go(store: &Storage) {
    let outbox = store.outbox();
    let a = artifact(Uuid::now_v7(), "Idea");
    let (one, two, three) = (
        to("https://a.example", &a, 1),
        to("https://a.example", &a, 2),
        to("https://a.example", &a, 3),
    );
    let other = to("https://b.example:8443", &a, 4);
    let all = vec![one.clone(), two.clone(), three.clone(), other.clone()];
    outbox.enqueue(all).await.unwrap();
    let at = later(now(), 1);
    let claimed = outbox.claim(at, 10, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 4);
    // Held at different times, the newest first.
    for (d, secs) in [(&three, 3), (&one, 1), (&two, 2), (&other, 0)] {
        let lease = lease_of(&claimed, d.id);
        let held = outbox
            .hold(&[lease], HoldReason::Capacity, later(at, secs))
            .await;
        assert_eq!(held, Ok(1));
    }

    let go = later(at, 10);
    assert_eq!(outbox.release("https://a.example", 2, go).await, Ok(2));
    for d in [&one, &two] {
        let view = outbox.delivery(d.id).await.unwrap().unwrap();
        assert_eq!(
            (view.held, view.held_since, view.next_attempt_at),
            (None, None, Some(go)),
            "released: due, no longer held"
        );
    }
    for (d, secs) in [(&three, 3), (&other, 0)] {
        let view = outbox.delivery(d.id).await.unwrap().unwrap();
        assert_eq!(view.held, Some(HoldReason::Capacity));
        assert_eq!(view.held_since, Some(later(at, secs)));
    }
    let again = outbox.claim(go, 10, LEASE).await.unwrap();
    assert_eq!(ids(&again), HashSet::from([one.id, two.id]));
    assert!(
        again.iter().all(|c| (c.attempt, c.round_attempt) == (1, 1)),
        "no attempt was spent"
    );

    assert_eq!(outbox.release("https://c.example", 5, go).await, Ok(0));
    assert_eq!(outbox.release("https://a.example", 0, go).await, Ok(0));
    assert_eq!(
        outbox.release("https://b.example", 5, go).await,
        Ok(0),
        "a destination is its port too"
    );
    assert_eq!(outbox.release("https://a.example", 5, go).await, Ok(1));
    assert_eq!(
        outbox.release("https://a.example", 5, go).await,
        Ok(0),
        "released once"
    );
    let last = outbox.claim(go, 10, LEASE).await.unwrap();
    assert_eq!(ids(&last), HashSet::from([three.id]));
    assert_eq!(
        (outbox.held(None, 10).await.unwrap())
            .into_iter()
            .map(|h| (h.destination, h.held))
            .collect::<Vec<_>>(),
        [("https://b.example:8443".to_owned(), 1)]
    );
}
on_every_backend!(a_release_lets_the_longest_held_of_its_destination_go);

/// A claim past destinations leases none of their deliveries (they stay due for the next
/// claim), and with `since` none due before it.
async fn a_claim_past_a_destination_leaves_its_deliveries_due(store: &Storage) {
    let outbox = store.outbox();
    let a = artifact(Uuid::now_v7(), "Idea");
    let (a1, a2) = (
        to("https://a.example", &a, 1),
        to("https://a.example", &a, 2),
    );
    let b = to("https://b.example", &a, 3);
    let a_port = to("https://a.example:8443", &a, 4);
    let all = vec![a1.clone(), b.clone(), a2.clone(), a_port.clone()];
    outbox.enqueue(all).await.unwrap();
    let at = later(now(), 1);
    let a_only = ["https://a.example".to_owned()];

    let both = [
        "https://b.example".to_owned(),
        "https://a.example:8443".to_owned(),
    ];
    let neither = (outbox.claim_past(at, 10, LEASE, &both, None))
        .await
        .unwrap();
    assert_eq!(ids(&neither), HashSet::from([a1.id, a2.id]), "past both");
    for c in &neither {
        assert_eq!(
            outbox.hold(&[c.lease], HoldReason::Capacity, at).await,
            Ok(1)
        );
    }
    assert_eq!(outbox.release("https://a.example", 2, at).await, Ok(2));

    let past = (outbox.claim_past(at, 10, LEASE, &a_only, None))
        .await
        .unwrap();
    assert_eq!(
        ids(&past),
        HashSet::from([b.id, a_port.id]),
        "a destination is its port too"
    );
    let rest = outbox.claim(at, 10, LEASE).await.unwrap();
    assert_eq!(ids(&rest), HashSet::from([a1.id, a2.id]), "left due");

    // Due again at known times: b at 5 s, the other port at 10 s.
    for d in [&b, &a_port] {
        let lease = lease_of(&past, d.id);
        assert_eq!(outbox.hold(&[lease], HoldReason::Capacity, at).await, Ok(1));
    }
    let (b_due, port_due) = (later(at, 5), later(at, 10));
    assert_eq!(outbox.release("https://b.example", 1, b_due).await, Ok(1));
    let port = "https://a.example:8443";
    assert_eq!(outbox.release(port, 1, port_due).await, Ok(1));
    let look = later(at, 20);
    let since = Some(later(at, 7));
    let newer = (outbox.claim_past(look, 10, LEASE, &a_only, since))
        .await
        .unwrap();
    assert_eq!(
        ids(&newer),
        HashSet::from([a_port.id]),
        "none due before `since`"
    );
    let from_b = (outbox.claim_past(look, 10, LEASE, &a_only, Some(b_due)))
        .await
        .unwrap();
    assert_eq!(ids(&from_b), HashSet::from([b.id]), "`since` is inclusive");
    assert!(
        from_b.iter().all(|c| c.attempt == 1),
        "no attempt was spent"
    );
}
on_every_backend!(a_claim_past_a_destination_leaves_its_deliveries_due);

/// Deliveries held since before the cut fail as `destination_unavailable` (listed, and
/// redelivered like any failed one); newer ones stay held.
async fn deliveries_held_too_long_fail_as_destination_unavailable(store: &Storage) {
    let outbox = store.outbox();
    let acme = tenant("acme");
    let a = artifact(Uuid::now_v7(), "Idea").owned_by(acme.clone());
    let (old, new) = (
        to("https://a.example", &a, 1),
        to("https://b.example", &a, 2),
    );
    outbox
        .enqueue(vec![old.clone(), new.clone()])
        .await
        .unwrap();
    let at = later(now(), 1);
    let claimed = outbox.claim(at, 10, LEASE).await.unwrap();
    for (d, secs) in [(&old, 0), (&new, 5)] {
        let lease = lease_of(&claimed, d.id);
        let held = outbox
            .hold(&[lease], HoldReason::Breaker, later(at, secs))
            .await;
        assert_eq!(held, Ok(1));
    }

    let failed_at = later(at, 6);
    // Held since before the cut only: the cut itself is not before it.
    assert_eq!(outbox.expire_holds(at, failed_at, 10).await, Ok(0));
    assert_eq!(outbox.expire_holds(later(at, 3), failed_at, 0).await, Ok(0));
    assert_eq!(
        outbox.expire_holds(later(at, 3), failed_at, 10).await,
        Ok(1)
    );
    let view = outbox.delivery(old.id).await.unwrap().unwrap();
    assert_eq!(view.state, DeliveryState::Failed);
    assert_eq!(view.failure, Some(GiveUp::DestinationUnavailable));
    assert_eq!(view.completed_at, Some(failed_at));
    assert_eq!(
        (view.held, view.held_since, view.next_attempt_at),
        (None, None, None)
    );
    assert!(view.attempts.is_empty());
    assert_eq!(
        serde_json::to_value(&view).unwrap()["failure"],
        "destination_unavailable"
    );
    let view = outbox.delivery(new.id).await.unwrap().unwrap();
    assert_eq!(
        view.held,
        Some(HoldReason::Breaker),
        "held since after the cut"
    );
    assert_eq!(outbox.counts().await.unwrap().pending, 1);

    let listed = (outbox.failed(&FailedQuery {
        tenant: acme.clone(),
        since: at,
        until: None,
        destination: None,
        correlation_id: None,
        limit: 10,
    }))
    .await
    .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, old.id);
    assert_eq!(listed[0].failure, Some(GiveUp::DestinationUnavailable));

    // Redelivered, it is claimed again: the same delivery, body and secret.
    let again_at = later(at, 7);
    outbox.redeliver(old.id, again_at).await.unwrap();
    let again = outbox.claim(again_at, 10, LEASE).await.unwrap();
    assert_eq!(ids(&again), HashSet::from([old.id]));
    assert_eq!(*again[0].delivery, old);
    assert_eq!((again[0].attempt, again[0].round_attempt), (1, 1));
    let view = outbox.delivery(old.id).await.unwrap().unwrap();
    assert_eq!((view.state, view.failure), (DeliveryState::Pending, None));

    // One microsecond after its hold, the newer one expires too.
    let cut = later(at, 5) + time::Duration::MICROSECOND;
    assert_eq!(outbox.expire_holds(cut, failed_at, 10).await, Ok(1));
    assert_eq!(outbox.expire_holds(cut, failed_at, 10).await, Ok(0));
    assert!(outbox.held(None, 10).await.unwrap().is_empty());
}
on_every_backend!(deliveries_held_too_long_fail_as_destination_unavailable);

/// An expiry fails at most its limit of deliveries, the longest held first.
async fn an_expiry_fails_at_most_its_limit_the_longest_held_first(store: &Storage) {
    let outbox = store.outbox();
    let a = artifact(Uuid::now_v7(), "Idea");
    let deliveries: Vec<NewDelivery> = (1..=3).map(|s| to("https://a.example", &a, s)).collect();
    outbox.enqueue(deliveries.clone()).await.unwrap();
    let at = later(now(), 1);
    let claimed = outbox.claim(at, 10, LEASE).await.unwrap();
    for (d, secs) in deliveries.iter().zip([2, 0, 1]) {
        let lease = lease_of(&claimed, d.id);
        let held = outbox
            .hold(&[lease], HoldReason::Paused, later(at, secs))
            .await;
        assert_eq!(held, Ok(1));
    }
    let state = async |d: &NewDelivery| outbox.delivery(d.id).await.unwrap().unwrap().state;
    let cut = later(at, 10);
    assert_eq!(outbox.expire_holds(cut, cut, 2).await, Ok(2));
    assert_eq!(
        state(&deliveries[0]).await,
        DeliveryState::Pending,
        "held last"
    );
    assert_eq!(state(&deliveries[1]).await, DeliveryState::Failed);
    assert_eq!(state(&deliveries[2]).await, DeliveryState::Failed);
    assert_eq!(outbox.expire_holds(cut, cut, 2).await, Ok(1));
    assert_eq!(state(&deliveries[0]).await, DeliveryState::Failed);
}
on_every_backend!(an_expiry_fails_at_most_its_limit_the_longest_held_first);

/// An ordered webhook whose first delivery is held and then expires lets its second go; the
/// second waits parked (held as `ordered`) until then, which neither a release nor the
/// destinations' counts touch.
async fn an_expired_ordered_delivery_lets_the_next_of_its_webhook_go(store: &Storage) {
    let (artifacts, outbox) = (store.artifacts(), store.outbox());
    let a = artifact(Uuid::now_v7(), "Idea");
    let chain: Vec<NewDelivery> = (1..=2)
        .map(|s| NewDelivery {
            ordered: true,
            ..to("https://a.example", &a, s)
        })
        .collect();
    artifacts.publish(&a, chain.clone()).await.unwrap();
    let at = later(now(), 1);
    let claimed = outbox.claim(at, 10, LEASE).await.unwrap();
    assert_eq!(ids(&claimed), HashSet::from([chain[0].id]));
    let held = outbox
        .hold(&[claimed[0].lease], HoldReason::Capacity, at)
        .await;
    assert_eq!(held, Ok(1));
    let parked = outbox.delivery(chain[1].id).await.unwrap().unwrap();
    assert_eq!(parked.held, Some(HoldReason::Ordered));
    assert_eq!(parked.next_attempt_at, None);
    assert_eq!(
        (outbox.held(None, 10).await.unwrap())
            .into_iter()
            .map(|h| h.held)
            .collect::<Vec<_>>(),
        [1],
        "the parked one is not its destination's"
    );
    assert!(
        outbox
            .claim(later(at, 1), 10, LEASE)
            .await
            .unwrap()
            .is_empty()
    );

    let expired_at = later(at, 2);
    assert_eq!(
        outbox.expire_holds(later(at, 1), expired_at, 10).await,
        Ok(1)
    );
    let next = outbox.claim(expired_at, 10, LEASE).await.unwrap();
    assert_eq!(ids(&next), HashSet::from([chain[1].id]), "the second goes");
    let view = outbox.delivery(chain[1].id).await.unwrap().unwrap();
    assert_eq!((view.held, view.state), (None, DeliveryState::Pending));
    // The second held by its destination and the first redelivered and delivered: that
    // result does not let the second go, its destination does.
    assert_eq!(
        outbox
            .hold(&[next[0].lease], HoldReason::Capacity, expired_at)
            .await,
        Ok(1)
    );
    outbox.redeliver(chain[0].id, expired_at).await.unwrap();
    let first = outbox.claim(expired_at, 10, LEASE).await.unwrap();
    assert_eq!(ids(&first), HashSet::from([chain[0].id]));
    outbox
        .record(&first[0].lease, attempt(1), Resolution::Delivered)
        .await
        .unwrap();
    assert!(
        (outbox.claim(later(expired_at, 1), 10, LEASE).await.unwrap()).is_empty(),
        "still held by its destination"
    );
    assert_eq!(
        outbox.release("https://a.example", 10, expired_at).await,
        Ok(1)
    );
    let second = outbox.claim(later(expired_at, 1), 10, LEASE).await.unwrap();
    assert_eq!(ids(&second), HashSet::from([chain[1].id]));
    assert_eq!((second[0].attempt, second[0].round_attempt), (1, 1));
}
on_every_backend!(an_expired_ordered_delivery_lets_the_next_of_its_webhook_go);

/// `held` counts each destination's held deliveries and the oldest hold, of a tenant's
/// deliveries when asked, the destinations holding the most first (then by name), at most
/// the limit.
async fn held_counts_each_destinations_held_deliveries(store: &Storage) {
    let outbox = store.outbox();
    let acme = artifact(Uuid::now_v7(), "Idea").owned_by(tenant("acme"));
    let other = artifact(Uuid::now_v7(), "Idea").owned_by(tenant("other"));
    // (destination, artifact, held since: seconds after `at`)
    let plan = [
        ("https://a.example", &acme, 4),
        ("https://a.example", &acme, 5),
        ("https://a.example", &acme, 6),
        ("https://b.example", &acme, 1),
        ("https://b.example", &other, 0),
        ("https://b.example", &other, 2),
        ("http://c.example:8080", &other, 3),
    ];
    let deliveries: Vec<NewDelivery> = (plan.iter().zip(1..))
        .map(|((destination, artifact, _), sequence)| to(destination, artifact, sequence))
        .collect();
    outbox.enqueue(deliveries.clone()).await.unwrap();
    // Not held: one waiting for its first attempt (due after the others, so not claimed; an
    // enqueue after a claim would be leased for the dispatcher at once).
    let waiting = to("https://d.example", &acme, 99);
    outbox.enqueue(vec![waiting]).await.unwrap();
    let at = later(now(), 1);
    let claimed = outbox.claim(at, plan.len(), LEASE).await.unwrap();
    assert_eq!(claimed.len(), plan.len());
    for (d, (_, _, secs)) in deliveries.iter().zip(&plan) {
        let lease = lease_of(&claimed, d.id);
        let held = outbox
            .hold(&[lease], HoldReason::Capacity, later(at, *secs))
            .await;
        assert_eq!(held, Ok(1));
    }
    let row = |destination: &str, held, secs| HeldDeliveries {
        destination: destination.to_owned(),
        held,
        oldest: later(at, secs),
    };
    assert_eq!(
        outbox.held(None, 10).await.unwrap(),
        [
            row("https://a.example", 3, 4),
            row("https://b.example", 3, 0),
            row("http://c.example:8080", 1, 3),
        ]
    );
    assert_eq!(
        outbox.held(None, 2).await.unwrap(),
        [
            row("https://a.example", 3, 4),
            row("https://b.example", 3, 0)
        ]
    );
    assert_eq!(
        outbox.held(Some(&tenant("acme")), 10).await.unwrap(),
        [
            row("https://a.example", 3, 4),
            row("https://b.example", 1, 1)
        ]
    );
    assert_eq!(
        outbox.held(Some(&tenant("other")), 10).await.unwrap(),
        [
            row("https://b.example", 2, 0),
            row("http://c.example:8080", 1, 3)
        ]
    );
    assert!(
        outbox
            .held(Some(&tenant("nobody")), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(outbox.held(None, 0).await.unwrap().is_empty());

    let mut pending = outbox.pending_by_tenant().await.unwrap();
    pending.sort();
    assert_eq!(
        pending,
        [(tenant("acme"), 5), (tenant("other"), 3)],
        "held deliveries are pending"
    );
    assert_eq!(
        outbox.counts().await.unwrap(),
        OutboxCounts {
            pending: 8,
            in_flight: 0
        }
    );
}
on_every_backend!(held_counts_each_destinations_held_deliveries);
