//! Who a request acts for: the [`Caller`], its tenant and its scopes, which every handler that
//! reads or changes a tenant's data takes. Authentication happens here, when the handler's
//! `Caller` is extracted: an `Authorization: Bearer <key>` header is checked by the
//! [`Authenticator`] (a cache hit on the hot path); a request without one acts as tenant
//! `default` with every scope only where the [`AuthPolicy`] serves keyless requests, and only
//! when its `Host` is a loopback name or address (against DNS rebinding). Routes that take no
//! `Caller` (`/health`, the OpenAPI document, 404 and 405 answers) are open.

use std::net::IpAddr;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::header::{AUTHORIZATION, HOST};
use actix_web::{FromRequest, HttpRequest, web};
use flock_auth::{AuthError, Authenticator};
use flock_models::{Scope, Scopes, TenantId};
use futures_util::future::LocalBoxFuture;

use crate::config::AuthMode;
use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;

/// Whether requests without a key are served, decided once at start from `auth.mode` and the
/// listen address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthPolicy {
    /// `auto` on a loopback address: a request without a key acts as tenant `default`.
    KeylessLoopback,
    /// Every request that takes a `Caller` needs a key.
    KeysRequired,
    /// `open`: a request without a key acts as tenant `default`, wherever the server listens.
    Open,
}

impl AuthPolicy {
    /// The policy of `mode` for a server listening on `host`.
    pub(crate) fn decide(mode: AuthMode, host: IpAddr) -> AuthPolicy {
        match mode {
            AuthMode::Auto if host.is_loopback() => AuthPolicy::KeylessLoopback,
            AuthMode::Auto | AuthMode::Keys => AuthPolicy::KeysRequired,
            AuthMode::Open => AuthPolicy::Open,
        }
    }

    /// Whether a request without a key is served.
    pub(crate) fn keyless(self) -> bool {
        self != AuthPolicy::KeysRequired
    }

    /// Logs the one start-up line that says how requests are authenticated.
    pub(crate) fn log(self, host: IpAddr) {
        match self {
            AuthPolicy::KeylessLoopback => tracing::info!(
                auth = "keyless-loopback",
                "auth: listening on loopback only, so requests without an API key act as tenant `default` with every scope; set auth.mode = \"keys\" to require keys"
            ),
            AuthPolicy::KeysRequired => tracing::info!(
                auth = "keys",
                "auth: every request needs an API key (Authorization: Bearer <key>); create one with `flock-api keys create`"
            ),
            AuthPolicy::Open => tracing::warn!(
                auth = "open",
                %host,
                "auth: OPEN mode: requests without an API key act as tenant `default` with every scope (only requests naming a loopback host are served without a key)"
            ),
        }
    }
}

/// What authentication needs: the policy and the key checker.
#[derive(Debug, Clone)]
pub(crate) struct Auth {
    pub(crate) policy: AuthPolicy,
    pub(crate) keys: Authenticator,
}

/// The tenant a request acts for and what it may do there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    /// Whose artifacts, workflows and deliveries the request sees and makes.
    pub(crate) tenant: TenantId,
    /// What it may do.
    pub(crate) scopes: Scopes,
}

impl Caller {
    /// The default tenant with every scope: a request served without a key.
    pub(crate) fn keyless() -> Self {
        Caller {
            tenant: TenantId::default_tenant(),
            scopes: Scopes::all(),
        }
    }

