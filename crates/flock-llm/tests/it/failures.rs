//! Failures that need no model: a server that is down, statuses that are retried and those that
//! are not, answers that break the schema, and the API key kept out of every message.

use std::time::{Duration, Instant};

use flock_llm::{LlmAgent, LlmSpec};
use flock_orchestrator::{Agent, AgentError};
use flock_retry::RetryPolicy;
use hyper::StatusCode;
use serde_json::json;
use tokio::net::TcpListener;

use crate::support::{Answer, LONG, TestServer, completion, context, idea, plan_types, spec, ty};

/// Waits of 20 ms, 40 ms: quick, and long enough to measure.
fn quick_policy(max_retries: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        base_delay: Duration::from_millis(20),
        factor: 2,
        max_delay: Duration::from_secs(5),
        jitter: 0.0,
    }
}

fn agent(spec: LlmSpec, policy: RetryPolicy) -> LlmAgent {
    LlmAgent::builder("planner", spec)
        .consumes([ty("Idea")])
        .publishes([ty("Plan")])
        .timeout(LONG)
        .retry_policy(policy)
        .types(plan_types())
        .build_with_env(&|name| (name == "TEST_LLM_KEY").then(|| "sk-test-abc123".to_owned()))
        .unwrap()
}

const GOOD: &str = r#"{"artifacts": [{"type": "Plan", "payload": {"title": "Juggle", "steps": ["Buy balls", "Practise"]}}]}"#;

#[tokio::test]
async fn a_server_that_is_down_is_retried_by_the_policy_then_fails() {
    // A port that was just free and now has no listener: connections are refused.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let agent = agent(spec(&format!("http://{addr}/v1"), 64), quick_policy(2));
    let started = Instant::now();
    let error = agent
        .run(context("planner"), vec![idea("Learn to juggle")])
        .await
        .unwrap_err();
    let took = started.elapsed();
    let AgentError::Http(message) = &error else {
        panic!("expected an HTTP error, got {error:?}");
    };
    assert!(
        message.contains(&format!("POST http://{addr}/v1/chat/completions")),
        "{message}"
    );
    assert!(message.contains("could not connect"), "{message}");
    assert!(message.contains("after 3 attempts"), "{message}");
    // Two waits, 20 ms and 40 ms, came between the three attempts.
    assert!(took >= Duration::from_millis(60), "{took:?}");
}

#[tokio::test]
async fn server_errors_are_retried_and_client_errors_are_not() {
    let server = TestServer::start(|n, _| async move {
        if n < 2 {
            Answer::json(StatusCode::BAD_GATEWAY, &json!({"error": "upstream"}))
        } else {
            Answer::json(StatusCode::OK, &completion(GOOD, "stop"))
        }
    })
    .await;
    let drafts = agent(spec(&server.base_url(), 64), quick_policy(3))
        .run(context("planner"), vec![idea("Learn to juggle")])
        .await
        .unwrap();
    assert_eq!(drafts.len(), 1);
    assert_eq!(drafts[0].payload["title"], "Juggle");
    assert_eq!(server.received().len(), 3);

    let server = TestServer::start(|_, _| async {
        Answer::json(
            StatusCode::BAD_REQUEST,
            &json!({"error": {"message": "model `smollm2` does not exist"}}),
        )
    })
    .await;
    let error = agent(spec(&server.base_url(), 64), quick_policy(3))
        .run(context("planner"), vec![idea("Learn to juggle")])
        .await
        .unwrap_err();
    assert_eq!(server.received().len(), 1, "a 400 is not retried");
    let message = error.to_string();
    assert!(
        message.contains("answered HTTP 400 Bad Request"),
        "{message}"
    );
    assert!(message.contains("does not exist"), "{message}");

    // The policy's last attempt fails: the error says the status and how many attempts.
    let server = TestServer::start(|_, _| async {
        Answer::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"error": "loading"}),
        )
    })
    .await;
    let error = agent(spec(&server.base_url(), 64), quick_policy(1))
        .run(context("planner"), vec![idea("Learn to juggle")])
        .await
        .unwrap_err();
    assert_eq!(server.received().len(), 2);
    let message = error.to_string();
    assert!(
        message.contains("HTTP 503 Service Unavailable"),
        "{message}"
    );
    assert!(message.contains("after 2 attempts"), "{message}");
}

