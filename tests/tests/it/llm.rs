//! LLM agents and declared types in the server, configured by the file a user writes. Against
//! the real model (`FLOCK_TEST_LLM_URL`, which `scripts/llm-server.sh start` prints; without it
//! those tests say they were skipped): an `Idea` becomes a `Plan` that its schema accepts,
//! delivered signed; an answer cut off by `max_tokens` is retried once, then a `WorkflowError`
//! ends the workflow and its webhooks are delivered; at temperature 0 the same idea gives the
//! same plan; the API key never shows. Without a model: a model server that is down is retried
//! by the policy, then a `WorkflowError`; a publish a declared schema refuses answers 422 with
//! the path, and an agent's output it refuses becomes a `WorkflowError`.

use std::time::Duration;

use flock_e2e::{
    Api, Behaviour, Received, Receiver, ServerConfig, ServerProcess, TransformAgent, Workdir,
    metric,
};
use flock_models::WebhookPayload;
use flock_schema::{TypeDeclaration, TypeSchemas};
use serde_json::{Map, Value, json};

use crate::{LONG, in_process, settled};

/// The variable naming the model server's base URL (`http://127.0.0.1:PORT/v1`).
const LLM_ENV: &str = "FLOCK_TEST_LLM_URL";

const SECRET: &str = "e2e-llm-agents-secret";

