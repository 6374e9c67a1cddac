//! Artifacts, type names, tags and drafts.

use flock_models::{Artifact, ArtifactDraft, Tags, TypeName, timestamp};
use serde_json::json;
use uuid::Uuid;

#[test]
fn type_names_accept_the_documented_alphabet() {
    for ok in ["Idea", "a", "my.type_name-2", &"x".repeat(256)] {
        assert!(TypeName::new(ok).is_ok(), "{ok} should be accepted");
    }
    let cases = [
        ("", "must not be empty"),
        (&"x".repeat(257), "at most 256"),
        ("has space", "' '"),
        ("émoji", "'é'"),
        ("a/b", "'/'"),
    ];
    for (bad, why) in cases {
        let err = TypeName::new(bad).unwrap_err();
        assert!(err.message().contains(why), "{bad:?}: {err}");
    }
}

#[test]
fn tags_are_sorted_unique_and_checked() {
    let tags = Tags::new(["b", "a", "b", "c"]).unwrap();
    assert_eq!(tags.iter().collect::<Vec<_>>(), ["a", "b", "c"]);
    assert!(tags.contains("b") && !tags.contains("d"));

    let err = Tags::new(["ok", ""]).unwrap_err();
    assert_eq!(err.field_name(), Some("[1]"));
    assert!(
        Tags::new(["a\nb"])
            .unwrap_err()
            .message()
            .contains("control")
    );
    assert!(
        Tags::new(["x".repeat(257)])
            .unwrap_err()
            .message()
            .contains("256")
    );
    let many: Vec<String> = (0..65).map(|i| i.to_string()).collect();
    assert!(
        Tags::new(many)
            .unwrap_err()
            .message()
            .contains("at most 64")
    );
    // Repeats count towards the limit, as the document's `maxItems` says.
    assert!(Tags::new(["same"; 64]).is_ok());
    assert!(
        Tags::new(["same"; 65])
            .unwrap_err()
            .message()
            .contains("repeats count")
    );
    // Lengths are in characters, as JSON Schema's `maxLength` counts them.
    assert!(Tags::new(["é".repeat(256)]).is_ok());
    assert!(Tags::new(["é".repeat(257)]).is_err());
}

#[test]
fn artifact_round_trips_with_microsecond_time() {
    let draft = ArtifactDraft::from_value(
        json!({"type": "Idea", "payload": {"k": [1, 2]}, "tags": ["t"]}),
        "",
    )
    .unwrap();
    let artifact = Artifact::new(draft, "writer", Uuid::now_v7());
    assert_eq!(artifact.id.get_version_num(), 7);
    assert_eq!(artifact.created_at.nanosecond() % 1000, 0);
    let text = serde_json::to_string(&artifact).unwrap();
    let back: Artifact = serde_json::from_str(&text).unwrap();
    assert_eq!(back, artifact);
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let created = value["created_at"].as_str().unwrap();
    assert!(created.ends_with('Z') && created.len() == 27, "{created}");
    assert_eq!(timestamp::parse(created).unwrap(), artifact.created_at);
}

#[test]
fn drafts_name_the_bad_field_with_its_path() {
    let cases = [
        (json!({"payload": {}}), "artifacts[0].type", "required"),
        (
            json!({"type": 3, "payload": {}}),
            "artifacts[0].type",
            "expected a string",
        ),
        (
            json!({"type": "A", "payload": [1]}),
            "artifacts[0].payload",
            "JSON object",
        ),
        (
            json!({"type": "A", "payload": {}, "tags": "x"}),
            "artifacts[0].tags",
            "array",
        ),
        (
            json!({"type": "A", "payload": {}, "tags": [1]}),
            "artifacts[0].tags[0]",
            "string",
        ),
        (
            json!({"type": "A", "payload": {}, "extra": 1}),
            "artifacts[0].extra",
            "unknown field",
        ),
        (json!("text"), "artifacts[0]", "JSON object"),
    ];
    for (value, field, why) in cases {
        let err = ArtifactDraft::from_value(value.clone(), "artifacts[0]").unwrap_err();
        assert_eq!(err.field_name(), Some(field), "{value}: {err}");
        assert!(err.message().contains(why), "{value}: {err}");
    }
}
