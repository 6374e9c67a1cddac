//! The schemas of what clients send: every constraint that validation enforces, built from the
//! same constants that `flock-models` validates with (lengths, patterns, ranges), so the
//! document and the server cannot drift apart without a test noticing (`openapi::agreement`).
//!
//! `null` counts as absent for every optional field, as the server reads it; the rules between
//! the webhook fields are `anyOf`s that say so.

use std::borrow::Cow;

use flock_models::{
    MAX_BATCH_ARTIFACTS, MAX_HEADER_NAME_BYTES, MAX_HEADER_VALUE_BYTES, MAX_HEADERS,
    MAX_SECRET_CHARS, MAX_SYNC_TIMEOUT, MAX_URL_BYTES, MAX_WEBHOOKS, MIN_SYNC_TIMEOUT, Secret,
    Tags, TypeName, WebhookConfig, WebhookHeaders, WebhookUrl,
};
use utoipa::openapi::schema::{
    AdditionalProperties, AllOfBuilder, AnyOfBuilder, ArrayBuilder, ObjectBuilder, Schema,
    SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

/// Declares a schema-only type with its component name, its schema and the named schemas it
/// refers to.
macro_rules! named_schema {
    ($(#[$doc:meta])* $ty:ident = $name:literal, $schema:expr, [$($dep:ty),* $(,)?]) => {
        $(#[$doc])*
        pub(crate) struct $ty;

        impl PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                $schema.into()
            }
        }

        impl ToSchema for $ty {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }

            fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
                let _ = &schemas;
                $(
                    schemas.push((<$dep as ToSchema>::name().into_owned(), <$dep as PartialSchema>::schema()));
                    <$dep as ToSchema>::schemas(schemas);
                )*
            }
        }
    };
}

/// A reference to the component named like `T`.
fn reference<T: ToSchema>() -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(T::name()))
}

/// `null`, which every optional field may be instead of its value.
fn null() -> Schema {
    ObjectBuilder::new().schema_type(Type::Null).into()
}

/// `schema` or `null`.
fn or_null(schema: RefOr<Schema>) -> Schema {
    AnyOfBuilder::new().item(null()).item(schema).into()
}

/// A string of `min` to `max` characters matching `pattern`.
fn string(min: usize, max: usize, pattern: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(min))
        .max_length(Some(max))
        .pattern(Some(pattern))
}

/// An object that holds `null` (or nothing) at each of `fields`.
fn nulls(fields: &[&str]) -> Schema {
    fields
        .iter()
        .fold(ObjectBuilder::new(), |object, field| {
            object.property(*field, null())
        })
        .into()
}

named_schema!(
    /// An artifact type name.
    TypeNameDoc = "TypeName",
    string(1, TypeName::MAX_LEN, TypeName::PATTERN).description(Some(format!(
        "1 to {} characters of ASCII letters, digits, `.`, `_` and `-`.",
        TypeName::MAX_LEN
    ))),
    []
);

named_schema!(
    /// One tag.
    TagDoc = "Tag",
    string(1, Tags::MAX_LEN, Tags::PATTERN).description(Some(format!(
        "1 to {} characters, none of them a control character.",
        Tags::MAX_LEN
    ))),
    []
);

named_schema!(
    /// A webhook URL.
    WebhookUrlDoc = "WebhookUrl",
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::Custom("uri".to_owned())))
        .max_length(Some(MAX_URL_BYTES))
        .pattern(Some(WebhookUrl::PATTERN))
        .description(Some(format!(
            "An absolute `http` or `https` URL of at most {MAX_URL_BYTES} characters, without \
             user name or password. The host is a domain name whose last label starts with a \
             letter (an `xn--` label must be valid Punycode), a dotted-decimal IPv4 address or \
             a bracketed IPv6 address; the port is at most 65535; other characters than \
             RFC 3986's are percent-encoded. A literal address that the server's SSRF guard \
             refuses (loopback, private, link-local and other internal ranges, unless its \
             configuration allows them) is answered with 422 `webhook_address_refused`."
        ))),
    []
);

