//! Declared artifact types (`[[types]]`): a type name and the JSON Schema of its payload,
//! compiled once, and the validation of a payload against it with the failing path named.
//!
//! Nothing here knows about LLMs: the same registry can check every publish of a declared type.

use std::collections::HashMap;
use std::fmt::{self, Write as _};

use boon::{Compiler, Draft, InstanceToken, SchemaIndex, Schemas, SchemeUrlLoader};
use flock_models::{TypeName, ValidationError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One declared artifact type, as configuration writes it:
///
/// ```toml
/// [[types]]
/// name = "Plan"
/// schema = { type = "object", required = ["steps"], properties = { steps = { type = "array", items = { type = "string" } } } }
/// ```
///
/// Deserializing checks only the shape (unknown keys are refused); [`TypeSchemas::new`] checks
/// the name and compiles the schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeDeclaration {
    /// The artifact type: the rules of type names.
    pub name: String,
    /// The JSON Schema (draft 2020-12 unless it says otherwise with `$schema`) that every
    /// payload of the type must satisfy; its root must be `"type": "object"`.
    pub schema: Value,
}

/// The declared types' JSON Schemas, compiled: cheap to query, shared behind an `Arc`.
///
/// A type without a declaration accepts any payload. Schemas are compiled without network or
/// file access: a `$ref` may point inside the schema (`#/$defs/step`) or at the standard
/// meta-schemas, nowhere else. `format` is an annotation, as draft 2020-12 has it, not checked.
pub struct TypeSchemas {
    compiled: Schemas,
    by_name: HashMap<TypeName, Declared>,
    /// Declaration order, for listing.
    order: Vec<TypeName>,
}

struct Declared {
    index: SchemaIndex,
    schema: Value,
}

impl TypeSchemas {
    /// No declared types: every payload is accepted.
    pub fn empty() -> Self {
        TypeSchemas {
            compiled: Schemas::new(),
            by_name: HashMap::new(),
            order: Vec::new(),
        }
    }

    /// Checks and compiles the declarations.
    ///
    /// # Errors
    /// The first invalid declaration, named by its position and field (`[1].name`,
    /// `[0].schema`); prefix it with the declarations' own place (`types`) with
    /// [`ValidationError::within`]. A name declared twice, a schema whose root is not
    /// `"type": "object"`, a schema that its meta-schema rejects, and a `$ref` outside the schema
    /// are refused, saying why.
    pub fn new(declarations: &[TypeDeclaration]) -> Result<Self, ValidationError> {
        let mut compiler = Compiler::new();
        compiler.set_default_draft(Draft::V2020_12);
        // No loader for any scheme: references may not reach files or the network.
        compiler.use_loader(Box::new(SchemeUrlLoader::new()));
        let mut registry = TypeSchemas::empty();
        for (i, declaration) in declarations.iter().enumerate() {
            let at = |field: &str| format!("[{i}].{field}");
            let name =
                TypeName::new(declaration.name.as_str()).map_err(|e| e.within(&at("name")))?;
            if registry.by_name.contains_key(&name) {
                return Err(ValidationError::field(
                    at("name"),
                    format!("the type `{name}` is declared more than once"),
                ));
            }
            check_root(&declaration.schema).map_err(|m| ValidationError::field(at("schema"), m))?;
            let location = schema_location(&name);
            let invalid = |e: &boon::CompileError| {
                ValidationError::field(at("schema"), format!("not a valid JSON Schema: {e:#}"))
            };
            compiler
                .add_resource(&location, declaration.schema.clone())
                .map_err(|e| invalid(&e))?;
            let index = compiler
                .compile(&location, &mut registry.compiled)
                .map_err(|e| invalid(&e))?;
            registry.by_name.insert(
                name.clone(),
                Declared {
                    index,
                    schema: declaration.schema.clone(),
                },
            );
            registry.order.push(name);
        }
        Ok(registry)
    }

