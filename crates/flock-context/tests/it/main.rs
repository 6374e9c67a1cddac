//! Integration tests of `flock-context`: the webhook owner (checks, registration, rollback,
//! sequences under contention, removal, secrets kept out of `Debug`) and the SSRF guard's policy.

mod ssrf;

use std::collections::HashSet;
use std::sync::Arc;

use flock_context::{SsrfGuard, StartError, Webhooks};
use flock_models::{
    Artifact, ArtifactDraft, RequestedWebhook, TypeName, WebhookConfig, WebhookForm, WebhookPayload,
};
use uuid::Uuid;

fn requested(url: &str, secret: Option<&str>, form: WebhookForm) -> RequestedWebhook {
    RequestedWebhook {
        config: WebhookConfig::new(url, secret).unwrap(),
        form,
    }
}

fn nested(url: &str, secret: Option<&str>) -> RequestedWebhook {
    requested(url, secret, WebhookForm::Nested)
}

fn artifact(correlation_id: Uuid) -> Artifact {
    let draft = ArtifactDraft::new(TypeName::new("Idea").unwrap(), serde_json::Map::new());
    Artifact::new(draft, "external", correlation_id)
}

fn owner() -> Webhooks {
    Webhooks::new(SsrfGuard::default())
}

#[test]
fn eight_threads_draw_every_number_exactly_once() {
    let webhooks = Arc::new(owner());
    let workflow = webhooks
        .register(nested("https://example.com/hook", None))
        .unwrap();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let webhooks = Arc::clone(&webhooks);
            let artifact = artifact(workflow);
            std::thread::spawn(move || {
                (0..10_000)
                    .map(|_| webhooks.deliveries_for(&artifact).remove(0).sequence)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (1..=80_000).collect::<Vec<u64>>());
}

#[test]
fn sequences_start_at_one_per_workflow_and_bodies_carry_them() {
    let webhooks = owner();
    let a = webhooks
        .register(nested("https://a.example/hook?token=1", Some("a-secret")))
        .unwrap();
    let b = webhooks
        .register(nested("https://b.example/hook", None))
        .unwrap();
    assert_ne!(a, b, "each registration gets a fresh correlation id");
    assert_eq!(webhooks.len(), 2);

    let first = artifact(a);
    let delivery = webhooks.deliveries_for(&first).remove(0);
    assert_eq!(delivery.sequence, 1);
    assert_eq!(delivery.correlation_id, a);
    assert_eq!(delivery.artifact_id, first.id);
    assert_eq!(delivery.url.as_str(), "https://a.example/hook?token=1");
    assert_eq!(delivery.secret.as_ref().unwrap().expose(), "a-secret");
    let body: WebhookPayload = serde_json::from_slice(&delivery.body).unwrap();
    assert_eq!((body.sequence, body.artifact.id), (1, first.id));
    assert_eq!(webhooks.deliveries_for(&artifact(a)).remove(0).sequence, 2);

    // Another workflow counts on its own, and has no secret.
    let other = webhooks.deliveries_for(&artifact(b)).remove(0);
    assert_eq!((other.sequence, other.secret), (1, None));
    assert_eq!(webhooks.deliveries_for(&artifact(a)).remove(0).sequence, 3);

    // A workflow without a webhook gets nothing.
    assert!(
        webhooks
            .deliveries_for(&artifact(Uuid::now_v7()))
            .is_empty()
    );
}

#[test]
fn a_webhook_without_a_secret_gets_deliveries_without_one() {
    let webhooks = owner();
    let without = webhooks
        .register(requested(
            "https://example.com/h",
            None,
            WebhookForm::Shorthand,
        ))
        .unwrap();
    let with = webhooks
        .register(nested("https://example.com/h", Some("own")))
        .unwrap();
    let delivery = |workflow| webhooks.deliveries_for(&artifact(workflow)).remove(0);
    // The sender signs it with its tenant's secrets; the owner adds none.
    assert_eq!(delivery(without).secret, None);
    assert_eq!(delivery(with).secret.unwrap().expose(), "own");
}

#[test]
fn refused_literal_addresses_name_the_field_the_request_used() {
    let webhooks = owner();
    for (url, form, field) in [
        ("http://127.0.0.1:9/h", WebhookForm::Nested, "webhook.url"),
        (
            "http://[::ffff:127.0.0.1]/h",
            WebhookForm::Shorthand,
            "webhook_url",
        ),
        (
            "http://localhost:8080/",
            WebhookForm::Shorthand,
            "webhook_url",
        ),
        ("http://10.1.2.3/", WebhookForm::Nested, "webhook.url"),
    ] {
        let refused = webhooks
            .register(requested(url, Some("k"), form))
            .expect_err(url);
        assert_eq!(refused.field(), field, "{url}");
        let message = refused.to_string();
        assert!(
            message.starts_with(&format!("{field}: webhooks may not be sent there: ")),
            "{message}"
        );
        assert!(message.contains("refused by the SSRF guard"), "{message}");
        let host = refused.refused().host();
        assert_eq!(
            host,
            url.contains("localhost").then_some("localhost"),
            "{url}"
        );
    }
    assert!(webhooks.is_empty(), "nothing refused was registered");

    // A name passes here (it is checked where the client resolves it), and the allow-list
    // opens what it names.
    assert!(
        webhooks
            .register(nested("https://example.com/", None))
            .is_ok()
    );
    let local = Webhooks::new(SsrfGuard::new(["127.0.0.1/32".parse().unwrap()]));
    assert!(local.register(nested("http://127.0.0.1:9/h", None)).is_ok());
    assert!(local.register(nested("http://localhost:9/h", None)).is_ok());
    assert!(local.register(nested("http://[::1]:9/h", None)).is_err());
    assert_eq!(local.guard().allowed().len(), 1);
}

#[tokio::test]
async fn publish_registers_first_and_keeps_the_webhook_when_the_publish_succeeds() {
    let webhooks = owner();
    let (correlation_id, seen) = webhooks
        .publish(
            vec![nested("https://example.com/h", None)],
            |correlation_id| {
                // The webhook is registered before the publish runs, so its first artifact
                // gets a delivery.
                let delivery = webhooks.deliveries_for(&artifact(correlation_id)).pop();
                async move { Ok::<_, String>((correlation_id, delivery.map(|d| d.sequence))) }
            },
        )
        .await
        .unwrap();
    assert_eq!(seen, (correlation_id, Some(1)));
    assert!(webhooks.is_registered(correlation_id));
    assert_eq!(
        webhooks
            .deliveries_for(&artifact(correlation_id))
            .remove(0)
            .sequence,
        2
    );
}

#[tokio::test]
async fn a_failed_publish_rolls_the_registration_back() {
    let webhooks = owner();
    let mut given = None;
    let err = webhooks
        .publish(
            vec![nested("https://example.com/h", None)],
            |correlation_id| {
                given = Some(correlation_id);
                assert!(webhooks.is_registered(correlation_id));
                async { Err::<(), _>("the store is down") }
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StartError::Publish("the store is down")),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "the store is down");
    assert!(!webhooks.is_registered(given.unwrap()));
    assert!(webhooks.is_empty());
}

#[tokio::test]
async fn a_refused_webhook_publishes_nothing() {
    let webhooks = owner();
    let mut ran = false;
    let err = webhooks
        .publish(
            vec![requested(
                "http://169.254.169.254/latest",
                None,
                WebhookForm::Shorthand,
            )],
            |_| {
                ran = true;
                async { Ok::<_, String>(()) }
            },
        )
        .await
        .unwrap_err();
    let StartError::AddressRefused(refused) = err else {
        panic!("expected a refusal, got {err:?}");
    };
    assert_eq!(refused.field(), "webhook_url");
    assert!(!ran, "the publish must not run");
    assert!(webhooks.is_empty());
}

#[tokio::test]
async fn publish_without_a_webhook_registers_nothing() {
    let webhooks = owner();
    let mut ids = HashSet::new();
    for _ in 0..3 {
        let (correlation_id, ()) = webhooks
            .publish(Vec::new(), |_| async { Ok::<_, String>(()) })
            .await
            .unwrap();
        assert!(
            ids.insert(correlation_id),
            "a fresh correlation id each time"
        );
        assert!(
            webhooks
                .deliveries_for(&artifact(correlation_id))
                .is_empty()
        );
    }
    assert!(webhooks.is_empty());
    let err = webhooks
        .publish(Vec::new(), |_| async { Err::<(), _>("down") })
        .await
        .unwrap_err();
    assert!(matches!(err, StartError::Publish("down")));
}

#[test]
fn forget_removes_a_workflow_once() {
    let webhooks = owner();
    let a = webhooks
        .register(nested("http://a.example/", None))
        .unwrap();
    let b = webhooks
        .register(nested("http://b.example/", None))
        .unwrap();
    assert_eq!(webhooks.len(), 2);
    assert!(webhooks.forget(a));
    assert!(!webhooks.forget(a));
    assert!(!webhooks.is_registered(a));
    assert!(webhooks.deliveries_for(&artifact(a)).is_empty());
    assert!(webhooks.is_registered(b));
    assert!(!webhooks.forget(Uuid::now_v7()));
    assert_eq!(webhooks.len(), 1);
}

#[test]
fn debug_redacts_every_secret() {
    let webhooks = owner();
    let workflow = webhooks
        .register(nested(
            "https://example.com/h?token=hidden",
            Some("very-secret-value"),
        ))
        .unwrap();
    let delivery = webhooks.deliveries_for(&artifact(workflow)).remove(0);
    for debug in [
        format!("{webhooks:?}"),
        format!("{webhooks:#?}"),
        format!("{delivery:?}"),
    ] {
        for hidden in ["very-secret-value", "token=hidden"] {
            assert!(!debug.contains(hidden), "{hidden} leaked: {debug}");
        }
    }
    assert!(format!("{delivery:?}").contains("[redacted]"));
    assert!(format!("{webhooks:?}").contains("workflows: 1"));
    assert_eq!(delivery.secret.unwrap().expose(), "very-secret-value");
}
