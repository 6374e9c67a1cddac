//! Test helpers: the model server's URL (or a skip), specs, the `Plan` type, artifacts, and a
//! small HTTP server on 127.0.0.1 that records requests and answers from a script or by
//! forwarding to the model server.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flock_llm::LlmSpec;
use flock_models::{Artifact, ArtifactDraft, TypeName};
use flock_orchestrator::AgentContext;
use flock_schema::{TypeDeclaration, TypeSchemas};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use uuid::Uuid;

/// The variable naming the model server's base URL (`http://127.0.0.1:PORT/v1`).
pub(crate) const LLM_ENV: &str = "FLOCK_TEST_LLM_URL";

/// An upper bound for waits that should end much sooner; reaching it fails the test.
pub(crate) const LONG: Duration = Duration::from_secs(300);

/// The model server's base URL, or `None` after printing that `test` was skipped.
pub(crate) fn llm_url(test: &str) -> Option<String> {
    match std::env::var(LLM_ENV) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!(
                "skipped {test}: set {LLM_ENV} to an OpenAI-compatible server \
                 (scripts/llm-server.sh start prints one) to run it against a real model"
            );
            None
        }
    }
}

pub(crate) fn ty(name: &str) -> TypeName {
    TypeName::new(name).unwrap()
}

pub(crate) fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// A spec for the model server at `base_url`, at temperature 0.
pub(crate) fn spec(base_url: &str, max_tokens: u32) -> LlmSpec {
    LlmSpec {
        base_url: base_url.to_owned(),
        model: "smollm2".to_owned(),
        system: Some(
            "You are a planner. Read the idea and write a short plan for it: a title and one to \
             three steps."
                .to_owned(),
        ),
        temperature: Some(0.0),
        max_tokens: Some(max_tokens),
        api_key_env: None,
    }
}

/// The `Plan` schema of the tests: a short title and one to three short steps, nothing else.
pub(crate) fn plan_schema() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["title", "steps"],
        "properties": {
            "title": {"type": "string", "minLength": 1, "maxLength": 60},
            "steps": {
                "type": "array",
                "minItems": 1,
                "maxItems": 3,
                "items": {"$ref": "#/$defs/step"}
            }
        },
        "$defs": {"step": {"type": "string", "minLength": 1, "maxLength": 80}}
    })
}

pub(crate) fn plan_types() -> Arc<TypeSchemas> {
    Arc::new(
        TypeSchemas::new(&[TypeDeclaration {
            name: "Plan".to_owned(),
            schema: plan_schema(),
        }])
        .unwrap(),
    )
}

/// An `Idea` published by a client.
pub(crate) fn idea(text: &str) -> Arc<Artifact> {
    Arc::new(Artifact::new(
        ArtifactDraft::new(ty("Idea"), object(json!({"text": text}))),
        "external",
        Uuid::now_v7(),
    ))
}

pub(crate) fn context(agent: &str) -> AgentContext {
    AgentContext {
        correlation_id: Uuid::now_v7(),
        agent: agent.to_owned(),
    }
}

/// Checks a `Plan` payload by hand, independently of the crate's validation.
pub(crate) fn assert_bounded_plan(payload: &Map<String, Value>) {
    let title = payload["title"].as_str().expect("a string title");
    assert!(
        (1..=60).contains(&title.chars().count()),
        "title: {title:?}"
    );
    let steps = payload["steps"].as_array().expect("an array of steps");
    assert!((1..=3).contains(&steps.len()), "steps: {steps:?}");
    for step in steps {
        let step = step.as_str().expect("string steps");
        assert!((1..=80).contains(&step.chars().count()), "step: {step:?}");
    }
    assert_eq!(payload.len(), 2, "nothing but title and steps: {payload:?}");
}

/// A chat completion answer whose content is `content`.
pub(crate) fn completion(content: &str, finish_reason: &str) -> Value {
    json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": finish_reason
        }],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    })
}

/// One request the test server received.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) at: Instant,
    pub(crate) path: String,
    pub(crate) authorization: Option<String>,
    pub(crate) body: Value,
}

/// What the test server answers: status, headers, body.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Bytes,
}

impl Answer {
    pub(crate) fn json(status: StatusCode, body: &Value) -> Self {
        Answer {
            status,
            headers: Vec::new(),
            body: Bytes::from(body.to_string()),
        }
    }

    pub(crate) fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }
}

type Handler =
    Arc<dyn Fn(usize, Value) -> Pin<Box<dyn Future<Output = Answer> + Send>> + Send + Sync>;

/// An HTTP server on 127.0.0.1:0 that records every request and answers through a handler
/// given the request's number (0 first) and JSON body. Stops when dropped.
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub(crate) async fn start<F, Fut>(handler: F) -> TestServer
    where
        F: Fn(usize, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Answer> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |n, body| Box::pin(handler(n, body)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let handler = Arc::clone(&handler);
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let handler = Arc::clone(&handler);
                        let log = Arc::clone(&log);
                        async move {
                            let path = request.uri().path().to_owned();
                            let authorization = request
                                .headers()
                                .get(hyper::header::AUTHORIZATION)
                                .map(|v| v.to_str().unwrap().to_owned());
                            let bytes = request.into_body().collect().await?.to_bytes();
                            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                            let n = {
                                let mut log = log.lock().unwrap();
                                log.push(Received {
                                    at: Instant::now(),
                                    path,
                                    authorization,
                                    body: body.clone(),
                                });
                                log.len() - 1
                            };
                            let answer = handler(n, body).await;
                            let mut response = Response::builder()
                                .status(answer.status)
                                .header(hyper::header::CONTENT_TYPE, "application/json");
                            for (name, value) in answer.headers {
                                response = response.header(name, value);
                            }
                            Ok::<_, hyper::Error>(response.body(Full::new(answer.body)).unwrap())
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TestServer {
            addr,
            received,
            task,
        }
    }

    /// A server that forwards every request to the model server at `base_url` and returns its
    /// answer, recording what passed.
    pub(crate) async fn proxy(base_url: &str) -> TestServer {
        let target = format!("{}/chat/completions", base_url.trim_end_matches('/'));
        let client = reqwest::Client::new();
        TestServer::start(move |_, body| {
            let client = client.clone();
            let target = target.clone();
            async move {
                let response = client
                    .post(&target)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .expect("the model server answers");
                let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
                let body = response.bytes().await.expect("the model server's answer");
                Answer {
                    status,
                    headers: Vec::new(),
                    body,
                }
            }
        })
        .await
    }

    /// The base URL to configure: `http://127.0.0.1:PORT/v1`.
    pub(crate) fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
