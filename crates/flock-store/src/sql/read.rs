//! The reads, on either database: artifacts by id and by query, deliveries with their
//! attempts, the next due time and the counts. Reads of several statements run in one
//! read transaction, so they see one snapshot.

use flock_delivery::{DeliveryView, OutboxCounts};
use flock_models::Artifact;
use flock_orchestrator::{ArtifactQuery, Page};
use sqlx::{Arguments as _, ColumnIndex, Database, Executor, IntoArguments, Row as _};
use time::OffsetDateTime;
use uuid::Uuid;

use super::rows::{self, ArtifactFields, AttemptFields, ClaimFields, DeliveryFields, ceil_micros};
use super::{Dialect, Sql, Value};

const ARTIFACTS: &str = "SELECT id, type_name, payload, produced_by, correlation_id, {tags}, \
                         created_at FROM artifacts";

impl<D: Dialect> Sql<D>
where
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    for<'q> D::Arguments<'q>: IntoArguments<'q, D>,
    for<'r> &'r str: ColumnIndex<D::Row>,
    usize: ColumnIndex<D::Row>,
    Uuid: Value<D>,
    i64: Value<D>,
    bool: Value<D>,
    String: Value<D>,
    Vec<u8>: Value<D>,
{
    /// The artifact with this id.
    pub(super) async fn artifact(&self, id: Uuid) -> Result<Option<Artifact>, sqlx::Error> {
        let select = format!("{} WHERE id = $1", artifacts::<D>());
        let row = sqlx::query(&select)
            .bind(id)
            .fetch_optional(&self.readers)
            .await?;
        row.map(|row| Ok(Self::artifact_fields(&row)?.artifact()?))
            .transpose()
    }

    /// A page of the artifacts `query` selects, in publication order, and how many it selects.
    pub(super) async fn artifacts(
        &self,
        query: ArtifactQuery,
    ) -> Result<Page<Artifact>, sqlx::Error> {
        let mut tx = self.readers.begin().await?;
        if let Some(snapshot) = D::SNAPSHOT {
            sqlx::query(snapshot).execute(&mut *tx).await?;
        }
        let mut count = String::from("SELECT count(*) FROM artifacts");
        let mut args = D::Arguments::default();
        filter::<D>(&mut count, &mut args, &query)?;
        let total: i64 = sqlx::query_scalar_with(&count, args)
            .fetch_one(&mut *tx)
            .await?;
        let total = rows::to_u64(total, "count")?;
        let mut items = Vec::new();
        if query.limit > 0 && (query.offset as u64) < total {
            let mut select = artifacts::<D>();
            let mut args = D::Arguments::default();
            filter::<D>(&mut select, &mut args, &query)?;
            select.push_str(" ORDER BY position LIMIT ");
            bind(
                &mut select,
                &mut args,
                i64::try_from(query.limit).unwrap_or(i64::MAX),
            )?;
            select.push_str(" OFFSET ");
            bind(
                &mut select,
                &mut args,
                i64::try_from(query.offset).unwrap_or(i64::MAX),
            )?;
            for row in sqlx::query_with(&select, args).fetch_all(&mut *tx).await? {
                items.push(Self::artifact_fields(&row)?.artifact()?);
            }
        }
        tx.commit().await?;
        Ok(Page { items, total })
    }

    /// The deliveries whose `column` is `value` (a workflow's, or one by id), in sequence
    /// order, each with its attempts.
    pub(super) async fn views(
        &self,
        column: &str,
        value: Uuid,
    ) -> Result<Vec<DeliveryView>, sqlx::Error> {
        let mut tx = self.readers.begin().await?;
        if let Some(snapshot) = D::SNAPSHOT {
            sqlx::query(snapshot).execute(&mut *tx).await?;
        }
        let deliveries = format!(
            "SELECT id, correlation_id, artifact_id, sequence, url, state, failure, due_at, \
             lease_token IS NOT NULL AS leased, created_at, completed_at FROM deliveries \
             WHERE {column} = $1 ORDER BY sequence, created_at"
        );
        let deliveries = sqlx::query(&deliveries)
            .bind(value)
            .fetch_all(&mut *tx)
            .await?;
        let attempts = format!(
            "SELECT a.delivery_id, a.number, a.started_at, a.status_code, a.error_kind, a.error, \
             a.duration_ms FROM attempts AS a JOIN deliveries AS d ON d.id = a.delivery_id \
             WHERE d.{column} = $1"
        );
        let attempts = sqlx::query(&attempts)
            .bind(value)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let deliveries = deliveries.iter().map(|row| {
            Ok(DeliveryFields {
                id: row.try_get("id")?,
                correlation_id: row.try_get("correlation_id")?,
                artifact_id: row.try_get("artifact_id")?,
                sequence: row.try_get("sequence")?,
                url: row.try_get("url")?,
                state: row.try_get("state")?,
                failure: row.try_get("failure")?,
                due_at: Self::time_or_null(row, "due_at")?,
                leased: row.try_get("leased")?,
                created_at: Self::time(row, "created_at")?,
                completed_at: Self::time_or_null(row, "completed_at")?,
            })
        });
        let attempts = attempts.iter().map(|row| {
            Ok(AttemptFields {
                delivery_id: row.try_get("delivery_id")?,
                number: row.try_get("number")?,
                started_at: Self::time(row, "started_at")?,
                status_code: row.try_get("status_code")?,
                error_kind: row.try_get("error_kind")?,
                error: row.try_get("error")?,
                duration_ms: row.try_get("duration_ms")?,
            })
        });
        Ok(rows::views(
            deliveries.collect::<Result<_, sqlx::Error>>()?,
            attempts.collect::<Result<_, sqlx::Error>>()?,
        )?)
    }

    /// When the earliest pending delivery is due (or its lease expires).
    pub(super) async fn earliest_due(&self) -> Result<Option<OffsetDateTime>, sqlx::Error> {
        let due: Option<D::Time> =
            sqlx::query_scalar("SELECT min(due_at) FROM deliveries WHERE state = 'pending'")
                .fetch_one(&self.readers)
                .await?;
        Ok(due.map(D::from_time).transpose()?)
    }

    /// Pending deliveries, waiting and claimed.
    pub(super) async fn count_pending(&self) -> Result<OutboxCounts, sqlx::Error> {
        let row = sqlx::query(
            "SELECT count(*) FILTER (WHERE lease_token IS NULL) AS pending, \
                    count(*) FILTER (WHERE lease_token IS NOT NULL) AS in_flight \
             FROM deliveries WHERE state = 'pending'",
        )
        .fetch_one(&self.readers)
        .await?;
        Ok(OutboxCounts {
            pending: rows::to_u64(row.try_get("pending")?, "count")?,
            in_flight: rows::to_u64(row.try_get("in_flight")?, "count")?,
        })
    }

    fn artifact_fields(row: &D::Row) -> Result<ArtifactFields, sqlx::Error> {
        Ok(ArtifactFields {
            id: row.try_get("id")?,
            type_name: row.try_get("type_name")?,
            payload: row.try_get("payload")?,
            produced_by: row.try_get("produced_by")?,
            correlation_id: row.try_get("correlation_id")?,
            tags: row.try_get("tags")?,
            created_at: Self::time(row, "created_at")?,
        })
    }

    /// A delivery the batch statement claimed, with the due time it had.
    pub(super) fn claimed_row(row: &D::Row) -> Result<(OffsetDateTime, ClaimFields), sqlx::Error> {
        let fields = ClaimFields {
            id: row.try_get("id")?,
            correlation_id: row.try_get("correlation_id")?,
            artifact_id: row.try_get("artifact_id")?,
            sequence: row.try_get("sequence")?,
            url: row.try_get("url")?,
            secret: row.try_get("secret")?,
            body: row.try_get("body")?,
            artifact_created_at: Self::time(row, "artifact_created_at")?,
            attempts: row.try_get("attempts")?,
            round_start: row.try_get("round_start")?,
        };
        Ok((Self::time(row, "was_due")?, fields))
    }

    fn time(row: &D::Row, column: &str) -> Result<OffsetDateTime, sqlx::Error> {
        Ok(D::from_time(row.try_get(column)?)?)
    }

    fn time_or_null(row: &D::Row, column: &str) -> Result<Option<OffsetDateTime>, sqlx::Error> {
        let stored: Option<D::Time> = row.try_get(column)?;
        Ok(stored.map(D::from_time).transpose()?)
    }
}

