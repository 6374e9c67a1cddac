//! Component hooks: order, stopping, skipping, replacing, panics, idle and life-cycle calls.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use flock_models::{Artifact, NewDelivery};
use flock_orchestrator::{
    ArtifactQuery, Component, Flow, Orchestrator, ScheduleDecision, WaitOutcome, WorkflowState,
};
use serde_json::json;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::support::{FnAgent, LONG, artifacts, draft, types};

type Log = Arc<Mutex<Vec<String>>>;
type OnPublished = Box<dyn Fn(&Arc<Artifact>) -> Flow + Send + Sync>;
type OnSchedule = Box<dyn Fn(&str) -> ScheduleDecision + Send + Sync>;

/// Logs every hook call as `name:hook`, and acts as told.
struct Probe {
    name: &'static str,
    priority: i32,
    log: Log,
    on_published: OnPublished,
    on_schedule: OnSchedule,
}

impl Probe {
    fn new(name: &'static str, priority: i32, log: &Log) -> Self {
        Probe {
            name,
            priority,
            log: Arc::clone(log),
            on_published: Box::new(|_| Flow::Continue),
            on_schedule: Box::new(|_| ScheduleDecision::Continue),
        }
    }

    fn note(&self, hook: &str) {
        self.log
            .lock()
            .unwrap()
            .push(format!("{}:{hook}", self.name));
    }
}

#[async_trait]
impl Component for Probe {
    fn name(&self) -> &str {
        self.name
    }

    fn priority(&self) -> i32 {
        self.priority
    }

    async fn on_initialize(&self) {
        self.note("init");
    }

    fn before_store(&self, _artifact: &Artifact, _outbox: &mut Vec<NewDelivery>) {
        self.note("before_store");
    }

    async fn on_artifact_published(&self, artifact: &Arc<Artifact>) -> Flow {
        self.note("published");
        (self.on_published)(artifact)
    }

    async fn on_before_schedule(&self, agent: &str, _artifact: &Arc<Artifact>) -> ScheduleDecision {
        self.note(&format!("schedule {agent}"));
        (self.on_schedule)(agent)
    }

    async fn on_shutdown(&self) {
        self.note("shutdown");
    }
}

fn entries(log: &Log, hook: &str) -> Vec<String> {
    let suffix = format!(":{hook}");
    log.lock()
        .unwrap()
        .iter()
        .filter(|e| e.ends_with(&suffix))
        .cloned()
        .collect()
}

