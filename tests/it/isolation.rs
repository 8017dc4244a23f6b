//! No request hurts another: refusals stay with the request that caused them, and nothing a
//! client sends breaks the shared broker connection.

use carrot_gateway::config::Config;
use futures_util::StreamExt;
use futures_util::stream;
use serde_json::{Value, json};

use crate::support::{Amqp, Gateway, json, metric_sum, problem, unique};

/// `/readyz`'s list of the gateway's AMQP connections.
async fn connections(gateway: &Gateway) -> Vec<Value> {
    let ready = gateway
        .http
        .get(gateway.url("/readyz"))
        .send()
        .await
        .expect("readyz answers");
    let body = json(ready, 200).await;
    body["connections"]
        .as_array()
        .cloned()
        .expect("readyz lists connections")
}

/// RabbitMQ's channel_max is 2,047: lapin then reuses channel ids, and a reused id inherited the
/// error of the broker-closed channel that had it, so later requests failed with old errors.
#[tokio::test(flavor = "multi_thread")]
async fn thousands_of_refused_requests_never_answer_later_ones() {
    let gateway = Gateway::start_with(Config {
        amqp_connections: 1,
        ..Config::default()
    })
    .await;
    gateway.wait_ready(200).await;
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    let missing = unique("missing");
    let not_found = "carrot_broker_channels_closed_total{reason=\"NOT_FOUND\"}";
    let closed_before = metric_sum(&gateway, not_found).await;

    let refused = stream::iter(0..2_200)
        .map(|i| {
            let gateway = &gateway;
            let name = format!("{missing}-{i}");
            async move {
                let answer = gateway
                    .http
                    .get(gateway.url(&format!("/queues/{name}")))
                    .send()
                    .await
                    .expect("gateway answers");
                let body = problem(answer, 404, "queue_not_found").await;
                let detail = body["detail"].as_str().unwrap_or_default().to_owned();
                assert!(
                    detail.contains(&format!("'{name}'")),
                    "a refusal names its own queue {name}: {detail}"
                );
            }
        })
        .buffer_unordered(8);
    refused.collect::<Vec<()>>().await;

    let closed = metric_sum(&gateway, not_found).await - closed_before;
    assert!(closed >= 2_200.0, "each refusal closed a channel: {closed}");

    let info = gateway
        .http
        .get(gateway.url(&format!("/queues/{queue}")))
        .send()
        .await
        .expect("gateway answers");
    assert_eq!(json(info, 200).await["name"], queue.as_str());
    for i in 0..20 {
        let answer = gateway
            .publish(
                "amq.default",
                &format!("routing_key={queue}&message_id=m{i}"),
                None,
                "x",
            )
            .await;
        assert_eq!(json(answer, 200).await, json!({"routed": true}));
    }
    assert_eq!(amqp.count(&queue).await, 20);

    let connections = connections(&gateway).await;
    assert!(
        connections
            .iter()
            .any(|c| c["id"].as_u64().is_some_and(|id| id > 1)),
        "the first connection was retired before its channel ids ran out: {connections:?}"
    );
    assert!(
        connections
            .iter()
            .all(|c| c["channels_opened"].as_u64().is_some_and(|n| n <= 2_047)),
        "no connection opened more channels than it has ids: {connections:?}"
    );
    gateway.stop().await;
}
