//! The chat completions exchange: the structured-output schema an agent asks for, the request
//! body, the parts of the answer it reads, and the check of the answer against the agent's
//! types.

use std::fmt;
use std::sync::Arc;

use flock_models::{Artifact, ArtifactDraft, TypeName, ValidationError};
use flock_schema::TypeSchemas;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The name of the structured-output schema in `response_format`.
const SCHEMA_NAME: &str = "flock_artifacts";

/// The `response_format` asking for `{"artifacts": [{"type", "payload"}]}`: one artifact up to
/// as many as there are types in `publishes` (without a bound, small models go on adding
/// artifacts until `max_tokens` cuts them off), each of a type in `publishes` with that type's
/// declared schema (any object for an undeclared type).
///
/// A declared schema is moved under `$defs` (as `$defs/<Type>`, its own `$defs` beside it as
/// `$defs/<Type>.<name>`) and its local `$ref`s rewritten to match, so references keep working
/// inside the larger document.
pub(crate) fn response_format(publishes: &[TypeName], types: &TypeSchemas) -> Value {
    let mut defs = Map::new();
    let mut items = Vec::with_capacity(publishes.len());
    for type_name in publishes {
        let payload = match types.schema(type_name) {
            Some(schema) => {
                embed(type_name.as_str(), schema, &mut defs);
                json!({"$ref": format!("#/$defs/{}", type_name.as_str())})
            }
            None => json!({"type": "object"}),
        };
        items.push(json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["type", "payload"],
            "properties": {
                "type": {"type": "string", "enum": [type_name.as_str()]},
                "payload": payload,
            }
        }));
    }
    let items = if items.len() == 1 {
        items.pop().unwrap_or_default()
    } else {
        json!({"anyOf": items})
    };
    let mut schema = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["artifacts"],
        "properties": {
            "artifacts": {"type": "array", "minItems": 1, "maxItems": publishes.len(), "items": items}
        }
    });
    if !defs.is_empty()
        && let Value::Object(root) = &mut schema
    {
        root.insert("$defs".to_owned(), Value::Object(defs));
    }
    json!({
        "type": "json_schema",
        "json_schema": {"name": SCHEMA_NAME, "strict": true, "schema": schema}
    })
}

/// Puts `schema` under `defs[name]`, hoisting its `$defs` (and draft-7 `definitions`) to
/// `defs["name.def"]`, and rewrites its local references to the new places.
fn embed(name: &str, schema: &Value, defs: &mut Map<String, Value>) {
    let mut copy = schema.clone();
    if let Value::Object(root) = &mut copy {
        root.remove("$schema");
        root.remove("$id");
        for key in ["$defs", "definitions"] {
            if let Some(Value::Object(inner)) = root.remove(key) {
                for (def, mut value) in inner {
                    rewrite_refs(name, &mut value);
                    defs.insert(format!("{name}.{def}"), value);
                }
            }
        }
    }
    rewrite_refs(name, &mut copy);
    defs.insert(name.to_owned(), copy);
}

/// `#` → `#/$defs/T`, `#/$defs/x…` and `#/definitions/x…` → `#/$defs/T.x…`, any other `#/p` →
/// `#/$defs/T/p`.
fn rewrite_refs(name: &str, value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                if key == "$ref"
                    && let Value::String(target) = inner
                {
                    if let Some(rewritten) = rewrite_ref(name, target) {
                        *target = rewritten;
                    }
                } else {
                    rewrite_refs(name, inner);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_refs(name, v)),
        _ => {}
    }
}

fn rewrite_ref(name: &str, target: &str) -> Option<String> {
    if target == "#" {
        return Some(format!("#/$defs/{name}"));
    }
    let pointer = target.strip_prefix("#/")?;
    for prefix in ["$defs/", "definitions/"] {
        if let Some(rest) = pointer.strip_prefix(prefix) {
            return Some(format!("#/$defs/{name}.{rest}"));
        }
    }
    Some(format!("#/$defs/{name}/{pointer}"))
}

