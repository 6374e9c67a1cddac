//! Authentication modes against real servers: keyless on loopback (the quick start), keys
//! required on a non-loopback address, open mode's Host check, browser-style requests, the
//! metrics scope and the open health route.

use flock_api::config::AuthMode;
use flock_models::Scope;
use serde_json::{Value, json};

use crate::support::{TestApp, settings};

fn idea() -> Value {
    json!({"type": "Idea", "payload": {"title": "hello"}})
}

async fn error_of(response: reqwest::Response) -> (u16, String, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// A server bound to 0.0.0.0 (not only loopback), reached through 127.0.0.1.
async fn on_every_address(mode: AuthMode) -> TestApp {
    let mut s = settings();
    s.server.host = "0.0.0.0".parse().unwrap();
    s.auth.mode = mode;
    let mut app = TestApp::start(s).await;
    app.address.set_ip("127.0.0.1".parse().unwrap());
    app
}

#[tokio::test]
async fn auto_mode_on_loopback_serves_without_a_key_as_the_quick_start_does() {
    let app = TestApp::start(settings()).await;
    let response = app.post("/api/v1/artifacts", &idea()).await;
    assert_eq!(response.status(), 202);
    let listed = app.get_json("/api/v1/artifacts").await;
    assert_eq!(listed["pagination"]["total"], 1);
    let metrics = app.get("/metrics").await;
    assert_eq!(metrics.status(), 200);
    // A key that is sent is checked, also here.
    let response = app
        .client
        .get(app.url("/api/v1/artifacts"))
        .bearer_auth("flk_not-a-key")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_eq!(error_of(response).await.1, "unauthorized");
    // A key's tenant and scopes apply when one is sent.
    let reader = app.key("acme", &[Scope::Read]).await;
    let response = app
        .client
        .post(app.url("/api/v1/artifacts"))
        .bearer_auth(&reader)
        .json(&idea())
        .send()
        .await
        .unwrap();
    let (status, code, message) = error_of(response).await;
    assert_eq!((status, code.as_str()), (403, "forbidden"));
    assert!(message.contains("`publish`"), "{message}");
    app.stop().await;
}

#[tokio::test]
async fn auto_mode_on_a_non_loopback_address_refuses_keyless_requests() {
    let app = on_every_address(AuthMode::Auto).await;
    for (method, path) in [
        (reqwest::Method::POST, "/api/v1/artifacts"),
        (reqwest::Method::GET, "/api/v1/artifacts"),
        (reqwest::Method::GET, "/api/v1/agents"),
        (reqwest::Method::GET, "/metrics"),
    ] {
        let response = app
            .client
            .request(method.clone(), app.url(path))
            .json(&idea())
            .send()
            .await
            .unwrap();
        assert_eq!(
            response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap()),
            Some("Bearer"),
            "{method} {path}"
        );
        let (status, code, message) = error_of(response).await;
        assert_eq!(
            (status, code.as_str()),
            (401, "unauthorized"),
            "{method} {path}"
        );
        assert!(message.contains("Authorization: Bearer"), "{message}");
    }
    for bad in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer flk_short", "flk_x"] {
        let response = app
            .client
            .get(app.url("/api/v1/artifacts"))
            .header("authorization", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(error_of(response).await.1, "unauthorized", "{bad}");
    }
    let key = app.key("default", &[Scope::Publish]).await;
    let response = app
        .client
        .post(app.url("/api/v1/artifacts"))
        .bearer_auth(&key)
        .json(&idea())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    // Health stays open and says only "ok".
    let health = app.get("/health").await;
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), r#"{"status":"ok"}"#);
    app.stop().await;
}

