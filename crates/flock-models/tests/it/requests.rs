//! Publish requests: the accepted shapes and every rejection with the field it names.

use std::time::Duration;

use flock_models::{
    Artifact, ArtifactPublishRequest, ErrorBody, PublishResponse, SyncPublishRequest,
    SyncPublishResponse, WebhookConfig, WebhookForm, WebhookUrl, timestamp,
};
use serde_json::{Value, json};
use uuid::Uuid;

#[test]
fn publish_request_with_nested_webhook() {
    let req = ArtifactPublishRequest::from_value(json!({
        "type": "Idea",
        "payload": {"title": "x"},
        "tags": ["z", "a"],
        "webhook": {"url": "https://example.com/hook?token=1", "secret": "k"}
    }))
    .unwrap();
    assert_eq!(req.type_name, "Idea");
    assert_eq!(req.tags.iter().collect::<Vec<_>>(), ["a", "z"]);
    let requested = req.webhooks.into_iter().next().unwrap();
    assert_eq!(requested.form, WebhookForm::Nested);
    let webhook = requested.config;
    assert_eq!(webhook.url.as_str(), "https://example.com/hook?token=1");
    assert_eq!(webhook.url.for_logs(), "https://example.com/hook");
    assert_eq!(webhook.secret.unwrap().expose(), "k");
}

#[test]
fn shorthand_equals_nested_form() {
    let nested = ArtifactPublishRequest::from_value(json!({
        "type": "Idea", "payload": {}, "webhook": {"url": "http://example.com/h", "secret": "k"}
    }))
    .unwrap();
    let short = ArtifactPublishRequest::from_value(json!({
        "type": "Idea", "payload": {}, "webhook_url": "http://example.com/h", "webhook_secret": "k"
    }))
    .unwrap();
    // The same request in every respect but the form it was written in, which errors follow.
    let (nested_draft, nested_webhook) = nested.into_parts();
    let (short_draft, short_webhook) = short.into_parts();
    assert_eq!(nested_draft, short_draft);
    let (nested_webhook, short_webhook) = (nested_webhook[0].clone(), short_webhook[0].clone());
    assert_eq!(nested_webhook.config, short_webhook.config);
    assert_eq!(nested_webhook.form, WebhookForm::Nested);
    assert_eq!(short_webhook.form, WebhookForm::Shorthand);
    assert_eq!(
        (
            WebhookForm::Nested.url_field(),
            WebhookForm::Nested.secret_field()
        ),
        ("webhook.url".to_owned(), "webhook.secret".to_owned())
    );
    assert_eq!(
        (
            WebhookForm::Shorthand.url_field(),
            WebhookForm::Shorthand.secret_field()
        ),
        ("webhook_url".to_owned(), "webhook_secret".to_owned())
    );
    let unsigned = ArtifactPublishRequest::from_value(
        json!({"type": "I", "payload": {}, "webhook_url": "http://e.com"}),
    )
    .unwrap();
    assert!(unsigned.webhooks[0].config.secret.is_none());
    // A `null` shorthand field is absent: the nested form is what the request used.
    let nested_with_null = ArtifactPublishRequest::from_value(json!({
        "type": "I", "payload": {}, "webhook": {"url": "http://e.com"}, "webhook_url": null
    }))
    .unwrap();
    assert_eq!(nested_with_null.webhooks[0].form, WebhookForm::Nested);
    let none =
        ArtifactPublishRequest::from_value(json!({"type": "I", "payload": {}, "webhook": null}))
            .unwrap();
    assert!(none.webhooks.is_empty());
}

