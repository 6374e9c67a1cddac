//! Opening a Postgres store: one connection to learn at once whether the server answers, then
//! the writers, the migrations and the readers.

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection as _, Postgres};

use crate::durable::Durable;
use crate::error::OpenError;
use crate::keys::Pool;
use crate::sql::{Dialect as _, Sql};
use crate::url::PostgresUrl;

/// Reader connections.
const READERS: u32 = 4;

/// How long opening waits for the server's first answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to and migrates the database at `url`, and starts its writers; answers the store
/// and its readers' pool.
pub(crate) async fn open(url: &PostgresUrl) -> Result<(Arc<Durable>, Pool), OpenError> {
    let shown = url.redacted();
    let fail = |e: &dyn std::fmt::Display| OpenError::Postgres {
        url: shown.clone(),
        reason: e.to_string(),
    };
    let options = PgConnectOptions::from_str(url.expose())
        .map_err(|e| fail(&e))?
        .application_name("flock");
    // One connection first: a pool retries a refused connection until its acquire timeout and
    // then says only that it timed out; a single attempt says why (refused, unknown database,
    // authentication failed) and says it at once.
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options)).await {
        Ok(Ok(first)) => {
            // Only a check: the pools below open their own connections.
            let _ = first.close().await;
        }
        Ok(Err(e)) => return Err(fail(&e)),
        Err(_) => {
            let secs = CONNECT_TIMEOUT.as_secs();
            return Err(fail(&format_args!("no answer within {secs} s")));
        }
    }
    let writers = u32::try_from(Postgres::WRITERS).unwrap_or(1);
    let writer = pool(&options, writers).await.map_err(|e| fail(&e))?;
    crate::migrations::run(crate::migrations::POSTGRES, &writer, &shown).await?;
    let readers = pool(&options, READERS).await.map_err(|e| fail(&e))?;
    let store = Durable::start(Sql::new(writer, readers.clone(), None), Postgres::WRITERS);
    Ok((store, Pool::Postgres(readers)))
}

async fn pool(options: &PgConnectOptions, size: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(size)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options.clone())
        .await
}
