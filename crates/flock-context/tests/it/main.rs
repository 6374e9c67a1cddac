//! Integration tests of `flock-context`: sequences under contention, scopes, the registry.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use flock_context::{ContextRegistry, WebhookContext, current, scope};
use flock_models::WebhookConfig;
use uuid::Uuid;

fn context(secret: Option<&str>) -> Arc<WebhookContext> {
    let config = WebhookConfig::new("https://example.com/hook", secret).unwrap();
    Arc::new(WebhookContext::new(Uuid::now_v7(), config))
}

#[test]
fn eight_threads_draw_every_number_exactly_once() {
    let ctx = context(None);
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let ctx = Arc::clone(&ctx);
            std::thread::spawn(move || (0..10_000).map(|_| ctx.next_sequence()).collect::<Vec<_>>())
        })
        .collect();
    let mut all: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (1..=80_000).collect::<Vec<u64>>());
    assert_eq!(ctx.issued(), 80_000);
}

#[test]
fn sequence_starts_at_one() {
    let ctx = context(None);
    assert_eq!(ctx.issued(), 0);
    assert_eq!(ctx.next_sequence(), 1);
    assert_eq!(ctx.next_sequence(), 2);
}

#[tokio::test]
async fn current_is_none_outside_a_scope() {
    assert!(current().is_none());
    let ctx = context(None);
    let inside = scope(Arc::clone(&ctx), async {
        current().map(|c| c.correlation_id())
    })
    .await;
    assert_eq!(inside, Some(ctx.correlation_id()));
    assert!(
        current().is_none(),
        "the scope must not leak past its future"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_scopes_stay_isolated() {
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let ctx = context(None);
            tokio::spawn(async move {
                let id = ctx.correlation_id();
                scope(ctx, async move {
                    for _ in 0..20 {
                        // Yield and sleep so that tasks interleave on the worker threads.
                        tokio::time::sleep(Duration::from_millis(i % 3)).await;
                        tokio::task::yield_now().await;
                        assert_eq!(current().unwrap().correlation_id(), id);
                    }
                    id
                })
                .await
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for task in tasks {
        assert!(seen.insert(task.await.unwrap()));
    }
    assert_eq!(seen.len(), 64);
}

#[tokio::test]
async fn scopes_nest() {
    let outer = context(None);
    let inner = context(None);
    let (o, i, back) = scope(Arc::clone(&outer), async {
        let o = current().unwrap().correlation_id();
        let i = scope(Arc::clone(&inner), async {
            current().unwrap().correlation_id()
        })
        .await;
        (o, i, current().unwrap().correlation_id())
    })
    .await;
    assert_eq!(
        (o, i, back),
        (
            outer.correlation_id(),
            inner.correlation_id(),
            outer.correlation_id()
        )
    );
}

#[test]
fn registry_insert_get_remove() {
    let registry = ContextRegistry::new();
    assert!(registry.is_empty());
    let a = context(Some("a"));
    let b = context(None);
    assert!(registry.insert(Arc::clone(&a)).is_none());
    assert!(registry.insert(Arc::clone(&b)).is_none());
    assert_eq!(registry.len(), 2);

    let found = registry.get(&a.correlation_id()).unwrap();
    assert!(Arc::ptr_eq(&found, &a));
    // The shared context keeps one counter for everyone who holds it.
    assert_eq!(found.next_sequence(), 1);
    assert_eq!(a.next_sequence(), 2);

    let replaced = registry.insert(context(None));
    assert!(replaced.is_none());
    assert!(Arc::ptr_eq(
        &registry.remove(&b.correlation_id()).unwrap(),
        &b
    ));
    assert!(registry.get(&b.correlation_id()).is_none());
    assert!(registry.remove(&b.correlation_id()).is_none());
    assert!(registry.get(&Uuid::now_v7()).is_none());
    assert_eq!(registry.len(), 2);
}

#[test]
fn registry_insert_replaces_same_correlation() {
    let registry = ContextRegistry::new();
    let id = Uuid::now_v7();
    let first = Arc::new(WebhookContext::new(
        id,
        WebhookConfig::new("http://a.example/", None).unwrap(),
    ));
    let second = Arc::new(WebhookContext::new(
        id,
        WebhookConfig::new("http://b.example/", None).unwrap(),
    ));
    registry.insert(Arc::clone(&first));
    let old = registry.insert(Arc::clone(&second)).unwrap();
    assert!(Arc::ptr_eq(&old, &first));
    assert_eq!(
        registry.get(&id).unwrap().url().as_str(),
        "http://b.example/"
    );
}

#[test]
fn debug_redacts_the_secret() {
    let ctx = context(Some("very-secret-value"));
    let registry = ContextRegistry::new();
    registry.insert(Arc::clone(&ctx));
    for debug in [format!("{ctx:?}"), format!("{registry:?}")] {
        assert!(!debug.contains("very-secret-value"), "{debug}");
        assert!(debug.contains("[redacted]"), "{debug}");
    }
    assert_eq!(ctx.secret().unwrap().expose(), "very-secret-value");
}
