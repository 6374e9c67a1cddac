//! The server on a real socket with real receivers: webhooks per artifact, sync answers and
//! their timeout, delivery status, concurrent webhooks, idempotency, metrics and OpenAPI.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Receiver, Script, TempDir, TestApp, settings, transform_agent};

/// Idea -> Plan (planner) -> Draft (writer), as command agents.
fn chain_settings(dir: &TempDir) -> flock_api::config::Settings {
    let mut s = settings();
    s.agents = vec![
        transform_agent(dir, "planner", "Idea", "Plan", 0.0),
        transform_agent(dir, "writer", "Plan", "Draft", 0.0),
    ];
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_artifact_of_a_workflow_is_one_signed_webhook() {
    let dir = TempDir::new();
    let app = TestApp::start(chain_settings(&dir)).await;
    let receiver = Receiver::start(Script::default());
    let response = app
        .post(
            "/api/v1/artifacts",
            &json!({"type": "Idea", "payload": {"title": "ship it"},
                    "webhook": {"url": receiver.url, "secret": "s3cret"}}),
        )
        .await;
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["status"], "accepted");
    let correlation = accepted["correlation_id"].as_str().unwrap().to_owned();

    let received = receiver.wait_for(3).await;
    let stored = app
        .get_json(&format!("/api/v1/artifacts?correlation_id={correlation}"))
        .await;
    assert_eq!(stored["pagination"]["total"], 3);
    let mut sequences = Vec::new();
    for request in &received {
        request.verify("s3cret");
        assert_eq!(request.header("content-type"), "application/json");
        assert!(request.header("user-agent").starts_with("flock-webhooks/"));
        let payload = request.payload();
        assert_eq!(payload.correlation_id.to_string(), correlation);
        sequences.push(payload.sequence);
        // The body carries exactly the stored artifact.
        let artifact = app
            .get_json(&format!("/api/v1/artifacts/{}", payload.artifact.id))
            .await;
        assert_eq!(artifact["type"], json!(payload.artifact.type_name));
        assert_eq!(
            artifact["payload"],
            Value::Object(payload.artifact.payload.clone())
        );
        assert_eq!(artifact["produced_by"], json!(payload.artifact.produced_by));
        assert_eq!(
            artifact["created_at"],
            json!(flock_models::timestamp::format_micros(
                payload.artifact.created_at
            ))
        );
    }
    sequences.sort_unstable();
    assert_eq!(sequences, [1, 2, 3]);
    let by_sequence: Vec<String> = {
        let mut r = received.clone();
        r.sort_by_key(|x| x.payload().sequence);
        r.iter()
            .map(|x| x.payload().artifact.type_name.to_string())
            .collect()
    };
    assert_eq!(by_sequence, ["Idea", "Plan", "Draft"]);
    receiver.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_answers_without_waiting_for_webhooks() {
    let dir = TempDir::new();
    let app = TestApp::start(chain_settings(&dir)).await;
    // The receiver holds every delivery until released.
    let receiver = Receiver::start(Script {
        hold: true,
        ..Script::default()
    });
    let response = app
        .post(
            "/api/v1/artifacts/sync",
            &json!({"type": "Idea", "payload": {}, "webhook_url": receiver.url, "timeout": 20,
                    "filters": {"type_names": ["Plan", "Draft"]}}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["completed"], true);
    let types: Vec<&str> = answer["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["Plan", "Draft"], "filtered, in publication order");
    assert!(answer["duration_ms"].as_u64().is_some());
    // The answer came while deliveries were still held: none of them is delivered yet.
    let correlation = answer["correlation_id"].as_str().unwrap();
    let deliveries = app
        .get_json(&format!("/api/v1/correlations/{correlation}/webhooks"))
        .await;
    let states: Vec<&str> = deliveries["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["state"].as_str().unwrap())
        .collect();
    assert_eq!(states.len(), 3);
    assert!(states.iter().all(|s| *s == "pending"), "{states:?}");
    receiver.release();
    let done = app
        .deliveries_until(correlation, |d| d.iter().all(|x| x["state"] == "delivered"))
        .await;
    assert_eq!(done.len(), 3);
    receiver.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_gives_up_at_its_timeout() {
    let dir = TempDir::new();
    let mut s = settings();
    s.agents = vec![transform_agent(&dir, "sleeper", "Idea", "Plan", 3.0)];
    let app = TestApp::start(s).await;
    let answer: Value = app
        .post(
            "/api/v1/artifacts/sync",
            &json!({"type": "Idea", "payload": {}, "timeout": 1}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answer["completed"], false);
    assert!(answer["duration_ms"].as_u64().unwrap() >= 1_000, "{answer}");
    let types: Vec<&str> = answer["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["Idea"]);
    let correlation = answer["correlation_id"].as_str().unwrap();
    let status = app
        .get_json(&format!("/api/v1/correlations/{correlation}/status"))
        .await;
    assert_eq!(status["state"], "active");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_status_shows_a_receiver_recovering() {
    let app = TestApp::start(settings()).await;
    let receiver = Receiver::start(Script {
        fail_first: 2,
        ..Script::default()
    });
    let accepted: Value = app
        .post(
            "/api/v1/artifacts",
            &json!({"type": "Idea", "payload": {}, "webhook": {"url": format!("{}?token=abc", receiver.url), "secret": "topsecret"}}),
        )
        .await
        .json()
        .await
        .unwrap();
    let correlation = accepted["correlation_id"].as_str().unwrap();
    let deliveries = app
        .deliveries_until(correlation, |d| {
            d.len() == 1 && d[0]["state"] == "delivered"
        })
        .await;
    let delivery = &deliveries[0];
    assert_eq!(delivery["sequence"], 1);
    assert_eq!(delivery["url"], receiver.url, "shown without its query");
    let attempts = delivery["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    for (i, attempt) in attempts.iter().enumerate() {
        assert_eq!(attempt["number"], i + 1);
        assert!(attempt["duration_ms"].is_u64());
    }
    assert_eq!(attempts[0]["status_code"], 500);
    assert_eq!(attempts[0]["error_kind"], "http_status");
    assert_eq!(attempts[1]["status_code"], 500);
    assert_eq!(attempts[2]["status_code"], 200);
    assert!(attempts[2]["error_kind"].is_null());
    let text = serde_json::to_string(&deliveries).unwrap();
    assert!(
        !text.contains("topsecret") && !text.contains("token=abc"),
        "{text}"
    );
    // All three attempts carried the same webhook-id: the delivery's id.
    let received = receiver.wait_for(3).await;
    let ids: HashSet<&str> = received.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(
        ids.into_iter().collect::<Vec<_>>(),
        [delivery["id"].as_str().unwrap()]
    );
    receiver.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_different_webhooks_never_cross() {
    let dir = TempDir::new();
    let app = TestApp::start(chain_settings(&dir)).await;
    let receivers: Vec<Receiver> = (0..12)
        .map(|_| Receiver::start(Script::default()))
        .collect();
    let publishes = receivers.iter().enumerate().map(|(i, receiver)| {
        let body = json!({"type": "Idea", "payload": {"n": i},
                          "webhook": {"url": receiver.url, "secret": format!("secret-{i}")}});
        let app = &app;
        async move {
            let accepted: Value = app
                .post("/api/v1/artifacts", &body)
                .await
                .json()
                .await
                .unwrap();
            accepted["correlation_id"].as_str().unwrap().to_owned()
        }
    });
    let correlations = futures_util::future::join_all(publishes).await;
    for (i, (receiver, correlation)) in receivers.iter().zip(&correlations).enumerate() {
        let received = receiver.wait_for(3).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let received_now = receiver.received();
        assert_eq!(
            received_now.len(),
            3,
            "receiver {i} got exactly its workflow's three"
        );
        let mut sequences = BTreeSet::new();
        for request in &received {
            request.verify(&format!("secret-{i}"));
            let payload = request.payload();
            assert_eq!(&payload.correlation_id.to_string(), correlation);
            sequences.insert(payload.sequence);
        }
        assert_eq!(sequences.into_iter().collect::<Vec<_>>(), [1, 2, 3]);
    }
    for receiver in receivers {
        receiver.stop().await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_replay_the_first_answer() {
    let app = TestApp::start(settings()).await;
    let body = json!({"type": "Once", "payload": {"n": 1}});
    let send = |key: &'static str, body: Value| {
        let app = &app;
        async move {
            app.client
                .post(app.url("/api/v1/artifacts"))
                .header("X-Idempotency-Key", key)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let first = send("key-1", body.clone()).await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let again = send("key-1", body.clone()).await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again, first, "same answer, same correlation id");
    let other = send("key-1", json!({"type": "Once", "payload": {"n": 2}})).await;
    assert_eq!(other.status(), 422);
    let other: Value = other.json().await.unwrap();
    assert_eq!(other["error"]["code"], "idempotency_key_reused");

    // Ten copies at once: one workflow. A copy that arrives while the first is still being
    // answered gets 409 `in_progress` and, retried as its Retry-After says, the first answer.
    let copy = || async {
        for _ in 0..200 {
            let answer = send("key-2", json!({"type": "Twice", "payload": {}})).await;
            if answer.status() == 409 {
                let value: Value = answer.json().await.unwrap();
                assert_eq!(value["error"]["code"], "in_progress", "{value}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            return answer;
        }
        panic!("still in progress after 200 tries");
    };
    let answers = futures_util::future::join_all((0..10).map(|_| copy())).await;
    let mut correlations = HashSet::new();
    for answer in answers {
        assert_eq!(answer.status(), 202);
        let value: Value = answer.json().await.unwrap();
        correlations.insert(value["correlation_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(correlations.len(), 1);
    let listed = app.get_json("/api/v1/artifacts?type=Twice").await;
    assert_eq!(listed["pagination"]["total"], 1, "published once");
    let listed = app.get_json("/api/v1/artifacts?type=Once").await;
    assert_eq!(listed["pagination"]["total"], 1, "published once");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_filter_and_paginate_and_agents_are_listed() {
    let dir = TempDir::new();
    let app = TestApp::start(chain_settings(&dir)).await;
    let mut correlations = Vec::new();
    for i in 0..3 {
        let answer: Value = app
            .post(
                "/api/v1/artifacts/sync",
                &json!({"type": "Idea", "payload": {"i": i}, "tags": ["batch"]}),
            )
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(answer["completed"], true);
        correlations.push(answer["correlation_id"].as_str().unwrap().to_owned());
    }
    let page = app
        .get_json("/api/v1/artifacts?type=Plan,Draft&limit=4&offset=1")
        .await;
    let cursor = page["pagination"]["next_cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        page["pagination"],
        json!({"limit": 4, "offset": 1, "total": 6, "total_exact": true, "next_cursor": cursor})
    );
    assert_eq!(page["items"].as_array().unwrap().len(), 4);
    // The cursor goes on where that page ended: the sixth and last match.
    let rest = app
        .get_json(&format!(
            "/api/v1/artifacts?type=Plan,Draft&limit=4&cursor={cursor}"
        ))
        .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1, "{rest}");
    assert_eq!(rest["pagination"]["next_cursor"], Value::Null, "{rest}");
    let all = app.get_json("/api/v1/artifacts?type=Plan,Draft").await;
    assert_eq!(rest["items"][0], all["items"][5]);
    let by_agent = app.get_json("/api/v1/artifacts?produced_by=writer").await;
    assert_eq!(by_agent["pagination"]["total"], 3);
    let tagged = app.get_json("/api/v1/artifacts?tag=batch").await;
    assert_eq!(tagged["pagination"]["total"], 3);
    let generated = app
        .get_json(&format!(
            "/api/v1/artifacts?tag=generated&correlation_id={}",
            correlations[0]
        ))
        .await;
    assert_eq!(generated["pagination"]["total"], 2);
    let future = app
        .get_json("/api/v1/artifacts?from=2999-01-01T00:00:00Z")
        .await;
    assert_eq!(future["pagination"]["total"], 0);

    let status = app
        .get_json(&format!("/api/v1/correlations/{}/status", correlations[1]))
        .await;
    assert_eq!(status["state"], "completed");
    assert_eq!(status["artifact_count"], 3);
    assert_eq!(status["error_count"], 0);

    let agents = app.get_json("/api/v1/agents").await;
    let names: Vec<&str> = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["planner", "writer"]);
    assert_eq!(agents["agents"][0]["consumes"], json!(["Idea"]));
    assert_eq!(agents["agents"][0]["publishes"], json!(["Plan"]));
    assert_eq!(agents["agents"][0]["kind"], "command");

    let health = app.get_json("/health").await;
    assert_eq!(
        health,
        json!({"status": "ok"}),
        "health says ok and nothing else"
    );
    app.stop().await;
}

/// Prometheus text: `# HELP`/`# TYPE` lines and `name{labels} value` samples.
fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix('#') {
            assert!(
                comment.starts_with(" HELP ") || comment.starts_with(" TYPE "),
                "{line}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name: {line}"
        );
        if series.contains('{') {
            assert!(series.ends_with('}'), "unterminated labels: {line}");
        }
        samples.push((series.to_owned(), value));
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_text_parses_and_counts_deliveries() {
    let dir = TempDir::new();
    let app = TestApp::start(chain_settings(&dir)).await;
    let receiver = Receiver::start(Script {
        fail_first: 1,
        ..Script::default()
    });
    let answer: Value = app
        .post(
            "/api/v1/artifacts",
            &json!({"type": "Idea", "payload": {}, "webhook_url": receiver.url}),
        )
        .await
        .json()
        .await
        .unwrap();
    let correlation = answer["correlation_id"].as_str().unwrap();
    app.deliveries_until(correlation, |d| {
        d.len() == 3 && d.iter().all(|x| x["state"] == "delivered")
    })
    .await;
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let samples = parse_metrics(&response.text().await.unwrap());
    let value = |prefix: &str| -> f64 {
        samples
            .iter()
            .filter(|(s, _)| s.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    };
    // Metrics are per process and tests share it: lower bounds only.
    assert!(value("flock_webhook_deliveries_total{outcome=\"delivered\"}") >= 3.0);
    assert!(value("flock_webhook_attempts_total") >= 4.0);
    assert!(value("flock_webhook_delivery_latency_seconds_count") >= 3.0);
    assert!(value("flock_artifacts_published_total") >= 3.0);
    assert!(value("flock_agent_runs_total{agent=\"planner\"") >= 1.0);
    assert!(value("flock_http_requests_total") >= 1.0);
    for gauge in [
        "flock_webhook_deliveries_pending",
        "flock_webhook_deliveries_in_flight",
    ] {
        assert!(
            samples.iter().any(|(s, _)| s.starts_with(gauge)),
            "{gauge} missing"
        );
    }
    receiver.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_lists_every_route() {
    let app = TestApp::start(settings()).await;
    let doc = app.get_json("/api/v1/openapi.json").await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    let routes = [
        ("post", "/api/v1/artifacts"),
        ("get", "/api/v1/artifacts"),
        ("post", "/api/v1/artifacts/sync"),
        ("post", "/api/v1/artifacts/batch"),
        ("get", "/api/v1/artifacts/{id}"),
        ("get", "/api/v1/agents"),
        ("get", "/api/v1/correlations/{id}/status"),
        ("get", "/api/v1/correlations/{id}/webhooks"),
        ("post", "/api/v1/webhooks/deliveries/{id}/redeliver"),
        ("get", "/health"),
        ("get", "/metrics"),
        ("get", "/api/v1/openapi.json"),
        ("get", "/api/v1/types"),
        ("post", "/api/v1/keys"),
        ("get", "/api/v1/keys"),
        ("delete", "/api/v1/keys/{id}"),
        ("post", "/api/v1/webhook-secret/rotate"),
        ("get", "/api/v1/webhooks/deliveries/failed"),
        ("post", "/api/v1/webhooks/deliveries/redeliver"),
        ("get", "/api/v1/webhooks/destinations"),
        ("get", "/api/v1/events"),
        ("get", "/"),
        ("get", "/ui"),
        ("get", "/ui/assets/{name}"),
    ];
    let paths = doc["paths"].as_object().unwrap();
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(
        documented,
        routes.len(),
        "{:?}",
        paths.keys().collect::<Vec<_>>()
    );
    let id = uuid::Uuid::now_v7();
    for (method, path) in routes {
        assert!(
            paths[path][method].is_object(),
            "{method} {path} is not documented"
        );
        // And every documented route exists: whatever it answers, it is not "no route".
        let real = path
            .replace("{id}", &id.to_string())
            .replace("{name}", "app.js");
        let response = app
            .client
            .request(method.to_uppercase().parse().unwrap(), app.url(&real))
            .send()
            .await
            .unwrap();
        if path == "/api/v1/events" {
            // A stream that goes on: its head says it is there.
            assert_eq!(response.status(), 200);
            continue;
        }
        let text = response.text().await.unwrap();
        assert!(!text.contains("no route for"), "{method} {path}: {text}");
    }
    for schema in [
        "PublishRequest",
        "SyncPublishRequest",
        "Artifact",
        "Delivery",
        "ErrorBody",
        "CorrelationStatus",
        "Types",
        "DeclaredType",
        "CreateKeyRequest",
        "CreatedApiKey",
        "ApiKeys",
        "RotatedWebhookSecret",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "schema {schema} missing"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invented_methods_and_paths_add_no_metric_series() {
    let app = TestApp::start(settings()).await;
    let http_series = |text: &str| -> BTreeSet<String> {
        parse_metrics(text)
            .into_iter()
            .map(|(series, _)| series)
            .filter(|series| series.starts_with("flock_http_"))
            .collect()
    };
    let invent = |i: usize| reqwest::Method::from_bytes(format!("INVENTED{i}").as_bytes()).unwrap();
    // One invented method on a route and one on no route create the series they fall in.
    for (i, path) in [(0, "/api/v1/artifacts"), (1, "/no/route/0")] {
        let answer = app
            .client
            .request(invent(i), app.url(path))
            .send()
            .await
            .unwrap();
        assert!([404, 405].contains(&answer.status().as_u16()), "{path}");
    }
    let metrics = |app: &TestApp| {
        let request = app.client.get(app.url("/metrics"));
        async move { request.send().await.unwrap().text().await.unwrap() }
    };
    // Reading /metrics counts itself: read it once so its series exist too.
    metrics(&app).await;
    let before = http_series(&metrics(&app).await);
    assert!(
        before.iter().any(|s| s.contains("method=\"other\"")),
        "invented methods are labelled other: {before:#?}"
    );
    // 10,000 more distinct methods, half on a route and half on distinct paths that name none.
    for i in 2..10_002 {
        let path = if i % 2 == 0 {
            "/api/v1/artifacts".to_owned()
        } else {
            format!("/no/route/{i}")
        };
        let answer = app
            .client
            .request(invent(i), app.url(&path))
            .send()
            .await
            .unwrap();
        assert!([404, 405].contains(&answer.status().as_u16()), "{path}");
    }
    let after = http_series(&metrics(&app).await);
    assert_eq!(before, after, "invented methods and paths added series");
    assert!(
        after
            .iter()
            .all(|s| !s.contains("INVENTED") && !s.contains("/no/route"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_is_cut_off_at_the_request_timeout_while_others_are_served() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = settings();
    s.server.request_timeout_ms = 1_500;
    let app = TestApp::start(s).await;
    let mut slow = tokio::net::TcpStream::connect(app.address).await.unwrap();
    slow.write_all(
        b"POST /api/v1/artifacts HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n",
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    // One byte a second, for at most 10 s; meanwhile the server serves others.
    let trickle = async {
        for _ in 0..10 {
            if slow.write_all(b" ").await.is_err() {
                break;
            }
            let health = app.get("/health").await;
            assert_eq!(health.status(), 200, "others are served meanwhile");
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut probe = [0u8; 1];
            // Stop trickling once the server has answered.
            if let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_millis(1), slow.peek(&mut probe)).await
            {
                break;
            }
        }
    };
    trickle.await;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .unwrap();
    let elapsed = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");
    assert!(elapsed >= Duration::from_millis(1_400), "{elapsed:?}");
    // Nothing was published.
    let listed = app.get_json("/api/v1/artifacts").await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 0, "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_maximum_wait_until_one_closes() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = settings();
    s.server.workers = Some(1);
    s.server.max_connections = 2;
    let app = TestApp::start(s).await;
    const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    async fn answered(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 512];
        matches!(
            tokio::time::timeout(within, stream.read(&mut buf)).await,
            Ok(Ok(n)) if n > 0 && buf.starts_with(b"HTTP/1.1 200")
        )
    }
    // Two kept-alive connections fill the server.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(app.address).await.unwrap();
        stream.write_all(HEALTH).await.unwrap();
        assert!(answered(&mut stream, Duration::from_secs(10)).await);
        held.push(stream);
    }
    // A third is accepted by the kernel but not served while they stay open...
    let mut third = tokio::net::TcpStream::connect(app.address).await.unwrap();
    third.write_all(HEALTH).await.unwrap();
    assert!(!answered(&mut third, Duration::from_millis(700)).await);
    // ...and is served once one of them closes.
    drop(held.pop());
    assert!(answered(&mut third, Duration::from_secs(10)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_run_queue_refuses_publishes_with_503_until_it_drains() {
    let dir = TempDir::new();
    let mut s = settings();
    s.agents = vec![transform_agent(&dir, "planner", "Idea", "Plan", 0.4)];
    s.orchestrator.max_concurrent_runs = 1;
    s.orchestrator.max_queued_runs = 3;
    let app = TestApp::start(s).await;
    let receiver = Receiver::start(Script::default());
    let publish = |n: usize| {
        let body = json!({"type": "Idea", "payload": {"n": n},
                          "webhook": {"url": receiver.url, "secret": "s3cret"}});
        let app = &app;
        async move { app.post("/api/v1/artifacts", &body).await }
    };
    let mut accepted = Vec::new();
    let mut refused = None;
    // One run takes the slot and three wait: a publish within the next 20 is refused.
    for n in 0..20 {
        let response = publish(n).await;
        match response.status().as_u16() {
            202 => {
                let body: Value = response.json().await.unwrap();
                accepted.push(body["correlation_id"].as_str().unwrap().to_owned());
            }
            503 => {
                refused = Some(response);
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    let refused = refused.expect("a publish was refused while the queue was full");
    assert!(accepted.len() >= 3, "{accepted:?}");
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
    // Nothing of the refused publish was stored: only the accepted Ideas (and their Plans).
    let listed = app.get_json("/api/v1/artifacts?type=Idea").await;
    assert_eq!(listed["pagination"]["total"], accepted.len(), "{listed}");
    // Once the queue drains, publishes are accepted again.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let again = loop {
        tokio::time::sleep(Duration::from_secs(retry_after)).await;
        let response = publish(100).await;
        if response.status() == 202 {
            let body: Value = response.json().await.unwrap();
            break body["correlation_id"].as_str().unwrap().to_owned();
        }
        assert_eq!(response.status(), 503);
        assert!(
            std::time::Instant::now() < deadline,
            "the queue never drained"
        );
    };
    accepted.push(again);
    // Nothing accepted is lost: every accepted workflow's Idea and Plan are delivered.
    for correlation in &accepted {
        app.deliveries_until(correlation, |d| {
            d.len() == 2 && d.iter().all(|x| x["state"] == "delivered")
        })
        .await;
    }
    receiver.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_past_the_rate_limit_gets_429_then_is_served_after_retry_after() {
    let mut s = settings();
    s.limits.requests_per_sec = Some(2);
    s.limits.burst = Some(2);
    let app = TestApp::start(s).await;
    let receiver = Receiver::start(Script::default());
    let body = json!({"type": "Idea", "payload": {}, "webhook": {"url": receiver.url, "secret": "s3cret"}});
    let mut accepted = Vec::new();
    let mut refused = None;
    // The burst is 2: within 10 quick publishes one is refused.
    for _ in 0..10 {
        let response = app.post("/api/v1/artifacts", &body).await;
        if response.status() == 429 {
            refused = Some(response);
            break;
        }
        assert_eq!(response.status(), 202);
        let answer: Value = response.json().await.unwrap();
        accepted.push(answer["correlation_id"].as_str().unwrap().to_owned());
    }
    let refused = refused.expect("a publish past the burst was refused");
    assert!((2..=3).contains(&accepted.len()), "{accepted:?}");
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let answer: Value = refused.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "too_many_requests", "{answer}");
    // Health is never limited.
    assert_eq!(app.get("/health").await.status(), 200);
    // After waiting as asked, the caller is served again.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let response = app.post("/api/v1/artifacts", &body).await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    accepted.push(answer["correlation_id"].as_str().unwrap().to_owned());
    // Nothing accepted is lost: each accepted workflow's Idea arrives, and nothing else.
    let received: BTreeSet<String> = receiver
        .wait_for(accepted.len())
        .await
        .iter()
        .map(|r| r.payload().correlation_id.to_string())
        .collect();
    assert_eq!(received, accepted.iter().cloned().collect::<BTreeSet<_>>());
    receiver.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_pagination_walks_50_000_artifacts_with_no_duplicate_and_no_gap() {
    const COUNT: usize = 50_000;
    const WORKERS: usize = 16;
    let app = TestApp::start(settings()).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    // Published by 16 clients at once, so publications of different clients interleave.
    let mut clients = Vec::new();
    for worker in 0..WORKERS {
        let (client, url) = (app.client.clone(), app.url("/api/v1/artifacts"));
        clients.push(tokio::spawn(async move {
            let mut accepted = Vec::new();
            for n in (worker..COUNT).step_by(WORKERS) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "publishing took too long"
                );
                let answer = client
                    .post(&url)
                    .json(&json!({"type": "Idea", "payload": {"n": n}}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(answer.status(), 202);
                let body: Value = answer.json().await.unwrap();
                accepted.push(body["correlation_id"].as_str().unwrap().to_owned());
            }
            accepted
        }));
    }
    let mut accepted = HashSet::new();
    for client in clients {
        accepted.extend(client.await.unwrap());
    }
    assert_eq!(accepted.len(), COUNT);

    let mut walked: Vec<String> = Vec::with_capacity(COUNT);
    let mut path = "/api/v1/artifacts?limit=500".to_owned();
    for _ in 0..=COUNT / 500 + 1 {
        let page = app.get_json(&path).await;
        assert_eq!(page["pagination"]["total"], 10_000, "counted up to the cap");
        assert_eq!(page["pagination"]["total_exact"], false);
        walked.extend(
            (page["items"].as_array().unwrap().iter())
                .map(|a| a["correlation_id"].as_str().unwrap().to_owned()),
        );
        match page["pagination"]["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/artifacts?limit=500&cursor={cursor}"),
            None => break,
        }
    }
    let distinct: HashSet<String> = walked.iter().cloned().collect();
    assert_eq!(walked.len(), COUNT, "no duplicate");
    assert_eq!(
        distinct, accepted,
        "no gap: every accepted publish is walked"
    );

    // Offsets stop at 10,000 and point at the cursor.
    let answer = app.get("/api/v1/artifacts?offset=10000&limit=1").await;
    assert_eq!(answer.status(), 200);
    let answer = app.get("/api/v1/artifacts?offset=10001").await;
    assert_eq!(answer.status(), 422);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"]["field"], "offset", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cursor"),
        "{body}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_past_the_pending_quotas_get_429_until_deliveries_drain() {
    let receiver = Receiver::start(Script {
        hold: true,
        ..Script::default()
    });
    let mut s = settings();
    s.auth.mode = flock_api::config::AuthMode::Keys;
    s.webhooks.max_pending_per_tenant = 5;
    s.webhooks.max_pending = 8;
    let app = TestApp::start(s).await;
    let a = app.key("tenant-a", &flock_models::Scope::ALL).await;
    let b = app.key("tenant-b", &flock_models::Scope::ALL).await;
    let publish = |key: &str, webhook: bool| {
        let mut body = json!({"type": "Idea", "payload": {}});
        if webhook {
            body["webhook"] = json!({"url": receiver.url});
        }
        app.client
            .post(app.url("/api/v1/artifacts"))
            .header("authorization", format!("Bearer {key}"))
            .json(&body)
            .send()
    };
    let accepted = |answer: Value| answer["correlation_id"].as_str().unwrap().to_owned();
    let mut delivered_later = HashSet::new();
    for _ in 0..5 {
        let answer = publish(&a, true).await.unwrap();
        assert_eq!(answer.status(), 202);
        delivered_later.insert(accepted(answer.json().await.unwrap()));
    }
    // The tenant's sixth is refused, naming its limit; one without a webhook is not counted.
    let refused = publish(&a, true).await.unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(
        body["error"]["code"], "too_many_pending_deliveries",
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_pending_per_tenant")
    );
    assert_eq!(publish(&a, false).await.unwrap().status(), 202);
    // Another tenant fills the server's limit, then is refused by it.
    for _ in 0..3 {
        let answer = publish(&b, true).await.unwrap();
        assert_eq!(answer.status(), 202);
        delivered_later.insert(accepted(answer.json().await.unwrap()));
    }
    let refused = publish(&b, true).await.unwrap();
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("webhooks.max_pending"),
        "{body}"
    );

    // Once the receiver answers, the deliveries drain and publishes are accepted again.
    receiver.release();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let answer = publish(&a, true).await.unwrap();
        if answer.status() == 202 {
            delivered_later.insert(accepted(answer.json().await.unwrap()));
            break;
        }
        assert_eq!(answer.status(), 429);
        assert!(
            std::time::Instant::now() < deadline,
            "still refused after the drain"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Nothing accepted was lost: every accepted publish with a webhook was delivered.
    let received = receiver.wait_for(delivered_later.len()).await;
    let correlations: HashSet<String> = (received.iter())
        .map(|r| r.payload().correlation_id.to_string())
        .collect();
    assert_eq!(correlations, delivered_later);
    app.stop().await;
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_with_types_gets_only_those_artifacts_numbered_in_workflow_order() {
    let dir = TempDir::new();
    let app = TestApp::start(chain_settings(&dir)).await;
    let filtered = Receiver::start(Script::default());
    let everything = Receiver::start(Script::default());
    let publish = |url: &str, types: Option<Value>| {
        let mut webhook = json!({"url": url, "secret": "s3cret"});
        if let Some(types) = types {
            webhook["types"] = types;
        }
        let body = json!({"type": "Idea", "payload": {}, "webhook": webhook, "timeout": 20});
        let app = &app;
        async move {
            let answer: Value = app
                .post("/api/v1/artifacts/sync", &body)
                .await
                .json()
                .await
                .unwrap();
            assert_eq!(answer["completed"], true, "{answer}");
            answer["correlation_id"].as_str().unwrap().to_owned()
        }
    };
    let only_drafts = publish(&filtered.url, Some(json!(["Draft", "Unknown"]))).await;
    publish(&everything.url, None).await;
    // The unfiltered webhook gets all three; the filtered one the Draft alone, numbered 3.
    let all = everything.wait_for(3).await;
    let mut sequences: Vec<u64> = all.iter().map(|r| r.payload().sequence).collect();
    sequences.sort_unstable();
    assert_eq!(sequences, [1, 2, 3]);
    let drafts = filtered.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(filtered.received().len(), 1, "only the Draft is delivered");
    let draft = drafts[0].payload();
    assert_eq!(
        (draft.artifact.type_name.as_str(), draft.sequence),
        ("Draft", 3)
    );
    drafts[0].verify("s3cret");
    // The other artifacts were not stored as deliveries at all.
    let listed = app
        .get_json(&format!("/api/v1/correlations/{only_drafts}/webhooks"))
        .await;
    assert_eq!(
        listed["deliveries"].as_array().unwrap().len(),
        1,
        "{listed}"
    );
    // A bad list is refused, naming the element.
    let refused = app
        .post(
            "/api/v1/artifacts",
            &json!({"type": "Idea", "payload": {},
                    "webhook": {"url": "https://example.com/h", "types": ["Draft", "no spaces"]}}),
        )
        .await;
    assert_eq!(refused.status(), 422);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["field"], "webhook.types[1]", "{body}");
    filtered.stop().await;
    everything.stop().await;
    app.stop().await;
}
