//! A webhook delivery about to enter the outbox: written together with its artifact.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{Artifact, Secret, TenantId, WebhookHeaders, WebhookPayload, WebhookUrl};

/// One webhook delivery to enqueue: the POST that announces one artifact to one workflow's
/// webhook. Its body is rendered once, here, and every attempt sends exactly these bytes.
///
/// A store writes it in the same transaction as its artifact (the transactional outbox), so a
/// stored artifact always has its delivery and no delivery exists for an artifact that was not
/// stored. `Debug` shows neither the secret, nor the custom headers' values, nor the body.
#[derive(Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// The delivery id (UUID v7), sent as `webhook-id` on every attempt so receivers can drop
    /// repeats.
    pub id: Uuid,
    /// The workflow.
    pub correlation_id: Uuid,
    /// The tenant that owns it: its artifact's.
    pub tenant: TenantId,
    /// The artifact it announces.
    pub artifact_id: Uuid,
    /// The artifact's number in its workflow.
    pub sequence: u64,
    /// The receiver.
    pub url: WebhookUrl,
    /// The signing secret, if the webhook is signed.
    pub secret: Option<Secret>,
    /// The exact body bytes.
    pub body: Bytes,
    /// When the artifact was created, for the creation-to-delivery latency.
    pub artifact_created_at: OffsetDateTime,
    /// Which of the workflow's webhooks it goes to: the index in the request's `webhooks`
    /// (0 for a single webhook).
    pub webhook: u8,
    /// Whether its webhook is ordered: it is not attempted while an earlier delivery (a lower
    /// `sequence`) of the same webhook is pending.
    pub ordered: bool,
    /// The webhook's custom headers, sent with every attempt; `None` without any. Kept like
    /// the secret.
    pub headers: Option<Arc<WebhookHeaders>>,
}

impl NewDelivery {
    /// The delivery announcing `artifact` as number `sequence` of its workflow, with the body
    /// rendered now: to webhook 0, unordered, without custom headers.
    pub fn new(
        artifact: &Artifact,
        sequence: u64,
        url: WebhookUrl,
        secret: Option<Secret>,
    ) -> Self {
        let now = OffsetDateTime::now_utc();
        let mut body = WebhookPayload::render(artifact, sequence, now);
        // Pending deliveries can be many: keep no spare capacity (and let `Bytes` own the
        // allocation directly instead of through a shared header).
        body.shrink_to_fit();
        NewDelivery {
            id: Uuid::now_v7(),
            correlation_id: artifact.correlation_id,
            tenant: artifact.tenant.clone(),
            artifact_id: artifact.id,
            sequence,
            url,
            secret,
            body: Bytes::from(body),
            artifact_created_at: artifact.created_at,
            webhook: 0,
            ordered: false,
            headers: None,
        }
    }
}

impl fmt::Debug for NewDelivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewDelivery")
            .field("id", &self.id)
            .field("correlation_id", &self.correlation_id)
            .field("tenant", &self.tenant)
            .field("artifact_id", &self.artifact_id)
            .field("sequence", &self.sequence)
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("webhook", &self.webhook)
            .field("ordered", &self.ordered)
            .field("headers", &self.headers)
            .field("body", &format_args!("<{} bytes>", self.body.len()))
            .finish_non_exhaustive()
    }
}
