//! Shutdown: it stops claiming, waits for the attempt in flight, and reports what is left.

use std::sync::Arc;
use std::time::Duration;

use flock_delivery::{DeliveryConfig, DeliveryState, Outbox};
use tokio::sync::Semaphore;

use crate::receiver::{Receiver, Reply};
use crate::{Harness, delivery, test_config};

#[tokio::test]
async fn shutdown_waits_for_the_attempt_in_flight_and_reports_what_is_pending() {
    let gate = Arc::new(Semaphore::new(0));
    let receiver = Receiver::start(vec![Reply::ok().held_by(Arc::clone(&gate))], Reply::ok()).await;
    let harness = Harness::start(DeliveryConfig {
        concurrency: 1,
        ..test_config()
    });
    let first = harness
        .enqueue(delivery(&receiver.url("/held"), None))
        .await;
    receiver.wait_for(1).await;
    // The only slot is busy, so this one waits in the outbox.
    let second = harness
        .enqueue(delivery(&receiver.url("/later"), None))
        .await;

    let Harness {
        storage,
        dispatcher,
    } = harness;
    // The stop takes effect here, before the receiver is released.
    let shutdown = tokio::spawn(dispatcher.shutdown(Duration::from_secs(60)));
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert!(
        !shutdown.is_finished(),
        "shutdown returned while an attempt was in flight"
    );
    gate.add_permits(1);
    let report = shutdown.await.unwrap();

    assert_eq!(report.pending, 1);
    assert_eq!(report.in_flight, 0);
    assert!(!report.deadline_hit);
    let first = storage.delivery(first).await.unwrap().unwrap();
    assert_eq!(first.state, DeliveryState::Delivered, "{first:?}");
    let second = storage.delivery(second).await.unwrap().unwrap();
    assert_eq!(second.state, DeliveryState::Pending);
    assert!(
        second.attempts.is_empty(),
        "nothing is claimed after the stop"
    );
    assert_eq!(receiver.requests().len(), 1);
}

#[tokio::test]
async fn shutdown_gives_up_at_the_deadline_and_reports_the_attempt_in_flight() {
    let gate = Arc::new(Semaphore::new(0));
    let receiver = Receiver::start(Vec::new(), Reply::ok().held_by(Arc::clone(&gate))).await;
    let harness = Harness::start(test_config());
    harness
        .enqueue(delivery(&receiver.url("/stuck"), None))
        .await;
    receiver.wait_for(1).await;

    let report = harness
        .dispatcher
        .shutdown(Duration::from_millis(100))
        .await;
    assert!(report.deadline_hit);
    assert_eq!(report.in_flight, 1);
    assert_eq!(report.pending, 0);
    gate.add_permits(1);
}
