//! `/api/v1/correlations/{id}`: a workflow's status and its webhook deliveries.

use actix_web::{HttpMessage as _, HttpRequest, HttpResponse, web};
use flock_delivery::DeliveryView;
use serde::Serialize;
use uuid::Uuid;

use super::{LoggedCorrelation, Resource, path_id};
use flock_models::Scope;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::openapi::route_errors;
use crate::state::AppState;

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        Resource::new("/correlations/{id}/status")
            .get(status)
            .finish(),
    )
    .service(
        Resource::new("/correlations/{id}/webhooks")
            .get(webhooks)
            .finish(),
    );
}

route_errors!(
    /// What the correlation routes answer when they refuse.
    CorrelationErrors: [
        Unauthorized,
        Forbidden,
        HostNotAllowed,
        NotFound,
        TooManyRequests,
        StorageUnavailable,
    ]
);

fn unknown(id: Uuid) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("no workflow has the correlation id {id}"),
    )
}

/// `GET /api/v1/correlations/{id}/status`: state, counts, times and recorded errors.
#[utoipa::path(
    get, path = "/api/v1/correlations/{id}/status", tag = "correlations",
    params(("id" = uuid::Uuid, Path, description = "Correlation id")),
    responses(
        (status = 200, body = crate::openapi::CorrelationStatusDoc, description = "The workflow's status",
            links(
                ("webhooks" = (operation_id = "webhooks", parameters(("id" = "$response.body#/correlation_id")), description = "The workflow's webhook deliveries")),
            )
        ),
        CorrelationErrors,
    )
)]
pub(crate) async fn status(
    req: HttpRequest,
    caller: Caller,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Read)?;
    let id = path_id(&path, "workflow")?;
    req.extensions_mut().insert(LoggedCorrelation(id));
    match state.orchestrator.status(id).await? {
        // Another tenant's workflow is answered exactly as one that does not exist.
        Some(status) if status.tenant == caller.tenant => Ok(HttpResponse::Ok().json(status)),
        _ => Err(unknown(id)),
    }
}

/// The answer of the webhooks route.
#[derive(Debug, Serialize)]
pub(crate) struct Deliveries {
    correlation_id: Uuid,
    deliveries: Vec<DeliveryView>,
}

/// `GET /api/v1/correlations/{id}/webhooks`: the workflow's deliveries in sequence order, each
/// with its attempts; never a secret.
#[utoipa::path(
    get, path = "/api/v1/correlations/{id}/webhooks", tag = "correlations",
    params(("id" = uuid::Uuid, Path, description = "Correlation id")),
    responses(
        (status = 200, body = crate::openapi::DeliveriesDoc, description = "The workflow's deliveries",
            links(
                ("redeliver" = (operation_id = "redeliver", parameters(("id" = "$response.body#/deliveries/0/id")), description = "Queue the first delivery again")),
            )
        ),
        CorrelationErrors,
    )
)]
pub(crate) async fn webhooks(
    req: HttpRequest,
    caller: Caller,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Read)?;
    let id = path_id(&path, "workflow")?;
    req.extensions_mut().insert(LoggedCorrelation(id));
    // A workflow's deliveries are all its tenant's; another tenant's workflow is answered
    // exactly as one that does not exist.
    let deliveries = state.storage.outbox().deliveries(id).await?;
    let owned = match deliveries.first() {
        Some(first) => first.tenant == caller.tenant,
        None => (state.orchestrator.status(id).await?).is_some_and(|s| s.tenant == caller.tenant),
    };
    if !owned {
        return Err(unknown(id));
    }
    Ok(HttpResponse::Ok().json(Deliveries {
        correlation_id: id,
        deliveries,
    }))
}
