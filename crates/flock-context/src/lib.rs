//! Per-workflow webhook context: where a workflow's webhooks go, its sequence counter, a
//! task-local scope for code that runs inside the workflow, and a registry by correlation id for
//! code that runs anywhere else.
#![doc = include_str!("../README.md")]

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use flock_models::{Secret, WebhookConfig, WebhookUrl};
use uuid::Uuid;

/// One workflow's webhook: its URL and secret, and the counter that numbers its artifacts.
/// `Debug` shows the secret as `[redacted]`.
#[derive(Debug)]
pub struct WebhookContext {
    correlation_id: Uuid,
    url: WebhookUrl,
    secret: Option<Secret>,
    /// The last sequence number handed out; 0 before the first.
    sequence: AtomicU64,
}

impl WebhookContext {
    /// The context of workflow `correlation_id` sending to `webhook`.
    pub fn new(correlation_id: Uuid, webhook: WebhookConfig) -> Self {
        WebhookContext {
            correlation_id,
            url: webhook.url,
            secret: webhook.secret,
            sequence: AtomicU64::new(0),
        }
    }

    /// The next sequence number: 1 first, then 2, 3, ...; each number exactly once, whatever
    /// the number of threads asking.
    pub fn next_sequence(&self) -> u64 {
        self.sequence.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// How many sequence numbers have been handed out.
    pub fn issued(&self) -> u64 {
        self.sequence.load(Ordering::Relaxed)
    }

    /// The workflow.
    pub fn correlation_id(&self) -> Uuid {
        self.correlation_id
    }

    /// Where its webhooks go.
    pub fn url(&self) -> &WebhookUrl {
        &self.url
    }

    /// The secret that signs them, if any.
    pub fn secret(&self) -> Option<&Secret> {
        self.secret.as_ref()
    }
}

tokio::task_local! {
    static CURRENT: Arc<WebhookContext>;
}

/// Runs `future` with `context` as the [`current`] context of that task. Scopes nest, and
/// concurrent tasks each see only their own.
pub async fn scope<F: Future>(context: Arc<WebhookContext>, future: F) -> F::Output {
    CURRENT.scope(context, future).await
}

/// The context of the [`scope`] this task is running in; `None` outside any scope.
pub fn current() -> Option<Arc<WebhookContext>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// Webhook contexts by correlation id, for work that runs outside the request's task (agents
/// and components spawned on other tasks find their workflow's context here).
#[derive(Debug, Default)]
pub struct ContextRegistry {
    contexts: RwLock<HashMap<Uuid, Arc<WebhookContext>>>,
}

impl ContextRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `context` under its correlation id, returning the one it replaces.
    pub fn insert(&self, context: Arc<WebhookContext>) -> Option<Arc<WebhookContext>> {
        let mut map = self
            .contexts
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        map.insert(context.correlation_id(), context)
    }

    /// The context of workflow `correlation_id`, if registered.
    pub fn get(&self, correlation_id: &Uuid) -> Option<Arc<WebhookContext>> {
        let map = self.contexts.read().unwrap_or_else(PoisonError::into_inner);
        map.get(correlation_id).cloned()
    }

    /// Unregisters and returns the context of workflow `correlation_id`.
    pub fn remove(&self, correlation_id: &Uuid) -> Option<Arc<WebhookContext>> {
        let mut map = self
            .contexts
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        map.remove(correlation_id)
    }

    /// How many contexts are registered.
    pub fn len(&self) -> usize {
        self.contexts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