/// Every rejection: (body, field, words the message must contain).
#[test]
fn publish_rejections_name_their_field() {
    let long_url = format!("https://example.com/{}", "a".repeat(2048));
    let cases: Vec<(Value, Option<&str>, &str)> = vec![
        (json!([1]), None, "JSON object"),
        (json!({"payload": {}}), Some("type"), "required"),
        (
            json!({"type": "", "payload": {}}),
            Some("type"),
            "must not be empty",
        ),
        (
            json!({"type": "a b", "payload": {}}),
            Some("type"),
            "only ASCII letters",
        ),
        (
            json!({"type": "x".repeat(257), "payload": {}}),
            Some("type"),
            "at most 256",
        ),
        (json!({"type": "I"}), Some("payload"), "required"),
        (
            json!({"type": "I", "payload": "text"}),
            Some("payload"),
            "JSON object",
        ),
        (
            json!({"type": "I", "payload": [1]}),
            Some("payload"),
            "JSON object",
        ),
        (
            json!({"type": "I", "payload": {}, "colour": "red"}),
            Some("colour"),
            "unknown field `colour`",
        ),
        (
            json!({"type": "I", "payload": {}, "webhook": "http://e.com"}),
            Some("webhook"),
            "JSON object",
        ),
        (
            json!({"type": "I", "payload": {}, "webhook": {}}),
            Some("webhook.url"),
            "required",
        ),
        (
            json!({"type": "I", "payload": {}, "webhook": {"url": 5}}),
            Some("webhook.url"),
            "string",
        ),
        (
            json!({"type": "I", "payload": {}, "webhook": {"url": "/relative"}}),
            Some("webhook.url"),
            "not an absolute URL",
        ),
        (
            json!({"type": "I", "payload": {}, "webhook": {"url": "ftp://e.com/x"}}),
            Some("webhook.url"),
            "http or https",
        ),
        (
            json!({"type": "I", "payload": {}, "webhook": {"url": "https://user:pw@e.com/"}}),
            Some("webhook.url"),
            "user name or password",
        ),
        (
            json!({"type": "I", "payload": {}, "webhook": {"url": "https://user@e.com/"}}),
            Some("webhook.url"),
            "user name or password",
        ),
        (
            json!({"type": "I", "payload": {}, "webhook": {"url": long_url}}),
            Some("webhook.url"),
            "at most 2048",
        ),
        (
            json!({"type": "I", "payload": {}, "webhook": {"url": "http://e.com", "secret": ""}}),
            Some("webhook.secret"),
            "omit the field for unsigned webhooks",
        ),
        (
            json!({"type": "I", "payload": {}, "webhook": {"url": "http://e.com", "secret": "s".repeat(257)}}),
            Some("webhook.secret"),
            "at most 256",
        ),
        (
            json!({"type": "I", "payload": {}, "webhook": {"url": "http://e.com", "secret": "whsec_!!"}}),
            Some("webhook.secret"),
            "must be base64 after the prefix",
        ),
        (
            json!({"type": "I", "payload": {}, "webhook": {"url": "http://e.com", "secret": "whsec_"}}),
            Some("webhook.secret"),
            "must have a key after the prefix",
        ),
        (
            json!({"type": "I", "payload": {}, "webhook": {"url": "http://e.com", "extra": 1}}),
            Some("webhook.extra"),
            "unknown field",
        ),
        (
            json!({"type": "I", "payload": {}, "webhook": {"url": "http://e.com"}, "webhook_url": "http://e.com"}),
            Some("webhook"),
            "not both",
        ),
        (
            json!({"type": "I", "payload": {}, "webhook": {"url": "http://e.com"}, "webhook_secret": "k"}),
            Some("webhook"),
            "not both",
        ),
        (
            json!({"type": "I", "payload": {}, "webhook_secret": "k"}),
            Some("webhook_secret"),
            "needs `webhook_url`",
        ),
        (
            json!({"type": "I", "payload": {}, "webhook_url": "nope"}),
            Some("webhook_url"),
            "not an absolute URL",
        ),
        (
            json!({"type": "I", "payload": {}, "webhook_url": "http://e.com", "webhook_secret": ""}),
            Some("webhook_secret"),
            "omit the field",
        ),
        (
            json!({"type": "I", "payload": {}, "webhook_url": "http://e.com", "webhook_secret": "whsec_not base64"}),
            Some("webhook_secret"),
            "must be base64 after the prefix",
        ),
        (
            json!({"type": "I", "payload": {}, "webhook_url": "http://e.com", "webhook_secret": "whsec_"}),
            Some("webhook_secret"),
            "must have a key after the prefix",
        ),
        (
            json!({"type": "I", "payload": {}, "webhook_url": 1}),
            Some("webhook_url"),
            "string",
        ),
        (
            json!({"type": "I", "payload": {}, "timeout": 5}),
            Some("timeout"),
            "unknown field",
        ),
    ];
    for (body, field, words) in cases {
        let err = ArtifactPublishRequest::from_value(body.clone()).unwrap_err();
        assert_eq!(err.field_name(), field, "{body}: {err}");
        assert!(err.message().contains(words), "{body}: {err}");
    }
}

