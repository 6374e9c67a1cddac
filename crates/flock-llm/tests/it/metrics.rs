//! Metrics: requests, errors, rejected answers and tokens from `usage`, by agent, through
//! whatever recorder the host installs (here a small counting one).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use flock_llm::LlmAgent;
use flock_orchestrator::Agent;
use flock_retry::RetryPolicy;
use hyper::StatusCode;
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use serde_json::json;
use uuid::Uuid;

use crate::support::{Answer, LONG, TestServer, completion, context, idea, plan_types, spec, ty};

/// Totals by `name{label=value,...}`: counters add their increments, histograms count samples.
#[derive(Default)]
struct Totals(Mutex<HashMap<String, u64>>);

struct Handle {
    key: String,
    totals: &'static Totals,
}

impl Handle {
    fn add(&self, n: u64) {
        *self
            .totals
            .0
            .lock()
            .unwrap()
            .entry(self.key.clone())
            .or_default() += n;
    }
}

impl CounterFn for Handle {
    fn increment(&self, value: u64) {
        self.add(value);
    }

    fn absolute(&self, _value: u64) {}
}

impl HistogramFn for Handle {
    fn record(&self, _value: f64) {
        self.add(1);
    }
}

impl GaugeFn for Handle {
    fn increment(&self, _value: f64) {}
    fn decrement(&self, _value: f64) {}
    fn set(&self, _value: f64) {}
}

struct CountingRecorder(&'static Totals);

impl CountingRecorder {
    fn handle(&self, key: &Key) -> Arc<Handle> {
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        Arc::new(Handle {
            key: format!("{}{{{}}}", key.name(), labels.join(",")),
            totals: self.0,
        })
    }
}

impl Recorder for CountingRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.handle(key))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.handle(key))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.handle(key))
    }
}

/// The process-wide totals; the recorder is installed once.
fn totals() -> &'static Totals {
    static TOTALS: OnceLock<&'static Totals> = OnceLock::new();
    TOTALS.get_or_init(|| {
        let totals: &'static Totals = Box::leak(Box::default());
        metrics::set_global_recorder(CountingRecorder(totals))
            .unwrap_or_else(|_| panic!("only this test installs a recorder"));
        totals
    })
}

fn total(key: &str) -> u64 {
    totals().0.lock().unwrap().get(key).copied().unwrap_or(0)
}

#[tokio::test]
async fn requests_errors_rejections_and_tokens_are_counted_by_agent() {
    flock_llm::describe_metrics();
    totals();
    // A name of its own, so that other tests in this process do not disturb the counts.
    let agent_name = format!("counted-{}", Uuid::now_v7().simple());
    // A 500, then an answer that is not JSON, then a good one: three requests.
    let server = TestServer::start(|n, _| async move {
        match n {
            0 => Answer::json(StatusCode::INTERNAL_SERVER_ERROR, &json!({})),
            1 => Answer::json(StatusCode::OK, &completion("not json", "stop")),
            _ => Answer::json(
                StatusCode::OK,
                &completion(
                    r#"{"artifacts": [{"type": "Plan", "payload": {"title": "t", "steps": ["s"]}}]}"#,
                    "stop",
                ),
            ),
        }
    })
    .await;
    let agent = LlmAgent::builder(agent_name.as_str(), spec(&server.base_url(), 64))
        .consumes([ty("Idea")])
        .publishes([ty("Plan")])
        .timeout(LONG)
        .retry_policy(RetryPolicy {
            base_delay: Duration::from_millis(5),
            ..RetryPolicy::default()
        })
        .types(plan_types())
        .build()
        .unwrap();
    agent
        .run(context(&agent_name), vec![idea("Count things")])
        .await
        .unwrap();

    let a = &agent_name;
    assert_eq!(total(&format!("flock_llm_requests_total{{agent={a}}}")), 3);
    assert_eq!(
        total(&format!("flock_llm_request_duration_seconds{{agent={a}}}")),
        3
    );
    assert_eq!(
        total(&format!(
            "flock_llm_errors_total{{agent={a},reason=status_5xx}}"
        )),
        1
    );
    assert_eq!(
        total(&format!(
            "flock_llm_answers_rejected_total{{agent={a},reason=invalid_json}}"
        )),
        1
    );
    // Two answers with usage, 11 prompt and 7 completion tokens each.
    assert_eq!(
        total(&format!("flock_llm_prompt_tokens_total{{agent={a}}}")),
        22
    );
    assert_eq!(
        total(&format!("flock_llm_completion_tokens_total{{agent={a}}}")),
        14
    );
}
