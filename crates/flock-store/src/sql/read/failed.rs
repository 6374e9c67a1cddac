//! A tenant's failed deliveries in a window ([`FailedQuery`]), the most recently failed first:
//! what the failed-deliveries listing and the bulk redelivery read. One statement for both
//! databases, on the `deliveries_completed` index (`completed_at, id` of done deliveries).

use std::collections::HashMap;

use flock_delivery::{AttemptView, DeliveryView, FailedQuery};
use sqlx::{ColumnIndex, Executor, IntoArguments};
use uuid::Uuid;

use super::{DELIVERY_COLUMNS, bind};
use crate::sql::rows::{ceil_micros, int};
use crate::sql::{Dialect, Sql, Value};

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
    /// The deliveries `query` selects, each with its attempts, in one read snapshot. A
    /// destination matches the URL as shown: the stored URL itself, or it followed by its query
    /// or fragment.
    pub(super) async fn failed_views(
        &self,
        query: &FailedQuery,
    ) -> Result<Vec<DeliveryView>, sqlx::Error> {
        let mut select = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries \
             WHERE state <> 'pending' AND state = 'failed'"
        );
        let mut args = D::Arguments::default();
        let tenant = query.tenant.as_str().to_owned();
        bind(&mut select, &mut args, " AND tenant = ", tenant)?;
        let since = D::time(ceil_micros(query.since));
        bind(&mut select, &mut args, " AND completed_at >= ", since)?;
        if let Some(until) = query.until {
            bind(
                &mut select,
                &mut args,
                " AND completed_at <= ",
                D::time(until),
            )?;
        }
        if let Some(correlation_id) = query.correlation_id {
            bind(
                &mut select,
                &mut args,
                " AND correlation_id = ",
                correlation_id,
            )?;
        }
        if let Some(url) = &query.destination {
            let prefix = int(url.chars().count() + 1);
            bind(&mut select, &mut args, " AND (url = ", url.clone())?;
            bind(&mut select, &mut args, " OR substr(url, 1, ", prefix)?;
            bind(&mut select, &mut args, ") IN (", format!("{url}?"))?;
            bind(&mut select, &mut args, ", ", format!("{url}#"))?;
            select.push_str("))");
        }
        let limit = int(query.limit);
        bind(
            &mut select,
            &mut args,
            " ORDER BY completed_at DESC, id DESC LIMIT ",
            limit,
        )?;

        let mut tx = self.readers.begin().await?;
        if let Some(snapshot) = D::SNAPSHOT {
            sqlx::query(snapshot).execute(&mut *tx).await?;
        }
        let rows = sqlx::query_with(&select, args).fetch_all(&mut *tx).await?;
        let mut views = Vec::with_capacity(rows.len());
        for row in &rows {
            views.push(Self::delivery_row(row)?);
        }
        if !views.is_empty() {
            let mut select = String::from(
                "SELECT delivery_id, number, started_at, status_code, error_kind, error, \
                 duration_ms FROM attempts WHERE delivery_id IN (",
            );
            let mut args = D::Arguments::default();
            for (i, view) in views.iter().enumerate() {
                bind(
                    &mut select,
                    &mut args,
                    if i == 0 { "" } else { ", " },
                    view.id,
                )?;
            }
            select.push_str(") ORDER BY number");
            let attempts = sqlx::query_with(&select, args).fetch_all(&mut *tx).await?;
            let mut by_delivery: HashMap<Uuid, Vec<AttemptView>> = HashMap::new();
            for row in &attempts {
                let (id, attempt) = Self::attempt_row(row)?;
                by_delivery.entry(id).or_default().push(attempt);
            }
            for view in &mut views {
                view.attempts = by_delivery.remove(&view.id).unwrap_or_default();
            }
        }
        tx.commit().await?;
        // The URL filter above matched the stored URL's beginning; the shown URL decides.
        if let Some(url) = &query.destination {
            views.retain(|view| view.url == *url);
        }
        Ok(views)
    }
}
