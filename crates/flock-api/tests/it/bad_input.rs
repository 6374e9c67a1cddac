//! Bad input: every case gets 400, 413, 404, 405 or 422 with the JSON error body naming what is
//! wrong; nothing a client sends produces a 500.

use actix_web::http::StatusCode;
use actix_web::test::{self, TestRequest};
use flock_api::create_app;
use flock_api::startup::build_state;
use serde_json::{Value, json};

use crate::support::settings;

/// Sends `req` through the production app factory and returns the status and JSON body.
async fn call(req: TestRequest, limit: Option<usize>) -> (StatusCode, Value) {
    let mut s = settings();
    s.webhooks.allowed_cidrs.clear();
    if let Some(limit) = limit {
        s.server.body_limit_bytes = limit;
    }
    let (state, _dispatcher) = build_state(&s.check().unwrap()).await.unwrap();
    let app = test::init_service(create_app(state)).await;
    let response = test::call_service(&app, req.to_request()).await;
    let status = response.status();
    let body = test::read_body(response).await;
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {body:?}"));
    (status, value)
}

fn post(path: &str, body: impl Into<Vec<u8>>) -> TestRequest {
    TestRequest::post()
        .uri(path)
        .insert_header(("content-type", "application/json"))
        .set_payload(body.into())
}

fn assert_error(
    status: StatusCode,
    body: &Value,
    expected: u16,
    code: &str,
    field: Option<&str>,
    context: &str,
) {
    assert_eq!(status.as_u16(), expected, "{context}: {body}");
    assert_eq!(body["error"]["code"], code, "{context}: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{context}: {body}"
    );
    match field {
        Some(field) => assert_eq!(body["error"]["field"], field, "{context}: {body}"),
        None => assert!(body["error"].get("field").is_none(), "{context}: {body}"),
    }
}

#[actix_web::test]
async fn malformed_bodies_are_400() {
    let bodies: Vec<Vec<u8>> = vec![
        b"{".to_vec(),
        b"".to_vec(),
        b"{\"type\": \"A\",}".to_vec(),
        vec![0xff, 0xfe, 0x00],
        format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
        b"{\"type\": \"A\", \"payload\": {}} trailing".to_vec(),
    ];
    for path in ["/api/v1/artifacts", "/api/v1/artifacts/sync"] {
        for body in &bodies {
            let (status, value) = call(post(path, body.clone()), None).await;
            assert_error(
                status,
                &value,
                400,
                "malformed_json",
                None,
                &format!(
                    "{path} {:?}",
                    String::from_utf8_lossy(&body[..body.len().min(40)])
                ),
            );
        }
    }
}

#[actix_web::test]
async fn bodies_over_the_limit_are_413() {
    let big = json!({"type": "A", "payload": {"text": "x".repeat(2_000)}}).to_string();
    for path in ["/api/v1/artifacts", "/api/v1/artifacts/sync"] {
        let (status, value) = call(post(path, big.clone()), Some(1_024)).await;
        assert_error(status, &value, 413, "payload_too_large", None, path);
    }
    // Just under the limit is fine.
    let small = json!({"type": "A", "payload": {"text": "x".repeat(900)}}).to_string();
    assert!(small.len() < 1_024);
    let (status, _) = call(post("/api/v1/artifacts", small), Some(1_024)).await;
    assert_eq!(status, 202);
}

