//! The schema types of what the routes answer (`crate::openapi::PublishResponseDoc`, ...): each
//! describes the JSON of one answer, field by field, for the OpenAPI document. What clients send
//! is in `input.rs`.

use std::borrow::Cow;

use serde_json::Value;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

use super::input::{TagDoc, TypeNameDoc};
use crate::error::ErrorCode;

/// `202` answer of a publish.
#[derive(ToSchema)]
#[schema(as = PublishResponse)]
pub(crate) struct PublishResponseDoc {
    /// Always `accepted`.
    #[schema(pattern = "^accepted$")]
    status: String,
    /// The new workflow's id; `/api/v1/correlations/{id}/...` follow it.
    correlation_id: uuid::Uuid,
}

/// `202` answer of a batch publish.
#[derive(ToSchema)]
#[schema(as = BatchPublishResponse)]
pub(crate) struct BatchResponseDoc {
    /// Always `accepted`.
    #[schema(pattern = "^accepted$")]
    status: String,
    /// The new workflow's id; `/api/v1/correlations/{id}/...` follow it.
    correlation_id: uuid::Uuid,
    /// The artifacts' ids, in the request's order.
    artifact_ids: Vec<uuid::Uuid>,
}

/// An artifact.
#[derive(ToSchema)]
#[schema(as = Artifact)]
pub(crate) struct ArtifactDoc {
    id: uuid::Uuid,
    #[schema(rename = "type")]
    type_name: TypeNameDoc,
    #[schema(value_type = Object)]
    payload: Value,
    /// `external` for client requests, else the agent that published it.
    produced_by: String,
    correlation_id: uuid::Uuid,
    /// Sorted and unique.
    tags: Vec<TagDoc>,
    /// UTC, microseconds.
    #[schema(format = DateTime)]
    created_at: String,
}

/// Answer of the sync publish.
#[derive(ToSchema)]
#[schema(as = SyncPublishResponse)]
pub(crate) struct SyncResponseDoc {
    correlation_id: uuid::Uuid,
    /// In publication order, narrowed by the request's filters.
    artifacts: Vec<ArtifactDoc>,
    /// Whether the workflow went idle before the timeout.
    completed: bool,
    duration_ms: u64,
}

/// Page metadata.
#[derive(ToSchema)]
#[schema(as = Pagination)]
pub(crate) struct PaginationDoc {
    limit: usize,
    offset: usize,
    /// Matches in all, not only on this page, counted up to 10,000.
    total: u64,
    /// Whether `total` is the exact count (false: at least that many match).
    total_exact: bool,
    /// The `cursor` of the next page; null on the last page.
    next_cursor: Option<String>,
}

/// A page of artifacts.
#[derive(ToSchema)]
#[schema(as = ArtifactPage)]
pub(crate) struct ArtifactPageDoc {
    items: Vec<ArtifactDoc>,
    pagination: PaginationDoc,
}

/// A stable, machine-readable error code.
pub(crate) struct ErrorCodeDoc;

impl PartialSchema for ErrorCodeDoc {
    fn schema() -> RefOr<Schema> {
        let described = ErrorCode::ALL
            .iter()
            .map(|c| {
                format!(
                    "- `{}` ({}): {}",
                    c.as_str(),
                    c.status().as_u16(),
                    c.describe()
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.as_str())))
            .description(Some(format!(
                "What went wrong, one code per cause; each route lists the codes it answers \
                 with.\n\n{described}"
            )))
            .into()
    }
}

impl ToSchema for ErrorCodeDoc {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ErrorCode")
    }
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
    code: ErrorCodeDoc,
    /// A sentence for people.
    message: String,
    /// The offending field or parameter, such as `webhook.url` or `limit`, when one is to
    /// blame; absent otherwise.
    #[schema(nullable = false)]
    field: Option<String>,
}

/// How a workflow stands.
#[derive(ToSchema)]
#[schema(as = WorkflowState, rename_all = "snake_case")]
pub(crate) enum WorkflowStateDoc {
    /// Agent runs are queued or running, or an artifact is being published.
    Active,
    /// Idle, and no error was recorded.
    Completed,
    /// Idle, with at least one recorded error.
    Failed,
}

