//! The route matrix: every route and method of the served OpenAPI document, tried with no key,
//! a malformed key, a revoked key, an expired key, another tenant's key, a key missing the
//! route's scope and the right key, each answer's status and error code asserted. A route
//! without a row here fails, and so does a row without a route.

use std::collections::BTreeSet;

use flock_api::config::AuthMode;
use flock_auth::NewKey;
use flock_models::{Scope, Scopes, TenantId};
use serde_json::{Value, json};

use crate::support::{TestApp, settings};

/// Who may call a route.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// Anyone, with or without a key.
    Open,
    /// A key with this scope.
    Needs(Scope),
}

/// One route and method: who may call it, what the right key gets, and what another tenant's
/// key (with every scope) gets.
struct Row {
    method: &'static str,
    path: &'static str,
    rule: Rule,
    ok: u16,
    /// What another tenant's key gets: the owner's artifact, workflow and delivery do not exist
    /// for it (404); lists answer it its own, empty, tenant (200).
    other_tenant: u16,
}

const fn row(method: &'static str, path: &'static str, rule: Rule, ok: u16, other: u16) -> Row {
    Row {
        method,
        path,
        rule,
        ok,
        other_tenant: other,
    }
}

const ROWS: &[Row] = &[
    row(
        "post",
        "/api/v1/artifacts",
        Rule::Needs(Scope::Publish),
        202,
        202,
    ),
    row(
        "get",
        "/api/v1/artifacts",
        Rule::Needs(Scope::Read),
        200,
        200,
    ),
    row(
        "post",
        "/api/v1/artifacts/sync",
        Rule::Needs(Scope::Publish),
        200,
        200,
    ),
    row(
        "post",
        "/api/v1/artifacts/batch",
        Rule::Needs(Scope::Publish),
        202,
        202,
    ),
    // Named by id: another tenant's key finds nothing, exactly as for an unknown id.
    row(
        "get",
        "/api/v1/artifacts/{id}",
        Rule::Needs(Scope::Read),
        200,
        404,
    ),
    row(
        "get",
        "/api/v1/correlations/{id}/status",
        Rule::Needs(Scope::Read),
        200,
        404,
    ),
    row(
        "get",
        "/api/v1/correlations/{id}/webhooks",
        Rule::Needs(Scope::Read),
        200,
        404,
    ),
    // The delivery is pending (its retry is a minute away), so a redelivery is a 409; for
    // another tenant it does not exist (404, not 409: a 409 would tell it the id is real).
    row(
        "post",
        "/api/v1/webhooks/deliveries/{id}/redeliver",
        Rule::Needs(Scope::Redeliver),
        409,
        404,
    ),
    // Lists of the caller's own tenant: another tenant's key gets its own (empty) ones.
    row(
        "get",
        "/api/v1/webhooks/deliveries/failed",
        Rule::Needs(Scope::Read),
        200,
        200,
    ),
    // Every tenant's destinations: for operators, by the `metrics` scope; another tenant's key
    // with that scope sees the same server-wide list.
    row(
        "get",
        "/api/v1/webhooks/destinations",
        Rule::Needs(Scope::Metrics),
        200,
        200,
    ),
    row(
        "post",
        "/api/v1/webhooks/deliveries/redeliver",
        Rule::Needs(Scope::Redeliver),
        202,
        202,
    ),
    // The stream answers 200 and goes on; `send` reads its head only.
    row("get", "/api/v1/events", Rule::Needs(Scope::Read), 200, 200),
    row("get", "/api/v1/agents", Rule::Needs(Scope::Read), 200, 200),
    row("get", "/api/v1/types", Rule::Needs(Scope::Read), 200, 200),
    row(
        "post",
        "/api/v1/keys",
        Rule::Needs(Scope::KeysManage),
        201,
        201,
    ),
    row(
        "get",
        "/api/v1/keys",
        Rule::Needs(Scope::KeysManage),
        200,
        200,
    ),
    // Keys are the tenant's already: another tenant's key finds no such key.
    row(
        "delete",
        "/api/v1/keys/{id}",
        Rule::Needs(Scope::KeysManage),
        204,
        404,
    ),
    // The caller's tenant's own secret: another tenant's key rotates its own.
    row(
        "post",
        "/api/v1/webhook-secret/rotate",
        Rule::Needs(Scope::KeysManage),
        200,
        200,
    ),
    row("get", "/metrics", Rule::Needs(Scope::Metrics), 200, 200),
    row("get", "/health", Rule::Open, 200, 200),
    // The dashboard's page and assets hold no data; the calls the page makes need a key.
    row("get", "/", Rule::Open, 200, 200),
    row("get", "/ui", Rule::Open, 200, 200),
    row("get", "/ui/assets/{name}", Rule::Open, 200, 200),
    row("get", "/api/v1/openapi.json", Rule::Open, 200, 200),
];

