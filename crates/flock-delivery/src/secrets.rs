//! Tenant webhook secrets: each tenant's current signing secret and, for a grace period after a
//! rotation, its previous one. The [`TenantSecrets`] trait (its durable backends are in
//! `flock-store`), [`MemoryTenantSecrets`], and [`CachedTenantSecrets`], the short-lived cache
//! the sender reads through on every delivery without a secret of its own.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use flock_models::{Secret, TenantId};
use flock_signing::SigningKey;
use time::OffsetDateTime;

/// How many random bytes a generated secret carries (after `whsec_`, in base64).
pub const SECRET_BYTES: usize = 32;

/// A new random webhook secret: `whsec_` and the standard base64 of [`SECRET_BYTES`] bytes from
/// the operating system's random source (the Standard Webhooks form, 50 characters).
///
/// # Panics
/// When the operating system has no random source to give (nothing can be done safely
/// without one).
pub fn generate_secret() -> Secret {
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    Secret::new(format!(
        "{}{}",
        flock_signing::KEY_PREFIX,
        BASE64.encode(bytes)
    ))
    .expect("`whsec_` and standard base64 of 32 bytes is a valid secret")
}

/// Why a tenant's secrets could not be read or written. No variant holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretsError {
    /// The store failed or holds something that does not decode; the text says what, never
    /// with a secret in it.
    #[error("tenant secrets: {0}")]
    Backend(String),
}

/// What a tenant's deliveries are signed with at one moment: its current secret and, while its
/// grace period lasts, the one it replaced. Both HMAC keys of each are prepared once, so
/// signing an attempt costs only the hashes of its body; cloning is a reference count.
/// `Debug` shows no secret.
#[derive(Clone)]
pub struct TenantSigning(Arc<Signing>);

/// The secrets and keys behind a [`TenantSigning`].
struct Signing {
    current: Secret,
    current_key: SigningKey,
    previous: Option<Previous>,
}

/// The secret a rotation replaced, and until when it still signs.
#[derive(Clone)]
struct Previous {
    secret: Secret,
    key: SigningKey,
    until: OffsetDateTime,
}

impl TenantSigning {
    /// The signing state of a tenant whose current secret is `current` and whose previous one,
    /// if any, signs until its time: kept only if `now` is before that time.
    pub fn new(
        current: Secret,
        previous: Option<(Secret, OffsetDateTime)>,
        now: OffsetDateTime,
    ) -> Self {
        TenantSigning(Arc::new(Signing {
            current_key: current.signing_key(),
            current,
            previous: previous
                .filter(|(_, until)| now < *until)
                .map(|(secret, until)| Previous {
                    key: secret.signing_key(),
                    secret,
                    until,
                }),
        }))
    }

    /// The current secret: the one `X-Flock-Signature` is signed with.
    pub fn current(&self) -> &Secret {
        &self.0.current
    }

    /// The previous secret, while it still signs.
    pub fn previous(&self) -> Option<&Secret> {
        self.0.previous.as_ref().map(|p| &p.secret)
    }

    /// Until when the previous secret signs (exclusive); `None` when there is none.
    pub fn previous_until(&self) -> Option<OffsetDateTime> {
        self.0.previous.as_ref().map(|p| p.until)
    }

    /// The current secret's keys.
    pub fn current_key(&self) -> &SigningKey {
        &self.0.current_key
    }

    /// The previous secret's keys, while it still signs.
    pub fn previous_key(&self) -> Option<&SigningKey> {
        self.0.previous.as_ref().map(|p| &p.key)
    }

    /// The `X-Flock-Signature` value of `body`: one signature (the header carries one), by
    /// the previous secret while it still signs, else by the current one. So a receiver that
    /// holds only the old secret verifies both headers until the grace period ends, and one
    /// that added the new secret to its list verifies them too: a rotation loses no delivery.
    pub fn flock_signature(&self, body: &[u8]) -> String {
        self.previous_key()
            .unwrap_or(&self.0.current_key)
            .flock_signature(body)
    }