/// An error recorded on a workflow.
#[derive(ToSchema)]
#[schema(as = RecordedError)]
pub(crate) struct RecordedErrorDoc {
    /// What kind of error, such as `failed`, `timeout` or `panic`.
    kind: String,
    /// The agent it concerns; absent when none.
    #[schema(nullable = false)]
    agent: Option<String>,
    message: String,
    #[schema(format = DateTime)]
    at: String,
}

/// A workflow's status.
#[derive(ToSchema)]
#[schema(as = CorrelationStatus)]
pub(crate) struct CorrelationStatusDoc {
    correlation_id: uuid::Uuid,
    state: WorkflowStateDoc,
    artifact_count: u64,
    error_count: u64,
    pending_runs: u64,
    #[schema(format = DateTime)]
    started_at: String,
    #[schema(format = DateTime)]
    last_activity_at: String,
    errors: Vec<RecordedErrorDoc>,
}

/// What went wrong in an attempt.
#[derive(ToSchema)]
#[schema(as = AttemptErrorKind, rename_all = "snake_case")]
pub(crate) enum AttemptErrorKindDoc {
    /// The receiver answered with a status other than 2xx.
    HttpStatus,
    /// No connection could be made.
    Connect,
    /// The attempt took longer than its timeout.
    Timeout,
    /// The SSRF guard refused the destination address.
    Blocked,
    /// Any other failure.
    Other,
}

/// One attempt of a delivery.
#[derive(ToSchema)]
#[schema(as = Attempt)]
pub(crate) struct AttemptDoc {
    number: u32,
    #[schema(format = DateTime)]
    started_at: String,
    /// The receiver's status code, if it answered.
    status_code: Option<u16>,
    /// `null` for a 2xx.
    error_kind: Option<AttemptErrorKindDoc>,
    /// What went wrong, in words; `null` for a 2xx.
    error: Option<String>,
    duration_ms: u64,
}

/// Where a delivery stands.
#[derive(ToSchema)]
#[schema(as = DeliveryState, rename_all = "snake_case")]
pub(crate) enum DeliveryStateDoc {
    /// Waiting for an attempt, or being attempted.
    Pending,
    /// A receiver answered 2xx.
    Delivered,
    /// Given up; `failure` says why.
    Failed,
}

/// Why a delivery was given up.
#[derive(ToSchema)]
#[schema(as = DeliveryFailure, rename_all = "snake_case")]
pub(crate) enum DeliveryFailureDoc {
    /// Every attempt failed.
    Exhausted,
    /// The receiver answered 410 Gone.
    Gone,
    /// The SSRF guard refused the destination.
    Blocked,
    /// Held by its destination (an open circuit breaker, a pause, no free capacity) longer
    /// than `webhooks.max_hold_secs`.
    DestinationUnavailable,
}

/// Why a pending delivery waits with no due time.
#[derive(ToSchema)]
#[schema(as = HoldReason, rename_all = "snake_case")]
pub(crate) enum HoldReasonDoc {
    /// An ordered delivery behind an earlier pending one of its webhook.
    Ordered,
    /// Its destination had as many attempts in flight as it may.
    Capacity,
    /// Its destination's circuit breaker is open.
    Breaker,
    /// Its destination is paused (`Retry-After`, or its rate limit).
    Paused,
}

/// A destination's circuit breaker.
#[derive(ToSchema)]
#[schema(as = BreakerState, rename_all = "snake_case")]
pub(crate) enum BreakerStateDoc {
    /// Deliveries go.
    Closed,
    /// Deliveries are held until the next probe.
    Open,
    /// One delivery probes; the others are held.
    HalfOpen,
}

