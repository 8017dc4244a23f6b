//! No request hurts another: refusals stay with the request that caused them, and nothing a
//! client sends breaks the shared broker connection.

use carrot_gateway::config::{BrokerConfig, Config};
use futures_util::StreamExt;
use futures_util::stream;
use serde_json::json;

use crate::support::{
    Amqp, Gateway, connection_ids, connections, json, metric_sum, problem, unique,
};

/// A gateway on one AMQP connection, so that what happens to it shows in `/readyz`.
async fn one_connection_gateway() -> Gateway {
    let gateway = Gateway::start_with(Config {
        broker: BrokerConfig {
            amqp_connections: 1,
            ..Default::default()
        },
        ..Config::default()
    })
    .await;
    gateway.wait_ready(200).await;
    gateway
}

/// RabbitMQ's channel_max is 2,047: lapin then reuses channel ids, and a reused id inherited the
/// error of the broker-closed channel that had it, so later requests failed with old errors.
#[tokio::test(flavor = "multi_thread")]
async fn thousands_of_refused_requests_never_answer_later_ones() {
    let gateway = one_connection_gateway().await;
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

fn encoded(name: &str) -> String {
    name.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// RabbitMQ cuts reply texts over 255 bytes at byte 252; a cut inside a character made the AMQP
/// client drop the shared connection. Such names are refused, shorter ones work everywhere.
#[tokio::test(flavor = "multi_thread")]
async fn names_the_broker_would_cut_mid_character_never_break_the_connection() {
    let gateway = one_connection_gateway().await;
    let before = connection_ids(&gateway).await;

    // The issue's own example: a 255-byte name, mostly two-byte characters.
    let long = format!("acc.b4b7b8bbe5.{}", "é".repeat(120));
    let answer = gateway
        .put(&format!("/queues/{}", encoded(&long)), json!({}))
        .await;
    let body = problem(answer, 400, "invalid_request").await;
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("queue name has non-ASCII characters")),
        "{body}"
    );

    // At the limit (162 bytes), every reply that quotes the name arrives whole.
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let name = format!("{tag}{}", "é".repeat((162 - tag.len()) / 2));
    let path = format!("/queues/{}", encoded(&name));
    let missing = format!("/queues/{}", encoded(&format!("{tag}x{}", "é".repeat(64))));
    problem(gateway.get(&missing).await, 404, "queue_not_found").await;
    json(gateway.put(&path, json!({"durable": false})).await, 201).await;
    let amqp = Amqp::connect().await;
    let locked = format!("{tag}l{}", "é".repeat((161 - tag.len()) / 2));
    amqp.channel
        .queue_declare(
            locked.as_str().into(),
            lapin::options::QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("an exclusive queue of the test's own");
    // RESOURCE_LOCKED's reply is 232 bytes before the name: cut, but after the name.
    problem(
        gateway.get(&format!("/queues/{}", encoded(&locked))).await,
        409,
        "precondition_failed",
    )
    .await;
    problem(
        gateway.put(&path, json!({"durable": true})).await,
        409,
        "precondition_failed",
    )
    .await;
    problem(
        gateway.publish(&encoded(&name), "", None, "x").await,
        404,
        "exchange_not_found",
    )
    .await;
    let bound = json!({"bindings": [{"exchange": name.clone()}], "durable": false});
    problem(
        gateway
            .put(&format!("/queues/{}", encoded(&unique("q"))), bound)
            .await,
        404,
        "exchange_not_found",
    )
    .await;
    let answer = gateway
        .publish(
            "amq.default",
            &format!("routing_key=x&user_id={}", encoded(&"é".repeat(100))),
            None,
            "x",
        )
        .await;
    problem(answer, 400, "invalid_request").await;
    let answer = gateway
        .publish(
            "amq.default",
            &format!("routing_key=x&user_id={}", encoded(&"é".repeat(101))),
            None,
            "x",
        )
        .await;
    problem(answer, 400, "invalid_request").await;
    let dead_letter = json!({"arguments": {"x-dead-letter-exchange": "é".repeat(75)}});
    let body = problem(
        gateway.put(&path, dead_letter).await,
        400,
        "invalid_request",
    )
    .await;
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("arguments.x-dead-letter-exchange must be ASCII")),
        "{body}"
    );
    assert_eq!(gateway.delete(&path).await.status(), 200);

    assert_eq!(
        connection_ids(&gateway).await,
        before,
        "no connection was lost"
    );
    gateway.stop().await;
}

