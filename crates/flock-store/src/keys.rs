//! API keys in SQL: the [`KeyStore`] of both backends, written once. The statements are the
//! same text on SQLite and Postgres (`$n` placeholders, `TEXT` and `BIGINT` columns,
//! `RETURNING`); the Rust around them is one macro body expanded for each pool type. Queries
//! run on the store's runtime, whose I/O driver owns the connections. The [`KeyPool`] they run
//! through is also the tenant secrets (`secrets.rs`) and the idempotency records
//! (`idempotency.rs`).

use async_trait::async_trait;
use flock_auth::{KeyHash, KeyRecord, KeyStore, KeyStoreError};
use flock_models::{Scopes, TenantId};
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use time::OffsetDateTime;
use tokio::runtime::Handle;
use uuid::Uuid;

use crate::sql::rows::{from_micros, micros};

/// The columns of a record, in [`Row`] order.
const COLUMNS: &str = "id, tenant, name, scopes, created_at, expires_at, revoked_at, last_used_at";

const INSERT: &str = "INSERT INTO api_keys \
    (id, key_hash, tenant, name, scopes, created_at, expires_at, revoked_at, last_used_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, NULL)";

const USE: &str = "UPDATE api_keys SET last_used_at = $2 \
    WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)";

/// A record as a row: id, tenant, name, scopes, created, expires, revoked, last used.
type Row = (
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

fn decode(row: Row) -> Result<KeyRecord, KeyStoreError> {
    let (id, tenant, name, scopes, created, expires, revoked, used) = row;
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        KeyStoreError::Backend(format!("API key {id}: {what} does not decode: {e}"))
    };
    let time = |value: Option<i64>| value.map(from_micros).transpose();
    let names: Vec<&str> = scopes.split_whitespace().collect();
    Ok(KeyRecord {
        id: Uuid::try_parse(&id).map_err(|e| bad("id", &e))?,
        tenant: TenantId::new(tenant).map_err(|e| bad("tenant", &e))?,
        name,
        scopes: Scopes::parse(&names).map_err(|e| bad("scopes", &e))?,
        created_at: from_micros(created).map_err(|e| bad("created_at", &e))?,
        expires_at: time(expires).map_err(|e| bad("expires_at", &e))?,
        revoked_at: time(revoked).map_err(|e| bad("revoked_at", &e))?,
        last_used_at: time(used).map_err(|e| bad("last_used_at", &e))?,
    })
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "used as `map_err(failed)`, which hands the error over by value"
)]
fn failed(err: sqlx::Error) -> KeyStoreError {
    KeyStoreError::Backend(err.to_string())
}

/// The connections of the store's small tables (API keys, tenant secrets, idempotency
/// records): the store's readers (their writes are rare and small; SQLite's busy timeout lets
/// them wait for the group-commit writer), and the runtime whose I/O driver owns them. It is
/// the [`KeyStore`], the `TenantSecrets` and the `IdempotencyStore` of the database.
pub(crate) struct KeyPool {
    pub(crate) pool: Pool,
    runtime: Handle,
}

/// The readers' pool of either database.
#[derive(Clone)]
pub(crate) enum Pool {
    /// SQLite.
    Sqlite(SqlitePool),
    /// Postgres.
    Postgres(PgPool),
}

/// The error of a store on a [`KeyPool`]: the database's failure, as text.
pub(crate) trait BackendError: Send + 'static {
    /// What its queries are, for "... did not finish".
    const QUERY: &'static str;
    fn backend(message: String) -> Self;
}

impl BackendError for KeyStoreError {
    const QUERY: &'static str = "a key store query";
    fn backend(message: String) -> Self {
        KeyStoreError::Backend(message)
    }
}

impl KeyPool {
    /// The small tables of `pool`, queried on the current runtime.
    pub(crate) fn new(pool: Pool) -> KeyPool {
        KeyPool {
            pool,
            runtime: Handle::current(),
        }
    }

    /// Runs `work` on the store's runtime.
    pub(crate) async fn run<T, E, Fut>(&self, work: Fut) -> Result<T, E>
    where
        T: Send + 'static,
        E: BackendError,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        (self.runtime.spawn(work).await)
            .map_err(|e| E::backend(format!("{} did not finish: {e}", E::QUERY)))?
    }
}

