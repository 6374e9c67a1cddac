//! The schema types the route annotations name (`crate::openapi::PublishRequestDoc`, ...): each
//! describes the JSON of one request or answer, field by field, for the OpenAPI document.

use serde_json::Value;
use utoipa::ToSchema;

/// Where a workflow's webhooks go.
#[derive(ToSchema)]
#[schema(as = Webhook)]
pub(crate) struct WebhookDoc {
    /// Absolute http(s) URL with a host, at most 2048 bytes, no user-info.
    url: String,
    /// 1 to 256 bytes; signs every delivery. Omit for unsigned webhooks.
    secret: Option<String>,
}

/// `POST /api/v1/artifacts` body. `webhook_url`/`webhook_secret` are shorthand for `webhook`.
#[derive(ToSchema)]
#[schema(as = PublishRequest)]
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
pub(crate) struct SyncFiltersDoc {
    type_names: Option<Vec<String>>,
    produced_by: Option<Vec<String>>,
}

/// `POST /api/v1/artifacts/sync` body.
#[derive(ToSchema)]
#[schema(as = SyncPublishRequest)]
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
pub(crate) struct PublishResponseDoc {
    /// Always `accepted`.
    status: String,
    correlation_id: uuid::Uuid,
}

/// An artifact.
#[derive(ToSchema)]
#[schema(as = Artifact)]
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
pub(crate) struct SyncResponseDoc {
    correlation_id: uuid::Uuid,
    artifacts: Vec<ArtifactDoc>,
    completed: bool,
    duration_ms: u64,
}

/// Page metadata.
#[derive(ToSchema)]
#[schema(as = Pagination)]
pub(crate) struct PaginationDoc {
    limit: usize,
    offset: usize,
    total: u64,
}

/// A page of artifacts.
#[derive(ToSchema)]
#[schema(as = ArtifactPage)]
pub(crate) struct ArtifactPageDoc {
    items: Vec<ArtifactDoc>,
    pagination: PaginationDoc,
}

/// The error body of every error answer.
#[derive(ToSchema)]
#[schema(as = ErrorBody)]
pub(crate) struct ErrorBodyDoc {
    error: ErrorDetailDoc,
}

/// The inside of the error body.
#[derive(ToSchema)]
#[schema(as = ErrorDetail)]
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
pub(crate) struct RecordedErrorDoc {
    kind: String,
    agent: Option<String>,
    message: String,
    at: String,
}

/// A workflow's status.
#[derive(ToSchema)]
#[schema(as = CorrelationStatus)]
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
pub(crate) struct DeliveriesDoc {
    correlation_id: uuid::Uuid,
    deliveries: Vec<DeliveryDoc>,
}

/// An agent.
#[derive(ToSchema)]
#[schema(as = AgentInfo)]
pub(crate) struct AgentInfoDoc {
    name: String,
    /// `rust`, `command`, `http` or `llm`.
    kind: String,
    consumes: Vec<String>,
    publishes: Vec<String>,
    timeout_ms: u64,
}

/// The agents.
#[derive(ToSchema)]
#[schema(as = Agents)]
pub(crate) struct AgentsDoc {
    agents: Vec<AgentInfoDoc>,
}

/// Health.
#[derive(ToSchema)]
#[schema(as = Health)]
pub(crate) struct HealthDoc {
    status: String,
    version: String,
    deliveries_pending: u64,
    deliveries_in_flight: u64,
}

/// A declared artifact type.
#[derive(ToSchema)]
#[schema(as = DeclaredType)]
pub(crate) struct TypeDoc {
    name: String,
    /// Its JSON Schema, as configured; every payload of the type must match it.
    #[schema(value_type = Object)]
    schema: Value,
}

/// The declared types, in declaration order.
#[derive(ToSchema)]
#[schema(as = Types)]
pub(crate) struct TypesDoc {
    types: Vec<TypeDoc>,
}
