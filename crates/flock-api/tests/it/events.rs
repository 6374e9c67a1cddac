//! The live event stream, read by a real HTTP client from a real server: a chain's events in
//! order, the filters, `Last-Event-ID` resume within the window (and `stream.missed` past it),
//! the heartbeat, a consumer that never reads cut off with its last event, and tenants that
//! never see each other's events.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use flock_api::config::{AuthMode, Settings};
use flock_models::Scope;
use serde_json::{Value, json};

use crate::support::{LONG, Receiver, Script, TempDir, TestApp, settings, transform_agent};

/// One frame of a stream: an event (with its id, name and JSON) or a comment.
#[derive(Debug, Clone, Default)]
pub(crate) struct Frame {
    pub(crate) id: Option<String>,
    pub(crate) event: Option<String>,
    pub(crate) data: Value,
    pub(crate) comment: Option<String>,
}

/// A reader of a `text/event-stream` answer.
pub(crate) struct Sse {
    response: reqwest::Response,
    buffer: String,
    ended: bool,
}

impl Sse {
    /// Opens `GET path` with `key` (and `Last-Event-ID` when given); panics unless it is 200.
    pub(crate) async fn open(app: &TestApp, path: &str, key: &str, last: Option<&str>) -> Sse {
        let mut request = app
            .client
            .get(app.url(path))
            .header("authorization", format!("Bearer {key}"));
        if let Some(last) = last {
            request = request.header("last-event-id", last);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Sse {
            response,
            buffer: String::new(),
            ended: false,
        }
    }

    /// The next frame within `wait`; `None` when the stream ended or nothing came in time.
    pub(crate) async fn next(&mut self, wait: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let text: String = self.buffer.drain(..end + 2).collect();
                return Some(parse_frame(&text));
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Err(_) => return None,
                Ok(Ok(Some(bytes))) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                Ok(Ok(None) | Err(_)) => self.ended = true,
            }
        }
    }

    /// The next event (comments skipped) within `wait`.
    pub(crate) async fn next_event(&mut self, wait: Duration) -> Option<Frame> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = self.next(left).await?;
            if frame.event.is_some() {
                return Some(frame);
            }
        }
    }

    /// Events until `done` holds for the list so far (failing after [`LONG`]).
    pub(crate) async fn events_until(&mut self, done: impl Fn(&[Frame]) -> bool) -> Vec<Frame> {
        let deadline = Instant::now() + LONG;
        let mut events = Vec::new();
        while !done(&events) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(frame) = self.next_event(left).await else {
                panic!("the stream ended or stalled after {events:#?}");
            };
            events.push(frame);
        }
        events
    }
}

fn parse_frame(text: &str) -> Frame {
    let mut frame = Frame::default();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix(':') {
            frame.comment = Some(comment.trim().to_owned());
        } else if let Some(id) = line.strip_prefix("id: ") {
            frame.id = Some(id.to_owned());
        } else if let Some(event) = line.strip_prefix("event: ") {
            frame.event = Some(event.to_owned());
        } else if let Some(data) = line.strip_prefix("data: ") {
            frame.data = serde_json::from_str(data).unwrap();
        }
    }
    frame
}

fn keyed(mut s: Settings) -> Settings {
    s.auth.mode = AuthMode::Keys;
    s
}

async fn publish(app: &TestApp, key: &str, body: &Value) -> String {
    let response = app
        .client
        .post(app.url("/api/v1/artifacts"))
        .header("authorization", format!("Bearer {key}"))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    body["correlation_id"].as_str().unwrap().to_owned()
}

fn kind(frame: &Frame) -> &str {
    frame.event.as_deref().unwrap_or_default()
}