#[test]
fn sync_request_defaults_and_limits() {
    let req = SyncPublishRequest::from_value(json!({"type": "I", "payload": {}})).unwrap();
    assert_eq!(req.timeout, Duration::from_secs(30));
    assert!(req.filters.type_names.is_empty() && req.filters.produced_by.is_empty());

    let req = SyncPublishRequest::from_value(json!({
        "type": "I", "payload": {}, "timeout": 2.5,
        "filters": {"type_names": ["A", "B"], "produced_by": ["writer"]}
    }))
    .unwrap();
    assert_eq!(req.timeout, Duration::from_millis(2500));
    assert_eq!(req.filters.type_names.len(), 2);
    for ok in [1, 300] {
        assert!(
            SyncPublishRequest::from_value(json!({"type": "I", "payload": {}, "timeout": ok}))
                .is_ok()
        );
    }

    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"type": "I", "payload": {}, "timeout": 0}),
            "timeout",
            "from 1 to 300",
        ),
        (
            json!({"type": "I", "payload": {}, "timeout": 0.5}),
            "timeout",
            "out of range",
        ),
        (
            json!({"type": "I", "payload": {}, "timeout": 301}),
            "timeout",
            "out of range",
        ),
        (
            json!({"type": "I", "payload": {}, "timeout": -1}),
            "timeout",
            "out of range",
        ),
        (
            json!({"type": "I", "payload": {}, "timeout": "30"}),
            "timeout",
            "expected a number",
        ),
        (
            json!({"type": "I", "payload": {}, "filters": []}),
            "filters",
            "JSON object",
        ),
        (
            json!({"type": "I", "payload": {}, "filters": {"types": []}}),
            "filters.types",
            "unknown field",
        ),
        (
            json!({"type": "I", "payload": {}, "filters": {"type_names": "A"}}),
            "filters.type_names",
            "array",
        ),
        (
            json!({"type": "I", "payload": {}, "filters": {"type_names": ["ok", "b a"]}}),
            "filters.type_names[1]",
            "only ASCII",
        ),
        (
            json!({"type": "I", "payload": {}, "filters": {"produced_by": [1]}}),
            "filters.produced_by[0]",
            "string",
        ),
        (
            json!({"type": "I", "payload": {}, "webhook": {"url": "x"}}),
            "webhook.url",
            "absolute",
        ),
    ];
    for (body, field, words) in cases {
        let err = SyncPublishRequest::from_value(body.clone()).unwrap_err();
        assert_eq!(err.field_name(), Some(field), "{body}: {err}");
        assert!(err.message().contains(words), "{body}: {err}");
    }
}

#[test]
fn sync_filters_match_type_and_producer() {
    let req = SyncPublishRequest::from_value(json!({
        "type": "I", "payload": {}, "filters": {"type_names": ["A"], "produced_by": ["w"]}
    }))
    .unwrap();
    let make = |t: &str, by: &str| {
        let draft =
            flock_models::ArtifactDraft::from_value(json!({"type": t, "payload": {}}), "").unwrap();
        Artifact::new(draft, by, Uuid::now_v7())
    };
    assert!(req.filters.matches(&make("A", "w")));
    assert!(!req.filters.matches(&make("B", "w")));
    assert!(!req.filters.matches(&make("A", "external")));
}

#[test]
fn urls_keep_their_query_but_logs_do_not() {
    let url = WebhookUrl::parse("https://example.com:8443/a/b?token=abc#frag").unwrap();
    assert_eq!(url.for_logs(), "https://example.com:8443/a/b");
    assert!(!format!("{url:?}").contains("token"));
    assert!(WebhookUrl::parse("http://[::1]:80/").is_ok());
    let config = WebhookConfig::new("http://e.com/", None).unwrap();
    assert!(config.secret.is_none());
}

#[test]
fn urls_outside_the_documented_pattern_are_refused_saying_why() {
    let pattern = regex::Regex::new(WebhookUrl::PATTERN).unwrap();
    for ok in [
        "http://127.0.0.1:9000/hook",
        "HTTPS://Example.COM./a/b;c=d?e=f/g?#h",
        "https://xn--bcher-kva.example/",
        "http://[::ffff:1.2.3.4]:65535/",
        "http://my_host-1.internal:0/%41",
    ] {
        assert!(WebhookUrl::parse(ok).is_ok(), "{ok}");
        assert!(pattern.is_match(ok), "{ok}");
    }
    // The URL parser takes these; the documented pattern does not, and neither does the check.
    for (bad, words) in [
        ("https://exämple.com/", "contains 'ä'"),
        ("https://example.com/{x}", "contains '{'"),
        ("https://example.com/a b", "contains ' '"),
        ("http://1host/", "last label starts with a letter"),
        ("http://example.com/%zz", "percent-encoding"),
        ("http://010.0.0.1/", "dotted-decimal IPv4"),
    ] {
        let err = WebhookUrl::parse(bad).unwrap_err();
        assert!(err.message().contains(words), "{bad}: {err}");
        assert!(!pattern.is_match(bad), "{bad}");
    }
    // What an earlier build stored is read back without the pattern, so its deliveries are
    // still sent; the other checks still hold.
    let stored = WebhookUrl::from_stored("http://1host/a|b").unwrap();
    assert_eq!(stored.as_str(), "http://1host/a|b");
    assert!(WebhookUrl::parse(stored.as_str()).is_err());
    assert!(WebhookUrl::from_stored("ftp://e.com/").is_err());
    assert!(WebhookUrl::from_stored("https://user@e.com/").is_err());
}

