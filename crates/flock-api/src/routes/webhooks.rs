//! `/api/v1/webhooks`: acting on one webhook delivery, listing a tenant's failed deliveries
//! across workflows, queueing a window of them again at once, and the destinations' states.

use actix_web::{HttpMessage as _, HttpRequest, HttpResponse, web};
use flock_delivery::{DeliveryView, FailedQuery, OutboxError};
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

use super::{LoggedCorrelation, Resource, hyphenated_uuid, path_id};
use flock_models::{Scope, ValidationError};

use crate::auth::Caller;
use crate::body;
use crate::error::{ApiError, ErrorCode};
use crate::openapi::route_errors;
use crate::state::AppState;

/// The default page of the failed-deliveries listing.
pub(crate) const FAILED_DEFAULT_LIMIT: usize = 100;
/// The largest page of the failed-deliveries listing.
pub(crate) const FAILED_MAX_LIMIT: usize = 500;
/// The most deliveries one bulk redelivery queues again. More matching ones are left failed,
/// and the answer says so (`more: true`): calling again queues the next ones (those queued are
/// pending now, so they are not selected twice).
pub(crate) const BULK_MAX: usize = 1_000;
/// How many redeliveries a bulk call has in flight at once (they join the store's write
/// batches).
const BULK_PARALLEL: usize = 64;

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        Resource::new("/webhooks/deliveries/{id}/redeliver")
            .post(redeliver)
            .finish(),
    )
    .service(
        Resource::new("/webhooks/deliveries/failed")
            .get(failed)
            .finish(),
    )
    .service(
        Resource::new("/webhooks/deliveries/redeliver")
            .post(redeliver_window)
            .finish(),
    )
    .service(
        Resource::new("/webhooks/destinations")
            .get(destinations)
            .finish(),
    );
}

/// The most destinations `GET /api/v1/webhooks/destinations` lists.
pub(crate) const DESTINATIONS_MAX: usize = 1_000;

/// One destination as `GET /api/v1/webhooks/destinations` shows it.
#[derive(Debug, Serialize)]
struct DestinationView {
    destination: String,
    state: &'static str,
    consecutive_failures: u32,
    in_flight: usize,
    held: u64,
    held_since: Option<String>,
    next_probe_at: Option<String>,
    paused_until: Option<String>,
}

/// The answer of `GET /api/v1/webhooks/destinations`.
#[derive(Debug, Serialize)]
struct DestinationsPage {
    destinations: Vec<DestinationView>,
    truncated: bool,
}

/// `GET /api/v1/webhooks/destinations`: every destination with work (attempts in flight from
/// this instance, or deliveries held in the store) or a breaker or pause of this instance,
/// with its breaker's state, failures in a row, attempts in flight, deliveries held and the
/// next probe. For operators: it shows every tenant's destinations, so it needs the `metrics`
/// scope (the one `/metrics` needs), not a tenant's `read`. Breakers, pauses and in-flight
/// counts are this instance's; held counts are the store's.
#[utoipa::path(
    get, path = "/api/v1/webhooks/destinations", tag = "webhooks",
    responses(
        (status = 200, body = crate::openapi::DestinationsDoc, description = "The destinations with work or state, those holding the most first"),
        DestinationsErrors,
    )
)]
pub(crate) async fn destinations(
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Metrics)?;
    let held = state
        .storage
        .outbox()
        .held(None, DESTINATIONS_MAX + 1)
        .await?;
    let mut truncated = held.len() > DESTINATIONS_MAX;
    let timestamp = |at: OffsetDateTime| flock_models::timestamp::format_micros(at);
    let mut views: Vec<DestinationView> = (held.into_iter().take(DESTINATIONS_MAX))
        .map(|h| DestinationView {
            destination: h.destination,
            state: flock_delivery::BreakerState::Closed.as_str(),
            consecutive_failures: 0,
            in_flight: 0,
            held: h.held,
            held_since: Some(timestamp(h.oldest)),
            next_probe_at: None,
            paused_until: None,
        })
        .collect();
    for gate in state.destinations.snapshot() {
        let index = match views.iter().position(|v| v.destination == gate.destination) {
            Some(index) => index,
            None if views.len() < DESTINATIONS_MAX => {
                views.push(DestinationView {
                    destination: gate.destination.clone(),
                    state: "",
                    consecutive_failures: 0,
                    in_flight: 0,
                    held: 0,
                    held_since: None,
                    next_probe_at: None,
                    paused_until: None,
                });
                views.len() - 1
            }
            None => {
                truncated = true;
                continue;
            }
        };
        let view = &mut views[index];
        view.state = gate.state.as_str();
        view.consecutive_failures = gate.consecutive_failures;
        view.in_flight = gate.in_flight;
        view.next_probe_at = gate.next_probe_at.map(timestamp);
        view.paused_until = gate.paused_until.map(timestamp);
    }
    Ok(HttpResponse::Ok().json(DestinationsPage {
        destinations: views,
        truncated,
    }))
}

