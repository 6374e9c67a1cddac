//! A scripted webhook receiver for tests: a real HTTP/1 server on 127.0.0.1:0 that records every
//! request (arrival time, headers, body) and answers from a script.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};

/// One answer of the script.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) delay: Duration,
    pub(crate) headers: Vec<(&'static str, String)>,
    /// Answer only after a permit of this semaphore is released (held, never returned).
    pub(crate) hold: Option<Arc<Semaphore>>,
}

impl Reply {
    pub(crate) fn status(status: u16) -> Self {
        Reply {
            status,
            delay: Duration::ZERO,
            headers: Vec::new(),
            hold: None,
        }
    }

    pub(crate) fn ok() -> Self {
        Reply::status(200)
    }

    pub(crate) fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub(crate) fn held_by(mut self, gate: Arc<Semaphore>) -> Self {
        self.hold = Some(gate);
        self
    }
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub(crate) at: Instant,
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Recorded {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

struct State {
    script: Mutex<VecDeque<Reply>>,
    fallback: Reply,
    requests: Mutex<Vec<Recorded>>,
    arrived: Notify,
}

/// The running receiver; it stops when dropped.
pub(crate) struct Receiver {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// A receiver that answers 200 to everything.
    pub(crate) async fn ok() -> Self {
        Receiver::start(Vec::new(), Reply::ok()).await
    }

    /// A receiver that answers `script` in order, then `fallback` forever.
    pub(crate) async fn start(script: Vec<Reply>, fallback: Reply) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State {
            script: Mutex::new(script.into()),
            fallback,
            requests: Mutex::new(Vec::new()),
            arrived: Notify::new(),
        });
        let accept_state = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = Arc::clone(&accept_state);
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(answer(state, request).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { addr, state, task }
    }

    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:<port><path>`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests have arrived (panics after a generous minute).
    pub(crate) async fn wait_for(&self, n: usize) -> Vec<Recorded> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let arrived = self.state.arrived.notified();
            let requests = self.requests();
            if requests.len() >= n {
                return requests;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "only {} of {n} requests arrived",
                requests.len()
            );
            let _ = tokio::time::timeout(left, arrived).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(state: Arc<State>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let at = Instant::now();
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    let reply = {
        let mut script = state.script.lock().unwrap();
        script.pop_front().unwrap_or_else(|| state.fallback.clone())
    };
    state.requests.lock().unwrap().push(Recorded {
        at,
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        headers: parts.headers,
        body,
    });
    state.arrived.notify_waiters();
    if let Some(gate) = &reply.hold {
        gate.acquire().await.expect("gate open").forget();
    }
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut response = Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        response = response.header(*name, value);
    }
    response
        .body(Full::new(Bytes::from_static(b"ok")))
        .expect("valid response")
}
