//! `create_app`: the one factory that production and tests use, with the request log and HTTP
//! metrics around every route, and project-shaped 404 and 405 answers.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{Service as _, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::{App, HttpMessage as _, web};

use crate::routes::{self, LoggedCorrelation};
use crate::state::AppState;

/// The application: every route, shared `state`, the request log and metrics.
pub fn create_app(
    state: web::Data<AppState>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(state)
        // Inside the request log and metrics below, which count its 429s too.
        .wrap_fn(|req, srv| {
            let call = match crate::limits::refuse(&req) {
                None => Ok(srv.call(req)),
                Some(refused) => Err(req.into_response(refused)),
            };
            async move {
                match call {
                    Ok(call) => call.await.map(ServiceResponse::map_into_left_body),
                    Err(refused) => Ok(refused.map_into_right_body()),
                }
            }
        })
        .wrap_fn(|req, srv| {
            let started = Instant::now();
            let method = req.method().clone();
            let path = req.path().to_owned();
            let fut = srv.call(req);
            async move {
                let res = fut.await?;
                let status = res.status().as_u16();
                let route = res.request().match_pattern().unwrap_or_else(|| "unmatched".to_owned());
                let correlation = res.request().extensions().get::<LoggedCorrelation>().map(|c| c.0);
                let elapsed = started.elapsed();
                let labels = [
                    ("method", method_label(&method).to_owned()),
                    ("route", route),
                    ("status", status.to_string()),
                ];
                metrics::counter!("flock_http_requests_total", &labels).increment(1);
                metrics::histogram!("flock_http_request_duration_seconds", &labels[..2])
                    .record(elapsed.as_secs_f64());
                let ms = elapsed.as_secs_f64() * 1000.0;
                match correlation {
                    Some(id) => tracing::info!(%method, %path, status, duration_ms = ms, correlation_id = %id, "request"),
                    None => tracing::info!(%method, %path, status, duration_ms = ms, "request"),
                }
                Ok(res)
            }
        })
        .service(
            web::scope("/api/v1")
                .configure(routes::artifacts::configure)
                .configure(routes::correlations::configure)
                .configure(routes::webhooks::configure)
                .configure(routes::events::configure)
                .configure(routes::types::configure)
                .configure(routes::keys::configure)
                .configure(routes::secrets::configure)
                .configure(routes::system::configure_api),
        )
        .configure(routes::system::configure_root)
        .configure(routes::dashboard::configure)
        .default_service(web::to(routes::not_found))
}

/// A request's method as a metric label: the methods of RFC 9110 and `PATCH` by name, and any
/// method a client invents as `other`, so that no client can add series. (Routes are labelled by
/// their pattern, or `unmatched`, for the same reason.)
fn method_label(method: &Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "CONNECT" => "CONNECT",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "PATCH" => "PATCH",
        _ => "other",
    }
}
