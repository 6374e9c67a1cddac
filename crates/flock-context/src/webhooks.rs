//! `Webhooks`: the one owner of every live workflow's webhook, from the request that asks for it
//! to the idle workflow that no longer needs it.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use flock_models::{Artifact, NewDelivery, RequestedWebhook, WebhookConfig, WebhookHeaders};
use uuid::Uuid;

use crate::ssrf::{Refused, SsrfGuard};

/// Every live workflow's webhook, and the rules a webhook must pass to become one.
///
/// One `Webhooks` serves a whole server; share it in an `Arc`. A workflow's webhook goes
/// through it from request to removal:
///
/// 1. [`Webhooks::publish`] (or [`Webhooks::register`]) checks the requested webhooks (the SSRF
///    guard refuses a literal address or `localhost` it does not allow; without a secret of its
///    own the tenant's secret signs), registers them under a fresh correlation id and, for
///    `publish`, runs the workflow's first publish, forgetting the webhook again if that fails;
/// 2. [`Webhooks::deliveries_for`] hands out the workflow's next sequence number and the
///    [`NewDelivery`]s announcing each of its artifacts to each of its webhooks (the delivery component calls it in the
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

/// One live workflow's webhooks (where its deliveries go, what signs them, which types they
/// want, their headers and order) and the counter that numbers its artifacts, shared by all of
/// them.
struct Live {
    hooks: Vec<(WebhookConfig, Option<Arc<WebhookHeaders>>)>,
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
    field: String,
    refused: Refused,
}

impl AddressRefused {
    /// The request's field that held the URL (`webhook.url`, `webhook_url`, `webhooks[2].url`).
    pub fn field(&self) -> &str {
        &self.field
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
    /// workflow's artifacts get deliveries from now on ([`Webhooks::deliveries_for`]) until it
    /// is [forgotten](Webhooks::forget). [`Webhooks::publish`] is this plus the first publish
    /// and the rollback.
    ///
    /// # Errors
    /// [`AddressRefused`] when the guard refuses the URL's literal address (names are checked
    /// where the delivery client resolves them); nothing is registered.
    pub fn register(&self, requested: RequestedWebhook) -> Result<Uuid, AddressRefused> {
        self.register_all(vec![requested])
    }

    /// [`Webhooks::register`] for a workflow with several webhooks (a request's `webhooks`):
    /// each gets its own deliveries, in the order given (the index is each delivery's
    /// `webhook`). An empty list registers nothing and answers a fresh id.
    ///
    /// # Errors
    /// [`AddressRefused`] for the first webhook the guard refuses; nothing is registered.
    pub fn register_all(&self, requested: Vec<RequestedWebhook>) -> Result<Uuid, AddressRefused> {
        let correlation_id = Uuid::now_v7();
        if requested.is_empty() {
            return Ok(correlation_id);
        }
        let mut hooks = Vec::with_capacity(requested.len());
        for RequestedWebhook { config, form } in requested {
            self.guard
                .check_literal(&config.url)
                .map_err(|refused| AddressRefused {
                    field: form.url_field(),
                    refused,
                })?;
            let headers = (!config.headers.is_empty()).then(|| Arc::new(config.headers.clone()));
            hooks.push((config, headers));
        }
        let live = Live {
            hooks,
            sequence: AtomicU64::new(0),
        };
        self.live
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(correlation_id, Arc::new(live));
        Ok(correlation_id)
    }

    /// Starts a workflow: registers its webhooks, if it asked for any, under a fresh correlation
    /// id, then runs `publish` with that id (the workflow's first publish) and answers the id
    /// with what `publish` returned. When `publish` fails, the webhook is forgotten again, so a
    /// workflow that never started leaves nothing behind.
    ///
    /// # Errors
    /// [`StartError::AddressRefused`] before anything is registered or published;
    /// [`StartError::Publish`] with `publish`'s own error.
    pub async fn publish<T, E, F, Fut>(
        &self,
        requested: Vec<RequestedWebhook>,
        publish: F,
    ) -> Result<(Uuid, T), StartError<E>>
    where
        F: FnOnce(Uuid) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let registered = !requested.is_empty();
        let correlation_id = self.register_all(requested)?;
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

    /// The deliveries announcing `artifact` to its workflow's webhooks, each numbered with the
    /// workflow's next sequence number (the same on every webhook) and its body rendered once;
    /// none when the workflow has no webhook registered, or when each webhook's `types` leave
    /// this artifact out (its number is used all the same). Call it once per artifact, in the
    /// order the artifacts are stored.
    pub fn deliveries_for(&self, artifact: &Artifact) -> Vec<NewDelivery> {
        let Some(live) = self
            .live
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&artifact.correlation_id)
            .cloned()
        else {
            return Vec::new();
        };
        // The number is the artifact's place in its workflow, taken whether or not a webhook
        // wants it: a filtered webhook sees gaps, never a renumbering.
        let sequence = live.next_sequence();
        let mut rendered: Option<NewDelivery> = None;
        let mut out = Vec::new();
        for (index, (config, headers)) in live.hooks.iter().enumerate() {
            if !config.wants(&artifact.type_name) {
                continue;
            }
            // The body is the same bytes on every webhook: render it once.
            let base = rendered.get_or_insert_with(|| {
                NewDelivery::new(artifact, sequence, config.url.clone(), None)
            });
            out.push(NewDelivery {
                id: if out.is_empty() {
                    base.id
                } else {
                    Uuid::now_v7()
                },
                url: config.url.clone(),
                secret: config.secret.clone(),
                webhook: u8::try_from(index).unwrap_or(u8::MAX),
                ordered: config.ordered,
                headers: headers.clone(),
                ..base.clone()
            });
        }
        out
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
