//! The routes, one module per area, each with a `configure` that registers its resources.

pub(crate) mod artifacts;
pub(crate) mod correlations;
pub(crate) mod system;
pub(crate) mod types;
pub(crate) mod webhooks;

use actix_web::{HttpRequest, HttpResponse};
use uuid::Uuid;

use crate::error::{ApiError, ErrorCode};

/// The answer for a path that names no route.
pub(crate) async fn not_found(req: HttpRequest) -> HttpResponse {
    actix_web::ResponseError::error_response(&ApiError::new(
        ErrorCode::NotFound,
        format!("no route for {} {}", req.method(), req.path()),
    ))
}

/// The answer for a route asked with a method it does not have.
pub(crate) async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    actix_web::ResponseError::error_response(&ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{} is not allowed on {}", req.method(), req.path()),
    ))
}

/// Parses an id from the path; a malformed one names nothing that exists, so it is a 404.
pub(crate) fn path_id(raw: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| {
        ApiError::new(
            ErrorCode::NotFound,
            format!("no {what} has the id `{raw}` (ids are UUIDs)"),
        )
    })
}

/// The correlation id a handler worked on, left in the request's extensions for the request log.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoggedCorrelation(pub(crate) Uuid);
