//! The request rate limit (`[limits]`, off by default): a token bucket per caller, answering
//! 429 `too_many_requests` with `Retry-After` when a caller's bucket is empty.
//!
//! A caller is its bearer token when the request carries one (whether the key is valid is the
//! authentication's business; an invalid one is refused there, and a made-up token buys no
//! more than one bucket among the bounded many), and its client address otherwise. Tokens are
//! kept only as a keyed hash, never as text. `/health` is never limited.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::dev::ServiceRequest;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{HttpResponse, ResponseError as _, web};

use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;

/// How many callers have a bucket at once. Past it, buckets that have refilled (they carry no
/// state) are dropped, at most once a second; a new caller finding no room is refused like an
/// empty bucket.
pub(crate) const MAX_CALLERS: usize = 100_000;

/// The 429 answer for `req` when its caller is past the limit; `None` to serve it.
pub(crate) fn refuse(req: &ServiceRequest) -> Option<HttpResponse> {
    let limiter = req.app_data::<web::Data<AppState>>()?.rate_limit.as_ref()?;
    if matches!(req.path(), "/health" | "/api/v1/openapi.json") {
        return None;
    }
    let wait = limiter.check(req).err()?;
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let error = ApiError::new(
        ErrorCode::TooManyRequests,
        format!(
            "too many requests: at most {} a second on average and {} at once; retry in {secs} s",
            limiter.rate, limiter.burst
        ),
    )
    .retry_after(secs.max(1));
    Some(error.error_response())
}

/// Who a request counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Caller {
    /// A keyed hash of the bearer token.
    Token(u64),
    /// The client's address.
    Address(IpAddr),
}

/// One caller's bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets per caller: `rate` requests a second on average, `burst` at once.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: f64,
    burst: f64,
    hasher: RandomState,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    buckets: HashMap<Caller, Bucket>,
    swept: Option<Instant>,
}

impl RateLimiter {
    /// `rate` requests a second (at least 1), `burst` at once (at least 1).
    pub(crate) fn new(rate: u32, burst: u32) -> Self {
        RateLimiter {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            hasher: RandomState::new(),
            state: Mutex::new(State {
                buckets: HashMap::new(),
                swept: None,
            }),
        }
    }

    /// Takes a token from the bucket of whoever sent `req`; `Err` holds how long to wait.
    pub(crate) fn check(&self, req: &ServiceRequest) -> Result<(), Duration> {
        let caller = match bearer_token(req) {
            Some(token) => Caller::Token(self.hasher.hash_one(token)),
            None => match req.peer_addr() {
                Some(peer) => Caller::Address(peer.ip()),
                // No peer address (a test request, a Unix socket): one shared bucket.
                None => Caller::Address(IpAddr::from([0, 0, 0, 0])),
            },
        };
        self.take(caller, Instant::now())
    }

    fn take(&self, caller: Caller, now: Instant) -> Result<(), Duration> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !state.buckets.contains_key(&caller) && state.buckets.len() >= MAX_CALLERS {
            self.sweep(&mut state, now);
            if state.buckets.len() >= MAX_CALLERS {
                return Err(Duration::from_secs(1));
            }
        }
        let burst = self.burst;
        let bucket = state.buckets.entry(caller).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let refilled = now.saturating_duration_since(bucket.at).as_secs_f64() * self.rate;
        bucket.tokens = (bucket.tokens + refilled).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate))
        }
    }

    /// Drops the buckets that have refilled by now, at most once a second.
    fn sweep(&self, state: &mut State, now: Instant) {
        if state
            .swept
            .is_some_and(|at| now.saturating_duration_since(at) < Duration::from_secs(1))
        {
            return;
        }
        state.swept = Some(now);
        let (rate, burst) = (self.rate, self.burst);
        state.buckets.retain(|_, bucket| {
            bucket.tokens + now.saturating_duration_since(bucket.at).as_secs_f64() * rate < burst
        });
    }
}

/// The token of an `Authorization: Bearer` header, if any.
fn bearer_token(req: &ServiceRequest) -> Option<&[u8]> {
    let value = req.headers().get(AUTHORIZATION)?.as_bytes();
    let scheme = value.get(..7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| value[7..].trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_gives_its_burst_then_its_rate() {
        let limiter = RateLimiter::new(10, 3);
        let caller = Caller::Address(IpAddr::from([10, 0, 0, 1]));
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.take(caller, start), Ok(()));
        }
        let wait = limiter.take(caller, start).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        // Another caller has its own bucket.
        assert_eq!(limiter.take(Caller::Token(7), start), Ok(()));
        // A tenth of a second later, one more.
        let later = start + Duration::from_millis(100);
        assert_eq!(limiter.take(caller, later), Ok(()));
        assert!(limiter.take(caller, later).is_err());
        // Refilling never passes the burst.
        let much_later = start + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(limiter.take(caller, much_later), Ok(()));
        }
        assert!(limiter.take(caller, much_later).is_err());
    }

    #[test]
    fn callers_are_bounded_and_refilled_buckets_make_room() {
        let limiter = RateLimiter::new(1, 2);
        let start = Instant::now();
        let address = |i: usize| {
            let [a, b, c, d] = u32::try_from(i).unwrap().to_be_bytes();
            Caller::Address(IpAddr::from([a, b, c, d]))
        };
        for i in 0..MAX_CALLERS {
            assert_eq!(limiter.take(address(i), start), Ok(()));
        }
        // Full, and nobody has refilled: a new caller is refused, known ones still served.
        assert!(limiter.take(address(MAX_CALLERS), start).is_err());
        assert_eq!(limiter.take(address(0), start), Ok(()));
        // A second later, every bucket but the one used twice has refilled and is dropped.
        let later = start + Duration::from_secs(1);
        assert_eq!(limiter.take(address(MAX_CALLERS), later), Ok(()));
        let state = limiter.state.lock().unwrap();
        assert_eq!(state.buckets.len(), 2, "the busy caller and the new one");
    }
}
