//! The exact bytes of a webhook body, as the wire contract fixes them.

use flock_models::{
    Artifact, ArtifactDraft, EXTERNAL_PRODUCER, Tags, TypeName, WebhookArtifact, WebhookPayload,
    timestamp,
};
use serde_json::json;
use uuid::Uuid;

fn sample() -> Artifact {
    let payload = json!({"title": "ship it", "n": 1, "nested": {"z": true, "a": null}});
    let mut draft = ArtifactDraft::new(
        TypeName::new("Idea").unwrap(),
        payload.as_object().unwrap().clone(),
    );
    draft.tags = Tags::new(["b", "a", "b"]).unwrap();
    let mut artifact = Artifact::new(
        draft,
        EXTERNAL_PRODUCER,
        Uuid::parse_str("0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b").unwrap(),
    );
    artifact.id = Uuid::parse_str("0193a1b2-c3d4-7e5f-8a9b-000000000001").unwrap();
    artifact.created_at = timestamp::parse("2026-11-28T12:00:00.123456Z").unwrap();
    artifact
}

const GOLDEN: &str = concat!(
    r#"{"event_type":"artifact.created","correlation_id":"0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","#,
    r#""sequence":1,"artifact":{"id":"0193a1b2-c3d4-7e5f-8a9b-000000000001","type":"Idea","#,
    r#""produced_by":"external","payload":{"title":"ship it","n":1,"nested":{"z":true,"a":null}},"#,
    r#""created_at":"2026-11-28T12:00:00.123456Z","tags":["a","b"]},"#,
    r#""timestamp":"2026-11-28T12:00:00.125Z"}"#
);

#[test]
fn rendered_body_matches_the_golden_bytes() {
    let at = timestamp::parse("2026-11-28T12:00:00.125999Z").unwrap();
    let body = WebhookPayload::render(&sample(), 1, at);
    assert_eq!(std::str::from_utf8(&body).unwrap(), GOLDEN);
}

#[test]
fn owned_payload_serializes_to_the_same_bytes() {
    let at = timestamp::parse("2026-11-28T12:00:00.125Z").unwrap();
    let owned = WebhookPayload::new(&sample(), 1, at);
    assert_eq!(serde_json::to_string(&owned).unwrap(), GOLDEN);
}

#[test]
fn body_round_trips_through_the_owned_type() {
    let parsed: WebhookPayload = serde_json::from_str(GOLDEN).unwrap();
    assert_eq!(parsed.sequence, 1);
    assert_eq!(parsed.artifact.type_name, "Idea");
    assert_eq!(parsed.artifact.tags.iter().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(serde_json::to_string(&parsed).unwrap(), GOLDEN);
}

#[test]
fn other_event_types_are_rejected() {
    let other = GOLDEN.replace("artifact.created", "artifact.deleted");
    let err = serde_json::from_str::<WebhookPayload>(&other).unwrap_err();
    assert!(err.to_string().contains("artifact.deleted"), "{err}");
}

#[test]
fn the_artifact_span_of_a_body_is_the_artifact_alone() {
    let mut artifact = sample();
    // Keys that look like the body's own fields inside the payload do not mislead the search.
    artifact.payload.insert(
        "inner".into(),
        json!({"timestamp": "x", "artifact": {"sequence": 2}}),
    );
    for sequence in [1, 9, 10, 123_456_789] {
        let at = timestamp::parse("2026-11-28T12:00:00.125Z").unwrap();
        let body = WebhookPayload::render(&artifact, sequence, at);
        let span = WebhookPayload::artifact_span(&body).unwrap();
        let alone = WebhookArtifact::render(&artifact);
        assert_eq!(&body[span.clone()], alone.as_slice(), "sequence {sequence}");
        let back: WebhookArtifact = serde_json::from_slice(&body[span]).unwrap();
        assert_eq!(
            back.into_artifact(artifact.correlation_id, artifact.tenant.clone()),
            artifact
        );
    }
    let golden_span = WebhookPayload::artifact_span(GOLDEN.as_bytes()).unwrap();
    assert!(GOLDEN[golden_span].starts_with(r#"{"id":"0193a1b2"#));
}

#[test]
fn bytes_not_shaped_like_a_body_have_no_artifact_span() {
    let body = WebhookPayload::render(&sample(), 1, timestamp::now_micros());
    for bad in [
        &b""[..],
        b"{}",
        &body[..body.len() - 1],
        &body[1..],
        br#"{"event_type":"artifact.created","correlation_id":"x","sequence":1,"artifact":{},"timestamp":"t"}"#,
    ] {
        assert_eq!(WebhookPayload::artifact_span(bad), None, "{}", String::from_utf8_lossy(bad));
    }
}
