//! Flock's wire and domain types: artifacts, webhook configuration and payloads, API requests,
//! responses and the error body. Everything here is validated when it is built.
#![doc = include_str!("../README.md")]

mod artifact;
mod delivery;
mod destination;
mod error;
mod fields;
mod headers;
mod request;
mod secret;
mod tenant;
pub mod timestamp;
mod webhook;

pub use artifact::{Artifact, ArtifactDraft, EXTERNAL_PRODUCER, Tags, TypeName};
pub use delivery::NewDelivery;
pub use destination::Destination;
pub use error::{ErrorBody, ErrorDetail, ValidationError};
pub use headers::{
    MAX_HEADER_NAME_BYTES, MAX_HEADER_VALUE_BYTES, MAX_HEADERS, REFUSED_HEADER_NAMES,
    REFUSED_HEADER_PREFIXES, WebhookHeaders,
};
pub use request::{
    ArtifactPublishRequest, BatchPublishRequest, BatchPublishResponse, DEFAULT_SYNC_TIMEOUT,
    MAX_BATCH_ARTIFACTS, MAX_SYNC_TIMEOUT, MIN_SYNC_TIMEOUT, PublishResponse, SyncFilters,
    SyncPublishRequest, SyncPublishResponse,
};
pub use secret::{MAX_SECRET_CHARS, Secret};
pub use tenant::{Scope, Scopes, TenantId};
pub use webhook::{
    EventType, MAX_URL_BYTES, MAX_WEBHOOKS, RequestedWebhook, WebhookArtifact, WebhookConfig,
    WebhookForm, WebhookPayload, WebhookUrl,
};
