//! Reading a JSON object field by field, so that every error names the field it is about and
//! fields nobody asked for are rejected by name.

use serde_json::{Map, Value};

use crate::ValidationError;

/// A JSON object being taken apart. Each `take` removes a known field; [`Fields::finish`] rejects
/// whatever is left.
pub(crate) struct Fields {
    object: Map<String, Value>,
    /// The dotted path of this object, empty at the top level.
    path: String,
}

impl Fields {
    /// Starts reading `value`, which must be an object; `path` names it in errors.
    pub(crate) fn new(value: Value, path: &str) -> Result<Self, ValidationError> {
        match value {
            Value::Object(object) => Ok(Fields {
                object,
                path: path.to_owned(),
            }),
            other => Err(Self::error_at(
                path,
                format!("expected a JSON object, found {}", kind(&other)),
            )),
        }
    }

    /// The full path of one of this object's fields.
    pub(crate) fn path_of(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    /// Removes and returns a field; `null` counts as absent.
    pub(crate) fn take(&mut self, name: &str) -> Option<Value> {
        self.object.remove(name).filter(|v| !v.is_null())
    }

    /// Removes a field that must be there.
    pub(crate) fn require(&mut self, name: &str) -> Result<Value, ValidationError> {
        self.take(name)
            .ok_or_else(|| ValidationError::field(self.path_of(name), "this field is required"))
    }

    /// Removes an optional string field.
    pub(crate) fn take_string(&mut self, name: &str) -> Result<Option<String>, ValidationError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(ValidationError::field(
                self.path_of(name),
                format!("expected a string, found {}", kind(&other)),
            )),
        }
    }

    /// Checks that no unknown fields remain.
    pub(crate) fn finish(self) -> Result<(), ValidationError> {
        match self.object.keys().next() {
            None => Ok(()),
            Some(unknown) => Err(ValidationError::field(
                self.path_of(unknown),
                format!("unknown field `{unknown}`"),
            )),
        }
    }

    fn error_at(path: &str, message: String) -> ValidationError {
        if path.is_empty() {
            ValidationError::whole(message)
        } else {
            ValidationError::field(path, message)
        }
    }
}

/// Reads a JSON array of strings; `path` names it in errors (`tags`, elements `tags[1]`).
pub(crate) fn string_list(value: Value, path: &str) -> Result<Vec<String>, ValidationError> {
    let Value::Array(items) = value else {
        return Err(ValidationError::field(
            path,
            format!("expected an array of strings, found {}", kind(&value)),
        ));
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) => Ok(s),
            other => Err(ValidationError::field(
                format!("{path}[{i}]"),
                format!("expected a string, found {}", kind(&other)),
            )),
        })
        .collect()
}

/// The JSON kind of a value, for error messages.
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
