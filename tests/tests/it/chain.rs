//! One publish through a three-agent chain: four artifacts, four signed webhooks with
//! sequences 1..4 under the request's correlation id, each body equal to the stored artifact.

use std::collections::HashSet;

use flock_e2e::{Behaviour, Receiver, ServerConfig, three_agent_chain};
use serde_json::{Value, json};

use crate::{LONG, in_process, settled};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publish_through_three_agents_gives_four_signed_webhooks() {
    let config = ServerConfig {
        agents: three_agent_chain(),
        ..ServerConfig::default()
    };
    let (_dir, server, api) = in_process(&config).await;
    let receiver = Receiver::start(Behaviour::recording()).await.unwrap();

    let correlation = api
        .publish(&json!({"type": "Idea", "payload": {"title": "ship it"},
                         "webhook": {"url": receiver.url(), "secret": SECRET}}))
        .await
        .unwrap();
    assert_eq!(settled(&api, &correlation).await, "completed");
    // Every artifact is stored once the workflow is idle, so all four deliveries exist.
    let deliveries = api
        .deliveries_until(&correlation, LONG, |d| {
            d.len() == 4 && d.iter().all(|x| x["state"] == "delivered")
        })
        .await
        .unwrap();
    receiver.wait_for(4, LONG).await.unwrap();
    let received = receiver.received();
    assert_eq!(received.len(), 4, "exactly one request per artifact");

    let stored = api
        .get_json(&format!("/api/v1/artifacts?correlation_id={correlation}"))
        .await
        .unwrap();
    assert_eq!(stored["pagination"]["total"], 4);

    let mut by_sequence: Vec<(u64, Value)> = Vec::new();
    for request in &received {
        request.verify(SECRET).unwrap();
        assert!(
            request.verify("another-secret").is_err(),
            "a wrong secret fails"
        );
        assert_eq!(request.header("content-type"), "application/json");
        assert!(request.header("user-agent").starts_with("flock-webhooks/"));
        let body = request.json().unwrap();
        let payload = request.payload().unwrap();
        assert_eq!(body["event_type"], "artifact.created");
        assert_eq!(payload.correlation_id.to_string(), correlation);

        // The body carries exactly the stored artifact (the correlation id sits one level up).
        let mut artifact = api
            .get_json(&format!("/api/v1/artifacts/{}", payload.artifact.id))
            .await
            .unwrap();
        let stored_correlation = artifact
            .as_object_mut()
            .unwrap()
            .remove("correlation_id")
            .unwrap();
        assert_eq!(stored_correlation, json!(correlation));
        assert_eq!(body["artifact"], artifact, "body vs stored artifact");
        by_sequence.push((payload.sequence, body));
    }
    by_sequence.sort_by_key(|(s, _)| *s);
    let sequences: Vec<u64> = by_sequence.iter().map(|(s, _)| *s).collect();
    assert_eq!(sequences, [1, 2, 3, 4]);
    let chain: Vec<(&str, &str)> = by_sequence
        .iter()
        .map(|(_, b)| {
            (
                b["artifact"]["type"].as_str().unwrap(),
                b["artifact"]["produced_by"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        chain,
        [
            ("Idea", "external"),
            ("Plan", "planner"),
            ("Draft", "writer"),
            ("Review", "reviewer")
        ]
    );
    // Each agent's output names the artifact it consumed: the chain is linked.
    for pair in by_sequence.windows(2) {
        assert_eq!(
            pair[1].1["artifact"]["payload"]["from"],
            pair[0].1["artifact"]["id"]
        );
    }

    // The webhook-id of each request is its delivery's id, one per artifact.
    let ids: HashSet<&str> = received.iter().map(|r| r.header("webhook-id")).collect();
    let listed: HashSet<&str> = deliveries
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 4);
    assert_eq!(ids, listed);
    drop(receiver);
    server.stop().await.unwrap();
}
