//! API keys end to end: `flock-api keys create|list|revoke` offline against an SQLite file, the
//! server binary in keys mode using them, no key's text anywhere but in the creation answers,
//! and a revocation on one instance refused by another sharing Postgres within the bound.

use std::process::Command;
use std::time::{Duration, Instant};

use flock_api::config::AuthMode;
use flock_models::Scope;
use flock_store::StoreUrl;
use flock_store::testing::PostgresTestDatabase;
use serde_json::{Value, json};

use crate::process::{BIN, Process, address_in};
use crate::support::{TempDir, TestApp, settings};

/// Runs `flock-api keys ...`; its exit status, standard output and standard error.
fn keys_command(args: &[&str], config: &str) -> (bool, String, String) {
    let output = Command::new(BIN)
        .arg("keys")
        .args(args)
        .args(["--config", config])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Everything an answer shows: status, headers and body.
async fn shown(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let headers = format!("{:?}", response.headers());
    let body = response.text().await.unwrap();
    (status, format!("{headers}\n{body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_made_offline_work_and_no_key_is_stored_logged_or_answered_again() {
    let dir = TempDir::new();
    let db = dir.path().join("flock.db");
    let config = dir.write(
        "flock.toml",
        &format!(
            r#"
[server]
port = 0

[auth]
mode = "keys"
last_used_flush_ms = 100

[store]
url = "sqlite://{}"

[log]
format = "json"
level = "debug"
"#,
            db.display()
        ),
    );

    // Bad options are named.
    let (ok, _, err) = keys_command(&["create", "--tenant", "acme", "--scope", "root"], &config);
    assert!(
        !ok && err.contains("--scope") && err.contains("keys:manage"),
        "{err}"
    );
    let (ok, _, err) = keys_command(&["create", "--tenant", "a b", "--scope", "read"], &config);
    assert!(!ok && err.contains("--tenant"), "{err}");
    let (ok, _, err) = keys_command(
        &[
            "create",
            "--tenant",
            "acme",
            "--scope",
            "read",
            "--expires-in",
            "1w",
        ],
        &config,
    );
    assert!(!ok && err.contains("--expires-in"), "{err}");

    let (ok, out, err) = keys_command(
        &[
            "create",
            "--tenant",
            "acme",
            "--scope",
            "publish",
            "--scope",
            "read",
            "--scope",
            "keys:manage",
            "--name",
            "admin",
            "--expires-in",
            "30d",
        ],
        &config,
    );
    assert!(ok, "{err}");
    let admin = out.lines().next().unwrap().to_owned();
    assert!(admin.starts_with("flk_") && admin.len() == 47, "{out}");
    assert!(
        out.contains("acme") && out.contains("publish,read,keys:manage"),
        "{out}"
    );

    let mut server = Process::spawn(Command::new(BIN).args(["serve", "--config", &config]));
    let mut log = Vec::new();
    let line = Process::wait_line(&server.stderr, "listening on http://", &mut log);
    // In a JSON line the address is followed by a quote, not a space.
    let address: String = address_in(&line)
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect();
    assert_eq!(
        log.iter()
            .filter(|l| l.contains("\"auth\":\"keys\""))
            .count(),
        1,
        "one start-up line says keys are required: {log:#?}"
    );
    let url = |path: &str| format!("http://{address}{path}");
    let client = reqwest::Client::new();
    let wrong = flock_auth::ApiKey::generate().expose().to_owned();
    // Everything the server answers but the creation answers.
    let mut answers = Vec::new();

    let (status, text) = shown(
        client
            .post(url("/api/v1/artifacts"))
            .bearer_auth(&admin)
            .json(&json!({"type": "Idea", "payload": {"title": "hello"}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 202, "{text}");
    answers.push(text);
    let created = client
        .post(url("/api/v1/keys"))
        .bearer_auth(&admin)
        .json(&json!({"scopes": ["read"], "name": "reader"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let reader = created["key"].as_str().unwrap().to_owned();
    for (key, want) in [(&reader, 200), (&admin, 200), (&wrong, 401)] {
        let (status, text) = shown(
            client
                .get(url("/api/v1/artifacts"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, want, "{text}");
        answers.push(text);
    }
    let (status, text) = shown(
        client
            .get(url("/api/v1/keys"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    answers.push(text);
    let id = created["id"].as_str().unwrap();
    let (status, text) = shown(
        client
            .delete(url(&format!("/api/v1/keys/{id}")))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 204);
    answers.push(text);
    let (status, text) = shown(
        client
            .get(url("/api/v1/artifacts"))
            .bearer_auth(&reader)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401, "{text}");
    answers.push(text);

    // Uses are written in a batch; `keys list` shows them, and no key.
    let deadline = Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let (ok, out, err) = keys_command(&["list", "--tenant", "acme"], &config);
        assert!(ok, "{err}");
        let admin_line = out
            .lines()
            .find(|l| l.contains("\tadmin\t"))
            .unwrap()
            .to_owned();
        if !admin_line.ends_with("\t-") {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "last_used_at was never written: {out}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(listed.lines().count(), 3, "{listed}");
    answers.push(listed);

    server.terminate();
    let status = tokio::task::spawn_blocking(move || {
        let status = server.wait_exit();
        (status, server)
    })
    .await
    .unwrap();
    let (status, server) = status;
    assert!(status.success());
    log.extend(Process::rest(&server.stdout));
    log.extend(Process::rest(&server.stderr));
    let log = log.join("\n");
    assert!(log.contains("API key created"), "the log is read: {log}");

    let mut stored = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().contains("flock.db") {
            stored.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    assert!(!stored.is_empty());
    for key in [&admin, &reader, &wrong] {
        let secret_part = &key[4..];
        assert!(!log.contains(secret_part), "a key is in the server's log");
        for answer in &answers {
            assert!(
                !answer.contains(secret_part),
                "a key is in an answer: {answer}"
            );
        }
        for (path, bytes) in &stored {
            let text = String::from_utf8_lossy(bytes);
            assert!(!text.contains(secret_part), "a key is in {path}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_on_one_instance_is_refused_by_another_within_five_seconds() {
    let Some(db) = PostgresTestDatabase::create(
        "keys::a_key_revoked_on_one_instance_is_refused_by_another_within_five_seconds",
    )
    .await
    else {
        return;
    };
    let instance = || {
        let mut s = settings();
        s.store.url = StoreUrl::parse(&db.url_text()).unwrap();
        s.auth.mode = AuthMode::Keys;
        TestApp::start(s)
    };
    let first = instance().await;
    let second = instance().await;
    let key = first.key("acme", &[Scope::Read]).await;
    let record = first.keys.list(None).await.unwrap()[0].clone();
    let read = |app: &TestApp| {
        let request = app
            .client
            .get(app.url("/api/v1/artifacts"))
            .bearer_auth(&key);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    // Both instances know the key (and cache it).
    assert_eq!(read(&first).await, 200);
    assert_eq!(read(&second).await, 200);
    let revoked = Instant::now();
    first.keys.revoke(None, record.id).await.unwrap().unwrap();
    assert_eq!(
        read(&first).await,
        401,
        "refused at once where it was revoked"
    );
    let took = loop {
        if read(&second).await == 401 {
            break revoked.elapsed();
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(10),
            "the other instance still serves the revoked key"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        took <= Duration::from_secs(5),
        "the other instance refused the key after {took:?}, past the 5 s bound"
    );
    first.stop().await;
    second.stop().await;
}
