//! Tenant webhook secrets through `POST /api/v1/webhook-secret/rotate`: a `keys:manage` key
//! rotates its own tenant's secret and sees it this once, a key without the scope is refused,
//! tenants get secrets of their own, the grace period is the configured one, the route needs no
//! body, and the server's log never shows a secret.

use std::time::Duration;

use flock_api::config::AuthMode;
use flock_models::{Scope, Secret, timestamp};
use serde_json::Value;

use crate::process::Process;
use crate::support::{TempDir, TestApp, settings};

const ROTATE: &str = "/api/v1/webhook-secret/rotate";

/// Rotates with `key`; the status, the `Cache-Control` header and the JSON answer.
async fn rotate(app: &TestApp, key: &str) -> (u16, Option<String>, Value) {
    let response = app
        .client
        .post(app.url(ROTATE))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let cache = response
        .headers()
        .get("cache-control")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, cache, response.json().await.unwrap())
}

/// The secret of an answer, checked to be a `whsec_` secret that signs.
fn secret_of(answer: &Value) -> String {
    let secret = answer["secret"].as_str().unwrap().to_owned();
    assert!(
        secret.starts_with("whsec_") && secret.len() == 50,
        "{answer}"
    );
    Secret::new(secret.clone()).expect("the answer's secret signs");
    secret
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_manage_key_rotates_its_own_tenants_secret_and_others_are_refused() {
    let mut s = settings();
    s.auth.mode = AuthMode::Keys;
    let app = TestApp::start(s).await;
    let admin = app.key("acme", &[Scope::KeysManage]).await;
    let other_admin = app.key("other", &[Scope::KeysManage]).await;
    let everything_else: Vec<Scope> = Scope::ALL
        .into_iter()
        .filter(|s| *s != Scope::KeysManage)
        .collect();
    let lacking = app.key("acme", &everything_else).await;

    // The first rotation makes the tenant's first secret: nothing was signing before it.
    let (status, cache, first) = rotate(&app, &admin).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(cache.as_deref(), Some("no-store"));
    let first_secret = secret_of(&first);
    assert_eq!(first["previous_valid_until"], Value::Null, "{first}");
    assert_eq!(first.as_object().unwrap().len(), 2, "{first}");

    // The next one keeps the first signing for the grace period (a day by default).
    let before = timestamp::now_micros();
    let (status, _, second) = rotate(&app, &admin).await;
    assert_eq!(status, 200, "{second}");
    let second_secret = secret_of(&second);
    assert_ne!(second_secret, first_secret);
    let until = second["previous_valid_until"].as_str().unwrap();
    assert_eq!(until.len(), "2026-11-28T12:00:00.123456Z".len(), "{until}");
    let until = timestamp::parse(until).unwrap();
    let day = Duration::from_secs(86_400);
    assert!(
        until >= before + day && until <= before + day + Duration::from_secs(60),
        "{until} is not a day after {before}"
    );

    // Another tenant's key rotates its own tenant's secret, not acme's.
    let (status, _, theirs) = rotate(&app, &other_admin).await;
    assert_eq!(status, 200, "{theirs}");
    let theirs = secret_of(&theirs);
    assert!(theirs != first_secret && theirs != second_secret);
    let (_, _, third) = rotate(&app, &admin).await;
    assert_ne!(secret_of(&third), theirs);
    assert!(third["previous_valid_until"].is_string(), "{third}");

    // Without the scope: 403; without a key: 401.
    let (status, _, refused) = rotate(&app, &lacking).await;
    assert_eq!(status, 403, "{refused}");
    assert_eq!(refused["error"]["code"], "forbidden");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("keys:manage"),
        "{refused}"
    );
    let response = app.client.post(app.url(ROTATE)).send().await.unwrap();
    assert_eq!(response.status(), 401);

    // No body is read: none, an empty JSON object, or text of any type.
    for (content_type, body) in [
        (None, ""),
        (Some("application/json"), "{}"),
        (Some("text/plain"), "rotate please"),
        (Some("application/x-www-form-urlencoded"), ""),
    ] {
        let mut request = app.client.post(app.url(ROTATE)).bearer_auth(&admin);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.body(body).send().await.unwrap();
        assert_eq!(response.status(), 200, "{content_type:?} {body:?}");
        let answer: Value = response.json().await.unwrap();
        secret_of(&answer);
    }
    // Other methods: 405 naming POST.
    let response = app
        .client
        .get(app.url(ROTATE))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grace_period_is_the_configured_one_and_zero_ends_it_at_once() {
    for (grace, expect_until) in [(120, true), (0, false)] {
        let mut s = settings();
        s.webhooks.secret_grace_secs = grace;
        let app = TestApp::start(s).await;
        // On loopback without a key: tenant `default`, every scope.
        let first = app.post(ROTATE, &Value::Null).await;
        assert_eq!(first.status(), 200);
        let before = timestamp::now_micros();
        let second: Value = app.post(ROTATE, &Value::Null).await.json().await.unwrap();
        secret_of(&second);
        match second["previous_valid_until"].as_str() {
            Some(until) if expect_until => {
                let until = timestamp::parse(until).unwrap();
                let grace = Duration::from_secs(grace);
                assert!(
                    until >= before + grace && until <= before + grace + Duration::from_secs(60),
                    "{until}"
                );
            }
            None if !expect_until => {}
            other => panic!("grace {grace}: previous_valid_until {other:?}"),
        }
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_is_in_its_answer_and_nowhere_in_the_log() {
    let dir = TempDir::new();
    let db = dir.path().join("flock.db");
    let config = dir.write(
        "flock.toml",
        &format!(
            r#"
[server]
port = 0

[store]
url = "sqlite://{}"

[log]
format = "json"
level = "debug"
"#,
            db.display()
        ),
    );
    let (server, address, mut log) = Process::serve(&config);
    let client = reqwest::Client::new();
    let mut secrets = Vec::new();
    for _ in 0..2 {
        // Keyless on loopback: tenant `default`.
        let response = client
            .post(format!("http://{address}{ROTATE}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().await.unwrap();
        secrets.push(secret_of(&answer));
    }
    assert!(server.stop(&mut log).await.success());
    let log = log.join("\n");
    assert_eq!(
        log.matches("webhook secret rotated").count(),
        2,
        "each rotation is logged: {log}"
    );
    assert!(log.contains("\"tenant\":\"default\""), "{log}");
    for secret in &secrets {
        let key = &secret["whsec_".len()..];
        assert!(!log.contains(key), "a secret is in the server's log");
    }
}

/// A received webhook as the `standardwebhooks` crate reads it.
fn standard_headers(received: &crate::support::Received) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        headers.insert(name, received.header(name).parse().unwrap());
    }
    headers
}

/// Whether the Standard Webhooks check (the `standardwebhooks` crate, written elsewhere)
/// accepts `received` under `secret`.
fn standard_ok(received: &crate::support::Received, secret: &str) -> bool {
    standardwebhooks::Webhook::new(secret)
        .unwrap()
        .verify(&received.body, &standard_headers(received))
        .is_ok()
}

/// Whether `flock-signing`'s Standard Webhooks check accepts `received` under `secret`.
fn flock_standard_ok(received: &crate::support::Received, secret: &str) -> bool {
    flock_signing::verify_standard(
        secret,
        received.header("webhook-id"),
        received.header("webhook-timestamp"),
        received.header("webhook-signature"),
        &received.body,
        flock_signing::DEFAULT_TOLERANCE,
    )
    .is_ok()
}

/// `flock-signing`'s whole check (both headers) with the list of secrets a receiver holds.
fn receiver_ok(received: &crate::support::Received, secrets: &[&str]) -> bool {
    flock_signing::verify_webhook(
        |name| Some(received.header(name)).filter(|v| !v.is_empty()),
        &received.body,
        secrets,
    )
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_without_a_secret_is_signed_with_its_tenants_secret_through_a_rotation() {
    use crate::support::{Receiver, Script};
    let mut s = settings();
    s.auth.mode = AuthMode::Keys;
    s.webhooks.secret_grace_secs = 3;
    let app = TestApp::start(s).await;
    let receiver = Receiver::start(Script::default());
    let acme = app.key("acme", &Scope::ALL).await;
    let other = app.key("other", &Scope::ALL).await;
    let publish = |key: &str| {
        let body = serde_json::json!({"type": "Idea", "payload": {}, "webhook_url": receiver.url});
        app.client
            .post(app.url("/api/v1/artifacts"))
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    let mut seen = 0;
    let mut next_delivery = async |key: &str| {
        assert_eq!(publish(key).await.unwrap().status(), 202);
        seen += 1;
        receiver.wait_for(seen).await.pop().unwrap()
    };

    // Before the tenant read a secret, its webhooks are signed already (one made for it);
    // rotating shows a secret that signs from then on.
    let unseen = next_delivery(&acme).await;
    assert!(!unseen.header("webhook-signature").is_empty());
    let first = secret_of(&rotate(&app, &acme).await.2);
    let (_, _, other_answer) = rotate(&app, &other).await;
    let others = secret_of(&other_answer);

    // During the grace period: both signatures, each check passes under either secret, and a
    // receiver that has done nothing yet (the old secret alone) accepts both headers.
    let (_, _, answer) = rotate(&app, &acme).await;
    let second = secret_of(&answer);
    assert!(answer["previous_valid_until"].is_string(), "{answer}");
    let during = next_delivery(&acme).await;
    assert_eq!(during.header("webhook-signature").split(' ').count(), 2);
    for secret in [&first, &second] {
        assert!(
            standard_ok(&during, secret),
            "standardwebhooks under {secret}"
        );
        assert!(
            flock_standard_ok(&during, secret),
            "flock-signing under {secret}"
        );
    }
    assert!(receiver_ok(&during, &[&first]), "the old secret alone");
    assert!(receiver_ok(&during, &[&second, &first]), "both, new first");
    assert!(
        !standard_ok(&during, &others),
        "another tenant's secret signs nothing of acme's"
    );

    // Another tenant's webhooks carry its own secret's signature alone.
    let theirs = next_delivery(&other).await;
    assert!(receiver_ok(&theirs, &[&others]));
    assert!(!standard_ok(&theirs, &first) && !standard_ok(&theirs, &second));

    // After the grace period (and the 1 s cache), only the new secret signs.
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    let after = next_delivery(&acme).await;
    assert_eq!(after.header("webhook-signature").split(' ').count(), 1);
    assert!(standard_ok(&after, &second) && receiver_ok(&after, &[&second]));
    assert!(!standard_ok(&after, &first) && !receiver_ok(&after, &[&first]));
    receiver.stop().await;
    app.stop().await;
}