/// A destination, `scheme://host[:port]`, as this instance sees it.
#[derive(ToSchema)]
#[schema(as = DestinationInfo)]
pub(crate) struct DestinationDoc {
    /// `scheme://host[:port]`.
    destination: String,
    /// This instance's breaker for it.
    state: BreakerStateDoc,
    /// Failed attempts in a row, here.
    consecutive_failures: u32,
    /// Attempts in flight from this instance.
    in_flight: u64,
    /// Deliveries held for it in the store (every instance's).
    held: u64,
    /// Since when the longest-held one is held.
    #[schema(format = DateTime)]
    held_since: Option<String>,
    /// When the open breaker lets its next probe go.
    #[schema(format = DateTime)]
    next_probe_at: Option<String>,
    /// Until when it is paused (`Retry-After`, or its rate limit).
    #[schema(format = DateTime)]
    paused_until: Option<String>,
}

/// The destinations with work or state.
#[derive(ToSchema)]
#[schema(as = Destinations)]
pub(crate) struct DestinationsDoc {
    /// Those holding the most first, at most 1,000.
    destinations: Vec<DestinationDoc>,
    /// More destinations have work than are listed.
    truncated: bool,
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
    state: DeliveryStateDoc,
    /// `null` unless failed.
    failure: Option<DeliveryFailureDoc>,
    attempts: Vec<AttemptDoc>,
    #[schema(format = DateTime)]
    next_attempt_at: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    completed_at: Option<String>,
    /// Which of the workflow's webhooks it goes to: the index in the publish request's
    /// `webhooks` (0 for `webhook` or its shorthand).
    #[schema(maximum = 7)]
    webhook: u8,
    /// Whether its webhook is ordered.
    ordered: bool,
    /// The names of its webhook's custom headers; their values are never shown.
    headers: Vec<String>,
    /// Why it waits with no due time, while it is held; `null` otherwise.
    held: Option<HoldReasonDoc>,
    /// Since when it is held (`null` while it is not, and for an ordered delivery parked in
    /// memory).
    #[schema(format = DateTime)]
    held_since: Option<String>,
}

/// A workflow's deliveries.
#[derive(ToSchema)]
#[schema(as = Deliveries)]
pub(crate) struct DeliveriesDoc {
    correlation_id: uuid::Uuid,
    /// In sequence order, each with its attempts; never a secret.
    deliveries: Vec<DeliveryDoc>,
}

/// How an agent is implemented.
#[derive(ToSchema)]
#[schema(as = AgentKind, rename_all = "snake_case")]
pub(crate) enum AgentKindDoc {
    /// Rust code.
    Rust,
    /// A program spawned for each run.
    Command,
    /// An HTTP endpoint POSTed to for each run.
    Http,
    /// A chat model behind an OpenAI-compatible server, asked for the declared types.
    Llm,
}

/// An agent.
#[derive(ToSchema)]
#[schema(as = AgentInfo)]
pub(crate) struct AgentInfoDoc {
    name: String,
    kind: AgentKindDoc,
    consumes: Vec<TypeNameDoc>,
    publishes: Vec<TypeNameDoc>,
    timeout_ms: u64,
}

/// The agents.
#[derive(ToSchema)]
#[schema(as = Agents)]
pub(crate) struct AgentsDoc {
    agents: Vec<AgentInfoDoc>,
}

/// Health: `{"status":"ok"}` and nothing else (the route is open).
#[derive(ToSchema)]
#[schema(as = Health)]
pub(crate) struct HealthDoc {
    /// Always `ok`.
    #[schema(pattern = "^ok$")]
    status: String,
}

