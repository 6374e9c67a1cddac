//! Delivery settings: concurrency, timeouts, the retry policy, the SSRF allow-list and the
//! outbox lease; with defaults and validation.

use std::time::Duration;

use flock_context::SsrfGuard;
use flock_retry::{PolicyError, RetryPolicy};
use ipnet::IpNet;

use crate::gate::Isolation;

/// How the dispatcher delivers. `Default` gives the production defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryConfig {
    /// Attempts in flight at once, across all receivers. Default 128: twice a destination's cap
    /// ([`Isolation::per_destination_concurrency`](crate::Isolation)), so a receiver that never
    /// answers leaves half of them to everyone else.
    pub concurrency: usize,
    /// Time allowed to open a connection (TCP and TLS). Default 5 s.
    pub connect_timeout: Duration,
    /// Time allowed for a whole attempt, connecting included, until the response body has been
    /// read. Default 10 s.
    pub request_timeout: Duration,
    /// Retry policy: attempts, backoff, cap, jitter. Default 4 attempts, waits 1 s, 2 s, 4 s.
    pub retry: RetryPolicy,
    /// Address blocks let through the SSRF guard although they are refused by default (for
    /// example `127.0.0.1/32` for local development). Default none.
    pub allowed_cidrs: Vec<IpNet>,
    /// How long a claim on a delivery lasts before another dispatcher may claim it again; must
    /// exceed `request_timeout`. Default 60 s.
    pub lease: Duration,
    /// The longest the dispatcher sleeps without looking at the outbox, for outboxes that
    /// cannot announce new work (other processes' enqueues, expired leases). Default 1 s.
    pub poll_interval: Duration,
    /// Idle connections kept per receiver host. Default 64.
    pub max_idle_per_host: usize,
    /// Receiver isolation: the per-destination cap, breaker, pauses and holds.
    pub isolation: Isolation,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            concurrency: 128,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            allowed_cidrs: Vec::new(),
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
            max_idle_per_host: 64,
            isolation: Isolation::default(),
        }
    }
}

/// A configuration that cannot work, or an HTTP client that could not be built from it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// `concurrency` is 0.
    #[error("concurrency must be at least 1")]
    ZeroConcurrency,
    /// A timeout or interval is zero.
    #[error("{0} must be longer than zero")]
    ZeroDuration(&'static str),
    /// The lease does not outlast an attempt.
    #[error("the lease ({lease:?}) must be longer than the request timeout ({timeout:?})")]
    LeaseTooShort {
        /// The configured lease.
        lease: Duration,
        /// The configured request timeout.
        timeout: Duration,
    },
    /// A receiver isolation setting is out of range; the text names it.
    #[error("invalid receiver isolation setting: {0}")]
    Isolation(&'static str),
    /// The retry policy is inconsistent.
    #[error("invalid retry policy: {0}")]
    Retry(#[from] PolicyError),
    /// The HTTP client could not be built; the text says why.
    #[error("could not build the HTTP client: {0}")]
    Client(String),
}

impl DeliveryConfig {
    /// The SSRF guard these settings describe: the default policy with `allowed_cidrs` opened.
    /// The dispatcher's client enforces it; give the same to the `Webhooks` that checks
    /// submitted webhooks.
    pub fn guard(&self) -> SsrfGuard {
        SsrfGuard::new(self.allowed_cidrs.iter().copied())
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// See [`ConfigError`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.concurrency == 0 {
            return Err(ConfigError::ZeroConcurrency);
        }
        for (name, value) in [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
            ("lease", self.lease),
            ("poll_interval", self.poll_interval),
        ] {
            if value.is_zero() {
                return Err(ConfigError::ZeroDuration(name));
            }
        }
        if self.lease <= self.request_timeout {
            return Err(ConfigError::LeaseTooShort {
                lease: self.lease,
                timeout: self.request_timeout,
            });
        }
        let isolation = &self.isolation;
        if isolation.per_destination_concurrency == 0 {
            return Err(ConfigError::Isolation(
                "per_destination_concurrency must be at least 1",
            ));
        }
        if isolation.breaker_failures == 0 {
            return Err(ConfigError::Isolation(
                "breaker.failures must be at least 1",
            ));
        }
        if isolation.breaker_max_open < crate::gate::FIRST_COOL_OFF {
            return Err(ConfigError::Isolation(
                "breaker.max_open_ms must be at least 1000 (the first cool-off)",
            ));
        }
        for (name, value) in [
            ("max_hold_secs", isolation.max_hold),
            ("the hold sweep interval", isolation.sweep_every),
        ] {
            if value.is_zero() {
                return Err(ConfigError::ZeroDuration(name));
            }
        }
        if isolation
            .per_destination_rate
            .is_some_and(|rate| !(rate.is_finite() && rate > 0.0))
        {
            return Err(ConfigError::Isolation(
                "per_destination_rate must be a number of requests per second above 0",
            ));
        }
        self.retry.validate()?;
        Ok(())
    }
}
