//! The CPU cost of `POST /api/v1/artifacts` in process, with and without a webhook: the same
//! `create_app` and state as the server (memory store, no agents), called through
//! `actix_web::test` without a socket, so that only the request path is timed. The two kinds
//! alternate, 1 KiB payloads; prints the mean time per publish of each kind, round by round.
//!
//! The dispatcher is not started: deliveries stay pending in the memory outbox (as many as
//! there were webhook publishes), so the webhook figure also carries the outbox's growth.
//!
//! ```sh
//! cargo run --release -p flock-api --example publish_path
//! ```

use std::time::{Duration, Instant};

use actix_web::test;
use flock_api::config::Settings;
use flock_api::create_app;
use flock_api::startup::build_state;
use flock_store::StoreUrl;
use serde_json::json;

const ROUNDS: usize = 5;
const PER_ROUND: usize = 10_000;

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let mut settings = Settings::default();
    settings.store.url = StoreUrl::Memory;
    settings.webhooks.allowed_cidrs = vec!["127.0.0.1/32".parse()?];
    let (state, _dispatcher) = build_state(&settings.check()?).await?;
    let app = test::init_service(create_app(state)).await;
    let payload = json!({ "text": "x".repeat(1_000) });
    let with = serde_json::to_vec(&json!({
        "type": "Idea",
        "payload": payload,
        "webhook": { "url": "http://127.0.0.1:9/hook", "secret": "a-secret-of-some-length" },
    }))?;
    let without = serde_json::to_vec(&json!({ "type": "Idea", "payload": payload }))?;
    for round in 1..=ROUNDS {
        let mut spent = [Duration::ZERO; 2];
        for _ in 0..PER_ROUND {
            for (kind, body) in [&with, &without].into_iter().enumerate() {
                let request = test::TestRequest::post()
                    .uri("/api/v1/artifacts")
                    .insert_header(("content-type", "application/json"))
                    .set_payload(body.clone())
                    .to_request();
                let started = Instant::now();
                let response = test::call_service(&app, request).await;
                spent[kind] += started.elapsed();
                anyhow::ensure!(response.status() == 202, "answered {}", response.status());
            }
        }
        let per = |d: Duration| d.as_secs_f64() / PER_ROUND as f64 * 1e6;
        println!(
            "round {round}: with a webhook {:.2} µs, without {:.2} µs per publish; difference {:.2} µs",
            per(spent[0]),
            per(spent[1]),
            per(spent[0]) - per(spent[1])
        );
    }
    Ok(())
}
