//! API errors: a domain error code per failure, mapped to an HTTP status and the JSON error
//! body `{"error":{"code","message","field"?}}` in this one place, and every domain error the
//! routes meet turned into one by a `From` implementation, so routes use `?`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use flock_context::{AddressRefused, StartError};
use flock_delivery::{DeliveryState, OutboxError};
use flock_models::{ErrorBody, ValidationError};
use flock_orchestrator::{PublishError, StoreError};
use uuid::Uuid;

/// What went wrong, independent of HTTP; each maps to one status and one `code` string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorCode {
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
    /// A request with the same idempotency key is still being answered.
    InProgress,
    /// The server is stopping.
    ShuttingDown,
    /// Storage failed; the request may be retried.
    StorageUnavailable,
    /// The caller's key lacks the scope the route needs.
    Forbidden,
    /// The request did not arrive within the server's request timeout.
    RequestTimeout,
    /// Too much work is queued; try again after `Retry-After`.
    Overloaded,
    /// The caller sent more requests than `[limits]` allows; try again after `Retry-After`.
    TooManyRequests,
    /// A publish with a webhook while too many deliveries are pending (the tenant's or the
    /// server's); try again after `Retry-After`.
    TooManyPendingDeliveries,
    /// No key, or a key that is malformed, unknown, revoked or expired, where one is needed.
    Unauthorized,
    /// A request served without a key named a host that is not loopback (DNS rebinding).
    HostNotAllowed,
    /// A body that is not declared `application/json`.
    UnsupportedMediaType,
}

impl ErrorCode {
    /// Every code, in the order the OpenAPI document lists them.
    pub(crate) const ALL: [ErrorCode; 20] = [
        ErrorCode::MalformedJson,
        ErrorCode::InvalidHeader,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::HostNotAllowed,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::RequestTimeout,
        ErrorCode::Conflict,
        ErrorCode::InProgress,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::Validation,
        ErrorCode::WebhookAddressRefused,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::TooManyRequests,
        ErrorCode::TooManyPendingDeliveries,
        ErrorCode::ShuttingDown,
        ErrorCode::StorageUnavailable,
        ErrorCode::Overloaded,
    ];

    /// What the code means, for the OpenAPI document.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            ErrorCode::MalformedJson => "the body is empty, not JSON, or broke off",
            ErrorCode::InvalidHeader => "a header is malformed (`field` does not say which)",
            ErrorCode::Forbidden => "the caller's key lacks the scope this route needs",
            ErrorCode::Unauthorized => {
                "no API key, or one that is malformed, unknown, revoked or expired; \
                 send `Authorization: Bearer <key>` (`WWW-Authenticate: Bearer` says so)"
            }
            ErrorCode::HostNotAllowed => {
                "a request without an API key must name a loopback host (`localhost`, \
                 `127.0.0.1`, `[::1]`), against DNS rebinding"
            }
            ErrorCode::UnsupportedMediaType => {
                "the body must be sent as `Content-Type: application/json`"
            }
            ErrorCode::NotFound => "nothing has this id, or no route has this path",
            ErrorCode::MethodNotAllowed => {
                "the route has no such method; `Allow` lists its methods"
            }
            ErrorCode::RequestTimeout => {
                "the body did not arrive within the server's request timeout; the connection is closed"
            }
            ErrorCode::Conflict => "the resource is not in a state that allows this",
            ErrorCode::InProgress => {
                "a request with this `X-Idempotency-Key` is still being answered (here or on another instance); retry after `Retry-After` seconds for its answer"
            }
            ErrorCode::PayloadTooLarge => "the body is larger than the server's limit",
            ErrorCode::Validation => {
                "a field or query parameter is missing, unknown or invalid; `field` names it"
            }
            ErrorCode::WebhookAddressRefused => {
                "the webhook URL is a literal address the SSRF guard refuses; `field` names it"
            }
            ErrorCode::IdempotencyKeyReused => {
                "this `X-Idempotency-Key` was used before with a different request"
            }
            ErrorCode::TooManyRequests => {
                "the caller sent more requests than the server's rate limit; retry after `Retry-After` seconds"
            }
            ErrorCode::TooManyPendingDeliveries => {
                "too many webhook deliveries are pending (the tenant's or the server's); nothing was stored, retry after `Retry-After` seconds"
            }
            ErrorCode::ShuttingDown => "the server is stopping; try another instance or later",
            ErrorCode::StorageUnavailable => "storage failed; the request may be retried",
            ErrorCode::Overloaded => {
                "the server is at a bound (too many agent runs waiting: nothing was stored; or as many event streams open as it keeps); retry after `Retry-After` seconds"
            }
        }
    }

    /// The HTTP status this code answers with.
    pub(crate) fn status(self) -> StatusCode {
        match self {
            ErrorCode::MalformedJson | ErrorCode::InvalidHeader => StatusCode::BAD_REQUEST,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Validation
            | ErrorCode::WebhookAddressRefused
            | ErrorCode::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Conflict | ErrorCode::InProgress => StatusCode::CONFLICT,
            ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::Forbidden | ErrorCode::HostNotAllowed => StatusCode::FORBIDDEN,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::TooManyRequests | ErrorCode::TooManyPendingDeliveries => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ErrorCode::ShuttingDown | ErrorCode::StorageUnavailable | ErrorCode::Overloaded => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The stable `code` string of the error body.
    pub(crate) fn as_str(self) -> &'static str {
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
            ErrorCode::InProgress => "in_progress",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::HostNotAllowed => "host_not_allowed",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::StorageUnavailable => "storage_unavailable",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::TooManyRequests => "too_many_requests",
            ErrorCode::TooManyPendingDeliveries => "too_many_pending_deliveries",
        }
    }
}