/// `SELECT` of every artifact column, tags as JSON.
fn artifacts<D: Dialect>() -> String {
    ARTIFACTS.replace("{tags}", D::TAGS)
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
    if !query.type_names.is_empty() {
        sql.push_str(" AND type_name IN (");
        for (i, name) in query.type_names.iter().enumerate() {
            sql.push_str(if i == 0 { "" } else { ", " });
            bind(sql, args, name.as_str().to_owned())?;
        }
        sql.push(')');
    }
    if let Some(producer) = &query.produced_by {
        sql.push_str(" AND produced_by = ");
        bind(sql, args, producer.clone())?;
    }
    if let Some(correlation_id) = query.correlation_id {
        sql.push_str(" AND correlation_id = ");
        bind(sql, args, correlation_id)?;
    }
    if let Some(tag) = &query.tag {
        let (before, after) = D::HAS_TAG;
        sql.push_str(before);
        bind(sql, args, tag.clone())?;
        sql.push_str(after);
    }
    if let Some(from) = query.from {
        sql.push_str(" AND created_at >= ");
        bind(sql, args, D::time(ceil_micros(from)))?;
    }
    if let Some(to) = query.to {
        sql.push_str(" AND created_at <= ");
        bind(sql, args, D::time(to))?;
    }
    Ok(())
}

/// Adds `value` to `args` and its placeholder to `sql`.
fn bind<'q, D: Database, T: Value<D> + 'q>(
    sql: &mut String,
    args: &mut D::Arguments<'q>,
    value: T,
) -> Result<(), sqlx::Error> {
    args.add(value).map_err(sqlx::Error::Encode)?;
    args.format_placeholder(sql)
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))
}
