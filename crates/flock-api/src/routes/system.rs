//! Agents, health, metrics and the OpenAPI document.

use actix_web::{HttpRequest, HttpResponse, web};
use flock_orchestrator::AgentInfo;
use serde::Serialize;

use super::Resource;
use flock_models::Scope;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::openapi::route_errors;
use crate::state::AppState;

/// Routes under `/api/v1`.
pub(crate) fn configure_api(cfg: &mut web::ServiceConfig) {
    cfg.service(Resource::new("/agents").get(agents).finish())
        .service(Resource::new("/openapi.json").get(openapi).finish());
}

/// Routes at the root.
pub(crate) fn configure_root(cfg: &mut web::ServiceConfig) {
    cfg.service(Resource::new("/health").get(health).finish())
        .service(Resource::new("/metrics").get(metrics).finish());
}

route_errors!(
    /// What the agents and metrics routes answer when they refuse.
    ScopedErrors: [Unauthorized, Forbidden, HostNotAllowed, TooManyRequests, StorageUnavailable]
);

#[derive(Debug, Serialize)]
pub(crate) struct Agents {
    agents: Vec<AgentInfo>,
}

/// `GET /api/v1/agents`: every agent with what it consumes and publishes.
#[utoipa::path(get, path = "/api/v1/agents", tag = "system", responses((status = 200, body = crate::openapi::AgentsDoc, description = "Every agent"), ScopedErrors))]
pub(crate) async fn agents(
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Read)?;
    Ok(HttpResponse::Ok().json(Agents {
        agents: state.orchestrator.agents(),
    }))
}

/// `GET /health`: `{"status":"ok"}` while the server serves, and nothing else: it is open, so
/// it tells no version and no backlog (the backlog is in `/metrics`).
#[utoipa::path(get, path = "/health", tag = "system", security(()), responses((status = 200, body = crate::openapi::HealthDoc, description = "Serving")))]
pub(crate) async fn health() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"status":"ok"}"#)
}

/// `GET /metrics`: Prometheus text. Needs the `metrics` scope unless `server.metrics_open`.
#[utoipa::path(get, path = "/metrics", tag = "system", responses((status = 200, content_type = "text/plain", body = String, description = "Prometheus text"), ScopedErrors))]
pub(crate) async fn metrics(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if !state.metrics_open {
        Caller::authenticate(&req, &state.auth)
            .await?
            .require(Scope::Metrics)?;
    }
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render()))
}

/// `GET /api/v1/openapi.json`: this API described as OpenAPI 3.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "system", security(()), responses((status = 200, content_type = "application/json", body = Object, description = "This document")))]
pub(crate) async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(crate::openapi::document_json())
}
