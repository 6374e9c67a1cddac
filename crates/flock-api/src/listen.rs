//! `flock-api webhooks listen`: a local receiver that verifies both signatures, prints one line
//! per delivery, and can fail or stall on purpose to watch retries.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use anyhow::Context as _;
use flock_models::{Secret, WebhookPayload};
use flock_signing::WEBHOOK_ID_HEADER;

/// How the receiver behaves.
#[derive(Debug, Clone, clap::Args)]
pub struct ListenOptions {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to listen on (0 picks a free one; the first line printed says which).
    #[arg(long)]
    pub port: u16,
    /// The webhook secret: with it, both signatures of every delivery are checked.
    #[arg(long)]
    pub secret: Option<String>,
    /// Answer the first N deliveries with the failure status, then 200.
    #[arg(long, default_value_t = 0)]
    pub fail_first: u64,
    /// The failure status (default 500). Without --fail-first, every answer uses it.
    #[arg(long, value_parser = clap::value_parser!(u16).range(200..=599))]
    pub status: Option<u16>,
    /// Wait this long before answering each delivery.
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
}

struct Listener {
    options: ListenOptions,
    /// The secret (a `Secret` always signs, so it can verify too).
    secret: Option<Secret>,
    received: AtomicU64,
}

/// Runs the receiver until the process is stopped.
///
/// # Errors
/// An unusable secret or an address that cannot be bound.
pub async fn run(options: ListenOptions) -> anyhow::Result<()> {
    let secret = match &options.secret {
        None => None,
        Some(s) if s.is_empty() => {
            anyhow::bail!("--secret must not be empty; omit it for unsigned webhooks")
        }
        // The message names the option, never the value.
        Some(s) => Some(
            Secret::new(s.as_str()).map_err(|e| anyhow::anyhow!("--secret: {}", e.message()))?,
        ),
    };
    let addr = SocketAddr::new(options.host, options.port);
    let listener = web::Data::new(Listener {
        options,
        secret,
        received: AtomicU64::new(0),
    });
    let data = listener.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .default_service(web::to(receive))
    })
    .workers(1)
    .bind(addr)
    .with_context(|| format!("cannot listen on {addr}"))?;
    let bound = server.addrs().first().copied().unwrap_or(addr);
    let mode = if listener.secret.is_some() {
        "verifying X-Flock-Signature and webhook-signature"
    } else {
        "NOT verifying signatures (no --secret)"
    };
    say(&format!("listening on http://{bound}/ ({mode})"));
    server.run().await.context("receiver stopped")
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn receive(
    req: HttpRequest,
    body: web::Bytes,
    listener: web::Data<Listener>,
) -> HttpResponse {
    let n = listener.received.fetch_add(1, Ordering::Relaxed) + 1;
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let id = header(WEBHOOK_ID_HEADER).to_owned();
    let verdict = match &listener.secret {
        None => Ok("unverified"),
        Some(secret) => flock_signing::verify_webhook(
            |name| req.headers().get(name).and_then(|v| v.to_str().ok()),
            &body,
            &[secret.expose()],
        )
        .map(|()| "valid"),
    };
    let about = match serde_json::from_slice::<WebhookPayload>(&body) {
        Ok(p) => format!(
            "seq={} type={} produced_by={}",
            p.sequence, p.artifact.type_name, p.artifact.produced_by
        ),
        Err(e) => format!("body is not a Flock webhook ({e})"),
    };
    let o = &listener.options;
    if o.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(o.delay_ms)).await;
    }
    let failing = n <= o.fail_first || (o.fail_first == 0 && o.status.is_some());
    let status = if failing {
        o.status.unwrap_or(500)
    } else {
        200
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match verdict {
        Ok(v) => say(&format!(
            "#{n} {} {id} {about} signatures={v} -> {}",
            req.method(),
            status.as_u16()
        )),
        Err(reason) => {
            say(&format!(
                "#{n} {} {id} {about} signatures=INVALID -> {}",
                req.method(),
                status.as_u16()
            ));
            eprintln!("!!! SIGNATURE CHECK FAILED for delivery {id}: {reason}");
        }
    }
    HttpResponse::build(status).finish()
}