named_schema!(
    /// A webhook signing secret.
    WebhookSecretDoc = "WebhookSecret",
    string(1, MAX_SECRET_CHARS, Secret::PATTERN)
        .write_only(Some(true))
        .description(Some(format!(
            "1 to {MAX_SECRET_CHARS} characters that sign every delivery: `whsec_` and a \
             standard base64 key (the Standard Webhooks form), or any other text, used as its \
             UTF-8 bytes. Omit it for unsigned webhooks."
        ))),
    []
);

named_schema!(
    /// A webhook's custom headers.
    WebhookHeadersDoc = "WebhookHeaders",
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .max_properties(Some(MAX_HEADERS))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(MAX_HEADER_NAME_BYTES))
                .pattern(Some(WebhookHeaders::NAME_PATTERN)),
        ))
        .additional_properties(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(MAX_HEADER_VALUE_BYTES))
                .pattern(Some(WebhookHeaders::VALUE_PATTERN))
                .write_only(Some(true)),
        ))
        .description(Some(format!(
            "Headers sent with every attempt, at most {MAX_HEADERS}: each name an HTTP token \
             of at most {MAX_HEADER_NAME_BYTES} characters, each value at most \
             {MAX_HEADER_VALUE_BYTES} characters of visible ASCII, spaces and tabs (no CR or \
             LF). Refused names, in any case: Host, Content-Length, Content-Type, \
             Transfer-Encoding, Connection, User-Agent, and any starting with `webhook-` or \
             `X-Flock-` (422 naming the header, `webhooks[2].headers.Host`). Values are kept \
             like the webhook secret: never logged or shown (a delivery lists the names only), \
             and cleared with the secret once delivered. They are not signed."
        ))),
    []
);

named_schema!(
    /// Where a workflow's webhooks go.
    WebhookDoc = "Webhook",
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "Where the workflow's webhooks go, the secret that signs them, which artifact \
             types they carry, extra headers, and whether they are ordered.",
        ))
        .property("url", reference::<WebhookUrlDoc>())
        .required("url")
        .property("secret", or_null(reference::<WebhookSecretDoc>()))
        .property(
            "types",
            ArrayBuilder::new()
                .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
                .items(reference::<TypeNameDoc>())
                .min_items(Some(1))
                .max_items(Some(WebhookConfig::MAX_TYPES))
                .description(Some(format!(
                    "Only artifacts of these types are delivered to this webhook (1 to {} \
                     names); every type when absent. An artifact keeps its `sequence`, the \
                     workflow's order, so a filtered webhook sees gaps: receivers order by \
                     `sequence` and drop repeats by `webhook-id`.",
                    WebhookConfig::MAX_TYPES
                ))),
        )
        .property("headers", reference::<WebhookHeadersDoc>())
        .property(
            "ordered",
            ObjectBuilder::new()
                .schema_type(SchemaType::from_iter([Type::Boolean, Type::Null]))
                .description(Some(
                    "When true, delivery n+1 of this webhook is not attempted before delivery n \
                     is delivered or has finally failed. A redelivered delivery is pending again: \
                     the later deliveries of its webhook that are still pending wait for it \
                     once more; those already delivered are not sent again.",
                )),
        )
        .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false))),
    [WebhookUrlDoc, WebhookSecretDoc, TypeNameDoc, WebhookHeadersDoc]
);

named_schema!(
    /// Which artifacts a sync answer includes.
    SyncFiltersDoc = "SyncFilters",
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "Which of the workflow's artifacts the answer lists; an absent or empty list does \
             not filter.",
        ))
        .property(
            "type_names",
            ArrayBuilder::new()
                .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
                .items(reference::<TypeNameDoc>())
                .description(Some("Only artifacts of these types.")),
        )
        .property(
            "produced_by",
            ArrayBuilder::new()
                .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
                .items(ObjectBuilder::new().schema_type(Type::String))
                .description(Some(
                    "Only artifacts produced by these (agent names, or `external`).",
                )),
        )
        .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false))),
    [TypeNameDoc]
);

