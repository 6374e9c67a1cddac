//! End-to-end tests: the real server (in process, or the `flock-api` binary as a process) with
//! command agents from a configuration file and real receivers on loopback.

mod chain;
mod concurrent;
mod llm;
mod refusals;
mod retries;
mod shutdown;
mod sync;

use std::time::Duration;

use flock_e2e::{Api, InProcessServer, ServerConfig, ServerProcess, Workdir};

/// Upper bound for anything a test waits for; only ever a failure limit, never a claim of speed.
pub(crate) const LONG: Duration = Duration::from_secs(90);

/// A server in this process from `config`, and its API.
pub(crate) async fn in_process(config: &ServerConfig) -> (Workdir, InProcessServer, Api) {
    let dir = Workdir::new().unwrap();
    let server = InProcessServer::start(config.settings(&dir).unwrap())
        .await
        .unwrap();
    let api = Api::new(server.address()).unwrap();
    (dir, server, api)
}

/// The `flock-api` binary as a process from `config`, and its API.
pub(crate) fn process(config: &ServerConfig) -> (Workdir, ServerProcess, Api) {
    let dir = Workdir::new().unwrap();
    let file = config.write(&dir).unwrap();
    let binary = flock_e2e::fresh_flock_api_binary().unwrap();
    let server = ServerProcess::spawn(&binary, &file, LONG).unwrap();
    let api = Api::new(server.address()).unwrap();
    (dir, server, api)
}

/// Polls a workflow's status until it is no longer active; returns the final state.
pub(crate) async fn settled(api: &Api, correlation: &str) -> String {
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let status = api
            .get_json(&format!("/api/v1/correlations/{correlation}/status"))
            .await
            .unwrap();
        let state = status["state"].as_str().unwrap().to_owned();
        if state != "active" {
            return state;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "workflow {correlation} still active: {status}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
