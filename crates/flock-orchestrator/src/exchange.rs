//! The JSON that command and HTTP agents exchange with the orchestrator: the request body
//! `{"agent", "artifacts"}` and the answer `{"artifacts": [{"type", "payload", "tags"?}]}`.

use std::sync::Arc;

use flock_models::{Artifact, ArtifactDraft};
use serde::Serialize;
use serde_json::Value;

use crate::agent::AgentError;

/// The largest answer read from an agent (stdout or HTTP body), in bytes.
pub(crate) const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

#[derive(Serialize)]
struct Request<'a> {
    agent: &'a str,
    artifacts: Vec<&'a Artifact>,
}

/// The body sent to agent `agent` for `inputs`.
pub(crate) fn request_body(agent: &str, inputs: &[Arc<Artifact>]) -> Result<Vec<u8>, AgentError> {
    let request = Request {
        agent,
        artifacts: inputs.iter().map(AsRef::as_ref).collect(),
    };
    serde_json::to_vec(&request)
        .map_err(|e| AgentError::Failed(format!("could not encode the agent's input: {e}")))
}

/// Parses an agent's answer into drafts; every error says what was wrong and where.
pub(crate) fn parse_answer(answer: &[u8]) -> Result<Vec<ArtifactDraft>, AgentError> {
    let invalid = AgentError::InvalidOutput;
    if answer.iter().all(u8::is_ascii_whitespace) {
        return Err(invalid(
            r#"the answer is empty; expected {"artifacts": [...]}"#.to_owned(),
        ));
    }
    let value: Value = serde_json::from_slice(answer)
        .map_err(|e| invalid(format!("the answer is not valid JSON: {e}")))?;
    let Value::Object(mut object) = value else {
        return Err(invalid(format!(
            r#"expected a JSON object {{"artifacts": [...]}}, found {}"#,
            kind(&value)
        )));
    };
    let artifacts = match object.remove("artifacts") {
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(invalid(format!(
                "artifacts: expected an array, found {}",
                kind(&other)
            )));
        }
        None => return Err(invalid("artifacts: this field is required".to_owned())),
    };
    if let Some(unknown) = object.keys().next() {
        return Err(invalid(format!("{unknown}: unknown field `{unknown}`")));
    }
    artifacts
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            ArtifactDraft::from_value(item, &format!("artifacts[{i}]"))
                .map_err(|e| invalid(e.to_string()))
        })
        .collect()
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_or_say_what_is_wrong() {
        let good = br#"{"artifacts":[{"type":"Shout","payload":{"text":"HI"},"tags":["b","a"]}]}"#;
        let drafts = parse_answer(good).unwrap();
        assert_eq!(drafts.len(), 1);
        assert_eq!(drafts[0].type_name, "Shout");
        assert_eq!(drafts[0].tags.iter().collect::<Vec<_>>(), ["a", "b"]);
        assert!(parse_answer(br#"{"artifacts":[]}"#).unwrap().is_empty());

        let cases: [(&[u8], &str); 7] = [
            (b"", "empty"),
            (b"{not json", "not valid JSON"),
            (b"[]", "found an array"),
            (br#"{"artifacts": {}}"#, "artifacts: expected an array"),
            (br#"{}"#, "artifacts: this field is required"),
            (br#"{"artifacts": [], "extra": 1}"#, "unknown field `extra`"),
            (
                br#"{"artifacts": [{"type": "A", "payload": []}]}"#,
                "artifacts[0].payload",
            ),
        ];
        for (answer, expected) in cases {
            let err = parse_answer(answer).unwrap_err();
            assert!(
                matches!(&err, AgentError::InvalidOutput(m) if m.contains(expected)),
                "{err} should mention {expected}"
            );
        }
    }
}