#[tokio::test]
async fn a_schema_violation_is_told_to_the_model_once() {
    // First a plan with four steps (the schema allows three), then a good one.
    let server = TestServer::start(|n, _| async move {
        let content = if n == 0 {
            r#"{"artifacts": [{"type": "Plan", "payload": {"title": "Juggle", "steps": ["a", "b", "c", "d"]}}]}"#
        } else {
            GOOD
        };
        Answer::json(StatusCode::OK, &completion(content, "stop"))
    })
    .await;
    let drafts = agent(spec(&server.base_url(), 64), quick_policy(0))
        .run(context("planner"), vec![idea("Learn to juggle")])
        .await
        .unwrap();
    assert_eq!(drafts[0].payload["steps"], json!(["Buy balls", "Practise"]));
    let received = server.received();
    assert_eq!(received.len(), 2);
    let retry = received[1].body["messages"].as_array().unwrap();
    assert_eq!(retry.len(), 4);
    assert_eq!(retry[2]["role"], "assistant");
    assert!(retry[2]["content"].as_str().unwrap().contains("\"d\""));
    let feedback = retry[3]["content"].as_str().unwrap();
    assert!(
        feedback.contains("artifacts[0].payload.steps: does not match the schema of `Plan`"),
        "{feedback}"
    );

    // Two bad answers fail the run, naming both problems.
    let server = TestServer::start(|n, _| async move {
        let content = if n == 0 {
            "{\"artifacts\": ["
        } else {
            r#"{"artifacts": [{"type": "Plan", "payload": {"title": "x"}}]}"#
        };
        Answer::json(StatusCode::OK, &completion(content, "stop"))
    })
    .await;
    let error = agent(spec(&server.base_url(), 64), quick_policy(0))
        .run(context("planner"), vec![idea("Learn to juggle")])
        .await
        .unwrap_err();
    let AgentError::InvalidOutput(message) = &error else {
        panic!("expected invalid output, got {error:?}");
    };
    assert!(message.contains("missing properties 'steps'"), "{message}");
    assert!(message.contains("not valid JSON"), "{message}");
    assert_eq!(server.received().len(), 2);
}

#[tokio::test]
async fn the_api_key_is_sent_as_a_bearer_token_and_never_shown() {
    // A server that echoes the key in its error, as some do.
    let server = TestServer::start(|_, _| async {
        Answer::json(
            StatusCode::UNAUTHORIZED,
            &json!({"error": {"message": "Incorrect API key provided: sk-test-abc123"}}),
        )
    })
    .await;
    let spec = LlmSpec {
        api_key_env: Some("TEST_LLM_KEY".to_owned()),
        ..spec(&server.base_url(), 64)
    };
    let agent = agent(spec, quick_policy(2));
    let error = agent
        .run(context("planner"), vec![idea("Learn to juggle")])
        .await
        .unwrap_err();
    let received = server.received();
    assert_eq!(received.len(), 1, "a 401 is not retried");
    assert_eq!(
        received[0].authorization.as_deref(),
        Some("Bearer sk-test-abc123")
    );
    let message = error.to_string();
    assert!(message.contains("HTTP 401 Unauthorized"), "{message}");
    assert!(
        message.contains("Incorrect API key provided: [redacted]"),
        "{message}"
    );
    assert!(!message.contains("abc123"), "{message}");
    assert!(!format!("{agent:?} {error:?}").contains("abc123"));
}

#[tokio::test]
async fn https_base_urls_are_spoken_to_in_tls() {
    // A hosted provider is reached over `https`: what the agent sends first to such a URL is a
    // TLS ClientHello (a handshake record, naming the host for SNI), not plain HTTP. The
    // listener here cannot complete the handshake, so the call fails, naming the URL.
    use tokio::io::AsyncReadExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let first_bytes = tokio::spawn(async move {
        let read_hello = async {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut hello = vec![0u8; 512];
            let read = socket.read(&mut hello).await.unwrap();
            hello.truncate(read);
            hello
        };
        tokio::time::timeout(Duration::from_secs(10), read_hello)
            .await
            .expect("the agent connected and wrote within 10 s")
    });
    let error = agent(
        spec(&format!("https://localhost:{port}/v1"), 64),
        quick_policy(0),
    )
    .run(context("planner"), vec![idea("Learn to juggle")])
    .await
    .unwrap_err();
    let hello = first_bytes.await.unwrap();
    assert!(hello.len() > 5, "{hello:?}");
    assert_eq!(
        hello[0],
        0x16,
        "a TLS handshake record, not `{}`",
        String::from_utf8_lossy(&hello)
    );
    assert_eq!(hello[1], 0x03, "TLS record version");
    assert!(
        hello.windows(b"localhost".len()).any(|w| w == b"localhost"),
        "the ClientHello names the host"
    );
    let AgentError::Http(message) = &error else {
        panic!("expected an HTTP error, got {error:?}");
    };
    assert!(
        message.contains(&format!(
            "POST https://localhost:{port}/v1/chat/completions"
        )),
        "{message}"
    );
}
