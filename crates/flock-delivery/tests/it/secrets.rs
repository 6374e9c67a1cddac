//! Secrets never show: not in `Debug` of any type, not in attempt records or views.

use std::sync::Arc;
use std::time::Duration;

use flock_context::Webhooks;
use flock_delivery::{
    DeliveryConfig, DeliveryState, Dispatcher, MemoryOutbox, MemoryStorage, Outbox,
    WebhookDeliveryComponent,
};
use flock_orchestrator::Component;
use flock_retry::RetryPolicy;
use time::OffsetDateTime;

use crate::receiver::{Receiver, Reply};
use crate::{Harness, artifact, delivery, requested, test_config};

const SECRET: &str = "top-secret-value-4711";

fn assert_clean(what: &str, text: &str) {
    assert!(!text.contains(SECRET), "{what} shows the secret: {text}");
    assert!(
        !text.contains("token=hidden"),
        "{what} shows the query: {text}"
    );
}

#[tokio::test]
async fn secrets_never_appear_in_debug_or_attempt_records() {
    let receiver = Receiver::start(vec![Reply::status(500)], Reply::status(410)).await;
    let url = receiver.url("/hook?token=hidden");
    let config = DeliveryConfig {
        retry: RetryPolicy {
            base_delay: Duration::from_millis(20),
            ..RetryPolicy::default()
        },
        ..test_config()
    };

    let d = delivery(&url, Some(SECRET));
    assert_clean("NewDelivery", &format!("{d:?}"));

    // A claimed delivery, straight from an outbox.
    let outbox = MemoryOutbox::new();
    outbox.enqueue_now(vec![d.clone()]).unwrap();
    let claimed = outbox
        .claim(OffsetDateTime::now_utc(), 1, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_clean("ClaimedDelivery", &format!("{claimed:?}"));
    assert_clean("MemoryOutbox", &format!("{outbox:?}"));

    // The component and the webhooks it asks.
    let webhooks = Arc::new(Webhooks::new(config.guard()));
    let workflow = webhooks.register(requested(&url, Some(SECRET))).unwrap();
    let component = WebhookDeliveryComponent::new(Arc::clone(&webhooks));
    assert_clean("WebhookDeliveryComponent", &format!("{component:?}"));
    assert_clean("Webhooks", &format!("{webhooks:?}"));

    // Attempts made through the dispatcher: one 500, then 410.
    let harness = Harness::start(config.clone());
    let mut pushed = Vec::new();
    component.before_store(&artifact(workflow, 1), &mut pushed);
    assert_clean("pushed deliveries", &format!("{pushed:?}"));
    let id = pushed[0].id;
    harness.storage.enqueue(pushed).await.unwrap();
    let view = harness.finished(id).await;
    assert_eq!(view.state, DeliveryState::Failed);
    assert_eq!(view.attempts.len(), 2);
    assert_clean("DeliveryView", &format!("{view:?}"));
    assert_clean("DeliveryView JSON", &serde_json::to_string(&view).unwrap());
    let listed = harness.storage.deliveries(workflow).await.unwrap();
    assert_clean(
        "listed deliveries",
        &serde_json::to_string(&listed).unwrap(),
    );
    for attempt in &view.attempts {
        assert_clean("attempt", &format!("{attempt:?}"));
    }
    assert_clean("MemoryStorage", &format!("{:?}", harness.storage));
    assert_clean("DispatcherHandle", &format!("{:?}", harness.dispatcher));

    let storage: Arc<dyn Outbox> = Arc::new(MemoryStorage::new());
    let dispatcher = Dispatcher::new(storage, config.clone()).unwrap();
    assert_clean("Dispatcher", &format!("{dispatcher:?}"));
    assert_clean("DeliveryConfig", &format!("{config:?}"));
}

/// Log lines written into memory.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Everything logged in this test process from the first call on, at debug level and above.
/// A global subscriber: a scoped one misses events when tests run in parallel threads.
fn captured_logs() -> &'static Captured {
    static CAPTURED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    CAPTURED.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
        captured
    })
}

#[tokio::test]
async fn logs_name_the_delivery_and_never_the_secret_or_the_query() {
    let captured = captured_logs();
    let receiver = Receiver::start(Vec::new(), Reply::status(500)).await;
    let harness = Harness::start(DeliveryConfig {
        retry: RetryPolicy {
            base_delay: Duration::from_millis(20),
            max_retries: 1,
            ..RetryPolicy::default()
        },
        ..test_config()
    });
    let failing = delivery(&receiver.url("/hook?token=hidden"), Some(SECRET));
    let (correlation_id, failing_id) = (failing.correlation_id, failing.id);
    harness.enqueue(failing).await;
    assert_eq!(
        harness.finished(failing_id).await.state,
        DeliveryState::Failed
    );

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let ours: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains(&failing_id.to_string()))
        .collect();
    let failed = ours
        .iter()
        .find(|l| l.contains("webhook delivery failed"))
        .unwrap_or_else(|| panic!("no failure logged:\n{logs}"));
    assert!(failed.contains("WARN"), "{failed}");
    assert!(failed.contains("attempts=2"), "{failed}");
    assert!(failed.contains("reason=\"exhausted\""), "{failed}");
    assert!(
        failed.contains(&format!("correlation_id={correlation_id}")),
        "{failed}"
    );
    assert!(failed.contains("sequence=1"), "{failed}");
    assert!(
        failed.contains(&format!("url={}", receiver.url("/hook"))),
        "{failed}"
    );
    assert!(
        ours.iter()
            .any(|l| l.contains("webhook attempt failed; retrying")),
        "{logs}"
    );
    assert_clean("logs", &logs);
}