/// An error answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub(crate) struct ApiError {
    code: ErrorCode,
    message: String,
    field: Option<String>,
    /// Seconds for a `Retry-After` header.
    retry_after: Option<u64>,
}

/// How long a publish refused as `overloaded` is asked to wait: runs take seconds.
const OVERLOADED_RETRY_SECS: u64 = 1;

impl ApiError {
    /// An error with a code and a message.
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    /// The same error, asking the client to wait `secs` seconds (`Retry-After`).
    #[must_use]
    pub(crate) fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The same error, naming the offending field.
    #[must_use]
    pub(crate) fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// The JSON body of this error.
    pub(crate) fn body(&self) -> ErrorBody {
        ErrorBody::new(self.code.as_str(), &self.message).with_field(self.field.clone())
    }
}

impl From<ValidationError> for ApiError {
    fn from(err: ValidationError) -> Self {
        ApiError {
            code: ErrorCode::Validation,
            message: err.to_string(),
            field: err.field_name().map(str::to_owned),
            retry_after: None,
        }
    }
}

impl ApiError {
    /// 503 `storage_unavailable` for a store that failed; the cause goes to the log with its
    /// sources (the database's own error), not to the client.
    pub(crate) fn storage(err: &dyn std::error::Error) -> Self {
        let mut text = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        tracing::error!(error = %text, "storage failed");
        ApiError::new(
            ErrorCode::StorageUnavailable,
            "storage is unavailable; try again",
        )
    }

    /// 404 for a webhook delivery id that names nothing (any more).
    pub(crate) fn unknown_delivery(id: Uuid) -> Self {
        ApiError::new(
            ErrorCode::NotFound,
            format!(
                "no webhook delivery has the id {id} (done deliveries are pruned after the store's retention period)"
            ),
        )
    }
}

/// Every store failure is a 503: the request may be retried.
impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        ApiError::storage(&err)
    }
}

/// A publish refused because the server is stopping is a 503 `shutting_down`; a payload its
/// type's schema refuses a 422 `validation_error` naming the place (`payload.steps[3]`); any
/// other failure is the store's.
impl From<PublishError> for ApiError {
    fn from(err: PublishError) -> Self {
        match err {
            PublishError::ShuttingDown => {
                ApiError::new(ErrorCode::ShuttingDown, "the server is shutting down")
            }
            PublishError::InvalidPayload(invalid) => invalid.into(),
            PublishError::Overloaded { .. } => {
                ApiError::new(ErrorCode::Overloaded, err.to_string())
                    .retry_after(OVERLOADED_RETRY_SECS)
            }
            PublishError::Store { .. } | PublishError::LimitReached { .. } => {
                ApiError::storage(&err)
            }
        }
    }
}

/// A webhook address the SSRF guard refuses is a 422 naming the field the client used.
impl From<AddressRefused> for ApiError {
    fn from(refused: AddressRefused) -> Self {
        ApiError::new(ErrorCode::WebhookAddressRefused, refused.to_string()).field(refused.field())
    }
}

/// Starting a workflow fails on its webhook's address or on its first publish.
impl<E: Into<ApiError>> From<StartError<E>> for ApiError {
    fn from(err: StartError<E>) -> Self {
        match err {
            StartError::AddressRefused(refused) => refused.into(),
            StartError::Publish(err) => err.into(),
        }
    }
}

