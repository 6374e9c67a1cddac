//! The sync route answers with the workflow's artifacts and `completed: true` while the
//! receiver is still busy with the webhooks: the answer does not wait for them.

use flock_e2e::{Behaviour, Receiver, ServerConfig, three_agent_chain};
use serde_json::json;

use crate::{LONG, in_process};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_answers_while_the_receiver_is_still_busy() {
    let config = ServerConfig {
        agents: three_agent_chain(),
        ..ServerConfig::default()
    };
    let (_dir, server, api) = in_process(&config).await;
    // A receiver that is busy with every delivery until the test lets it answer: as slow as
    // needed, so the proof does not depend on how fast this machine runs the agents. (A fixed
    // delay such as 5 s could run out before a loaded machine finishes the chain.)
    let receiver = Receiver::start(Behaviour {
        hold: true,
        record: true,
        ..Behaviour::default()
    })
    .await
    .unwrap();

    let answer = api
        .publish_sync(
            &json!({"type": "Idea", "payload": {"title": "t"}, "timeout": 60,
                              "webhook": {"url": receiver.url(), "secret": "s3cret"}}),
        )
        .await
        .unwrap();
    // The answer is here, and the receiver has not answered a single delivery.
    assert_eq!(receiver.answered(), 0, "no webhook had been answered");
    assert_eq!(answer["completed"], true, "{answer}");
    let types: Vec<&str> = answer["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["Idea", "Plan", "Draft", "Review"]);
    let correlation = answer["correlation_id"].as_str().unwrap();

    // All four webhooks reach the receiver, which is still holding them: none is delivered.
    receiver.wait_for(4, LONG).await.unwrap();
    assert_eq!(receiver.holding(), 4);
    let deliveries = api
        .get_json(&format!("/api/v1/correlations/{correlation}/webhooks"))
        .await
        .unwrap();
    let states: Vec<&str> = deliveries["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["pending"; 4]);

    receiver.release();
    let done = api
        .deliveries_until(correlation, LONG, |d| {
            d.iter().all(|x| x["state"] == "delivered")
        })
        .await
        .unwrap();
    assert_eq!(done.len(), 4);
    for request in receiver.received() {
        request.verify("s3cret").unwrap();
    }
    drop(receiver);
    server.stop().await.unwrap();
}