#[tokio::test]
async fn keys_mode_requires_keys_on_loopback_too() {
    let mut s = settings();
    s.auth.mode = AuthMode::Keys;
    let app = TestApp::start(s).await;
    let (status, code, _) = error_of(app.post("/api/v1/artifacts", &idea()).await).await;
    assert_eq!((status, code.as_str()), (401, "unauthorized"));
    assert_eq!(app.get("/health").await.status(), 200);
    assert_eq!(app.get("/api/v1/openapi.json").await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn browser_style_posts_get_415() {
    let app = TestApp::start(settings()).await;
    for path in ["/api/v1/artifacts", "/api/v1/artifacts/sync"] {
        for content_type in [
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("application/jsonx"),
            None,
        ] {
            let mut request = app.client.post(app.url(path)).body(idea().to_string());
            if let Some(content_type) = content_type {
                request = request.header("content-type", content_type);
            }
            let (status, code, message) = error_of(request.send().await.unwrap()).await;
            assert_eq!(
                (status, code.as_str()),
                (415, "unsupported_media_type"),
                "{path} {content_type:?}"
            );
            assert!(message.contains("application/json"), "{message}");
        }
        let response = app
            .client
            .post(app.url(path))
            .header("content-type", "Application/JSON; charset=utf-8")
            .body(idea().to_string())
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
    }
    let listed = app.get_json("/api/v1/artifacts").await;
    assert_eq!(
        listed["pagination"]["total"], 2,
        "only the JSON posts published"
    );
    app.stop().await;
}

#[tokio::test]
async fn keyless_requests_naming_a_foreign_host_are_refused() {
    for app in [
        on_every_address(AuthMode::Open).await,
        TestApp::start(settings()).await,
    ] {
        let port = app.address.port();
        for host in [
            "evil.example",
            "evil.example:8344",
            "10.1.2.3",
            "localhost.evil.example",
        ] {
            let response = app
                .client
                .post(app.url("/api/v1/artifacts"))
                .header("host", host)
                .json(&idea())
                .send()
                .await
                .unwrap();
            let (status, code, message) = error_of(response).await;
            assert_eq!((status, code.as_str()), (403, "host_not_allowed"), "{host}");
            assert!(message.contains(host), "{message}");
        }
        for host in [
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            "[::1]".to_owned(),
        ] {
            let response = app
                .client
                .get(app.url("/api/v1/artifacts"))
                .header("host", &host)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{host}");
        }
        // A request with a key is not a browser's guess: any Host is fine.
        let key = app.key("default", &[Scope::Read]).await;
        let response = app
            .client
            .get(app.url("/api/v1/artifacts"))
            .header("host", "flock.example.com")
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        app.stop().await;
    }
}

#[tokio::test]
async fn keyless_requests_from_a_page_on_another_origin_are_refused() {
    let app = TestApp::start(settings()).await;
    let port = app.address.port();
    // Routes without a body are reached by a plain form post: the origin check stops it.
    let post = |path: &str, headers: &[(&str, String)]| {
        let mut request = app.client.post(app.url(path));
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        request.send()
    };
    for path in ["/api/v1/webhook-secret/rotate", "/api/v1/artifacts"] {
        for headers in [
            vec![("origin", "https://evil.example".to_owned())],
            vec![("origin", "null".to_owned())],
            vec![("origin", "http://localhost.evil.example".to_owned())],
            vec![("sec-fetch-site", "cross-site".to_owned())],
        ] {
            let (status, code, message) = error_of(post(path, &headers).await.unwrap()).await;
            assert_eq!(
                (status, code.as_str()),
                (403, "host_not_allowed"),
                "{path} {headers:?}"
            );
            assert!(message.contains("another origin"), "{message}");
        }
    }
    // A page served from loopback, or a client that sends no origin, is served.
    let local = [
        ("origin", format!("http://localhost:{port}")),
        ("sec-fetch-site", "same-origin".to_owned()),
    ];
    let answer = post("/api/v1/webhook-secret/rotate", &local).await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(
        post("/api/v1/webhook-secret/rotate", &[])
            .await
            .unwrap()
            .status(),
        200
    );
    // With a key, the origin is not a browser's guess: it is served.
    let key = app.key("default", &[Scope::KeysManage]).await;
    let answer = app
        .client
        .post(app.url("/api/v1/webhook-secret/rotate"))
        .header("origin", "https://app.example")
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn metrics_need_the_metrics_scope_unless_they_are_open() {
    let app = on_every_address(AuthMode::Auto).await;
    let (status, code, _) = error_of(app.get("/metrics").await).await;
    assert_eq!((status, code.as_str()), (401, "unauthorized"));
    let reader = app.key("default", &[Scope::Read]).await;
    let response = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    let (status, code, message) = error_of(response).await;
    assert_eq!((status, code.as_str()), (403, "forbidden"));
    assert!(message.contains("`metrics`"), "{message}");
    let scraper = app.key("default", &[Scope::Metrics]).await;
    let response = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth(&scraper)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("flock_http_requests_total")
    );
    app.stop().await;

    let mut s = settings();
    s.server.host = "0.0.0.0".parse().unwrap();
    s.server.metrics_open = true;
    let mut app = TestApp::start(s).await;
    app.address.set_ip("127.0.0.1".parse().unwrap());
    assert_eq!(app.get("/metrics").await.status(), 200);
    let (status, _, _) = error_of(app.get("/api/v1/agents").await).await;
    assert_eq!(status, 401, "only metrics are open");
    app.stop().await;
}

#[tokio::test]
async fn keys_are_created_listed_and_revoked_through_the_api_for_the_callers_tenant() {
    let mut s = settings();
    s.auth.mode = AuthMode::Keys;
    let app = TestApp::start(s).await;
    let admin = app.key("acme", &[Scope::KeysManage, Scope::Read]).await;
    let post = |key: String, body: Value| {
        let request = app
            .client
            .post(app.url("/api/v1/keys"))
            .bearer_auth(key)
            .json(&body);
        async move { request.send().await.unwrap() }
    };
    let response = post(
        admin.clone(),
        json!({"scopes": ["read"], "name": "ci", "expires_in_secs": 3600}),
    )
    .await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let created: Value = response.json().await.unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("flk_") && key.len() == 47, "{key}");
    assert_eq!(created["tenant"], "acme");
    assert_eq!(created["scopes"], json!(["read"]));
    assert_eq!(created["name"], "ci");
    assert!(created["expires_at"].is_string());
    assert!(created["revoked_at"].is_null());
    // The new key works, for its tenant and scopes.
    let read = app
        .client
        .get(app.url("/api/v1/artifacts"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    // A key cannot give scopes it lacks.
    let (status, code, message) = error_of(
        post(
            admin.clone(),
            json!({"scopes": ["read", "publish", "metrics"]}),
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (403, "forbidden"));
    assert!(message.contains("`publish`, `metrics`"), "{message}");
    let (status, code, _) = error_of(post(admin.clone(), json!({"scopes": []})).await).await;
    assert_eq!((status, code.as_str()), (422, "validation_error"));
    // The list shows the tenant's keys and never a key.
    let listed = app
        .client
        .get(app.url("/api/v1/keys"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let text = listed.text().await.unwrap();
    assert!(!text.contains(&key) && !text.contains(&admin), "{text}");
    let listed: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(listed["keys"].as_array().unwrap().len(), 2, "{listed}");
    assert!(
        listed["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["tenant"] == "acme")
    );
    // Another tenant's admin sees none of them and cannot revoke them.
    let stranger = app.key("other", &[Scope::KeysManage]).await;
    let theirs: Value = app
        .client
        .get(app.url("/api/v1/keys"))
        .bearer_auth(&stranger)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(theirs["keys"].as_array().unwrap().len(), 1, "{theirs}");
    let id = created["id"].as_str().unwrap();
    let delete = |key: String| {
        let request = app
            .client
            .delete(app.url(&format!("/api/v1/keys/{id}")))
            .bearer_auth(key);
        async move { request.send().await.unwrap() }
    };
    let (status, code, _) = error_of(delete(stranger).await).await;
    assert_eq!((status, code.as_str()), (404, "not_found"));
    assert_eq!(delete(admin.clone()).await.status(), 204);
    // Refused at once on this instance.
    let refused = app
        .client
        .get(app.url("/api/v1/artifacts"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    let (status, code, message) = error_of(refused).await;
    assert_eq!((status, code.as_str()), (401, "unauthorized"));
    assert!(message.contains("revoked"), "{message}");
    // Revoking again changes nothing.
    assert_eq!(delete(admin).await.status(), 204);
    app.stop().await;
}
