//! HTTP agents against a real local HTTP server: answers, error statuses, bad JSON, timeouts,
//! an unreachable endpoint.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use flock_orchestrator::{Agent, AgentSpec, ErrorKind, Orchestrator, RecordedError, WaitOutcome};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::support::{LONG, artifacts, draft, types};

/// What the server saw: content type and body of each request.
type Seen = Arc<Mutex<Vec<(String, Value)>>>;

/// A local agent server on 127.0.0.1:0. Paths: `/shout` answers with a Shout of the input's
/// text in capitals, `/fail` answers 500, `/garbage` answers 200 with text, `/hang` never
/// answers.
async fn serve() -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Seen::default();
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let service = service_fn(move |request| handle(request, Arc::clone(&log)));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (base, seen)
}

async fn handle(
    request: Request<Incoming>,
    seen: Seen,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let content_type = request
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let input: Value = serde_json::from_slice(&body).unwrap();
    seen.lock().unwrap().push((content_type, input.clone()));
    let (status, answer) = match path.as_str() {
        "/shout" => {
            let text = input["artifacts"][0]["payload"]["text"]
                .as_str()
                .unwrap_or_default();
            let answer =
                json!({"artifacts": [{"type": "Shout", "payload": {"text": text.to_uppercase()}}]});
            (StatusCode::OK, answer.to_string())
        }
        "/fail" => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "agent is broken".to_owned(),
        ),
        "/garbage" => (StatusCode::OK, "this is not json".to_owned()),
        "/hang" => std::future::pending().await,
        _ => (StatusCode::NOT_FOUND, String::new()),
    };
    let response = Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(answer)))
        .unwrap();
    Ok(response)
}

fn http_agent(name: &str, url: String, timeout_ms: Option<u64>) -> Arc<dyn Agent> {
    AgentSpec {
        name: name.to_owned(),
        consumes: vec!["Idea".to_owned()],
        publishes: vec!["Shout".to_owned()],
        command: None,
        url: Some(url),
        timeout_ms,
        ..AgentSpec::default()
    }
    .build()
    .unwrap()
}

async fn run_one(agent: Arc<dyn Agent>) -> (Orchestrator, Uuid, Option<RecordedError>) {
    let orchestrator = Orchestrator::builder().agent(agent).build().await.unwrap();
    let correlation = Uuid::now_v7();
    orchestrator
        .publish(correlation, draft("Idea", json!({"text": "hello"})))
        .await
        .unwrap();
    assert_eq!(
        orchestrator.wait_idle(correlation, LONG).await,
        WaitOutcome::Idle
    );
    let status = orchestrator.status(correlation).await.unwrap().unwrap();
    let error = status.errors.into_iter().next();
    (orchestrator, correlation, error)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_agent_answers_and_its_output_is_published() {
    let (base, seen) = serve().await;
    let (orchestrator, correlation, error) =
        run_one(http_agent("shouter", format!("{base}/shout"), None)).await;
    assert_eq!(error, None);
    let all = artifacts(&orchestrator, correlation).await;
    assert_eq!(types(&all), ["Idea", "Shout"]);
    assert_eq!(all[1].payload["text"], "HELLO");
    assert_eq!(all[1].produced_by, "shouter");

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let (content_type, body) = &seen[0];
    assert_eq!(content_type, "application/json");
    assert_eq!(body["agent"], "shouter");
    assert_eq!(body["artifacts"][0]["id"], json!(all[0].id));
    assert_eq!(body["artifacts"][0]["type"], "Idea");
    assert_eq!(body["artifacts"][0]["correlation_id"], json!(correlation));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_status_is_an_http_error_with_the_body() {
    let (base, _) = serve().await;
    let (_, _, error) = run_one(http_agent("broken", format!("{base}/fail"), None)).await;
    let error = error.unwrap();
    assert_eq!(error.kind, ErrorKind::Http);
    assert!(error.message.contains("500"), "{}", error.message);
    assert!(
        error.message.contains("agent is broken"),
        "{}",
        error.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_json_answer_is_an_invalid_output() {
    let (base, _) = serve().await;
    let (_, _, error) = run_one(http_agent("garbled", format!("{base}/garbage"), None)).await;
    let error = error.unwrap();
    assert_eq!(error.kind, ErrorKind::InvalidOutput);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoint_times_out() {
    let (base, _) = serve().await;
    let (_, _, error) = run_one(http_agent("stuck", format!("{base}/hang"), Some(200))).await;
    let error = error.unwrap();
    assert_eq!(error.kind, ErrorKind::Timeout);
    assert!(error.message.contains("200 ms"), "{}", error.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_is_an_http_error() {
    // A port that was free a moment ago and has no listener now.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let (_, _, error) = run_one(http_agent("lonely", format!("http://{address}/x"), None)).await;
    let error = error.unwrap();
    assert_eq!(error.kind, ErrorKind::Http);
    assert!(
        error.message.contains(&address.to_string()),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn agents_are_listed_with_their_kinds() {
    let orchestrator = Orchestrator::builder()
        .agent(http_agent(
            "remote",
            "http://127.0.0.1:9/x".to_owned(),
            Some(1_500),
        ))
        .agent(
            AgentSpec {
                name: "local".to_owned(),
                consumes: vec!["Idea".to_owned(), "Plan".to_owned(), "Idea".to_owned()],
                publishes: vec![],
                command: Some(vec!["true".to_owned()]),
                url: None,
                timeout_ms: None,
                ..AgentSpec::default()
            }
            .build()
            .unwrap(),
        )
        .build()
        .await
        .unwrap();
    let listed = serde_json::to_value(orchestrator.agents()).unwrap();
    assert_eq!(
        listed,
        json!([
            {"name": "remote", "kind": "http", "consumes": ["Idea"], "publishes": ["Shout"],
             "timeout_ms": 1500},
            {"name": "local", "kind": "command", "consumes": ["Idea", "Plan"], "publishes": [],
             "timeout_ms": 30000},
        ])
    );
}
