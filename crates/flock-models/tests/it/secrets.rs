//! Secrets: limits, and never in `Debug` output.

use flock_models::{ArtifactPublishRequest, Secret, SyncPublishRequest, WebhookConfig};
use serde_json::json;

const SECRET: &str = "s3cr3t-value-that-must-not-leak";

#[test]
fn secret_limits() {
    let err = Secret::new("").unwrap_err();
    assert!(
        err.message()
            .contains("omit the field for unsigned webhooks"),
        "{err}"
    );
    assert!(Secret::new("x".repeat(256)).is_ok());
    assert!(
        Secret::new("x".repeat(257))
            .unwrap_err()
            .message()
            .contains("at most 256")
    );
    assert_eq!(Secret::new("abc").unwrap().expose(), "abc");
    // In characters, as the document's `maxLength` counts them.
    assert!(Secret::new("é".repeat(256)).is_ok());
    assert!(
        Secret::new("é".repeat(257))
            .unwrap_err()
            .message()
            .contains("257 characters long")
    );
}

#[test]
fn the_documented_pattern_is_what_new_accepts() {
    let pattern = regex::Regex::new(Secret::PATTERN).unwrap();
    for text in [
        "whsec_QQ==",
        "whsec_QUI=",
        "whsec_QUJD",
        "whsec",
        "WHSEC_!!",
        "plain",
        "whsec_",
        "whsec_QR==",
        "whsec_QUJ=",
        "whsec_QQ",
        "whsec_!!",
        "whsec_QQ==\n",
    ] {
        assert_eq!(
            pattern.is_match(text),
            Secret::new(text).is_ok(),
            "{text:?}"
        );
    }
}

#[test]
fn a_secret_always_signs() {
    // A `whsec_` secret must carry a base64 key, in the words of the signing crate.
    for (text, error) in [
        ("whsec_", flock_signing::KeyError::EmptyKey),
        ("whsec_!!", flock_signing::KeyError::InvalidBase64),
        ("whsec_not base64", flock_signing::KeyError::InvalidBase64),
    ] {
        let err = Secret::new(text).unwrap_err();
        assert_eq!(err.field_name(), None, "{text}: the caller names the field");
        assert_eq!(err.message(), error.to_string(), "{text}");
        let key = &text["whsec_".len()..];
        assert!(
            key.is_empty() || !err.to_string().contains(key),
            "the error repeats the secret: {err}"
        );
    }
    // Whatever was accepted signs exactly as the signing crate signs its text.
    for text in [
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "plain",
        "whsec",
        "WHSEC_!!",
    ] {
        let secret = Secret::new(text).unwrap();
        let key = secret.signing_key();
        let expected = flock_signing::SigningKey::new(text).unwrap();
        assert_eq!(
            key.flock_signature(b"body"),
            expected.flock_signature(b"body")
        );
        assert_eq!(
            key.standard_signature("msg", 1, b"body"),
            expected.standard_signature("msg", 1, b"body")
        );
    }
    let err = serde_json::from_value::<Secret>(json!("whsec_!!")).unwrap_err();
    assert!(err.to_string().contains("base64"), "{err}");
}

#[test]
fn debug_of_anything_holding_a_secret_is_redacted() {
    let secret = Secret::new(SECRET).unwrap();
    let config = WebhookConfig::new("https://example.com/hook", Some(SECRET)).unwrap();
    let publish = ArtifactPublishRequest::from_value(json!({
        "type": "Idea", "payload": {}, "webhook": {"url": "https://example.com/h", "secret": SECRET}
    }))
    .unwrap();
    let sync = SyncPublishRequest::from_value(json!({
        "type": "Idea", "payload": {}, "webhook_url": "https://example.com/h", "webhook_secret": SECRET
    }))
    .unwrap();
    for debug in [
        format!("{secret:?}"),
        format!("{config:?}"),
        format!("{config:#?}"),
        format!("{publish:?}"),
        format!("{sync:?}"),
    ] {
        assert!(!debug.contains(SECRET), "leaked: {debug}");
        assert!(debug.contains("[redacted]"), "{debug}");
    }
}

#[test]
fn secret_deserializes_with_validation() {
    let config: WebhookConfig =
        serde_json::from_value(json!({"url": "https://example.com/", "secret": "k"})).unwrap();
    assert_eq!(config.secret.unwrap().expose(), "k");
    let err =
        serde_json::from_value::<WebhookConfig>(json!({"url": "https://e.com/", "secret": ""}))
            .unwrap_err();
    assert!(err.to_string().contains("omit the field"), "{err}");
}

#[test]
fn new_delivery_debug_hides_secret_and_body() {
    let draft = flock_models::ArtifactDraft::from_value(
        json!({"type": "Idea", "payload": {"private": "payload-text"}}),
        "",
    )
    .unwrap();
    let artifact = flock_models::Artifact::new(draft, "external", uuid::Uuid::now_v7());
    let config = WebhookConfig::new("https://example.com/h?token=abc", Some(SECRET)).unwrap();
    let delivery = flock_models::NewDelivery::new(&artifact, 1, config.url, config.secret);
    let debug = format!("{delivery:?}");
    for hidden in [SECRET, "payload-text", "token=abc"] {
        assert!(!debug.contains(hidden), "{hidden} leaked: {debug}");
    }
    assert!(debug.contains("[redacted]"), "{debug}");
    let body: flock_models::WebhookPayload = serde_json::from_slice(&delivery.body).unwrap();
    assert_eq!(body.sequence, 1);
    assert_eq!(body.artifact.id, artifact.id);
}