/// The system message: the configured prompt, then the answer's format with each type's
/// schema, so that a model without structured output knows it too.
pub(crate) fn system_message(
    system: Option<&str>,
    publishes: &[TypeName],
    types: &TypeSchemas,
) -> String {
    let mut text = String::new();
    if let Some(system) = system {
        text.push_str(system.trim_end());
        text.push_str("\n\n");
    }
    let names: Vec<String> = publishes
        .iter()
        .map(|t| format!("\"{}\"", t.as_str()))
        .collect();
    text.push_str(&format!(
        "Answer with one JSON object and nothing else: {{\"artifacts\": [{{\"type\": T, \
         \"payload\": P}}]}}, where T is one of {} and P is a JSON object.",
        names.join(", ")
    ));
    for type_name in publishes {
        if let Some(schema) = types.schema(type_name) {
            text.push_str(&format!(
                "\nThe payload of a \"{}\" follows this JSON Schema: {schema}",
                type_name.as_str()
            ));
        }
    }
    text
}

/// One consumed artifact as the model sees it: what it says, not when or under which id (so
/// the same input makes the same prompt).
#[derive(Serialize)]
struct Consumed<'a> {
    #[serde(rename = "type")]
    type_name: &'a str,
    payload: &'a Map<String, Value>,
    produced_by: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tags: Vec<&'a str>,
}

/// The user message: `{"artifacts": [{"type", "payload", "produced_by", "tags"?}]}`.
pub(crate) fn user_message(inputs: &[Arc<Artifact>]) -> String {
    let artifacts: Vec<Consumed<'_>> = inputs
        .iter()
        .map(|a| Consumed {
            type_name: a.type_name.as_str(),
            payload: &a.payload,
            produced_by: &a.produced_by,
            tags: a.tags.iter().collect(),
        })
        .collect();
    // Serializing borrowed JSON values and strings cannot fail.
    serde_json::to_string(&json!({ "artifacts": artifacts })).unwrap_or_default()
}

/// One chat message.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Message {
    pub(crate) role: &'static str,
    pub(crate) content: String,
}

/// The parts of a chat completion the agent reads; everything else is ignored.
#[derive(Debug, Deserialize)]
pub(crate) struct Completion {
    #[serde(default)]
    pub(crate) choices: Vec<Choice>,
    #[serde(default)]
    pub(crate) usage: Option<Usage>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Choice {
    #[serde(default)]
    pub(crate) message: Option<AnswerMessage>,
    #[serde(default)]
    pub(crate) finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct AnswerMessage {
    #[serde(default)]
    pub(crate) content: Option<String>,
    #[serde(default)]
    pub(crate) refusal: Option<String>,
}

/// Token counts, when the provider reports them.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub(crate) struct Usage {
    #[serde(default)]
    pub(crate) prompt_tokens: u64,
    #[serde(default)]
    pub(crate) completion_tokens: u64,
}

/// Why an answer could not be used; told to the model on the retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// `finish_reason` was not `stop`: `length` when `max_tokens` cut it off.
    Unfinished {
        finish_reason: String,
        max_tokens: Option<u32>,
    },
    /// The model refused.
    Refused(String),
    /// No text at all.
    Empty,
    /// The text is not JSON.
    NotJson(String),
    /// JSON, but not the artifacts it should be, or a payload its schema rejects.
    Invalid(ValidationError),
}

impl Rejection {
    /// A fixed label for metrics.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Rejection::Unfinished { .. } => "unfinished",
            Rejection::Refused(_) => "refused",
            Rejection::Empty => "empty",
            Rejection::NotJson(_) => "invalid_json",
            Rejection::Invalid(_) => "invalid_output",
        }
    }

    /// What the model is told before it answers again.
    pub(crate) fn feedback(&self) -> String {
        match self {
            Rejection::Unfinished {
                finish_reason,
                max_tokens,
            } if finish_reason == "length" => format!(
                "Your answer was cut off (finish_reason length{}). Answer again with a shorter, \
                 complete JSON object.",
                max_tokens
                    .map(|n| format!(", at most {n} tokens"))
                    .unwrap_or_default()
            ),
            _ => format!(
                "Your answer was rejected: {self}. Answer again with one JSON object that \
                 follows the format exactly."
            ),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Unfinished {
                finish_reason,
                max_tokens: Some(n),
            } if finish_reason == "length" => write!(
                f,
                "the answer was cut off: finish_reason length (max_tokens {n})"
            ),
            Rejection::Unfinished { finish_reason, .. } => {
                write!(
                    f,
                    "the answer did not finish: finish_reason {finish_reason}"
                )
            }
            Rejection::Refused(why) => write!(f, "the model refused: {why}"),
            Rejection::Empty => f.write_str("the answer has no content"),
            Rejection::NotJson(e) => write!(f, "the answer is not valid JSON: {e}"),
            Rejection::Invalid(e) => write!(f, "the answer is not valid: {e}"),
        }
    }
}

