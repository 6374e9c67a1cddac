//! The blackboard's storage: a trait that durable backends implement, and the in-memory store.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use bytes::Bytes;
use flock_models::{Artifact, NewDelivery, Tags, TenantId, TypeName, WebhookArtifact};
use time::OffsetDateTime;
use uuid::Uuid;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Deliveries were given to a store that has no outbox to keep them in. Stores that hold
    /// webhook deliveries (the delivery crate's, the durable ones) never return this.
    #[error("this store has no outbox for webhook deliveries; use a store that has one")]
    NoOutbox,
    /// An artifact with this id is already stored.
    #[error("artifact {0} is already stored")]
    Duplicate(Uuid),
    /// The backend failed: `message` says what failed, `source` (when there is one) is the
    /// backend's own error, such as the database's. Neither ever holds secrets.
    #[error("storage backend failed: {message}")]
    Backend {
        /// What failed.
        message: String,
        /// Why: the backend's own error.
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
}

impl StoreError {
    /// A backend failure with no error of its own behind it.
    pub fn backend(message: impl Into<String>) -> StoreError {
        StoreError::Backend {
            message: message.into(),
            source: None,
        }
    }

    /// A backend failure caused by `source`.
    pub fn backend_because(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> StoreError {
        StoreError::Backend {
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }
}

/// Which artifacts to list. Every set criterion must hold; results come in publication order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactQuery {
    /// Any of these types; empty for all.
    pub type_names: Vec<TypeName>,
    /// Produced by this agent (or `external`).
    pub produced_by: Option<String>,
    /// Owned by this tenant; every tenant's when `None` (the API always names the caller's).
    pub tenant: Option<TenantId>,
    /// In this workflow.
    pub correlation_id: Option<Uuid>,
    /// Carrying this tag.
    pub tag: Option<String>,
    /// Created at or after this time.
    pub from: Option<OffsetDateTime>,
    /// Created at or before this time.
    pub to: Option<OffsetDateTime>,
    /// At most this many items.
    pub limit: usize,
    /// After skipping this many matches.
    pub offset: usize,
    /// Only matches after this place in publication order: the [`Page::next`] of the page
    /// before (keyset pagination, which costs the same on every page).
    pub after: Option<u64>,
    /// Count matches only up to this many ([`Page::total`] then says at most this); exact
    /// when `None`. Counting every match of a large table on every page is what this bounds.
    pub count_limit: Option<u64>,
    /// The newest first: pages go backwards in publication order, and `after` is then a place
    /// the page ends before (a page's [`Page::next`] still names the next page).
    pub newest_first: bool,
}

impl Default for ArtifactQuery {
    fn default() -> Self {
        ArtifactQuery {
            type_names: Vec::new(),
            produced_by: None,
            tenant: None,
            correlation_id: None,
            tag: None,
            from: None,
            to: None,
            limit: 100,
            offset: 0,
            after: None,
            count_limit: None,
            newest_first: false,
        }
    }
}

impl ArtifactQuery {
    /// Every artifact of one workflow, in publication order.
    pub fn correlation(correlation_id: Uuid) -> Self {
        ArtifactQuery {
            correlation_id: Some(correlation_id),
            limit: usize::MAX,
            ..Self::default()
        }
    }

    /// Whether `artifact` meets every criterion (limit and offset aside).
    pub fn matches(&self, artifact: &Artifact) -> bool {
        self.matches_fields(&Fields {
            type_name: &artifact.type_name,
            produced_by: &artifact.produced_by,
            tenant: &artifact.tenant,
            correlation_id: artifact.correlation_id,
            tags: &artifact.tags,
            created_at: artifact.created_at,
        })
    }