/// An unknown delivery is a 404, a redelivery of one that is not failed a 409; the rest are
/// storage failures.
impl From<OutboxError> for ApiError {
    fn from(err: OutboxError) -> Self {
        match err {
            OutboxError::UnknownDelivery(id) => ApiError::unknown_delivery(id),
            OutboxError::NotRedeliverable {
                id,
                state: DeliveryState::Delivered,
            } => ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "webhook delivery {id} was delivered (its receiver answered 2xx); only a failed delivery can be redelivered"
                ),
            ),
            OutboxError::NotRedeliverable { id, .. } => ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "webhook delivery {id} is still pending: it is attempted again by itself; only a failed delivery can be redelivered"
                ),
            ),
            OutboxError::LeaseLost { .. }
            | OutboxError::Duplicate { .. }
            | OutboxError::Backend { .. } => ApiError::storage(&err),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut answer = HttpResponse::build(self.status_code());
        if let Some(secs) = self.retry_after {
            answer.insert_header((actix_web::http::header::RETRY_AFTER, secs));
        }
        if self.code == ErrorCode::Unauthorized {
            answer.insert_header((actix_web::http::header::WWW_AUTHENTICATE, "Bearer"));
        }
        answer.json(self.body())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(err: impl Into<ApiError>) -> (u16, String, String) {
        let err = err.into();
        let body = serde_json::to_value(err.body()).unwrap();
        (
            err.status_code().as_u16(),
            body["error"]["code"].as_str().unwrap().to_owned(),
            body["error"]["message"].as_str().unwrap().to_owned(),
        )
    }

    #[test]
    fn codes_are_listed_once_each_by_status() {
        let names: std::collections::BTreeSet<&str> =
            ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), ErrorCode::ALL.len());
        let statuses: Vec<u16> = ErrorCode::ALL.iter().map(|c| c.status().as_u16()).collect();
        assert!(statuses.is_sorted(), "{statuses:?}");
    }

    #[test]
    fn store_failures_are_503_without_their_cause() {
        let id = Uuid::now_v7();
        for err in [StoreError::NoOutbox, StoreError::Duplicate(id)] {
            let (status, code, message) = answer(err);
            assert_eq!((status, code.as_str()), (503, "storage_unavailable"));
            assert_eq!(message, "storage is unavailable; try again");
        }
        let (status, code, message) = answer(PublishError::Store(StoreError::Duplicate(id)));
        assert_eq!((status, code.as_str()), (503, "storage_unavailable"));
        assert!(!message.contains(&id.to_string()), "{message}");
        let (status, code, _) = answer(OutboxError::LeaseLost(id));
        assert_eq!((status, code.as_str()), (503, "storage_unavailable"));
    }

    #[test]
    fn a_publish_while_stopping_is_503_shutting_down() {
        let (status, code, message) = answer(PublishError::ShuttingDown);
        assert_eq!((status, code.as_str()), (503, "shutting_down"));
        assert_eq!(message, "the server is shutting down");
    }

    #[test]
    fn a_payload_its_schema_refuses_is_422_naming_the_place() {
        let invalid = ValidationError::field("steps[3]", "does not match the schema of `Plan`")
            .within("payload");
        let err: ApiError = PublishError::InvalidPayload(invalid).into();
        let body = serde_json::to_value(err.body()).unwrap();
        assert_eq!(err.status_code().as_u16(), 422);
        assert_eq!(body["error"]["code"], "validation_error");
        assert_eq!(body["error"]["field"], "payload.steps[3]");
        assert_eq!(
            body["error"]["message"],
            "payload.steps[3]: does not match the schema of `Plan`"
        );
    }

    #[test]
    fn outbox_answers_name_the_delivery() {
        let id = Uuid::now_v7();
        let (status, code, message) = answer(OutboxError::UnknownDelivery(id));
        assert_eq!((status, code.as_str()), (404, "not_found"));
        assert!(message.contains(&id.to_string()), "{message}");
        for (state, words) in [
            (DeliveryState::Delivered, "was delivered"),
            (DeliveryState::Pending, "still pending"),
        ] {
            let (status, code, message) = answer(OutboxError::NotRedeliverable { id, state });
            assert_eq!((status, code.as_str()), (409, "conflict"));
            assert!(message.contains(words), "{message}");
            assert!(message.contains(&id.to_string()), "{message}");
        }
    }
}
