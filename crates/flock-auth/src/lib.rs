//! Flock's API keys: a key's generation and the SHA-256 hash that is stored instead of it, the
//! [`KeyRecord`] a store keeps, the [`KeyStore`] trait with its memory implementation, and the
//! [`Authenticator`] that checks a presented key with a cache hit.
#![doc = include_str!("../README.md")]

mod authenticator;
mod key;
mod record;
mod store;

pub use authenticator::{
    AuthConfig, AuthError, AuthTasks, Authenticator, MAX_LIVE_KEYS_PER_TENANT,
};
pub use key::{ApiKey, KEY_PREFIX, KeyHash, MalformedKey};
pub use record::{KeyRecord, MAX_NAME_CHARS, NewKey};
pub use store::{KeyStore, KeyStoreError, MemoryKeyStore};