    fn matches_fields(&self, artifact: &Fields<'_>) -> bool {
        (self.type_names.is_empty() || self.type_names.contains(artifact.type_name))
            && self
                .produced_by
                .as_ref()
                .is_none_or(|p| p == artifact.produced_by)
            && self.tenant.as_ref().is_none_or(|t| t == artifact.tenant)
            && self
                .correlation_id
                .is_none_or(|c| c == artifact.correlation_id)
            && self.tag.as_ref().is_none_or(|t| artifact.tags.contains(t))
            && self.from.is_none_or(|from| artifact.created_at >= from)
            && self.to.is_none_or(|to| artifact.created_at <= to)
    }
}

/// What a query filters on, borrowed from an artifact or from a stored record.
struct Fields<'a> {
    type_name: &'a TypeName,
    produced_by: &'a str,
    tenant: &'a TenantId,
    correlation_id: Uuid,
    tags: &'a Tags,
    created_at: OffsetDateTime,
}

/// One page of results and how many matched in all.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// How many items match the query, across all pages and whatever its `after` (at most its
    /// `count_limit`).
    pub total: u64,
    /// Where the next page starts (its query's `after`) when more matches follow this page.
    pub next: Option<u64>,
}

impl<T> Page<T> {
    /// An empty page.
    pub fn empty() -> Self {
        Page {
            items: Vec::new(),
            total: 0,
            next: None,
        }
    }
}

/// Where the blackboard keeps artifacts.
///
/// [`ArtifactStore::publish`] writes an artifact together with the webhook deliveries that
/// announce it, atomically: a durable store does both in one transaction (the transactional
/// outbox), so a stored artifact always has its deliveries and no delivery exists for an artifact
/// that was not stored.
#[async_trait]
pub trait ArtifactStore: Send + Sync + 'static {
    /// Stores `artifact` and enqueues `deliveries` with it, all or nothing:
    /// [`ArtifactStore::publish_all`] of one artifact.
    ///
    /// # Errors
    /// As [`ArtifactStore::publish_all`].
    async fn publish(
        &self,
        artifact: &Artifact,
        deliveries: Vec<NewDelivery>,
    ) -> Result<(), StoreError> {
        self.publish_all(std::slice::from_ref(artifact), deliveries)
            .await
    }

    /// Stores `artifacts`, in the order given, and enqueues `deliveries` (theirs) with them,
    /// all or nothing: a durable store writes them in one transaction.
    ///
    /// # Errors
    /// [`StoreError::NoOutbox`] when `deliveries` is not empty and this store cannot keep them;
    /// [`StoreError::Duplicate`] for an id already stored (or given twice);
    /// [`StoreError::Backend`] otherwise. Nothing is stored or enqueued.
    async fn publish_all(
        &self,
        artifacts: &[Artifact],
        deliveries: Vec<NewDelivery>,
    ) -> Result<(), StoreError>;

    /// The artifact with this id.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the backend fails.
    async fn get(&self, id: Uuid) -> Result<Option<Artifact>, StoreError>;

    /// The artifacts matching `query`, in publication order, with the total count.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the backend fails.
    async fn query(&self, query: &ArtifactQuery) -> Result<Page<Artifact>, StoreError>;
}

/// Artifacts in memory, indexed by id, correlation and type. It keeps no deliveries: given any,
/// [`ArtifactStore::publish`] answers [`StoreError::NoOutbox`] (the delivery crate wraps it with
/// an outbox).
///
/// Each artifact is kept as the fields queries filter on plus its JSON as a webhook carries it
/// ([`WebhookArtifact::render`]); reading one parses that JSON. A store that also keeps the
/// artifact's webhook body can hand over the artifact's bytes within it
/// ([`MemoryStore::insert_rendered`]), so the payload is held once, not twice.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: RwLock<Indexed>,
}

/// One stored artifact: what queries filter on, and the rest as JSON.
#[derive(Debug)]
struct Stored {
    tenant: TenantId,
    correlation_id: Uuid,
    type_name: TypeName,
    produced_by: String,
    tags: Tags,
    created_at: OffsetDateTime,
    /// [`WebhookArtifact::render`] of the artifact, possibly a slice of a webhook body.
    json: Bytes,
}

impl Stored {
    fn fields(&self) -> Fields<'_> {
        Fields {
            type_name: &self.type_name,
            produced_by: &self.produced_by,
            tenant: &self.tenant,
            correlation_id: self.correlation_id,
            tags: &self.tags,
            created_at: self.created_at,
        }
    }

    fn artifact(&self) -> Result<Artifact, StoreError> {
        serde_json::from_slice::<WebhookArtifact>(&self.json)
            .map(|a| a.into_artifact(self.correlation_id, self.tenant.clone()))
            .map_err(|e| StoreError::backend_because("a stored artifact does not parse", e))
    }
}

