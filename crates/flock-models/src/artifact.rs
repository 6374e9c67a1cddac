//! Artifacts: typed JSON objects on the blackboard, and the drafts they are made from.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::fields::{Fields, kind, string_list};
use crate::{TenantId, ValidationError};

/// `produced_by` of artifacts that a client published over HTTP.
pub const EXTERNAL_PRODUCER: &str = "external";

/// An artifact type name: 1 to 256 characters of ASCII letters, digits, `.`, `_` and `-`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct TypeName(String);

impl TypeName {
    /// The longest type name accepted, in characters.
    pub const MAX_LEN: usize = 256;
    /// The characters a type name is made of, as an ECMA-262 regular expression (the OpenAPI
    /// document's `pattern`); [`TypeName::new`] accepts exactly the names that match it and
    /// are 1 to [`TypeName::MAX_LEN`] characters long.
    pub const PATTERN: &'static str = "^[A-Za-z0-9._-]+$";

    /// Validates a type name.
    ///
    /// # Errors
    /// An empty or too long name, or one with a character outside `[A-Za-z0-9._-]`.
    pub fn new(name: impl Into<String>) -> Result<Self, ValidationError> {
        let name = name.into();
        if name.is_empty() {
            return Err(ValidationError::whole("the type name must not be empty"));
        }
        if name.len() > Self::MAX_LEN {
            return Err(ValidationError::whole(format!(
                "the type name is {} characters long; at most {} are allowed",
                name.chars().count(),
                Self::MAX_LEN
            )));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "._-".contains(*c)))
        {
            return Err(ValidationError::whole(format!(
                "the type name contains {bad:?}; only ASCII letters, digits, `.`, `_` and `-` are allowed"
            )));
        }
        Ok(TypeName(name))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TypeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TypeName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        TypeName::new(String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

impl PartialEq<str> for TypeName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for TypeName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// An artifact's tags: sorted and unique; each 1 to 256 characters without control characters,
/// at most 64 of them given (repeats count).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Tags(Vec<String>);

impl Tags {
    /// The most tags one artifact may be given, repeats included.
    pub const MAX_COUNT: usize = 64;
    /// The longest tag accepted, in characters.
    pub const MAX_LEN: usize = 256;
    /// What one tag may contain, as an ECMA-262 regular expression (the OpenAPI document's
    /// `pattern`): anything but control characters (Unicode category Cc).
    pub const PATTERN: &'static str = r"^[^\u0000-\u001F\u007F-\u009F]*$";

    /// Validates tags, then sorts them and drops repeats.
    ///
    /// # Errors
    /// More than [`Tags::MAX_COUNT`] tags (counting repeats), or an empty, too long or
    /// control-character tag (the field is `[i]`).
    pub fn new<I, S>(tags: I) -> Result<Self, ValidationError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut out: Vec<String> = Vec::new();
        for (i, tag) in tags.into_iter().enumerate() {
            if i == Self::MAX_COUNT {
                return Err(ValidationError::whole(format!(
                    "more than {} tags given; at most {} are allowed (repeats count)",
                    Self::MAX_COUNT,
                    Self::MAX_COUNT
                )));
            }
            let tag = tag.into();
            let problem = if tag.is_empty() {
                Some("a tag must not be empty".to_owned())
            } else if tag.chars().count() > Self::MAX_LEN {
                Some(format!(
                    "a tag may be at most {} characters long",
                    Self::MAX_LEN
                ))
            } else if tag.chars().any(char::is_control) {
                Some("a tag must not contain control characters".to_owned())
            } else {
                None
            };
            if let Some(message) = problem {
                return Err(ValidationError::field(format!("[{i}]"), message));
            }
            out.push(tag);
        }
        out.sort_unstable();
        out.dedup();
        Ok(Tags(out))
    }

    /// No tags.
    pub fn empty() -> Self {
        Tags(Vec::new())
    }

    /// Whether `tag` is one of these tags.
    pub fn contains(&self, tag: &str) -> bool {
        self.0.binary_search_by(|t| t.as_str().cmp(tag)).is_ok()
    }

    /// The tags in sorted order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// How many tags there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de> Deserialize<'de> for Tags {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Tags::new(Vec::<String>::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// What a client or an agent asks to publish: a type, a JSON object and tags. The blackboard
/// turns it into an [`Artifact`] by giving it an id, a producer, a correlation and a time.
#[derive(Debug, Clone, PartialEq)]
pub struct ArtifactDraft {
    /// The artifact type.
    pub type_name: TypeName,
    /// The JSON object the artifact carries.
    pub payload: Map<String, Value>,
    /// Its tags.
    pub tags: Tags,
}

impl ArtifactDraft {
    /// A draft with no tags.
    pub fn new(type_name: TypeName, payload: Map<String, Value>) -> Self {
        ArtifactDraft {
            type_name,
            payload,
            tags: Tags::empty(),
        }
    }

    /// Parses `{"type", "payload", "tags"?}`, as agents answer it; `path` names the value in
    /// errors (for example `artifacts[0]`).
    ///
    /// # Errors
    /// A missing or invalid field, or an unknown one, named with its path.
    pub fn from_value(value: Value, path: &str) -> Result<Self, ValidationError> {
        let mut fields = Fields::new(value, path)?;
        let draft = read_draft(&mut fields)?;
        fields.finish()?;
        Ok(draft)
    }
}

/// Reads the `type`, `payload` and `tags` fields shared by drafts and publish requests.
pub(crate) fn read_draft(fields: &mut Fields) -> Result<ArtifactDraft, ValidationError> {
    // Paths are spelled out only for an error (every publish reads these fields).
    let type_name = match fields.require("type")? {
        Value::String(s) => TypeName::new(s).map_err(|e| e.within(&fields.path_of("type")))?,
        other => {
            return Err(ValidationError::field(
                fields.path_of("type"),
                format!("expected a string, found {}", kind(&other)),
            ));
        }
    };
    let payload = match fields.require("payload")? {
        Value::Object(map) => map,
        other => {
            return Err(ValidationError::field(
                fields.path_of("payload"),
                format!("the payload must be a JSON object, found {}", kind(&other)),
            ));
        }
    };
    let tags = match fields.take("tags") {
        None => Tags::empty(),
        Some(value) => {
            let path = fields.path_of("tags");
            Tags::new(string_list(value, &path)?).map_err(|e| e.within(&path))?
        }
    };
    Ok(ArtifactDraft {
        type_name,
        payload,
        tags,
    })
}

/// A published artifact, as the blackboard stores it and the API lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    /// Its id: a UUID v7, so ids sort by creation time.
    pub id: Uuid,
    /// Its type.
    #[serde(rename = "type")]
    pub type_name: TypeName,
    /// The JSON object it carries.
    pub payload: Map<String, Value>,
    /// `external` for client requests, else the name of the agent that published it.
    pub produced_by: String,
    /// The workflow it belongs to.
    pub correlation_id: Uuid,
    /// Its tags, sorted and unique.
    #[serde(default)]
    pub tags: Tags,
    /// When it was published, in UTC with microsecond precision.
    #[serde(with = "crate::timestamp::micros")]
    pub created_at: OffsetDateTime,
    /// The tenant that owns it: the tenant of its workflow. Never on the wire (neither API
    /// answers nor webhook bodies carry it); read back as `default`, so a store sets it from
    /// what it keeps.
    #[serde(skip, default = "TenantId::default_tenant")]
    pub tenant: TenantId,
}

impl Artifact {
    /// Turns a draft into an artifact of tenant `default` with a fresh UUID v7 and the current
    /// time; [`Artifact::owned_by`] gives it another tenant.
    pub fn new(draft: ArtifactDraft, produced_by: impl Into<String>, correlation_id: Uuid) -> Self {
        Artifact {
            tenant: TenantId::default_tenant(),
            id: Uuid::now_v7(),
            type_name: draft.type_name,
            payload: draft.payload,
            produced_by: produced_by.into(),
            correlation_id,
            tags: draft.tags,
            created_at: crate::timestamp::now_micros(),
        }
    }

    /// The same artifact, owned by `tenant`.
    #[must_use]
    pub fn owned_by(mut self, tenant: TenantId) -> Self {
        self.tenant = tenant;
        self
    }
}
