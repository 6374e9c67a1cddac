//! `Application`: builds everything from the settings, binds the listener (port 0 in tests) and
//! runs until told to stop, then stops in order: HTTP first, then agents, then deliveries.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::Server;
use actix_web::{HttpServer, web};
use anyhow::Context as _;
use flock_auth::{AuthConfig, AuthTasks, Authenticator};
use flock_context::Webhooks;

use crate::BodyLimit;
use crate::limits::RateLimiter;
use flock_delivery::{
    CachedTenantSecrets, DeliveryConfig, Dispatcher, DispatcherHandle, TenantSecrets,
    WebhookDeliveryComponent,
};
use flock_orchestrator::{ArtifactStore, Orchestrator};
use flock_store::{Pruner, Storage};

use crate::app::create_app;
use crate::auth::{Auth, AuthPolicy};
use crate::config::CheckedSettings;
use crate::idempotency::Idempotency;
use crate::state::AppState;
use crate::telemetry;

/// Builds what the routes share from checked settings: the storage `store.url` names (opened,
/// and created and migrated if needed), the orchestrator (with the declared types and the
/// agents the check built, and the webhook component) and the dispatcher, not yet started. Tests use it with
/// `actix_web::test::init_service(create_app(state))`.
///
/// # Errors
/// A store that cannot be opened (the message names `store.url`, the file or server, and the
/// reason), or agents or delivery settings the orchestrator or dispatcher refuse.
pub async fn build_state(
    settings: &CheckedSettings,
) -> anyhow::Result<(web::Data<AppState>, Dispatcher)> {
    let metrics = telemetry::prometheus();
    flock_orchestrator::describe_metrics();
    flock_delivery::metrics::describe();
    flock_llm::describe_metrics();
    let url = &settings.store.url;
    let storage = Storage::open(url)
        .await
        .with_context(|| format!("store.url `{url}`"))?;
    let store: Arc<dyn ArtifactStore> = storage.artifacts();
    // Tenants' webhook secrets, one cache for the instance: the rotation route and the sender
    // read the same entries, so a rotation here is seen here at once (elsewhere within 1 s).
    let secrets: Arc<dyn TenantSecrets> = Arc::new(CachedTenantSecrets::new(storage.secrets()));

    let delivery = DeliveryConfig {
        concurrency: settings.webhooks.concurrency,
        connect_timeout: Duration::from_millis(settings.webhooks.connect_timeout_ms),
        request_timeout: Duration::from_millis(settings.webhooks.timeout_ms),
        retry: settings.webhooks.retry.policy(),
        allowed_cidrs: settings.webhooks.allowed_cidrs.clone(),
        lease: Duration::from_millis(settings.webhooks.lease_ms),
        poll_interval: Duration::from_millis(settings.webhooks.poll_interval_ms),
        isolation: settings.webhooks.isolation(),
        ..DeliveryConfig::default()
    };
    // The guard that refuses a submitted webhook is the one the dispatcher's client enforces.
    let webhooks = Arc::new(Webhooks::new(delivery.guard()));

    let events = crate::events::EventHub::new(settings.events.clone(), Arc::clone(&store));
    let orchestrator = Orchestrator::builder()
        .store(store)
        .agents(settings.agents().iter().cloned())
        .component(Arc::new(WebhookDeliveryComponent::new(Arc::clone(
            &webhooks,
        ))))
        .component(Arc::new(crate::events::EventsComponent::new(Arc::clone(
            &events,
        ))))
        .config(settings.orchestrator.clone())
        .types(Arc::clone(settings.types()))
        .build()
        .await
        .context("configuration: agents")?;

    let dispatcher = Dispatcher::new(storage.outbox(), delivery)
        .context("configuration: webhooks")?
        .tenant_secrets(Arc::clone(&secrets))
        .observer(Arc::new(crate::events::EventsObserver::new(Arc::clone(
            &events,
        ))));
    let keys = Authenticator::new(
        storage.keys(),
        AuthConfig {
            revocation_poll: Duration::from_millis(settings.auth.revocation_poll_ms),
            last_used_flush: Duration::from_millis(settings.auth.last_used_flush_ms),
            ..AuthConfig::default()
        },
    );
    let auth = Arc::new(Auth {
        policy: AuthPolicy::decide(settings.auth.mode, settings.server.host),
        keys,
    });
    let quota = crate::quota::PendingQuota::new(
        storage.outbox(),
        settings.webhooks.max_pending,
        settings.webhooks.max_pending_per_tenant,
    );
    let state = web::Data::new(AppState {
        orchestrator,
        secrets,
        secret_grace: settings.webhooks.secret_grace(),
        idempotency: Idempotency::new(
            storage.idempotency(),
            Duration::from_secs(settings.idempotency.ttl_secs),
            settings.idempotency.max_entries,
        ),
        storage,
        webhooks,
        rate_limit: settings
            .limits
            .requests_per_sec
            .map(|rate| RateLimiter::new(rate, settings.limits.burst.unwrap_or(rate))),
        body_limit: BodyLimit {
            bytes: settings.server.body_limit_bytes,
            timeout: settings.request_timeout(),
        },
        metrics,
        quota,
        metrics_open: settings.server.metrics_open,
        auth,
        events,
        destinations: dispatcher.destinations(),
    });
    Ok((state, dispatcher))
}

