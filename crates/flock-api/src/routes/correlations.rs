//! `/api/v1/correlations/{id}`: a workflow's status and its webhook deliveries.

use actix_web::{HttpMessage as _, HttpRequest, HttpResponse, web};
use flock_delivery::DeliveryView;
use serde::Serialize;
use uuid::Uuid;

use super::{LoggedCorrelation, method_not_allowed, path_id};
use flock_models::Scope;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/correlations/{id}/status")
            .route(web::get().to(status))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/correlations/{id}/webhooks")
            .route(web::get().to(webhooks))
            .default_service(web::to(method_not_allowed)),
    );
}

fn unknown(id: Uuid) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("no workflow has the correlation id {id}"),
    )
}

/// `GET /api/v1/correlations/{id}/status`: state, counts, times and recorded errors.
#[utoipa::path(
    get, path = "/api/v1/correlations/{id}/status", tag = "correlations",
    params(("id" = String, Path, description = "Correlation id (UUID)")),
    responses((status = 200, body = crate::openapi::CorrelationStatusDoc), (status = 404, body = crate::openapi::ErrorBodyDoc))
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
        Some(status) => Ok(HttpResponse::Ok().json(status)),
        None => Err(unknown(id)),
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
    params(("id" = String, Path, description = "Correlation id (UUID)")),
    responses((status = 200, body = crate::openapi::DeliveriesDoc), (status = 404, body = crate::openapi::ErrorBodyDoc))
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
    let deliveries = state.storage.outbox().deliveries(id).await?;
    if deliveries.is_empty() && state.orchestrator.status(id).await?.is_none() {
        return Err(unknown(id));
    }
    Ok(HttpResponse::Ok().json(Deliveries {
        correlation_id: id,
        deliveries,
    }))
}