    /// The `webhook-signature` value of message `id` sent at `timestamp`: a signature by the
    /// current secret and, while it still signs, one by the previous secret
    /// ([`flock_signing::standard_signatures`]).
    pub fn standard_signatures(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let current = &self.0.current_key;
        match self.previous_key() {
            Some(previous) => {
                flock_signing::standard_signatures(&[current, previous], id, timestamp, body)
            }
            None => flock_signing::standard_signatures(&[current], id, timestamp, body),
        }
    }
}

impl fmt::Debug for TenantSigning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantSigning")
            .field("current", self.current())
            .field("previous", &self.previous())
            .field("previous_until", &self.previous_until())
            .finish()
    }
}

/// Each tenant's webhook secrets: what the sender signs a delivery without a secret of its own
/// with, and what `POST /api/v1/webhook-secret/rotate` replaces. A tenant's first secret is
/// made when it is first asked for. Implementations keep one row per tenant, so that several
/// instances sharing a store agree on it.
#[async_trait]
pub trait TenantSecrets: Send + Sync + 'static {
    /// The tenant's signing state at `now`: its current secret, and its previous one while
    /// `now` is before the end of that one's grace period. A tenant without a secret gets one
    /// ([`generate_secret`]), stored only if no other caller stored one first, so that callers
    /// racing on a new tenant all end with the one secret that was stored.
    ///
    /// # Errors
    /// The store failed.
    async fn signing(
        &self,
        tenant: &TenantId,
        now: OffsetDateTime,
    ) -> Result<TenantSigning, SecretsError>;

    /// Replaces the tenant's current secret with a new one, in one write: the old current
    /// secret becomes the previous one, signing until `now + grace` (a previous secret still
    /// in its grace period is dropped: only one is kept). A tenant without a secret gets its
    /// first one. Answers the new state, as [`TenantSecrets::signing`] would at `now`.
    ///
    /// # Errors
    /// The store failed.
    async fn rotate(
        &self,
        tenant: &TenantId,
        now: OffsetDateTime,
        grace: Duration,
    ) -> Result<TenantSigning, SecretsError>;
}

/// `now + grace`, saturating at the largest time instead of panicking.
pub fn grace_end(now: OffsetDateTime, grace: Duration) -> OffsetDateTime {
    crate::time_util::add(now, grace)
}

/// A tenant's stored secrets.
#[derive(Clone)]
struct Stored {
    current: Secret,
    previous: Option<(Secret, OffsetDateTime)>,
}

impl Stored {
    fn at(&self, now: OffsetDateTime) -> TenantSigning {
        TenantSigning::new(self.current.clone(), self.previous.clone(), now)
    }
}

/// [`TenantSecrets`] in memory: lost when the process stops, not shared between processes.
#[derive(Default)]
pub struct MemoryTenantSecrets {
    tenants: Mutex<HashMap<TenantId, Stored>>,
}

impl MemoryTenantSecrets {
    /// No tenant has a secret yet.
    pub fn new() -> Self {
        MemoryTenantSecrets::default()
    }
}

impl fmt::Debug for MemoryTenantSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tenants = self
            .tenants
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("MemoryTenantSecrets")
            .field("tenants", &tenants)
            .finish()
    }
}

#[async_trait]
impl TenantSecrets for MemoryTenantSecrets {
    async fn signing(
        &self,
        tenant: &TenantId,
        now: OffsetDateTime,
    ) -> Result<TenantSigning, SecretsError> {
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        let stored = tenants.entry(tenant.clone()).or_insert_with(|| Stored {
            current: generate_secret(),
            previous: None,
        });
        // Kept only while it may still sign.
        if stored
            .previous
            .as_ref()
            .is_some_and(|(_, until)| *until <= now)
        {
            stored.previous = None;
        }
        Ok(stored.at(now))
    }

    async fn rotate(
        &self,
        tenant: &TenantId,
        now: OffsetDateTime,
        grace: Duration,
    ) -> Result<TenantSigning, SecretsError> {
        let fresh = generate_secret();
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        let stored = match tenants.remove(tenant) {
            None => Stored {
                current: fresh,
                previous: None,
            },
            Some(old) => Stored {
                current: fresh,
                previous: Some((old.current, grace_end(now, grace))),
            },
        };
        let signing = stored.at(now);
        tenants.insert(tenant.clone(), stored);
        Ok(signing)
    }
}

