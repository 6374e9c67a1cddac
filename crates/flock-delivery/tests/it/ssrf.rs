//! The SSRF guard where the delivery client connects: refused destinations fail at once without
//! any request reaching the receiver, and names resolve through the guard. (The guard's policy
//! is tested in `flock-context`.)

use flock_delivery::{DeliveryConfig, DeliveryState, ErrorKind, GiveUp};

use crate::receiver::Receiver;
use crate::{Harness, delivery, one_attempt_config, test_config};

#[tokio::test]
async fn refused_destinations_fail_at_once_and_nothing_reaches_the_receiver() {
    let receiver = Receiver::ok().await;
    let port = receiver.port();
    let harness = Harness::start(DeliveryConfig {
        allowed_cidrs: Vec::new(),
        ..test_config()
    });
    let urls = [
        format!("http://127.0.0.1:{port}/hook"),
        format!("http://localhost:{port}/hook"),
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        "http://169.254.169.254/latest/meta-data".to_owned(),
    ];
    let mut ids = Vec::new();
    for url in &urls {
        ids.push(harness.enqueue(delivery(url, Some("secret"))).await);
    }
    for (id, url) in ids.into_iter().zip(&urls) {
        let view = harness.finished(id).await;
        assert_eq!(view.state, DeliveryState::Failed, "{url}");
        assert_eq!(view.failure, Some(GiveUp::Blocked), "{url}");
        assert_eq!(view.attempts.len(), 1, "{url}: no retries");
        let attempt = &view.attempts[0];
        assert_eq!(attempt.error_kind, Some(ErrorKind::Blocked), "{url}");
        assert_eq!(attempt.status_code, None);
        let error = attempt.error.as_deref().unwrap();
        assert!(
            error.contains("refused by the SSRF guard"),
            "{url}: {error}"
        );
        if url.contains("localhost") {
            // Refused where the client resolves the name, not before; the record names the
            // class of what it resolved to, never the address.
            assert_eq!(
                error,
                "refused by the SSRF guard: localhost resolves only to loopback addresses"
            );
        }
        for address in ["127.0.0.1", "::1", "169.254.169.254", "ffff"] {
            assert!(!error.contains(address), "{url}: {error}");
        }
    }
    assert!(
        receiver.requests().is_empty(),
        "a refused destination was reached"
    );
}

#[tokio::test]
async fn a_name_is_resolved_through_the_guard_to_its_allowed_address() {
    // `localhost` may resolve to ::1 as well; only 127.0.0.1 is allowed, and the receiver
    // listens there, so the delivery arrives through the filtered resolution.
    let receiver = Receiver::ok().await;
    let harness = Harness::start(test_config());
    let url = format!("http://localhost:{}/named", receiver.port());
    let id = harness.enqueue(delivery(&url, None)).await;
    let view = harness.finished(id).await;
    assert_eq!(view.state, DeliveryState::Delivered, "{view:?}");
    assert_eq!(view.attempts.len(), 1);
    assert_eq!(receiver.requests()[0].path, "/named");
}

#[tokio::test]
async fn failed_connections_are_recorded_by_class_without_the_address() {
    // A port that was just free: the connection is refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let harness = Harness::start(one_attempt_config());
    let id = harness
        .enqueue(delivery(&format!("http://localhost:{port}/hook"), None))
        .await;
    let view = harness.finished(id).await;
    assert_eq!(view.state, DeliveryState::Failed);
    let attempt = &view.attempts[0];
    assert_eq!(attempt.error_kind, Some(ErrorKind::Connect));
    assert_eq!(
        attempt.error.as_deref(),
        Some("could not connect: connection refused")
    );
}
