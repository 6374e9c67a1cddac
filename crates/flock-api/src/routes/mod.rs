//! The routes, one module per area, each with a `configure` that registers its resources.

pub(crate) mod artifacts;
pub(crate) mod correlations;
pub(crate) mod dashboard;
pub(crate) mod events;
pub(crate) mod keys;
pub(crate) mod secrets;
pub(crate) mod system;
pub(crate) mod types;
pub(crate) mod webhooks;

use actix_web::http::Method;
use actix_web::http::header::{ALLOW, HeaderValue};
use actix_web::{FromRequest, Handler, HttpRequest, HttpResponse, Responder, web};
use uuid::Uuid;

use crate::error::{ApiError, ErrorCode};

/// The answer for a path that names no route.
pub(crate) async fn not_found(req: HttpRequest) -> HttpResponse {
    actix_web::ResponseError::error_response(&ApiError::new(
        ErrorCode::NotFound,
        format!("no route for {} {}", req.method(), req.path()),
    ))
}

/// A resource being registered: each method's handler, and a 405 answer for every other method
/// whose `Allow` header lists exactly the methods registered here (so it cannot disagree with
/// the routes).
pub(crate) struct Resource {
    resource: actix_web::Resource,
    methods: Vec<Method>,
}

impl Resource {
    /// A resource at `path` with no methods yet.
    pub(crate) fn new(path: &str) -> Self {
        Resource {
            resource: web::resource(path),
            methods: Vec::new(),
        }
    }

    /// Answers `method` with `handler`.
    pub(crate) fn route<F, Args>(mut self, method: Method, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.resource = self.resource.route(web::method(method.clone()).to(handler));
        self.methods.push(method);
        self
    }

    /// Answers `GET` with `handler`.
    pub(crate) fn get<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.route(Method::GET, handler)
    }

    /// Answers `POST` with `handler`.
    pub(crate) fn post<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.route(Method::POST, handler)
    }

    /// Answers `DELETE` with `handler`.
    pub(crate) fn delete<F, Args>(self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.route(Method::DELETE, handler)
    }

    /// The resource, answering every method it was not given with 405 and `Allow`.
    pub(crate) fn finish(self) -> actix_web::Resource {
        let allow = self
            .methods
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let allow = HeaderValue::from_str(&allow).expect("method names are valid header text");
        self.resource
            .default_service(web::to(move |req: HttpRequest| {
                let allow = allow.clone();
                async move { method_not_allowed(&req, allow) }
            }))
    }
}

/// The answer for a route asked with a method it does not have: 405 with the error body and
/// `Allow` listing the methods it has.
fn method_not_allowed(req: &HttpRequest, allow: HeaderValue) -> HttpResponse {
    let mut response = actix_web::ResponseError::error_response(&ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!(
            "{} is not allowed on {}; it allows {}",
            req.method(),
            req.path(),
            allow.to_str().unwrap_or_default()
        ),
    ));
    response.headers_mut().insert(ALLOW, allow);
    response
}

/// Parses an id from the path; a malformed one names nothing that exists, so it is a 404.
/// Ids are written as the document's `format: uuid` says: hyphenated, 36 characters.
pub(crate) fn path_id(raw: &str, what: &str) -> Result<Uuid, ApiError> {
    hyphenated_uuid(raw).ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotFound,
            format!("no {what} has the id `{raw}` (ids are UUIDs)"),
        )
    })
}

/// A UUID in its hyphenated form (what JSON Schema's `uuid` format is), and no other.
pub(crate) fn hyphenated_uuid(text: &str) -> Option<Uuid> {
    if text.len() != 36 {
        return None;
    }
    Uuid::try_parse(text).ok()
}

/// The correlation id a handler worked on, left in the request's extensions for the request log.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoggedCorrelation(pub(crate) Uuid);
