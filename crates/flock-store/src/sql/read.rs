//! The reads, on either database: artifacts by id and by query, deliveries with their
//! attempts, the next due time and the counts; and the rows they get, decoded. A read of
//! several statements runs in one read transaction, so it sees one snapshot.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use flock_delivery::{
    AttemptView, DeliveryState, DeliveryView, FailedQuery, HeldDeliveries, HoldReason, OutboxCounts,
};
use flock_models::{Artifact, TenantId, WebhookUrl};
use flock_orchestrator::{ArtifactQuery, Page};
use sqlx::{Arguments as _, ColumnIndex, Database, Executor, IntoArguments, Row as _};
use time::OffsetDateTime;
use uuid::Uuid;

use super::holds::held_statement;
use super::rows::{
    ArtifactFields, bad, ceil_micros, int, parse_error_kind, parse_failure, parse_state, to_u32,
    to_u64,
};
use super::{Dialect, Sql, Value};
use crate::durable::Reads;

mod failed;

#[async_trait]
impl<D: Dialect> Reads for Sql<D>
where
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    for<'q> D::Arguments<'q>: IntoArguments<'q, D>,
    for<'r> &'r str: ColumnIndex<D::Row>,
    usize: ColumnIndex<D::Row>,
    Uuid: Value<D>,
    i64: Value<D>,
    String: Value<D>,
{
    async fn get(self: Arc<Self>, id: Uuid) -> Result<Option<Artifact>, sqlx::Error> {
        let select = format!("{} WHERE id = $1", artifacts::<D>());
        let row = sqlx::query(&select)
            .bind(id)
            .fetch_optional(&self.readers)
            .await?;
        row.map(|row| Self::artifact_row(&row)).transpose()
    }

    /// A page of the artifacts `query` selects, in publication order, and how many it selects
    /// (counted up to its `count_limit`). Places in publication order are `position`s, so a
    /// page after a cursor is an index range scan whatever the filters: each filter's index
    /// ends in `position`.
    async fn query(self: Arc<Self>, query: ArtifactQuery) -> Result<Page<Artifact>, sqlx::Error> {
        let mut tx = self.readers.begin().await?;
        if let Some(snapshot) = D::SNAPSHOT {
            sqlx::query(snapshot).execute(&mut *tx).await?;
        }
        let mut count = String::from("SELECT count(*) FROM (SELECT 1 FROM artifacts");
        let mut args = D::Arguments::default();
        filter::<D>(&mut count, &mut args, &query)?;
        if let Some(limit) = query.count_limit {
            bind(&mut count, &mut args, " LIMIT ", int(limit))?;
        }
        count.push_str(") AS matches");
        let total: i64 = sqlx::query_scalar_with(&count, args)
            .fetch_one(&mut *tx)
            .await?;
        let total = to_u64(total, "count")?;
        let mut items = Vec::new();
        let mut next = None;
        // An exact count says when the offset is past every match; a capped one cannot.
        if query.limit > 0 && (query.count_limit.is_some() || (query.offset as u64) < total) {
            let mut select = artifacts::<D>();
            let mut args = D::Arguments::default();
            filter::<D>(&mut select, &mut args, &query)?;
            if let Some(after) = query.after {
                let cursor = if query.newest_first {
                    " AND position < "
                } else {
                    " AND position > "
                };
                bind(&mut select, &mut args, cursor, int(after))?;
            }
            // One more than the page, to know whether a next page exists.
            let limit = int(query.limit.saturating_add(1));
            let order = if query.newest_first {
                " ORDER BY position DESC LIMIT "
            } else {
                " ORDER BY position LIMIT "
            };
            bind(&mut select, &mut args, order, limit)?;
            bind(&mut select, &mut args, " OFFSET ", int(query.offset))?;
            let rows = sqlx::query_with(&select, args).fetch_all(&mut *tx).await?;
            let mut last = 0;
            for row in &rows {
                if items.len() == query.limit {
                    next = Some(last);
                    break;
                }
                last = to_u64(row.try_get("position")?, "position")?;
                items.push(Self::artifact_row(row)?);
            }
        }
        tx.commit().await?;
        Ok(Page { items, total, next })
    }

    async fn views(
        self: Arc<Self>,
        column: &'static str,
        value: Uuid,
    ) -> Result<Vec<DeliveryView>, sqlx::Error> {
        let mut tx = self.readers.begin().await?;
        if let Some(snapshot) = D::SNAPSHOT {
            sqlx::query(snapshot).execute(&mut *tx).await?;
        }
        let select = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE {column} = $1 \
             ORDER BY sequence, webhook, created_at"
        );
        let deliveries = sqlx::query(&select).bind(value).fetch_all(&mut *tx).await?;
        let select = format!(
            "SELECT a.delivery_id, a.number, a.started_at, a.status_code, a.error_kind, a.error, \
             a.duration_ms FROM attempts AS a JOIN deliveries AS d ON d.id = a.delivery_id \
             WHERE d.{column} = $1 ORDER BY a.number"
        );
        let attempts = sqlx::query(&select).bind(value).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let mut by_delivery: HashMap<Uuid, Vec<AttemptView>> = HashMap::new();
        for row in &attempts {
            let (id, attempt) = Self::attempt_row(row)?;
            by_delivery.entry(id).or_default().push(attempt);
        }
        let mut views = Vec::with_capacity(deliveries.len());
        for row in &deliveries {
            let mut view = Self::delivery_row(row)?;
            view.attempts = by_delivery.remove(&view.id).unwrap_or_default();
            views.push(view);
        }
        Ok(views)
    }

    async fn failed(self: Arc<Self>, query: FailedQuery) -> Result<Vec<DeliveryView>, sqlx::Error> {
        self.failed_views(&query).await
    }

    /// When the earliest pending delivery is due (or its lease expires).
    async fn next_due(self: Arc<Self>) -> Result<Option<OffsetDateTime>, sqlx::Error> {
        let due: Option<D::Time> =
            sqlx::query_scalar("SELECT min(due_at) FROM deliveries WHERE state = 'pending'")
                .fetch_one(&self.readers)
                .await?;
        Ok(due.map(D::from_time).transpose()?)
    }

    /// Pending deliveries (waiting and claimed) per tenant.
    async fn pending_by_tenant(self: Arc<Self>) -> Result<Vec<(TenantId, u64)>, sqlx::Error> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT tenant, count(*) FROM deliveries WHERE state = 'pending' GROUP BY tenant",
        )
        .fetch_all(&self.readers)
        .await?;
        (rows.into_iter())
            .map(|(tenant, n)| {
                let tenant = TenantId::new(tenant)
                    .map_err(|e| bad(format!("a delivery's tenant does not decode: {e}")))?;
                Ok((tenant, to_u64(n, "count")?))
            })
            .collect()
    }

    /// Held deliveries per destination, through the partial index `deliveries_held` (its
    /// condition in the same text).
    async fn held(
        self: Arc<Self>,
        tenant: Option<TenantId>,
        limit: usize,
    ) -> Result<Vec<HeldDeliveries>, sqlx::Error> {
        let select = held_statement(tenant.is_some());
        let mut query = sqlx::query(&select).bind(int(limit));
        if let Some(tenant) = tenant {
            query = query.bind(tenant.as_str().to_owned());
        }
        let rows = query.fetch_all(&self.readers).await?;
        (rows.iter())
            .map(|row| {
                let destination: Option<String> = row.try_get("destination")?;
                Ok(HeldDeliveries {
                    destination: destination
                        .ok_or_else(|| bad("a held delivery has no destination"))?,
                    held: to_u64(row.try_get("how_many")?, "count")?,
                    oldest: Self::time(row, "oldest")?,
                })
            })
            .collect()
    }

    /// Pending deliveries, waiting and claimed.
    async fn counts(self: Arc<Self>) -> Result<OutboxCounts, sqlx::Error> {
        let row = sqlx::query(
            "SELECT count(*) FILTER (WHERE lease_token IS NULL) AS pending, \
                    count(*) FILTER (WHERE lease_token IS NOT NULL) AS in_flight \
             FROM deliveries WHERE state = 'pending'",
        )
        .fetch_one(&self.readers)
        .await?;
        Ok(OutboxCounts {
            pending: to_u64(row.try_get("pending")?, "count")?,
            in_flight: to_u64(row.try_get("in_flight")?, "count")?,
        })
    }
}

