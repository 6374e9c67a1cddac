//! The OpenAPI 3 document of `GET /api/v1/openapi.json`, generated from the route handlers'
//! annotations. The schema types (in `openapi/schema.rs`) describe the JSON the routes speak; a
//! test checks them against the real types' serialized fields, so they cannot drift apart
//! silently.

use std::sync::OnceLock;

use utoipa::OpenApi;

use crate::routes;

/// Only utoipa reads these types, at compile time (the names and types of their fields); no
/// value of them is ever built, so every one of them is dead code to the compiler.
#[expect(
    dead_code,
    reason = "schema-only types: utoipa reads their fields' names and types, no value is built"
)]
mod schema;

pub(crate) use schema::*;

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Flock",
        description = "A blackboard orchestrator with signed webhook notifications for every artifact of a workflow."
    ),
    paths(
        routes::artifacts::publish,
        routes::artifacts::publish_sync,
        routes::artifacts::list,
        routes::artifacts::get,
        routes::correlations::status,
        routes::correlations::webhooks,
        routes::webhooks::redeliver,
        routes::system::agents,
        routes::system::health,
        routes::system::metrics,
        routes::system::openapi,
        routes::types::list,
    ),
    tags(
        (name = "artifacts", description = "Publish and read artifacts"),
        (name = "correlations", description = "Workflows and their webhook deliveries"),
        (name = "webhooks", description = "Acting on webhook deliveries"),
        (name = "system", description = "Agents, declared types, health, metrics, this document"),
    )
)]
pub(crate) struct ApiDoc;

/// The document as JSON text, built once.
pub(crate) fn document_json() -> String {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .expect("the OpenAPI document serializes")
    })
    .clone()
}
