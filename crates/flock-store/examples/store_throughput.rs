//! Deliveries per second through a durable store, end to end: artifacts published with their
//! deliveries (the transactional outbox), claimed, sent to a loopback receiver and recorded by
//! the dispatcher. A program that prints numbers.
//!
//! `cargo run --release -p flock-store --example store_throughput [STORE_URL] [COUNT]`
//!
//! Without a URL it uses an SQLite file in a fresh temporary directory. It prints two figures:
//! publishing and delivering at once (publishers and dispatcher share the machine), and
//! draining deliveries that were all enqueued first.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flock_delivery::{DeliveryConfig, Dispatcher};
use flock_models::{Artifact, ArtifactDraft, NewDelivery, Secret, TypeName, WebhookUrl};
use flock_orchestrator::ArtifactStore;
use flock_store::{Storage, StoreUrl};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use tokio::net::TcpListener;
use uuid::Uuid;

const CONCURRENCY: usize = 64;
const PUBLISHERS: usize = 32;

fn main() {
    let mut args = std::env::args().skip(1);
    let url = args.next();
    let count: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(20_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(measure(url, count));
}

async fn measure(url: Option<String>, count: usize) {
    let dir = std::env::temp_dir().join(format!("flock-throughput-{}", Uuid::now_v7()));
    let url = match url {
        Some(url) => StoreUrl::parse(&url).expect("a store URL"),
        None => {
            std::fs::create_dir_all(&dir).expect("a temporary directory");
            StoreUrl::Sqlite(dir.join("flock.db"))
        }
    };
    let received = Arc::new(AtomicUsize::new(0));
    let addr = receiver(Arc::clone(&received)).await;
    let hook = WebhookUrl::parse(&format!("http://{addr}/hook")).expect("a URL");

    let storage = Storage::open(&url).await.expect("the store opens");
    // Warm-up: connections, caches, prepared statements.
    run(&storage, &received, &hook, count.min(2_000), true).await;
    let live = run(&storage, &received, &hook, count, true).await;
    let drained = run(&storage, &received, &hook, count, false).await;
    storage.close().await;
    let _ = std::fs::remove_dir_all(&dir);

    println!("store:                           {url}");
    println!("deliveries:                      {count} (dispatcher concurrency {CONCURRENCY})");
    println!("publish and deliver at once:     {live:>9.0} deliveries/s");
    println!("deliver what was enqueued first: {drained:>9.0} deliveries/s");
}

/// Publishes `count` artifacts, each with a signed delivery, and returns deliveries per second
/// from the first publish (or, with `live` false, from the dispatcher's start) to the last
/// receipt.
async fn run(
    storage: &Storage,
    received: &AtomicUsize,
    hook: &WebhookUrl,
    count: usize,
    live: bool,
) -> f64 {
    let before = received.load(Ordering::Relaxed);
    let config = DeliveryConfig {
        allowed_cidrs: vec!["127.0.0.1/32".parse().expect("a CIDR")],
        concurrency: CONCURRENCY,
        ..DeliveryConfig::default()
    };
    let start_dispatcher = || {
        Dispatcher::new(storage.outbox(), config.clone())
            .expect("a dispatcher")
            .start()
    };
    let mut dispatcher = live.then(start_dispatcher);
    let started = Instant::now();
    publish(storage.artifacts(), hook, count).await;
    let started = if live {
        started
    } else {
        dispatcher = Some(start_dispatcher());
        Instant::now()
    };
    while received.load(Ordering::Relaxed) < before + count {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    if let Some(dispatcher) = dispatcher {
        dispatcher.shutdown(Duration::from_secs(10)).await;
    }
    // Let the last records commit before the next run counts.
    let outbox = storage.outbox();
    while outbox
        .counts()
        .await
        .map(|c| c.in_flight + c.pending)
        .unwrap_or(0)
        > 0
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    rate
}

/// `count` artifacts with one delivery each, published by [`PUBLISHERS`] tasks at once.
async fn publish(store: Arc<dyn ArtifactStore>, hook: &WebhookUrl, count: usize) {
    let secret = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("a secret");
    let next = Arc::new(AtomicUsize::new(0));
    let mut publishers = tokio::task::JoinSet::new();
    for _ in 0..PUBLISHERS {
        let (store, next, hook, secret) = (
            Arc::clone(&store),
            Arc::clone(&next),
            hook.clone(),
            secret.clone(),
        );
        publishers.spawn(async move {
            let correlation_id = Uuid::now_v7();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    break;
                }
                let mut payload = serde_json::Map::new();
                payload.insert("text".into(), "a typical idea of a few words".into());
                payload.insert("n".into(), n.into());
                let draft = ArtifactDraft::new(TypeName::new("Idea").expect("a type"), payload);
                let artifact = Artifact::new(draft, "external", correlation_id);
                let delivery: NewDelivery =
                    NewDelivery::new(&artifact, n as u64 + 1, hook.clone(), Some(secret.clone()));
                store
                    .publish(&artifact, vec![delivery])
                    .await
                    .expect("published");
            }
        });
    }
    while publishers.join_next().await.is_some() {}
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
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
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
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}
