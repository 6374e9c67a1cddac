//! Retries: the backoff schedule as a lower bound, exhaustion, connection errors, timeouts,
//! 410, redirects and `Retry-After`.

use std::time::Duration;

use flock_delivery::{DeliveryConfig, DeliveryState, ErrorKind, GiveUp, Outbox};
use flock_retry::RetryPolicy;

use crate::receiver::{Receiver, Reply};
use crate::{Harness, delivery, test_config};

fn with_retry(base: Duration, max_retries: u32) -> DeliveryConfig {
    DeliveryConfig {
        retry: RetryPolicy {
            base_delay: base,
            max_retries,
            ..RetryPolicy::default()
        },
        ..test_config()
    }
}

#[tokio::test]
async fn two_failures_then_delivered_on_the_third_attempt_no_sooner_than_scheduled() {
    let receiver = Receiver::start(vec![Reply::status(500), Reply::status(500)], Reply::ok()).await;
    let config = test_config();
    let schedule: Vec<Duration> = config.retry.delays().collect();
    assert_eq!(
        schedule[..2],
        [Duration::from_millis(100), Duration::from_millis(200)]
    );
    let harness = Harness::start(config);
    let id = harness
        .enqueue(delivery(&receiver.url("/hook"), Some("secret")))
        .await;
    let view = harness.finished(id).await;

    assert_eq!(view.state, DeliveryState::Delivered);
    let statuses: Vec<Option<u16>> = view.attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(statuses, [Some(500), Some(500), Some(200)]);
    let kinds: Vec<Option<ErrorKind>> = view.attempts.iter().map(|a| a.error_kind).collect();
    assert_eq!(
        kinds,
        [
            Some(ErrorKind::HttpStatus),
            Some(ErrorKind::HttpStatus),
            None
        ]
    );
    assert_eq!(
        view.attempts.iter().map(|a| a.number).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(view.attempts[0].error.as_deref().unwrap().contains("500"));

    let requests = receiver.requests();
    assert_eq!(requests.len(), 3);
    for (i, wait) in schedule[..2].iter().enumerate() {
        let gap = requests[i + 1].at - requests[i].at;
        assert!(
            gap >= *wait,
            "attempt {} came {gap:?} after attempt {}, sooner than the scheduled {wait:?}",
            i + 2,
            i + 1
        );
    }
    // The same webhook-id on every attempt; each attempt carries its own timestamp.
    let ids: Vec<&str> = requests
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    assert!(ids.iter().all(|i| *i == id.to_string()));
    for (request, attempt) in requests.iter().zip(&view.attempts) {
        let ts: i64 = request
            .header("webhook-timestamp")
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            ts,
            attempt.started_at.unix_timestamp(),
            "webhook-timestamp is the attempt's own time"
        );
    }
}

#[tokio::test]
async fn four_failures_end_as_failed_after_exactly_four_attempts() {
    let receiver = Receiver::start(Vec::new(), Reply::status(500)).await;
    let harness = Harness::start(with_retry(Duration::from_millis(50), 3));
    let id = harness
        .enqueue(delivery(&receiver.url("/hook"), None))
        .await;
    let view = harness.finished(id).await;

    assert_eq!(view.state, DeliveryState::Failed);
    assert_eq!(view.failure, Some(GiveUp::Exhausted));
    assert_eq!(view.attempts.len(), 4);
    assert!(view.attempts.iter().all(|a| a.status_code == Some(500)));
    assert_eq!(view.next_attempt_at, None);
    assert_eq!(receiver.requests().len(), 4);
    let counts = harness.storage.counts().await.unwrap();
    assert_eq!((counts.pending, counts.in_flight), (0, 0));
}

