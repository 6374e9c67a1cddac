//! `/api/v1/artifacts`: publish (fire and forget, or sync), list and get.

use std::future::Future;
use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::{HttpMessage as _, HttpRequest, HttpResponse, web};
use flock_models::{
    ArtifactDraft, ArtifactPublishRequest, BatchPublishRequest, BatchPublishResponse,
    PublishResponse, RequestedWebhook, Scope, SyncPublishRequest, SyncPublishResponse, TypeName,
    ValidationError,
};
use flock_orchestrator::{ArtifactQuery, RecordedAnswer, SyncAnswer, WaitOutcome};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::{LoggedCorrelation, Resource, hyphenated_uuid, path_id};
use crate::auth::Caller;
use crate::body;
use crate::error::{ApiError, ErrorCode};
use crate::idempotency::{self, Claim};
use crate::openapi::route_errors;
use crate::state::AppState;

/// The default page of `GET /api/v1/artifacts`.
pub(crate) const DEFAULT_LIMIT: usize = 50;
/// The largest page.
pub(crate) const MAX_LIMIT: usize = 500;
/// The largest `offset`. Skipping matches costs reading them, so deep pages are walked with
/// `cursor`, which costs the same on every page. Past the last match, a page is empty.
pub(crate) const MAX_OFFSET: usize = 10_000;
/// How many matches a listing counts at most: `total` is exact up to this many, and says this
/// many (with `total_exact: false`) past it, so no page counts a whole large table.
pub(crate) const MAX_COUNTED: u64 = 10_000;
/// The longest `cursor`: the decimal digits of a place in publication order (19 always fit a
/// 64-bit integer).
pub(crate) const MAX_CURSOR_LEN: usize = 19;

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(Resource::new("/artifacts").post(publish).get(list).finish())
        .service(Resource::new("/artifacts/sync").post(publish_sync).finish())
        .service(
            Resource::new("/artifacts/batch")
                .post(publish_batch)
                .finish(),
        )
        .service(Resource::new("/artifacts/{id}").get(get).finish());
}

route_errors!(
    /// What the publish routes answer when they refuse.
    PublishErrors: [
        MalformedJson,
        InvalidHeader,
        Unauthorized,
        Forbidden,
        HostNotAllowed,
        RequestTimeout,
        PayloadTooLarge,
        UnsupportedMediaType,
        Validation,
        WebhookAddressRefused,
        IdempotencyKeyReused,
        InProgress,
        ShuttingDown,
        TooManyRequests,
        TooManyPendingDeliveries,
        StorageUnavailable,
        Overloaded,
    ]
);

route_errors!(
    /// What `GET /api/v1/artifacts` answers when it refuses.
    ListErrors: [
        Unauthorized,
        Forbidden,
        HostNotAllowed,
        Validation,
        TooManyRequests,
        StorageUnavailable,
    ]
);

route_errors!(
    /// What `GET /api/v1/artifacts/{id}` answers when it refuses.
    GetErrors: [
        Unauthorized,
        Forbidden,
        HostNotAllowed,
        NotFound,
        TooManyRequests,
        StorageUnavailable,
    ]
);

/// `POST /api/v1/artifacts`: 202 `{"status":"accepted","correlation_id"}` once the artifact is
/// stored; agents and webhooks run in the background.
#[utoipa::path(
    post, path = "/api/v1/artifacts", tag = "artifacts",
    request_body = crate::openapi::PublishRequestDoc,
    params(crate::openapi::IdempotencyKeyDoc),
    responses(
        (status = 202, body = crate::openapi::PublishResponseDoc, description = "Stored; agents and webhooks run in the background",
            links(
                ("status" = (operation_id = "status", parameters(("id" = "$response.body#/correlation_id")), description = "The workflow's status")),
                ("webhooks" = (operation_id = "webhooks", parameters(("id" = "$response.body#/correlation_id")), description = "The workflow's webhook deliveries")),
            )
        ),
        PublishErrors,
    )
)]
pub(crate) async fn publish(
    req: HttpRequest,
    caller: Caller,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    idempotent(&req, payload, &state, &caller, "publish", |value| async {
        let request = ArtifactPublishRequest::from_value(value)?;
        let (draft, webhooks) = request.into_parts();
        let (correlation_id, _) =
            start_workflow(&state, &caller, webhooks, Drafts::One(draft)).await?;
        req.extensions_mut()
            .insert(LoggedCorrelation(correlation_id));
        Ok((
            to_json(&PublishResponse::accepted(correlation_id)),
            RecordedAnswer {
                status: StatusCode::ACCEPTED.as_u16(),
                correlation_id,
                sync: None,
            },
        ))
    })
    .await
}

