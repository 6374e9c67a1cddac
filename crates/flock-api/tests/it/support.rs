//! Test support: settings for tests, a server on 127.0.0.1:0, a recording webhook receiver, and
//! signature checks with `flock-signing`.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use flock_api::config::Settings;
use flock_api::startup::{Application, StopReport};
use flock_models::WebhookPayload;
use flock_store::StoreUrl;
use tokio::sync::{Notify, oneshot};

/// Upper bound for anything a test waits for; only ever a failure limit.
pub(crate) const LONG: Duration = Duration::from_secs(30);

/// Settings for a test server: port 0, loopback allowed, fast retries, quiet logs, artifacts
/// and deliveries in memory (tests that need a database name their own).
pub(crate) fn settings() -> Settings {
    let mut s = Settings::read(None, Vec::new()).unwrap();
    s.store.url = StoreUrl::Memory;
    s.server.port = 0;
    s.server.workers = Some(2);
    s.server.shutdown_grace_ms = 5_000;
    s.webhooks.allowed_cidrs = vec!["127.0.0.1/32".parse().unwrap()];
    s.webhooks.retry.base_delay_ms = 50;
    s.webhooks.retry.max_delay_ms = 2_000;
    s.webhooks.timeout_ms = 5_000;
    s
}

/// A server running in this process.
pub(crate) struct TestApp {
    pub(crate) address: SocketAddr,
    pub(crate) client: reqwest::Client,
    /// The server's API keys.
    pub(crate) keys: flock_auth::Authenticator,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<StopReport>>>,
}