    /// Refuses the request with 403 `forbidden`, naming the scope, unless the caller has it.
    pub(crate) fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.contains(scope) {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("this key lacks the `{scope}` scope this route needs"),
            ))
        }
    }

    /// Authenticates `req` under `auth`.
    ///
    /// # Errors
    /// 401 `unauthorized` without a usable key where one is needed, 403 `host_not_allowed` for
    /// a keyless request naming a host that is not loopback or sent by a page on another
    /// origin, 503 when the key store failed.
    pub(crate) async fn authenticate(req: &HttpRequest, auth: &Auth) -> Result<Caller, ApiError> {
        let Some(header) = req.headers().get(AUTHORIZATION) else {
            if !auth.policy.keyless() {
                return Err(unauthorized(
                    "this route needs an API key: send `Authorization: Bearer <key>`",
                ));
            }
            check_host(req)?;
            check_origin(req)?;
            return Ok(Caller::keyless());
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <key>`"))?;
        match auth.keys.authenticate(token).await {
            Ok(record) => Ok(Caller {
                tenant: record.tenant.clone(),
                scopes: record.scopes,
            }),
            Err(AuthError::Store(err)) => {
                tracing::error!(error = %err, "cannot read API keys");
                Err(ApiError::new(
                    ErrorCode::StorageUnavailable,
                    "storage is unavailable; try again",
                ))
            }
            Err(err) => Err(unauthorized(err.to_string())),
        }
    }
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, message)
}

/// Refuses a keyless request whose `Host` is not a loopback name or address (any port): a web
/// page on another origin that rebinds its name to 127.0.0.1 still sends its own name. A
/// request without `Host` is no browser's and passes.
fn check_host(req: &HttpRequest) -> Result<(), ApiError> {
    let Some(host) = req.headers().get(HOST) else {
        return Ok(());
    };
    let text = host.to_str().unwrap_or_default();
    if is_loopback_host(text) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::HostNotAllowed,
            format!(
                "a request without an API key must name a loopback host (localhost, 127.0.0.1, [::1]), not `{}`; send an API key, or connect through a loopback name",
                text.chars().take(100).collect::<String>()
            ),
        ))
    }
}

/// Refuses a keyless request that a web page on another origin sent: its `Origin` is not a
/// loopback `http(s)` origin (or is `null`), or `Sec-Fetch-Site` says `cross-site`. Routes
/// without a body (a redelivery, a secret rotation) are not guarded by the JSON-only rule, so
/// without this any page could drive them on a keyless server. Requests with no such headers
/// (curl, SDKs) pass.
fn check_origin(req: &HttpRequest) -> Result<(), ApiError> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let cross_site = header("sec-fetch-site").is_some_and(|v| v.eq_ignore_ascii_case("cross-site"));
    let foreign = header("origin").filter(|origin| {
        let host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        !host.is_some_and(is_loopback_host)
    });
    if cross_site || foreign.is_some() {
        let from = foreign.unwrap_or_else(|| "a cross-site page".to_owned());
        return Err(ApiError::new(
            ErrorCode::HostNotAllowed,
            format!(
                "a request without an API key from a web page on another origin (`{}`) is refused; send an API key",
                from.chars().take(100).collect::<String>()
            ),
        ));
    }
    Ok(())
}

/// Whether a `Host` header value names loopback: `localhost` or a name under `.localhost`, an
/// IPv4 address in 127.0.0.0/8 or `[::1]`, each with or without a port.
pub(crate) fn is_loopback_host(value: &str) -> bool {
    let name = if let Some(rest) = value.strip_prefix('[') {
        match rest.split_once(']') {
            Some((inner, port))
                if port.is_empty() || port.strip_prefix(':').is_some_and(is_port) =>
            {
                return inner.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            }
            _ => return false,
        }
    } else {
        match value.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return false,
            None => value,
        }
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn is_port(digits: &str) -> bool {
    !digits.is_empty() && digits.len() <= 5 && digits.bytes().all(|b| b.is_ascii_digit())
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let auth = req
                .app_data::<web::Data<AppState>>()
                .map(|state| Arc::clone(&state.auth))
                .ok_or_else(|| {
                    ApiError::new(ErrorCode::Unauthorized, "the server has no authentication")
                })?;
            Caller::authenticate(&req, &auth).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_recognised_with_or_without_a_port() {
        for good in [
            "localhost",
            "LOCALHOST:8344",
            "localhost.",
            "app.localhost:1",
            "127.0.0.1",
            "127.1.2.3:65535",
            "[::1]",
            "[::1]:8344",
        ] {
            assert!(is_loopback_host(good), "{good}");
        }
        for bad in [
            "",
            "example.com",
            "localhost.example.com",
            "evil-localhost",
            "10.0.0.1:8344",
            "0.0.0.0",
            "[::2]:80",
            "[::1]x",
            "localhost:",
            "localhost:port",
            "127.0.0.1:123456",
            "::1",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn the_policy_follows_the_mode_and_the_address() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let lo6: IpAddr = "::1".parse().unwrap();
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        let lan: IpAddr = "192.168.1.5".parse().unwrap();
        assert_eq!(
            AuthPolicy::decide(AuthMode::Auto, lo),
            AuthPolicy::KeylessLoopback
        );
        assert_eq!(
            AuthPolicy::decide(AuthMode::Auto, lo6),
            AuthPolicy::KeylessLoopback
        );
        assert_eq!(
            AuthPolicy::decide(AuthMode::Auto, any),
            AuthPolicy::KeysRequired
        );
        assert_eq!(
            AuthPolicy::decide(AuthMode::Auto, lan),
            AuthPolicy::KeysRequired
        );
        assert_eq!(
            AuthPolicy::decide(AuthMode::Keys, lo),
            AuthPolicy::KeysRequired
        );
        assert_eq!(AuthPolicy::decide(AuthMode::Open, any), AuthPolicy::Open);
        assert!(AuthPolicy::Open.keyless() && AuthPolicy::KeylessLoopback.keyless());
        assert!(!AuthPolicy::KeysRequired.keyless());
    }
}
