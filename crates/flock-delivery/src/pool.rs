//! The webhook client's connections: HTTP/1.1 connections made through the guarded connector
//! and kept per destination between attempts.
//!
//! A request takes the destination's most recently used idle connection, or makes one. Its
//! connection comes back to the pool once the answer's body has been read to its end; any other
//! ending (a long body, a timeout, an error, a receiver that closes) drops it. Each destination
//! keeps at most `max_idle` idle connections; one unused for [`IDLE_FOR`] is closed, by the next
//! request to its destination or by a sweep every [`SWEEP_EVERY`].
//!
//! A request that a kept connection refused before a byte of it was written (the receiver
//! closed the connection while it was idle) is sent again on another connection: it never
//! reached the receiver, so no attempt is lost or doubled. A request on a new connection is
//! never sent twice.
//!
//! hyper-util's pooled client did the same before; this pool does less per request (no
//! connect raced against the checkout, no task spawned to wait for a connection to be ready
//! again), which measured faster (docs/benchmarks.md, "A connection pool of our own, and a
//! cheaper event record").

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::time::Instant;
use tower_service::Service as _;

use crate::ssrf::GuardedResolver;

/// How long an unused connection is kept (as long as a browser would).
pub(crate) const IDLE_FOR: Duration = Duration::from_secs(90);

/// How often the connections of destinations nobody sends to are looked at.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Connects to receivers: TCP through the guarded resolver, TLS by rustls for `https`.
pub(crate) type Connector = HttpsConnector<HttpConnector<GuardedResolver>>;

type Sender = SendRequest<Full<Bytes>>;

/// Why a request got no answer.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be made (the guard, the name, TCP, TLS or the HTTP handshake).
    Connect(Box<dyn StdError + Send + Sync>),
    /// The connection failed while the request was sent or its answer read.
    Request(hyper::Error),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Connect(_) => "could not connect",
            SendError::Request(_) => "request failed",
        })
    }
}

impl StdError for SendError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            SendError::Connect(e) => Some(&**e),
            SendError::Request(e) => Some(e),
        }
    }
}

/// Where a connection goes: the scheme (TLS or not) and the host and port.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    https: bool,
    authority: Authority,
}

/// An idle connection and since when.
struct Parked {
    sender: Sender,
    since: Instant,
}

impl Parked {
    fn usable(&self, now: Instant) -> bool {
        !self.sender.is_closed() && now.duration_since(self.since) < IDLE_FOR
    }
}

struct Idle {
    by_key: HashMap<Key, Vec<Parked>>,
    /// Whether the sweeping task runs (it starts with the first connection kept).
    sweeping: bool,
}

struct Shared {
    connector: Connector,
    max_idle: usize,
    idle: Mutex<Idle>,
}

/// The pool: cheap to clone, shared by every attempt.
#[derive(Clone)]
pub(crate) struct Pool {
    shared: Arc<Shared>,
}

/// A connection in use, with the answer it got: give it back with [`InUse::release`] once the
/// answer's body has been read to its end, or drop it to close it.
pub(crate) struct InUse {
    shared: Arc<Shared>,
    key: Key,
    sender: Sender,
}

impl InUse {
    /// Keeps the connection for the destination's next request.
    pub(crate) fn release(self) {
        self.shared.park(self.key, self.sender);
    }
}

impl Pool {
    /// A pool connecting through `connector` and keeping at most `max_idle` idle connections
    /// per destination.
    pub(crate) fn new(connector: Connector, max_idle: usize) -> Self {
        Pool {
            shared: Arc::new(Shared {
                connector,
                max_idle,
                idle: Mutex::new(Idle {
                    by_key: HashMap::new(),
                    sweeping: false,
                }),
            }),
        }
    }

    /// `request` made ready to send to `uri` (absolute: `http` or `https`, with a host): the
    /// request's URI origin-form, with a `Host` header unless it has one. `None` for a URI
    /// without a scheme this pool speaks, without a host, or with user info.
    pub(crate) fn prepare(mut request: Request<Full<Bytes>>, uri: Uri) -> Option<Prepared> {
        let https = match uri.scheme() {
            Some(s) if *s == Scheme::HTTPS => true,
            Some(s) if *s == Scheme::HTTP => false,
            _ => return None,
        };
        let authority = uri.authority()?.clone();
        // The authority is the host and any port; a scheme's default port is left out.
        let host = match uri.port_u16() {
            Some(port) if port == if https { 443 } else { 80 } => uri.host()?,
            _ => authority.as_str(),
        };
        if host.contains('@') {
            return None;
        }
        let host = HeaderValue::from_str(host).ok()?;
        let path = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *request.uri_mut() = Uri::from(path);
        request.headers_mut().entry(HOST).or_insert(host);
        Some(Prepared {
            request,
            key: Key { https, authority },
            connect_to: uri,
        })
    }

