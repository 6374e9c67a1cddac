//! The delivery dashboard: one HTML page at `/` and `/ui` and its script and style sheet under
//! `/ui/assets/`, every byte embedded in the binary (no CDN, no build step). They hold no
//! data, so they are served without a key; the page asks for a key (kept in the tab's
//! `sessionStorage` only) and sends it with every API call it makes, which go through the same
//! key and tenant checks as any other client's. Served with a strict Content-Security-Policy
//! (scripts and styles from this origin only, no inline script or style, no framing).

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use actix_web::{HttpResponse, web};

use super::Resource;
use crate::error::{ApiError, ErrorCode};
use crate::openapi::route_errors;

/// The page.
const INDEX: &str = include_str!("../../assets/index.html");
/// Its script (a plain ES module).
const APP_JS: &str = include_str!("../../assets/app.js");
/// Its style sheet.
const APP_CSS: &str = include_str!("../../assets/app.css");

/// The policy every dashboard answer carries: nothing but this origin's script, style and
/// API, no inline code, no plugins, no framing, no form posts.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// Routes at the root.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(Resource::new("/").get(root).finish())
        .service(Resource::new("/ui").get(page).finish())
        .service(Resource::new("/ui/assets/{name}").get(asset).finish());
}

route_errors!(
    /// What an asset path answers when it names no asset.
    AssetErrors: [NotFound]
);

/// `GET /`: the dashboard.
#[utoipa::path(get, path = "/", tag = "dashboard", security(()), responses((status = 200, content_type = "text/html", body = String, description = "The dashboard page")))]
pub(crate) async fn root() -> HttpResponse {
    embedded("text/html; charset=utf-8", INDEX)
}

/// `GET /ui`: the dashboard.
#[utoipa::path(get, path = "/ui", tag = "dashboard", security(()), responses((status = 200, content_type = "text/html", body = String, description = "The dashboard page")))]
pub(crate) async fn page() -> HttpResponse {
    embedded("text/html; charset=utf-8", INDEX)
}

/// `GET /ui/assets/{name}`: the page's script (`app.js`) and style sheet (`app.css`).
#[utoipa::path(
    get, path = "/ui/assets/{name}", tag = "dashboard", security(()),
    params(("name" = crate::openapi::AssetNameDoc, Path, description = "`app.js` or `app.css`")),
    responses(
        (status = 200, description = "The asset", content(
            (String = "text/javascript"),
            (String = "text/css"),
        )),
        AssetErrors,
    )
)]
pub(crate) async fn asset(name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    match name.as_str() {
        "app.js" => Ok(embedded("text/javascript; charset=utf-8", APP_JS)),
        "app.css" => Ok(embedded("text/css; charset=utf-8", APP_CSS)),
        other => Err(ApiError::new(
            ErrorCode::NotFound,
            format!(
                "no dashboard asset is named `{}`",
                other.chars().take(100).collect::<String>()
            ),
        )),
    }
}

/// An embedded asset with the dashboard's security headers.
fn embedded(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, HeaderValue::from_static(content_type)))
        .insert_header(("content-security-policy", CSP))
        .insert_header(("x-content-type-options", "nosniff"))
        .insert_header(("x-frame-options", "DENY"))
        .insert_header(("referrer-policy", "no-referrer"))
        .insert_header((CACHE_CONTROL, HeaderValue::from_static("no-cache")))
        .body(body)
}
