//! Publish requests as clients send them, and the answers they get.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::artifact::read_draft;
use crate::fields::{Fields, kind, string_list};
use crate::{
    Artifact, ArtifactDraft, RequestedWebhook, TypeName, ValidationError, WebhookConfig,
    WebhookForm,
};

/// The sync route's wait when the request names none.
pub const DEFAULT_SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// The shortest wait a sync request may ask for.
pub const MIN_SYNC_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest wait a sync request may ask for.
pub const MAX_SYNC_TIMEOUT: Duration = Duration::from_secs(300);

/// `POST /api/v1/artifacts`: `{type, payload, tags?, webhook?}`, with `webhook_url` and
/// `webhook_secret` accepted at the top level as shorthand for `webhook`.
#[derive(Debug, Clone, PartialEq)]
pub struct ArtifactPublishRequest {
    /// The artifact type.
    pub type_name: TypeName,
    /// The artifact's JSON object.
    pub payload: Map<String, Value>,
    /// Its tags.
    pub tags: crate::Tags,
    /// Where this workflow's webhooks go, if anywhere, and the form the request gave it in.
    pub webhook: Option<RequestedWebhook>,
}

impl ArtifactPublishRequest {
    /// Validates a parsed JSON body.
    ///
    /// # Errors
    /// The first invalid, missing or unknown field, named by its path.
    pub fn from_value(value: Value) -> Result<Self, ValidationError> {
        let mut fields = Fields::new(value, "")?;
        let draft = read_draft(&mut fields)?;
        let webhook = read_webhook(&mut fields)?;
        fields.finish()?;
        Ok(ArtifactPublishRequest {
            type_name: draft.type_name,
            payload: draft.payload,
            tags: draft.tags,
            webhook,
        })
    }

    /// The artifact this request publishes.
    pub fn draft(&self) -> ArtifactDraft {
        ArtifactDraft {
            type_name: self.type_name.clone(),
            payload: self.payload.clone(),
            tags: self.tags.clone(),
        }
    }

    /// The artifact this request publishes and its webhook, without copying the payload.
    pub fn into_parts(self) -> (ArtifactDraft, Option<RequestedWebhook>) {
        let draft = ArtifactDraft {
            type_name: self.type_name,
            payload: self.payload,
            tags: self.tags,
        };
        (draft, self.webhook)
    }
}

impl TryFrom<Value> for ArtifactPublishRequest {
    type Error = ValidationError;

    fn try_from(value: Value) -> Result<Self, Self::Error> {
        Self::from_value(value)
    }
}

/// Which of a workflow's artifacts a sync answer includes; an empty list does not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncFilters {
    /// Only artifacts of these types.
    pub type_names: Vec<TypeName>,
    /// Only artifacts produced by these (agent names, or `external`).
    pub produced_by: Vec<String>,
}

impl SyncFilters {
    /// Whether `artifact` passes the filters.
    pub fn matches(&self, artifact: &Artifact) -> bool {
        (self.type_names.is_empty() || self.type_names.contains(&artifact.type_name))
            && (self.produced_by.is_empty() || self.produced_by.contains(&artifact.produced_by))
    }

    fn from_value(value: Value) -> Result<Self, ValidationError> {
        let mut fields = Fields::new(value, "filters")?;
        let type_names = match fields.take("type_names") {
            None => Vec::new(),
            Some(v) => string_list(v, "filters.type_names")?
                .into_iter()
                .enumerate()
                .map(|(i, name)| {
                    TypeName::new(name).map_err(|e| e.within(&format!("filters.type_names[{i}]")))
                })
                .collect::<Result<_, _>>()?,
        };
        let produced_by = match fields.take("produced_by") {
            None => Vec::new(),
            Some(v) => string_list(v, "filters.produced_by")?,
        };
        fields.finish()?;
        Ok(SyncFilters {
            type_names,
            produced_by,
        })
    }
}

/// `POST /api/v1/artifacts/sync`: a publish request plus how long to wait (`timeout`, seconds,
/// 1 to 300, default 30) and which artifacts to answer with (`filters`).
#[derive(Debug, Clone, PartialEq)]
pub struct SyncPublishRequest {
    /// The publish part.
    pub publish: ArtifactPublishRequest,
    /// How long to wait for the workflow to go idle.
    pub timeout: Duration,
    /// Which artifacts the answer lists.
    pub filters: SyncFilters,
}

