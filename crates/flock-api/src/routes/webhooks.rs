//! `/api/v1/webhooks/deliveries/{id}`: acting on one webhook delivery.

use actix_web::{HttpMessage as _, HttpRequest, HttpResponse, web};
use time::OffsetDateTime;

use super::{LoggedCorrelation, Resource, path_id};
use flock_models::Scope;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::openapi::route_errors;
use crate::state::AppState;

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        Resource::new("/webhooks/deliveries/{id}/redeliver")
            .post(redeliver)
            .finish(),
    );
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
