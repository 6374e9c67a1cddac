//! The measurements: the ceiling of a plain client, Flock's deliveries per second through the
//! API, publish latency with and without a webhook, creation-to-delivery latency at a fixed
//! rate, and peak memory with deliveries pending. Every loop is bounded in count and time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use flock_e2e::Receiver;
use flock_models::{Artifact, ArtifactDraft, TypeName, WebhookPayload};
use flock_signing::SigningKey;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use serde_json::{Map, Value, json};
use tokio::task::JoinSet;

/// Connections (and requests in flight) of every closed-loop client here.
pub(crate) const CONNECTIONS: usize = 32;

/// The webhook secret of every body.
pub(crate) const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The artifact payload every measurement uses: a JSON object of exactly 1,024 bytes.
pub(crate) fn payload() -> Map<String, Value> {
    let empty = serde_json::to_vec(&json!({"text": ""})).map_or(0, |v| v.len());
    let mut map = Map::new();
    map.insert("text".into(), Value::String("x".repeat(1024 - empty)));
    map
}

/// The time a closed loop of `count` requests may take before the program gives up: generous
/// (200 per second), and never under a minute.
pub(crate) fn limit_for(count: usize) -> Duration {
    Duration::from_secs_f64((count as f64 / 200.0).max(60.0))
}

/// A pooled client with `connections` idle connections kept, each for at most 2 s (the server
/// closes idle connections after 5 s; reusing one just as it does fails the request).
pub(crate) fn client(connections: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(connections)
        .pool_idle_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()?)
}

/// A request body with its headers, ready to send again and again.
#[derive(Clone)]
pub(crate) struct Prepared {
    body: Bytes,
    headers: HeaderMap,
}

impl Prepared {
    /// The body.
    pub(crate) fn body(&self) -> &[u8] {
        &self.body
    }

    /// The headers.
    pub(crate) fn headers(&self) -> &HeaderMap {
        &self.headers
    }
}

/// `n` webhook bodies as Flock renders them (1 KiB payload), each with the headers of an
/// attempt, both signatures included: what the plain client posts for the ceiling.
pub(crate) fn signed_webhooks(n: usize) -> anyhow::Result<Vec<Prepared>> {
    let key = SigningKey::new(SECRET)?;
    let correlation = uuid::Uuid::now_v7();
    let timestamp = time::OffsetDateTime::now_utc();
    (1..=n as u64)
        .map(|sequence| {
            let draft = ArtifactDraft::new(TypeName::new("Idea")?, payload());
            let artifact = Artifact::new(draft, "external", correlation);
            let body = WebhookPayload::render(&artifact, sequence, timestamp);
            let id = uuid::Uuid::now_v7().to_string();
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            headers.insert(USER_AGENT, HeaderValue::from_static(flock_delivery_agent()));
            headers.insert(HeaderName::from_static("webhook-id"), id.parse()?);
            headers.insert(
                HeaderName::from_static("webhook-timestamp"),
                HeaderValue::from(timestamp.unix_timestamp()),
            );
            headers.insert(
                HeaderName::from_static("webhook-signature"),
                key.standard_signature(&id, timestamp.unix_timestamp(), &body)
                    .parse()?,
            );
            headers.insert(
                HeaderName::from_static("x-flock-signature"),
                key.flock_signature(&body).parse()?,
            );
            Ok(Prepared {
                body: Bytes::from(body),
                headers,
            })
        })
        .collect()
}

/// The `User-Agent` Flock sends.
fn flock_delivery_agent() -> &'static str {
    concat!("flock-webhooks/", env!("CARGO_PKG_VERSION"))
}

/// The body of `POST /api/v1/artifacts`: the 1 KiB payload, with or without a webhook to `url`.
pub(crate) fn publish_body(webhook: Option<&str>) -> Prepared {
    let mut body = json!({"type": "Idea", "payload": payload()});
    if let Some(url) = webhook {
        body["webhook"] = json!({"url": url, "secret": SECRET});
    }
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Prepared {
        body: Bytes::from(body.to_string()),
        headers,
    }
}