/// What the requests need: the owner's artifact, workflow and delivery.
struct Fixtures {
    artifact: String,
    correlation: String,
    delivery: String,
}

struct Matrix {
    app: TestApp,
    fixtures: Fixtures,
    right: String,
    revoked: String,
    expired: String,
    other_tenant: String,
    missing: Vec<(Scope, String)>,
}

fn acme() -> TenantId {
    TenantId::new("acme").unwrap()
}

impl Matrix {
    async fn new() -> Matrix {
        let mut s = settings();
        s.auth.mode = AuthMode::Keys;
        s.webhooks.retry.base_delay_ms = 60_000;
        s.webhooks.retry.max_delay_ms = 60_000;
        let app = TestApp::start(s).await;
        let right = app.key("acme", &Scope::ALL).await;
        let other_tenant = app.key("other", &Scope::ALL).await;
        let revoked = {
            let (key, record) = app
                .keys
                .create(NewKey::new(acme(), "revoked", Scopes::all(), None).unwrap())
                .await
                .unwrap();
            app.keys.revoke(None, record.id).await.unwrap().unwrap();
            key.expose().to_owned()
        };
        let expired = {
            let past = time::OffsetDateTime::now_utc() - std::time::Duration::from_secs(1);
            let new = NewKey::new(acme(), "expired", Scopes::all(), Some(past)).unwrap();
            app.keys.create(new).await.unwrap().0.expose().to_owned()
        };
        let mut missing = Vec::new();
        for scope in Scope::ALL {
            let others: Vec<Scope> = Scope::ALL.into_iter().filter(|s| *s != scope).collect();
            missing.push((scope, app.key("acme", &others).await));
        }
        // A webhook to a closed port: the first attempt fails at once, the retry waits a minute.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let publish = json!({"type": "Idea", "payload": {"n": 1},
            "webhook": {"url": format!("http://127.0.0.1:{port}/hook"), "secret": "s3cret"}});
        let (status, body) = send(
            &app,
            "post",
            "/api/v1/artifacts",
            Some(&publish),
            Some(&right),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        let correlation = body["correlation_id"].as_str().unwrap().to_owned();
        let (_, listed) = send(
            &app,
            "get",
            &format!("/api/v1/artifacts?correlation_id={correlation}"),
            None,
            Some(&right),
        )
        .await;
        let artifact = listed["items"][0]["id"].as_str().unwrap().to_owned();
        let (_, deliveries) = send(
            &app,
            "get",
            &format!("/api/v1/correlations/{correlation}/webhooks"),
            None,
            Some(&right),
        )
        .await;
        let delivery = deliveries["deliveries"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        Matrix {
            app,
            fixtures: Fixtures {
                artifact,
                correlation,
                delivery,
            },
            right,
            revoked,
            expired,
            other_tenant,
            missing,
        }
    }

    /// The concrete path and body of a request to `row`.
    async fn request(&self, row: &Row) -> (String, Option<Value>) {
        let f = &self.fixtures;
        let path = match row.path {
            "/api/v1/artifacts/{id}" => format!("/api/v1/artifacts/{}", f.artifact),
            "/api/v1/correlations/{id}/status" => {
                format!("/api/v1/correlations/{}/status", f.correlation)
            }
            "/api/v1/correlations/{id}/webhooks" => {
                format!("/api/v1/correlations/{}/webhooks", f.correlation)
            }
            "/api/v1/webhooks/deliveries/{id}/redeliver" => {
                format!("/api/v1/webhooks/deliveries/{}/redeliver", f.delivery)
            }
            "/ui/assets/{name}" => "/ui/assets/app.js".to_owned(),
            "/api/v1/keys/{id}" => {
                // A fresh key of the owner's each time, so the right key's revocation is a 204.
                let new = NewKey::new(acme(), "target", Scopes::none().with(Scope::Read), None);
                let (_, record) = self.app.keys.create(new.unwrap()).await.unwrap();
                format!("/api/v1/keys/{}", record.id)
            }
            other => {
                assert!(!other.contains('{'), "no fixture for {other}");
                other.to_owned()
            }
        };
        let body = match (row.method, row.path) {
            ("post", "/api/v1/artifacts" | "/api/v1/artifacts/sync") => {
                Some(json!({"type": "Idea", "payload": {"n": 2}}))
            }
            ("post", "/api/v1/artifacts/batch") => Some(json!({"artifacts": [
                {"type": "Idea", "payload": {"n": 3}},
                {"type": "Idea", "payload": {"n": 4}}
            ]})),
            ("post", "/api/v1/keys") => Some(json!({"scopes": ["read"], "name": "matrix"})),
            ("post", "/api/v1/webhooks/deliveries/redeliver") => {
                Some(json!({"since": "2026-01-01T00:00:00Z"}))
            }
            _ => None,
        };
        (path, body)
    }
}

