//! A webhook receiver on 127.0.0.1:0 (hyper, HTTP/1.1): it records or counts every request,
//! checks signatures with `flock-signing`, and can fail, hold or never answer on purpose.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs as _};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flock_models::WebhookPayload;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

/// How a [`Receiver`] behaves.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// Answer the first N requests with 500, then 200.
    pub fail_first: usize,
    /// Hold every answer until [`Receiver::release`].
    pub hold: bool,
    /// Never answer at all: read the request, then keep the connection open until the client
    /// gives up (the "dead receiver" of the memory benchmark).
    pub never_answer: bool,
    /// Keep every request (headers and body). Off, the receiver only counts, which is what a
    /// benchmark wants.
    pub record: bool,
    /// Answer every 200 with this JSON body (an HTTP agent's answer), instead of an empty one.
    pub answer: Option<Bytes>,
}

impl Behaviour {
    /// Records every request and answers 200 at once.
    pub fn recording() -> Self {
        Behaviour {
            record: true,
            ..Behaviour::default()
        }
    }
}

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// Header names in lower case, with their values.
    pub headers: HashMap<String, String>,
    /// The raw body.
    pub body: Bytes,
    /// When it arrived (wall clock, the same clock the server stamps artifacts with).
    pub arrived_at: OffsetDateTime,
}

impl Received {
    /// A header's value, or `""`.
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }

    /// The body parsed as the webhook payload of the wire contract.
    ///
    /// # Errors
    /// A body that is not a webhook payload.
    pub fn payload(&self) -> anyhow::Result<WebhookPayload> {
        Ok(serde_json::from_slice(&self.body)?)
    }

    /// The body as generic JSON.
    ///
    /// # Errors
    /// A body that is not JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_slice(&self.body)?)
    }

    /// Checks both signatures (`X-Flock-Signature` and Standard Webhooks' `webhook-signature`)
    /// with `flock_signing::verify_webhook`; the error names the header that failed and why
    /// (never the secret).
    ///
    /// # Errors
    /// A missing, malformed or wrong signature.
    pub fn verify(&self, secret: &str) -> anyhow::Result<()> {
        flock_signing::verify_webhook(
            |name| self.headers.get(name).map(String::as_str),
            &self.body,
            &[secret],
        )?;
        Ok(())
    }
}

struct Shared {
    behaviour: Behaviour,
    received: Mutex<Vec<Received>>,
    /// Requests that arrived.
    count: AtomicUsize,
    /// Requests answered (2xx or not).
    answered: AtomicUsize,
    arrived: Notify,
    released: Notify,
    /// While set, answers wait (see [`Receiver::hold`]).
    holding: AtomicBool,
    /// When on, each body's `artifact.created_at` is read and the arrival latency kept.
    measuring: AtomicBool,
    latencies_us: Mutex<Vec<i64>>,
}

/// A webhook receiver listening on 127.0.0.1 on a free port; stops when dropped.
pub struct Receiver {
    address: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Receiver {
    /// Starts a receiver on the current tokio runtime.
    ///
    /// # Errors
    /// No free port on loopback.
    pub async fn start(behaviour: Behaviour) -> anyhow::Result<Receiver> {
        Self::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST), behaviour).await
    }

    /// Starts a receiver on a free port of `ip` (a loopback address).
    ///
    /// # Errors
    /// No free port there.
    pub async fn start_on(ip: IpAddr, behaviour: Behaviour) -> anyhow::Result<Receiver> {
        let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared {
            holding: AtomicBool::new(behaviour.hold),
            behaviour,
            received: Mutex::new(Vec::new()),
            count: AtomicUsize::new(0),
            answered: AtomicUsize::new(0),
            arrived: Notify::new(),
            released: Notify::new(),
            measuring: AtomicBool::new(false),
            latencies_us: Mutex::new(Vec::new()),
        });
        let task = tokio::spawn(serve(listener, Arc::clone(&shared)));
        Ok(Receiver {
            address,
            shared,
            task,
        })
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Its webhook URL, `http://127.0.0.1:PORT/hook`.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.address)
    }

    /// The same receiver by a host name that resolves to its address: `http://NAME:PORT/hook`.
    pub fn url_by_name(&self, name: &str) -> String {
        format!("http://{name}:{}/hook", self.address.port())
    }

    /// How many requests arrived.
    pub fn count(&self) -> usize {
        self.shared.count.load(Ordering::SeqCst)
    }

    /// How many requests were answered.
    pub fn answered(&self) -> usize {
        self.shared.answered.load(Ordering::SeqCst)
    }

    /// Requests that arrived and are not answered yet: the receiver is holding them.
    pub fn holding(&self) -> usize {
        self.count().saturating_sub(self.answered())
    }

    /// The recorded requests (with [`Behaviour::record`]), in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.shared
            .received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until at least `n` requests arrived, at most `limit`.
    ///
    /// # Errors
    /// Fewer than `n` arrived within `limit`.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let notified = self.shared.arrived.notified();
            let got = self.count();
            if got >= n {
                return Ok(());
            }
            if Instant::now() >= deadline {
                anyhow::bail!("only {got} of {n} requests arrived within {limit:?}");
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
    }

    /// Holds every answer from now on until [`Receiver::release`].
    pub fn hold(&self) {
        self.shared.holding.store(true, Ordering::SeqCst);
    }

    /// Lets every held answer go, and answers at once from now on.
    pub fn release(&self) {
        self.shared.holding.store(false, Ordering::SeqCst);
        self.shared.released.notify_waiters();
    }

    /// Starts or stops keeping the arrival latency (arrival − the body's `artifact.created_at`)
    /// of every request.
    pub fn measure_latency(&self, on: bool) {
        self.shared.measuring.store(on, Ordering::SeqCst);
    }

    /// Takes the latencies kept so far, in microseconds.
    pub fn take_latencies_us(&self) -> Vec<i64> {
        std::mem::take(
            &mut *self
                .shared
                .latencies_us
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.release();
        self.task.abort();
    }
}

