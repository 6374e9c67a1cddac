//! Metrics: runs are counted by agent and outcome, timed, and artifacts counted, through
//! whatever recorder the host installs (here a small counting one).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use flock_orchestrator::{AgentError, Orchestrator, WaitOutcome};
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use serde_json::json;
use uuid::Uuid;

use crate::support::{FnAgent, LONG, draft};

/// Totals by `name{label=value,...}`: counters add their increments, histograms count their
/// samples.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_and_artifacts_are_counted() {
    flock_orchestrator::describe_metrics();
    // Names of its own, so that other tests in this process do not disturb the counts.
    let tag = Uuid::now_v7().simple().to_string();
    let ok = format!("ok-{tag}");
    let failing = format!("failing-{tag}");
    let slow = format!("slow-{tag}");
    let published_before = total("flock_artifacts_published_total{}");
    let orchestrator = Orchestrator::builder()
        .agent(
            FnAgent::new(&ok, &["Idea"], &["Plan"])
                .transform("Plan")
                .build(),
        )
        .agent(
            FnAgent::new(&failing, &["Idea"], &[])
                .handler(|_, _| async { Err(AgentError::Failed("no".into())) })
                .build(),
        )
        .agent(
            FnAgent::new(&slow, &["Idea"], &[])
                .timeout(Duration::from_millis(50))
                .handler(|_, _| std::future::pending())
                .build(),
        )
        .build()
        .await
        .unwrap();
    let correlation = Uuid::now_v7();
    orchestrator
        .publish(correlation, draft("Idea", json!({})))
        .await
        .unwrap();
    assert_eq!(
        orchestrator.wait_idle(correlation, LONG).await,
        WaitOutcome::Idle
    );

    assert_eq!(
        total(&format!("flock_agent_runs_total{{agent={ok},outcome=ok}}")),
        1
    );
    assert_eq!(
        total(&format!(
            "flock_agent_runs_total{{agent={failing},outcome=error}}"
        )),
        1
    );
    assert_eq!(
        total(&format!(
            "flock_agent_runs_total{{agent={slow},outcome=timeout}}"
        )),
        1
    );
    assert_eq!(
        total(&format!("flock_agent_run_duration_seconds{{agent={ok}}}")),
        1
    );
    // Idea, Plan and two WorkflowErrors (other tests may add their own meanwhile).
    assert!(total("flock_artifacts_published_total{}") >= published_before + 4);
    assert!(total("flock_workflow_errors_total{kind=timeout}") >= 1);
}