/// A [`TenantSecrets`] that remembers each tenant's [`TenantSigning`] for at most
/// [`CachedTenantSecrets::TTL`] (1 s), so that the sender, which asks for every delivery
/// without a secret of its own, reaches the store about once a second per tenant.
///
/// A rotation through this cache replaces its entry at once (a read that was under way when
/// the rotation finished does not put the old state back); one made elsewhere (another
/// instance sharing the store) is seen within the TTL, so every instance signs with the new
/// secret within 1 s of a rotation. A previous secret may likewise sign for up to 1 s past the
/// end of its grace period.
///
/// The cache is bounded: at most [`CachedTenantSecrets::MAX_TENANTS`] (10,000) tenants. When
/// it is full, expired entries are dropped, and if none had expired the whole cache is cleared
/// (each entry lives 1 s at most anyway, so this costs one store read per tenant, not
/// correctness). Each entry is a tenant name and two secrets with their keys: under 2 KiB,
/// so at most about 20 MB in all.
pub struct CachedTenantSecrets {
    inner: Arc<dyn TenantSecrets>,
    ttl: Duration,
    max_tenants: usize,
    entries: Mutex<HashMap<TenantId, (Instant, TenantSigning)>>,
}

impl CachedTenantSecrets {
    /// How long an entry is used: 1 s.
    pub const TTL: Duration = Duration::from_secs(1);
    /// The most tenants kept: 10,000.
    pub const MAX_TENANTS: usize = 10_000;

    /// A cache over `inner` with [`Self::TTL`] and [`Self::MAX_TENANTS`].
    pub fn new(inner: Arc<dyn TenantSecrets>) -> Self {
        CachedTenantSecrets::with_limits(inner, Self::TTL, Self::MAX_TENANTS)
    }