/// How long a request's headers may take to arrive (actix's default), unless
/// `server.request_timeout_ms` is shorter.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// A built server, listening but not yet serving.
pub struct Application {
    address: SocketAddr,
    server: Server,
    orchestrator: Orchestrator,
    dispatcher: DispatcherHandle,
    pruner: Pruner,
    storage: Storage,
    keys: Authenticator,
    key_tasks: AuthTasks,
    upkeep: tokio::task::JoinHandle<()>,
    grace: Duration,
    events: Arc<crate::events::EventHub>,
}

/// How a stop went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopReport {
    /// Agent runs still running when the grace period ended.
    pub runs_still_running: usize,
    /// Deliveries still in flight when the grace period ended.
    pub deliveries_in_flight: u64,
    /// Deliveries not yet delivered (waiting for a retry, or never attempted).
    pub deliveries_pending: u64,
}

impl Application {
    /// Builds the storage, orchestrator (with the configured agents and the webhook component)
    /// and dispatcher, and binds `server.host:server.port`. Deliveries left pending by an
    /// earlier run (a durable store) are sent once due; those that were in flight once their
    /// lease expires. Done deliveries are pruned past `store.retention_secs`.
    ///
    /// # Errors
    /// A store that cannot be opened, agents or delivery settings the orchestrator or
    /// dispatcher refuse, or an address that cannot be bound.
    pub async fn build(settings: CheckedSettings) -> anyhow::Result<Self> {
        let (state, dispatcher) = build_state(&settings).await?;
        let orchestrator = state.orchestrator.clone();
        let storage = state.storage.clone();
        let keys = state.keys().clone();
        let policy = state.auth.policy;
        let events = Arc::clone(&state.events);
        let requested = SocketAddr::new(settings.server.host, settings.server.port);
        let listener = TcpListener::bind(requested)
            .with_context(|| format!("cannot listen on {requested}"))?;
        let address = listener.local_addr()?;
        let grace = settings.shutdown_grace();
        let workers = settings
            .server
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
        let metrics = state.metrics.clone();
        let server = HttpServer::new(move || create_app(state.clone()))
            .disable_signals()
            .shutdown_timeout(grace.as_secs().max(1))
            .workers(workers)
            // Headers must arrive within actix's own 5 s, or the request timeout when it is
            // shorter (the body's time is checked as it is read).
            .client_request_timeout(settings.request_timeout().min(HEADER_TIMEOUT))
            // actix counts connections per worker.
            .max_connections(settings.server.max_connections.div_ceil(workers));
        let server = server.listen(listener)?.run();
        let dispatcher = dispatcher.start();
        let pruner = Pruner::start(storage.outbox(), settings.store.retention());
        let key_tasks = keys.start();
        let upkeep = tokio::spawn(telemetry::upkeep(metrics));
        tracing::info!(store = %storage.url(), "store opened");
        policy.log(settings.server.host);
        Ok(Application {
            address,
            server,
            orchestrator,
            dispatcher,
            pruner,
            storage,
            keys,
            key_tasks,
            upkeep,
            grace,
            events,
        })
    }

    /// The API keys of this server: create, list, revoke.
    pub fn keys(&self) -> &Authenticator {
        &self.keys
    }

    /// The address the server listens on (the real port when 0 was asked for).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Serves until `stop` completes, then stops accepting requests, lets running agents and
    /// in-flight deliveries finish within the grace period, and reports.
    ///
    /// # Errors
    /// The HTTP server failed.
    pub async fn run_until(self, stop: impl Future<Output = ()>) -> anyhow::Result<StopReport> {
        let Application {
            address,
            server,
            orchestrator,
            dispatcher,
            pruner,
            storage,
            keys: _,
            key_tasks,
            upkeep,
            grace,
            events,
        } = self;
        let handle = server.handle();
        let mut serving = tokio::spawn(server);
        tracing::info!(%address, "flock-api listening on http://{address}");
        tokio::select! {
            result = &mut serving => {
                result.context("HTTP server task")?.context("HTTP server")?;
            }
            () = stop => {}
        }
        let deadline = Instant::now() + grace;
        tracing::info!(
            grace_ms = grace.as_millis() as u64,
            "stopping: no new requests; letting agents and deliveries finish"
        );
        // Open event streams end first, or the graceful stop would wait for them.
        events.close();
        handle.stop(true).await;
        let _ = serving.await;
        let runs = orchestrator
            .shutdown(deadline.saturating_duration_since(Instant::now()))
            .await;
        let deliveries = dispatcher
            .shutdown(deadline.saturating_duration_since(Instant::now()))
            .await;
        pruner.stop().await;
        key_tasks.stop().await;
        upkeep.abort();
        storage.close().await;
        let report = StopReport {
            runs_still_running: runs.runs_still_running,
            deliveries_in_flight: deliveries.in_flight,
            deliveries_pending: deliveries.pending,
        };
        if report.runs_still_running > 0
            || report.deliveries_in_flight > 0
            || report.deliveries_pending > 0
        {
            tracing::warn!(
                runs_still_running = report.runs_still_running,
                deliveries_in_flight = report.deliveries_in_flight,
                deliveries_pending = report.deliveries_pending,
                "stopped with work left over"
            );
        } else {
            tracing::info!("stopped cleanly");
        }
        Ok(report)
    }
}
