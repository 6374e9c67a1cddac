//! Tenant webhook secrets in SQL: the [`TenantSecrets`] of both backends, written once, as the
//! API keys are (`keys.rs`): the same statement text on SQLite and Postgres (`$n`
//! placeholders, `ON CONFLICT`, `RETURNING`), one macro body for each pool type, queries on the
//! store's runtime. One row per tenant in `tenant_secrets`; times in microseconds. A previous
//! secret whose grace period is over is cleared when the tenant's secrets are next read.

use std::time::Duration;

use async_trait::async_trait;
use flock_delivery::{SecretsError, TenantSecrets, TenantSigning, generate_secret, grace_end};
use flock_models::{Secret, TenantId};
use time::OffsetDateTime;

use crate::keys::{BackendError, KeyPool, on_pool};
use crate::sql::rows::{from_micros, micros};

const SELECT: &str =
    "SELECT secret, previous, previous_until FROM tenant_secrets WHERE tenant = $1";

/// A tenant's first secret, unless another caller stored one first.
const INSERT_IF_ABSENT: &str = "INSERT INTO tenant_secrets \
    (tenant, secret, previous, previous_until, rotated_at) VALUES ($1, $2, NULL, NULL, $3) \
    ON CONFLICT (tenant) DO NOTHING";

/// A new current secret in one statement: the old current one (read from the row being
/// replaced) becomes the previous one; a tenant without a row gets its first secret.
const ROTATE: &str = "INSERT INTO tenant_secrets \
    (tenant, secret, previous, previous_until, rotated_at) VALUES ($1, $2, NULL, NULL, $3) \
    ON CONFLICT (tenant) DO UPDATE SET \
    previous = tenant_secrets.secret, previous_until = $4, \
    secret = excluded.secret, rotated_at = excluded.rotated_at \
    RETURNING secret, previous, previous_until";

/// Forgets a previous secret whose grace period is over: the database keeps a secret only
/// while it may still sign.
const FORGET_EXPIRED: &str = "UPDATE tenant_secrets SET previous = NULL, previous_until = NULL \
    WHERE tenant = $1 AND previous_until <= $2";

/// A row: the current secret, the previous one and the end of its grace period.
type Row = (String, Option<String>, Option<i64>);

#[expect(
    clippy::needless_pass_by_value,
    reason = "used as `map_err(failed)`, which hands the error over by value"
)]
fn failed(err: sqlx::Error) -> SecretsError {
    SecretsError::Backend(err.to_string())
}

/// The signing state of `tenant`'s row at `now`. Errors name the column, never its text.
fn decode(tenant: &TenantId, row: Row, now: OffsetDateTime) -> Result<TenantSigning, SecretsError> {
    let (secret, previous, until) = row;
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        SecretsError::Backend(format!(
            "tenant {tenant}: the stored {what} does not decode: {e}"
        ))
    };
    let current = Secret::new(secret).map_err(|e| bad("secret", &e))?;
    let previous = match (previous, until) {
        (Some(previous), Some(until)) => Some((
            Secret::new(previous).map_err(|e| bad("previous secret", &e))?,
            from_micros(until).map_err(|e| bad("previous_until", &e))?,
        )),
        _ => None,
    };
    Ok(TenantSigning::new(current, previous, now))
}

impl BackendError for SecretsError {
    const QUERY: &'static str = "a tenant secrets query";
    fn backend(message: String) -> Self {
        SecretsError::Backend(message)
    }
}

#[async_trait]
impl TenantSecrets for KeyPool {
    async fn signing(
        &self,
        tenant: &TenantId,
        now: OffsetDateTime,
    ) -> Result<TenantSigning, SecretsError> {
        let name = tenant.as_str().to_owned();
        let row: Row = on_pool!(self, |pool| {
            if let Some(row) = sqlx::query_as::<_, Row>(SELECT)
                .bind(name.clone())
                .fetch_optional(&pool)
                .await
                .map_err(failed)?
            {
                if row.2.is_some_and(|until| until <= micros(now)) {
                    sqlx::query(FORGET_EXPIRED)
                        .bind(name)
                        .bind(micros(now))
                        .execute(&pool)
                        .await
                        .map_err(failed)?;
                }
                return Ok(row);
            }
            // None yet: store one unless another caller did first, then read whichever won.
            sqlx::query(INSERT_IF_ABSENT)
                .bind(name.clone())
                .bind(generate_secret().expose().to_owned())
                .bind(micros(now))
                .execute(&pool)
                .await
                .map_err(failed)?;
            sqlx::query_as::<_, Row>(SELECT)
                .bind(name)
                .fetch_one(&pool)
                .await
                .map_err(failed)
        })?;
        decode(tenant, row, now)
    }

    async fn rotate(
        &self,
        tenant: &TenantId,
        now: OffsetDateTime,
        grace: Duration,
    ) -> Result<TenantSigning, SecretsError> {
        let name = tenant.as_str().to_owned();
        let fresh = generate_secret().expose().to_owned();
        let until = micros(grace_end(now, grace));
        let row: Row = on_pool!(self, |pool| {
            sqlx::query_as::<_, Row>(ROTATE)
                .bind(name)
                .bind(fresh)
                .bind(micros(now))
                .bind(until)
                .fetch_one(&pool)
                .await
                .map_err(failed)
        })?;
        decode(tenant, row, now)
    }
}
