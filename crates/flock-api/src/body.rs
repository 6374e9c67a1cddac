//! Reading a request body as JSON, within the size and time limits, with the project's errors:
//! 415 for a body not declared `application/json`, 413 for a body over the limit, 408 for one
//! that arrives too slowly, 400 for one that is not JSON.

use std::time::Duration;

use actix_web::{HttpRequest, web};
use bytes::BytesMut;
use futures_util::StreamExt as _;

use crate::error::{ApiError, ErrorCode};

/// Refuses a body whose `Content-Type` is absent or not `application/json` (parameters such as
/// `charset` are fine): a browser's form or `text/plain` post never reaches a JSON route.
///
/// # Errors
/// 415 `unsupported_media_type`, naming what was sent.
pub(crate) fn require_json(req: &HttpRequest) -> Result<(), ApiError> {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let essence = declared
        .as_deref()
        .map(|v| v.split(';').next().unwrap_or_default().trim());
    match essence {
        Some(essence) if essence.eq_ignore_ascii_case("application/json") => Ok(()),
        Some(_) => Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!(
                "the body is declared `{}`; send it as `Content-Type: application/json`",
                declared
                    .unwrap_or_default()
                    .chars()
                    .take(100)
                    .collect::<String>()
            ),
        )),
        None => Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "the request has no Content-Type; send the body as `Content-Type: application/json`",
        )),
    }
}

/// How much body a request may send, and how long it may take.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit {
    /// The largest body accepted, in bytes (`server.body_limit_bytes`).
    pub bytes: usize,
    /// How long the body may take to arrive (`server.request_timeout_ms`).
    pub timeout: Duration,
}

/// Checks that the body is declared JSON, then reads it whole within `limit`: past its bytes
/// it is refused at once (a `Content-Length` over the limit before anything is read); past its
/// time the request is answered 408 and, its body unread, the connection is closed.
///
/// # Errors
/// 415 when it is not declared JSON; 413 past the size limit; 408 past the time limit; 400
/// when the connection breaks mid-body.
pub(crate) async fn read(
    req: &HttpRequest,
    payload: web::Payload,
    limit: BodyLimit,
) -> Result<web::Bytes, ApiError> {
    require_json(req)?;
    tokio::time::timeout(limit.timeout, read_all(req, payload, limit.bytes))
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::new(
                ErrorCode::RequestTimeout,
                format!(
                    "the request body did not arrive within {} ms",
                    limit.timeout.as_millis()
                ),
            ))
        })
}

async fn read_all(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = BytesMut::with_capacity(declared.map_or(1024, |n| n as usize).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| match e {
            actix_web::error::PayloadError::Overflow => too_large(),
            other => ApiError::new(
                ErrorCode::MalformedJson,
                format!("could not read the request body: {other}"),
            ),
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Parses a body as JSON.
///
/// # Errors
/// 400 `malformed_json`, saying where the JSON breaks.
pub(crate) fn json(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    if body.is_empty() {
        return Err(ApiError::new(
            ErrorCode::MalformedJson,
            "the request body is empty; expected a JSON object",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorCode::MalformedJson,
            format!("the request body is not valid JSON: {e}"),
        )
    })
}
