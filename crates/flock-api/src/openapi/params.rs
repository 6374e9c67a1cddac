//! The parameters of the routes whose constraints a literal in an annotation could not state:
//! the list route's query and the idempotency header, built from the constants that their
//! parsing checks against.

use flock_models::TypeName;
use utoipa::IntoParams;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn, ParameterStyle};
use utoipa::openapi::schema::{ArrayBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{Required, Schema};

use crate::events::EventKind;
use crate::idempotency;
use crate::routes::artifacts::{DEFAULT_LIMIT, MAX_CURSOR_LEN, MAX_LIMIT, MAX_OFFSET};
use crate::routes::events::MAX_EVENT_ID_LEN;
use crate::routes::webhooks::{FAILED_DEFAULT_LIMIT, FAILED_MAX_LIMIT};

/// An optional parameter `name` in `place` with `schema`.
fn optional(
    name: &str,
    place: ParameterIn,
    schema: impl Into<Schema>,
    description: &str,
) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(place)
        .required(Required::False)
        .schema(Some(schema.into()))
        .description(Some(description))
        .build()
}

/// The `type` parameter's value: type names separated by commas (empty parts are skipped).
pub(crate) fn type_list_pattern() -> String {
    let name = format!("[A-Za-z0-9._-]{{1,{}}}", TypeName::MAX_LEN);
    format!("^,*(?:{name}(?:,+{name})*)?,*$")
}

/// The query of `GET /api/v1/artifacts`; any other parameter is refused.
pub(crate) struct ListQueryDoc;

impl IntoParams for ListQueryDoc {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let text = || ObjectBuilder::new().schema_type(Type::String);
        let time = || text().format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)));
        let mut type_param = optional(
            "type",
            ParameterIn::Query,
            ArrayBuilder::new().items(text().pattern(Some(type_list_pattern()))),
            "Artifact types: repeat the parameter or separate names by commas for several.",
        );
        type_param.style = Some(ParameterStyle::Form);
        type_param.explode = Some(true);
        vec![
            type_param,
            optional(
                "produced_by",
                ParameterIn::Query,
                text(),
                "Producing agent, or `external`.",
            ),
            optional(
                "correlation_id",
                ParameterIn::Query,
                text().format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
                "Workflow id.",
            ),
            optional("tag", ParameterIn::Query, text(), "Carries this tag."),
            optional("from", ParameterIn::Query, time(), "Created at or after."),
            optional("to", ParameterIn::Query, time(), "Created at or before."),
            optional(
                "limit",
                ParameterIn::Query,
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1))
                    .maximum(Some(MAX_LIMIT))
                    .default(Some(DEFAULT_LIMIT.into())),
                "Page size.",
            ),
            optional(
                "offset",
                ParameterIn::Query,
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0))
                    .maximum(Some(MAX_OFFSET))
                    .default(Some(0.into())),
                "Matches to skip (after `cursor`, when given). Deeper pages are walked with `cursor`.",
            ),
            optional(
                "cursor",
                ParameterIn::Query,
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .max_length(Some(MAX_CURSOR_LEN))
                    .pattern(Some(format!("^[0-9]{{1,{MAX_CURSOR_LEN}}}$"))),
                "Where the page starts: the `next_cursor` of the page before. Costs the same on every page.",
            ),
            optional(
                "order",
                ParameterIn::Query,
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["oldest_first", "newest_first"]))
                    .default(Some("oldest_first".into())),
                "Publication order (`oldest_first`) or its reverse (`newest_first`, the most recent first; `cursor` then walks backwards).",
            ),
        ]
    }
}

/// `X-Idempotency-Key` of the publish routes.
pub(crate) struct IdempotencyKeyDoc;

impl IntoParams for IdempotencyKeyDoc {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![optional(
            "X-Idempotency-Key",
            ParameterIn::Header,
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(idempotency::MAX_KEY_LEN))
                .pattern(Some(idempotency::KEY_PATTERN)),
            "Replays the first answer to a request with the same key and body (with \
             `Idempotent-Replayed: true`); the same key with another body is a 422 \
             `idempotency_key_reused`.",
        )]
    }
}

/// The query of `GET /api/v1/events`; any other parameter is refused. `Last-Event-ID` is a
/// header.
pub(crate) struct EventsQueryDoc;

impl IntoParams for EventsQueryDoc {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let text = || ObjectBuilder::new().schema_type(Type::String);
        let kinds = EventKind::ALL.map(EventKind::as_str).join("|");
        vec![
            optional(
                "correlation_id",
                ParameterIn::Query,
                text().format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
                "Only this workflow's events.",
            ),
            optional(
                "types",
                ParameterIn::Query,
                text().pattern(Some(type_list_pattern())),
                "Only events about artifacts of these types (comma-separated); `workflow.idle` concerns no artifact and is then left out.",
            ),
            optional(
                "kinds",
                ParameterIn::Query,
                text().pattern(Some(format!("^,*(?:(?:{kinds})(?:,+(?:{kinds}))*)?,*$"))),
                "Only these kinds (comma-separated): artifact.published, delivery.attempted, delivery.delivered, delivery.failed, workflow.idle.",
            ),
            optional(
                "Last-Event-ID",
                ParameterIn::Header,
                text().pattern(Some(format!("^[0-9]{{1,{MAX_EVENT_ID_LEN}}}$"))),
                "Resume after this event: the kept events after it come first (a `stream.missed` event first when it is older than what is kept).",
            ),
        ]
    }
}

/// The query of `GET /api/v1/webhooks/deliveries/failed`; any other parameter is refused.
pub(crate) struct FailedQueryDoc;

impl IntoParams for FailedQueryDoc {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let text = || ObjectBuilder::new().schema_type(Type::String);
        let time = || text().format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)));
        vec![
            optional("since", ParameterIn::Query, time(), "Failed at or after."),
            optional("until", ParameterIn::Query, time(), "Failed at or before."),
            optional(
                "correlation_id",
                ParameterIn::Query,
                text().format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
                "Only this workflow's.",
            ),
            optional(
                "destination",
                ParameterIn::Query,
                text().min_length(Some(1)).max_length(Some(2048)),
                "Only deliveries to this URL, as deliveries show it (without query or fragment).",
            ),
            optional(
                "limit",
                ParameterIn::Query,
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1))
                    .maximum(Some(FAILED_MAX_LIMIT))
                    .default(Some(FAILED_DEFAULT_LIMIT.into())),
                "Page size.",
            ),
        ]
    }
}