impl TestApp {
    pub(crate) async fn start(settings: Settings) -> TestApp {
        let settings = settings
            .check()
            .expect("the test's settings pass the checks");
        let app = Application::build(settings)
            .await
            .expect("the server builds");
        let address = app.address();
        let keys = app.keys().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        TestApp {
            address,
            client: reqwest::Client::new(),
            keys,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A new key of `tenant` with `scopes`, as its holder sends it.
    pub(crate) async fn key(&self, tenant: &str, scopes: &[flock_models::Scope]) -> String {
        let new = flock_auth::NewKey::new(
            flock_models::TenantId::new(tenant).unwrap(),
            "test",
            scopes.iter().copied().collect(),
            None,
        )
        .unwrap();
        self.keys.create(new).await.unwrap().0.expose().to_owned()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub(crate) async fn post(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub(crate) async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub(crate) async fn get_json(&self, path: &str) -> serde_json::Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    /// Stops the server the way SIGTERM does and reports.
    pub(crate) async fn stop(mut self) -> StopReport {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.take().unwrap().await.unwrap().unwrap()
    }

    /// Polls the deliveries of a workflow until `done` holds for them.
    pub(crate) async fn deliveries_until(
        &self,
        correlation: &str,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + LONG;
        loop {
            let body = self
                .get_json(&format!("/api/v1/correlations/{correlation}/webhooks"))
                .await;
            let deliveries = body["deliveries"].as_array().unwrap().clone();
            if done(&deliveries) {
                return deliveries;
            }
            assert!(
                Instant::now() < deadline,
                "deliveries never settled: {deliveries:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// One request a receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) headers: HashMap<String, String>,
    pub(crate) body: Vec<u8>,
    /// The status the receiver answered it with.
    pub(crate) status: u16,
    /// When it arrived.
    pub(crate) at: Instant,
}

impl Received {
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }

    pub(crate) fn payload(&self) -> WebhookPayload {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// Checks both signatures with `flock_signing::verify_webhook`, panicking with the reason
    /// if one fails.
    pub(crate) fn verify(&self, secret: &str) {
        if let Err(reason) = self.check(secret) {
            panic!("signature check failed: {reason}");
        }
    }

    fn check(&self, secret: &str) -> Result<(), flock_signing::WebhookError> {
        flock_signing::verify_webhook(
            |name| self.headers.get(name).map(String::as_str),
            &self.body,
            &[secret],
        )
    }
}

/// How a receiver answers.
#[derive(Debug, Clone, Default)]
pub(crate) struct Script {
    /// Answer the first N requests with 500.
    pub(crate) fail_first: usize,
    /// Hold every answer until [`Receiver::release`] (or forever).
    pub(crate) hold: bool,
    /// Wait this long before answering.
    pub(crate) delay: Duration,
    /// Answer the first N requests whose body has this `sequence` with 500: `(sequence, N)`.
    pub(crate) fail_sequence: Option<(u64, usize)>,
    /// Answer the first N requests with 429 and `Retry-After: S`: `(N, S)`.
    pub(crate) too_many_first: Option<(usize, u64)>,
}

struct Shared {
    received: Mutex<Vec<Received>>,
    /// Requests seen per sequence, for [`Script::fail_sequence`].
    by_sequence: Mutex<HashMap<u64, usize>>,
    count: AtomicUsize,
    script: Script,
    arrived: Notify,
    released: Notify,
    answered: AtomicUsize,
    release_all: std::sync::atomic::AtomicBool,
}

/// A webhook receiver on 127.0.0.1:0 that records every request.
pub(crate) struct Receiver {
    pub(crate) url: String,
    shared: Arc<Shared>,
    server: actix_web::dev::ServerHandle,
}

impl Receiver {
    pub(crate) fn start(script: Script) -> Receiver {
        Receiver::start_on(TcpListener::bind("127.0.0.1:0").unwrap(), script)
    }

    /// A receiver on `127.0.0.1:port`, a port chosen earlier (see [`free_port`]).
    pub(crate) fn start_at(port: u16, script: Script) -> Receiver {
        Receiver::start_on(TcpListener::bind(("127.0.0.1", port)).unwrap(), script)
    }

    fn start_on(listener: TcpListener, script: Script) -> Receiver {
        let shared = Arc::new(Shared {
            received: Mutex::new(Vec::new()),
            by_sequence: Mutex::new(HashMap::new()),
            count: AtomicUsize::new(0),
            script,
            arrived: Notify::new(),
            released: Notify::new(),
            answered: AtomicUsize::new(0),
            release_all: std::sync::atomic::AtomicBool::new(false),
        });
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let data = web::Data::from(Arc::clone(&shared));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(receive))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Receiver {
            url,
            shared,
            server: handle,
        }
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived.
    pub(crate) async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + LONG;
        loop {
            let notified = self.shared.arrived.notified();
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} requests arrived",
                got.len()
            );
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    }

    /// How many requests have been answered (or are being answered after their delay).
    pub(crate) fn answered(&self) -> usize {
        self.shared.answered.load(Ordering::SeqCst)
    }

    /// Lets held answers go.
    pub(crate) fn release(&self) {
        self.shared.release_all.store(true, Ordering::SeqCst);
        self.shared.released.notify_waiters();
    }

    pub(crate) async fn stop(self) {
        self.release();
        self.server.stop(false).await;
    }
}

async fn receive(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let n = shared.count.fetch_add(1, Ordering::SeqCst) + 1;
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let sequence = serde_json::from_slice::<WebhookPayload>(&body)
        .ok()
        .map(|p| p.sequence);
    let failing_sequence = match (shared.script.fail_sequence, sequence) {
        (Some((failing, times)), Some(sequence)) if failing == sequence => {
            let mut seen = shared.by_sequence.lock().unwrap();
            let count = seen.entry(sequence).or_default();
            *count += 1;
            *count <= times
        }
        _ => false,
    };
    let too_many = shared
        .script
        .too_many_first
        .filter(|(first, _)| n <= *first)
        .map(|(_, secs)| secs);
    let status = if too_many.is_some() {
        429
    } else if n <= shared.script.fail_first || failing_sequence {
        500
    } else {
        200
    };
    shared.received.lock().unwrap().push(Received {
        headers,
        body: body.to_vec(),
        status,
        at: Instant::now(),
    });
    shared.arrived.notify_waiters();
    if shared.script.hold {
        loop {
            let released = shared.released.notified();
            if shared.release_all.load(Ordering::SeqCst) {
                break;
            }
            released.await;
        }
    }
    if !shared.script.delay.is_zero() {
        tokio::time::sleep(shared.script.delay).await;
    }
    shared.answered.fetch_add(1, Ordering::SeqCst);
    if let Some(secs) = too_many {
        HttpResponse::TooManyRequests()
            .insert_header(("Retry-After", secs.to_string()))
            .finish()
    } else if status == 500 {
        HttpResponse::InternalServerError().finish()
    } else {
        HttpResponse::Ok().finish()
    }
}

/// A loopback port that was free a moment ago: bound, noted and closed. Nothing listens on it
/// until a test starts a receiver there.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A directory for agent scripts and files, removed on drop.
pub(crate) struct TempDir(std::path::PathBuf);

impl TempDir {
    pub(crate) fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("flock-api-test-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// The directory.
    pub(crate) fn path(&self) -> &std::path::Path {
        &self.0
    }

    /// Writes a file and returns its path as a string.
    pub(crate) fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A command agent (python3) that answers one artifact of type `publishes` whose payload names
/// the input it consumed, after sleeping `sleep_secs`.
pub(crate) fn transform_agent(
    dir: &TempDir,
    name: &str,
    consumes: &str,
    publishes: &str,
    sleep_secs: f64,
) -> flock_api::config::AgentTable {
    let script = dir.write(
        "transform.py",
        r#"
import json, sys, time
request = json.load(sys.stdin)
time.sleep(float(sys.argv[2]))
consumed = request["artifacts"][0]
print(json.dumps({"artifacts": [{
    "type": sys.argv[1],
    "payload": {"from": consumed["id"], "by": request["agent"]},
    "tags": ["generated"],
}]}))
"#,
    );
    serde_json::from_value(serde_json::json!({
        "name": name,
        "consumes": [consumes],
        "publishes": [publishes],
        "command": ["python3", script, publishes, sleep_secs.to_string()],
        "timeout_ms": 20_000,
    }))
    .unwrap()
}
