//! API errors: a domain error code per failure, mapped to an HTTP status and the JSON error
//! body `{"error":{"code","message","field"?}}` in this one place.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use flock_models::{ErrorBody, ValidationError};

/// What went wrong, independent of HTTP; each maps to one status and one `code` string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The body is not JSON.
    MalformedJson,
    /// The body is larger than the configured limit.
    PayloadTooLarge,
    /// A field is missing, unknown or invalid.
    Validation,
    /// The webhook URL's address is refused by the SSRF guard.
    WebhookAddressRefused,
    /// An idempotency key was used again with a different body.
    IdempotencyKeyReused,
    /// A header is malformed.
    InvalidHeader,
    /// No such resource.
    NotFound,
    /// The route exists but not with this method.
    MethodNotAllowed,
    /// The resource is not in a state that allows this (a delivery that is not failed cannot
    /// be redelivered).
    Conflict,
    /// The server is stopping.
    ShuttingDown,
    /// Storage failed; the request may be retried.
    StorageUnavailable,
}

impl ErrorCode {
    /// The HTTP status this code answers with.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::MalformedJson | ErrorCode::InvalidHeader => StatusCode::BAD_REQUEST,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Validation
            | ErrorCode::WebhookAddressRefused
            | ErrorCode::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::ShuttingDown | ErrorCode::StorageUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The stable `code` string of the error body.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::Validation => "validation_error",
            ErrorCode::WebhookAddressRefused => "webhook_address_refused",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorCode::InvalidHeader => "invalid_header",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Conflict => "conflict",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::StorageUnavailable => "storage_unavailable",
        }
    }
}

/// An error answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    code: ErrorCode,
    message: String,
    field: Option<String>,
}

impl ApiError {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            field: None,
        }
    }

    /// The same error, naming the offending field.
    #[must_use]
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// The error's code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The JSON body of this error.
    pub fn body(&self) -> ErrorBody {
        ErrorBody::new(self.code.as_str(), &self.message).with_field(self.field.clone())
    }
}

impl From<ValidationError> for ApiError {
    fn from(err: ValidationError) -> Self {
        ApiError {
            code: ErrorCode::Validation,
            message: err.to_string(),
            field: err.field_name().map(str::to_owned),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(self.body())
    }
}
