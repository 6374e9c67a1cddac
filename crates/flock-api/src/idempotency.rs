//! `X-Idempotency-Key`: the first answer to a key is remembered in the store
//! ([`Storage::idempotency`](flock_store::Storage::idempotency)), so a retried request gets the
//! same answer (the same correlation id) without publishing twice, on any instance sharing the
//! database and after a restart. A duplicate that arrives while the first is still being
//! answered gets 409 `in_progress` with `Retry-After: 1`, on this instance as on another: the
//! other instance's request cannot wake it, so none waits. Records hold a bounded answer (ids,
//! not artifacts), expire after `idempotency.ttl_secs`, and each tenant keeps at most
//! `idempotency.max_entries` of them, its oldest completed ones forgotten first.

use std::sync::Arc;
use std::time::Duration;

use flock_models::TenantId;
use flock_orchestrator::{
    ClaimOutcome, IdempotencyError, IdempotencyLimits, IdempotencyRequest, IdempotencyStore,
    RecordedAnswer,
};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::{ApiError, ErrorCode};

/// The request header carrying the key.
pub(crate) const HEADER: &str = "x-idempotency-key";
/// The longest key accepted.
pub(crate) const MAX_KEY_LEN: usize = 255;
/// The characters of a key, as the OpenAPI document states them: visible ASCII, which
/// [`check_key`] checks.
pub(crate) const KEY_PATTERN: &str = "^[!-~]+$";
/// What a duplicate in progress is told to wait, in seconds.
pub(crate) const IN_PROGRESS_RETRY_SECS: u64 = 1;

/// What to do with a request that carries a key.
#[derive(Debug)]
pub(crate) enum Claim {
    /// First use of the key: compute the answer, then [`Pending::complete`] it.
    New(Pending),
    /// The key was used with the same request: answer this again.
    Replay(RecordedAnswer),
    /// The same request is still being answered: 409 `in_progress`.
    InProgress,
    /// The key was used with a different request.
    Conflict,
}

/// The idempotency records of the server, in its store.
pub(crate) struct Idempotency {
    store: Arc<dyn IdempotencyStore>,
    limits: IdempotencyLimits,
}

impl std::fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotency")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// A key whose answer is being computed. Dropping it without [`Pending::complete`] (an error
/// answer, say) releases the key, so that a retry starts afresh.
pub(crate) struct Pending {
    store: Arc<dyn IdempotencyStore>,
    tenant: TenantId,
    key: String,
    token: Uuid,
    ttl: Duration,
    done: bool,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("tenant", &self.tenant)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl Pending {
    /// Records `answer` for the key. A store that fails here leaves the key in progress until
    /// its lease ends (duplicates get 409 meanwhile, never a second publish); the answer is
    /// still given.
    pub(crate) async fn complete(mut self, answer: RecordedAnswer) {
        self.done = true;
        if let Err(error) = self
            .store
            .complete(&self.tenant, &self.key, self.token, &answer, self.ttl)
            .await
        {
            tracing::warn!(%error, "an idempotency record was not completed");
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let store = Arc::clone(&self.store);
        let (tenant, key, token) = (
            self.tenant.clone(),
            std::mem::take(&mut self.key),
            self.token,
        );
        // Dropped where no await is possible: release in the background.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = store.release(&tenant, &key, token).await {
                    tracing::warn!(%error, "an idempotency key was not released");
                }
            });
        }
    }
}

fn unavailable(error: &IdempotencyError) -> ApiError {
    ApiError::new(
        ErrorCode::StorageUnavailable,
        format!("idempotency keys cannot be read: {error}"),
    )
}

impl Idempotency {
    /// Records in `store`: replayed for `ttl`, at most `max_entries` per tenant.
    pub(crate) fn new(store: Arc<dyn IdempotencyStore>, ttl: Duration, max_entries: usize) -> Self {
        Idempotency {
            store,
            limits: IdempotencyLimits {
                ttl,
                max_per_tenant: u64::try_from(max_entries.max(1)).unwrap_or(u64::MAX),
            },
        }
    }