#[tokio::test]
async fn connection_refused_is_retried() {
    // A port that was bound and closed again: nothing listens there.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let harness = Harness::start(with_retry(Duration::from_millis(50), 2));
    let id = harness
        .enqueue(delivery(&format!("http://127.0.0.1:{port}/hook"), None))
        .await;
    let view = harness.finished(id).await;

    assert_eq!(view.state, DeliveryState::Failed);
    assert_eq!(view.failure, Some(GiveUp::Exhausted));
    assert_eq!(view.attempts.len(), 3, "retried until the policy gave up");
    for attempt in &view.attempts {
        assert_eq!(attempt.error_kind, Some(ErrorKind::Connect), "{attempt:?}");
        assert_eq!(attempt.status_code, None);
        let error = attempt.error.as_deref().unwrap();
        assert!(!error.is_empty() && error.chars().count() <= flock_delivery::MAX_ERROR_CHARS);
    }
}

#[tokio::test]
async fn a_receiver_slower_than_the_timeout_is_retried() {
    let receiver = Receiver::start(
        vec![Reply::ok().delayed(Duration::from_secs(5))],
        Reply::ok(),
    )
    .await;
    let config = DeliveryConfig {
        request_timeout: Duration::from_secs(1),
        ..with_retry(Duration::from_millis(50), 3)
    };
    let harness = Harness::start(config);
    let id = harness
        .enqueue(delivery(&receiver.url("/slow"), None))
        .await;
    let view = harness.finished(id).await;

    assert_eq!(view.state, DeliveryState::Delivered);
    assert_eq!(view.attempts[0].error_kind, Some(ErrorKind::Timeout));
    assert_eq!(view.attempts[0].status_code, None);
    assert!(view.attempts.len() >= 2);
    assert_eq!(view.attempts.last().unwrap().status_code, Some(200));
}

#[tokio::test]
async fn gone_stops_after_one_attempt() {
    let receiver = Receiver::start(vec![Reply::status(410)], Reply::ok()).await;
    let harness = Harness::start(test_config());
    let id = harness
        .enqueue(delivery(&receiver.url("/gone"), None))
        .await;
    let view = harness.finished(id).await;

    assert_eq!(view.state, DeliveryState::Failed);
    assert_eq!(view.failure, Some(GiveUp::Gone));
    assert_eq!(view.attempts.len(), 1);
    assert_eq!(view.attempts[0].status_code, Some(410));
    assert_eq!(receiver.requests().len(), 1);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let receiver = Receiver::start(
        vec![Reply::status(302).header("location", "/elsewhere")],
        Reply::ok(),
    )
    .await;
    let harness = Harness::start(test_config());
    let id = harness
        .enqueue(delivery(&receiver.url("/hook"), None))
        .await;
    let view = harness.finished(id).await;

    assert_eq!(view.state, DeliveryState::Delivered);
    assert_eq!(view.attempts[0].status_code, Some(302));
    assert_eq!(view.attempts[0].error_kind, Some(ErrorKind::HttpStatus));
    assert!(receiver.requests().iter().all(|r| r.path == "/hook"));
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let receiver = Receiver::start(
        vec![Reply::status(429).header("retry-after", "1")],
        Reply::ok(),
    )
    .await;
    let harness = Harness::start(with_retry(Duration::from_millis(50), 3));
    let id = harness
        .enqueue(delivery(&receiver.url("/busy"), None))
        .await;
    let view = harness.finished(id).await;

    assert_eq!(view.state, DeliveryState::Delivered);
    assert_eq!(view.attempts.len(), 2);
    assert_eq!(view.attempts[0].status_code, Some(429));
    let requests = receiver.requests();
    let gap = requests[1].at - requests[0].at;
    assert!(
        gap >= Duration::from_secs(1),
        "retried after {gap:?}, sooner than Retry-After"
    );
    // A second or more apart, so the attempts carry different timestamps.
    let ts: Vec<i64> = requests
        .iter()
        .map(|r| r.header("webhook-timestamp").unwrap().parse().unwrap())
        .collect();
    assert!(ts[1] > ts[0], "{ts:?}");
    assert_eq!(
        requests[0].header("webhook-id"),
        requests[1].header("webhook-id")
    );
}
