//! Resident memory with many deliveries pending against a dead receiver (a closed port), under
//! the default retry policy. A program that prints numbers.
//!
//! `cargo run --release -p flock-delivery --example dead_receiver [COUNT]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use flock_delivery::{DeliveryConfig, Dispatcher, MemoryStorage, Outbox};
use flock_models::{Artifact, ArtifactDraft, NewDelivery, Secret, TypeName, WebhookUrl};
use uuid::Uuid;

fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(measure(count));
}

async fn measure(count: usize) {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("an address").port()
    };
    let url = WebhookUrl::parse(&format!("http://127.0.0.1:{port}/hook")).expect("a URL");
    let secret = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("a secret");
    println!("resident at start:        {:>6} MiB", rss_mib("VmRSS"));

    let storage = Arc::new(MemoryStorage::new());
    let config = DeliveryConfig {
        allowed_cidrs: vec!["127.0.0.1/32".parse().expect("a CIDR")],
        ..DeliveryConfig::default()
    };
    let dispatcher = Dispatcher::new(storage.clone(), config)
        .expect("a dispatcher")
        .start();
    let correlation_id = Uuid::now_v7();
    let started = Instant::now();
    for sequence in 1..=count as u64 {
        let mut payload = serde_json::Map::new();
        payload.insert("text".into(), "a typical idea of a few words".into());
        payload.insert("n".into(), sequence.into());
        let draft = ArtifactDraft::new(TypeName::new("Idea").expect("a type"), payload);
        let artifact = Artifact::new(draft, "external", correlation_id);
        let delivery = NewDelivery::new(&artifact, sequence, url.clone(), Some(secret.clone()));
        storage.enqueue(vec![delivery]).await.expect("enqueued");
    }
    println!(
        "enqueued {count} in {:.2} s; resident {:>6} MiB",
        started.elapsed().as_secs_f64(),
        rss_mib("VmRSS")
    );
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let counts = storage.counts().await.expect("counts");
        if counts.pending + counts.in_flight == 0 {
            break;
        }
    }
    println!(
        "all failed after {:.1} s; resident {:>6} MiB, peak {:>6} MiB",
        started.elapsed().as_secs_f64(),
        rss_mib("VmRSS"),
        rss_mib("VmHWM")
    );
    dispatcher.shutdown(Duration::from_secs(5)).await;
}

/// A `/proc/self/status` memory line in MiB (0 where there is none).
fn rss_mib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}