/// Posts `count` requests (cycling through `requests`) with [`CONNECTIONS`] in flight; every
/// answer must be `expect`. Returns the seconds it took.
pub(crate) async fn closed_loop(
    client: &reqwest::Client,
    url: &str,
    requests: Arc<Vec<Prepared>>,
    count: usize,
    expect: u16,
) -> anyhow::Result<f64> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + limit_for(count);
    let mut workers = JoinSet::new();
    for _ in 0..CONNECTIONS {
        let (client, url, requests, next) = (
            client.clone(),
            url.to_owned(),
            Arc::clone(&requests),
            Arc::clone(&next),
        );
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<(), anyhow::Error>(());
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "{url}: only {i} of {count} requests done in time"
                );
                let request = &requests[i % requests.len()];
                let response = client
                    .post(&url)
                    .headers(request.headers.clone())
                    .body(request.body.clone())
                    .send()
                    .await
                    .with_context(|| format!("POST {url}"))?;
                let status = response.status().as_u16();
                let _ = response.bytes().await;
                anyhow::ensure!(status == expect, "POST {url} answered {status}");
            }
        });
    }
    while let Some(joined) = workers.join_next().await {
        joined??;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Waits until the receiver has counted `target` requests, at most `limit`.
pub(crate) async fn until_counted(
    receiver: &Receiver,
    target: usize,
    limit: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while receiver.count() < target {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the receiver counted {} of {target} deliveries within {limit:?}",
            receiver.count()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// The ceiling: requests per second of a plain pooled client posting `count` signed webhook
/// bodies straight to the receiver.
pub(crate) async fn ceiling(
    client: &reqwest::Client,
    receiver: &Receiver,
    bodies: Arc<Vec<Prepared>>,
    count: usize,
) -> anyhow::Result<f64> {
    let before = receiver.count();
    let secs = closed_loop(client, &receiver.url(), bodies, count, 200).await?;
    until_counted(receiver, before + count, limit_for(count)).await?;
    Ok(count as f64 / secs)
}

/// Flock: `count` artifacts published through the API with a webhook to the receiver; the
/// deliveries per second from the first publish until the receiver has counted all of them,
/// and the publishes per second.
pub(crate) async fn flock(
    client: &reqwest::Client,
    api: &str,
    receiver: &Receiver,
    count: usize,
) -> anyhow::Result<(f64, f64)> {
    let before = receiver.count();
    let publish = Arc::new(vec![publish_body(Some(&receiver.url()))]);
    let started = Instant::now();
    let url = format!("{api}/api/v1/artifacts");
    let publish_secs = closed_loop(client, &url, publish, count, 202).await?;
    until_counted(receiver, before + count, limit_for(count)).await?;
    let secs = started.elapsed().as_secs_f64();
    Ok((count as f64 / secs, count as f64 / publish_secs))
}

/// Flock's delivery rate alone: `count` artifacts published through the API with a webhook
/// while the receiver holds its answers (so deliveries queue in the server's outbox), then
/// the deliveries per second from the receiver's release until it has counted all of them.
pub(crate) async fn drain(
    client: &reqwest::Client,
    api: &str,
    receiver: &Receiver,
    count: usize,
) -> anyhow::Result<f64> {
    let before = receiver.count();
    let publish = Arc::new(vec![publish_body(Some(&receiver.url()))]);
    let url = format!("{api}/api/v1/artifacts");
    receiver.hold();
    let published = closed_loop(client, &url, publish, count, 202).await;
    let started = Instant::now();
    receiver.release();
    published?;
    until_counted(receiver, before + count, limit_for(count)).await?;
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// Publish round trips in microseconds, one request at a time over one connection, with and
/// without a webhook interleaved, `samples` of each, back to back: deliveries run while the
/// next publishes are answered, as they would in use. Which of a pair goes first is drawn at
/// random: with a fixed pattern (with, without, without, with, ...) each delivery, which
/// starts a millisecond after its publish, kept landing on a publish of the same kind.
pub(crate) async fn publish_latency(
    api: &str,
    receiver: &Receiver,
    samples: usize,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let client = client(1)?;
    let url = format!("{api}/api/v1/artifacts");
    let with = publish_body(Some(&receiver.url()));
    let without = publish_body(None);
    let before = receiver.count();
    let deadline = Instant::now() + limit_for(samples * 2);
    let (mut with_us, mut without_us) = (Vec::new(), Vec::new());
    // Warm the connection.
    post_once(&client, &url, &without).await?;
    let mut coin = Coin::seeded();
    for i in 0..samples {
        anyhow::ensure!(
            Instant::now() < deadline,
            "publish latency: only {i} of {samples} pairs done in time"
        );
        let order = if coin.flip() {
            [true, false]
        } else {
            [false, true]
        };
        for webhook in order {
            let (request, into) = if webhook {
                (&with, &mut with_us)
            } else {
                (&without, &mut without_us)
            };
            let started = Instant::now();
            post_once(&client, &url, request).await?;
            into.push(started.elapsed().as_secs_f64() * 1e6);
        }
    }
    until_counted(receiver, before + samples, limit_for(samples)).await?;
    Ok((with_us, without_us))
}

/// Publish latency (µs, without a webhook) one at a time against two servers, in pairs whose
/// order is a coin flip: `keyed` with `Authorization: Bearer key`, `open` without a key.
pub(crate) async fn keyed_and_open_latency(
    keyed: &str,
    key: &str,
    open: &str,
    samples: usize,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let client = client(1)?;
    let keyed_url = format!("{keyed}/api/v1/artifacts");
    let open_url = format!("{open}/api/v1/artifacts");
    let plain = publish_body(None);
    let mut with_key = plain.clone();
    with_key.headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {key}").parse()?,
    );
    let deadline = Instant::now() + limit_for(samples * 2);
    let (mut keyed_us, mut open_us) = (Vec::new(), Vec::new());
    // Warm both connections (and the key's cache entry).
    post_once(&client, &keyed_url, &with_key).await?;
    post_once(&client, &open_url, &plain).await?;
    let mut coin = Coin::seeded();
    for i in 0..samples {
        anyhow::ensure!(
            Instant::now() < deadline,
            "keyed and open latency: only {i} of {samples} pairs done in time"
        );
        let order = if coin.flip() {
            [true, false]
        } else {
            [false, true]
        };
        for with in order {
            let (url, request, into) = if with {
                (&keyed_url, &with_key, &mut keyed_us)
            } else {
                (&open_url, &plain, &mut open_us)
            };
            let started = Instant::now();
            post_once(&client, url, request).await?;
            into.push(started.elapsed().as_secs_f64() * 1e6);
        }
    }
    Ok((keyed_us, open_us))
}

/// Coin flips from a xorshift generator seeded by the clock: no dependency, no pattern.
struct Coin(u64);

impl Coin {
    fn seeded() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Coin(u64::from(nanos) | 1)
    }

    fn flip(&mut self) -> bool {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 & 1 == 1
    }
}

pub(crate) async fn post_once(
    client: &reqwest::Client,
    url: &str,
    request: &Prepared,
) -> anyhow::Result<()> {
    let response = client
        .post(url)
        .headers(request.headers.clone())
        .body(request.body.clone())
        .send()
        .await?;
    let status = response.status().as_u16();
    let _ = response.bytes().await;
    anyhow::ensure!(status == 202, "publish answered {status}");
    Ok(())
}

/// What a fixed-rate run measured.
pub(crate) struct FixedRate {
    /// Creation-to-arrival latencies, in milliseconds.
    pub(crate) latencies_ms: Vec<f64>,
    /// Publishes sent per second, as achieved.
    pub(crate) sent_per_sec: f64,
}

/// Open loop: publishes at `rate` per second for `secs` seconds on a fixed schedule (each sent
/// at its time whether or not earlier ones were answered), and the latency from each artifact's
/// `created_at` to its webhook's arrival at the receiver (one wall clock, one machine).
pub(crate) async fn fixed_rate(
    client: &reqwest::Client,
    api: &str,
    receiver: &Receiver,
    rate: u32,
    secs: u32,
) -> anyhow::Result<FixedRate> {
    let count = rate as usize * secs as usize;
    let url = Arc::new(format!("{api}/api/v1/artifacts"));
    let request = Arc::new(publish_body(Some(&receiver.url())));
    let before = receiver.count();
    let _ = receiver.take_latencies_us();
    receiver.measure_latency(true);
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / rate);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sends = JoinSet::new();
    let started = Instant::now();
    for _ in 0..count {
        ticks.tick().await;
        let (client, url, request) = (client.clone(), Arc::clone(&url), Arc::clone(&request));
        sends.spawn(async move { post_once(&client, &url, &request).await });
    }
    let sent_secs = started.elapsed().as_secs_f64();
    let result = async {
        while let Some(joined) = sends.join_next().await {
            joined??;
        }
        until_counted(receiver, before + count, limit_for(count)).await
    }
    .await;
    receiver.measure_latency(false);
    result?;
    let latencies_ms = receiver
        .take_latencies_us()
        .into_iter()
        .map(|us| us as f64 / 1_000.0)
        .collect();
    Ok(FixedRate {
        latencies_ms,
        sent_per_sec: count as f64 / sent_secs,
    })
}