#[test]
fn responses_and_error_body_round_trip() {
    let id = Uuid::now_v7();
    let accepted = PublishResponse::accepted(id);
    assert_eq!(
        serde_json::to_value(&accepted).unwrap(),
        json!({"status": "accepted", "correlation_id": id.to_string()})
    );
    let sync = SyncPublishResponse {
        correlation_id: id,
        artifacts: vec![],
        completed: true,
        duration_ms: 12,
    };
    let back: SyncPublishResponse =
        serde_json::from_str(&serde_json::to_string(&sync).unwrap()).unwrap();
    assert_eq!(back, sync);

    let body = ErrorBody::new("validation_error", "bad").with_field(Some("webhook.url".into()));
    assert_eq!(
        serde_json::to_value(&body).unwrap(),
        json!({"error": {"code": "validation_error", "message": "bad", "field": "webhook.url"}})
    );
    let no_field = ErrorBody::new("not_found", "no such artifact");
    assert_eq!(
        serde_json::to_value(&no_field).unwrap(),
        json!({"error": {"code": "not_found", "message": "no such artifact"}})
    );
    let _ = timestamp::now_micros();
}

#[test]
fn several_webhooks_carry_their_options_and_errors_name_their_index() {
    let request = ArtifactPublishRequest::from_value(json!({
        "type": "Idea", "payload": {}, "webhooks": [
            {"url": "https://a.example/", "secret": "a"},
            {"url": "https://b.example/", "types": ["Plan"], "ordered": true,
             "headers": {"Authorization": "Bearer hidden-token", "X-Trace": "1"}},
        ]
    }))
    .unwrap();
    let [first, second] = &request.webhooks[..] else {
        panic!("two webhooks: {:?}", request.webhooks);
    };
    assert_eq!(first.form, WebhookForm::Listed(0));
    assert!(!first.config.ordered && first.config.headers.is_empty());
    assert_eq!(second.form.url_field(), "webhooks[1].url");
    assert!(second.config.ordered);
    assert_eq!(
        second.config.headers.names().collect::<Vec<_>>(),
        ["Authorization", "X-Trace"]
    );
    // Header values are secrets: Debug shows the names only.
    let debug = format!("{request:?}");
    assert!(
        debug.contains("Authorization") && !debug.contains("hidden-token"),
        "{debug}"
    );

    let field = |body: Value| {
        ArtifactPublishRequest::from_value(body)
            .unwrap_err()
            .field_name()
            .map(str::to_owned)
    };
    let base = |webhooks: Value| json!({"type": "I", "payload": {}, "webhooks": webhooks});
    assert_eq!(
        field(base(
            json!([{"url": "https://e.com/"}, {"url": "https://e.com/", "headers": {"host": "x"}}])
        )),
        Some("webhooks[1].headers.host".to_owned())
    );
    assert_eq!(
        field(base(json!([{"url": "https://e.com/", "types": ["A", ""]}]))),
        Some("webhooks[0].types[1]".to_owned())
    );
    assert_eq!(
        field(base(
            json!([{"url": "https://e.com/", "headers": {"X-A": "a\nb"}}])
        )),
        Some("webhooks[0].headers.X-A".to_owned())
    );
    assert_eq!(
        field(base(json!(vec![json!({"url": "https://e.com/"}); 9]))),
        Some("webhooks".to_owned())
    );
}

#[test]
fn a_batch_names_each_artifact_by_its_index() {
    let batch = flock_models::BatchPublishRequest::from_value(json!({
        "artifacts": [{"type": "A", "payload": {}}, {"type": "B", "payload": {"n": 1}, "tags": ["t"]}],
        "webhook_url": "https://e.com/"
    }))
    .unwrap();
    assert_eq!(batch.artifacts.len(), 2);
    assert_eq!(batch.artifacts[1].type_name, "B");
    assert_eq!(batch.webhooks[0].form, WebhookForm::Shorthand);
    let field = |body: Value| {
        flock_models::BatchPublishRequest::from_value(body)
            .unwrap_err()
            .field_name()
            .map(str::to_owned)
    };
    let good = json!({"type": "A", "payload": {}});
    assert_eq!(
        field(json!({"artifacts": [good, good, good, {"type": "no spaces", "payload": {}}]})),
        Some("artifacts[3].type".to_owned())
    );
    assert_eq!(
        field(json!({"artifacts": [good, {"type": "A", "payload": {}, "webhook": null}]})),
        Some("artifacts[1].webhook".to_owned())
    );
    assert_eq!(
        field(json!({"artifacts": []})),
        Some("artifacts".to_owned())
    );
    assert_eq!(
        field(json!({"artifacts": vec![good.clone(); flock_models::MAX_BATCH_ARTIFACTS + 1]})),
        Some("artifacts".to_owned())
    );
    assert_eq!(
        field(json!({"type": "A", "payload": {}})),
        Some("artifacts".to_owned())
    );
}
