//! The client's connections: kept and used again between attempts, at most
//! `max_idle_per_host` of them kept per destination, and a connection the receiver closed while
//! it was kept never costs an attempt.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flock_delivery::{DeliveryConfig, DeliveryState};
use http_body_util::{BodyExt as _, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::{Harness, delivery, test_config};

/// Connections a receiver accepted, and how many of them are open now.
#[derive(Default)]
struct Counts {
    accepted: AtomicUsize,
    open: AtomicUsize,
    requests: AtomicUsize,
}

/// An HTTP/1.1 receiver that keeps connections open as long as the client does, answers 200
/// once `gate` gives a permit (none: at once), and counts connections.
async fn counting_receiver(gate: Option<Arc<Semaphore>>) -> (SocketAddr, Arc<Counts>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = Arc::new(Counts::default());
    let state = Arc::clone(&counts);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            state.accepted.fetch_add(1, Ordering::SeqCst);
            state.open.fetch_add(1, Ordering::SeqCst);
            let (state, gate) = (Arc::clone(&state), gate.clone());
            tokio::spawn(async move {
                let counted = Arc::clone(&state);
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let (state, gate) = (Arc::clone(&counted), gate.clone());
                    async move {
                        let _ = request.into_body().collect().await;
                        state.requests.fetch_add(1, Ordering::SeqCst);
                        if let Some(gate) = gate {
                            gate.acquire().await.unwrap().forget();
                        }
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                state.open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (addr, counts)
}

/// Waits until `what` holds (panics after 10 s).
async fn until(what: &str, mut holds: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !holds() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn one_connection_carries_attempt_after_attempt() {
    let (addr, counts) = counting_receiver(None).await;
    let harness = Harness::start(test_config());
    let url = format!("http://{addr}/hook");
    for _ in 0..5 {
        let id = harness.enqueue(delivery(&url, None)).await;
        let view = harness.finished(id).await;
        assert_eq!(view.state, DeliveryState::Delivered, "{view:?}");
    }
    assert_eq!(counts.requests.load(Ordering::SeqCst), 5);
    assert_eq!(
        counts.accepted.load(Ordering::SeqCst),
        1,
        "every attempt after the first went on the kept connection"
    );
}

#[tokio::test]
async fn no_more_than_max_idle_per_host_connections_are_kept() {
    // Six attempts held open at once need six connections; once answered, two are kept.
    let gate = Arc::new(Semaphore::new(0));
    let (addr, counts) = counting_receiver(Some(Arc::clone(&gate))).await;
    let harness = Harness::start(DeliveryConfig {
        max_idle_per_host: 2,
        ..test_config()
    });
    let url = format!("http://{addr}/hook");
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(harness.enqueue(delivery(&url, None)).await);
    }
    until("six requests held at once", || {
        counts.requests.load(Ordering::SeqCst) == 6
    })
    .await;
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 6);
    gate.add_permits(6);
    for id in ids {
        assert_eq!(harness.finished(id).await.state, DeliveryState::Delivered);
    }
    until("the client closed all but two connections", || {
        counts.open.load(Ordering::SeqCst) == 2
    })
    .await;
    // The two kept ones carry the next attempts.
    gate.add_permits(2);
    for _ in 0..2 {
        let id = harness.enqueue(delivery(&url, None)).await;
        assert_eq!(harness.finished(id).await.state, DeliveryState::Delivered);
    }
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 6);
    assert_eq!(counts.open.load(Ordering::SeqCst), 2);
}

/// A receiver that reads one request per connection, answers 200 without saying it will close
/// (as some servers and proxies do at their idle limit), then closes the connection.
async fn answer_once_receiver() -> (SocketAddr, Arc<Counts>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = Arc::new(Counts::default());
    let state = Arc::clone(&counts);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            state.accepted.fetch_add(1, Ordering::SeqCst);
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                // The head, then as many body bytes as its Content-Length says.
                let body_len = loop {
                    let Ok(n) = stream.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break end + 4 + len;
                    }
                };
                while seen.len() < body_len {
                    let Ok(n) = stream.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                }
                state.requests.fetch_add(1, Ordering::SeqCst);
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, counts)
}

#[tokio::test]
async fn a_connection_the_receiver_closed_while_kept_costs_no_attempt() {
    let (addr, counts) = answer_once_receiver().await;
    let harness = Harness::start(test_config());
    let url = format!("http://{addr}/hook");
    for n in 1..=5 {
        let id = harness.enqueue(delivery(&url, None)).await;
        let view = harness.finished(id).await;
        assert_eq!(view.state, DeliveryState::Delivered, "{view:?}");
        assert_eq!(view.attempts.len(), 1, "{view:?}");
        assert_eq!(
            counts.requests.load(Ordering::SeqCst),
            n,
            "no request twice"
        );
    }
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 5);
}