impl SyncPublishRequest {
    /// Validates a parsed JSON body.
    ///
    /// # Errors
    /// The first invalid, missing or unknown field, named by its path.
    pub fn from_value(value: Value) -> Result<Self, ValidationError> {
        let mut fields = Fields::new(value, "")?;
        let draft = read_draft(&mut fields)?;
        let webhook = read_webhook(&mut fields)?;
        let timeout = match fields.take("timeout") {
            None => DEFAULT_SYNC_TIMEOUT,
            Some(v) => parse_timeout(&v)?,
        };
        let filters = match fields.take("filters") {
            None => SyncFilters::default(),
            Some(v) => SyncFilters::from_value(v)?,
        };
        fields.finish()?;
        let publish = ArtifactPublishRequest {
            type_name: draft.type_name,
            payload: draft.payload,
            tags: draft.tags,
            webhook,
        };
        Ok(SyncPublishRequest {
            publish,
            timeout,
            filters,
        })
    }
}

impl TryFrom<Value> for SyncPublishRequest {
    type Error = ValidationError;

    fn try_from(value: Value) -> Result<Self, Self::Error> {
        Self::from_value(value)
    }
}

fn parse_timeout(value: &Value) -> Result<Duration, ValidationError> {
    let range = || {
        format!(
            "the timeout is in seconds, from {} to {}",
            MIN_SYNC_TIMEOUT.as_secs(),
            MAX_SYNC_TIMEOUT.as_secs()
        )
    };
    let Some(secs) = value.as_f64() else {
        return Err(ValidationError::field(
            "timeout",
            format!("expected a number, found {}; {}", kind(value), range()),
        ));
    };
    let min = MIN_SYNC_TIMEOUT.as_secs_f64();
    let max = MAX_SYNC_TIMEOUT.as_secs_f64();
    if !(min..=max).contains(&secs) {
        return Err(ValidationError::field(
            "timeout",
            format!("{secs} is out of range; {}", range()),
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Reads `webhook` or its shorthand `webhook_url` / `webhook_secret`, noting which form was used.
fn read_webhook(fields: &mut Fields) -> Result<Option<RequestedWebhook>, ValidationError> {
    let nested = fields.take("webhook");
    let url = fields.take_string("webhook_url")?;
    let secret = fields.take_string("webhook_secret")?;
    match (nested, url, secret) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(ValidationError::field(
            "webhook",
            "give either `webhook` or `webhook_url`/`webhook_secret`, not both",
        )),
        (Some(value), None, None) => Ok(Some(RequestedWebhook {
            config: WebhookConfig::from_value(value, "webhook")?,
            form: WebhookForm::Nested,
        })),
        (None, None, Some(_)) => Err(ValidationError::field(
            "webhook_secret",
            "`webhook_secret` needs `webhook_url`",
        )),
        (None, Some(url), secret) => {
            let form = WebhookForm::Shorthand;
            let config = WebhookConfig::new(&url, secret.as_deref()).map_err(|e| {
                let field = match e.field_name() {
                    Some("secret") => form.secret_field(),
                    _ => form.url_field(),
                };
                ValidationError::field(field, e.message())
            })?;
            Ok(Some(RequestedWebhook { config, form }))
        }
        (None, None, None) => Ok(None),
    }
}

/// The answer to `POST /api/v1/artifacts`: `{"status":"accepted","correlation_id"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishResponse {
    /// Always `accepted`.
    pub status: String,
    /// The new workflow's correlation id.
    pub correlation_id: Uuid,
}

impl PublishResponse {
    /// The answer for a newly accepted workflow.
    pub fn accepted(correlation_id: Uuid) -> Self {
        PublishResponse {
            status: "accepted".to_owned(),
            correlation_id,
        }
    }
}

/// The answer to `POST /api/v1/artifacts/sync`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncPublishResponse {
    /// The workflow's correlation id.
    pub correlation_id: Uuid,
    /// Its artifacts in publication order, narrowed by the request's filters.
    pub artifacts: Vec<Artifact>,
    /// Whether the workflow went idle before the timeout.
    pub completed: bool,
    /// How long the request took.
    pub duration_ms: u64,
}