/// `POST /api/v1/artifacts/sync`: publishes, waits for the workflow to go idle or for its
/// timeout, and answers with its artifacts. Webhooks keep flowing after the answer.
#[utoipa::path(
    post, path = "/api/v1/artifacts/sync", tag = "artifacts",
    request_body = crate::openapi::SyncRequestDoc,
    params(crate::openapi::IdempotencyKeyDoc),
    responses(
        (status = 200, body = crate::openapi::SyncResponseDoc, description = "The workflow went idle or its timeout passed; webhooks keep flowing",
            links(
                ("status" = (operation_id = "status", parameters(("id" = "$response.body#/correlation_id")), description = "The workflow's status")),
                ("webhooks" = (operation_id = "webhooks", parameters(("id" = "$response.body#/correlation_id")), description = "The workflow's webhook deliveries")),
                ("artifact" = (operation_id = "get", parameters(("id" = "$response.body#/artifacts/0/id")), description = "The first artifact of the answer")),
            )
        ),
        PublishErrors,
    )
)]
pub(crate) async fn publish_sync(
    req: HttpRequest,
    caller: Caller,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    idempotent(
        &req,
        payload,
        &state,
        &caller,
        "publish_sync",
        |value| async {
            let request = SyncPublishRequest::from_value(value)?;
            let (draft, webhooks) = request.publish.into_parts();
            let (correlation_id, _) =
                start_workflow(&state, &caller, webhooks, Drafts::One(draft)).await?;
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
            let recorded = RecordedAnswer {
                status: StatusCode::OK.as_u16(),
                correlation_id,
                sync: Some(SyncAnswer {
                    artifact_ids: answer.artifacts.iter().map(|a| a.id).collect(),
                    completed: answer.completed,
                    duration_ms: answer.duration_ms,
                }),
            };
            Ok((to_json(&answer), recorded))
        },
    )
    .await
}

/// `POST /api/v1/artifacts/batch`: 202 `{"status":"accepted","correlation_id","artifact_ids"}`
/// once every artifact of the batch is stored, in one workflow and one write (all or none);
/// agents and webhooks run in the background.
#[utoipa::path(
    post, path = "/api/v1/artifacts/batch", tag = "artifacts",
    request_body = crate::openapi::BatchRequestDoc,
    params(crate::openapi::IdempotencyKeyDoc),
    responses(
        (status = 202, body = crate::openapi::BatchResponseDoc, description = "All stored, in one workflow; agents and webhooks run in the background",
            links(
                ("status" = (operation_id = "status", parameters(("id" = "$response.body#/correlation_id")), description = "The workflow's status")),
                ("webhooks" = (operation_id = "webhooks", parameters(("id" = "$response.body#/correlation_id")), description = "The workflow's webhook deliveries")),
            )
        ),
        PublishErrors,
    )
)]
pub(crate) async fn publish_batch(
    req: HttpRequest,
    caller: Caller,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    idempotent(
        &req,
        payload,
        &state,
        &caller,
        "publish_batch",
        |value| async {
            let request = BatchPublishRequest::from_value(value)?;
            let (correlation_id, artifact_ids) = start_workflow(
                &state,
                &caller,
                request.webhooks,
                Drafts::Batch(request.artifacts),
            )
            .await?;
            req.extensions_mut()
                .insert(LoggedCorrelation(correlation_id));
            let answer = BatchPublishResponse {
                status: "accepted".to_owned(),
                correlation_id,
                artifact_ids,
            };
            Ok((
                to_json(&answer),
                RecordedAnswer {
                    status: StatusCode::ACCEPTED.as_u16(),
                    correlation_id,
                    sync: None,
                },
            ))
        },
    )
    .await
}

