//! `X-Idempotency-Key`: the first answer to a key is remembered, so a retried request gets the
//! same answer (the same correlation id) without publishing twice, also when both copies arrive
//! at once. Keys expire and the cache is bounded.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::watch;

/// The request header carrying the key.
pub(crate) const HEADER: &str = "x-idempotency-key";
/// The longest key accepted.
pub(crate) const MAX_KEY_LEN: usize = 255;
/// The characters of a key, as the OpenAPI document states them: visible ASCII, which
/// [`check_key`] checks.
pub(crate) const KEY_PATTERN: &str = "^[!-~]+$";

/// A remembered answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    /// Its HTTP status.
    pub(crate) status: u16,
    /// Its JSON body.
    pub(crate) body: Arc<[u8]>,
}

/// What to do with a request that carries a key.
#[derive(Debug)]
pub(crate) enum Claim {
    /// First use of the key: compute the answer, then [`Pending::complete`] it.
    New(Pending),
    /// The key was used with the same request: answer this again.
    Replay(Stored),
    /// The key was used with a different request.
    Conflict,
}

type Slot = watch::Receiver<Option<Stored>>;

struct Entry {
    fingerprint: [u8; 32],
    answer: Slot,
    created: Instant,
}

struct Inner {
    entries: HashMap<String, Entry>,
    /// Keys in creation order, with their creation time, for expiry and eviction.
    order: VecDeque<(Instant, String)>,
}

/// The cache of idempotency keys, shared by every worker of the server.
pub(crate) struct IdempotencyCache {
    inner: Arc<Mutex<Inner>>,
    ttl: Duration,
    max_entries: usize,
}

/// A key whose answer is being computed. Dropping it without [`Pending::complete`] (an error
/// answer, say) forgets the key, so that a retry starts afresh.
#[derive(Debug)]
pub(crate) struct Pending {
    key: String,
    sender: Option<watch::Sender<Option<Stored>>>,
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("entries", &self.entries.len())
            .finish()
    }
}

impl Pending {
    /// Remembers `answer` for the key and hands it to requests waiting on it.
    pub(crate) fn complete(mut self, answer: Stored) {
        if let Some(sender) = self.sender.take() {
            let _ = sender.send(Some(answer));
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(sender) = self.sender.take() {
            let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            inner.entries.remove(&self.key);
            // Waiters see the sender gone and start afresh.
            drop(sender);
        }
    }
}

impl IdempotencyCache {
    /// A cache remembering keys for `ttl`, at most `max_entries` of them.
    pub(crate) fn new(ttl: Duration, max_entries: usize) -> Self {
        IdempotencyCache {
            inner: Arc::new(Mutex::new(Inner {
                entries: HashMap::new(),
                order: VecDeque::new(),
            })),
            ttl,
            max_entries: max_entries.max(1),
        }
    }

    /// Looks `key` up for a request on `route` whose parsed JSON body is `body`. A request with
    /// the same key that is still being answered is waited for.
    pub(crate) async fn claim(&self, key: &str, route: &str, body: &serde_json::Value) -> Claim {
        let fingerprint = fingerprint(route, body);
        loop {
            let mut waiting = {
                let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
                self.expire(&mut inner, Instant::now());
                match inner.entries.get(key) {
                    Some(entry) if entry.fingerprint != fingerprint => return Claim::Conflict,
                    Some(entry) => entry.answer.clone(),
                    None => {
                        let (sender, receiver) = watch::channel(None);
                        let now = Instant::now();
                        inner.entries.insert(
                            key.to_owned(),
                            Entry {
                                fingerprint,
                                answer: receiver,
                                created: now,
                            },
                        );
                        inner.order.push_back((now, key.to_owned()));
                        self.evict(&mut inner);
                        return Claim::New(Pending {
                            key: key.to_owned(),
                            sender: Some(sender),
                            inner: Arc::clone(&self.inner),
                        });
                    }
                }
            };
            // Same key, same request, answer not ready yet: wait for it, or for the first
            // request to give up (then try again from the top).
            if let Ok(answer) = waiting.wait_for(Option::is_some).await
                && let Some(stored) = answer.clone()
            {
                return Claim::Replay(stored);
            }
        }
    }

    /// How many keys are remembered (the tests look).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .len()
    }

