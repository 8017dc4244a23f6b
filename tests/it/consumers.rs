//! Consumer sets (carrot's ConsumerSet): several queues, cancel_by_queue, delete, reaping.

use std::time::Duration;

use carrot_gateway::config::{Config, ConsumeConfig};
use serde_json::json;

use crate::streams::EventReader;
use crate::support::{Amqp, Gateway, json, problem, ready_gateway, unique};

async fn create(gateway: &Gateway, body: serde_json::Value) -> String {
    let answer = gateway
        .http
        .post(gateway.url("/consumers"))
        .body(body.to_string())
        .send()
        .await
        .expect("answers");
    json(answer, 201).await["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_set_consumes_both_queues_until_one_is_cancelled() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let (a, b) = (
        amqp.queue_bound("amq.direct", &[]).await,
        amqp.queue_bound("amq.direct", &[]).await,
    );
    let id = create(
        &gateway,
        json!({"queues": [a, b], "prefetch": 10, "ack": "auto"}),
    )
    .await;
    let described = json(gateway.get(&format!("/consumers/{id}")).await, 200).await;
    assert_eq!(described["queues"], json!([a, b]));

    amqp.send_text(&a, "from-a").await;
    amqp.send_text(&b, "from-b").await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let message = json(
            gateway.get(&format!("/consumers/{id}/next?wait=5")).await,
            200,
        )
        .await;
        seen.push((
            message["queue"].as_str().map(str::to_owned),
            message["body"].as_str().map(str::to_owned),
        ));
    }
    seen.sort();
    let mut expected = vec![
        (Some(a.clone()), Some("from-a".to_owned())),
        (Some(b.clone()), Some("from-b".to_owned())),
    ];
    expected.sort();
    assert_eq!(seen, expected);

    assert_eq!(
        gateway
            .send(
                reqwest::Method::DELETE,
                &format!("/consumers/{id}/queues/{a}"),
                None
            )
            .await
            .status(),
        204
    );
    amqp.send_text(&a, "a-after").await;
    amqp.send_text(&b, "b-after").await;
    let message = json(
        gateway.get(&format!("/consumers/{id}/next?wait=5")).await,
        200,
    )
    .await;
    assert_eq!(message["body"], "b-after");
    assert_eq!(
        gateway
            .get(&format!("/consumers/{id}/next?wait=1"))
            .await
            .status(),
        204
    );
    assert_eq!(
        amqp.count(&a).await,
        1,
        "the cancelled queue keeps its message"
    );
    problem(
        gateway
            .send(
                reqwest::Method::DELETE,
                &format!("/consumers/{id}/queues/{a}"),
                None,
            )
            .await,
        404,
        "queue_not_found",
    )
    .await;

    assert_eq!(
        gateway
            .send(reqwest::Method::DELETE, &format!("/consumers/{id}"), None)
            .await
            .status(),
        204
    );
    problem(
        gateway.get(&format!("/consumers/{id}/next")).await,
        404,
        "consumer_not_found",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_set_returns_its_unsettled_messages() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    for i in 0..4 {
        amqp.send_text(&queue, &format!("m{i}")).await;
    }
    let id = create(&gateway, json!({"queues": [queue], "prefetch": 4})).await;
    let leased = json(
        gateway.get(&format!("/consumers/{id}/next?wait=5")).await,
        200,
    )
    .await;
    let receipt = leased["receipt"]
        .as_str()
        .expect("lease mode by default")
        .to_owned();
    amqp.wait_count(&queue, 0).await;

    assert_eq!(
        gateway
            .send(reqwest::Method::DELETE, &format!("/consumers/{id}"), None)
            .await
            .status(),
        204
    );
    amqp.wait_count(&queue, 4).await;
    problem(
        gateway
            .post(&format!("/queues/{queue}/messages/{receipt}/ack"))
            .await,
        404,
        "receipt_not_found",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_sets_are_reaped_and_their_messages_returned() {
    let gateway = Gateway::start_with(Config {
        consume: ConsumeConfig {
            consumer_idle: Duration::from_secs(1),
            ..Default::default()
        },
        ..Config::default()
    })
    .await;
    gateway.wait_ready(200).await;
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    for i in 0..3 {
        amqp.send_text(&queue, &format!("m{i}")).await;
    }
    let id = create(&gateway, json!({"queues": [queue], "prefetch": 5})).await;
    // The set holds the three messages delivered but unacknowledged until it is reaped.
    amqp.wait_count(&queue, 0).await;
    amqp.wait_count(&queue, 3).await;
    problem(
        gateway.get(&format!("/consumers/{id}")).await,
        404,
        "consumer_not_found",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_set_streams_too() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let (a, b) = (
        amqp.queue_bound("amq.direct", &[]).await,
        amqp.queue_bound("amq.direct", &[]).await,
    );
    let id = create(&gateway, json!({"queues": [a, b], "ack": "auto"})).await;
    let mut events = EventReader::open(&gateway, &format!("/consumers/{id}/stream")).await;
    amqp.send_text(&a, "one").await;
    assert_eq!(events.message().await["queue"], a.as_str());
    amqp.send_text(&b, "two").await;
    assert_eq!(events.message().await["queue"], b.as_str());
}

/// A stream keeps its set until it closes: other readers are told at once, and deleting the set
/// ends the stream.
#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_set_refuses_other_readers_and_deleting_it_ends_the_stream() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    let id = create(&gateway, json!({"queues": [queue], "ack": "lease"})).await;
    let mut events = EventReader::open(&gateway, &format!("/consumers/{id}/stream")).await;
    amqp.send_text(&queue, "held").await;
    assert_eq!(events.message().await["queue"], queue.as_str());

    let busy = tokio::time::timeout(
        Duration::from_secs(5),
        gateway.get(&format!("/consumers/{id}/next?wait=10")),
    )
    .await
    .expect("answered at once, not after the stream");
    problem(busy, 409, "consumer_busy").await;
    let second = gateway.get(&format!("/consumers/{id}/stream")).await;
    problem(second, 409, "consumer_busy").await;

    assert_eq!(
        gateway.delete(&format!("/consumers/{id}")).await.status(),
        204
    );
    events.ended().await;
    amqp.wait_count(&queue, 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_set_requests() {
    let gateway = ready_gateway().await;
    let post = |body: serde_json::Value| {
        let gateway = &gateway;
        async move {
            gateway
                .http
                .post(gateway.url("/consumers"))
                .body(body.to_string())
                .send()
                .await
                .expect("answers")
        }
    };
    problem(post(json!({"queues": []})).await, 400, "invalid_request").await;
    problem(
        post(json!({"queues": ["a", "a"]})).await,
        400,
        "invalid_request",
    )
    .await;
    problem(
        post(json!({"queues": ["a"], "prefetch": 0})).await,
        400,
        "invalid_request",
    )
    .await;
    problem(
        post(json!({"queues": ["a"], "ack": "sometimes"})).await,
        400,
        "invalid_request",
    )
    .await;
    problem(post(json!({"queue": ["a"]})).await, 400, "invalid_request").await;
    problem(
        post(json!({"queues": [unique("missing")]})).await,
        404,
        "queue_not_found",
    )
    .await;
    problem(
        gateway.get(&format!("/consumers/{}", unique("nope"))).await,
        404,
        "consumer_not_found",
    )
    .await;
    problem(
        gateway
            .send(
                reqwest::Method::DELETE,
                &format!("/consumers/{}", unique("nope")),
                None,
            )
            .await,
        404,
        "consumer_not_found",
    )
    .await;
}
