//! The OpenAPI 3 document of `GET /api/v1/openapi.json`, generated from the route handlers'
//! annotations. The schema types here describe the JSON the routes speak; a test checks them
//! against the real types' serialized fields, so they cannot drift apart silently.

use std::sync::OnceLock;

use serde_json::Value;
use utoipa::{OpenApi, ToSchema};

use crate::routes;

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
    ),
    tags(
        (name = "artifacts", description = "Publish and read artifacts"),
        (name = "correlations", description = "Workflows and their webhook deliveries"),
        (name = "webhooks", description = "Acting on webhook deliveries"),
        (name = "system", description = "Agents, health, metrics, this document"),
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

/// Where a workflow's webhooks go.
#[derive(ToSchema)]
#[schema(as = Webhook)]
#[allow(dead_code)]
pub(crate) struct WebhookDoc {
    /// Absolute http(s) URL with a host, at most 2048 bytes, no user-info.
    url: String,
    /// 1 to 256 bytes; signs every delivery. Omit for unsigned webhooks.
    secret: Option<String>,
}

/// `POST /api/v1/artifacts` body. `webhook_url`/`webhook_secret` are shorthand for `webhook`.
#[derive(ToSchema)]
#[schema(as = PublishRequest)]
#[allow(dead_code)]
pub(crate) struct PublishRequestDoc {
    /// 1 to 256 characters of letters, digits, `.`, `_`, `-`.
    #[schema(rename = "type")]
    type_name: String,
    /// A JSON object.
    #[schema(value_type = Object)]
    payload: Value,
    /// Tags, sorted and made unique.
    tags: Option<Vec<String>>,
    webhook: Option<WebhookDoc>,
    webhook_url: Option<String>,
    webhook_secret: Option<String>,
}

/// Which artifacts a sync answer includes.
#[derive(ToSchema)]
#[schema(as = SyncFilters)]
#[allow(dead_code)]
pub(crate) struct SyncFiltersDoc {
    type_names: Option<Vec<String>>,
    produced_by: Option<Vec<String>>,
}

/// `POST /api/v1/artifacts/sync` body.
#[derive(ToSchema)]
#[schema(as = SyncPublishRequest)]
#[allow(dead_code)]
pub(crate) struct SyncRequestDoc {
    #[schema(rename = "type")]
    type_name: String,
    #[schema(value_type = Object)]
    payload: Value,
    tags: Option<Vec<String>>,
    webhook: Option<WebhookDoc>,
    webhook_url: Option<String>,
    webhook_secret: Option<String>,
    /// Seconds to wait for the workflow to go idle, 1 to 300, default 30.
    timeout: Option<f64>,
    filters: Option<SyncFiltersDoc>,
}

/// `202` answer of a publish.
#[derive(ToSchema)]
#[schema(as = PublishResponse)]
#[allow(dead_code)]
pub(crate) struct PublishResponseDoc {
    /// Always `accepted`.
    status: String,
    correlation_id: uuid::Uuid,
}

/// An artifact.
#[derive(ToSchema)]
#[schema(as = Artifact)]
#[allow(dead_code)]
pub(crate) struct ArtifactDoc {
    id: uuid::Uuid,
    #[schema(rename = "type")]
    type_name: String,
    #[schema(value_type = Object)]
    payload: Value,
    produced_by: String,
    correlation_id: uuid::Uuid,
    tags: Vec<String>,
    /// RFC 3339, UTC, microseconds.
    created_at: String,
}

/// Answer of the sync publish.
#[derive(ToSchema)]
#[schema(as = SyncPublishResponse)]
#[allow(dead_code)]
pub(crate) struct SyncResponseDoc {
    correlation_id: uuid::Uuid,
    artifacts: Vec<ArtifactDoc>,
    completed: bool,
    duration_ms: u64,
}

/// Page metadata.
#[derive(ToSchema)]
#[schema(as = Pagination)]
#[allow(dead_code)]
pub(crate) struct PaginationDoc {
    limit: usize,
    offset: usize,
    total: u64,
}

/// A page of artifacts.
#[derive(ToSchema)]
#[schema(as = ArtifactPage)]
#[allow(dead_code)]
pub(crate) struct ArtifactPageDoc {
    items: Vec<ArtifactDoc>,
    pagination: PaginationDoc,
}

/// The error body of every error answer.
#[derive(ToSchema)]
#[schema(as = ErrorBody)]
#[allow(dead_code)]
pub(crate) struct ErrorBodyDoc {
    error: ErrorDetailDoc,
}

/// The inside of the error body.
#[derive(ToSchema)]
#[schema(as = ErrorDetail)]
#[allow(dead_code)]
pub(crate) struct ErrorDetailDoc {
    /// Stable machine-readable code, such as `validation_error`.
    code: String,
    message: String,
    /// The offending field, such as `webhook.url`.
    field: Option<String>,
}

/// An error recorded on a workflow.
#[derive(ToSchema)]
#[schema(as = RecordedError)]
#[allow(dead_code)]
pub(crate) struct RecordedErrorDoc {
    kind: String,
    agent: Option<String>,
    message: String,
    at: String,
}

/// A workflow's status.
#[derive(ToSchema)]
#[schema(as = CorrelationStatus)]
#[allow(dead_code)]
pub(crate) struct CorrelationStatusDoc {
    correlation_id: uuid::Uuid,
    /// `active`, `completed` or `failed`.
    state: String,
    artifact_count: u64,
    error_count: u64,
    pending_runs: u64,
    started_at: String,
    last_activity_at: String,
    errors: Vec<RecordedErrorDoc>,
}

/// One attempt of a delivery.
#[derive(ToSchema)]
#[schema(as = Attempt)]
#[allow(dead_code)]
pub(crate) struct AttemptDoc {
    number: u32,
    started_at: String,
    status_code: Option<u16>,
    /// `http_status`, `connect`, `timeout`, `blocked` or `other`.
    error_kind: Option<String>,
    error: Option<String>,
    duration_ms: u64,
}

/// One webhook delivery.
#[derive(ToSchema)]
#[schema(as = Delivery)]
#[allow(dead_code)]
pub(crate) struct DeliveryDoc {
    /// Also the `webhook-id` header.
    id: uuid::Uuid,
    correlation_id: uuid::Uuid,
    artifact_id: uuid::Uuid,
    sequence: u64,
    /// Without query or fragment.
    url: String,
    /// `pending`, `delivered` or `failed`.
    state: String,
    failure: Option<String>,
    attempts: Vec<AttemptDoc>,
    next_attempt_at: Option<String>,
    created_at: String,
    completed_at: Option<String>,
}

/// A workflow's deliveries.
#[derive(ToSchema)]
#[schema(as = Deliveries)]
#[allow(dead_code)]
pub(crate) struct DeliveriesDoc {
    correlation_id: uuid::Uuid,
    deliveries: Vec<DeliveryDoc>,
}

/// An agent.
#[derive(ToSchema)]
#[schema(as = AgentInfo)]
#[allow(dead_code)]
pub(crate) struct AgentInfoDoc {
    name: String,
    /// `rust`, `command` or `http`.
    kind: String,
    consumes: Vec<String>,
    publishes: Vec<String>,
    timeout_ms: u64,
}

/// The agents.
#[derive(ToSchema)]
#[schema(as = Agents)]
#[allow(dead_code)]
pub(crate) struct AgentsDoc {
    agents: Vec<AgentInfoDoc>,
}

/// Health.
#[derive(ToSchema)]
#[schema(as = Health)]
#[allow(dead_code)]
pub(crate) struct HealthDoc {
    status: String,
    version: String,
    deliveries_pending: u64,
    deliveries_in_flight: u64,
}