/// What a publish route publishes: one artifact, or a batch stored together.
enum Drafts {
    One(ArtifactDraft),
    Batch(Vec<ArtifactDraft>),
}

/// Starts the request's workflow in the caller's tenant: the webhook owner checks and registers
/// its webhooks under a new correlation id, the artifacts are published under that id (a
/// batch in one write), and a failed publish leaves no webhook behind. Answers the workflow
/// and the artifacts' ids in order.
async fn start_workflow(
    state: &AppState,
    caller: &Caller,
    webhooks: Vec<RequestedWebhook>,
    drafts: Drafts,
) -> Result<(Uuid, Vec<Uuid>), ApiError> {
    let deliveries = match &drafts {
        Drafts::One(draft) => deliveries_at_most(&webhooks, std::slice::from_ref(draft)),
        Drafts::Batch(drafts) => deliveries_at_most(&webhooks, drafts),
    };
    let with_webhooks = !webhooks.is_empty();
    let (correlation_id, ids) = state
        .webhooks
        .publish(webhooks, |correlation_id| async move {
            // After the webhooks passed their checks, before anything is stored.
            if with_webhooks {
                state.quota.admit(&caller.tenant, deliveries).await?;
            }
            let (orchestrator, tenant) = (&state.orchestrator, &caller.tenant);
            let published = match drafts {
                Drafts::One(draft) => orchestrator
                    .publish_for(tenant, correlation_id, draft)
                    .await
                    .map(|artifact| vec![artifact.id]),
                Drafts::Batch(drafts) => orchestrator
                    .publish_batch_for(tenant, correlation_id, drafts)
                    .await
                    .map(|artifacts| artifacts.iter().map(|a| a.id).collect()),
            };
            published.map_err(ApiError::from)
        })
        .await?;
    Ok((correlation_id, ids))
}

/// How many deliveries publishing `drafts` enqueues at first (agent outputs come later): one
/// per artifact and webhook that wants its type.
fn deliveries_at_most(webhooks: &[RequestedWebhook], drafts: &[ArtifactDraft]) -> u64 {
    let count = webhooks
        .iter()
        .map(|w| {
            drafts
                .iter()
                .filter(|d| w.config.wants(&d.type_name))
                .count()
        })
        .sum::<usize>();
    u64::try_from(count).unwrap_or(u64::MAX)
}

/// Checks the caller's `publish` scope, reads the JSON body, then runs `answer` once per
/// idempotency key of the caller's tenant: a repeat of the same request
/// gets the first answer again (rendered from its record: a sync answer's artifacts are read
/// back by id), a different request under the same key a 422, a repeat while the first is
/// still being answered a 409 `in_progress` with `Retry-After`. Keys of different tenants never
/// meet. Without a key it just runs. `answer` gets the request body (`value`) after the key was
/// claimed with it, and gives the body to send and what to record of it.
async fn idempotent<F, Fut>(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    caller: &Caller,
    route: &str,
    answer: F,
) -> Result<HttpResponse, ApiError>
where
    F: FnOnce(Value) -> Fut,
    Fut: Future<Output = Result<(Vec<u8>, RecordedAnswer), ApiError>>,
{
    caller.require(Scope::Publish)?;
    let raw = body::read(req, payload, state.body_limit).await?;
    let value = body::json(&raw)?;
    let Some(key) = req.headers().get(idempotency::HEADER) else {
        let (body, recorded) = answer(value).await?;
        return Ok(json_response(status_of(&recorded), body));
    };
    let key = key.to_str().map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidHeader,
            "X-Idempotency-Key must be visible ASCII characters",
        )
    })?;
    idempotency::check_key(key).map_err(|m| ApiError::new(ErrorCode::InvalidHeader, m))?;
    match state
        .idempotency
        .claim(&caller.tenant, key, route, &value)
        .await?
    {
        Claim::Replay(recorded) => {
            let body = replay(state, caller, route, &recorded).await?;
            let mut response = json_response(status_of(&recorded), body);
            response.headers_mut().insert(
                actix_web::http::header::HeaderName::from_static("idempotent-replayed"),
                actix_web::http::header::HeaderValue::from_static("true"),
            );
            Ok(response)
        }
        Claim::InProgress => Err(ApiError::new(
            ErrorCode::InProgress,
            "a request with this X-Idempotency-Key is still being answered; retry for its answer",
        )
        .field("X-Idempotency-Key")
        .retry_after(idempotency::IN_PROGRESS_RETRY_SECS)),
        Claim::Conflict => Err(ApiError::new(
            ErrorCode::IdempotencyKeyReused,
            "this X-Idempotency-Key was already used with a different request",
        )
        .field("X-Idempotency-Key")),
        Claim::New(pending) => {
            let (body, recorded) = answer(value).await?;
            let status = status_of(&recorded);
            pending.complete(recorded).await;
            Ok(json_response(status, body))
        }
    }
}