/// Sends a request with `key` as a bearer token (`None`: no Authorization header); the status
/// and the JSON answer (`null` when it is not JSON). A 401 must say `WWW-Authenticate: Bearer`.
async fn send(
    app: &TestApp,
    method: &str,
    path: &str,
    body: Option<&Value>,
    key: Option<&str>,
) -> (u16, Value) {
    let mut request = app
        .client
        .request(method.to_uppercase().parse().unwrap(), app.url(path));
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    if status == 401 {
        assert_eq!(
            response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap()),
            Some("Bearer"),
            "{method} {path}"
        );
    }
    // An event stream goes on until the client leaves: its head is the answer.
    let streaming = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if streaming {
        return (status, Value::Null);
    }
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The error code an answer of `status` carries: none for a success.
fn code_of(status: u16) -> Option<&'static str> {
    match status {
        200..=299 => None,
        401 => Some("unauthorized"),
        403 => Some("forbidden"),
        404 => Some("not_found"),
        409 => Some("conflict"),
        other => panic!("no code known for {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_answers_each_kind_of_caller_as_its_rule_says() {
    let matrix = Matrix::new().await;
    let app = &matrix.app;
    let (status, doc) = send(app, "get", "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer",
        "{}",
        doc["components"]
    );
    let mut documented = BTreeSet::new();
    for (path, operations) in doc["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            documented.insert((method.clone(), path.clone()));
            let row = ROWS
                .iter()
                .find(|r| r.method == method && r.path == path)
                .unwrap_or_else(|| {
                    panic!("{method} {path} has no row in the route matrix: add its rule")
                });
            // The document says what the rule says.
            let security = operation.get("security").unwrap_or(&doc["security"]);
            match row.rule {
                Rule::Open => assert_eq!(security, &json!([{}]), "{method} {path}"),
                Rule::Needs(_) => {
                    assert_eq!(security, &json!([{"bearer": []}]), "{method} {path}");
                    assert!(
                        operation["responses"]["401"].is_object(),
                        "{method} {path} documents no 401"
                    );
                }
            }
            check_row(&matrix, row).await;
        }
    }
    for row in ROWS {
        assert!(
            documented.contains(&(row.method.to_owned(), row.path.to_owned())),
            "the matrix has a row for {} {}, which the document does not list",
            row.method,
            row.path
        );
    }
    matrix.app.stop().await;
}

async fn check_row(matrix: &Matrix, row: &Row) {
    let app = &matrix.app;
    let route = format!("{} {}", row.method, row.path);
    let expect = |case: &str, (status, body): (u16, Value), want: u16, words: &str| {
        assert_eq!(status, want, "{route}, {case}: {body}");
        let code = body["error"]["code"].as_str();
        assert_eq!(code, code_of(want), "{route}, {case}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(words), "{route}, {case}: {message}");
    };
    let refused = |want_open: u16| match row.rule {
        Rule::Open => want_open,
        Rule::Needs(_) => 401,
    };
    let cases: [(&str, Option<&str>, u16, &str); 4] = [
        ("no key", None, refused(200), ""),
        ("a malformed key", Some("flk_not-a-key"), refused(200), ""),
        ("a revoked key", Some(&matrix.revoked), refused(200), ""),
        ("an expired key", Some(&matrix.expired), refused(200), ""),
    ];
    for (case, key, want, words) in cases {
        let (path, body) = matrix.request(row).await;
        let answer = send(app, row.method, &path, body.as_ref(), key).await;
        let words = match (case, want) {
            ("a revoked key", 401) => "revoked",
            ("an expired key", 401) => "expired",
            ("no key", 401) => "Authorization: Bearer",
            _ => words,
        };
        expect(case, answer, want, words);
    }
    let (path, body) = matrix.request(row).await;
    let answer = send(
        app,
        row.method,
        &path,
        body.as_ref(),
        Some(&matrix.other_tenant),
    )
    .await;
    expect("another tenant's key", answer, row.other_tenant, "");
    for (lacking, key) in &matrix.missing {
        let (path, body) = matrix.request(row).await;
        let answer = send(app, row.method, &path, body.as_ref(), Some(key)).await;
        match row.rule {
            Rule::Needs(scope) if scope == *lacking => {
                expect(
                    "a key missing the scope",
                    answer,
                    403,
                    &format!("`{scope}`"),
                );
            }
            // A key cannot give a new key a scope it lacks (the request asks for `read`).
            _ if row.method == "post" && row.path == "/api/v1/keys" && *lacking == Scope::Read => {
                expect(
                    "a key giving a scope it lacks",
                    answer,
                    403,
                    "cannot give it",
                );
            }
            _ => expect("a key with the scope", answer, row.ok, ""),
        }
    }
    let (path, body) = matrix.request(row).await;
    let answer = send(app, row.method, &path, body.as_ref(), Some(&matrix.right)).await;
    expect("the right key", answer, row.ok, "");
}