route_errors!(
    /// What the failed-deliveries listing answers when it refuses.
    FailedErrors: [
        Unauthorized,
        Forbidden,
        HostNotAllowed,
        Validation,
        TooManyRequests,
        StorageUnavailable,
    ]
);

route_errors!(
    /// What the destinations listing answers when it refuses (it reads no input).
    DestinationsErrors: [
        Unauthorized,
        Forbidden,
        HostNotAllowed,
        TooManyRequests,
        StorageUnavailable,
    ]
);

route_errors!(
    /// What the bulk redelivery answers when it refuses.
    BulkErrors: [
        MalformedJson,
        Unauthorized,
        Forbidden,
        HostNotAllowed,
        RequestTimeout,
        PayloadTooLarge,
        UnsupportedMediaType,
        Validation,
        TooManyRequests,
        StorageUnavailable,
    ]
);

/// The answer of the failed-deliveries listing.
#[derive(Debug, Serialize)]
pub(crate) struct FailedPage {
    deliveries: Vec<DeliveryView>,
    /// More failed deliveries match than the page holds: narrow the window (`until` = the
    /// last one's `completed_at`).
    truncated: bool,
}

/// `GET /api/v1/webhooks/deliveries/failed`: the caller's tenant's failed deliveries across
/// workflows, the most recently failed first, each with its attempts; optionally in a window
/// of failure times, of one workflow or of one destination.
#[utoipa::path(
    get, path = "/api/v1/webhooks/deliveries/failed", tag = "webhooks",
    params(crate::openapi::FailedQueryDoc),
    responses(
        (status = 200, body = crate::openapi::FailedPageDoc, description = "The most recently failed deliveries that match"),
        FailedErrors,
    )
)]
pub(crate) async fn failed(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Read)?;
    let (mut query, limit) = parse_failed_query(req.query_string(), &caller)?;
    query.limit = limit + 1;
    let mut deliveries = state.storage.outbox().failed(&query).await?;
    let truncated = deliveries.len() > limit;
    deliveries.truncate(limit);
    Ok(HttpResponse::Ok().json(FailedPage {
        deliveries,
        truncated,
    }))
}

/// Parses the listing's query; every error names its parameter.
pub(crate) fn parse_failed_query(
    text: &str,
    caller: &Caller,
) -> Result<(FailedQuery, usize), ApiError> {
    let pairs: Vec<(String, String)> = web::Query::<Vec<(String, String)>>::from_query(text)
        .map_err(|e| {
            ApiError::new(
                ErrorCode::Validation,
                format!("the query string is malformed: {e}"),
            )
        })?
        .into_inner();
    let mut window = Window::new(caller);
    let mut limit = FAILED_DEFAULT_LIMIT;
    for (name, value) in pairs {
        match name.as_str() {
            "limit" => {
                limit = Some(value.as_str())
                    .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|t| t.parse::<usize>().ok())
                    .filter(|n| (1..=FAILED_MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::from(ValidationError::field(
                            "limit",
                            format!("must be a whole number from 1 to {FAILED_MAX_LIMIT}"),
                        ))
                    })?;
            }
            other => window.set(other, &value)?,
        }
    }
    Ok((window.query, limit))
}

/// A window of failed deliveries being read from a query or a body.
struct Window {
    query: FailedQuery,
}

impl Window {
    fn new(caller: &Caller) -> Self {
        Window {
            query: FailedQuery {
                tenant: caller.tenant.clone(),
                since: OffsetDateTime::UNIX_EPOCH,
                until: None,
                destination: None,
                correlation_id: None,
                limit: 0,
            },
        }
    }

    /// Sets field `name` from its text; unknown fields are refused.
    fn set(&mut self, name: &str, value: &str) -> Result<(), ApiError> {
        let invalid =
            |message: String| -> ApiError { ValidationError::field(name, message).into() };
        match name {
            "since" => self.query.since = time(name, value)?,
            "until" => self.query.until = Some(time(name, value)?),
            "correlation_id" => {
                self.query.correlation_id = Some(hyphenated_uuid(value).ok_or_else(|| {
                    invalid(format!("`{value}` is not a UUID in its hyphenated form"))
                })?);
            }
            "destination" => {
                if value.is_empty() || value.len() > 2048 {
                    return Err(invalid(
                        "must be a webhook URL as deliveries show it (1 to 2048 characters)"
                            .to_owned(),
                    ));
                }
                self.query.destination = Some(value.to_owned());
            }
            other => {
                return Err(
                    ValidationError::field(other, format!("unknown field `{other}`")).into(),
                );
            }
        }
        Ok(())
    }
}

/// An RFC 3339 time with `T` (what the document's `date-time` is).
fn time(field: &str, value: &str) -> Result<OffsetDateTime, ApiError> {
    let separated_by_t = matches!(value.as_bytes().get(10), Some(b'T' | b't'));
    separated_by_t
        .then(|| flock_models::timestamp::parse(value).ok())
        .flatten()
        .ok_or_else(|| {
            ValidationError::field(
                field,
                format!("`{value}` is not an RFC 3339 time such as 2026-11-28T12:00:00Z"),
            )
            .into()
        })
}

