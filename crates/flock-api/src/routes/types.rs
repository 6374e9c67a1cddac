//! `GET /api/v1/types`: the declared artifact types with their JSON Schemas.

use actix_web::{HttpResponse, web};
use flock_models::Scope;
use serde::Serialize;
use serde_json::Value;

use super::Resource;
use super::system::ScopedErrors;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(Resource::new("/types").get(types).finish());
}

/// The answer of `GET /api/v1/types`.
#[derive(Debug, Serialize)]
pub(crate) struct Types<'a> {
    types: Vec<DeclaredType<'a>>,
}

/// One declared type.
#[derive(Debug, Serialize)]
pub(crate) struct DeclaredType<'a> {
    name: &'a str,
    schema: &'a Value,
}

/// `GET /api/v1/types`: every declared type with its schema as configured, in declaration
/// order; every publish of one is checked against it.
#[utoipa::path(get, path = "/api/v1/types", tag = "system", responses((status = 200, body = crate::openapi::TypesDoc, description = "Every declared type"), ScopedErrors))]
pub(crate) async fn types(
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Read)?;
    let declared = state.orchestrator.types();
    let types = declared
        .names()
        .filter_map(|name| {
            declared.schema(name).map(|schema| DeclaredType {
                name: name.as_str(),
                schema,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(Types { types }))
}
