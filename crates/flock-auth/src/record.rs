//! What a store keeps of a key: its id, tenant, name, scopes and times, never its text.

use flock_models::{Scopes, TenantId, ValidationError, timestamp};
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

/// The longest key name accepted, in characters.
pub const MAX_NAME_CHARS: usize = 100;

/// A key as the store keeps it and the API lists it. It holds no key material (neither the key
/// nor its hash), so its `Debug` and JSON show none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyRecord {
    /// The key's id (a UUIDv7), which lists show and revocation takes.
    pub id: Uuid,
    /// The tenant the key acts for.
    pub tenant: TenantId,
    /// A name for people; empty when none was given.
    pub name: String,
    /// What the key may do.
    pub scopes: Scopes,
    /// When it was created (UTC, microseconds).
    #[serde(with = "timestamp::micros")]
    pub created_at: OffsetDateTime,
    /// When it stops working, if ever.
    #[serde(serialize_with = "optional_micros")]
    pub expires_at: Option<OffsetDateTime>,
    /// When it was revoked, if it was.
    #[serde(serialize_with = "optional_micros")]
    pub revoked_at: Option<OffsetDateTime>,
    /// When it was last used, as last written (uses are written in batches, so this may lag
    /// the latest use by the batch period).
    #[serde(serialize_with = "optional_micros")]
    pub last_used_at: Option<OffsetDateTime>,
}

fn optional_micros<S: serde::Serializer>(
    at: &Option<OffsetDateTime>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => s.serialize_str(&timestamp::format_micros(*at)),
        None => s.serialize_none(),
    }
}

impl KeyRecord {
    /// Whether the key works at `now`: not revoked and not expired.
    pub fn usable_at(&self, now: OffsetDateTime) -> bool {
        self.revoked_at.is_none() && !self.expired_at(now)
    }

    /// Whether the key has expired by `now`.
    pub fn expired_at(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// What a new key is to be: checked when built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    tenant: TenantId,
    name: String,
    scopes: Scopes,
    expires_at: Option<OffsetDateTime>,
}

impl NewKey {
    /// A new key's description.
    ///
    /// # Errors
    /// No scope (field `scopes`), or a name that is too long or holds a control character
    /// (field `name`).
    pub fn new(
        tenant: TenantId,
        name: impl Into<String>,
        scopes: Scopes,
        expires_at: Option<OffsetDateTime>,
    ) -> Result<NewKey, ValidationError> {
        let name = name.into();
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(ValidationError::field(
                "name",
                format!("the name is longer than {MAX_NAME_CHARS} characters"),
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(ValidationError::field(
                "name",
                "the name must not contain control characters",
            ));
        }
        if scopes.is_empty() {
            return Err(ValidationError::field(
                "scopes",
                "a key needs at least one scope",
            ));
        }
        Ok(NewKey {
            tenant,
            name,
            scopes,
            expires_at: expires_at.map(timestamp::truncate_micros),
        })
    }

    /// The tenant.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The scopes.
    pub fn scopes(&self) -> Scopes {
        self.scopes
    }

    /// The record of this key, created `now`.
    pub(crate) fn record(self, now: OffsetDateTime) -> KeyRecord {
        KeyRecord {
            id: Uuid::now_v7(),
            tenant: self.tenant,
            name: self.name,
            scopes: self.scopes,
            created_at: timestamp::truncate_micros(now),
            expires_at: self.expires_at,
            revoked_at: None,
            last_used_at: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use flock_models::Scope;

    use super::*;

    #[test]
    fn new_keys_are_checked_naming_the_field() {
        let tenant = TenantId::new("acme").unwrap();
        let read = Scopes::none().with(Scope::Read);
        assert!(NewKey::new(tenant.clone(), "ci", read, None).is_ok());
        let err = NewKey::new(tenant.clone(), "ci", Scopes::none(), None).unwrap_err();
        assert_eq!(err.field_name(), Some("scopes"));
        let err = NewKey::new(tenant.clone(), "x".repeat(101), read, None).unwrap_err();
        assert_eq!(err.field_name(), Some("name"));
        let err = NewKey::new(tenant, "a\nb", read, None).unwrap_err();
        assert_eq!(err.field_name(), Some("name"));
    }

    #[test]
    fn a_record_serializes_without_key_material() {
        let now = OffsetDateTime::now_utc();
        let record = NewKey::new(
            TenantId::new("acme").unwrap(),
            "ci",
            Scopes::none().with(Scope::Publish),
            None,
        )
        .unwrap()
        .record(now);
        let json = serde_json::to_value(&record).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "id",
                "tenant",
                "name",
                "scopes",
                "created_at",
                "expires_at",
                "revoked_at",
                "last_used_at"
            ]
        );
        assert_eq!(json["scopes"], serde_json::json!(["publish"]));
        assert!(json["expires_at"].is_null());
        assert!(record.usable_at(now));
    }
}
