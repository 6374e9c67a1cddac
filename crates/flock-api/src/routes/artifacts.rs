//! `/api/v1/artifacts`: publish (fire and forget, or sync), list and get.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::{HttpMessage as _, HttpRequest, HttpResponse, web};
use flock_models::{
    ArtifactPublishRequest, PublishResponse, Scope, SyncPublishRequest, SyncPublishResponse,
    TypeName, ValidationError,
};
use flock_orchestrator::{ArtifactQuery, WaitOutcome};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::{LoggedCorrelation, method_not_allowed, path_id};
use crate::auth::Caller;
use crate::body;
use crate::error::{ApiError, ErrorCode};
use crate::idempotency::{self, Claim, Stored};
use crate::state::AppState;

/// The default and largest page of `GET /api/v1/artifacts`.
pub(crate) const DEFAULT_LIMIT: usize = 50;
/// The largest page.
pub(crate) const MAX_LIMIT: usize = 500;

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/artifacts")
            .route(web::post().to(publish))
            .route(web::get().to(list))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/artifacts/sync")
            .route(web::post().to(publish_sync))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/artifacts/{id}")
            .route(web::get().to(get))
            .default_service(web::to(method_not_allowed)),
    );
}

/// `POST /api/v1/artifacts`: 202 `{"status":"accepted","correlation_id"}` once the artifact is
/// stored; agents and webhooks run in the background.
#[utoipa::path(
    post, path = "/api/v1/artifacts", tag = "artifacts",
    request_body = crate::openapi::PublishRequestDoc,
    params(("X-Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for the same key and body")),
    responses(
        (status = 202, body = crate::openapi::PublishResponseDoc),
        (status = 400, body = crate::openapi::ErrorBodyDoc), (status = 413, body = crate::openapi::ErrorBodyDoc),
        (status = 422, body = crate::openapi::ErrorBodyDoc), (status = 503, body = crate::openapi::ErrorBodyDoc),
    )
)]
pub(crate) async fn publish(
    req: HttpRequest,
    caller: Caller,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Publish)?;
    let raw = body::read(&req, payload, state.body_limit).await?;
    let value = body::json(&raw)?;
    idempotent(&req, &state, "publish", value, |value| async {
        let request = ArtifactPublishRequest::from_value(value)?;
        let correlation_id = start_workflow(&state, request).await?;
        req.extensions_mut()
            .insert(LoggedCorrelation(correlation_id));
        Ok((
            StatusCode::ACCEPTED,
            to_json(&PublishResponse::accepted(correlation_id)),
        ))
    })
    .await
}

/// `POST /api/v1/artifacts/sync`: publishes, waits for the workflow to go idle or for its
/// timeout, and answers with its artifacts. Webhooks keep flowing after the answer.
#[utoipa::path(
    post, path = "/api/v1/artifacts/sync", tag = "artifacts",
    request_body = crate::openapi::SyncRequestDoc,
    params(("X-Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for the same key and body")),
    responses(
        (status = 200, body = crate::openapi::SyncResponseDoc),
        (status = 400, body = crate::openapi::ErrorBodyDoc), (status = 413, body = crate::openapi::ErrorBodyDoc),
        (status = 422, body = crate::openapi::ErrorBodyDoc), (status = 503, body = crate::openapi::ErrorBodyDoc),
    )
)]
pub(crate) async fn publish_sync(
    req: HttpRequest,
    caller: Caller,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Publish)?;
    let started = Instant::now();
    let raw = body::read(&req, payload, state.body_limit).await?;
    let value = body::json(&raw)?;
    idempotent(&req, &state, "publish_sync", value, |value| async {
        let request = SyncPublishRequest::from_value(value)?;
        let correlation_id = start_workflow(&state, request.publish).await?;
        req.extensions_mut()
            .insert(LoggedCorrelation(correlation_id));
        let outcome = state
            .orchestrator
            .wait_idle(correlation_id, request.timeout)
            .await;
        let page = state
            .orchestrator
            .store()
            .query(&ArtifactQuery::correlation(correlation_id))
            .await?;
        let answer = SyncPublishResponse {
            correlation_id,
            artifacts: page
                .items
                .into_iter()
                .filter(|a| request.filters.matches(a))
                .collect(),
            completed: outcome == WaitOutcome::Idle,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        Ok((StatusCode::OK, to_json(&answer)))
    })
    .await
}

/// Starts the request's workflow: the webhook owner checks and registers its webhook under a
/// new correlation id, the artifact is published under that id, and a failed publish leaves no
/// webhook behind.
async fn start_workflow(
    state: &AppState,
    request: ArtifactPublishRequest,
) -> Result<Uuid, ApiError> {
    let (draft, webhook) = request.into_parts();
    let orchestrator = &state.orchestrator;
    let (correlation_id, _) = state
        .webhooks
        .publish(webhook, |correlation_id| {
            orchestrator.publish(correlation_id, draft)
        })
        .await?;
    Ok(correlation_id)
}

