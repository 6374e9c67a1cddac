//! Flock's webhook delivery engine: the outbox and its in-memory implementation, the dispatcher
//! that sends signed POSTs with retries through one pooled HTTP client that enforces the SSRF
//! guard where it connects, delivery metrics, the orchestrator component that enqueues a
//! delivery for every artifact of a workflow with a webhook, and each tenant's webhook secrets.
#![doc = include_str!("../README.md")]

mod component;
mod config;
mod dispatcher;
mod gate;
mod memory;
pub mod metrics;
mod observer;
mod outbox;
mod pool;
mod secrets;
mod sender;
mod ssrf;
mod storage;
mod time_util;

pub use component::WebhookDeliveryComponent;
pub use config::{ConfigError, DeliveryConfig};
pub use dispatcher::{Destinations, Dispatcher, DispatcherHandle, ShutdownReport};
/// The vocabulary of an attempt's result, from `flock-retry`: what an attempt came to, and why
/// a delivery failed ([`Resolution::Failed`], [`DeliveryView::failure`]).
pub use flock_retry::{GiveUp, Outcome};
pub use gate::{
    BreakerState, DestinationState, FIRST_COOL_OFF, Isolation, MAX_TRACKED_DESTINATIONS,
};
pub use memory::MemoryOutbox;
pub use observer::{AttemptObserver, AttemptReport};
pub use outbox::{
    AttemptView, ClaimedDelivery, DeliveryState, DeliveryView, ErrorKind, FAILURE_REASONS,
    FailedQuery, HeldDeliveries, HoldReason, Lease, MAX_ERROR_CHARS, Outbox, OutboxCounts,
    OutboxError, RecordedAndClaimed, Resolution, failure_from_name, failure_name,
};
pub use secrets::{
    CachedTenantSecrets, MemoryTenantSecrets, SECRET_BYTES, SecretsError, TenantSecrets,
    TenantSigning, generate_secret, grace_end,
};
pub use sender::USER_AGENT;
pub use storage::MemoryStorage;