impl<D: Dialect> Sql<D>
where
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    for<'q> D::Arguments<'q>: IntoArguments<'q, D>,
    for<'r> &'r str: ColumnIndex<D::Row>,
    usize: ColumnIndex<D::Row>,
    Uuid: Value<D>,
    i64: Value<D>,
    String: Value<D>,
{
    fn artifact_row(row: &D::Row) -> Result<Artifact, sqlx::Error> {
        let fields = ArtifactFields {
            id: row.try_get("id")?,
            type_name: row.try_get("type_name")?,
            payload: row.try_get("payload")?,
            produced_by: row.try_get("produced_by")?,
            correlation_id: row.try_get("correlation_id")?,
            tenant: row.try_get("tenant")?,
            tags: row.try_get("tags")?,
            created_at: Self::time(row, "created_at")?,
        };
        Ok(fields.artifact()?)
    }

    fn delivery_row(row: &D::Row) -> Result<DeliveryView, sqlx::Error> {
        let id: Uuid = row.try_get("id")?;
        let url: String = row.try_get("url")?;
        // Stored by whichever build accepted it: an earlier one may have taken a URL that
        // requests may no longer give.
        let url =
            WebhookUrl::from_stored(&url).map_err(|e| bad(format!("delivery {id}: url: {e}")))?;
        let state = parse_state(&row.try_get::<String, _>("state")?)?;
        let failure: Option<String> = row.try_get("failure")?;
        let leased = row.try_get::<Option<i64>, _>("lease_token")?.is_some();
        let tenant: String = row.try_get("tenant")?;
        let held = match row.try_get::<Option<String>, _>("held")? {
            None => None,
            Some(name) => Some(
                HoldReason::from_name(&name)
                    .ok_or_else(|| bad(format!("delivery {id}: held `{name}`")))?,
            ),
        };
        Ok(DeliveryView {
            id,
            correlation_id: row.try_get("correlation_id")?,
            tenant: TenantId::new(tenant)
                .map_err(|e| bad(format!("delivery {id}: tenant: {e}")))?,
            artifact_id: row.try_get("artifact_id")?,
            sequence: to_u64(row.try_get("sequence")?, "sequence")?,
            url: url.for_logs(),
            state,
            failure: failure.as_deref().map(parse_failure).transpose()?,
            attempts: Vec::new(),
            // While claimed, `due_at` is when the lease expires, not when an attempt is due.
            next_attempt_at: match (state, leased) {
                (DeliveryState::Pending, false) => Self::time_or_null(row, "due_at")?,
                _ => None,
            },
            created_at: Self::time(row, "created_at")?,
            completed_at: Self::time_or_null(row, "completed_at")?,
            webhook: u8::try_from(row.try_get::<i64, _>("webhook")?)
                .map_err(|e| bad(format!("delivery {id}: webhook: {e}")))?,
            ordered: row.try_get::<i64, _>("ordered")? != 0,
            headers: match row.try_get::<Option<String>, _>("header_names")? {
                None => Vec::new(),
                Some(names) => serde_json::from_str(&names)
                    .map_err(|e| bad(format!("delivery {id}: header names: {e}")))?,
            },
            held,
            held_since: Self::time_or_null(row, "held_since")?,
        })
    }

    fn attempt_row(row: &D::Row) -> Result<(Uuid, AttemptView), sqlx::Error> {
        let status: Option<i64> = row.try_get("status_code")?;
        let kind: Option<String> = row.try_get("error_kind")?;
        let attempt = AttemptView {
            number: to_u32(row.try_get("number")?, "attempt number")?,
            started_at: Self::time(row, "started_at")?,
            status_code: (status.map(|c| u16::try_from(c).map_err(|_| bad(format!("status {c}")))))
                .transpose()?,
            error_kind: kind.as_deref().map(parse_error_kind).transpose()?,
            error: row.try_get("error")?,
            duration_ms: to_u64(row.try_get("duration_ms")?, "duration")?,
        };
        Ok((row.try_get("delivery_id")?, attempt))
    }

    fn time(row: &D::Row, column: &str) -> Result<OffsetDateTime, sqlx::Error> {
        Ok(D::from_time(row.try_get(column)?)?)
    }

    fn time_or_null(row: &D::Row, column: &str) -> Result<Option<OffsetDateTime>, sqlx::Error> {
        let stored: Option<D::Time> = row.try_get(column)?;
        Ok(stored.map(D::from_time).transpose()?)
    }
}

