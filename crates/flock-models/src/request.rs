//! Publish requests as clients send them, and the answers they get.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::artifact::read_draft;
use crate::fields::{Fields, kind, string_list};
use crate::{
    Artifact, ArtifactDraft, MAX_WEBHOOKS, RequestedWebhook, TypeName, ValidationError,
    WebhookConfig, WebhookForm,
};

/// The sync route's wait when the request names none.
pub const DEFAULT_SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// The shortest wait a sync request may ask for.
pub const MIN_SYNC_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest wait a sync request may ask for.
pub const MAX_SYNC_TIMEOUT: Duration = Duration::from_secs(300);

/// `POST /api/v1/artifacts`: `{type, payload, tags?, webhook?}`, with `webhook_url` and
/// `webhook_secret` accepted at the top level as shorthand for `webhook`, or `webhooks: [...]`
/// (at most [`MAX_WEBHOOKS`]) for several.
#[derive(Debug, Clone, PartialEq)]
pub struct ArtifactPublishRequest {
    /// The artifact type.
    pub type_name: TypeName,
    /// The artifact's JSON object.
    pub payload: Map<String, Value>,
    /// Its tags.
    pub tags: crate::Tags,
    /// Where this workflow's webhooks go (none, one, or up to [`MAX_WEBHOOKS`]) and the form
    /// the request gave each in.
    pub webhooks: Vec<RequestedWebhook>,
}

impl ArtifactPublishRequest {
    /// Validates a parsed JSON body.
    ///
    /// # Errors
    /// The first invalid, missing or unknown field, named by its path.
    pub fn from_value(value: Value) -> Result<Self, ValidationError> {
        let mut fields = Fields::new(value, "")?;
        let draft = read_draft(&mut fields)?;
        let webhooks = read_webhooks(&mut fields)?;
        fields.finish()?;
        Ok(ArtifactPublishRequest {
            type_name: draft.type_name,
            payload: draft.payload,
            tags: draft.tags,
            webhooks,
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

    /// The artifact this request publishes and its webhooks, without copying the payload.
    pub fn into_parts(self) -> (ArtifactDraft, Vec<RequestedWebhook>) {
        let draft = ArtifactDraft {
            type_name: self.type_name,
            payload: self.payload,
            tags: self.tags,
        };
        (draft, self.webhooks)
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
        let webhooks = read_webhooks(&mut fields)?;
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
            webhooks,
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

/// Reads `webhook`, its shorthand `webhook_url` / `webhook_secret`, or `webhooks: [...]`,
/// noting the form each was given in.
fn read_webhooks(fields: &mut Fields) -> Result<Vec<RequestedWebhook>, ValidationError> {
    let nested = fields.take("webhook");
    let url = fields.take_string("webhook_url")?;
    let secret = fields.take_string("webhook_secret")?;
    let listed = fields.take("webhooks");
    if listed.is_some() && (nested.is_some() || url.is_some() || secret.is_some()) {
        return Err(ValidationError::field(
            "webhooks",
            "give either `webhooks` or `webhook` (or `webhook_url`/`webhook_secret`), not both",
        ));
    }
    if let Some(listed) = listed {
        return read_listed(listed);
    }
    match (nested, url, secret) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(ValidationError::field(
            "webhook",
            "give either `webhook` or `webhook_url`/`webhook_secret`, not both",
        )),
        (Some(value), None, None) => Ok(vec![RequestedWebhook {
            config: WebhookConfig::from_value(value, "webhook")?,
            form: WebhookForm::Nested,
        }]),
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
            Ok(vec![RequestedWebhook { config, form }])
        }
        (None, None, None) => Ok(Vec::new()),
    }
}

/// Reads `webhooks: [...]`: up to [`MAX_WEBHOOKS`] webhooks, each named by its index in errors.
fn read_listed(value: Value) -> Result<Vec<RequestedWebhook>, ValidationError> {
    let Value::Array(items) = value else {
        return Err(ValidationError::field(
            "webhooks",
            format!("expected an array of webhooks, found {}", kind(&value)),
        ));
    };
    if items.len() > MAX_WEBHOOKS {
        return Err(ValidationError::field(
            "webhooks",
            format!(
                "{} webhooks; at most {MAX_WEBHOOKS} are allowed",
                items.len()
            ),
        ));
    }
    (items.into_iter().enumerate())
        .map(|(i, item)| {
            Ok(RequestedWebhook {
                config: WebhookConfig::from_value(item, &format!("webhooks[{i}]"))?,
                form: WebhookForm::Listed(i),
            })
        })
        .collect()
}

/// The most artifacts one batch publish carries.
pub const MAX_BATCH_ARTIFACTS: usize = 1000;

/// `POST /api/v1/artifacts/batch`: `{artifacts: [{type, payload, tags?}, ...], webhook? |
/// webhook_url? | webhooks?}`: 1 to [`MAX_BATCH_ARTIFACTS`] artifacts published together in
/// one new workflow, stored all or none.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchPublishRequest {
    /// The artifacts, in the order they are published.
    pub artifacts: Vec<ArtifactDraft>,
    /// The workflow's webhooks, as for a single publish.
    pub webhooks: Vec<RequestedWebhook>,
}

impl BatchPublishRequest {
    /// Validates a parsed JSON body.
    ///
    /// # Errors
    /// The first invalid, missing or unknown field, named by its path (`artifacts[3].type`).
    pub fn from_value(value: Value) -> Result<Self, ValidationError> {
        let mut fields = Fields::new(value, "")?;
        let Value::Array(items) = fields.require("artifacts")? else {
            return Err(ValidationError::field(
                "artifacts",
                "expected an array of artifacts ({type, payload, tags?})",
            ));
        };
        if items.is_empty() || items.len() > MAX_BATCH_ARTIFACTS {
            return Err(ValidationError::field(
                "artifacts",
                format!(
                    "{} artifacts; a batch has 1 to {MAX_BATCH_ARTIFACTS}",
                    items.len()
                ),
            ));
        }
        let artifacts = (items.into_iter().enumerate())
            .map(|(i, item)| {
                let mut artifact = Fields::new(item, &format!("artifacts[{i}]"))?;
                let draft = read_draft(&mut artifact)?;
                artifact.finish()?;
                Ok(draft)
            })
            .collect::<Result<Vec<_>, ValidationError>>()?;
        let webhooks = read_webhooks(&mut fields)?;
        fields.finish()?;
        Ok(BatchPublishRequest {
            artifacts,
            webhooks,
        })
    }
}

/// The answer to `POST /api/v1/artifacts/batch`: `{"status":"accepted","correlation_id",
/// "artifact_ids"}`, the ids in the request's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchPublishResponse {
    /// Always `accepted`.
    pub status: String,
    /// The new workflow's correlation id.
    pub correlation_id: Uuid,
    /// The artifacts' ids, in the request's order.
    pub artifact_ids: Vec<Uuid>,
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
