//! `/api/v1/keys`: the caller's tenant's API keys: create (the only answer that shows a key),
//! list and revoke, under the `keys:manage` scope.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use flock_auth::{AuthError, KeyRecord, NewKey};
use flock_models::{Scope, Scopes, ValidationError};
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

use super::{Resource, path_id};
use crate::auth::Caller;
use crate::body;
use crate::error::{ApiError, ErrorCode};
use crate::openapi::route_errors;
use crate::state::AppState;

/// The pattern of a key's name: no control characters (what `flock-auth` refuses).
pub(crate) const NAME_PATTERN: &str = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$";

/// The longest `expires_in_secs`: ten years.
pub(crate) const MAX_EXPIRES_IN_SECS: u64 = 10 * 366 * 24 * 60 * 60;

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        Resource::new("/keys")
            .post(create_key)
            .get(list_keys)
            .finish(),
    )
    .service(Resource::new("/keys/{id}").delete(revoke_key).finish());
}

route_errors!(
    /// What `POST /api/v1/keys` answers when it refuses.
    CreateKeyErrors: [
        MalformedJson,
        Unauthorized,
        Forbidden,
        HostNotAllowed,
        RequestTimeout,
        Conflict,
        PayloadTooLarge,
        UnsupportedMediaType,
        Validation,
        TooManyRequests,
        StorageUnavailable,
    ]
);

route_errors!(
    /// What `GET /api/v1/keys` answers when it refuses.
    ListKeysErrors: [
        Unauthorized,
        Forbidden,
        HostNotAllowed,
        TooManyRequests,
        StorageUnavailable,
    ]
);

route_errors!(
    /// What `DELETE /api/v1/keys/{id}` answers when it refuses.
    RevokeKeyErrors: [
        Unauthorized,
        Forbidden,
        HostNotAllowed,
        NotFound,
        TooManyRequests,
        StorageUnavailable,
    ]
);

/// A new key as asked for.
#[derive(Debug)]
struct CreateKey {
    name: String,
    scopes: Scopes,
    expires_in: Option<Duration>,
}

/// Reads `{"scopes": [...], "name"?, "expires_in_secs"?}`; `null` counts as absent.
fn parse(value: Value) -> Result<CreateKey, ValidationError> {
    let Value::Object(map) = value else {
        return Err(ValidationError::whole(
            "the body must be a JSON object with `scopes`",
        ));
    };
    if let Some(unknown) = map
        .keys()
        .find(|k| !["name", "scopes", "expires_in_secs"].contains(&k.as_str()))
    {
        return Err(ValidationError::field(
            unknown.clone(),
            "unknown field; the fields are `name`, `scopes` and `expires_in_secs`",
        ));
    }
    let name = match map.get("name") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(name)) => name.clone(),
        Some(_) => return Err(ValidationError::field("name", "must be a string")),
    };
    let scopes = match map.get("scopes") {
        None | Some(Value::Null) => {
            return Err(ValidationError::field("scopes", "is required"));
        }
        Some(Value::Array(items)) => {
            let names = items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    item.as_str().ok_or_else(|| {
                        ValidationError::field(format!("scopes[{i}]"), "must be a scope name")
                    })
                })
                .collect::<Result<Vec<&str>, _>>()?;
            Scopes::parse(&names).map_err(|e| e.within("scopes"))?
        }
        Some(_) => {
            return Err(ValidationError::field(
                "scopes",
                "must be a list of scope names",
            ));
        }
    };
    let expires_in = match map.get("expires_in_secs") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => {
            let secs = n
                .as_u64()
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| {
                            f.fract() == 0.0 && *f >= 1.0 && *f <= MAX_EXPIRES_IN_SECS as f64
                        })
                        .map(|f| f as u64)
                })
                .filter(|s| (1..=MAX_EXPIRES_IN_SECS).contains(s))
                .ok_or_else(|| {
                    ValidationError::field(
                        "expires_in_secs",
                        format!(
                            "must be a whole number of seconds from 1 to {MAX_EXPIRES_IN_SECS}"
                        ),
                    )
                })?;
            Some(Duration::from_secs(secs))
        }
        Some(_) => {
            return Err(ValidationError::field(
                "expires_in_secs",
                "must be a whole number of seconds",
            ));
        }
    };
    Ok(CreateKey {
        name,
        scopes,
        expires_in,
    })
}

/// The creation answer: the key, this once, and its record.
#[derive(Serialize)]
struct Created<'a> {
    key: &'a str,
    #[serde(flatten)]
    record: &'a KeyRecord,
}

fn key_error(err: AuthError) -> ApiError {
    match err {
        AuthError::TooManyKeys { .. } => ApiError::new(ErrorCode::Conflict, err.to_string()),
        other => ApiError::storage(&other),
    }
}