    /// Whether no type is declared.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The declared types, in declaration order.
    pub fn names(&self) -> impl Iterator<Item = &TypeName> {
        self.order.iter()
    }

    /// The schema declared for `type_name`, as written.
    pub fn schema(&self, type_name: &TypeName) -> Option<&Value> {
        self.by_name.get(type_name).map(|d| &d.schema)
    }

    /// Checks `payload` against the schema declared for `type_name`; a type without one
    /// accepts anything.
    ///
    /// # Errors
    /// The first violation: its field is the failing place inside the payload in the
    /// project's dotted form (`steps[3]`, `owner.name`; none when the payload as a whole
    /// fails), its message what the schema asked for. Prefix it with
    /// [`ValidationError::within`] (`payload` gives `payload.steps[3]`).
    pub fn validate(
        &self,
        type_name: &TypeName,
        payload: &Map<String, Value>,
    ) -> Result<(), ValidationError> {
        let Some(declared) = self.by_name.get(type_name) else {
            return Ok(());
        };
        // boon validates a Value; a payload is always an object.
        let value = Value::Object(payload.clone());
        let Err(error) = self.compiled.validate(&value, declared.index) else {
            return Ok(());
        };
        let leaf = first_leaf(&error);
        let path = dotted_path(&leaf.instance_location.tokens);
        let message = format!("does not match the schema of `{type_name}`: {}", leaf.kind);
        Err(if path.is_empty() {
            ValidationError::whole(message)
        } else {
            ValidationError::field(path, message)
        })
    }
}

impl Default for TypeSchemas {
    fn default() -> Self {
        TypeSchemas::empty()
    }
}

impl fmt::Debug for TypeSchemas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypeSchemas")
            .field("types", &self.order)
            .finish_non_exhaustive()
    }
}

/// Payloads are JSON objects: a schema for anything else could never pass.
fn check_root(schema: &Value) -> Result<(), String> {
    let Value::Object(object) = schema else {
        return Err("must be a JSON Schema object with \"type\": \"object\"".to_owned());
    };
    match object.get("type") {
        Some(Value::String(t)) if t == "object" => Ok(()),
        Some(other) => Err(format!(
            "the root must say \"type\": \"object\" (payloads are JSON objects), not {other}"
        )),
        None => {
            Err("the root must say \"type\": \"object\" (payloads are JSON objects)".to_owned())
        }
    }
}

/// Where a type's schema lives for the compiler: a URL that nothing can fetch.
fn schema_location(name: &TypeName) -> String {
    format!("flock:/types/{name}")
}

/// The first error without causes: the most specific thing that failed.
fn first_leaf<'a, 's, 'v>(
    error: &'a boon::ValidationError<'s, 'v>,
) -> &'a boon::ValidationError<'s, 'v> {
    let mut current = error;
    while let Some(first) = current.causes.first() {
        current = first;
    }
    current
}