fn number_after(text: &str, marker: &str) -> usize {
    let rest = &text[text.find(marker).expect("marker in text") + marker.len()..];
    rest.chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .expect("a number")
}

/// A content header larger than the broker's frame_max made it close the whole connection.
#[tokio::test(flavor = "multi_thread")]
async fn properties_larger_than_a_frame_are_refused_and_the_largest_that_fit_arrive() {
    let gateway = one_connection_gateway().await;
    let before = connection_ids(&gateway).await;
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    let batch = |header_bytes: usize| {
        json!({"messages": [
            {"routing_key": queue, "body": 1},
            {"routing_key": queue, "body": 2, "properties": {"headers": {"h": "x".repeat(header_bytes)}}},
        ]})
    };

    let body = problem(
        gateway.publish_batch("amq.default", &batch(200_000)).await,
        400,
        "invalid_request",
    )
    .await;
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("messages[1]: the properties"),
        "{detail}"
    );
    let size = number_after(detail, "take ");
    let limit = number_after(detail, "at most ");
    let fits = 200_000 - (size - limit);

    problem(
        gateway.publish_batch("amq.default", &batch(fits + 1)).await,
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(
        amqp.count(&queue).await,
        0,
        "a refused batch publishes nothing"
    );
    let answer = gateway.publish_batch("amq.default", &batch(fits)).await;
    assert_eq!(
        json(answer, 200).await,
        json!({"results": [{"routed": true}, {"routed": true}]})
    );
    assert_eq!(amqp.count(&queue).await, 2);
    assert_eq!(
        connection_ids(&gateway).await,
        before,
        "no connection was lost"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn header_tables_nested_too_deep_are_refused() {
    let gateway = Gateway::start().await;
    gateway.wait_ready(200).await;
    let mut deep = json!(1);
    for _ in 0..40 {
        deep = json!({ "k": deep });
    }
    let batch = json!({"messages": [{"body": 1, "properties": {"headers": deep}}]});
    let body = problem(
        gateway.publish_batch("amq.default", &batch).await,
        400,
        "invalid_request",
    )
    .await;
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("messages[0]: properties.headers.k.k")),
        "{body}"
    );
    gateway.stop().await;
}

/// RabbitMQ answers basic.get and purge on a stream queue by closing the whole connection: the
/// gateway refuses them once it knows a queue is a stream.
#[tokio::test(flavor = "multi_thread")]
async fn taking_from_a_stream_is_refused_and_found_out_at_most_once() {
    let gateway = Gateway::start().await;
    gateway.wait_ready(200).await;
    // Declared through the gateway, a stream is known at once: refused without a connection.
    let declared = unique("stream");
    let created = gateway
        .put(
            &format!("/queues/{declared}"),
            json!({"durable": true, "arguments": {"x-queue-type": "stream"}}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let before = connection_ids(&gateway).await;
    for path in [
        format!("/queues/{declared}/next"),
        format!("/queues/{declared}/messages"),
    ] {
        let body = problem(gateway.get(&path).await, 400, "invalid_request").await;
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("offset=first"), "{body}");
    }
    assert_eq!(connection_ids(&gateway).await, before);
    gateway.delete(&format!("/queues/{declared}")).await;

    let amqp = Amqp::connect().await;
    let stream = unique("stream");
    let mut arguments = lapin::types::FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        lapin::types::AMQPValue::LongString("stream".into()),
    );
    amqp.channel
        .queue_declare(
            stream.as_str().into(),
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            arguments,
        )
        .await
        .expect("a stream queue of another client");
    // The first basic.get costs the gateway a connection; it remembers the answer.
    problem(
        gateway.get(&format!("/queues/{stream}/next")).await,
        400,
        "invalid_request",
    )
    .await;
    gateway.wait_ready(200).await;
    let after_first = connection_ids(&gateway).await;
    problem(
        gateway.get(&format!("/queues/{stream}/next")).await,
        400,
        "invalid_request",
    )
    .await;
    problem(
        gateway.delete(&format!("/queues/{stream}/messages")).await,
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(
        connection_ids(&gateway).await,
        after_first,
        "no further connection lost"
    );
    amqp.channel
        .queue_delete(stream.as_str().into(), Default::default())
        .await
        .expect("delete the stream");
    gateway.stop().await;
}
