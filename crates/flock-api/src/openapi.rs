//! The OpenAPI 3.1 document of `GET /api/v1/openapi.json`, generated from the route handlers'
//! annotations. What clients send is described in `openapi/input.rs` and `openapi/params.rs`,
//! built from the constants validation uses; what the routes answer in `openapi/schema.rs`;
//! each route's error answers, with their `code`s, by [`error_responses`]. The test in
//! `openapi/agreement.rs` checks the document against validation on generated values.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::Value;
use utoipa::OpenApi;
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Type};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};

use crate::error::ErrorCode;
use crate::routes;

/// Only utoipa reads these types, at compile time (the names and types of their fields) or
/// through their trait implementations; no value of them is ever built, so every one of them
/// is dead code to the compiler.
#[expect(
    dead_code,
    reason = "schema-only types: utoipa reads their fields' names and types, no value is built"
)]
mod schema;

mod input;
mod params;

#[cfg(test)]
mod agreement;

pub(crate) use input::*;
pub(crate) use params::*;
pub(crate) use schema::*;

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Flock",
        description = "A blackboard orchestrator with signed webhook notifications for every artifact of a workflow. Every constraint the server enforces on a request is stated here; a request that breaks one is answered with the error body and its `code`."
    ),
    paths(
        routes::artifacts::publish,
        routes::artifacts::publish_sync,
        routes::artifacts::publish_batch,
        routes::artifacts::list,
        routes::artifacts::get,
        routes::correlations::status,
        routes::correlations::webhooks,
        routes::webhooks::redeliver,
        routes::webhooks::failed,
        routes::webhooks::redeliver_window,
        routes::webhooks::destinations,
        routes::events::events,
        routes::dashboard::root,
        routes::dashboard::page,
        routes::dashboard::asset,
        routes::system::agents,
        routes::system::health,
        routes::system::metrics,
        routes::system::openapi,
        routes::types::types,
        routes::keys::create_key,
        routes::keys::list_keys,
        routes::keys::revoke_key,
        routes::secrets::rotate_secret,
    ),
    components(schemas(ErrorBodyDoc, AssetNameDoc)),
    modifiers(&BearerScheme),
    security(("bearer" = [])),
    tags(
        (name = "artifacts", description = "Publish and read artifacts"),
        (name = "correlations", description = "Workflows and their webhook deliveries"),
        (name = "webhooks", description = "Acting on webhook deliveries; the tenant's webhook secret"),
        (name = "events", description = "The caller's tenant's events, live"),
        (name = "dashboard", description = "The delivery dashboard: one page and its assets, embedded in the binary; they hold no data, and the page sends the key it is given with every call"),
        (name = "keys", description = "The caller's tenant's API keys"),
        (name = "system", description = "Agents, declared types, health, metrics, this document"),
    )
)]
pub(crate) struct ApiDoc;

/// The `bearer` security scheme that every route but `/health` and this document requires.
struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(
                            "An API key, `flk_` and 43 characters: `Authorization: Bearer <key>`. \
                             A server listening on loopback only in `auth.mode = \"auto\"` (or in \
                             `open` mode) also serves requests without one, as tenant `default` \
                             with every scope.",
                        ))
                        .build(),
                ),
            );
    }
}

/// The document as JSON text, built once.
pub(crate) fn document_json() -> String {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| document().to_string()).clone()
}

/// The document as a JSON value.
pub(crate) fn document() -> Value {
    let mut document =
        serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serializes");
    name_link_fields(&mut document);
    refuse_header_names(&mut document);
    document
}

/// utoipa 5 has no `not`: the refused custom header names go into the document here, as
/// `propertyNames.not.pattern` of `WebhookHeaders`.
fn refuse_header_names(document: &mut Value) {
    if let Some(names) = document
        .pointer_mut("/components/schemas/WebhookHeaders/propertyNames")
        .and_then(Value::as_object_mut)
    {
        names.insert(
            "not".to_owned(),
            serde_json::json!({ "pattern": flock_models::WebhookHeaders::refused_name_pattern() }),
        );
    }
}

/// utoipa 5 writes a Link object's fields in snake case (`operation_id`); OpenAPI names them in
/// camel case (`operationId`), and tools ignore links without them.
fn name_link_fields(document: &mut Value) {
    let responses = document["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(Value::as_object_mut)
        .flat_map(|operations| operations.values_mut())
        .filter_map(|operation| operation.get_mut("responses"))
        .filter_map(Value::as_object_mut)
        .flat_map(|responses| responses.values_mut());
    for response in responses {
        let links = response
            .get_mut("links")
            .and_then(Value::as_object_mut)
            .into_iter()
            .flat_map(|links| links.values_mut())
            .filter_map(Value::as_object_mut);
        for link in links {
            for (snake, camel) in [
                ("operation_id", "operationId"),
                ("operation_ref", "operationRef"),
                ("request_body", "requestBody"),
            ] {
                if let Some(value) = link.remove(snake) {
                    link.insert(camel.to_owned(), value);
                }
            }
        }
    }
}

/// The error answers of a route that can fail with `codes`: one response per status, whose
/// body is the error body with its `code` narrowed to the codes of that status.
pub(crate) fn error_responses(codes: &[ErrorCode]) -> BTreeMap<String, RefOr<Response>> {
    let mut by_status: BTreeMap<u16, Vec<ErrorCode>> = BTreeMap::new();
    for code in codes {
        by_status
            .entry(code.status().as_u16())
            .or_default()
            .push(*code);
    }
    by_status
        .into_iter()
        .map(|(status, codes)| {
            let description = codes
                .iter()
                .map(|c| format!("- `{}`: {}", c.as_str(), c.describe()))
                .collect::<Vec<_>>()
                .join("\n");
            let narrowed = ObjectBuilder::new().property(
                "error",
                ObjectBuilder::new().property(
                    "code",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(codes.iter().map(|c| c.as_str()))),
                ),
            );
            let schema = AllOfBuilder::new()
                .item(Ref::from_schema_name("ErrorBody"))
                .item(narrowed);
            let response = ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(schema)).build(),
                )
                .build();
            (status.to_string(), RefOr::T(response))
        })
        .collect()
}

/// Declares a route's error answers: a type for `responses(...)` of `#[utoipa::path]` whose
/// responses are [`error_responses`] of the listed codes.
macro_rules! route_errors {
    ($(#[$doc:meta])* $ty:ident: [$($code:ident),* $(,)?]) => {
        $(#[$doc])*
        pub(crate) struct $ty;

        impl utoipa::IntoResponses for $ty {
            fn responses() -> std::collections::BTreeMap<
                String,
                utoipa::openapi::RefOr<utoipa::openapi::Response>,
            > {
                $crate::openapi::error_responses(&[$($crate::error::ErrorCode::$code),*])
            }
        }
    };
}

pub(crate) use route_errors;
