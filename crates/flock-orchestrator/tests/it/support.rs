//! Test helpers: agents made of closures, drafts, temporary directories, store reads.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flock_models::{Artifact, ArtifactDraft, TypeName};
use flock_orchestrator::{
    Agent, AgentContext, AgentError, ArtifactQuery, Orchestrator, Subscription,
};
use futures_util::future::BoxFuture;
use serde_json::{Map, Value};
use uuid::Uuid;

/// An upper bound for waits that should end much sooner; reaching it fails the test.
pub(crate) const LONG: Duration = Duration::from_secs(60);

pub(crate) fn ty(name: &str) -> TypeName {
    TypeName::new(name).unwrap()
}

pub(crate) fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

pub(crate) fn draft(type_name: &str, payload: Value) -> ArtifactDraft {
    ArtifactDraft::new(ty(type_name), object(payload))
}

type Handler = Arc<
    dyn Fn(
            AgentContext,
            Arc<Artifact>,
        ) -> BoxFuture<'static, Result<Vec<ArtifactDraft>, AgentError>>
        + Send
        + Sync,
>;

/// An agent whose handler is a closure over the one consumed artifact.
pub(crate) struct FnAgent {
    name: String,
    subscriptions: Vec<Subscription>,
    publishes: Vec<TypeName>,
    timeout: Option<Duration>,
    handler: Handler,
}

impl FnAgent {
    /// An agent consuming `consumes`, allowed to publish `publishes`, doing nothing.
    pub(crate) fn new(name: &str, consumes: &[&str], publishes: &[&str]) -> Self {
        FnAgent {
            name: name.to_owned(),
            subscriptions: vec![Subscription::to(consumes.iter().map(|t| ty(t)))],
            publishes: publishes.iter().map(|t| ty(t)).collect(),
            timeout: None,
            handler: Arc::new(|_, _| Box::pin(async { Ok(Vec::new()) })),
        }
    }

    pub(crate) fn subscription(mut self, subscription: Subscription) -> Self {
        self.subscriptions = vec![subscription];
        self
    }

    pub(crate) fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub(crate) fn handler<F, Fut>(mut self, handler: F) -> Self
    where
        F: Fn(AgentContext, Arc<Artifact>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<ArtifactDraft>, AgentError>> + Send + 'static,
    {
        self.handler = Arc::new(move |ctx, input| Box::pin(handler(ctx, input)));
        self
    }

    /// Publishes one `to` artifact per input, linking back with `from` and counting `hops`.
    pub(crate) fn transform(self, to: &'static str) -> Self {
        self.handler(move |ctx, input| async move {
            if ctx.correlation_id != input.correlation_id {
                return Err(AgentError::Failed("ran under a foreign correlation".into()));
            }
            let hops = input
                .payload
                .get("hops")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            Ok(vec![draft(
                to,
                serde_json::json!({"from": input.id, "hops": hops + 1}),
            )])
        })
    }

    pub(crate) fn build(self) -> Arc<dyn Agent> {
        Arc::new(self)
    }
}

#[async_trait]
impl Agent for FnAgent {
    fn name(&self) -> &str {
        &self.name
    }

    fn subscriptions(&self) -> &[Subscription] {
        &self.subscriptions
    }

    fn publishes(&self) -> &[TypeName] {
        &self.publishes
    }

    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    async fn run(
        &self,
        ctx: AgentContext,
        inputs: Vec<Arc<Artifact>>,
    ) -> Result<Vec<ArtifactDraft>, AgentError> {
        assert_eq!(inputs.len(), 1, "one artifact per run");
        let input = Arc::clone(&inputs[0]);
        (self.handler)(ctx, input).await
    }
}

/// Every artifact of workflow `correlation_id`, in store order.
pub(crate) async fn artifacts(orchestrator: &Orchestrator, correlation_id: Uuid) -> Vec<Artifact> {
    orchestrator
        .store()
        .query(&ArtifactQuery::correlation(correlation_id))
        .await
        .unwrap()
        .items
}

/// The types of `artifacts`, in order.
pub(crate) fn types(artifacts: &[Artifact]) -> Vec<&str> {
    artifacts.iter().map(|a| a.type_name.as_str()).collect()
}

/// A directory removed when dropped.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> Self {
        let path = std::env::temp_dir().join(format!("flock-orchestrator-it-{}", Uuid::now_v7()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    /// Writes a script file and returns its path as a string.
    pub(crate) fn script(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