    /// Sends a prepared request and waits for its answer's head.
    ///
    /// # Errors
    /// No connection could be made, or the one used failed before the answer's head.
    pub(crate) async fn send(
        &self,
        prepared: Prepared,
    ) -> Result<(Response<Incoming>, InUse), SendError> {
        let Prepared {
            mut request,
            key,
            connect_to,
        } = prepared;
        loop {
            let (mut sender, kept) = match self.shared.take(&key) {
                Some(sender) => (sender, true),
                None => (self.connect(&connect_to).await?, false),
            };
            if let Err(error) = sender.ready().await {
                // A kept connection that closed while idle: take the next one.
                if kept {
                    continue;
                }
                return Err(SendError::Connect(Box::new(error)));
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let in_use = InUse {
                        shared: Arc::clone(&self.shared),
                        key,
                        sender,
                    };
                    return Ok((response, in_use));
                }
                Err(mut error) => match error.take_message() {
                    // Not a byte of it was written: safe to send on another connection.
                    Some(unsent) if kept => request = unsent,
                    _ => return Err(SendError::Request(error.into_error())),
                },
            }
        }
    }

    /// A new connection to `uri`'s destination, its HTTP/1.1 side driven by a task of its own.
    async fn connect(&self, uri: &Uri) -> Result<Sender, SendError> {
        let mut connector = self.shared.connector.clone();
        poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(SendError::Connect)?;
        let io = connector
            .call(uri.clone())
            .await
            .map_err(SendError::Connect)?;
        let (sender, connection) = http1::handshake(io)
            .await
            .map_err(|e| SendError::Connect(Box::new(e)))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "webhook connection ended");
            }
        });
        Ok(sender)
    }
}

/// A request ready to send: its URI made origin-form, its `Host` set, and where it goes.
pub(crate) struct Prepared {
    request: Request<Full<Bytes>>,
    key: Key,
    connect_to: Uri,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The destination's most recently used idle connection that is still usable; the ones
    /// found closed or too old on the way are closed.
    fn take(&self, key: &Key) -> Option<Sender> {
        let now = Instant::now();
        let mut closed = Vec::new();
        let found = {
            let mut idle = self.lock();
            // A destination whose list runs empty keeps it (its next connection comes back
            // to it); the sweep removes empty lists.
            let parked = idle.by_key.get_mut(key)?;
            let mut found = None;
            while let Some(p) = parked.pop() {
                if p.usable(now) {
                    found = Some(p.sender);
                    break;
                }
                closed.push(p);
            }
            found
        };
        drop(closed);
        found
    }

    /// Keeps `sender` for `key`, unless the destination has `max_idle` kept already.
    fn park(self: &Arc<Self>, key: Key, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let start_sweeping = {
            let mut idle = self.lock();
            let parked = idle.by_key.entry(key).or_default();
            if parked.len() >= self.max_idle {
                return;
            }
            parked.push(Parked {
                sender,
                since: Instant::now(),
            });
            !std::mem::replace(&mut idle.sweeping, true)
        };
        if start_sweeping {
            tokio::spawn(sweep(Arc::downgrade(self)));
        }
    }

    /// Closes the idle connections that are too old or were closed by their receivers, and
    /// forgets the destinations left with none.
    fn sweep(&self) {
        let now = Instant::now();
        let mut closed = Vec::new();
        {
            let mut idle = self.lock();
            idle.by_key.retain(|_, parked| {
                let (keep, old): (Vec<_>, Vec<_>) = parked.drain(..).partition(|p| p.usable(now));
                closed.extend(old);
                *parked = keep;
                !parked.is_empty()
            });
        }
        drop(closed);
    }
}

/// Sweeps the pool every [`SWEEP_EVERY`] until it is dropped.
async fn sweep(shared: Weak<Shared>) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.sweep();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepared(url: &str) -> Prepared {
        Pool::prepare(
            Request::new(Full::new(Bytes::new())),
            Uri::try_from(url).unwrap(),
        )
        .expect("prepared")
    }

    #[test]
    fn a_request_is_made_origin_form_with_its_host() {
        let p = prepared("https://hooks.example:8443/a/b?token=t1");
        assert_eq!(p.request.uri(), "/a/b?token=t1");
        assert_eq!(p.request.headers()[HOST], "hooks.example:8443");
        assert!(p.key.https);
        assert_eq!(p.connect_to, "https://hooks.example:8443/a/b?token=t1");
        let p = prepared("http://hooks.example:80");
        assert_eq!(p.request.uri(), "/");
        assert_eq!(p.request.headers()[HOST], "hooks.example");
        assert!(!p.key.https);
        let p = prepared("https://[::1]:443/hook");
        assert_eq!(p.request.headers()[HOST], "[::1]");
        let p = prepared("http://[::1]:9000/hook");
        assert_eq!(p.request.headers()[HOST], "[::1]:9000");
    }

    #[test]
    fn a_host_header_of_the_request_is_kept() {
        let request = Request::post("/")
            .header(HOST, "receiver.example")
            .body(Full::new(Bytes::new()))
            .expect("a request");
        let uri = Uri::from_static("http://127.0.0.1:9000/hook");
        let p = Pool::prepare(request, uri).expect("prepared");
        assert_eq!(p.request.headers()[HOST], "receiver.example");
    }

    #[test]
    fn only_http_and_https_with_a_host_and_no_user_info_are_sent() {
        for url in [
            "ftp://hooks.example/x",
            "/just/a/path",
            "http://user:password@hooks.example/x",
        ] {
            let uri = Uri::try_from(url).unwrap();
            let request = Request::new(Full::new(Bytes::new()));
            assert!(Pool::prepare(request, uri).is_none(), "{url}");
        }
    }
}