/// `steps[3].title` from the tokens `steps`, `3`, `title`.
fn dotted_path(tokens: &[InstanceToken<'_>]) -> String {
    let mut path = String::new();
    for token in tokens {
        match token {
            InstanceToken::Prop(name) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(name);
            }
            InstanceToken::Item(i) => {
                let _ = write!(path, "[{i}]");
            }
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn declare(name: &str, schema: Value) -> TypeDeclaration {
        TypeDeclaration {
            name: name.to_owned(),
            schema,
        }
    }

    fn plan_schema() -> Value {
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["title", "steps"],
            "properties": {
                "title": {"type": "string", "maxLength": 20},
                "steps": {"type": "array", "minItems": 1, "maxItems": 3, "items": {"$ref": "#/$defs/step"}}
            },
            "$defs": {"step": {"type": "string", "minLength": 1}}
        })
    }

    fn payload(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("test payloads are objects"),
        }
    }

    #[test]
    fn valid_payloads_pass_and_undeclared_types_accept_anything() {
        let types = TypeSchemas::new(&[declare("Plan", plan_schema())]).unwrap();
        let plan = TypeName::new("Plan").unwrap();
        types
            .validate(&plan, &payload(json!({"title": "t", "steps": ["a", "b"]})))
            .unwrap();
        let other = TypeName::new("Other").unwrap();
        types.validate(&other, &payload(json!({"x": 1}))).unwrap();
        assert_eq!(types.names().collect::<Vec<_>>(), [&plan]);
        assert_eq!(types.schema(&plan), Some(&plan_schema()));
        assert!(types.schema(&other).is_none());
    }

    #[test]
    fn violations_name_the_failing_path() {
        let types = TypeSchemas::new(&[declare("Plan", plan_schema())]).unwrap();
        let plan = TypeName::new("Plan").unwrap();
        let cases = [
            (
                json!({"title": "t", "steps": ["a", ""]}),
                Some("steps[1]"),
                "length",
            ),
            (
                json!({"title": "t", "steps": ["a", "b", "c", "d"]}),
                Some("steps"),
                "maximum 3",
            ),
            (json!({"title": "t"}), None, "missing properties 'steps'"),
            (
                json!({"title": 3, "steps": ["a"]}),
                Some("title"),
                "want string",
            ),
            (
                json!({"title": "t", "steps": ["a"], "extra": 1}),
                None,
                "additionalProperties 'extra'",
            ),
        ];
        for (value, field, expected) in cases {
            let error = types.validate(&plan, &payload(value.clone())).unwrap_err();
            assert_eq!(error.field_name(), field, "{value}: {error}");
            assert!(error.message().contains(expected), "{value}: {error}");
            assert!(error.message().contains("schema of `Plan`"), "{error}");
        }
        let within = types
            .validate(&plan, &payload(json!({"title": "t", "steps": ["a", ""]})))
            .unwrap_err()
            .within("payload");
        assert_eq!(within.field_name(), Some("payload.steps[1]"));
    }

    #[test]
    fn bad_declarations_are_refused_by_position_and_field() {
        let cases = [
            (
                vec![declare("a b", json!({"type": "object"}))],
                "[0].name",
                "type name",
            ),
            (
                vec![
                    declare("Plan", json!({"type": "object"})),
                    declare("Plan", json!({"type": "object"})),
                ],
                "[1].name",
                "more than once",
            ),
            (
                vec![declare("Plan", json!({"type": "string"}))],
                "[0].schema",
                "\"type\": \"object\"",
            ),
            (
                vec![declare("Plan", json!(["type"]))],
                "[0].schema",
                "JSON Schema object",
            ),
            (
                vec![declare(
                    "Plan",
                    json!({"type": "object", "minProperties": -1}),
                )],
                "[0].schema",
                "not a valid JSON Schema",
            ),
            (
                vec![declare(
                    "Plan",
                    json!({"type": "object", "properties": {"a": {"$ref": "file:///etc/hostname"}}}),
                )],
                "[0].schema",
                "not a valid JSON Schema",
            ),
            (
                vec![declare(
                    "Plan",
                    json!({"type": "object", "properties": {"a": {"$ref": "https://example.com/s.json"}}}),
                )],
                "[0].schema",
                "not a valid JSON Schema",
            ),
        ];
        for (declarations, field, expected) in cases {
            let error = TypeSchemas::new(&declarations).unwrap_err();
            assert_eq!(error.field_name(), Some(field), "{error}");
            assert!(error.message().contains(expected), "{error}");
        }
    }

    #[test]
    fn declarations_deserialize_strictly() {
        let ok: TypeDeclaration =
            serde_json::from_value(json!({"name": "Plan", "schema": {"type": "object"}})).unwrap();
        assert_eq!(ok.name, "Plan");
        let err = serde_json::from_value::<TypeDeclaration>(
            json!({"name": "Plan", "schema": {}, "extra": 1}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `extra`"), "{err}");
    }
}