/// Runs `$body` with `$pool` bound to whichever pool the store has: one text for both.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match $store.pool.clone() {
            $crate::keys::Pool::Sqlite($pool) => $store.run(async move { $body }).await,
            $crate::keys::Pool::Postgres($pool) => $store.run(async move { $body }).await,
        }
    };
}
pub(crate) use on_pool;

#[async_trait]
impl KeyStore for KeyPool {
    async fn create(&self, record: &KeyRecord, hash: &KeyHash) -> Result<(), KeyStoreError> {
        let record = record.clone();
        let hash = hash.to_hex();
        on_pool!(self, |pool| {
            sqlx::query(INSERT)
                .bind(record.id.to_string())
                .bind(hash)
                .bind(record.tenant.as_str().to_owned())
                .bind(record.name)
                .bind(record.scopes.to_string())
                .bind(micros(record.created_at))
                .bind(record.expires_at.map(micros))
                .execute(&pool)
                .await
                .map_err(failed)?;
            Ok(())
        })
    }

    async fn find(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, KeyStoreError> {
        let hash = hash.to_hex();
        on_pool!(self, |pool| {
            let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE key_hash = $1");
            sqlx::query_as::<_, Row>(&sql)
                .bind(hash)
                .fetch_optional(&pool)
                .await
                .map_err(failed)?
                .map(decode)
                .transpose()
        })
    }

    async fn list(&self, tenant: Option<&TenantId>) -> Result<Vec<KeyRecord>, KeyStoreError> {
        let tenant = tenant.map(|t| t.as_str().to_owned());
        on_pool!(self, |pool| {
            let filter = if tenant.is_some() {
                "WHERE tenant = $1 "
            } else {
                ""
            };
            let sql = format!("SELECT {COLUMNS} FROM api_keys {filter}ORDER BY created_at, id");
            let mut query = sqlx::query_as::<_, Row>(&sql);
            if let Some(tenant) = tenant {
                query = query.bind(tenant);
            }
            let rows = query.fetch_all(&pool).await.map_err(failed)?;
            rows.into_iter().map(decode).collect()
        })
    }

    async fn revoke(
        &self,
        tenant: Option<&TenantId>,
        id: Uuid,
        at: OffsetDateTime,
    ) -> Result<Option<KeyRecord>, KeyStoreError> {
        let tenant = tenant.map(|t| t.as_str().to_owned());
        on_pool!(self, |pool| {
            let filter = if tenant.is_some() {
                " AND tenant = $3"
            } else {
                ""
            };
            let sql = format!(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1{filter} \
                 RETURNING {COLUMNS}"
            );
            let mut query = sqlx::query_as::<_, Row>(&sql)
                .bind(id.to_string())
                .bind(micros(at));
            if let Some(tenant) = tenant {
                query = query.bind(tenant);
            }
            let row = query.fetch_optional(&pool).await.map_err(failed)?;
            row.map(decode).transpose()
        })
    }

    async fn revocations_since(
        &self,
        since: OffsetDateTime,
    ) -> Result<Vec<(Uuid, OffsetDateTime)>, KeyStoreError> {
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<_, (String, i64)>(
                "SELECT id, revoked_at FROM api_keys WHERE revoked_at >= $1",
            )
            .bind(micros(since))
            .fetch_all(&pool)
            .await
            .map_err(failed)
        })?;
        rows.into_iter()
            .map(|(id, at)| {
                let id = Uuid::try_parse(&id)
                    .map_err(|e| KeyStoreError::Backend(format!("API key id {id}: {e}")))?;
                let at = from_micros(at).map_err(|e| KeyStoreError::Backend(e.to_string()))?;
                Ok((id, at))
            })
            .collect()
    }

    async fn record_uses(&self, uses: &[(Uuid, OffsetDateTime)]) -> Result<(), KeyStoreError> {
        let uses: Vec<(String, i64)> = uses
            .iter()
            .map(|(id, at)| (id.to_string(), micros(*at)))
            .collect();
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await.map_err(failed)?;
            for (id, at) in uses {
                sqlx::query(USE)
                    .bind(id)
                    .bind(at)
                    .execute(&mut *tx)
                    .await
                    .map_err(failed)?;
            }
            tx.commit().await.map_err(failed)
        })
    }
}