/// Accepts connections until aborted; aborting it drops the set and with it every connection.
async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        while connections.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        connections.spawn(async move {
            let service = service_fn(move |request| handle(request, Arc::clone(&shared)));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    request: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    let arrived_at = OffsetDateTime::now_utc();
    if shared.measuring.load(Ordering::Relaxed)
        && let Some(created_at) = created_at(&body)
    {
        let micros = (arrived_at - created_at).whole_microseconds();
        shared
            .latencies_us
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(i64::try_from(micros).unwrap_or(i64::MAX));
    }
    if shared.behaviour.record {
        let headers = parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        shared
            .received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Received {
                headers,
                body,
                arrived_at,
            });
    }
    let n = shared.count.fetch_add(1, Ordering::SeqCst) + 1;
    shared.arrived.notify_waiters();
    if shared.behaviour.never_answer {
        std::future::pending::<()>().await;
    }
    loop {
        let released = shared.released.notified();
        if !shared.holding.load(Ordering::SeqCst) {
            break;
        }
        released.await;
    }
    let status = if n <= shared.behaviour.fail_first {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    shared.answered.fetch_add(1, Ordering::SeqCst);
    let body = match (&shared.behaviour.answer, status) {
        (Some(answer), StatusCode::OK) => answer.clone(),
        _ => Bytes::new(),
    };
    let json = !body.is_empty();
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    if json {
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
    }
    Ok(response)
}

/// A host name other than `localhost` that resolves only to IPv4 loopback addresses (from
/// `/etc/hosts`, such as the machine's own name), with the address it resolves to. The API
/// refuses `localhost` and literal addresses at once; a webhook to such a name is accepted and
/// refused by the SSRF guard only where the delivery client resolves it.
pub fn loopback_alias() -> Option<(String, IpAddr)> {
    let hosts = std::fs::read_to_string("/etc/hosts").ok()?;
    hosts
        .lines()
        .map(|line| line.split('#').next().unwrap_or(""))
        .flat_map(|line| {
            line.split_whitespace()
                .skip(1)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|name| !name.to_ascii_lowercase().contains("localhost"))
        .find_map(|name| {
            let addrs: Vec<SocketAddr> = (name.as_str(), 0).to_socket_addrs().ok()?.collect();
            let first = addrs.first()?.ip();
            addrs
                .iter()
                .all(|a| matches!(a.ip(), IpAddr::V4(v4) if v4.is_loopback()))
                .then_some((name, first))
        })
}

/// `artifact.created_at` of a webhook body, found without parsing the whole body: the last
/// `"created_at":"` key (the artifact's own comes after its payload).
fn created_at(body: &[u8]) -> Option<OffsetDateTime> {
    const KEY: &[u8] = b"\"created_at\":\"";
    let start = body.windows(KEY.len()).rposition(|w| w == KEY)? + KEY.len();
    let len = body[start..].iter().position(|&b| b == b'"')?;
    let text = std::str::from_utf8(&body[start..start + len]).ok()?;
    flock_models::timestamp::parse(text).ok()
}

#[cfg(test)]
mod tests {
    use super::created_at;

    #[test]
    fn reads_created_at_from_a_body() {
        let body = br#"{"event_type":"artifact.created","sequence":1,"artifact":{"id":"x","created_at":"2026-11-28T12:00:00.123456Z","tags":[]},"timestamp":"2026-11-28T12:00:00.125Z"}"#;
        let at = created_at(body).unwrap();
        assert_eq!(at.microsecond(), 123_456);
        assert!(created_at(b"{}").is_none());
    }
}