fn status_of(recorded: &RecordedAnswer) -> StatusCode {
    StatusCode::from_u16(recorded.status).unwrap_or(StatusCode::OK)
}

/// The body of a recorded answer, as the first request sent it: a publish's from its
/// correlation id, a batch's with its artifacts' ids read back from the store (the workflow's
/// external artifacts, in publication order: only the batch publishes from outside in its
/// workflow), a sync publish's with its artifacts read back from the store in the recorded
/// order.
async fn replay(
    state: &AppState,
    caller: &Caller,
    route: &str,
    recorded: &RecordedAnswer,
) -> Result<Vec<u8>, ApiError> {
    if route == "publish_batch" {
        let page = state
            .orchestrator
            .store()
            .query(&ArtifactQuery {
                tenant: Some(caller.tenant.clone()),
                produced_by: Some(flock_models::EXTERNAL_PRODUCER.to_owned()),
                limit: flock_models::MAX_BATCH_ARTIFACTS,
                count_limit: Some(0),
                ..ArtifactQuery::correlation(recorded.correlation_id)
            })
            .await?;
        return Ok(to_json(&BatchPublishResponse {
            status: "accepted".to_owned(),
            correlation_id: recorded.correlation_id,
            artifact_ids: page.items.iter().map(|a| a.id).collect(),
        }));
    }
    let Some(sync) = &recorded.sync else {
        return Ok(to_json(&PublishResponse::accepted(recorded.correlation_id)));
    };
    let page = state
        .orchestrator
        .store()
        .query(&ArtifactQuery {
            tenant: Some(caller.tenant.clone()),
            ..ArtifactQuery::correlation(recorded.correlation_id)
        })
        .await?;
    let mut by_id: std::collections::HashMap<Uuid, flock_models::Artifact> =
        page.items.into_iter().map(|a| (a.id, a)).collect();
    let artifacts = sync
        .artifact_ids
        .iter()
        .filter_map(|id| by_id.remove(id))
        .collect();
    Ok(to_json(&SyncPublishResponse {
        correlation_id: recorded.correlation_id,
        artifacts,
        completed: sync.completed,
        duration_ms: sync.duration_ms,
    }))
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
    total_exact: bool,
    next_cursor: Option<String>,
}