fn id_of(frame: &Frame) -> u64 {
    frame.id.as_deref().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_a_three_agent_chain_arrive_in_order_and_filters_select_them() {
    let dir = TempDir::new();
    let mut s = keyed(settings());
    s.agents = vec![
        transform_agent(&dir, "planner", "Idea", "Plan", 0.0),
        transform_agent(&dir, "writer", "Plan", "Draft", 0.0),
        transform_agent(&dir, "editor", "Draft", "Final", 0.0),
    ];
    let app = TestApp::start(s).await;
    let key = app.key("acme", &[Scope::Read, Scope::Publish]).await;
    let receiver = Receiver::start(Script::default());
    let mut all = Sse::open(&app, "/api/v1/events", &key, None).await;
    let mut plans = Sse::open(
        &app,
        "/api/v1/events?kinds=artifact.published&types=Plan",
        &key,
        None,
    )
    .await;
    let mut delivered =
        Sse::open(&app, "/api/v1/events?kinds=delivery.delivered", &key, None).await;

    let correlation = publish(
        &app,
        &key,
        &json!({"type": "Idea", "payload": {"title": "t"}, "webhook": {"url": receiver.url}}),
    )
    .await;
    let mut elsewhere = Sse::open(
        &app,
        &format!("/api/v1/events?correlation_id={correlation}"),
        &key,
        None,
    )
    .await;
    let events = all
        .events_until(|events| {
            let delivered = events
                .iter()
                .filter(|e| kind(e) == "delivery.delivered")
                .count();
            let idle = events.iter().any(|e| kind(e) == "workflow.idle");
            delivered == 4 && idle
        })
        .await;
    // Ids go up by one, every event names the workflow, and the data repeats id and kind.
    for pair in events.windows(2) {
        assert_eq!(id_of(&pair[1]), id_of(&pair[0]) + 1, "{events:#?}");
    }
    for event in &events {
        assert_eq!(event.data["correlation_id"], correlation.as_str());
        assert_eq!(event.data["id"].as_str(), event.id.as_deref());
        assert_eq!(event.data["kind"].as_str(), event.event.as_deref());
    }
    let published: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| kind(e) == "artifact.published")
        .map(|e| {
            (
                e.data["artifact"]["type"].as_str().unwrap(),
                e.data["artifact"]["produced_by"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        published,
        [
            ("Idea", "external"),
            ("Plan", "planner"),
            ("Draft", "writer"),
            ("Final", "editor")
        ]
    );
    assert!(
        events
            .iter()
            .all(|e| e.data["artifact"].get("payload").is_none()),
        "events carry no payload"
    );
    // The workflow goes idle after its last artifact; each delivery is attempted, then
    // delivered, after its artifact was published.
    let place = |pred: &dyn Fn(&Frame) -> bool| events.iter().position(pred).unwrap();
    let last_published = events
        .iter()
        .rposition(|e| kind(e) == "artifact.published")
        .unwrap();
    assert!(place(&|e| kind(e) == "workflow.idle") > last_published);
    for sequence in 1..=4u64 {
        let of = |k: &'static str| {
            move |e: &Frame| kind(e) == k && e.data["delivery"]["sequence"] == sequence
        };
        let attempted = place(&of("delivery.attempted"));
        let done = place(&of("delivery.delivered"));
        assert!(attempted < done, "{events:#?}");
        let artifact = &events[done].data["delivery"]["artifact_id"];
        let published =
            place(&|e| kind(e) == "artifact.published" && e.data["artifact"]["id"] == *artifact);
        assert!(published < attempted);
        assert_eq!(events[done].data["delivery"]["state"], "delivered");
        assert_eq!(events[done].data["attempt"]["status_code"], 200);
    }

    // Filters: one kind of one type; one kind; one workflow.
    let plan = plans.next_event(LONG).await.unwrap();
    assert_eq!(kind(&plan), "artifact.published");
    assert_eq!(plan.data["artifact"]["type"], "Plan");
    let only_delivered = delivered
        .events_until(|e| e.len() == 4)
        .await
        .iter()
        .all(|e| kind(e) == "delivery.delivered");
    assert!(only_delivered);
    // A second workflow: the first one's filtered streams see none of it.
    let second = publish(&app, &key, &json!({"type": "Note", "payload": {}})).await;
    let next = all.next_event(LONG).await.unwrap();
    assert_eq!(next.data["correlation_id"], second.as_str());
    assert!(
        plans.next_event(Duration::from_millis(500)).await.is_none(),
        "a Note is no Plan"
    );
    let mut seen = Vec::new();
    while let Some(frame) = elsewhere.next_event(Duration::from_millis(500)).await {
        seen.push(frame);
    }
    assert!(
        seen.iter()
            .all(|e| e.data["correlation_id"] == correlation.as_str()),
        "{seen:#?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_resumes_without_loss_within_the_window_and_says_when_events_were_missed() {
    let mut s = keyed(settings());
    s.events.buffer = 16;
    let app = TestApp::start(s).await;
    let key = app.key("acme", &[Scope::Read, Scope::Publish]).await;
    let mut stream = Sse::open(&app, "/api/v1/events", &key, None).await;
    for n in 0..3 {
        publish(&app, &key, &json!({"type": "Note", "payload": {"n": n}})).await;
    }
    // Each publish is published, then idle: read two events and leave.
    let first = stream.events_until(|e| e.len() == 2).await;
    drop(stream);
    for n in 3..6 {
        publish(&app, &key, &json!({"type": "Note", "payload": {"n": n}})).await;
    }
    let last = first[1].id.clone().unwrap();
    let mut resumed = Sse::open(&app, "/api/v1/events", &key, Some(&last)).await;
    let rest = resumed.events_until(|e| e.len() == 10).await;
    // Nothing lost, nothing twice: ids continue right after the last one read.
    for (expected, event) in (id_of(&first[1]) + 1..).zip(&rest) {
        assert_eq!(id_of(event), expected, "{rest:#?}");
    }
    let notes = rest
        .iter()
        .filter(|e| kind(e) == "artifact.published")
        .count();
    assert_eq!(notes, 5, "the five publishes after the first");
    drop(resumed);

    // Past the window (16 events): 20 more publishes push the resume point out.
    for n in 0..10 {
        publish(&app, &key, &json!({"type": "Note", "payload": {"n": n}})).await;
    }
    let mut late = Sse::open(&app, "/api/v1/events", &key, Some(&last)).await;
    let missed = late.next_event(LONG).await.unwrap();
    assert_eq!(kind(&missed), "stream.missed", "{missed:?}");
    assert!(missed.id.is_none(), "a control event has no id");
    assert_eq!(missed.data["last_event_id"], last.as_str());
    let oldest: u64 = missed.data["oldest_kept_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let next = late.next_event(LONG).await.unwrap();
    assert_eq!(id_of(&next), oldest, "then every event still kept");
    // An id that is no number is refused, naming the header.
    let response = app
        .client
        .get(app.url("/api/v1/events"))
        .header("authorization", format!("Bearer {key}"))
        .header("last-event-id", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["field"], "Last-Event-ID", "{body}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_gets_heartbeats_and_bad_filters_are_named() {
    let mut s = keyed(settings());
    s.events.heartbeat_ms = 200;
    let app = TestApp::start(s).await;
    let key = app.key("acme", &[Scope::Read]).await;
    let mut stream = Sse::open(&app, "/api/v1/events", &key, None).await;
    let started = Instant::now();
    let mut beats = 0;
    while beats < 3 {
        let frame = stream.next(Duration::from_secs(5)).await.expect("a frame");
        if frame.comment.as_deref() == Some("heartbeat") {
            beats += 1;
        }
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(5),
        "{took:?}"
    );
    for (query, field) in [
        ("kinds=artifact.created", "kinds"),
        ("types=not%20a%20type", "types"),
        ("correlation_id=42", "correlation_id"),
        ("since=now", "since"),
    ] {
        let response = app
            .client
            .get(app.url(&format!("/api/v1/events?{query}")))
            .header("authorization", format!("Bearer {key}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 422, "{query}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["field"], field, "{body}");
    }
    app.stop().await;
}

/// The resident memory of this process, in KiB.
fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The value of the metric line that starts with `name`, 0 when absent.
async fn metric(app: &TestApp, key: &str, name: &str) -> f64 {
    let text = app
        .client
        .get(app.url("/metrics"))
        .header("authorization", format!("Bearer {key}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_never_reads_is_cut_off_with_a_last_event_and_memory_stays_bounded() {
    let mut s = keyed(settings());
    s.events.queue = 16;
    s.events.buffer = 64;
    let app = TestApp::start(s).await;
    let key = app.key("acme", &Scope::ALL).await;
    // A client that sends its request and reads nothing.
    let mut socket = TcpStream::connect(app.address).unwrap();
    write!(
        socket,
        "GET /api/v1/events HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {key}\r\n\r\n",
        app.address
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&app, &key, "flock_events_subscribers").await < 1.0 {
        assert!(Instant::now() < deadline, "the stream never opened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Publish until the hub cuts it off: the socket's buffers fill, then its queue.
    let before = resident_kib();
    let mut published = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&app, &key, "flock_events_overflows_total").await < 1.0 {
        assert!(
            published < 20_000 && Instant::now() < deadline,
            "never cut off after {published} publishes"
        );
        for _ in 0..100 {
            publish(
                &app,
                &key,
                &json!({"type": "Note", "payload": {"n": published}}),
            )
            .await;
            published += 1;
        }
    }
    assert_eq!(metric(&app, &key, "flock_events_subscribers").await, 0.0);
    // Its slot is free and nothing more is kept for it, however much more happens.
    for n in 0..2_000 {
        publish(&app, &key, &json!({"type": "Note", "payload": {"n": n}})).await;
    }
    let grown = resident_kib().saturating_sub(before);
    assert!(grown < 64 * 1024, "resident memory grew {grown} KiB");
    // When it finally reads: what was sent before the cut, then the reason, then the end.
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut text = Vec::new();
    socket.read_to_end(&mut text).unwrap();
    // (The answer is chunked: chunk sizes stand between the frames.)
    let text = String::from_utf8_lossy(&text);
    let at = text
        .find("event: stream.overflow")
        .unwrap_or_else(|| panic!("no stream.overflow in {} bytes", text.len()));
    let after = &text[at..];
    assert!(
        !after.contains("\nid: "),
        "nothing follows the reason: {after}"
    );
    assert!(
        after.trim_end().ends_with("\r\n0"),
        "then the stream ends: {after}"
    );
    let body = &text[..at];
    let events = body.matches("\nid: ").count();
    assert!(
        events < published * 2,
        "it got {events} events of {} made before the cut",
        published * 2
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_events_never_appear() {
    let mut s = keyed(settings());
    s.events.heartbeat_ms = 200;
    let app = TestApp::start(s).await;
    let acme = app.key("acme", &[Scope::Read, Scope::Publish]).await;
    let other = app.key("other", &[Scope::Read, Scope::Publish]).await;
    let receiver = Receiver::start(Script::default());
    let mut acme_stream = Sse::open(&app, "/api/v1/events", &acme, None).await;
    let mut other_stream = Sse::open(&app, "/api/v1/events", &other, None).await;
    let mut acme_ids = Vec::new();
    for n in 0..3 {
        acme_ids.push(
            publish(
                &app,
                &acme,
                &json!({"type": "Idea", "payload": {"n": n}, "webhook": {"url": receiver.url}}),
            )
            .await,
        );
    }
    let seen = acme_stream
        .events_until(|e| e.iter().filter(|e| kind(e) == "delivery.delivered").count() == 3)
        .await;
    assert!(
        seen.iter()
            .all(|e| acme_ids.contains(&e.data["correlation_id"].as_str().unwrap().to_owned()))
    );
    // The other tenant, even resuming from before any of them, sees none of acme's.
    let mut resumed = Sse::open(
        &app,
        "/api/v1/events",
        &other,
        Some(&(id_of(&seen[0]) - 1).to_string()),
    )
    .await;
    let own = publish(&app, &other, &json!({"type": "Idea", "payload": {}})).await;
    for stream in [&mut other_stream, &mut resumed] {
        let events = stream
            .events_until(|e| e.iter().any(|e| kind(e) == "workflow.idle"))
            .await;
        for event in &events {
            assert_eq!(event.data["correlation_id"], own.as_str(), "{event:?}");
        }
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_the_bound_get_503_and_every_stream_ends_when_the_server_stops() {
    let mut s = keyed(settings());
    s.events.max_subscribers = 2;
    // A client that left is noticed when its stream next writes: a heartbeat at the latest.
    s.events.heartbeat_ms = 200;
    let app = TestApp::start(s).await;
    let key = app.key("acme", &[Scope::Read]).await;
    let first = Sse::open(&app, "/api/v1/events", &key, None).await;
    let mut second = Sse::open(&app, "/api/v1/events", &key, None).await;
    let refused = app
        .client
        .get(app.url("/api/v1/events"))
        .header("authorization", format!("Bearer {key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
    // A stream that closes frees its place.
    drop(first);
    let deadline = Instant::now() + LONG;
    let mut third = loop {
        let response = app
            .client
            .get(app.url("/api/v1/events"))
            .header("authorization", format!("Bearer {key}"))
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            break Sse {
                response,
                buffer: String::new(),
                ended: false,
            };
        }
        assert!(Instant::now() < deadline, "the place was never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Stopping the server ends both open streams with `stream.closed`, without waiting for
    // them.
    let started = Instant::now();
    let stopping = tokio::spawn(app.stop());
    for stream in [&mut second, &mut third] {
        let last = stream.next_event(LONG).await.expect("a last event");
        assert_eq!(kind(&last), "stream.closed", "{last:?}");
        assert!(stream.next(LONG).await.is_none(), "then the end");
    }
    stopping.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}
