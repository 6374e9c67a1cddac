//! `GET /api/v1/events`: the caller's tenant's events as Server-Sent Events, from the instance's
//! [`EventHub`](crate::events::EventHub) (whose docs say how it is bounded, resumed and cut
//! off).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::http::header::{CACHE_CONTROL, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use flock_models::{Scope, TypeName, ValidationError};

use super::{Resource, hyphenated_uuid};
use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::events::{
    EventHub, EventKind, Filter, HEARTBEAT, SubscribeError, Subscription, control_frame,
};
use crate::openapi::route_errors;
use crate::state::AppState;

/// How long a client waits before reconnecting, as the stream's `retry:` field says.
const RECONNECT_MS: u64 = 2_000;

/// The longest `Last-Event-ID`: 19 decimal digits always fit an id (a 64-bit number).
pub(crate) const MAX_EVENT_ID_LEN: usize = 19;

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(Resource::new("/events").get(events).finish());
}

route_errors!(
    /// What the event stream answers when it refuses.
    EventErrors: [
        InvalidHeader,
        Unauthorized,
        Forbidden,
        HostNotAllowed,
        Validation,
        TooManyRequests,
        Overloaded,
        ShuttingDown,
    ]
);

/// `GET /api/v1/events`: a `text/event-stream` of the caller's tenant's events. Each event has
/// an `id:` (resume with `Last-Event-ID`), an `event:` naming its kind and one `data:` line of
/// JSON with the same `id` and `kind`, the `correlation_id`, the time `at`, and the artifact
/// (without its payload) or the delivery and the attempt. Control events without an id:
/// `stream.missed` (the resume point is older than what is kept), `stream.overflow` (the
/// client fell `events.queue` events behind and is disconnected; resume with `Last-Event-ID`)
/// and `stream.closed` (the server is stopping). A `: heartbeat` comment comes every
/// `events.heartbeat_ms` (15 s by default).
#[utoipa::path(
    get, path = "/api/v1/events", tag = "events",
    params(crate::openapi::EventsQueryDoc),
    responses(
        (status = 200, content_type = "text/event-stream", body = String, description = "The stream, until the client leaves, falls behind, or the server stops"),
        EventErrors,
    )
)]
pub(crate) async fn events(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Read)?;
    let filter = parse_query(req.query_string())?;
    let last_id = match req.headers().get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .filter(|t| {
                    (1..=MAX_EVENT_ID_LEN).contains(&t.len())
                        && t.bytes().all(|b| b.is_ascii_digit())
                })
                .and_then(|t| t.parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::InvalidHeader,
                        "Last-Event-ID must be the decimal id of an event this stream sent",
                    )
                    .field("Last-Event-ID")
                })?,
        ),
    };
    let hub = Arc::clone(&state.events);
    let subscription = hub
        .subscribe(caller.tenant.clone(), filter, last_id)
        .map_err(|e| match e {
            SubscribeError::Full(max) => ApiError::new(
                ErrorCode::Overloaded,
                format!("{max} event streams are open, the most this server keeps (events.max_subscribers); retry later"),
            )
            .retry_after(5),
            SubscribeError::Closed => ApiError::new(
                ErrorCode::ShuttingDown,
                "the server is stopping; reconnect to another instance",
            ),
        })?;
    let heartbeat = Duration::from_millis(hub.settings().heartbeat_ms);
    let stream = stream(hub, subscription, heartbeat);
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(stream))
}

/// Where a stream stands.
struct Streaming {
    hub: Arc<EventHub>,
    subscription: Subscription,
    /// Frames to send before waiting for more.
    ready: VecDeque<Bytes>,
    heartbeat: tokio::time::Interval,
    /// The queue ended: send what is ready, then end.
    ending: bool,
}

/// The frames of a subscription: a `retry:` field, `stream.missed` and the kept events when
/// resuming, then each event as it comes, heartbeats between, and the last control event when
/// the hub lets it go.
fn stream(
    hub: Arc<EventHub>,
    mut subscription: Subscription,
    heartbeat: Duration,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> {
    let mut ready = VecDeque::new();
    ready.push_back(Bytes::from(format!(
        ": connected\nretry: {RECONNECT_MS}\n\n"
    )));
    ready.extend(subscription.missed.take());
    ready.extend(subscription.backlog.drain(..).map(|e| e.frame()));
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = Streaming {
        hub,
        subscription,
        ready,
        heartbeat: interval,
        ending: false,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(frame) = state.ready.pop_front() {
                return Some((Ok(frame), state));
            }
            if state.ending {
                return None;
            }
            tokio::select! {
                event = state.subscription.queue.recv() => match event {
                    Some(event) => return Some((Ok(event.frame()), state)),
                    None => {
                        state.ending = true;
                        if state.subscription.overflowed.load(Ordering::Acquire) {
                            state.ready.push_back(control_frame("stream.overflow", &serde_json::json!({
                                "message": "this stream fell too far behind (events.queue events waiting) and is closed; reconnect with Last-Event-ID to resume from the events still kept",
                                "queue": state.hub.settings().queue,
                            })));
                        } else if state.hub.is_closed() {
                            state.ready.push_back(control_frame("stream.closed", &serde_json::json!({
                                "message": "the server is stopping; reconnect with Last-Event-ID",
                            })));
                        }
                    }
                },
                _ = state.heartbeat.tick() => return Some((Ok(Bytes::from_static(HEARTBEAT)), state)),
            }
        }
    })
}

/// Parses the stream's query: `correlation_id`, `types` and `kinds` (comma-separated, or the
/// parameter repeated); every error names its parameter.
pub(crate) fn parse_query(text: &str) -> Result<Filter, ApiError> {
    let pairs: Vec<(String, String)> = web::Query::<Vec<(String, String)>>::from_query(text)
        .map_err(|e| {
            ApiError::new(
                ErrorCode::Validation,
                format!("the query string is malformed: {e}"),
            )
        })?
        .into_inner();
    let invalid = |field: &str, message: String| -> ApiError {
        ValidationError::field(field, message).into()
    };
    let mut filter = Filter::default();
    for (name, value) in pairs {
        match name.as_str() {
            "correlation_id" => {
                filter.correlation_id = Some(hyphenated_uuid(&value).ok_or_else(|| {
                    invalid(
                        "correlation_id",
                        format!("`{value}` is not a UUID in its hyphenated form"),
                    )
                })?);
            }
            "types" => {
                for part in value.split(',').filter(|p| !p.is_empty()) {
                    filter
                        .types
                        .push(TypeName::new(part).map_err(|e| e.within("types"))?);
                }
            }
            "kinds" => {
                for part in value.split(',').filter(|p| !p.is_empty()) {
                    let kind = EventKind::from_name(part).ok_or_else(|| {
                        invalid(
                            "kinds",
                            format!(
                                "`{part}` is no event kind; the kinds are {}",
                                EventKind::ALL.map(EventKind::as_str).join(", ")
                            ),
                        )
                    })?;
                    filter.kinds.push(kind);
                }
            }
            other => return Err(invalid(other, format!("unknown query parameter `{other}`"))),
        }
    }
    Ok(filter)
}