/// The model server's base URL, or `None` after printing that `test` was skipped.
fn llm_url(test: &str) -> Option<String> {
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

/// `Plan`: a short title and one to three short steps, nothing else; written as a user writes
/// a schema in the file.
const PLAN_TYPE: &str = r#"
[[types]]
name = "Plan"
[types.schema]
type = "object"
additionalProperties = false
required = ["title", "steps"]
properties.title = { type = "string", minLength = 1, maxLength = 60 }
properties.steps = { type = "array", minItems = 1, maxItems = 3, items = { type = "string", minLength = 1, maxLength = 80 } }
"#;

/// `[[types]]` for `Plan`, then an LLM agent `name` turning each `Idea` into a `Plan` with the
/// model at `base_url`, answers of at most `max_tokens`, and `extra` lines in its table.
fn planner(name: &str, base_url: &str, max_tokens: u32, extra: &str) -> String {
    format!(
        r#"{PLAN_TYPE}
[[agents]]
name = "{name}"
consumes = ["Idea"]
publishes = ["Plan"]
timeout_ms = 60000
llm = {{ base_url = "{base_url}", model = "smollm2", system = "You are a planner. Read the idea and write a short plan for it: a title and one to three steps.", temperature = 0.0, max_tokens = {max_tokens} }}
{extra}
"#
    )
}

fn config(extra_toml: String) -> ServerConfig {
    ServerConfig {
        extra_toml,
        ..ServerConfig::default()
    }
}

/// Checks a `Plan` payload by hand, apart from the server's validator: a title of 1 to 60
/// characters, 1 to 3 steps of 1 to 80, nothing else.
fn assert_bounded_plan(payload: &Map<String, Value>) {
    let title = payload["title"].as_str().expect("a string title");
    assert!((1..=60).contains(&title.chars().count()), "{payload:?}");
    let steps = payload["steps"].as_array().expect("an array of steps");
    assert!((1..=3).contains(&steps.len()), "{payload:?}");
    for step in steps {
        let step = step.as_str().expect("string steps");
        assert!((1..=80).contains(&step.chars().count()), "{payload:?}");
    }
    assert_eq!(payload.len(), 2, "nothing but title and steps: {payload:?}");
}

/// The declared types as `GET /api/v1/types` lists them, compiled again here.
async fn declared_types(api: &Api) -> TypeSchemas {
    let listed = api.get_json("/api/v1/types").await.unwrap();
    let declarations: Vec<TypeDeclaration> =
        serde_json::from_value(listed["types"].clone()).unwrap();
    TypeSchemas::new(&declarations).unwrap()
}

/// Publishes an `Idea` with a webhook to `receiver`; returns the correlation id.
async fn publish_idea(api: &Api, receiver: &Receiver, text: &str) -> String {
    api.publish(&json!({"type": "Idea", "payload": {"text": text},
                        "webhook": {"url": receiver.url(), "secret": SECRET}}))
        .await
        .unwrap()
}

/// Waits for `n` deliveries of the workflow, all delivered, and `n` requests at the receiver;
/// returns what arrived, each verified with the secret, in sequence order.
async fn delivered(
    api: &Api,
    receiver: &Receiver,
    correlation: &str,
    n: usize,
) -> Vec<(Received, WebhookPayload)> {
    api.deliveries_until(correlation, LONG, |d| {
        d.len() == n && d.iter().all(|x| x["state"] == "delivered")
    })
    .await
    .unwrap();
    receiver.wait_for(n, LONG).await.unwrap();
    let mut received: Vec<(Received, WebhookPayload)> = receiver
        .received()
        .into_iter()
        .map(|r| {
            r.verify(SECRET).unwrap();
            let payload = r.payload().unwrap();
            (r, payload)
        })
        .collect();
    assert_eq!(received.len(), n, "one request per artifact");
    received.sort_by_key(|(_, p)| p.sequence);
    received
}

/// The workflow's status once it is no longer active.
async fn final_status(api: &Api, correlation: &str) -> Value {
    settled(api, correlation).await;
    api.get_json(&format!("/api/v1/correlations/{correlation}/status"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idea_becomes_a_plan_that_arrives_signed_and_matches_its_schema() {
    let Some(url) = llm_url("an_idea_becomes_a_plan_that_arrives_signed_and_matches_its_schema")
    else {
        return;
    };
    let (_dir, server, api) = in_process(&config(planner("planner", &url, 400, ""))).await;
    let receiver = Receiver::start(Behaviour::recording()).await.unwrap();

    let correlation = publish_idea(
        &api,
        &receiver,
        "Plant a vegetable garden behind the school",
    )
    .await;
    let status = final_status(&api, &correlation).await;
    assert_eq!(status["state"], "completed", "{status:#}");
    let received = delivered(&api, &receiver, &correlation, 2).await;

    let (_, idea) = &received[0];
    assert_eq!(idea.artifact.type_name.as_str(), "Idea");
    let (request, plan) = &received[1];
    assert_eq!(plan.sequence, 2);
    assert_eq!(plan.artifact.type_name.as_str(), "Plan");
    assert_eq!(plan.artifact.produced_by, "planner");
    assert_eq!(plan.correlation_id.to_string(), correlation);
    assert!(
        request.verify("another-secret").is_err(),
        "a wrong secret fails"
    );
    // The payload matches the schema the server lists, and the bounds by hand.
    declared_types(&api)
        .await
        .validate(&plan.artifact.type_name, &plan.artifact.payload)
        .unwrap();
    assert_bounded_plan(&plan.artifact.payload);
    // The body carries the stored artifact.
    let stored = api
        .get_json(&format!("/api/v1/artifacts/{}", plan.artifact.id))
        .await
        .unwrap();
    assert_eq!(stored["payload"], json!(plan.artifact.payload));

    let agents = api.get_json("/api/v1/agents").await.unwrap();
    assert_eq!(agents["agents"][0]["kind"], "llm");
    // The server describes the LLM metrics and counts this agent's calls and tokens.
    let text = api.metrics().await.unwrap();
    for name in [
        "flock_llm_requests_total",
        "flock_llm_prompt_tokens_total",
        "flock_llm_completion_tokens_total",
    ] {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} undescribed"
        );
    }
    let agent = [("agent", "planner")];
    assert!(metric(&text, "flock_llm_requests_total", &agent) >= Some(1.0));
    assert!(metric(&text, "flock_llm_prompt_tokens_total", &agent) > Some(0.0));
    assert!(metric(&text, "flock_llm_completion_tokens_total", &agent) > Some(0.0));
    drop(receiver);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_cut_off_by_max_tokens_is_retried_once_then_ends_as_a_workflow_error() {
    let Some(url) =
        llm_url("an_answer_cut_off_by_max_tokens_is_retried_once_then_ends_as_a_workflow_error")
    else {
        return;
    };
    // Eight tokens cannot hold {"artifacts": [{"type": "Plan", "payload": ...}]}.
    let (_dir, server, api) = in_process(&config(planner("terse", &url, 8, ""))).await;
    let receiver = Receiver::start(Behaviour::recording()).await.unwrap();

    let correlation = publish_idea(&api, &receiver, "Learn to juggle").await;
    let status = final_status(&api, &correlation).await;
    assert_eq!(status["state"], "failed", "{status:#}");
    assert_eq!(status["error_count"], 1, "{status:#}");
    let error = &status["errors"][0];
    assert_eq!(error["kind"], "invalid_output");
    assert_eq!(error["agent"], "terse");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("the answer was cut off: finish_reason length (max_tokens 8)"),
        "{message}"
    );
    assert!(
        message.contains("again after the model was told"),
        "{message}"
    );

    // The workflow ended and both of its artifacts were delivered, signed.
    let received = delivered(&api, &receiver, &correlation, 2).await;
    let kinds: Vec<&str> = received
        .iter()
        .map(|(_, p)| p.artifact.type_name.as_str())
        .collect();
    assert_eq!(kinds, ["Idea", "WorkflowError"]);
    let workflow_error = &received[1].1.artifact;
    assert_eq!(workflow_error.produced_by, "terse");
    assert_eq!(workflow_error.payload["error"], "invalid_output");
    assert_eq!(workflow_error.payload["message"], json!(message));
    assert_eq!(
        workflow_error.payload["consumed"],
        json!([received[0].1.artifact.id])
    );

    // Exactly one retry: two requests, both answers cut off.
    let text = api.metrics().await.unwrap();
    let agent = [("agent", "terse")];
    assert_eq!(metric(&text, "flock_llm_requests_total", &agent), Some(2.0));
    assert_eq!(
        metric(
            &text,
            "flock_llm_answers_rejected_total",
            &[("agent", "terse"), ("reason", "unfinished")]
        ),
        Some(2.0)
    );
    assert!(text.contains("# HELP flock_llm_answers_rejected_total "));
    drop(receiver);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_server_that_is_down_is_retried_by_the_policy_then_a_workflow_error() {
    // A port nothing listens on.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let base_url = format!("http://127.0.0.1:{port}/v1");
    let (_dir, server, api) = in_process(&config(planner(
        "unreachable",
        &base_url,
        400,
        "retry = { max_retries = 2, base_delay_ms = 50 }",
    )))
    .await;
    let receiver = Receiver::start(Behaviour::recording()).await.unwrap();

    let correlation = publish_idea(&api, &receiver, "Learn to juggle").await;
    let status = final_status(&api, &correlation).await;
    assert_eq!(status["state"], "failed", "{status:#}");
    let error = &status["errors"][0];
    assert_eq!(error["kind"], "http");
    assert_eq!(error["agent"], "unreachable");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "POST {base_url}/chat/completions: could not connect"
        )),
        "{message}"
    );
    assert!(message.ends_with("(after 3 attempts)"), "{message}");

    let received = delivered(&api, &receiver, &correlation, 2).await;
    assert_eq!(received[1].1.artifact.type_name.as_str(), "WorkflowError");
    assert_eq!(received[1].1.artifact.payload["error"], "http");

    // Three attempts: the first and the policy's two retries.
    let text = api.metrics().await.unwrap();
    assert_eq!(
        metric(
            &text,
            "flock_llm_requests_total",
            &[("agent", "unreachable")]
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &text,
            "flock_llm_errors_total",
            &[("agent", "unreachable"), ("reason", "connect")]
        ),
        Some(3.0)
    );
    assert!(text.contains("# HELP flock_llm_errors_total "));
    drop(receiver);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_a_declared_schema_refuses_are_422_for_a_client_and_a_workflow_error_for_an_agent()
{
    // A command agent whose `Plan` ({"from", "by", "n"}) the schema refuses.
    let config = ServerConfig {
        agents: vec![TransformAgent::new("sloppy", "Idea", "Plan")],
        extra_toml: PLAN_TYPE.to_owned(),
        ..ServerConfig::default()
    };
    let (_dir, server, api) = in_process(&config).await;

    let cases = [
        (
            json!({"title": "t", "steps": ["a", "b", "c", "d"]}),
            "payload.steps",
            "maximum 3 items",
        ),
        (
            json!({"title": "t", "steps": ["a", "b", ""]}),
            "payload.steps[2]",
            "length",
        ),
        (
            json!({"title": "t".repeat(61), "steps": ["a"]}),
            "payload.title",
            "length",
        ),
        (
            json!({"steps": ["a"]}),
            "payload",
            "missing properties 'title'",
        ),
    ];
    for (payload, field, words) in cases {
        let (status, answer) = api
            .post(
                "/api/v1/artifacts",
                &json!({"type": "Plan", "payload": payload}),
            )
            .await
            .unwrap();
        assert_eq!(status, 422, "{payload}: {answer}");
        assert_eq!(answer["error"]["code"], "validation_error", "{answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(words), "{answer}");
        assert!(
            message.contains("does not match the schema of `Plan`"),
            "{answer}"
        );
    }
    let plans = api.get_json("/api/v1/artifacts?type=Plan").await.unwrap();
    assert_eq!(
        plans["pagination"]["total"], 0,
        "nothing refused was stored"
    );

    // The agent's output is refused in the same way: a WorkflowError naming the place, and the
    // workflow's webhooks delivered.
    let receiver = Receiver::start(Behaviour::recording()).await.unwrap();
    let correlation = publish_idea(&api, &receiver, "anything").await;
    let status = final_status(&api, &correlation).await;
    assert_eq!(status["state"], "failed", "{status:#}");
    let error = &status["errors"][0];
    assert_eq!(error["kind"], "invalid_output");
    assert_eq!(error["agent"], "sloppy");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.starts_with("artifacts[0].payload: does not match the schema of `Plan`"),
        "{message}"
    );
    let received = delivered(&api, &receiver, &correlation, 2).await;
    let kinds: Vec<&str> = received
        .iter()
        .map(|(_, p)| p.artifact.type_name.as_str())
        .collect();
    assert_eq!(kinds, ["Idea", "WorkflowError"]);
    let plans = api.get_json("/api/v1/artifacts?type=Plan").await.unwrap();
    assert_eq!(
        plans["pagination"]["total"], 0,
        "the agent's Plan was not stored"
    );
    drop(receiver);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idea_gives_the_same_plan_twice_at_temperature_zero() {
    let Some(url) = llm_url("the_same_idea_gives_the_same_plan_twice_at_temperature_zero") else {
        return;
    };
    let (_dir, server, api) = in_process(&config(planner("steady", &url, 400, ""))).await;
    let mut plans = Vec::new();
    for _ in 0..2 {
        let answer = api
            .publish_sync(&json!({"type": "Idea",
                                  "payload": {"text": "Organise a neighbourhood book swap"},
                                  "timeout": LONG.as_secs()}))
            .await
            .unwrap();
        assert_eq!(answer["completed"], true, "{answer:#}");
        let artifacts = answer["artifacts"].as_array().unwrap();
        let kinds: Vec<&str> = artifacts
            .iter()
            .map(|a| a["type"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["Idea", "Plan"], "{answer:#}");
        let plan = artifacts[1]["payload"].as_object().unwrap().clone();
        assert_bounded_plan(&plan);
        plans.push(plan);
    }
    assert_eq!(plans[0], plans[1]);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_call_logs_a_debug_line_and_the_api_key_shows_nowhere() {
    let Some(url) = llm_url("each_call_logs_a_debug_line_and_the_api_key_shows_nowhere") else {
        return;
    };
    const KEY: &str = "sk-e2e-this-key-must-never-show";
    let config = ServerConfig {
        log_level: "flock_llm=debug,info".to_owned(),
        extra_toml: planner("keyed", &url, 400, "").replace(
            "max_tokens = 400",
            "max_tokens = 400, api_key_env = \"FLOCK_E2E_LLM_KEY\"",
        ),
        ..ServerConfig::default()
    };
    let dir = Workdir::new().unwrap();
    let file = config.write(&dir).unwrap();
    let binary = flock_e2e::fresh_flock_api_binary().unwrap();
    let mut server =
        ServerProcess::spawn_with_env(&binary, &file, &[("FLOCK_E2E_LLM_KEY", KEY)], LONG).unwrap();
    let api = Api::new(server.address()).unwrap();

    let answer = api
        .publish_sync(
            &json!({"type": "Idea", "payload": {"text": "Learn to juggle"},
                              "timeout": LONG.as_secs()}),
        )
        .await
        .unwrap();
    assert_eq!(answer["completed"], true, "{answer:#}");
    let metrics = api.metrics().await.unwrap();
    let calls = metric(&metrics, "flock_llm_requests_total", &[("agent", "keyed")]).unwrap();
    assert!(calls >= 1.0);
    let agents = api.get_json("/api/v1/agents").await.unwrap().to_string();
    let status = api
        .get_json(&format!(
            "/api/v1/correlations/{}/status",
            answer["correlation_id"].as_str().unwrap()
        ))
        .await
        .unwrap()
        .to_string();
    // The log lines of this run reach us within a moment of the answer.
    server
        .wait_for_line("\"message\":\"llm call\"", Duration::from_secs(10))
        .unwrap();
    let log = server.log().to_vec();
    let call_lines: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("\"message\":\"llm call\""))
        .collect();
    #[expect(
        clippy::cast_precision_loss,
        reason = "a handful of log lines, compared with a counter"
    )]
    let logged = call_lines.len() as f64;
    assert_eq!(logged, calls, "one debug line per call: {call_lines:#?}");
    for line in &call_lines {
        assert!(line.contains("\"level\":\"DEBUG\""), "{line}");
        assert!(line.contains("\"agent\":\"keyed\""), "{line}");
        assert!(line.contains("prompt_tokens"), "{line}");
    }
    for (what, text) in [
        ("the log", log.join("\n")),
        ("/metrics", metrics),
        ("/api/v1/agents", agents),
        ("the status", status),
        ("the answer", answer.to_string()),
    ] {
        assert!(!text.contains(KEY), "the key shows in {what}");
        assert!(
            !text.contains("this-key-must"),
            "part of the key shows in {what}"
        );
    }
    let exit = server.stop(LONG).unwrap();
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}");
}