/// The fields of one artifact: its type, payload and tags.
fn artifact_fields() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("type", reference::<TypeNameDoc>())
        .required("type")
        .property(
            "payload",
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .description(Some("The artifact's JSON object.")),
        )
        .required("payload")
        .property(
            "tags",
            ArrayBuilder::new()
                .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
                .items(reference::<TagDoc>())
                .max_items(Some(Tags::MAX_COUNT))
                .description(Some(format!(
                    "At most {} tags (repeats count); stored sorted and unique.",
                    Tags::MAX_COUNT
                ))),
        )
}

/// The fields every publish request has: the artifact and its webhooks.
fn publish_fields() -> ObjectBuilder {
    webhook_fields(artifact_fields())
}

/// The webhook fields of a publish request, added to `fields`.
fn webhook_fields(fields: ObjectBuilder) -> ObjectBuilder {
    fields
        .property("webhook", or_null(reference::<WebhookDoc>()))
        .property(
            "webhooks",
            ArrayBuilder::new()
                .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
                .items(reference::<WebhookDoc>())
                .max_items(Some(MAX_WEBHOOKS))
                .description(Some(format!(
                    "Several webhooks, at most {MAX_WEBHOOKS}, each with its own deliveries \
                     (a delivery's `webhook` is its index here); instead of `webhook` and its \
                     shorthand. An artifact has the same `sequence` on every webhook."
                ))),
        )
        .property(
            "webhook_url",
            AnyOfBuilder::new()
                .item(null())
                .item(reference::<WebhookUrlDoc>())
                .description(Some("Shorthand for `webhook.url`.")),
        )
        .property(
            "webhook_secret",
            AnyOfBuilder::new()
                .item(null())
                .item(reference::<WebhookSecretDoc>())
                .description(Some("Shorthand for `webhook.secret`; needs `webhook_url`.")),
        )
        .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)))
}

/// The rules between the webhook fields: `webhooks`, `webhook` or its shorthand, only one of
/// them; and `webhook_secret` only with `webhook_url`. A field that is `null` counts as absent.
fn webhook_rules() -> [Schema; 3] {
    let one_form = AnyOfBuilder::new()
        .item(nulls(&["webhook"]))
        .item(nulls(&["webhook_url", "webhook_secret"]))
        .description(Some(
            "Give either `webhook` or `webhook_url`/`webhook_secret`, not both.",
        ));
    let listed_alone = AnyOfBuilder::new()
        .item(nulls(&["webhooks"]))
        .item(nulls(&["webhook", "webhook_url", "webhook_secret"]))
        .description(Some(
            "Give either `webhooks` or `webhook` (or its shorthand), not both.",
        ));
    let secret_needs_url = AnyOfBuilder::new()
        .item(nulls(&["webhook_secret"]))
        .item(
            ObjectBuilder::new()
                .property(
                    "webhook_url",
                    ObjectBuilder::new().schema_type(Type::String),
                )
                .required("webhook_url"),
        )
        .description(Some("`webhook_secret` needs `webhook_url`."));
    [
        one_form.into(),
        secret_needs_url.into(),
        listed_alone.into(),
    ]
}

/// A request schema: its fields, then the rules between them.
fn request(fields: ObjectBuilder, description: &str) -> Schema {
    let [one_form, secret_needs_url, listed_alone] = webhook_rules();
    AllOfBuilder::new()
        .item(fields)
        .item(one_form)
        .item(secret_needs_url)
        .item(listed_alone)
        .description(Some(description))
        .into()
}

named_schema!(
    /// One artifact of a batch.
    BatchArtifactDoc = "BatchArtifact",
    artifact_fields()
        .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)))
        .description(Some("An artifact of a batch. Fields other than these are refused.")),
    [TypeNameDoc, TagDoc]
);

