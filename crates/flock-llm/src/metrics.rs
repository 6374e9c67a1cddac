//! The LLM agents' metrics, through the `metrics` facade. The only label taken from outside
//! is the agent's name from configuration; the others are fixed words.

use std::time::Duration;

use crate::protocol::Usage;

/// Requests sent, by `agent`.
const REQUESTS: &str = "flock_llm_requests_total";
/// Request durations by `agent`, in seconds.
const REQUEST_DURATION: &str = "flock_llm_request_duration_seconds";
/// Failed requests by `agent` and `reason`.
const ERRORS: &str = "flock_llm_errors_total";
/// Answers rejected (cut off, not JSON, not the declared types) by `agent` and `reason`.
const REJECTED: &str = "flock_llm_answers_rejected_total";
/// Prompt tokens by `agent`, as the provider's `usage` reports them.
const PROMPT_TOKENS: &str = "flock_llm_prompt_tokens_total";
/// Completion tokens by `agent`, as the provider's `usage` reports them.
const COMPLETION_TOKENS: &str = "flock_llm_completion_tokens_total";

/// Describes the LLM agents' metrics to the installed recorder (help texts and units). Call it
/// once after installing one; without it the metrics work, undescribed.
///
/// - `flock_llm_requests_total{agent}`: chat completion requests sent, retries included;
/// - `flock_llm_request_duration_seconds{agent}`: how long they took;
/// - `flock_llm_errors_total{agent, reason}`: requests that failed (`connect`, `timeout`,
///   `transport`, `status_429`, `status_5xx`, `status_4xx`, `answer`, `request`);
/// - `flock_llm_answers_rejected_total{agent, reason}`: answers that could not be used
///   (`unfinished`, `invalid_json`, `invalid_output`, `refused`, `empty`);
/// - `flock_llm_prompt_tokens_total{agent}` and `flock_llm_completion_tokens_total{agent}`:
///   tokens from the answers' `usage`.
pub fn describe_metrics() {
    metrics::describe_counter!(REQUESTS, "Chat completion requests sent by LLM agents.");
    metrics::describe_histogram!(
        REQUEST_DURATION,
        metrics::Unit::Seconds,
        "How long LLM agents' chat completion requests took."
    );
    metrics::describe_counter!(ERRORS, "LLM agents' requests that failed, by reason.");
    metrics::describe_counter!(REJECTED, "LLM answers that could not be used, by reason.");
    metrics::describe_counter!(PROMPT_TOKENS, "Prompt tokens LLM agents used.");
    metrics::describe_counter!(COMPLETION_TOKENS, "Completion tokens LLM agents used.");
}

pub(crate) fn request(agent: &str, took: Duration) {
    metrics::counter!(REQUESTS, "agent" => agent.to_owned()).increment(1);
    metrics::histogram!(REQUEST_DURATION, "agent" => agent.to_owned()).record(took.as_secs_f64());
}

pub(crate) fn error(agent: &str, reason: &'static str) {
    metrics::counter!(ERRORS, "agent" => agent.to_owned(), "reason" => reason).increment(1);
}

pub(crate) fn rejected(agent: &str, reason: &'static str) {
    metrics::counter!(REJECTED, "agent" => agent.to_owned(), "reason" => reason).increment(1);
}

pub(crate) fn tokens(agent: &str, usage: Usage) {
    metrics::counter!(PROMPT_TOKENS, "agent" => agent.to_owned()).increment(usage.prompt_tokens);
    metrics::counter!(COMPLETION_TOKENS, "agent" => agent.to_owned())
        .increment(usage.completion_tokens);
}