/// `POST /api/v1/keys`: a new key of the caller's tenant, with scopes the caller has. The
/// answer is the only place the key ever appears.
#[utoipa::path(
    post, path = "/api/v1/keys", tag = "keys",
    request_body = crate::openapi::CreateKeyRequestDoc,
    responses(
        (status = 201, body = crate::openapi::CreatedKeyDoc, description = "Created; the key is shown this once",
            links(
                ("revoke" = (operation_id = "revoke_key", parameters(("id" = "$response.body#/id")), description = "Revoke this key")),
            )
        ),
        CreateKeyErrors,
    )
)]
pub(crate) async fn create_key(
    req: HttpRequest,
    caller: Caller,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::KeysManage)?;
    let raw = body::read(&req, payload, state.body_limit).await?;
    let request = parse(body::json(&raw)?)?;
    let missing: Vec<String> = request
        .scopes
        .iter()
        .filter(|scope| !caller.scopes.contains(*scope))
        .map(|scope| format!("`{scope}`"))
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "this key lacks the {} scope, so it cannot give it to a new key",
                missing.join(", ")
            ),
        ));
    }
    let expires_at = request
        .expires_in
        .map(|after| OffsetDateTime::now_utc() + after);
    let new = NewKey::new(
        caller.tenant.clone(),
        request.name,
        request.scopes,
        expires_at,
    )?;
    let (key, record) = state.keys().create(new).await.map_err(key_error)?;
    tracing::info!(key_id = %record.id, tenant = %record.tenant, scopes = %record.scopes, "API key created");
    let mut answer = HttpResponse::build(StatusCode::CREATED).json(Created {
        key: key.expose(),
        record: &record,
    });
    answer
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(answer)
}

/// `GET /api/v1/keys`: the caller's tenant's keys, oldest first, revoked ones included; never
/// a key itself.
#[utoipa::path(
    get, path = "/api/v1/keys", tag = "keys",
    responses(
        (status = 200, body = crate::openapi::KeysDoc, description = "The tenant's keys"),
        ListKeysErrors,
    )
)]
pub(crate) async fn list_keys(
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::KeysManage)?;
    let keys = state
        .keys()
        .list(Some(&caller.tenant))
        .await
        .map_err(key_error)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "keys": keys })))
}

/// `DELETE /api/v1/keys/{id}`: revokes a key of the caller's tenant: refused at once on this
/// instance, within 2 s on the others. Revoking a revoked key again changes nothing.
#[utoipa::path(
    delete, path = "/api/v1/keys/{id}", tag = "keys",
    params(("id" = uuid::Uuid, Path, description = "The key's id")),
    responses(
        (status = 204, description = "Revoked"),
        RevokeKeyErrors,
    )
)]
pub(crate) async fn revoke_key(
    caller: Caller,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::KeysManage)?;
    let id = path_id(&path, "API key")?;
    let revoked = state
        .keys()
        .revoke(Some(&caller.tenant), id)
        .await
        .map_err(key_error)?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                format!("no API key of tenant `{}` has the id {id}", caller.tenant),
            )
        })?;
    tracing::info!(key_id = %revoked.id, tenant = %revoked.tenant, "API key revoked");
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn create_requests_are_read_field_by_field() {
        let ok = parse(json!({"scopes": ["read", "publish"], "name": "ci", "expires_in_secs": 60}))
            .unwrap();
        assert_eq!(ok.name, "ci");
        assert_eq!(ok.expires_in, Some(Duration::from_secs(60)));
        assert!(ok.scopes.contains(Scope::Read) && ok.scopes.contains(Scope::Publish));
        let nulls =
            parse(json!({"scopes": ["metrics"], "name": null, "expires_in_secs": null})).unwrap();
        assert_eq!((nulls.name.as_str(), nulls.expires_in), ("", None));
        assert_eq!(
            parse(json!({"scopes": ["read"], "expires_in_secs": 2.0}))
                .unwrap()
                .expires_in,
            Some(Duration::from_secs(2))
        );
        for (body, field) in [
            (json!([]), None),
            (json!({}), Some("scopes")),
            (json!({"scopes": "read"}), Some("scopes")),
            (json!({"scopes": ["root"]}), Some("scopes[0]")),
            (json!({"scopes": ["read", 1]}), Some("scopes[1]")),
            (json!({"scopes": ["read"], "name": 3}), Some("name")),
            (
                json!({"scopes": ["read"], "expires_in_secs": 0}),
                Some("expires_in_secs"),
            ),
            (
                json!({"scopes": ["read"], "expires_in_secs": -1}),
                Some("expires_in_secs"),
            ),
            (
                json!({"scopes": ["read"], "expires_in_secs": 1.5}),
                Some("expires_in_secs"),
            ),
            (
                json!({"scopes": ["read"], "expires_in_secs": MAX_EXPIRES_IN_SECS + 1}),
                Some("expires_in_secs"),
            ),
            (
                json!({"scopes": ["read"], "tenant": "other"}),
                Some("tenant"),
            ),
        ] {
            let err = parse(body.clone()).unwrap_err();
            assert_eq!(err.field_name(), field, "{body}: {err}");
        }
    }
}
