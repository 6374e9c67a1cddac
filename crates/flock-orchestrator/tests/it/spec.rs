//! Agents from configuration: each invalid field is named.

use flock_orchestrator::AgentSpec;
use serde_json::{Value, json};

/// A valid command spec with `change` merged in (`null` removes a key).
fn spec(change: &Value) -> Value {
    let mut base = json!({
        "name": "shouter",
        "consumes": ["Idea"],
        "publishes": ["Shout"],
        "command": ["python3", "agents/shout.py"],
        "timeout_ms": 10000,
    });
    for (key, value) in change.as_object().unwrap() {
        if value.is_null() {
            base.as_object_mut().unwrap().remove(key);
        } else {
            base[key] = value.clone();
        }
    }
    base
}

#[test]
fn valid_specs_build() {
    let command: AgentSpec = serde_json::from_value(spec(&json!({}))).unwrap();
    let agent = command.build().unwrap();
    assert_eq!(agent.name(), "shouter");
    assert_eq!(agent.timeout(), Some(std::time::Duration::from_secs(10)));

    let http: AgentSpec = serde_json::from_value(spec(
        &json!({"command": null, "url": "http://127.0.0.1:7000/shout", "timeout_ms": null}),
    ))
    .unwrap();
    let agent = http.build().unwrap();
    assert_eq!(agent.timeout(), None);
    assert_eq!(agent.kind(), flock_orchestrator::AgentKind::Http);
}

#[test]
fn each_invalid_field_is_named() {
    let cases = [
        (json!({"name": ""}), "name", "must not be empty"),
        (json!({"name": "two words"}), "name", "' '"),
        (json!({"name": "external"}), "name", "reserved"),
        (json!({"consumes": []}), "consumes", "at least one"),
        (
            json!({"consumes": ["Idea", "bad type"]}),
            "consumes[1]",
            "' '",
        ),
        (
            json!({"publishes": ["ok", ""]}),
            "publishes[1]",
            "must not be empty",
        ),
        (json!({"command": []}), "command", "must name a program"),
        (
            json!({"command": ["", "x"]}),
            "command[0]",
            "must not be empty",
        ),
        (json!({"command": ["sh", "a\u{0}b"]}), "command[1]", "NUL"),
        (json!({"command": null}), "command", "one of `command`"),
        (json!({"url": "http://127.0.0.1/"}), "url", "not both"),
        (
            json!({"command": null, "url": "https://agents.example/run"}),
            "url",
            "https is not supported",
        ),
        (json!({"command": null, "url": "not a url"}), "url", "URL"),
        (json!({"timeout_ms": 0}), "timeout_ms", "between 1 and"),
        (
            json!({"timeout_ms": 100_000_000_000u64}),
            "timeout_ms",
            "between 1 and",
        ),
        (
            json!({"env": ["OK", "BAD-NAME"]}),
            "env[1]",
            "not an environment",
        ),
        (json!({"env": ["1ST"]}), "env[0]", "not an environment"),
        (json!({"env": [""]}), "env[0]", "not an environment"),
        (
            json!({"stderr_bytes": 0}),
            "stderr_bytes",
            "between 1 and 65536",
        ),
        (
            json!({"stderr_bytes": 65537}),
            "stderr_bytes",
            "between 1 and 65536",
        ),
        (
            json!({"command": null, "url": "http://127.0.0.1/", "env": ["X"]}),
            "env",
            "only a command agent",
        ),
        (
            json!({"command": null, "url": "http://127.0.0.1/", "expose_stderr": false}),
            "expose_stderr",
            "only a command agent",
        ),
    ];
    for (change, field, message) in cases {
        let value = spec(&change);
        let spec: AgentSpec = serde_json::from_value(value).unwrap();
        let error = spec
            .build()
            .err()
            .unwrap_or_else(|| panic!("{change} was accepted"));
        assert_eq!(error.field_name(), Some(field), "{change}: {error}");
        assert!(error.message().contains(message), "{change}: {error}");
        // The API puts it in its place in the file.
        assert_eq!(
            error.within("agents[2]").field_name(),
            Some(format!("agents[2].{field}").as_str())
        );
    }
}

#[test]
fn unknown_and_missing_keys_are_refused_when_reading() {
    let unknown = serde_json::from_value::<AgentSpec>(spec(&json!({"shell": true}))).unwrap_err();
    assert!(
        unknown.to_string().contains("unknown field `shell`"),
        "{unknown}"
    );
    let missing =
        serde_json::from_value::<AgentSpec>(spec(&json!({"consumes": null}))).unwrap_err();
    assert!(missing.to_string().contains("consumes"), "{missing}");
}

#[test]
fn basics_check_the_common_fields_whatever_the_kind() {
    // Neither `command` nor `url`: an agent of a kind the host builds itself.
    let spec_of = |change: &Value| -> AgentSpec {
        let mut value = spec(change);
        value.as_object_mut().unwrap().remove("command");
        serde_json::from_value(value).unwrap()
    };
    let basics = spec_of(&json!({"consumes": ["Idea", "Idea", "Note"]}))
        .basics()
        .unwrap();
    assert_eq!(basics.name, "shouter");
    let consumes: Vec<&str> = basics
        .consumes
        .iter()
        .map(flock_models::TypeName::as_str)
        .collect();
    assert_eq!(consumes, ["Idea", "Note"], "each once, in order");
    assert_eq!(basics.publishes.len(), 1);
    assert_eq!(basics.timeout, Some(std::time::Duration::from_secs(10)));
    for (change, field) in [
        (json!({"name": "external"}), "name"),
        (json!({"consumes": []}), "consumes"),
        (json!({"consumes": ["Idea", "bad type"]}), "consumes[1]"),
        (json!({"publishes": ["ok", ""]}), "publishes[1]"),
        (json!({"timeout_ms": 0}), "timeout_ms"),
    ] {
        let spec = spec_of(&change);
        let error = spec.basics().unwrap_err();
        assert_eq!(error.field_name(), Some(field), "{change}: {error}");
        assert_eq!(
            spec.build().err().map(|e| e.to_string()),
            Some(error.to_string()),
            "build checks the same way first"
        );
    }
}