/// The answer of the bulk redelivery.
#[derive(Debug, Serialize)]
pub(crate) struct Requeued {
    /// How many failed deliveries this call queued again.
    queued: u64,
    /// More failed deliveries match than one call queues ([`BULK_MAX`]): call again.
    more: bool,
}

/// `POST /api/v1/webhooks/deliveries/redeliver`: queues again every failed delivery of the
/// caller's tenant that failed in the window `{since, until?}` (and, when given, of workflow
/// `correlation_id` or to `destination`), at most 1,000 per call, and answers how many.
///
/// It is idempotent per window without a key: what it queues is pending at once, and only
/// failed deliveries are selected, so a repeat of the call queues none of them again (it
/// answers `queued: 0`, or queues only deliveries that failed since). Two calls at once queue
/// each delivery once: a delivery another call queued first is skipped and not counted.
#[utoipa::path(
    post, path = "/api/v1/webhooks/deliveries/redeliver", tag = "webhooks",
    request_body = crate::openapi::BulkRedeliverDoc,
    responses(
        (status = 202, body = crate::openapi::RequeuedDoc, description = "Queued again, due now"),
        BulkErrors,
    )
)]
pub(crate) async fn redeliver_window(
    req: HttpRequest,
    caller: Caller,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Redeliver)?;
    let raw = body::read(&req, payload, state.body_limit).await?;
    let Value::Object(fields) = body::json(&raw)? else {
        return Err(ValidationError::field("", "the body must be a JSON object").into());
    };
    let mut window = Window::new(&caller);
    let mut since = false;
    for (name, value) in &fields {
        if value.is_null() && matches!(name.as_str(), "until" | "destination" | "correlation_id") {
            continue;
        }
        let Some(text) = value.as_str() else {
            return Err(ValidationError::field(name.as_str(), "must be a string").into());
        };
        since |= name == "since";
        window.set(name, text)?;
    }
    if !since {
        return Err(ValidationError::field(
            "since",
            "is required: the time from which failed deliveries are queued again",
        )
        .into());
    }
    let mut query = window.query;
    query.limit = BULK_MAX + 1;
    let mut found = state.storage.outbox().failed(&query).await?;
    let more = found.len() > BULK_MAX;
    found.truncate(BULK_MAX);
    let now = OffsetDateTime::now_utc();
    let mut queued = 0u64;
    let outbox = state.storage.outbox();
    for chunk in found.chunks(BULK_PARALLEL) {
        let results =
            futures_util::future::join_all(chunk.iter().map(|view| outbox.redeliver(view.id, now)))
                .await;
        for result in results {
            match result {
                Ok(()) => queued += 1,
                // Queued again by another call meanwhile, or pruned: not this call's.
                Err(OutboxError::NotRedeliverable { .. } | OutboxError::UnknownDelivery(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    tracing::info!(
        queued,
        more,
        "failed webhook deliveries queued again in bulk"
    );
    Ok(HttpResponse::Accepted().json(Requeued { queued, more }))
}

route_errors!(
    /// What the redeliver route answers when it refuses.
    RedeliverErrors: [
        Unauthorized,
        Forbidden,
        HostNotAllowed,
        NotFound,
        Conflict,
        TooManyRequests,
        StorageUnavailable,
    ]
);

/// `POST /api/v1/webhooks/deliveries/{id}/redeliver`: queues a failed delivery again. It keeps
/// its id (so the same `webhook-id`), body and secret; new attempts are numbered after the old
/// ones, which stay listed, and the retry budget starts afresh. A pending delivery is a 409 (it
/// is attempted again by itself), and so is a delivered one (its receiver answered 2xx).
#[utoipa::path(
    post, path = "/api/v1/webhooks/deliveries/{id}/redeliver", tag = "webhooks",
    params(("id" = uuid::Uuid, Path, description = "Delivery id (the `webhook-id` header)")),
    responses(
        (status = 202, body = crate::openapi::DeliveryDoc, description = "Queued again, due now"),
        RedeliverErrors,
    )
)]
pub(crate) async fn redeliver(
    req: HttpRequest,
    caller: Caller,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Redeliver)?;
    let id = path_id(&path, "webhook delivery")?;
    // Another tenant's delivery is answered exactly as one that does not exist, and left alone.
    let owned = (state.storage.outbox().delivery(id).await?)
        .is_some_and(|view| view.tenant == caller.tenant);
    if !owned {
        return Err(ApiError::unknown_delivery(id));
    }
    state
        .storage
        .outbox()
        .redeliver(id, OffsetDateTime::now_utc())
        .await?;
    let view = state
        .storage
        .outbox()
        .delivery(id)
        .await?
        .ok_or_else(|| ApiError::unknown_delivery(id))?;
    req.extensions_mut()
        .insert(LoggedCorrelation(view.correlation_id));
    tracing::info!(
        delivery_id = %id,
        correlation_id = %view.correlation_id,
        sequence = view.sequence,
        "webhook delivery queued again"
    );
    Ok(HttpResponse::Accepted().json(view))
}