/// `GET /api/v1/artifacts`: filtered and paginated, in publication order or (`order=newest_first`)
/// the most recent first.
#[utoipa::path(
    get, path = "/api/v1/artifacts", tag = "artifacts",
    params(crate::openapi::ListQueryDoc),
    responses(
        (status = 200, body = crate::openapi::ArtifactPageDoc, description = "A page of matches",
            links(
                ("artifact" = (operation_id = "get", parameters(("id" = "$response.body#/items/0/id")), description = "The first artifact of the page")),
                ("status" = (operation_id = "status", parameters(("id" = "$response.body#/items/0/correlation_id")), description = "The first artifact's workflow")),
            )
        ),
        ListErrors,
    )
)]
pub(crate) async fn list(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Read)?;
    let query = ArtifactQuery {
        tenant: Some(caller.tenant.clone()),
        count_limit: Some(MAX_COUNTED + 1),
        ..parse_query(req.query_string())?
    };
    let page = state.orchestrator.store().query(&query).await?;
    Ok(HttpResponse::Ok().json(ArtifactPage {
        items: page.items,
        pagination: Pagination {
            limit: query.limit,
            offset: query.offset,
            total: page.total.min(MAX_COUNTED),
            total_exact: page.total <= MAX_COUNTED,
            next_cursor: page.next.map(|place| place.to_string()),
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
        // JSON Schema's `date-time` (what the document says) separates date and time with `T`;
        // RFC 3339 also lets a space through, which the parser would take.
        let separated_by_t = matches!(value.as_bytes().get(10), Some(b'T' | b't'));
        separated_by_t
            .then(|| flock_models::timestamp::parse(value).ok())
            .flatten()
            .ok_or_else(|| {
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
                query.correlation_id = Some(hyphenated_uuid(&value).ok_or_else(|| {
                    invalid(
                        "correlation_id",
                        format!("`{value}` is not a UUID in its hyphenated form"),
                    )
                })?);
            }
            "tag" => query.tag = Some(value),
            "from" => query.from = Some(time("from", &value)?),
            "to" => query.to = Some(time("to", &value)?),
            "limit" => {
                query.limit = whole_number(&value)
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        invalid(
                            "limit",
                            format!("must be a whole number from 1 to {MAX_LIMIT}"),
                        )
                    })?;
            }
            "offset" => {
                query.offset = whole_number(&value)
                    .filter(|n| *n <= MAX_OFFSET)
                    .ok_or_else(|| {
                        invalid(
                            "offset",
                            format!(
                                "must be a whole number from 0 to {MAX_OFFSET}; walk deeper \
                                 with `cursor` (each page's `next_cursor`)"
                            ),
                        )
                    })?;
            }
            "cursor" => {
                let valid = (1..=MAX_CURSOR_LEN).contains(&value.len())
                    && value.bytes().all(|b| b.is_ascii_digit());
                query.after =
                    Some(valid.then(|| value.parse().ok()).flatten().ok_or_else(|| {
                        invalid(
                            "cursor",
                            "is not a cursor: pass a page's `next_cursor` as it is".to_owned(),
                        )
                    })?);
            }
            "order" => {
                query.newest_first = match value.as_str() {
                    "oldest_first" => false,
                    "newest_first" => true,
                    _ => {
                        return Err(invalid(
                            "order",
                            format!("`{value}` is neither `oldest_first` nor `newest_first`"),
                        ));
                    }
                };
            }
            other => return Err(invalid(other, format!("unknown query parameter `{other}`"))),
        }
    }
    Ok(query)
}

/// A whole number written in decimal digits alone (what an `integer` query parameter is).
fn whole_number(text: &str) -> Option<usize> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `GET /api/v1/artifacts/{id}`.
#[utoipa::path(
    get, path = "/api/v1/artifacts/{id}", tag = "artifacts",
    params(("id" = uuid::Uuid, Path, description = "Artifact id")),
    responses(
        (status = 200, body = crate::openapi::ArtifactDoc, description = "The artifact",
            links(
                ("status" = (operation_id = "status", parameters(("id" = "$response.body#/correlation_id")), description = "The artifact's workflow")),
            )
        ),
        GetErrors,
    )
)]
pub(crate) async fn get(
    caller: Caller,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Read)?;
    let id = path_id(&path, "artifact")?;
    // Another tenant's artifact is answered exactly as one that does not exist.
    match state.orchestrator.store().get(id).await? {
        Some(artifact) if artifact.tenant == caller.tenant => Ok(HttpResponse::Ok().json(artifact)),
        _ => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no artifact has the id {id}"),
        )),
    }
}
