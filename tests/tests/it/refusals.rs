//! Webhooks that are not sent: a workflow without a webhook sends nothing, and a webhook to an
//! address the SSRF guard refuses fails without retries while the workflow still completes.

use flock_e2e::receiver::loopback_alias;
use flock_e2e::{Behaviour, Receiver, ServerConfig, metric, three_agent_chain};
use serde_json::json;

use crate::{LONG, in_process, process, settled};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_webhook_nothing_is_sent() {
    // The binary as a process: its metrics count this test's attempts and nothing else.
    let config = ServerConfig {
        agents: three_agent_chain(),
        ..ServerConfig::default()
    };
    let (_dir, server, api) = process(&config);
    let receiver = Receiver::start(Behaviour::recording()).await.unwrap();

    let silent = api
        .publish_sync(&json!({"type": "Idea", "payload": {"n": 1}, "timeout": 60}))
        .await
        .unwrap();
    assert_eq!(silent["completed"], true, "{silent}");
    assert_eq!(silent["artifacts"].as_array().unwrap().len(), 4);
    let silent = silent["correlation_id"].as_str().unwrap().to_owned();
    let listed = api
        .get_json(&format!("/api/v1/correlations/{silent}/webhooks"))
        .await
        .unwrap();
    assert_eq!(
        listed["deliveries"],
        json!([]),
        "no delivery was even created"
    );

    // A second workflow with a webhook, as a control: the receiver and the attempt counter see
    // its four artifacts and nothing of the first workflow.
    let heard = api
        .publish(&json!({"type": "Idea", "payload": {"n": 2},
                         "webhook": {"url": receiver.url(), "secret": "s"}}))
        .await
        .unwrap();
    assert_eq!(settled(&api, &heard).await, "completed");
    api.deliveries_until(&heard, LONG, |d| {
        d.len() == 4 && d.iter().all(|x| x["state"] == "delivered")
    })
    .await
    .unwrap();
    let received = receiver.received();
    assert_eq!(received.len(), 4);
    for request in &received {
        assert_eq!(request.payload().unwrap().correlation_id.to_string(), heard);
    }
    let text = api.metrics().await.unwrap();
    assert_eq!(
        metric(
            &text,
            "flock_webhook_attempts_total",
            &[("result", "success")]
        ),
        Some(4.0),
        "{text}"
    );
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_address_fails_the_webhooks_not_the_workflow() {
    // No allow-list: the SSRF guard refuses loopback, as in production.
    let config = ServerConfig {
        allow_loopback: false,
        agents: three_agent_chain(),
        ..ServerConfig::default()
    };
    let (_dir, server, api) = in_process(&config).await;
    // A name for a loopback address, and a real receiver listening there: only the guard
    // stands in the way. The name comes from /etc/hosts (the machine's own name usually maps to
    // loopback); without one, the by-name half of this test cannot run and says so.
    let alias = loopback_alias();
    let ip = alias
        .as_ref()
        .map_or(std::net::IpAddr::from([127, 0, 0, 1]), |(_, ip)| *ip);
    let receiver = Receiver::start_on(ip, Behaviour::recording())
        .await
        .unwrap();

    // A literal loopback address is refused at once, naming the field.
    let (status, error) = api
        .post(
            "/api/v1/artifacts",
            &json!({"type": "Idea", "payload": {}, "webhook": {"url": receiver.url()}}),
        )
        .await
        .unwrap();
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["error"]["code"], "webhook_address_refused");
    assert_eq!(error["error"]["field"], "webhook.url");

    let Some((name, _)) = alias else {
        eprintln!(
            "skipped the by-name half: no host name other than localhost resolves to \
             127.0.0.0/8 in /etc/hosts"
        );
        server.stop().await.unwrap();
        return;
    };
    // A name that resolves to loopback passes the request check and is refused where the
    // client connects: every delivery fails on its first attempt, the workflow completes.
    let answer = api
        .publish_sync(&json!({"type": "Idea", "payload": {}, "timeout": 60,
                              "webhook": {"url": receiver.url_by_name(&name), "secret": "s"}}))
        .await
        .unwrap();
    assert_eq!(answer["completed"], true, "{answer}");
    assert_eq!(answer["artifacts"].as_array().unwrap().len(), 4);
    let correlation = answer["correlation_id"].as_str().unwrap();
    assert_eq!(settled(&api, correlation).await, "completed");
    let deliveries = api
        .deliveries_until(correlation, LONG, |d| {
            d.len() == 4 && d.iter().all(|x| x["state"] == "failed")
        })
        .await
        .unwrap();
    for delivery in &deliveries {
        assert_eq!(delivery["failure"], "blocked", "{delivery:#}");
        let attempts = delivery["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1, "no retries: {delivery:#}");
        assert_eq!(attempts[0]["error_kind"], "blocked");
    }
    assert_eq!(receiver.count(), 0, "nothing reached the receiver");
    drop(receiver);
    server.stop().await.unwrap();
}
