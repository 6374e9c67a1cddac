//! Validation errors and the JSON error body every API answer uses.

use serde::{Deserialize, Serialize};

/// A value that failed validation: which field (a dotted path such as `webhook.url` or
/// `tags[2]`, absent when the whole value is wrong) and why, in words a client can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct ValidationError {
    field: Option<String>,
    message: String,
}

impl ValidationError {
    /// An error about one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationError {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// An error about the value as a whole.
    pub fn whole(message: impl Into<String>) -> Self {
        ValidationError {
            field: None,
            message: message.into(),
        }
    }

    /// The dotted path of the offending field, if the error is about one field.
    pub fn field_name(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// What is wrong, without the field name.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error, with its field path placed under `prefix` (`url` under `webhook` gives
    /// `webhook.url`).
    #[must_use]
    pub fn within(self, prefix: &str) -> Self {
        let field = match self.field {
            Some(f) if f.starts_with('[') => format!("{prefix}{f}"),
            Some(f) => format!("{prefix}.{f}"),
            None => prefix.to_owned(),
        };
        ValidationError {
            field: Some(field),
            message: self.message,
        }
    }

    fn describe(&self) -> String {
        match &self.field {
            Some(field) => format!("{field}: {}", self.message),
            None => self.message.clone(),
        }
    }
}

/// The body of every error answer: `{"error":{"code","message","field"?}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error itself.
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// A stable, machine-readable code such as `validation_error` or `not_found`.
    pub code: String,
    /// A sentence for people.
    pub message: String,
    /// The offending field, when one field is to blame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ErrorBody {
    /// An error body with the given code and message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorBody {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
                field: None,
            },
        }
    }

    /// The same body, naming the offending field.
    #[must_use]
    pub fn with_field(mut self, field: Option<String>) -> Self {
        self.error.field = field;
        self
    }
}