/// Runs `answer` once per idempotency key: a repeat of the same request gets the first answer
/// again, a different request under the same key a 422. Without a key it just runs. `answer`
/// gets the request body (`value`) after the key was claimed with it.
async fn idempotent<F, Fut>(
    req: &HttpRequest,
    state: &AppState,
    route: &str,
    value: Value,
    answer: F,
) -> Result<HttpResponse, ApiError>
where
    F: FnOnce(Value) -> Fut,
    Fut: Future<Output = Result<(StatusCode, Vec<u8>), ApiError>>,
{
    let Some(key) = req.headers().get(idempotency::HEADER) else {
        let (status, body) = answer(value).await?;
        return Ok(json_response(status, body));
    };
    let key = key.to_str().map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidHeader,
            "X-Idempotency-Key must be visible ASCII characters",
        )
    })?;
    idempotency::check_key(key).map_err(|m| ApiError::new(ErrorCode::InvalidHeader, m))?;
    match state.idempotency.claim(key, route, &value).await {
        Claim::Replay(stored) => {
            let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
            let mut response = json_response(status, stored.body.to_vec());
            response.headers_mut().insert(
                actix_web::http::header::HeaderName::from_static("idempotent-replayed"),
                actix_web::http::header::HeaderValue::from_static("true"),
            );
            Ok(response)
        }
        Claim::Conflict => Err(ApiError::new(
            ErrorCode::IdempotencyKeyReused,
            "this X-Idempotency-Key was already used with a different request",
        )
        .field("X-Idempotency-Key")),
        Claim::New(pending) => {
            let (status, body) = answer(value).await?;
            pending.complete(Stored {
                status: status.as_u16(),
                body: Arc::from(body.as_slice()),
            });
            Ok(json_response(status, body))
        }
    }
}

fn json_response(status: StatusCode, body: Vec<u8>) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json")
        .body(body)
}

fn to_json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("API answers are plain data and always serialize")
}

/// The answer of `GET /api/v1/artifacts`.
#[derive(Debug, Serialize)]
pub(crate) struct ArtifactPage {
    items: Vec<flock_models::Artifact>,
    pagination: Pagination,
}

#[derive(Debug, Serialize)]
struct Pagination {
    limit: usize,
    offset: usize,
    total: u64,
}

/// `GET /api/v1/artifacts`: filtered and paginated, in publication order.
#[utoipa::path(
    get, path = "/api/v1/artifacts", tag = "artifacts",
    params(
        ("type" = Option<String>, Query, description = "Artifact type; repeat or separate by commas for several"),
        ("produced_by" = Option<String>, Query, description = "Producing agent, or `external`"),
        ("correlation_id" = Option<String>, Query, description = "Workflow id (UUID)"),
        ("tag" = Option<String>, Query, description = "Carries this tag"),
        ("from" = Option<String>, Query, description = "Created at or after (RFC 3339)"),
        ("to" = Option<String>, Query, description = "Created at or before (RFC 3339)"),
        ("limit" = Option<usize>, Query, description = "Page size, 1 to 500, default 50"),
        ("offset" = Option<usize>, Query, description = "Matches to skip, default 0"),
    ),
    responses((status = 200, body = crate::openapi::ArtifactPageDoc), (status = 422, body = crate::openapi::ErrorBodyDoc))
)]
pub(crate) async fn list(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Read)?;
    let query = parse_query(req.query_string())?;
    let page = state.orchestrator.store().query(&query).await?;
    Ok(HttpResponse::Ok().json(ArtifactPage {
        items: page.items,
        pagination: Pagination {
            limit: query.limit,
            offset: query.offset,
            total: page.total,
        },
    }))
}

/// Parses the list route's query string; every error names its parameter.
pub(crate) fn parse_query(text: &str) -> Result<ArtifactQuery, ApiError> {
    let pairs: Vec<(String, String)> = web::Query::<Vec<(String, String)>>::from_query(text)
        .map_err(|e| {
            ApiError::new(
                ErrorCode::Validation,
                format!("the query string is malformed: {e}"),
            )
        })?
        .into_inner();
    let mut query = ArtifactQuery {
        limit: DEFAULT_LIMIT,
        ..ArtifactQuery::default()
    };
    let invalid = |field: &str, message: String| -> ApiError {
        ValidationError::field(field, message).into()
    };
    let time = |field: &str, value: &str| {
        flock_models::timestamp::parse(value).map_err(|_| {
            invalid(
                field,
                format!("`{value}` is not an RFC 3339 time such as 2026-11-28T12:00:00Z"),
            )
        })
    };
    for (name, value) in pairs {
        match name.as_str() {
            "type" => {
                for part in value.split(',').filter(|p| !p.is_empty()) {
                    let type_name = TypeName::new(part).map_err(|e| e.within("type"))?;
                    query.type_names.push(type_name);
                }
            }
            "produced_by" => query.produced_by = Some(value),
            "correlation_id" => {
                query.correlation_id =
                    Some(Uuid::parse_str(&value).map_err(|_| {
                        invalid("correlation_id", format!("`{value}` is not a UUID"))
                    })?);
            }
            "tag" => query.tag = Some(value),
            "from" => query.from = Some(time("from", &value)?),
            "to" => query.to = Some(time("to", &value)?),
            "limit" => {
                query.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        invalid(
                            "limit",
                            format!("must be a whole number from 1 to {MAX_LIMIT}"),
                        )
                    })?;
            }
            "offset" => {
                query.offset = value.parse().map_err(|_| {
                    invalid("offset", "must be a whole number, 0 or more".to_owned())
                })?;
            }
            other => return Err(invalid(other, format!("unknown query parameter `{other}`"))),
        }
    }
    Ok(query)
}

/// `GET /api/v1/artifacts/{id}`.
#[utoipa::path(
    get, path = "/api/v1/artifacts/{id}", tag = "artifacts",
    params(("id" = String, Path, description = "Artifact id (UUID)")),
    responses((status = 200, body = crate::openapi::ArtifactDoc), (status = 404, body = crate::openapi::ErrorBodyDoc))
)]
pub(crate) async fn get(
    caller: Caller,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Read)?;
    let id = path_id(&path, "artifact")?;
    match state.orchestrator.store().get(id).await? {
        Some(artifact) => Ok(HttpResponse::Ok().json(artifact)),
        None => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no artifact has the id {id}"),
        )),
    }
}