    /// Looks `key` of `tenant` up for a request on `route` whose parsed JSON body is `body`.
    ///
    /// # Errors
    /// 503 `storage_unavailable` when the store fails.
    pub(crate) async fn claim(
        &self,
        tenant: &TenantId,
        key: &str,
        route: &str,
        body: &serde_json::Value,
    ) -> Result<Claim, ApiError> {
        let request = IdempotencyRequest {
            tenant: tenant.clone(),
            key: key.to_owned(),
            route: route.to_owned(),
            fingerprint: fingerprint(route, body),
        };
        let now = flock_models::timestamp::now_micros();
        let outcome = self
            .store
            .claim(&request, now, self.limits)
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(match outcome {
            ClaimOutcome::Claimed(token) => Claim::New(Pending {
                store: Arc::clone(&self.store),
                tenant: request.tenant,
                key: request.key,
                token,
                ttl: self.limits.ttl,
                done: false,
            }),
            ClaimOutcome::Replay(answer) => Claim::Replay(answer),
            ClaimOutcome::InProgress => Claim::InProgress,
            ClaimOutcome::Conflict => Claim::Conflict,
        })
    }
}

/// A digest of the route and the request's canonical JSON (whitespace does not matter).
fn fingerprint(route: &str, body: &serde_json::Value) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(route.as_bytes());
    hasher.update([0]);
    hasher.update(body.to_string().as_bytes());
    hasher.finalize().into()
}

/// Checks a key: 1 to 255 visible ASCII characters.
///
/// # Errors
/// A message saying what is wrong with the key.
pub(crate) fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(format!(
            "X-Idempotency-Key must be 1 to {MAX_KEY_LEN} characters"
        ));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("X-Idempotency-Key must be visible ASCII characters".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use flock_orchestrator::MemoryIdempotency;
    use serde_json::json;

    use super::*;

    fn answer(n: u128) -> RecordedAnswer {
        RecordedAnswer {
            status: 202,
            correlation_id: Uuid::from_u128(n),
            sync: None,
        }
    }

    #[tokio::test]
    async fn idempotency_replay_conflict_in_progress_and_release() {
        let ids = Idempotency::new(
            Arc::new(MemoryIdempotency::new()),
            Duration::from_secs(60),
            10,
        );
        let tenant = TenantId::default_tenant();
        let body = json!({"type": "A", "payload": {}});
        let Claim::New(pending) = ids.claim(&tenant, "k", "publish", &body).await.unwrap() else {
            panic!("new")
        };
        assert!(matches!(
            ids.claim(&tenant, "k", "publish", &body).await.unwrap(),
            Claim::InProgress
        ));
        pending.complete(answer(1)).await;
        assert!(matches!(
            ids.claim(&tenant, "k", "publish", &body).await.unwrap(),
            Claim::Replay(a) if a == answer(1)
        ));
        assert!(matches!(
            ids.claim(&tenant, "k", "publish", &json!({"type": "B"}))
                .await
                .unwrap(),
            Claim::Conflict
        ));
        assert!(matches!(
            ids.claim(&tenant, "k", "sync", &body).await.unwrap(),
            Claim::Conflict
        ));

        // An answer never completed is released: the next request starts afresh.
        let Claim::New(pending) = ids.claim(&tenant, "e", "publish", &body).await.unwrap() else {
            panic!("new")
        };
        drop(pending);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(matches!(
            ids.claim(&tenant, "e", "publish", &body).await.unwrap(),
            Claim::New(_)
        ));
    }

    #[test]
    fn key_rules() {
        assert!(check_key("abc-123_XYZ").is_ok());
        assert!(check_key("").is_err());
        assert!(check_key(&"k".repeat(256)).is_err());
        assert!(check_key("has space").is_err());
        assert!(check_key("ünï").is_err());
    }
}