/// The columns of a delivery's view ([`Sql::delivery_row`] reads them).
const DELIVERY_COLUMNS: &str = "id, correlation_id, tenant, artifact_id, sequence, url, state, \
    failure, due_at, lease_token, created_at, completed_at, webhook, ordered, header_names, \
    held, held_since";

/// `SELECT` of every artifact column (and its place in publication order), the tags as JSON.
fn artifacts<D: Dialect>() -> String {
    format!(
        "SELECT position, id, type_name, payload, produced_by, correlation_id, tenant, {}, \
         created_at FROM artifacts",
        D::TAGS
    )
}

/// Appends the `WHERE` clause of `query`'s filters to `sql`, and their values to `args`. Time
/// bounds are rounded inwards to whole microseconds, as times are stored.
fn filter<'q, D: Dialect>(
    sql: &mut String,
    args: &mut D::Arguments<'q>,
    query: &ArtifactQuery,
) -> Result<(), sqlx::Error>
where
    String: Value<D>,
    Uuid: Value<D>,
{
    sql.push_str(" WHERE TRUE");
    for (i, name) in query.type_names.iter().enumerate() {
        let before = if i == 0 { " AND type_name IN (" } else { ", " };
        bind(sql, args, before, name.as_str().to_owned())?;
    }
    if !query.type_names.is_empty() {
        sql.push(')');
    }
    if let Some(producer) = &query.produced_by {
        bind(sql, args, " AND produced_by = ", producer.clone())?;
    }
    if let Some(tenant) = &query.tenant {
        bind(sql, args, " AND tenant = ", tenant.as_str().to_owned())?;
    }
    if let Some(correlation_id) = query.correlation_id {
        bind(sql, args, " AND correlation_id = ", correlation_id)?;
    }
    if let Some(tag) = &query.tag {
        let (before, after) = D::HAS_TAG;
        bind(sql, args, before, tag.clone())?;
        sql.push_str(after);
    }
    if let Some(from) = query.from {
        bind(sql, args, " AND created_at >= ", D::time(ceil_micros(from)))?;
    }
    if let Some(to) = query.to {
        bind(sql, args, " AND created_at <= ", D::time(to))?;
    }
    Ok(())
}

/// Appends `before` and the placeholder of `value` to `sql`, and `value` to `args`.
fn bind<'q, D: Database, T: Value<D> + 'q>(
    sql: &mut String,
    args: &mut D::Arguments<'q>,
    before: &str,
    value: T,
) -> Result<(), sqlx::Error> {
    sql.push_str(before);
    args.add(value).map_err(sqlx::Error::Encode)?;
    args.format_placeholder(sql)
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))
}
