//! Tenants and the scopes of their API keys: who owns artifacts, workflows and deliveries, and
//! what a key lets its holder do.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ValidationError;

/// A tenant: the owner of artifacts, workflows and webhook deliveries, and of the API keys that
/// reach them. 1 to 64 characters of ASCII letters, digits, `.`, `_` and `-`.
///
/// Requests served without a key (a server listening on loopback only, or in open mode) act as
/// [`TenantId::default_tenant`], named `default`.
///
/// Cloning it shares the name: every artifact, delivery and event of a tenant carries one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TenantId(Arc<str>);

impl TenantId {
    /// The longest tenant name accepted, in characters.
    pub const MAX_LEN: usize = 64;
    /// The name of the tenant of requests served without a key.
    pub const DEFAULT_NAME: &'static str = "default";

    /// Validates a tenant name.
    ///
    /// # Errors
    /// An empty or too long name, or one with a character outside `[A-Za-z0-9._-]`.
    pub fn new(name: impl Into<String>) -> Result<Self, ValidationError> {
        let name = name.into();
        if name.is_empty() {
            return Err(ValidationError::whole("the tenant name must not be empty"));
        }
        if name.len() > Self::MAX_LEN {
            return Err(ValidationError::whole(format!(
                "the tenant name is {} characters long; at most {} are allowed",
                name.chars().count(),
                Self::MAX_LEN
            )));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "._-".contains(*c)))
        {
            return Err(ValidationError::whole(format!(
                "the tenant name contains {bad:?}; only ASCII letters, digits, `.`, `_` and `-` \
                 are allowed"
            )));
        }
        Ok(TenantId(Arc::from(name)))
    }

    /// The tenant of requests served without a key: `default`.
    pub fn default_tenant() -> Self {
        TenantId(Self::DEFAULT_NAME.into())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TenantId {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TenantId::new(s)
    }
}

impl Serialize for TenantId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        TenantId::new(String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// What an API key lets its holder do. Each route needs one scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Publish artifacts (which starts agents and sends webhooks).
    Publish,
    /// Read artifacts, workflows, deliveries, agents and events.
    Read,
    /// Queue failed webhook deliveries again.
    Redeliver,
    /// Create, list and revoke the tenant's keys; rotate its webhook secret.
    KeysManage,
    /// Read the server's Prometheus metrics.
    Metrics,
}

impl Scope {
    /// Every scope, in the order of its bit.
    pub const ALL: [Scope; 5] = [
        Scope::Publish,
        Scope::Read,
        Scope::Redeliver,
        Scope::KeysManage,
        Scope::Metrics,
    ];

    /// The scope as keys and the API spell it: `publish`, `read`, `redeliver`, `keys:manage`,
    /// `metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Publish => "publish",
            Scope::Read => "read",
            Scope::Redeliver => "redeliver",
            Scope::KeysManage => "keys:manage",
            Scope::Metrics => "metrics",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Scope::Publish => 1,
            Scope::Read => 1 << 1,
            Scope::Redeliver => 1 << 2,
            Scope::KeysManage => 1 << 3,
            Scope::Metrics => 1 << 4,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| {
                ValidationError::whole(format!(
                    "`{s}` is not a scope; the scopes are {}",
                    Scope::ALL.map(Scope::as_str).join(", ")
                ))
            })
    }
}

impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A set of scopes. Serialized as a sorted list of their names.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Scopes(u8);

impl Scopes {
    /// No scope.
    pub const fn none() -> Self {
        Scopes(0)
    }

    /// Every scope: what a request served without a key may do.
    pub fn all() -> Self {
        Scope::ALL.into_iter().collect()
    }

    /// Whether `scope` is in the set.
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// Whether every scope of `other` is in this set.
    pub fn covers(self, other: Scopes) -> bool {
        self.0 & other.0 == other.0
    }

    /// The set with `scope` added.
    #[must_use]
    pub fn with(self, scope: Scope) -> Self {
        Scopes(self.0 | scope.bit())
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The scopes in the set, in [`Scope::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    /// Parses scope names; each must be known (repeats are fine).
    ///
    /// # Errors
    /// An unknown name; the error's field is its index, `[i]`.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Self, ValidationError> {
        names
            .iter()
            .enumerate()
            .try_fold(Scopes::none(), |set, (i, name)| {
                let scope: Scope = name.as_ref().parse().map_err(|e: ValidationError| {
                    ValidationError::field(format!("[{i}]"), e.message())
                })?;
                Ok(set.with(scope))
            })
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        iter.into_iter().fold(Scopes::none(), Scopes::with)
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.iter().map(Scope::as_str))
            .finish()
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Scope::as_str).collect();
        f.write_str(&names.join(" "))
    }
}

impl Serialize for Scopes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Scopes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Vec::<Scope>::deserialize(deserializer)?
            .into_iter()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names_follow_the_rules() {
        assert_eq!(
            TenantId::new("acme-1.eu_west").unwrap().as_str(),
            "acme-1.eu_west"
        );
        assert_eq!(TenantId::default_tenant().as_str(), "default");
        for (bad, words) in [
            ("", "must not be empty"),
            ("a b", "contains ' '"),
            ("ü", "contains 'ü'"),
        ] {
            let err = TenantId::new(bad).unwrap_err();
            assert!(err.message().contains(words), "{bad:?}: {err}");
        }
        assert!(TenantId::new("x".repeat(64)).is_ok());
        assert!(TenantId::new("x".repeat(65)).is_err());
    }

    #[test]
    fn scopes_round_trip_by_name() {
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>().unwrap(), scope);
        }
        let err = "admin".parse::<Scope>().unwrap_err();
        assert!(err.message().contains("keys:manage"), "{err}");
        let set = Scopes::parse(&["read", "publish", "read"]).unwrap();
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            [Scope::Publish, Scope::Read]
        );
        assert_eq!(
            serde_json::to_string(&set).unwrap(),
            r#"["publish","read"]"#
        );
        let back: Scopes = serde_json::from_str(r#"["read","publish"]"#).unwrap();
        assert_eq!(back, set);
        assert_eq!(
            Scopes::parse(&["read", "root"]).unwrap_err().field_name(),
            Some("[1]")
        );
        assert!(Scopes::all().covers(set));
        assert!(!set.covers(Scopes::all()));
        assert!(Scopes::none().is_empty());
        assert_eq!(
            Scopes::all().to_string(),
            "publish read redeliver keys:manage metrics"
        );
    }
}