    fn expire(&self, inner: &mut Inner, now: Instant) {
        while let Some((created, key)) = inner.order.front() {
            if now.duration_since(*created) < self.ttl {
                break;
            }
            let (created, key) = (*created, key.clone());
            inner.order.pop_front();
            // Only if the entry is still the one this queue item stands for.
            if inner
                .entries
                .get(&key)
                .is_some_and(|e| e.created == created)
            {
                inner.entries.remove(&key);
            }
        }
    }

    fn evict(&self, inner: &mut Inner) {
        while inner.entries.len() > self.max_entries {
            let Some((created, key)) = inner.order.pop_front() else {
                break;
            };
            if inner
                .entries
                .get(&key)
                .is_some_and(|e| e.created == created)
            {
                inner.entries.remove(&key);
            }
        }
        // Forgotten keys (errors) leave stale queue items behind; keep the queue bounded.
        if inner.order.len() > 2 * self.max_entries {
            let entries = &inner.entries;
            inner
                .order
                .retain(|(created, key)| entries.get(key).is_some_and(|e| e.created == *created));
        }
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
    use serde_json::json;

    use super::*;

    fn stored(n: u8) -> Stored {
        Stored {
            status: 202,
            body: Arc::from(vec![n]),
        }
    }

    #[tokio::test]
    async fn replay_conflict_and_forget() {
        let cache = IdempotencyCache::new(Duration::from_secs(60), 10);
        let body = json!({"type": "A", "payload": {}});
        let Claim::New(pending) = cache.claim("k", "publish", &body).await else {
            panic!("new")
        };
        pending.complete(stored(1));
        assert!(
            matches!(cache.claim("k", "publish", &body).await, Claim::Replay(s) if s == stored(1))
        );
        assert!(matches!(
            cache.claim("k", "publish", &json!({"type": "B"})).await,
            Claim::Conflict
        ));
        assert!(matches!(
            cache.claim("k", "sync", &body).await,
            Claim::Conflict
        ));

        // An answer never completed is forgotten: the next request starts afresh.
        let Claim::New(pending) = cache.claim("e", "publish", &body).await else {
            panic!("new")
        };
        drop(pending);
        assert!(matches!(
            cache.claim("e", "publish", &body).await,
            Claim::New(_)
        ));
    }

    #[tokio::test]
    async fn concurrent_duplicate_waits_for_the_first_answer() {
        let cache = Arc::new(IdempotencyCache::new(Duration::from_secs(60), 10));
        let body = json!({"x": 1});
        let Claim::New(pending) = cache.claim("k", "r", &body).await else {
            panic!("new")
        };
        let waiter = {
            let cache = Arc::clone(&cache);
            let body = body.clone();
            tokio::spawn(async move { cache.claim("k", "r", &body).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        pending.complete(stored(7));
        assert!(matches!(waiter.await.unwrap(), Claim::Replay(s) if s == stored(7)));
    }

    #[tokio::test]
    async fn waiter_takes_over_when_the_first_gives_up() {
        let cache = Arc::new(IdempotencyCache::new(Duration::from_secs(60), 10));
        let body = json!({"x": 1});
        let Claim::New(pending) = cache.claim("k", "r", &body).await else {
            panic!("new")
        };
        let waiter = {
            let cache = Arc::clone(&cache);
            let body = body.clone();
            tokio::spawn(async move { matches!(cache.claim("k", "r", &body).await, Claim::New(_)) })
        };
        tokio::task::yield_now().await;
        drop(pending);
        assert!(waiter.await.unwrap());
    }

    #[tokio::test]
    async fn keys_expire_and_the_cache_is_bounded() {
        let cache = IdempotencyCache::new(Duration::from_millis(50), 3);
        let body = json!({});
        for key in ["a", "b", "c", "d"] {
            let Claim::New(p) = cache.claim(key, "r", &body).await else {
                panic!("new")
            };
            p.complete(stored(0));
        }
        assert_eq!(cache.len(), 3, "the oldest key was evicted");
        assert!(matches!(cache.claim("a", "r", &body).await, Claim::New(_)));
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(matches!(cache.claim("b", "r", &body).await, Claim::New(_)));
        assert!(cache.len() <= 1, "expired keys are gone");
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
