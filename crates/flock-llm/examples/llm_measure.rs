//! Figures of an OpenAI-compatible model server as LLM agents use it: generation speed, whether
//! strict `json_schema` answers follow the schema an agent asks for, and whether the same
//! request at temperature 0 gets the same answer. A program that prints numbers.
//!
//! `cargo run --release -p flock-llm --example llm_measure -- BASE_URL [ROUNDS]`, where `BASE_URL`
//! is what `scripts/llm-server.sh start` prints (`http://127.0.0.1:PORT/v1`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use flock_llm::{LlmAgent, LlmSpec};
use flock_models::TypeName;
use flock_schema::{TypeDeclaration, TypeSchemas};
use serde_json::{Value, json};

const IDEAS: [&str; 5] = [
    "Open a small bakery in the town centre",
    "Learn to juggle",
    "Plant a vegetable garden behind the school",
    "Organise a charity run",
    "Repair an old bicycle",
];

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(base_url) = args.next() else {
        bail!(
            "usage: llm_measure BASE_URL [ROUNDS] (BASE_URL as scripts/llm-server.sh start prints it)"
        );
    };
    let rounds: usize = args.next().map_or(Ok(3), |n| n.parse()).context("ROUNDS")?;
    let endpoint = format!("{}/chat/completions", base_url.trim_end_matches('/'));
    let client = reqwest::Client::new();

    // Generation speed: free text, 128 tokens, one request at a time.
    let mut tokens = 0;
    let mut generating = Duration::ZERO;
    let mut server_rates = Vec::new();
    for _ in 0..rounds {
        let body = json!({
            "model": "smollm2",
            "messages": [{"role": "user", "content": "Write a short story about a lighthouse keeper."}],
            "temperature": 0.0,
            "max_tokens": 128,
            "stream": false,
        });
        let started = Instant::now();
        let answer = post(&client, &endpoint, &body).await?;
        generating += started.elapsed();
        tokens += answer["usage"]["completion_tokens"].as_u64().unwrap_or(0);
        if let Some(rate) = answer["timings"]["predicted_per_second"].as_f64() {
            server_rates.push(rate);
        }
    }
    println!(
        "generation: {tokens} tokens in {:.2} s over {rounds} requests: {:.1} tokens/s end to end",
        generating.as_secs_f64(),
        tokens as f64 / generating.as_secs_f64()
    );
    if !server_rates.is_empty() {
        server_rates.sort_by(f64::total_cmp);
        println!(
            "generation: {:.1} tokens/s by the server's own timing (median of {})",
            server_rates[server_rates.len() / 2],
            server_rates.len()
        );
    }

    // Structured output and determinism, with the request an LLM agent sends.
    let types = Arc::new(TypeSchemas::new(&[TypeDeclaration {
        name: "Plan".to_owned(),
        schema: json!({
            "type": "object", "additionalProperties": false, "required": ["title", "steps"],
            "properties": {
                "title": {"type": "string", "minLength": 1, "maxLength": 60},
                "steps": {"type": "array", "minItems": 1, "maxItems": 3,
                          "items": {"type": "string", "minLength": 1, "maxLength": 80}}
            }
        }),
    }])?);
    let spec = LlmSpec {
        base_url: base_url.clone(),
        model: "smollm2".to_owned(),
        system: Some("You are a planner. Write a short plan for the idea.".to_owned()),
        temperature: Some(0.0),
        max_tokens: Some(400),
        api_key_env: None,
    };
    let agent = LlmAgent::builder("measure", spec)
        .consumes([TypeName::new("Idea")?])
        .publishes([TypeName::new("Plan")?])
        .types(Arc::clone(&types))
        .build()?;
    // The whole answer, envelope and payload, checked against the schema the agent asks for.
    let envelope = TypeSchemas::new(&[TypeDeclaration {
        name: "Answer".to_owned(),
        schema: agent.response_format()["json_schema"]["schema"].clone(),
    }])?;
    let answer_type = TypeName::new("Answer")?;
    let mut valid = 0;
    let mut stopped = 0;
    let mut same = 0;
    let mut took = Duration::ZERO;
    for idea in IDEAS {
        let body = json!({
            "model": "smollm2",
            "messages": [
                {"role": "system", "content": agent.system_message()},
                {"role": "user", "content": json!({"artifacts": [{"type": "Idea", "payload": {"text": idea}, "produced_by": "external"}]}).to_string()},
            ],
            "temperature": 0.0,
            "max_tokens": 400,
            "response_format": agent.response_format(),
            "stream": false,
        });
        let mut contents = Vec::new();
        for _ in 0..2 {
            let started = Instant::now();
            let answer = post(&client, &endpoint, &body).await?;
            took += started.elapsed();
            let choice = &answer["choices"][0];
            let content = choice["message"]["content"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            contents.push(content);
            if choice["finish_reason"] == "stop" {
                stopped += 1;
            }
        }
        let parsed: Option<Value> = serde_json::from_str(&contents[0]).ok();
        let ok = parsed
            .as_ref()
            .and_then(Value::as_object)
            .is_some_and(|answer| envelope.validate(&answer_type, answer).is_ok());
        if ok {
            valid += 1;
        }
        if contents[0] == contents[1] {
            same += 1;
        }
        // One line per answer: compact JSON when it parsed, the raw text escaped otherwise.
        let shown =
            parsed.map_or_else(|| contents[0].escape_debug().to_string(), |v| v.to_string());
        println!("  {idea}: {shown}");
    }
    let n = IDEAS.len();
    println!(
        "structured output: {valid}/{n} answers valid against the strict json_schema, \
         {stopped}/{} finished with stop, {:.2} s per answer",
        2 * n,
        took.as_secs_f64() / (2 * n) as f64
    );
    println!("temperature 0: {same}/{n} requests answered identically twice");
    Ok(())
}

async fn post(client: &reqwest::Client, endpoint: &str, body: &Value) -> anyhow::Result<Value> {
    let response = client
        .post(endpoint)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await
        .with_context(|| format!("POST {endpoint}"))?;
    let status = response.status();
    let text = response.text().await?;
    if !status.is_success() {
        bail!("POST {endpoint} answered {status}: {text}");
    }
    serde_json::from_str(&text).with_context(|| format!("POST {endpoint}: not JSON: {text}"))
}