#[actix_web::test]
async fn invalid_fields_are_422_naming_the_field() {
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        ("/api/v1/artifacts", json!([1]), "validation_error", ""),
        (
            "/api/v1/artifacts",
            json!({"payload": {}}),
            "validation_error",
            "type",
        ),
        (
            "/api/v1/artifacts",
            json!({"type": "a b", "payload": {}}),
            "validation_error",
            "type",
        ),
        (
            "/api/v1/artifacts",
            json!({"type": "A", "payload": 3}),
            "validation_error",
            "payload",
        ),
        (
            "/api/v1/artifacts",
            json!({"type": "A", "payload": {}, "extra": true}),
            "validation_error",
            "extra",
        ),
        (
            "/api/v1/artifacts",
            json!({"type": "A", "payload": {}, "tags": [""]}),
            "validation_error",
            "tags[0]",
        ),
        (
            "/api/v1/artifacts",
            json!({"type": "A", "payload": {}, "webhook": {"url": "nope"}}),
            "validation_error",
            "webhook.url",
        ),
        (
            "/api/v1/artifacts",
            json!({"type": "A", "payload": {}, "webhook": {"url": "ftp://e.com"}}),
            "validation_error",
            "webhook.url",
        ),
        (
            "/api/v1/artifacts",
            json!({"type": "A", "payload": {}, "webhook": {"url": "https://u:p@e.com"}}),
            "validation_error",
            "webhook.url",
        ),
        (
            "/api/v1/artifacts",
            json!({"type": "A", "payload": {}, "webhook": {"url": "https://e.com", "secret": ""}}),
            "validation_error",
            "webhook.secret",
        ),
        (
            "/api/v1/artifacts",
            json!({"type": "A", "payload": {}, "webhook": {"url": "https://e.com", "secret": "whsec_!!"}}),
            "validation_error",
            "webhook.secret",
        ),
        (
            "/api/v1/artifacts",
            json!({"type": "A", "payload": {}, "webhook_url": "https://e.com", "webhook_secret": "whsec_"}),
            "validation_error",
            "webhook_secret",
        ),
        (
            "/api/v1/artifacts",
            json!({"type": "A", "payload": {}, "webhook": {"url": "https://e.com"}, "webhook_url": "https://e.com"}),
            "validation_error",
            "webhook",
        ),
        (
            "/api/v1/artifacts",
            json!({"type": "A", "payload": {}, "webhook": {"url": "http://127.0.0.1:9/h"}}),
            "webhook_address_refused",
            "webhook.url",
        ),
        (
            "/api/v1/artifacts",
            json!({"type": "A", "payload": {}, "webhook_url": "http://[::ffff:127.0.0.1]/h"}),
            "webhook_address_refused",
            "webhook_url",
        ),
        (
            "/api/v1/artifacts",
            json!({"type": "A", "payload": {}, "webhook_url": "http://169.254.169.254/latest"}),
            "webhook_address_refused",
            "webhook_url",
        ),
        (
            "/api/v1/artifacts",
            json!({"type": "A", "payload": {}, "webhook_url": "http://localhost:8080/"}),
            "webhook_address_refused",
            "webhook_url",
        ),
        (
            "/api/v1/artifacts",
            json!({"type": "A", "payload": {}, "webhook_url": "http://10.1.2.3/"}),
            "webhook_address_refused",
            "webhook_url",
        ),
        (
            "/api/v1/artifacts/sync",
            json!({"type": "A", "payload": {}, "timeout": 0}),
            "validation_error",
            "timeout",
        ),
        (
            "/api/v1/artifacts/sync",
            json!({"type": "A", "payload": {}, "timeout": 301}),
            "validation_error",
            "timeout",
        ),
        (
            "/api/v1/artifacts/sync",
            json!({"type": "A", "payload": {}, "timeout": "soon"}),
            "validation_error",
            "timeout",
        ),
        (
            "/api/v1/artifacts/sync",
            json!({"type": "A", "payload": {}, "filters": {"type_names": [1]}}),
            "validation_error",
            "filters.type_names[0]",
        ),
        (
            "/api/v1/artifacts/sync",
            json!({"type": "A", "payload": {}, "filters": {"kinds": []}}),
            "validation_error",
            "filters.kinds",
        ),
        (
            "/api/v1/artifacts/sync",
            json!({"type": "A", "payload": {}, "webhook": {"url": "http://192.168.1.1/"}}),
            "webhook_address_refused",
            "webhook.url",
        ),
    ];
    for (path, body, code, field) in cases {
        let (status, value) = call(post(path, body.to_string()), None).await;
        let field = (!field.is_empty()).then_some(field);
        assert_error(status, &value, 422, code, field, &format!("{path} {body}"));
    }
}

#[actix_web::test]
async fn bad_queries_are_422_naming_the_parameter() {
    let cases = [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("offset=-1", "offset"),
        ("from=yesterday", "from"),
        ("to=2026-13-01T00:00:00Z", "to"),
        ("correlation_id=nope", "correlation_id"),
        ("type=a%20b", "type"),
        ("colour=red", "colour"),
    ];
    for (query, field) in cases {
        let (status, value) = call(
            TestRequest::get().uri(&format!("/api/v1/artifacts?{query}")),
            None,
        )
        .await;
        assert_error(status, &value, 422, "validation_error", Some(field), query);
    }
}

#[actix_web::test]
async fn unknown_routes_and_ids_are_404_wrong_methods_405() {
    let id = uuid::Uuid::now_v7();
    let not_found = [
        "/nope".to_owned(),
        "/api/v1/nope".to_owned(),
        "/api/v1/artifacts/not-a-uuid".to_owned(),
        format!("/api/v1/artifacts/{id}"),
        format!("/api/v1/correlations/{id}/status"),
        format!("/api/v1/correlations/{id}/webhooks"),
        "/api/v1/correlations/xyz/status".to_owned(),
    ];
    for path in not_found {
        let (status, value) = call(TestRequest::get().uri(&path), None).await;
        assert_error(status, &value, 404, "not_found", None, &path);
    }
    let wrong = [
        TestRequest::delete().uri("/api/v1/artifacts"),
        TestRequest::get().uri("/api/v1/artifacts/sync"),
        TestRequest::post().uri("/health"),
        TestRequest::put().uri("/metrics"),
        TestRequest::post().uri("/api/v1/agents"),
        TestRequest::post().uri(&format!("/api/v1/artifacts/{id}")),
        TestRequest::delete().uri(&format!("/api/v1/correlations/{id}/webhooks")),
    ];
    for req in wrong {
        let (status, value) = call(req, None).await;
        assert_error(
            status,
            &value,
            405,
            "method_not_allowed",
            None,
            "wrong method",
        );
    }
}

