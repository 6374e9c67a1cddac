//! `Webhooks`: the one owner of every live workflow's webhook, from the request that asks for it
//! to the idle workflow that no longer needs it.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use flock_models::{Artifact, NewDelivery, RequestedWebhook, Secret, TypeName, WebhookUrl};
use uuid::Uuid;

use crate::ssrf::{Refused, SsrfGuard};

/// Every live workflow's webhook, and the rules a webhook must pass to become one.
///
/// One `Webhooks` serves a whole server; share it in an `Arc`. A workflow's webhook goes
/// through it from request to removal:
///
/// 1. [`Webhooks::publish`] (or [`Webhooks::register`]) checks the requested webhook (the SSRF
///    guard refuses a literal address or `localhost` it does not allow; without a secret of its
///    own the server's default secret signs), registers it under a fresh correlation id and, for
///    `publish`, runs the workflow's first publish, forgetting the webhook again if that fails;
/// 2. [`Webhooks::delivery_for`] hands out the workflow's next sequence number and the
///    [`NewDelivery`] announcing each of its artifacts (the delivery component calls it in the
///    orchestrator's `before_store` hook, under the workflow's publish lock, so numbers follow
///    store order);
/// 3. [`Webhooks::forget`] drops the workflow once it is idle (the component's
///    `on_correlation_idle` hook): every artifact it will ever have has been announced.
///
/// `Debug` shows the number of live workflows, never their webhooks.
pub struct Webhooks {
    guard: SsrfGuard,
    live: RwLock<HashMap<Uuid, Arc<Live>>>,
}

/// One live workflow's webhook: where its deliveries go, what signs them, and the counter that
/// numbers its artifacts.
struct Live {
    url: WebhookUrl,
    secret: Option<Secret>,
    /// The artifact types delivered; every type when `None`.
    types: Option<Vec<TypeName>>,
    /// The last sequence number handed out; 0 before the first.
    sequence: AtomicU64,
}

impl Live {
    /// The next sequence number: 1 first, then 2, 3, ...; each number exactly once, whatever
    /// the number of threads asking.
    fn next_sequence(&self) -> u64 {
        self.sequence.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// A webhook refused because the SSRF guard refuses its literal address (or `localhost`),
/// naming the field the request gave the URL in (`webhook.url` or `webhook_url`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: webhooks may not be sent there: {refused}")]
pub struct AddressRefused {
    field: &'static str,
    refused: Refused,
}

impl AddressRefused {
    /// The request's field that held the URL.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// What the guard refused, and why.
    pub fn refused(&self) -> &Refused {
        &self.refused
    }
}

/// Why [`Webhooks::publish`] did not start a workflow.
#[derive(Debug, thiserror::Error)]
pub enum StartError<E> {
    /// The webhook was refused; nothing was registered or published.
    #[error(transparent)]
    AddressRefused(#[from] AddressRefused),
    /// The publish failed; the webhook was forgotten again.
    #[error(transparent)]
    Publish(E),
}

impl Webhooks {
    /// An owner enforcing `guard` on submitted webhooks. A webhook without a secret of its own
    /// gets deliveries without one; the sender signs those with their tenant's secrets, when
    /// it has them.
    pub fn new(guard: SsrfGuard) -> Self {
        Webhooks {
            guard,
            live: RwLock::default(),
        }
    }

    /// The SSRF guard submitted webhooks must pass.
    pub fn guard(&self) -> &SsrfGuard {
        &self.guard
    }

    /// Checks `requested` and registers it under a fresh correlation id, which it returns: the
    /// workflow's artifacts get deliveries from now on ([`Webhooks::delivery_for`]) until it is
    /// [forgotten](Webhooks::forget). [`Webhooks::publish`] is this plus the first publish and
    /// the rollback.
    ///
    /// # Errors
    /// [`AddressRefused`] when the guard refuses the URL's literal address (names are checked
    /// where the delivery client resolves them); nothing is registered.
    pub fn register(&self, requested: RequestedWebhook) -> Result<Uuid, AddressRefused> {
        let RequestedWebhook { config, form } = requested;
        self.guard
            .check_literal(&config.url)
            .map_err(|refused| AddressRefused {
                field: form.url_field(),
                refused,
            })?;
        let live = Live {
            url: config.url,
            secret: config.secret,
            types: config.types,
            sequence: AtomicU64::new(0),
        };
        let correlation_id = Uuid::now_v7();
        self.live
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(correlation_id, Arc::new(live));
        Ok(correlation_id)
    }

    /// Starts a workflow: registers its webhook, if it asked for one, under a fresh correlation
    /// id, then runs `publish` with that id (the workflow's first publish) and answers the id
    /// with what `publish` returned. When `publish` fails, the webhook is forgotten again, so a
    /// workflow that never started leaves nothing behind.
    ///
    /// # Errors
    /// [`StartError::AddressRefused`] before anything is registered or published;
    /// [`StartError::Publish`] with `publish`'s own error.
    pub async fn publish<T, E, F, Fut>(
        &self,
        requested: Option<RequestedWebhook>,
        publish: F,
    ) -> Result<(Uuid, T), StartError<E>>
    where
        F: FnOnce(Uuid) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let (correlation_id, registered) = match requested {
            Some(requested) => (self.register(requested)?, true),
            None => (Uuid::now_v7(), false),
        };
        match publish(correlation_id).await {
            Ok(published) => Ok((correlation_id, published)),
            Err(err) => {
                if registered {
                    self.forget(correlation_id);
                }
                Err(StartError::Publish(err))
            }
        }
    }

    /// The delivery announcing `artifact` to its workflow's webhook, numbered with the
    /// workflow's next sequence number and its body rendered now; `None` when the workflow has
    /// no webhook registered, or its webhook's `types` leave this artifact out (its number is
    /// used all the same). Call it once per artifact, in the order the artifacts are stored.
    pub fn delivery_for(&self, artifact: &Artifact) -> Option<NewDelivery> {
        let live = self
            .live
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&artifact.correlation_id)
            .cloned()?;
        // The number is the artifact's place in its workflow, taken whether or not this
        // webhook wants it: a filtered webhook sees gaps, never a renumbering.
        let sequence = live.next_sequence();
        let wanted = live
            .types
            .as_ref()
            .is_none_or(|t| t.contains(&artifact.type_name));
        wanted.then(|| NewDelivery::new(artifact, sequence, live.url.clone(), live.secret.clone()))
    }

    /// Forgets workflow `correlation_id`'s webhook: its later artifacts, if any, get no
    /// delivery. Returns whether it was registered.
    pub fn forget(&self, correlation_id: Uuid) -> bool {
        self.live
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&correlation_id)
            .is_some()
    }

    /// Whether workflow `correlation_id` has a webhook registered.
    pub fn is_registered(&self, correlation_id: Uuid) -> bool {
        self.live
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&correlation_id)
    }

    /// How many workflows have a webhook registered.
    pub fn len(&self) -> usize {
        self.live
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether none has.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhooks")
            .field("guard", &self.guard)
            .field("workflows", &self.len())
            .finish()
    }
}