/// The artifacts by place in publication order (from 1, never reused), and indexes of places.
#[derive(Debug, Default)]
struct Indexed {
    artifacts: BTreeMap<u64, Stored>,
    last: u64,
    by_id: HashMap<Uuid, u64>,
    by_correlation: HashMap<Uuid, Vec<u64>>,
    by_type: HashMap<TypeName, Vec<u64>>,
}

impl Indexed {
    /// Appends an artifact whose id is not stored yet.
    fn push(&mut self, artifact: &Artifact, json: Bytes) {
        self.last += 1;
        let index = self.last;
        self.artifacts.insert(
            index,
            Stored {
                tenant: artifact.tenant.clone(),
                correlation_id: artifact.correlation_id,
                type_name: artifact.type_name.clone(),
                produced_by: artifact.produced_by.clone(),
                tags: artifact.tags.clone(),
                created_at: artifact.created_at,
                json,
            },
        );
        self.by_id.insert(artifact.id, index);
        self.by_correlation
            .entry(artifact.correlation_id)
            .or_default()
            .push(index);
        self.by_type
            .entry(artifact.type_name.clone())
            .or_default()
            .push(index);
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores an artifact (no deliveries).
    ///
    /// # Errors
    /// [`StoreError::Duplicate`] for an id already stored.
    pub fn insert(&self, artifact: &Artifact) -> Result<(), StoreError> {
        self.insert_rendered(artifact, Bytes::from(WebhookArtifact::render(artifact)))
    }

    /// Stores an artifact whose JSON is already rendered: `json` must be
    /// [`WebhookArtifact::render`] of `artifact`, for example the span of its webhook body that
    /// [`WebhookPayload::artifact_span`](flock_models::WebhookPayload::artifact_span) finds
    /// (then the body's bytes are shared, not copied). Debug builds check that it is.
    ///
    /// # Errors
    /// [`StoreError::Duplicate`] for an id already stored.
    pub fn insert_rendered(&self, artifact: &Artifact, json: Bytes) -> Result<(), StoreError> {
        self.insert_all_rendered(vec![(artifact, json)])
    }

    /// Stores several artifacts whose JSON is already rendered (as for
    /// [`MemoryStore::insert_rendered`]), in the order given, all or none.
    ///
    /// # Errors
    /// [`StoreError::Duplicate`] for an id already stored or given twice; nothing is stored.
    pub fn insert_all_rendered(&self, items: Vec<(&Artifact, Bytes)>) -> Result<(), StoreError> {
        for (artifact, json) in &items {
            debug_assert_eq!(
                json.as_ref(),
                WebhookArtifact::render(artifact).as_slice(),
                "the JSON handed to insert_rendered is the artifact's"
            );
        }
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let mut seen = std::collections::HashSet::with_capacity(items.len());
        if let Some((dup, _)) = items
            .iter()
            .find(|(a, _)| inner.by_id.contains_key(&a.id) || !seen.insert(a.id))
        {
            return Err(StoreError::Duplicate(dup.id));
        }
        for (artifact, json) in items {
            inner.push(artifact, json);
        }
        Ok(())
    }

    /// Deletes the workflows whose newest artifact was created before `before` and for which
    /// `busy` says no, at most `limit` of them, oldest first; answers their correlation ids.
    /// Only workflows with an artifact before `before` among the oldest `limit * 8` artifacts
    /// are looked at, so one call costs the same however many artifacts are kept.
    pub fn prune_workflows(
        &self,
        before: OffsetDateTime,
        limit: usize,
        busy: impl Fn(Uuid) -> bool,
    ) -> Vec<Uuid> {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let (mut candidates, mut seen) = (Vec::new(), std::collections::HashSet::new());
        for stored in inner.artifacts.values().take(limit.saturating_mul(8)) {
            if stored.created_at >= before || candidates.len() >= limit {
                break;
            }
            if seen.insert(stored.correlation_id) {
                candidates.push(stored.correlation_id);
            }
        }
        let finished = |inner: &Indexed, workflow: &Uuid| {
            let places = inner.by_correlation.get(workflow);
            let newest = places
                .and_then(|p| p.last())
                .and_then(|p| inner.artifacts.get(p));
            newest.is_some_and(|n| n.created_at < before) && !busy(*workflow)
        };
        let gone: Vec<Uuid> = (candidates.into_iter())
            .filter(|w| finished(&inner, w))
            .collect();
        let mut types = std::collections::HashSet::new();
        for workflow in &gone {
            for place in inner.by_correlation.remove(workflow).unwrap_or_default() {
                if let Some(stored) = inner.artifacts.remove(&place) {
                    types.insert(stored.type_name);
                }
            }
        }
        if !gone.is_empty() {
            let Indexed {
                artifacts,
                by_id,
                by_type,
                ..
            } = &mut *inner;
            by_id.retain(|_, place| artifacts.contains_key(place));
            for type_name in types {
                if let Some(places) = by_type.get_mut(&type_name) {
                    places.retain(|place| artifacts.contains_key(place));
                    if places.is_empty() {
                        by_type.remove(&type_name);
                    }
                }
            }
        }
        gone
    }

    /// How many artifacts are stored.
    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .artifacts
            .len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn run_query(&self, query: &ArtifactQuery) -> Result<Page<Artifact>, StoreError> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        // Start from the narrowest index the query allows, in publication order.
        let candidates: Vec<u64> = if let Some(c) = query.correlation_id {
            inner.by_correlation.get(&c).cloned().unwrap_or_default()
        } else if !query.type_names.is_empty() {
            let mut merged: Vec<u64> = query
                .type_names
                .iter()
                .filter_map(|t| inner.by_type.get(t))
                .flatten()
                .copied()
                .collect();
            merged.sort_unstable();
            merged.dedup();
            merged
        } else {
            inner.artifacts.keys().copied().collect()
        };
        let mut candidates = candidates;
        if query.newest_first {
            candidates.reverse();
        }
        // Places start at 1, so `after: 0` is the start (going forwards), and a place past
        // every place is the start going backwards.
        let before_cursor = |place: u64| match (query.newest_first, query.after) {
            (false, after) => place <= after.unwrap_or(0),
            (true, Some(after)) => place >= after,
            (true, None) => false,
        };
        let count_limit = query.count_limit.unwrap_or(u64::MAX);
        let (mut total, mut skipped) = (0u64, 0usize);
        let (mut items, mut next, mut last) = (Vec::new(), None, 0u64);
        let stored_at = |place: u64| inner.artifacts.get(&place).map(|s| (place, s));
        for (place, stored) in candidates.into_iter().filter_map(stored_at) {
            if !query.matches_fields(&stored.fields()) {
                continue;
            }
            total = (total + 1).min(count_limit);
            if before_cursor(place) {
                continue;
            }
            if skipped < query.offset {
                skipped += 1;
            } else if items.len() < query.limit {
                items.push(stored.artifact()?);
                last = place;
            } else if next.is_none() && query.limit > 0 {
                next = Some(last);
            }
            if next.is_some() && total >= count_limit {
                break;
            }
        }
        Ok(Page { items, total, next })
    }
}

#[async_trait]
impl ArtifactStore for MemoryStore {
    async fn publish_all(
        &self,
        artifacts: &[Artifact],
        deliveries: Vec<NewDelivery>,
    ) -> Result<(), StoreError> {
        if !deliveries.is_empty() {
            return Err(StoreError::NoOutbox);
        }
        self.insert_all_rendered(
            artifacts
                .iter()
                .map(|a| (a, Bytes::from(WebhookArtifact::render(a))))
                .collect(),
        )
    }

    async fn get(&self, id: Uuid) -> Result<Option<Artifact>, StoreError> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner
            .by_id
            .get(&id)
            .and_then(|place| inner.artifacts.get(place))
            .map(Stored::artifact)
            .transpose()
    }

    async fn query(&self, query: &ArtifactQuery) -> Result<Page<Artifact>, StoreError> {
        self.run_query(query)
    }
}
