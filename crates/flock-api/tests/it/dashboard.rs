//! The dashboard in a real browser: headless Chromium driven through chromedriver (WebDriver,
//! with `fantoccini`), against a real server that requires keys and real receivers.
//!
//! Chromium and chromedriver come from the Debian packages (`chromium`, `chromium-driver`);
//! `FLOCK_CHROMIUM` and `FLOCK_CHROMEDRIVER` name other binaries. Without them the tests say
//! loudly that they skipped, except under `CI` (set), where they fail. A failing step saves a
//! screenshot to `target/dashboard-screenshots/<test>.png` (under the workspace). With
//! `FLOCK_SCREENSHOTS_DIR` set, the first test also saves the main pages there (how
//! `docs/images/dashboard-*.png` are made; docs/dashboard.md names the command).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use flock_api::config::AuthMode;
use flock_models::Scope;
use serde_json::{Value, json};

use crate::support::{Receiver, Script, TempDir, TestApp, free_port, settings, transform_agent};

/// The longest any one wait in the browser takes before the test fails.
const WAIT: Duration = Duration::from_secs(20);

/// chromedriver, started for one test and killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary(env: &str, default: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(default))
        .find(|candidate| candidate.is_file())
}

/// Chromium and chromedriver, or `None` (after saying so) when either is missing outside CI.
fn browser(test: &str) -> Option<(PathBuf, PathBuf)> {
    let chromium = binary("FLOCK_CHROMIUM", "chromium");
    let driver = binary("FLOCK_CHROMEDRIVER", "chromedriver");
    match (chromium, driver) {
        (Some(chromium), Some(driver)) => Some((chromium, driver)),
        _ => {
            let why = "chromium and chromedriver are needed (apt-get install chromium chromium-driver, or set FLOCK_CHROMIUM and FLOCK_CHROMEDRIVER)";
            assert!(
                std::env::var_os("CI").is_none_or(|v| v.is_empty()),
                "{test}: {why}; under CI this test does not skip"
            );
            eprintln!("SKIPPED {test}: {why}");
            None
        }
    }
}

async fn start_driver(path: &PathBuf) -> anyhow::Result<Driver> {
    let port = free_port();
    let child = Command::new(path)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", path.display()))?;
    let driver = Driver { child, port };
    let deadline = Instant::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("chromedriver did not listen on {port}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(driver)
}

async fn open_browser(driver: &Driver, chromium: &PathBuf, width: u32) -> anyhow::Result<Client> {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     format!("--window-size={width},900")],
        }),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .context("a WebDriver session")?;
    Ok(client)
}

/// Where a failing test's screenshot goes.
fn failure_shot(test: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard-screenshots");
    let _ = std::fs::create_dir_all(&root);
    root.join(format!("{test}.png"))
}

/// Runs `steps` in the browser; on failure saves a screenshot, closes the session and fails.
async fn run<F, Fut>(test: &str, client: Client, steps: F)
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let result = tokio::time::timeout(Duration::from_secs(120), steps(client.clone()))
        .await
        .unwrap_or_else(|_| Err(anyhow!("the test took longer than 120 s")));
    if let Err(error) = result {
        let shot = failure_shot(test);
        let saved = match client.screenshot().await {
            Ok(png) => std::fs::write(&shot, png).map(|()| shot.display().to_string()),
            Err(e) => Ok(format!("no screenshot: {e}")),
        };
        let _ = client.close().await;
        panic!("{test}: {error:#}\n(screenshot: {saved:?})");
    }
    let _ = client.close().await;
}

async fn wait_for(client: &Client, css: &str) -> anyhow::Result<fantoccini::elements::Element> {
    client
        .wait()
        .at_most(WAIT)
        .every(Duration::from_millis(50))
        .for_element(Locator::Css(css))
        .await
        .with_context(|| format!("waiting for `{css}`"))
}