/// A declared artifact type.
#[derive(ToSchema)]
#[schema(as = DeclaredType)]
pub(crate) struct TypeDoc {
    name: TypeNameDoc,
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

/// A scope of an API key.
#[derive(ToSchema)]
#[schema(as = Scope)]
pub(crate) enum ScopeDoc {
    /// Publish artifacts.
    #[schema(rename = "publish")]
    Publish,
    /// Read artifacts, workflows, deliveries, agents and types.
    #[schema(rename = "read")]
    Read,
    /// Queue failed webhook deliveries again.
    #[schema(rename = "redeliver")]
    Redeliver,
    /// Create, list and revoke the tenant's keys; rotate its webhook secret.
    #[schema(rename = "keys:manage")]
    KeysManage,
    /// Read `/metrics`.
    #[schema(rename = "metrics")]
    Metrics,
}

/// An API key as it is listed: never the key itself.
#[derive(ToSchema)]
#[schema(as = ApiKey)]
pub(crate) struct KeyDoc {
    /// The key's id: `DELETE /api/v1/keys/{id}` revokes it.
    id: uuid::Uuid,
    /// The tenant it acts for.
    tenant: String,
    /// A name for people; empty when none was given.
    name: String,
    scopes: Vec<ScopeDoc>,
    #[schema(format = DateTime)]
    created_at: String,
    /// When it stops working; `null` for never.
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    /// When it was revoked; `null` while it was not.
    #[schema(format = DateTime)]
    revoked_at: Option<String>,
    /// When it was last used (written in batches, so up to 10 s late); `null` for never.
    #[schema(format = DateTime)]
    last_used_at: Option<String>,
}

/// `201` answer of `POST /api/v1/keys`: the key, shown this once, and its record.
#[derive(ToSchema)]
#[schema(as = CreatedApiKey)]
pub(crate) struct CreatedKeyDoc {
    /// The key: send it as `Authorization: Bearer <key>`. No later answer shows it again.
    #[schema(pattern = "^flk_[A-Za-z0-9_-]{43}$")]
    key: String,
    id: uuid::Uuid,
    tenant: String,
    name: String,
    scopes: Vec<ScopeDoc>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    #[schema(format = DateTime)]
    revoked_at: Option<String>,
    #[schema(format = DateTime)]
    last_used_at: Option<String>,
}

/// The tenant's API keys, oldest first.
#[derive(ToSchema)]
#[schema(as = ApiKeys)]
pub(crate) struct KeysDoc {
    keys: Vec<KeyDoc>,
}

/// `200` answer of `POST /api/v1/webhook-secret/rotate`: the tenant's new webhook secret, shown
/// this once.
#[derive(ToSchema)]
#[schema(as = RotatedWebhookSecret)]
pub(crate) struct RotatedSecretDoc {
    /// The new secret (`whsec_` and 32 random bytes in base64): give it to the tenant's
    /// receivers. No later answer shows it again.
    #[schema(pattern = "^whsec_[A-Za-z0-9+/]{43}=$")]
    secret: String,
    /// Until when the previous secret still signs (`webhook-signature` carries a signature by
    /// each until then); `null` when there was none, or no grace period is configured.
    #[schema(format = DateTime)]
    previous_valid_until: Option<String>,
}

/// A page of failed deliveries, the most recently failed first.
#[derive(ToSchema)]
#[schema(as = FailedPage)]
pub(crate) struct FailedPageDoc {
    deliveries: Vec<DeliveryDoc>,
    /// More match than the page holds: narrow the window.
    truncated: bool,
}

/// A window of failed deliveries to queue again.
#[derive(ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[schema(as = BulkRedeliver)]
pub(crate) struct BulkRedeliverDoc {
    /// Failed at or after.
    #[schema(format = DateTime)]
    since: String,
    /// Failed at or before.
    #[schema(format = DateTime)]
    until: Option<String>,
    /// Only deliveries to this URL, as deliveries show it (without query or fragment).
    #[schema(min_length = 1, max_length = 2048)]
    destination: Option<String>,
    /// Only this workflow's.
    correlation_id: Option<uuid::Uuid>,
}

/// What a bulk redelivery queued.
#[derive(ToSchema)]
#[schema(as = Requeued)]
pub(crate) struct RequeuedDoc {
    /// Failed deliveries queued again by this call (at most 1,000).
    queued: u64,
    /// More match: call again to queue the next ones.
    more: bool,
}

/// The dashboard's assets.
#[derive(ToSchema)]
#[schema(as = DashboardAsset)]
pub(crate) enum AssetNameDoc {
    /// The page's script (an ES module).
    #[schema(rename = "app.js")]
    AppJs,
    /// The page's style sheet.
    #[schema(rename = "app.css")]
    AppCss,
}
