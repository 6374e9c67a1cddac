//! `flock-api keys create|list|revoke`: API keys administered offline, against the store the
//! configuration names (the same `--config` and `FLOCK__...` variables as `serve`), while
//! servers run or not. A key revoked here is refused by running servers within 2 s.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use flock_auth::{AuthConfig, Authenticator, KeyRecord, NewKey};
use flock_models::{Scope, TenantId, timestamp};
use flock_store::{Storage, StoreUrl};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::config::Settings;
use crate::routes::keys::MAX_EXPIRES_IN_SECS;

/// `flock-api keys create`.
#[derive(Debug, Args)]
pub struct CreateOptions {
    /// A TOML configuration file (else the FLOCK_CONFIG variable names one, else none).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The tenant the key acts for.
    #[arg(long)]
    pub tenant: String,
    /// A scope of the key, repeated for several: publish, read, redeliver, keys:manage, metrics.
    #[arg(long = "scope", required = true)]
    pub scopes: Vec<String>,
    /// A name for people.
    #[arg(long, default_value = "")]
    pub name: String,
    /// When it stops working: a number and a unit, `30d`, `12h`, `90m` or `3600s`.
    #[arg(long)]
    pub expires_in: Option<String>,
}

/// `flock-api keys list`.
#[derive(Debug, Args)]
pub struct ListOptions {
    /// A TOML configuration file (else the FLOCK_CONFIG variable names one, else none).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Only this tenant's keys.
    #[arg(long)]
    pub tenant: Option<String>,
}

/// `flock-api keys revoke`.
#[derive(Debug, Args)]
pub struct RevokeOptions {
    /// A TOML configuration file (else the FLOCK_CONFIG variable names one, else none).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The key's id, as `keys list` shows it.
    pub id: String,
}

/// Reads `30d`, `12h`, `90m`, `3600s` (or a bare number of seconds).
///
/// # Errors
/// Another form, zero, or more than ten years; the message says which forms are accepted.
pub fn parse_expires_in(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit_secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 60 * 60,
        "d" => 24 * 60 * 60,
        _ => bail!("--expires-in `{text}`: use a number and a unit: 30d, 12h, 90m or 3600s"),
    };
    let secs = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_secs))
        .filter(|s| (1..=MAX_EXPIRES_IN_SECS).contains(s))
        .with_context(|| {
            format!(
                "--expires-in `{text}`: must be from 1 second to 10 years (30d, 12h, 90m, 3600s)"
            )
        })?;
    Ok(Duration::from_secs(secs))
}

/// Opens the configured store, refusing `memory://` (a key made there would be gone at once).
async fn open(config: Option<PathBuf>) -> anyhow::Result<(Storage, Authenticator)> {
    let file = Settings::file_from(config, |key| std::env::var(key).ok());
    let settings = Settings::load(file.as_deref(), std::env::vars())?;
    let url = &settings.store.url;
    if matches!(url, StoreUrl::Memory) {
        bail!(
            "store.url is memory://: keys kept there would be lost when this command ends; configure the store the server uses (sqlite://... or postgres://...)"
        );
    }
    let storage = Storage::open(url)
        .await
        .with_context(|| format!("store.url `{url}`"))?;
    let keys = Authenticator::new(storage.keys(), AuthConfig::default());
    Ok((storage, keys))
}

fn time_or_dash(at: Option<OffsetDateTime>) -> String {
    at.map_or_else(|| "-".to_owned(), timestamp::format_micros)
}

fn describe(record: &KeyRecord) -> String {
    format!(
        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
        record.id,
        record.tenant,
        if record.name.is_empty() {
            "-"
        } else {
            &record.name
        },
        record
            .scopes
            .iter()
            .map(Scope::as_str)
            .collect::<Vec<_>>()
            .join(","),
        timestamp::format_micros(record.created_at),
        time_or_dash(record.expires_at),
        time_or_dash(record.revoked_at),
        time_or_dash(record.last_used_at),
    )
}

const HEADER: &str = "id\ttenant\tname\tscopes\tcreated_at\texpires_at\trevoked_at\tlast_used_at";

/// Creates a key and writes it alone on the first line of `out`, then its record.
///
/// # Errors
/// Bad options (each named), a store that cannot be opened, or the tenant's key limit.
pub async fn create(options: CreateOptions, out: &mut impl Write) -> anyhow::Result<()> {
    let tenant = TenantId::new(&options.tenant).map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
    let scopes = flock_models::Scopes::parse(&options.scopes)
        .map_err(|e| anyhow::anyhow!("--scope: {}", e.message()))?;
    let expires_in = options
        .expires_in
        .as_deref()
        .map(parse_expires_in)
        .transpose()?;
    let new = NewKey::new(
        tenant,
        options.name,
        scopes,
        expires_in.map(|after| OffsetDateTime::now_utc() + after),
    )
    .map_err(|e| anyhow::anyhow!("--{e}"))?;
    let (storage, keys) = open(options.config).await?;
    let created = keys.create(new).await;
    storage.close().await;
    let (key, record) = created?;
    writeln!(out, "{}", key.expose())?;
    writeln!(out, "{HEADER}")?;
    writeln!(out, "{}", describe(&record))?;
    Ok(())
}

/// Writes the keys (of one tenant, or all), one per line under a header; never a key itself.
///
/// # Errors
/// A bad tenant, or a store that cannot be opened or read.
pub async fn list(options: ListOptions, out: &mut impl Write) -> anyhow::Result<()> {
    let tenant = options
        .tenant
        .as_deref()
        .map(TenantId::new)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
    let (storage, keys) = open(options.config).await?;
    let listed = keys.list(tenant.as_ref()).await;
    storage.close().await;
    writeln!(out, "{HEADER}")?;
    for record in listed? {
        writeln!(out, "{}", describe(&record))?;
    }
    Ok(())
}

/// Revokes a key by id.
///
/// # Errors
/// An id that is not a UUID or names no key, or a store that fails.
pub async fn revoke(options: RevokeOptions, out: &mut impl Write) -> anyhow::Result<()> {
    let id = Uuid::try_parse(options.id.trim()).with_context(|| {
        format!(
            "`{}` is not a key id (a UUID, as `keys list` shows)",
            options.id
        )
    })?;
    let (storage, keys) = open(options.config).await?;
    let revoked = keys.revoke(None, id).await;
    storage.close().await;
    let Some(record) = revoked? else {
        bail!("no API key has the id {id}");
    };
    writeln!(
        out,
        "revoked {id} (tenant {}); running servers refuse it within 2 s",
        record.tenant
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_takes_a_number_and_a_unit() {
        assert_eq!(
            parse_expires_in("30d").unwrap(),
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(
            parse_expires_in("12h").unwrap(),
            Duration::from_secs(12 * 3_600)
        );
        assert_eq!(parse_expires_in("90m").unwrap(), Duration::from_secs(5_400));
        assert_eq!(
            parse_expires_in("3600s").unwrap(),
            Duration::from_secs(3_600)
        );
        assert_eq!(parse_expires_in("60").unwrap(), Duration::from_secs(60));
        for bad in [
            "",
            "0d",
            "d",
            "1w",
            "-1d",
            "1.5h",
            "99999999999999999999d",
            "4000d",
        ] {
            let err = parse_expires_in(bad).unwrap_err().to_string();
            assert!(err.contains("--expires-in"), "{bad}: {err}");
        }
    }
}
