//! SIGTERM to the `flock-api` process while deliveries are in flight: the process waits for
//! them, they finish within the grace period, and it exits 0.

use flock_e2e::{Behaviour, Receiver, ServerConfig};
use serde_json::json;

use crate::{LONG, process};

const IN_FLIGHT: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_deliveries_finish_and_exits_zero() {
    let config = ServerConfig {
        shutdown_grace_ms: 60_000,
        ..ServerConfig::default()
    };
    let (_dir, mut server, api) = process(&config);
    let receiver = Receiver::start(Behaviour {
        hold: true,
        record: true,
        ..Behaviour::default()
    })
    .await
    .unwrap();
    for n in 0..IN_FLIGHT {
        api.publish(&json!({"type": "Idea", "payload": {"n": n},
                            "webhook": {"url": receiver.url(), "secret": "s"}}))
            .await
            .unwrap();
    }
    // All of them are at the receiver, which holds them: in flight.
    receiver.wait_for(IN_FLIGHT, LONG).await.unwrap();
    assert_eq!(receiver.holding(), IN_FLIGHT);

    server.terminate().unwrap();
    let server = tokio::task::spawn_blocking(move || {
        server
            .wait_for_line("letting agents and deliveries finish", LONG)
            .unwrap();
        server
    })
    .await
    .unwrap();
    let mut server = server;
    assert!(
        server.is_running(),
        "the process waits for its in-flight deliveries"
    );
    receiver.release();
    let (status, log, mut server) = tokio::task::spawn_blocking(move || {
        let status = server.wait_exit(LONG);
        let log = server.log().join("\n");
        (status, log, server)
    })
    .await
    .unwrap();
    let status = status.unwrap();
    assert!(status.success(), "exit status {status:?}; log:\n{log}");
    assert_eq!(
        receiver.answered(),
        IN_FLIGHT,
        "every delivery was answered"
    );
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(log.contains("stopped cleanly"), "{log}");
    assert!(!server.is_running());
}