    /// A cache over `inner` keeping each entry for `ttl` and at most `max_tenants` (at least
    /// 1) tenants.
    pub fn with_limits(inner: Arc<dyn TenantSecrets>, ttl: Duration, max_tenants: usize) -> Self {
        CachedTenantSecrets {
            inner,
            ttl,
            max_tenants: max_tenants.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// How many tenants are cached now (expired entries included until they are dropped).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, (Instant, TenantSigning)>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remembers `signing`, read from the store by a call that started at `started`, for
    /// `tenant`, unless the entry there comes from a later call (a rotation that finished
    /// while this read was under way); makes room first if the cache is full.
    fn remember(&self, tenant: &TenantId, signing: &TenantSigning, started: Instant) {
        let mut entries = self.lock();
        match entries.get(tenant) {
            Some((at, _)) if *at > started => return,
            Some(_) => {}
            None if entries.len() >= self.max_tenants => {
                let now = Instant::now();
                let ttl = self.ttl;
                entries.retain(|_, (at, _)| now.duration_since(*at) < ttl);
                if entries.len() >= self.max_tenants {
                    entries.clear();
                }
            }
            None => {}
        }
        entries.insert(tenant.clone(), (started, signing.clone()));
    }
}

impl fmt::Debug for CachedTenantSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedTenantSecrets")
            .field("ttl", &self.ttl)
            .field("max_tenants", &self.max_tenants)
            .field("cached", &self.len())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl TenantSecrets for CachedTenantSecrets {
    async fn signing(
        &self,
        tenant: &TenantId,
        now: OffsetDateTime,
    ) -> Result<TenantSigning, SecretsError> {
        if let Some((at, signing)) = self.lock().get(tenant)
            && at.elapsed() < self.ttl
        {
            return Ok(signing.clone());
        }
        let started = Instant::now();
        let signing = self.inner.signing(tenant, now).await?;
        self.remember(tenant, &signing, started);
        Ok(signing)
    }

    async fn rotate(
        &self,
        tenant: &TenantId,
        now: OffsetDateTime,
        grace: Duration,
    ) -> Result<TenantSigning, SecretsError> {
        let started = Instant::now();
        let signing = self.inner.rotate(tenant, now, grace).await?;
        self.remember(tenant, &signing, started);
        Ok(signing)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn tenant(name: &str) -> TenantId {
        TenantId::new(name).unwrap()
    }

    fn t0() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    #[test]
    fn generated_secrets_are_whsec_and_32_random_bytes() {
        let a = generate_secret();
        let b = generate_secret();
        assert_ne!(a, b);
        for secret in [&a, &b] {
            let text = secret.expose();
            assert!(text.starts_with("whsec_"), "{text}");
            assert_eq!(text.len(), 50);
            assert_eq!(
                flock_signing::standard_key(text).unwrap().len(),
                SECRET_BYTES
            );
        }
    }

    #[test]
    fn signing_uses_the_current_secret_and_the_previous_one_in_grace() {
        let current = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let old = Secret::new("the old one").unwrap();
        let until = t0() + Duration::from_secs(60);
        let signing = TenantSigning::new(current.clone(), Some((old.clone(), until)), t0());
        assert_eq!(signing.previous(), Some(&old));
        assert_eq!(signing.previous_until(), Some(until));
        let header = signing.standard_signatures(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        let (first, second) = header.split_once(' ').unwrap();
        assert_eq!(first, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert_eq!(
            second,
            old.signing_key().standard_signature(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            )
        );
        // `X-Flock-Signature` carries one signature: the previous secret's while it signs.
        assert_eq!(
            signing.flock_signature(b"x"),
            old.signing_key().flock_signature(b"x")
        );
        // At the end of the grace period the previous secret no longer signs.
        let later = TenantSigning::new(current.clone(), Some((old, until)), until);
        assert_eq!(
            later.flock_signature(b"x"),
            current.signing_key().flock_signature(b"x")
        );
        assert_eq!(later.previous(), None);
        assert_eq!(later.previous_until(), None);
        assert!(later.previous_key().is_none());
        assert!(!later.standard_signatures("id", 1, b"x").contains(' '));
        let shown = format!("{signing:?}");
        assert!(
            !shown.contains("MfKQ") && !shown.contains("old one"),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn memory_secrets_are_made_once_rotated_with_grace_and_per_tenant() {
        let secrets = MemoryTenantSecrets::new();
        let acme = tenant("acme");
        let first = secrets.signing(&acme, t0()).await.unwrap();
        assert!(first.previous().is_none());
        let again = secrets.signing(&acme, t0()).await.unwrap();
        assert_eq!(again.current(), first.current());
        let other = secrets.signing(&tenant("other"), t0()).await.unwrap();
        assert_ne!(other.current(), first.current());

        let grace = Duration::from_secs(3600);
        let rotated = secrets.rotate(&acme, t0(), grace).await.unwrap();
        assert_ne!(rotated.current(), first.current());
        assert_eq!(rotated.previous(), Some(first.current()));
        assert_eq!(rotated.previous_until(), Some(t0() + grace));
        let read = secrets
            .signing(&acme, t0() + Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(read.current(), rotated.current());
        assert_eq!(read.previous(), Some(first.current()));
        let expired = secrets.signing(&acme, t0() + grace).await.unwrap();
        assert_eq!(expired.previous(), None);
        // A second rotation within the grace period drops the first secret.
        let twice = secrets
            .rotate(&acme, t0() + Duration::from_secs(20), grace)
            .await
            .unwrap();
        assert_eq!(twice.previous(), Some(rotated.current()));
        // A first rotation makes the first secret, with no previous one.
        let fresh = secrets.rotate(&tenant("new"), t0(), grace).await.unwrap();
        assert!(fresh.previous().is_none());
        assert_eq!(
            secrets
                .signing(&tenant("new"), t0())
                .await
                .unwrap()
                .current(),
            fresh.current()
        );
        assert_eq!(
            secrets
                .signing(&tenant("other"), t0())
                .await
                .unwrap()
                .current(),
            other.current()
        );
    }

    /// Counts the reads that reach the store.
    struct Counting {
        inner: MemoryTenantSecrets,
        reads: AtomicUsize,
    }

    #[async_trait]
    impl TenantSecrets for Counting {
        async fn signing(
            &self,
            tenant: &TenantId,
            now: OffsetDateTime,
        ) -> Result<TenantSigning, SecretsError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.inner.signing(tenant, now).await
        }

        async fn rotate(
            &self,
            tenant: &TenantId,
            now: OffsetDateTime,
            grace: Duration,
        ) -> Result<TenantSigning, SecretsError> {
            self.inner.rotate(tenant, now, grace).await
        }
    }

    /// Reads the store, then takes a while to answer.
    struct Slow(MemoryTenantSecrets);

    #[async_trait]
    impl TenantSecrets for Slow {
        async fn signing(
            &self,
            tenant: &TenantId,
            now: OffsetDateTime,
        ) -> Result<TenantSigning, SecretsError> {
            let read = self.0.signing(tenant, now).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            read
        }

        async fn rotate(
            &self,
            tenant: &TenantId,
            now: OffsetDateTime,
            grace: Duration,
        ) -> Result<TenantSigning, SecretsError> {
            self.0.rotate(tenant, now, grace).await
        }
    }

    #[tokio::test]
    async fn a_read_under_way_during_a_rotation_does_not_put_the_old_secret_back() {
        let cache = Arc::new(CachedTenantSecrets::new(Arc::new(Slow(
            MemoryTenantSecrets::new(),
        ))));
        let acme = tenant("acme");
        let old = cache.signing(&acme, t0()).await.unwrap();
        cache.lock().clear();
        let reading = tokio::spawn({
            let cache = Arc::clone(&cache);
            let acme = acme.clone();
            async move { cache.signing(&acme, t0()).await.unwrap() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let rotated = cache
            .rotate(&acme, t0(), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(reading.await.unwrap().current(), old.current());
        assert_eq!(
            cache.signing(&acme, t0()).await.unwrap().current(),
            rotated.current()
        );
    }

    #[tokio::test]
    async fn the_cache_reads_once_per_ttl_sees_rotations_and_stays_bounded() {
        let store = Arc::new(Counting {
            inner: MemoryTenantSecrets::new(),
            reads: AtomicUsize::new(0),
        });
        let ttl = Duration::from_millis(200);
        let cache = CachedTenantSecrets::with_limits(store.clone(), ttl, 3);
        let acme = tenant("acme");
        let first = cache.signing(&acme, t0()).await.unwrap();
        for _ in 0..10 {
            assert_eq!(
                cache.signing(&acme, t0()).await.unwrap().current(),
                first.current()
            );
        }
        assert_eq!(store.reads.load(Ordering::SeqCst), 1);

        // A rotation through the cache is seen at once; one elsewhere within the TTL.
        let rotated = cache
            .rotate(&acme, t0(), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            cache.signing(&acme, t0()).await.unwrap().current(),
            rotated.current()
        );
        let elsewhere = store
            .rotate(&acme, t0(), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            cache.signing(&acme, t0()).await.unwrap().current(),
            rotated.current()
        );
        tokio::time::sleep(ttl).await;
        let seen = cache.signing(&acme, t0()).await.unwrap();
        assert_eq!(seen.current(), elsewhere.current());
        assert_eq!(seen.previous(), Some(rotated.current()));

        // Bounded: a fourth tenant with three fresh entries clears the cache.
        for name in ["b", "c"] {
            cache.signing(&tenant(name), t0()).await.unwrap();
        }
        assert_eq!(cache.len(), 3);
        cache.signing(&tenant("d"), t0()).await.unwrap();
        assert_eq!(cache.len(), 1);
        // With expired entries, only those are dropped.
        cache.signing(&tenant("e"), t0()).await.unwrap();
        tokio::time::sleep(ttl).await;
        cache.signing(&tenant("f"), t0()).await.unwrap();
        cache.signing(&tenant("g"), t0()).await.unwrap();
        assert_eq!(cache.len(), 2, "{cache:?}");
    }
}