#[tokio::test]
async fn hooks_run_by_priority_and_equal_priorities_in_registration_order() {
    let log = Log::default();
    let orchestrator = Orchestrator::builder()
        .component(Arc::new(Probe::new("late", 10, &log)))
        .component(Arc::new(Probe::new("first", -5, &log)))
        .component(Arc::new(Probe::new("late2", 10, &log)))
        .component(Arc::new(Probe::new("middle", 0, &log)))
        .component(Arc::new(Probe::new("late3", 10, &log)))
        .agent(FnAgent::new("a", &["Idea"], &[]).build())
        .build()
        .await
        .unwrap();
    let expected = ["first", "middle", "late", "late2", "late3"];
    let order = |hook: &str| -> Vec<String> {
        expected
            .iter()
            .map(|name| format!("{name}:{hook}"))
            .collect()
    };
    assert_eq!(entries(&log, "init"), order("init"));

    let correlation = Uuid::now_v7();
    orchestrator
        .publish(correlation, draft("Idea", json!({})))
        .await
        .unwrap();
    assert_eq!(entries(&log, "before_store"), order("before_store"));
    assert_eq!(entries(&log, "published"), order("published"));
    assert_eq!(entries(&log, "schedule a"), order("schedule a"));

    orchestrator.wait_idle(correlation, LONG).await;
    orchestrator.shutdown(LONG).await;
    assert_eq!(entries(&log, "shutdown"), order("shutdown"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_stop_wakes_no_agent_and_skips_later_hooks() {
    let log = Log::default();
    let mut stopper = Probe::new("stopper", 1, &log);
    stopper.on_published = Box::new(|a| {
        if a.type_name == "Secret" {
            Flow::Stop
        } else {
            Flow::Continue
        }
    });
    let orchestrator = Orchestrator::builder()
        .component(Arc::new(stopper))
        .component(Arc::new(Probe::new("after", 2, &log)))
        .agent(
            FnAgent::new("a", &["Secret", "Idea"], &["Plan"])
                .transform("Plan")
                .build(),
        )
        .build()
        .await
        .unwrap();

    let stopped = Uuid::now_v7();
    orchestrator
        .publish(stopped, draft("Secret", json!({})))
        .await
        .unwrap();
    assert_eq!(
        orchestrator.wait_idle(stopped, LONG).await,
        WaitOutcome::Idle
    );
    assert_eq!(
        types(&artifacts(&orchestrator, stopped).await),
        ["Secret"],
        "stored, no agent woken"
    );
    assert_eq!(entries(&log, "published"), ["stopper:published"]);

    let passed = Uuid::now_v7();
    orchestrator
        .publish(passed, draft("Idea", json!({})))
        .await
        .unwrap();
    assert_eq!(
        orchestrator.wait_idle(passed, LONG).await,
        WaitOutcome::Idle
    );
    assert_eq!(
        types(&artifacts(&orchestrator, passed).await),
        ["Idea", "Plan"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_skip_keeps_one_agent_from_running() {
    let log = Log::default();
    let mut skipper = Probe::new("skipper", 1, &log);
    skipper.on_schedule = Box::new(|agent| {
        if agent == "muted" {
            ScheduleDecision::Skip
        } else {
            ScheduleDecision::Continue
        }
    });
    let orchestrator = Orchestrator::builder()
        .component(Arc::new(skipper))
        .component(Arc::new(Probe::new("after", 2, &log)))
        .agent(
            FnAgent::new("muted", &["Idea"], &["Muted"])
                .transform("Muted")
                .build(),
        )
        .agent(
            FnAgent::new("loud", &["Idea"], &["Loud"])
                .transform("Loud")
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
        types(&artifacts(&orchestrator, correlation).await),
        ["Idea", "Loud"]
    );
    // A skip ends the round of hooks for that agent.
    assert_eq!(entries(&log, "schedule muted"), ["skipper:schedule muted"]);
    assert_eq!(
        entries(&log, "schedule loud"),
        ["skipper:schedule loud", "after:schedule loud"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_replace_hands_agents_the_replacement_and_keeps_the_stored_one() {
    let log = Log::default();
    let mut replacer = Probe::new("replacer", 1, &log);
    replacer.on_published = Box::new(|a| {
        let mut changed = Artifact::clone(a);
        changed.payload.insert("enriched".into(), json!(true));
        Flow::Replace(Arc::new(changed))
    });
    let seen: Arc<Mutex<Vec<bool>>> = Arc::default();
    let seen_by_agent = Arc::clone(&seen);
    let orchestrator = Orchestrator::builder()
        .component(Arc::new(replacer))
        .agent(
            FnAgent::new("reader", &["Idea"], &[])
                .handler(move |_, input| {
                    let seen = Arc::clone(&seen_by_agent);
                    async move {
                        seen.lock()
                            .unwrap()
                            .push(input.payload.contains_key("enriched"));
                        Ok(vec![])
                    }
                })
                .build(),
        )
        .build()
        .await
        .unwrap();
    let correlation = Uuid::now_v7();
    let stored = orchestrator
        .publish(correlation, draft("Idea", json!({})))
        .await
        .unwrap();
    assert_eq!(
        orchestrator.wait_idle(correlation, LONG).await,
        WaitOutcome::Idle
    );
    assert_eq!(*seen.lock().unwrap(), [true]);
    assert!(!stored.payload.contains_key("enriched"));
    let in_store = orchestrator.store().get(stored.id).await.unwrap().unwrap();
    assert!(!in_store.payload.contains_key("enriched"));
}

/// Panics in every hook.
struct Panicker;

#[async_trait]
impl Component for Panicker {
    fn name(&self) -> &str {
        "panicker"
    }

    async fn on_initialize(&self) {
        panic!("on_initialize");
    }

    fn before_store(&self, artifact: &Artifact, outbox: &mut Vec<NewDelivery>) {
        let url = flock_models::WebhookUrl::parse("https://example.com/h").unwrap();
        outbox.push(NewDelivery::new(artifact, 1, url, None));
        panic!("before_store, after pushing");
    }

    async fn on_artifact_published(&self, _artifact: &Arc<Artifact>) -> Flow {
        panic!("on_artifact_published");
    }

    async fn on_before_schedule(
        &self,
        _agent: &str,
        _artifact: &Arc<Artifact>,
    ) -> ScheduleDecision {
        panic!("on_before_schedule");
    }

    async fn on_correlation_idle(&self, _correlation_id: Uuid) {
        panic!("on_correlation_idle");
    }

    async fn on_shutdown(&self) {
        panic!("on_shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_hooks_count_as_their_defaults() {
    let orchestrator = Orchestrator::builder()
        .component(Arc::new(Panicker))
        .agent(
            FnAgent::new("a", &["Idea"], &["Plan"])
                .transform("Plan")
                .build(),
        )
        .build()
        .await
        .unwrap();
    let correlation = Uuid::now_v7();
    // The delivery pushed before the panic is dropped, so the memory store accepts it.
    orchestrator
        .publish(correlation, draft("Idea", json!({})))
        .await
        .unwrap();
    assert_eq!(
        orchestrator.wait_idle(correlation, LONG).await,
        WaitOutcome::Idle
    );
    assert_eq!(
        types(&artifacts(&orchestrator, correlation).await),
        ["Idea", "Plan"]
    );
    let status = orchestrator.status(correlation).await.unwrap().unwrap();
    assert_eq!(
        status.state,
        WorkflowState::Completed,
        "hook panics are not workflow errors"
    );
    let report = orchestrator.shutdown(LONG).await;
    assert!(report.finished_in_time);
}

/// Reports, when a workflow goes idle, how many of its artifacts are stored.
struct IdleWatcher {
    orchestrator: Mutex<Option<Orchestrator>>,
    seen: mpsc::UnboundedSender<(Uuid, u64)>,
}

#[async_trait]
impl Component for IdleWatcher {
    fn name(&self) -> &str {
        "idle-watcher"
    }

    async fn on_correlation_idle(&self, correlation_id: Uuid) {
        let orchestrator = self.orchestrator.lock().unwrap().clone().unwrap();
        let page = orchestrator
            .store()
            .query(&ArtifactQuery::correlation(correlation_id))
            .await
            .unwrap();
        self.seen.send((correlation_id, page.total)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_correlation_idle_comes_after_the_last_artifact_is_stored() {
    let (seen, mut idle) = mpsc::unbounded_channel();
    let watcher = Arc::new(IdleWatcher {
        orchestrator: Mutex::new(None),
        seen,
    });
    let orchestrator = Orchestrator::builder()
        .component(Arc::clone(&watcher) as Arc<dyn Component>)
        .agent(
            FnAgent::new("a", &["Idea"], &["Plan"])
                .transform("Plan")
                .build(),
        )
        .agent(
            FnAgent::new("b", &["Plan"], &["Draft"])
                .transform("Draft")
                .build(),
        )
        .agent(
            FnAgent::new("b2", &["Plan"], &["Draft"])
                .transform("Draft")
                .build(),
        )
        .agent(
            FnAgent::new("c", &["Draft"], &["Final"])
                .transform("Final")
                .build(),
        )
        .build()
        .await
        .unwrap();
    *watcher.orchestrator.lock().unwrap() = Some(orchestrator.clone());

    let correlation = Uuid::now_v7();
    orchestrator
        .publish(correlation, draft("Idea", json!({})))
        .await
        .unwrap();
    let (which, stored) = tokio::time::timeout(LONG, idle.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(which, correlation);
    // Idea, Plan, two Drafts and a Final for each.
    assert_eq!(stored, 6);
    assert_eq!(
        orchestrator.wait_idle(correlation, LONG).await,
        WaitOutcome::Idle
    );
    orchestrator.shutdown(LONG).await;
    assert!(
        idle.try_recv().is_err(),
        "one idle call for one workflow that went idle once"
    );
}