/// Saves a screenshot of the page shown as `name` when `FLOCK_SCREENSHOTS_DIR` is set.
async fn document_shot(client: &Client, name: &str) -> anyhow::Result<()> {
    let Some(dir) = std::env::var_os("FLOCK_SCREENSHOTS_DIR").filter(|v| !v.is_empty()) else {
        return Ok(());
    };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir)?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(
        dir.join(format!("dashboard-{name}.png")),
        client.screenshot().await?,
    )?;
    Ok(())
}

async fn api(app: &TestApp, method: &str, path: &str, body: Option<&Value>, key: &str) -> Value {
    let mut request = app
        .client
        .request(method.parse().unwrap(), app.url(path))
        .header("authorization", format!("Bearer {key}"));
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    assert!(
        response.status().is_success(),
        "{method} {path}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

/// Gives the page the key through its form, as a user would.
async fn enter_key(client: &Client, key: &str) -> anyhow::Result<()> {
    let input = wait_for(client, "#key-form:not([hidden]) #key").await?;
    input.send_keys(key).await?;
    client
        .find(Locator::Css("#key-form button[type=submit]"))
        .await?
        .click()
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_a_failed_delivery_live_and_redelivers_it_once_the_receiver_is_fixed() {
    let test =
        "dashboard_shows_a_failed_delivery_live_and_redelivers_it_once_the_receiver_is_fixed";
    let Some((chromium, driver_path)) = browser(test) else {
        return;
    };
    let dir = TempDir::new();
    let mut s = settings();
    s.auth.mode = AuthMode::Keys;
    s.webhooks.retry.max_retries = 0;
    s.agents = vec![
        transform_agent(&dir, "planner", "Idea", "Plan", 0.0),
        transform_agent(&dir, "writer", "Plan", "Draft", 0.0),
    ];
    let app = TestApp::start(s).await;
    let key = app
        .key("acme", &[Scope::Read, Scope::Publish, Scope::Redeliver])
        .await;
    let driver = start_driver(&driver_path).await.unwrap();
    let client = open_browser(&driver, &chromium, 1280).await.unwrap();
    // A receiver that is down: nothing listens on its port yet.
    let port = free_port();
    let down = format!("http://127.0.0.1:{port}/hook");
    let app_ref = &app;
    let key_ref = key.as_str();
    run(test, client, |client| async move {
        client.goto(&app_ref.url("/ui")).await?;
        enter_key(&client, key_ref).await?;
        wait_for(&client, "#live.on").await?;
        // The key is in this tab's sessionStorage, and nowhere else.
        let stored = client
            .execute("return [sessionStorage.getItem('flock.key'), localStorage.length, document.cookie];", vec![])
            .await?;
        if stored != json!([key_ref, 0, ""]) {
            bail!("the key is kept elsewhere: {stored}");
        }
        // 1. A chain whose receiver fails.
        let answer = api(app_ref, "POST", "/api/v1/artifacts",
            Some(&json!({"type": "Idea", "payload": {"title": "t"}, "webhook": {"url": down}})), key_ref).await;
        let correlation = answer["correlation_id"].as_str().unwrap().to_owned();
        // 2. It appears, with its failed deliveries, without a reload.
        let row = format!("tr[data-correlation='{correlation}']");
        wait_for(&client, &format!("{row} .state-failed")).await?;
        wait_for(&client, &format!("{row}[data-state='completed']")).await?;
        document_shot(&client, "workflows").await?;
        client.find(Locator::Css(&format!("{row} a"))).await?.click().await?;
        wait_for(&client, "#timeline li[data-type='Draft']").await?;
        let timeline = client.find(Locator::Css("#timeline")).await?.text().await?;
        if !(timeline.contains("Plan by planner from #1 Idea") && timeline.contains("Draft by writer from #2 Plan")) {
            bail!("the timeline does not say who made what from what: {timeline}");
        }
        let failed = client.find_all(Locator::Css("#deliveries tr[data-state='failed']")).await?;
        if failed.len() != 3 {
            bail!("{} failed deliveries shown, not 3", failed.len());
        }
        let first = client.find(Locator::Css("#deliveries tr[data-state='failed'] button.redeliver")).await?;
        let delivery = first.attr("data-delivery").await?.context("the button names its delivery")?;
        document_shot(&client, "workflow").await?;
        let asking = client.execute("return document.getElementById('key-form').getClientRects().length === 0;", vec![]).await?;
        if asking != json!(true) {
            bail!("the page still asks for a key it was given");
        }
        // 3. The receiver is fixed; redeliver one.
        let fixed = Receiver::start_at(port, Script::default());
        first.click().await?;
        // 4. Its new attempt arrives, delivered, live.
        let done = format!("#deliveries tr[data-delivery='{delivery}'][data-state='delivered']");
        wait_for(&client, &done).await?;
        let attempts = client
            .find_all(Locator::Css(&format!("#deliveries tr[data-delivery='{delivery}'] li[data-attempt]")))
            .await?;
        let last = attempts.last().context("attempts listed")?.attr("data-status").await?;
        if attempts.len() != 2 || last.as_deref() != Some("200") {
            bail!("{} attempts, the last {last:?}", attempts.len());
        }
        if fixed.received().len() != 1 {
            bail!("the receiver got {} requests", fixed.received().len());
        }
        // Keyboard: the redeliver buttons and links are real, focusable controls.
        let focusable = client
            .execute("const b = document.querySelector('button.redeliver'); b.focus(); return document.activeElement === b;", vec![])
            .await?;
        if focusable != json!(true) {
            bail!("a redeliver button cannot take the focus");
        }
        client.goto(&app_ref.url("/ui#/agents")).await?;
        wait_for(&client, "#agents").await?;
        document_shot(&client, "agents").await?;
        fixed.stop().await;
        Ok(())
    })
    .await;
    drop(driver);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_redeliver_all_since_queues_exactly_the_failed_deliveries_in_the_window() {
    let test = "dashboard_redeliver_all_since_queues_exactly_the_failed_deliveries_in_the_window";
    let Some((chromium, driver_path)) = browser(test) else {
        return;
    };
    let mut s = settings();
    s.auth.mode = AuthMode::Keys;
    s.webhooks.retry.max_retries = 0;
    let app = TestApp::start(s).await;
    let key = app
        .key("acme", &[Scope::Read, Scope::Publish, Scope::Redeliver])
        .await;
    let other = app.key("other", &[Scope::Read, Scope::Publish]).await;
    // Nothing listens here: deliveries fail at once.
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let down = format!("http://127.0.0.1:{port}/hook");
    let up = Receiver::start(Script::default());
    let publish = |key: String, url: String| {
        let app = &app;
        async move {
            let answer = api(
                app,
                "POST",
                "/api/v1/artifacts",
                Some(&json!({"type": "Note", "payload": {}, "webhook": {"url": url}})),
                &key,
            )
            .await;
            answer["correlation_id"].as_str().unwrap().to_owned()
        }
    };
    let state_of = |key: String, correlation: String| {
        let app = &app;
        async move {
            let deadline = Instant::now() + WAIT;
            loop {
                let body = api(
                    app,
                    "GET",
                    &format!("/api/v1/correlations/{correlation}/webhooks"),
                    None,
                    &key,
                )
                .await;
                let state = body["deliveries"][0]["state"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                if state != "pending" || Instant::now() > deadline {
                    return (
                        state,
                        body["deliveries"][0]["attempts"]
                            .as_array()
                            .map_or(0, Vec::len),
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // Before the window: one failed. Then, from a whole second on: two failed, one delivered,
    // and another tenant's failed one.
    let early = publish(key.clone(), down.clone()).await;
    assert_eq!(state_of(key.clone(), early.clone()).await.0, "failed");
    let now = time::OffsetDateTime::now_utc();
    let since = now.replace_nanosecond(0).unwrap() + Duration::from_secs(1);
    tokio::time::sleep(Duration::from_secs_f64(
        (since - now).as_seconds_f64() + 0.05,
    ))
    .await;
    let window = [
        publish(key.clone(), down.clone()).await,
        publish(key.clone(), down.clone()).await,
    ];
    let fine = publish(key.clone(), up.url.clone()).await;
    let others = publish(other.clone(), down.clone()).await;
    for id in &window {
        assert_eq!(state_of(key.clone(), id.clone()).await.0, "failed");
    }
    assert_eq!(state_of(key.clone(), fine.clone()).await.0, "delivered");
    assert_eq!(state_of(other.clone(), others.clone()).await.0, "failed");

    let driver = start_driver(&driver_path).await.unwrap();
    let client = open_browser(&driver, &chromium, 390).await.unwrap();
    let since_text = since
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let app_ref = &app;
    let key_ref = key.as_str();
    let window_ref = &window;
    run(test, client, |client| async move {
        client
            .goto(&app_ref.url(&format!("/ui#/failed?since={since_text}")))
            .await?;
        enter_key(&client, key_ref).await?;
        for id in window_ref {
            wait_for(&client, &format!("#failed tr[data-correlation='{id}']")).await?;
        }
        let shown = client.find_all(Locator::Css("#failed tr")).await?.len();
        if shown != 2 {
            bail!("{shown} failed deliveries shown since {since_text}, not 2");
        }
        document_shot(&client, "failed").await?;
        // At 390 px the page is no wider than the window.
        let fits = client
            .execute(
                "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
                vec![],
            )
            .await?;
        if fits != json!(true) {
            bail!("the failed-deliveries page is wider than 390 px");
        }
        client
            .find(Locator::Css("#redeliver-all"))
            .await?
            .click()
            .await?;
        wait_for(&client, "#bulk-result[data-queued='2']").await?;
        Ok(())
    })
    .await;
    drop(driver);
    for id in &window {
        let (state, attempts) = state_of(key.clone(), id.clone()).await;
        assert_eq!(
            (state.as_str(), attempts),
            ("failed", 2),
            "{id}: queued once more, attempted once more"
        );
    }
    assert_eq!(
        state_of(key.clone(), early.clone()).await,
        ("failed".to_owned(), 1)
    );
    assert_eq!(
        state_of(key.clone(), fine.clone()).await,
        ("delivered".to_owned(), 1)
    );
    assert_eq!(
        state_of(other.clone(), others.clone()).await,
        ("failed".to_owned(), 1)
    );
    up.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_assets_are_embedded_open_and_served_under_a_strict_policy() {
    let mut s = settings();
    s.auth.mode = AuthMode::Keys;
    let app = TestApp::start(s).await;
    let mut pages = Vec::new();
    for (path, kind) in [
        ("/", "text/html"),
        ("/ui", "text/html"),
        ("/ui/assets/app.js", "text/javascript"),
        ("/ui/assets/app.css", "text/css"),
    ] {
        // No key: they hold no data.
        let response = app.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        assert!(
            header("content-type").starts_with(kind),
            "{path}: {}",
            header("content-type")
        );
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        let policy = header("content-security-policy");
        for part in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(policy.contains(part), "{path}: {policy}");
        }
        assert!(
            !policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"),
            "{policy}"
        );
        pages.push((path, response.text().await.unwrap()));
    }
    let (_, html) = &pages[1];
    // Every script is a file of this origin; no inline script, handler or style attribute.
    assert_eq!(
        html.matches("<script").count(),
        html.matches("<script type=\"module\" src=\"/ui/assets/")
            .count()
    );
    for inline in [" style=", " onclick=", " onload=", "javascript:"] {
        assert!(!html.contains(inline), "{inline}");
    }
    for (path, text) in &pages {
        // Nothing is fetched from elsewhere, and data is never parsed as HTML.
        assert!(
            !text.contains("https://") && !text.contains("http://"),
            "{path}"
        );
        assert!(
            !text.contains("innerHTML") && !text.contains("localStorage.setItem"),
            "{path}"
        );
    }
    let missing = app.get("/ui/assets/nope.js").await;
    assert_eq!(missing.status(), 404);
    // Its data calls are the API's: without a key they are refused.
    assert_eq!(
        app.get("/api/v1/artifacts?order=newest_first")
            .await
            .status(),
        401
    );
    assert_eq!(app.get("/api/v1/events").await.status(), 401);
    app.stop().await;
}
