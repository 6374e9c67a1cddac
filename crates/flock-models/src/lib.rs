//! Flock's wire and domain types: artifacts, webhook configuration and payloads, API requests,
//! responses and the error body. Everything here is validated when it is built.
#![doc = include_str!("../README.md")]

mod artifact;
mod delivery;
mod error;
mod fields;
mod request;
mod secret;
mod tenant;
pub mod timestamp;
mod webhook;

pub use artifact::{Artifact, ArtifactDraft, EXTERNAL_PRODUCER, Tags, TypeName};
pub use delivery::NewDelivery;
pub use error::{ErrorBody, ErrorDetail, ValidationError};
pub use request::{
    ArtifactPublishRequest, DEFAULT_SYNC_TIMEOUT, MAX_SYNC_TIMEOUT, MIN_SYNC_TIMEOUT,
    PublishResponse, SyncFilters, SyncPublishRequest, SyncPublishResponse,
};
pub use secret::{MAX_SECRET_CHARS, Secret};
pub use tenant::{Scope, Scopes, TenantId};
pub use webhook::{
    EventType, MAX_URL_BYTES, RequestedWebhook, WebhookArtifact, WebhookConfig, WebhookForm,
    WebhookPayload, WebhookUrl,
};