named_schema!(
    /// The body of `POST /api/v1/artifacts/batch`.
    BatchRequestDoc = "BatchPublishRequest",
    request(
        webhook_fields(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property(
                    "artifacts",
                    ArrayBuilder::new()
                        .items(reference::<BatchArtifactDoc>())
                        .min_items(Some(1))
                        .max_items(Some(MAX_BATCH_ARTIFACTS))
                        .description(Some(format!(
                            "1 to {MAX_BATCH_ARTIFACTS} artifacts, published in this order in \
                             one new workflow and stored together: all or none. Each has the \
                             next `sequence` of the workflow."
                        ))),
                )
                .required("artifacts"),
        ),
        "Artifacts to publish together in one workflow, and where its webhooks go. Fields \
         other than these are refused. The body's size limit is the same as a single \
         publish's (`server.body_limit_bytes`).",
    ),
    [
        TypeNameDoc,
        TagDoc,
        BatchArtifactDoc,
        WebhookDoc,
        WebhookUrlDoc,
        WebhookSecretDoc,
        WebhookHeadersDoc
    ]
);

named_schema!(
    /// The body of `POST /api/v1/artifacts`.
    PublishRequestDoc = "PublishRequest",
    request(
        publish_fields(),
        "An artifact to publish, and where its workflow's webhooks go. Fields other than \
         these are refused.",
    ),
    [
        TypeNameDoc,
        TagDoc,
        WebhookDoc,
        WebhookUrlDoc,
        WebhookSecretDoc,
        WebhookHeadersDoc
    ]
);

named_schema!(
    /// The body of `POST /api/v1/artifacts/sync`.
    SyncRequestDoc = "SyncPublishRequest",
    request(
        publish_fields()
            .property(
                "timeout",
                ObjectBuilder::new()
                    .schema_type(SchemaType::from_iter([Type::Number, Type::Null]))
                    .minimum(Some(MIN_SYNC_TIMEOUT.as_secs()))
                    .maximum(Some(MAX_SYNC_TIMEOUT.as_secs()))
                    .description(Some(format!(
                        "Seconds to wait for the workflow to go idle, {} to {}, default {}.",
                        MIN_SYNC_TIMEOUT.as_secs(),
                        MAX_SYNC_TIMEOUT.as_secs(),
                        flock_models::DEFAULT_SYNC_TIMEOUT.as_secs()
                    ))),
            )
            .property("filters", or_null(reference::<SyncFiltersDoc>())),
        "A publish that waits for its workflow, and which artifacts to answer with. Fields \
         other than these are refused.",
    ),
    [
        TypeNameDoc,
        TagDoc,
        WebhookDoc,
        WebhookUrlDoc,
        WebhookSecretDoc,
        WebhookHeadersDoc,
        SyncFiltersDoc
    ]
);

named_schema!(
    /// The body of `POST /api/v1/keys`.
    CreateKeyRequestDoc = "CreateKeyRequest",
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "name",
            ObjectBuilder::new()
                .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
                .max_length(Some(flock_auth::MAX_NAME_CHARS))
                .pattern(Some(crate::routes::keys::NAME_PATTERN))
                .description(Some(format!(
                    "A name for people, at most {} characters, no control characters.",
                    flock_auth::MAX_NAME_CHARS
                ))),
        )
        .property(
            "scopes",
            ArrayBuilder::new()
                .items(reference::<super::ScopeDoc>())
                .min_items(Some(1))
                .description(Some(
                    "What the key may do; each must be a scope of the key that creates it.",
                )),
        )
        .required("scopes")
        .property(
            "expires_in_secs",
            ObjectBuilder::new()
                .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
                .minimum(Some(1))
                .maximum(Some(crate::routes::keys::MAX_EXPIRES_IN_SECS))
                .description(Some(
                    "Seconds until the key stops working; it never does when absent.",
                )),
        )
        .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)))
        .description(Some(
            "A new API key of the caller's tenant. Fields other than these are refused."
        )),
    [super::ScopeDoc]
);