/// The text of the first choice, or why there is none to use.
pub(crate) fn answer_text(
    completion: &Completion,
    max_tokens: Option<u32>,
) -> Result<String, Rejection> {
    let Some(choice) = completion.choices.first() else {
        return Err(Rejection::Empty);
    };
    let message = choice.message.as_ref();
    if let Some(refusal) = message.and_then(|m| m.refusal.as_deref())
        && !refusal.is_empty()
    {
        return Err(Rejection::Refused(refusal.to_owned()));
    }
    let reason = choice.finish_reason.as_deref().unwrap_or("none");
    if reason != "stop" {
        return Err(Rejection::Unfinished {
            finish_reason: reason.to_owned(),
            max_tokens,
        });
    }
    match message.and_then(|m| m.content.as_deref()) {
        Some(text) if !text.trim().is_empty() => Ok(text.to_owned()),
        _ => Err(Rejection::Empty),
    }
}

/// Parses the answer's text into drafts: JSON, `{"artifacts": [...]}` with nothing else, each a
/// valid draft of a type in `publishes` whose payload its declared schema accepts. Errors name
/// the place (`artifacts[0].payload.steps[2]`).
pub(crate) fn parse_artifacts(
    text: &str,
    publishes: &[TypeName],
    types: &TypeSchemas,
) -> Result<Vec<ArtifactDraft>, Rejection> {
    let value: Value =
        serde_json::from_str(text.trim()).map_err(|e| Rejection::NotJson(e.to_string()))?;
    let invalid = |field: &str, message: &str| {
        Rejection::Invalid(ValidationError::field(field.to_owned(), message.to_owned()))
    };
    let Value::Object(mut object) = value else {
        return Err(Rejection::Invalid(ValidationError::whole(
            "expected a JSON object {\"artifacts\": [...]}",
        )));
    };
    let items = match object.remove("artifacts") {
        Some(Value::Array(items)) => items,
        Some(_) => return Err(invalid("artifacts", "expected an array")),
        None => return Err(invalid("artifacts", "this field is required")),
    };
    if let Some(unknown) = object.keys().next() {
        return Err(invalid(unknown, "unknown field"));
    }
    if items.is_empty() {
        return Err(invalid("artifacts", "expected at least one artifact"));
    }
    let mut drafts = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let at = format!("artifacts[{i}]");
        let draft = ArtifactDraft::from_value(item, &at).map_err(Rejection::Invalid)?;
        if !publishes.contains(&draft.type_name) {
            let names: Vec<&str> = publishes.iter().map(TypeName::as_str).collect();
            return Err(invalid(
                &format!("{at}.type"),
                &format!(
                    "`{}` is not a type this agent publishes ({})",
                    draft.type_name.as_str(),
                    names.join(", ")
                ),
            ));
        }
        types
            .validate(&draft.type_name, &draft.payload)
            .map_err(|e| Rejection::Invalid(e.within(&format!("{at}.payload"))))?;
        drafts.push(draft);
    }
    Ok(drafts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flock_schema::TypeDeclaration;

    fn plan_types() -> TypeSchemas {
        TypeSchemas::new(&[TypeDeclaration {
            name: "Plan".to_owned(),
            schema: json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["steps"],
                "properties": {"steps": {"type": "array", "maxItems": 3, "items": {"$ref": "#/$defs/step"}}},
                "$defs": {"step": {"type": "string", "maxLength": 40}}
            }),
        }])
        .unwrap()
    }

    fn names(list: &[&str]) -> Vec<TypeName> {
        list.iter().map(|n| TypeName::new(*n).unwrap()).collect()
    }

    #[test]
    fn the_response_format_embeds_declared_schemas_with_working_refs() {
        let types = plan_types();
        let format = response_format(&names(&["Plan", "Note"]), &types);
        assert_eq!(format["type"], "json_schema");
        assert_eq!(format["json_schema"]["strict"], true);
        let schema = &format["json_schema"]["schema"];
        assert_eq!(schema["properties"]["artifacts"]["maxItems"], 2);
        let items = &schema["properties"]["artifacts"]["items"]["anyOf"];
        assert_eq!(items[0]["properties"]["type"]["enum"], json!(["Plan"]));
        assert_eq!(items[0]["properties"]["payload"]["$ref"], "#/$defs/Plan");
        assert_eq!(items[1]["properties"]["payload"], json!({"type": "object"}));
        assert_eq!(
            schema["$defs"]["Plan"]["properties"]["steps"]["items"]["$ref"],
            "#/$defs/Plan.step"
        );
        assert_eq!(schema["$defs"]["Plan.step"]["maxLength"], 40);
        assert!(schema["$defs"]["Plan"].get("$defs").is_none());

        // The envelope is itself a schema that accepts a good answer and refuses a bad one.
        let envelope = TypeSchemas::new(&[TypeDeclaration {
            name: "Envelope".to_owned(),
            schema: schema.clone(),
        }])
        .unwrap();
        let envelope_type = TypeName::new("Envelope").unwrap();
        let good = json!({"artifacts": [{"type": "Plan", "payload": {"steps": ["a"]}}]});
        envelope
            .validate(&envelope_type, good.as_object().unwrap())
            .unwrap();
        let bad = json!({"artifacts": [{"type": "Plan", "payload": {"steps": ["a".repeat(41)]}}]});
        assert!(
            envelope
                .validate(&envelope_type, bad.as_object().unwrap())
                .is_err()
        );
    }

    #[test]
    fn refs_are_rewritten_to_their_new_place() {
        assert_eq!(rewrite_ref("T", "#").as_deref(), Some("#/$defs/T"));
        assert_eq!(
            rewrite_ref("T", "#/$defs/a/b").as_deref(),
            Some("#/$defs/T.a/b")
        );
        assert_eq!(
            rewrite_ref("T", "#/definitions/a").as_deref(),
            Some("#/$defs/T.a")
        );
        assert_eq!(
            rewrite_ref("T", "#/properties/x").as_deref(),
            Some("#/$defs/T/properties/x")
        );
        assert_eq!(rewrite_ref("T", "other.json"), None);
    }

    #[test]
    fn answers_are_checked_with_the_failing_place_named() {
        let types = plan_types();
        let publishes = names(&["Plan"]);
        let drafts = parse_artifacts(
            r#"{"artifacts": [{"type": "Plan", "payload": {"steps": ["a"]}}]}"#,
            &publishes,
            &types,
        )
        .unwrap();
        assert_eq!(drafts.len(), 1);
        assert_eq!(drafts[0].payload["steps"], json!(["a"]));

        let cases = [
            ("{\"artifacts\": [", "not valid JSON"),
            ("[1]", "expected a JSON object"),
            (r#"{"artifacts": []}"#, "artifacts: expected at least one"),
            (r#"{"artifacts": [], "x": 1}"#, "x: unknown field"),
            (
                r#"{"artifacts": [{"type": "Idea", "payload": {}}]}"#,
                "artifacts[0].type: `Idea` is not a type",
            ),
            (
                r#"{"artifacts": [{"type": "Plan", "payload": 3}]}"#,
                "artifacts[0].payload",
            ),
            (
                r#"{"artifacts": [{"type": "Plan", "payload": {"steps": ["a", "b", "c", "d"]}}]}"#,
                "artifacts[0].payload.steps: does not match the schema of `Plan`",
            ),
        ];
        for (text, expected) in cases {
            let rejection = parse_artifacts(text, &publishes, &types).unwrap_err();
            assert!(
                rejection.to_string().contains(expected),
                "{text}: {rejection}"
            );
        }
    }

    #[test]
    fn unfinished_answers_say_their_finish_reason() {
        let completion: Completion = serde_json::from_value(json!({
            "choices": [{"message": {"content": "{\"artifacts\": ["}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 4}
        }))
        .unwrap();
        let rejection = answer_text(&completion, Some(4)).unwrap_err();
        assert_eq!(
            rejection.to_string(),
            "the answer was cut off: finish_reason length (max_tokens 4)"
        );
        assert!(rejection.feedback().contains("at most 4 tokens"));
        assert_eq!(rejection.reason(), "unfinished");

        let refused: Completion = serde_json::from_value(json!({
            "choices": [{"message": {"content": null, "refusal": "no"}, "finish_reason": "stop"}]
        }))
        .unwrap();
        assert_eq!(
            answer_text(&refused, None).unwrap_err(),
            Rejection::Refused("no".into())
        );
        let empty: Completion = serde_json::from_value(json!({"choices": []})).unwrap();
        assert_eq!(answer_text(&empty, None).unwrap_err(), Rejection::Empty);
    }
}
