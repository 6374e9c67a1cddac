//! `/api/v1/webhook-secret/rotate`: replaces the caller's tenant's webhook secret, under the
//! `keys:manage` scope. The answer is the only place a tenant's secret is ever shown.

use actix_web::http::header::{CACHE_CONTROL, HeaderValue};
use actix_web::{HttpResponse, web};
use flock_models::Scope;
use flock_models::timestamp::{format_micros, now_micros};
use serde::Serialize;

use super::Resource;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::openapi::route_errors;
use crate::state::AppState;

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        Resource::new("/webhook-secret/rotate")
            .post(rotate_secret)
            .finish(),
    );
}

route_errors!(
    /// What `POST /api/v1/webhook-secret/rotate` answers when it refuses.
    RotateSecretErrors: [
        Unauthorized,
        Forbidden,
        HostNotAllowed,
        TooManyRequests,
        StorageUnavailable,
    ]
);

/// The answer: the new secret, this once, and until when the old one still signs.
#[derive(Serialize)]
struct Rotated<'a> {
    secret: &'a str,
    previous_valid_until: Option<String>,
}

/// `POST /api/v1/webhook-secret/rotate`: a new webhook secret for the caller's tenant. The old
/// one keeps signing beside it (a second signature in `webhook-signature`) until
/// `previous_valid_until`, `webhooks.secret_grace_secs` from now; `X-Flock-Signature` is signed
/// with the new one at once. Rotating again within that time drops the oldest secret. Every
/// instance sharing the store signs with the new secret within 1 s.
///
/// The route takes no body: whatever is sent, with any `Content-Type` or none, is not read.
#[utoipa::path(
    post, path = "/api/v1/webhook-secret/rotate", tag = "webhooks",
    responses(
        (status = 200, body = crate::openapi::RotatedSecretDoc, description = "Rotated; the new secret is shown this once"),
        RotateSecretErrors,
    )
)]
pub(crate) async fn rotate_secret(
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::KeysManage)?;
    let now = now_micros();
    let signing = state
        .secrets
        .rotate(&caller.tenant, now, state.secret_grace)
        .await
        .map_err(|e| ApiError::storage(&e))?;
    let previous_valid_until = signing.previous_until().map(format_micros);
    tracing::info!(
        tenant = %caller.tenant,
        previous_valid_until = previous_valid_until.as_deref().unwrap_or("none"),
        "webhook secret rotated"
    );
    let mut answer = HttpResponse::Ok().json(Rotated {
        secret: signing.current().expose(),
        previous_valid_until,
    });
    answer
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(answer)
}