/// Every path of the OpenAPI document, asked with every method it does not list, answers 405
/// with `Allow` naming exactly the methods the document lists for it: the resources' routes and
/// the document agree, also for routes added later.
#[actix_web::test]
async fn every_405_allows_exactly_the_documented_methods() {
    let (state, _dispatcher) = build_state(&settings().check().unwrap()).await.unwrap();
    let app = test::init_service(create_app(state)).await;
    let response = test::call_service(
        &app,
        TestRequest::get().uri("/api/v1/openapi.json").to_request(),
    )
    .await;
    let document: Value = serde_json::from_slice(&test::read_body(response).await).unwrap();
    let id = uuid::Uuid::now_v7().to_string();
    let all = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
    ];
    let paths = document["paths"].as_object().unwrap();
    assert!(paths.len() >= 10, "{:?}", paths.keys());
    for (path, operations) in paths {
        let mut documented: Vec<String> = operations
            .as_object()
            .unwrap()
            .keys()
            .map(|m| m.to_uppercase())
            .collect();
        documented.sort();
        let real = path.replace("{id}", &id).replace("{name}", "app.js");
        for method in all.iter().filter(|m| !documented.iter().any(|d| d == *m)) {
            let request = TestRequest::default()
                .method(method.parse().unwrap())
                .uri(&real)
                .to_request();
            let response = test::call_service(&app, request).await;
            let status = response.status();
            let allow = response
                .headers()
                .get("allow")
                .unwrap_or_else(|| panic!("{method} {path}: {status} without Allow"))
                .to_str()
                .unwrap()
                .to_owned();
            let body = test::read_body(response).await;
            let value: Value = serde_json::from_slice(&body).unwrap();
            assert_error(
                status,
                &value,
                405,
                "method_not_allowed",
                None,
                &format!("{method} {path}"),
            );
            let mut allowed: Vec<String> = allow.split(',').map(|m| m.trim().to_owned()).collect();
            allowed.sort();
            assert_eq!(allowed, documented, "{method} {path}: Allow: {allow}");
        }
    }
}

#[actix_web::test]
async fn bad_idempotency_keys_are_400() {
    for key in ["has space", &"k".repeat(256)] {
        let req = post(
            "/api/v1/artifacts",
            json!({"type": "A", "payload": {}}).to_string(),
        )
        .insert_header(("x-idempotency-key", key));
        let (status, value) = call(req, None).await;
        assert_error(status, &value, 400, "invalid_header", None, key);
    }
}

/// Random-ish bodies of every JSON shape: whatever comes back is a client error or a success.
#[actix_web::test]
async fn no_body_produces_a_server_error() {
    let mut bodies = vec![
        json!(null),
        json!(true),
        json!(1.5),
        json!("text"),
        json!([]),
        json!({}),
        json!({"type": null, "payload": null}),
        json!({"type": "A", "payload": {}, "webhook": null, "tags": null}),
        json!({"type": "A", "payload": {}, "webhook": {"url": null}}),
        json!({"type": "A", "payload": {"deep": [[[[[[[[[[1]]]]]]]]]]}}),
        json!({"type": "A", "payload": {}, "timeout": 1e308}),
        json!({"type": "A", "payload": {}, "timeout": -0.0}),
        json!({"type": "A", "payload": {}, "filters": null}),
        json!({"type": "\u{0000}", "payload": {}}),
        json!({"type": "A", "payload": {}, "webhook_url": "http://[::]/"}),
        json!({"type": "A", "payload": {}, "webhook_url": "http://0.0.0.0/"}),
        json!({"type": "A", "payload": {}, "webhook_url": "http://%00/"}),
    ];
    for n in 0..40u32 {
        let mut payload = serde_json::Map::new();
        payload.insert(format!("k{n}"), json!("v".repeat(n as usize)));
        bodies.push(
            json!({"type": format!("T{n}"), "payload": payload, "tags": [format!("t{}", n % 3)]}),
        );
    }
    for path in ["/api/v1/artifacts", "/api/v1/artifacts/sync"] {
        for body in &bodies {
            let mut body = body.clone();
            if path.ends_with("sync") && body.is_object() && body.get("timeout").is_none() {
                body["timeout"] = json!(1);
            }
            let (status, value) = call(post(path, body.to_string()), None).await;
            assert!(status.as_u16() < 500, "{path} {body}: {status} {value}");
            if !status.is_success() {
                assert!(value["error"]["code"].is_string(), "{value}");
            }
        }
    }
}
