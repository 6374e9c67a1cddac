//! Deliveries per second to a loopback receiver, beside the ceiling: hyper-util's pooled client
//! (a plain client, not the dispatcher's own pool) posting the same bodies with the same
//! concurrency, bare.
//! A program that prints numbers.
//!
//! `cargo run --release -p flock-delivery --example throughput [COUNT]`

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flock_delivery::{DeliveryConfig, Dispatcher, MemoryStorage, Outbox};
use flock_models::{Artifact, ArtifactDraft, NewDelivery, Secret, TypeName, WebhookUrl};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use uuid::Uuid;

const CONCURRENCY: usize = 64;

fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(measure(count));
}

async fn measure(count: usize) {
    let received = Arc::new(AtomicUsize::new(0));
    let addr = receiver(Arc::clone(&received)).await;
    let url = format!("http://{addr}/hook");
    let signed = make_deliveries(&url, count, true);

    // Warm-up: connections, allocator, caches.
    bare(&url, &signed[..count.min(2_000)]).await;
    engine(&received, make_deliveries(&url, count.min(2_000), true)).await;

    let started = Instant::now();
    bare(&url, &signed).await;
    let ceiling = count as f64 / started.elapsed().as_secs_f64();
    let with_secret = engine(&received, signed).await;
    let without_secret = engine(&received, make_deliveries(&url, count, false)).await;

    println!("deliveries:              {count} (concurrency {CONCURRENCY})");
    println!("bare client (ceiling):   {ceiling:>9.0} requests/s");
    println!(
        "flock-delivery, signed:  {with_secret:>9.0} deliveries/s  ({:.2} of the ceiling)",
        with_secret / ceiling
    );
    println!(
        "flock-delivery, plain:   {without_secret:>9.0} deliveries/s  ({:.2} of the ceiling)",
        without_secret / ceiling
    );
}

/// Deliveries per second of a fresh dispatcher over memory storage.
async fn engine(received: &AtomicUsize, deliveries: Vec<NewDelivery>) -> f64 {
    let count = deliveries.len();
    let storage = Arc::new(MemoryStorage::new());
    let config = DeliveryConfig {
        allowed_cidrs: vec!["127.0.0.1/32".parse().expect("a CIDR")],
        concurrency: CONCURRENCY,
        ..DeliveryConfig::default()
    };
    let dispatcher = Dispatcher::new(storage.clone(), config)
        .expect("a dispatcher")
        .start();
    let before = received.load(Ordering::Relaxed);
    let started = Instant::now();
    storage.enqueue(deliveries).await.expect("enqueued");
    while received.load(Ordering::Relaxed) < before + count {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    let report = dispatcher.shutdown(Duration::from_secs(10)).await;
    assert_eq!(report.pending, 0);
    rate
}

fn make_deliveries(url: &str, count: usize, signed: bool) -> Vec<NewDelivery> {
    let url = WebhookUrl::parse(url).expect("a URL");
    let secret = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("a secret");
    let correlation_id = Uuid::now_v7();
    (1..=count as u64)
        .map(|sequence| {
            let mut payload = serde_json::Map::new();
            payload.insert("text".into(), "a typical idea of a few words".into());
            payload.insert("n".into(), sequence.into());
            let draft = ArtifactDraft::new(TypeName::new("Idea").expect("a type"), payload);
            let artifact = Artifact::new(draft, "external", correlation_id);
            NewDelivery::new(
                &artifact,
                sequence,
                url.clone(),
                signed.then(|| secret.clone()),
            )
        })
        .collect()
}

/// The ceiling: the same bodies posted by a pooled client, `CONCURRENCY` at a time.
async fn bare(url: &str, deliveries: &[NewDelivery]) {
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(CONCURRENCY)
        .build_http::<Full<Bytes>>();
    let uri: Uri = url.parse().expect("a URI");
    let bodies: Arc<Vec<Bytes>> = Arc::new(deliveries.iter().map(|d| d.body.clone()).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (client, bodies, next, uri) = (
            client.clone(),
            Arc::clone(&bodies),
            Arc::clone(&next),
            uri.clone(),
        );
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                let request = Request::post(uri.clone())
                    .header("content-type", "application/json")
                    .body(Full::new(body.clone()))
                    .expect("a request");
                let response = client.request(request).await.expect("an answer");
                let _ = response.into_body().collect().await;
            }
        });
    }
    while workers.join_next().await.is_some() {}
}

/// A receiver that reads each body and answers 200.
async fn receiver(received: Arc<AtomicUsize>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let received = Arc::clone(&received);
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let received = Arc::clone(&received);
                    async move {
                        let _ = request.into_body().collect().await;
                        received.fetch_add(1, Ordering::Relaxed);
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                            b"ok",
                        ))))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}
