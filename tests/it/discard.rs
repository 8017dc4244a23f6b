//! Filtered discards (carrot's discard_all(filterfunc)): only the matches go, the rest stay in
//! their order, and messages held by readers are not touched.

use std::sync::Arc;

use carrot_gateway::config::{AmqpUrls, BrokerConfig, Config};
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::outage::Vhost;
use crate::support::{Amqp, DEADLINE, Gateway, json, problem, rabbitmqctl, ready_gateway};

impl Gateway {
    async fn discard(&self, queue: &str, query: &str, filter: Option<Value>) -> reqwest::Response {
        let mut request = self
            .http
            .delete(self.url(&format!("/queues/{queue}/messages?{query}")));
        if let Some(filter) = filter {
            request = request.json(&filter);
        }
        request.send().await.expect("gateway answers")
    }
}

/// Message `n`: type `feed` when even, `news` when odd; header `n`; a JSON body naming both.
fn properties(n: usize) -> BasicProperties {
    let kind = if n.is_multiple_of(2) { "feed" } else { "news" };
    let mut headers = FieldTable::default();
    headers.insert("n".into(), AMQPValue::LongLongInt(n as i64));
    headers.insert(
        "source".into(),
        AMQPValue::LongString(LongString::from(if n.is_multiple_of(3) {
            "rss"
        } else {
            "api"
        })),
    );
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_type(kind.into())
        .with_headers(headers)
}

async fn queue_of(amqp: &Amqp, messages: usize) -> String {
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    for n in 0..messages {
        let kind = if n.is_multiple_of(2) { "feed" } else { "news" };
        let body = json!({"n": n, "meta": {"kind": kind}}).to_string();
        amqp.send(&queue, body.as_bytes(), properties(n)).await;
    }
    queue
}

/// What is left in the queue, by `n`, in queue order.
async fn left(amqp: &Amqp, queue: &str) -> Vec<u64> {
    amqp.drain(queue)
        .await
        .iter()
        .map(|message| {
            let body: Value = serde_json::from_slice(&message.delivery.data).expect("json body");
            body["n"].as_u64().expect("n")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_property_filter_discards_only_its_matches_and_keeps_the_order() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let queue = queue_of(&amqp, 30).await;

    let answer = gateway
        .discard(&queue, "", Some(json!({"properties": {"type": "feed"}})))
        .await;
    assert_eq!(
        json(answer, 200).await,
        json!({"discarded": 15, "kept": 15, "complete": true})
    );
    let odd: Vec<u64> = (0..30u64).filter(|n| !n.is_multiple_of(2)).collect();
    assert_eq!(left(&amqp, &queue).await, odd, "the rest, in their order");
}

#[tokio::test(flavor = "multi_thread")]
async fn header_and_body_conditions_all_hold() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let queue = queue_of(&amqp, 30).await;

    // Odd numbers from rss: 3, 9, 15, 21, 27.
    let filter = json!({"headers": {"source": "rss"}, "body": {"/meta/kind": "news"}});
    let answer = gateway.discard(&queue, "", Some(filter)).await;
    assert_eq!(
        json(answer, 200).await,
        json!({"discarded": 5, "kept": 25, "complete": true})
    );
    let expected: Vec<u64> = (0..30u64)
        .filter(|n| n.is_multiple_of(2) || !n.is_multiple_of(3))
        .collect();
    assert_eq!(left(&amqp, &queue).await, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn leased_messages_are_untouched_and_a_limit_stops_the_scan() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let queue = queue_of(&amqp, 20).await;
    let leased = json(
        gateway.get(&format!("/queues/{queue}/next?lease=60")).await,
        200,
    )
    .await;
    let receipt = leased["receipt"].as_str().expect("receipt");

    let answer = gateway.discard(&queue, "limit=5", Some(json!({}))).await;
    assert_eq!(
        json(answer, 200).await,
        json!({"discarded": 5, "kept": 0, "complete": false})
    );
    let answer = gateway
        .discard(&queue, "timeout=2", Some(json!({"routing_key": queue})))
        .await;
    assert_eq!(
        json(answer, 200).await,
        json!({"discarded": 14, "kept": 0, "complete": true})
    );
    let acked = gateway
        .post(&format!("/queues/{queue}/messages/{receipt}/ack"))
        .await;
    assert_eq!(acked.status(), 204, "the leased message was not discarded");
    assert!(left(&amqp, &queue).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_filters_say_what_to_fix() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let queue = queue_of(&amqp, 3).await;

    for (filter, says) in [
        (
            json!({"properties": {"kind": "feed"}}),
            "not a message property",
        ),
        (json!({"body": {"meta": 1}}), "JSON Pointer"),
        (json!({"where": {}}), "where"),
        (json!([]), "JSON object"),
    ] {
        let refused = problem(
            gateway.discard(&queue, "", Some(filter.clone())).await,
            400,
            "invalid_request",
        )
        .await;
        let detail = refused["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(says), "{filter}: {detail}");
    }
    for query in ["limit=0", "limit=100001", "timeout=0", "timeout=21"] {
        problem(
            gateway.discard(&queue, query, Some(json!({}))).await,
            400,
            "invalid_request",
        )
        .await;
    }
    let without_filter = problem(
        gateway.discard(&queue, "limit=5", None).await,
        400,
        "invalid_request",
    )
    .await;
    assert!(
        without_filter["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("send a filter")
    );
    assert_eq!(
        amqp.count(&queue).await,
        3,
        "a refused discard discards nothing"
    );
    problem(
        gateway
            .discard("test.no-such-queue", "", Some(json!({})))
            .await,
        404,
        "queue_not_found",
    )
    .await;

    // Without a body it is still a purge.
    assert_eq!(
        json(gateway.discard(&queue, "", None).await, 200).await,
        json!({"discarded": 3})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scan_cut_part_way_discards_nothing() {
    let vhost = Vhost::create().await;
    let amqp = Amqp::connect_to(&vhost.url()).await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    const MESSAGES: u32 = 10_000;
    for n in 0..MESSAGES {
        let body = json!({"n": n, "odd": n % 2}).to_string();
        amqp.channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default().with_content_type("application/json".into()),
            )
            .await
            .expect("publish");
    }
    amqp.wait_count(&queue, MESSAGES).await;
    let gateway = Gateway::start_with(Config {
        broker: BrokerConfig {
            amqp_url: AmqpUrls::one(vhost.url()),
            ..Default::default()
        },
        ..Config::default()
    })
    .await;
    gateway.wait_ready(200).await;

    let discard = {
        let (gateway, queue) = (Arc::new(gateway), queue.clone());
        tokio::spawn(async move {
            let filter = json!({"body": {"/odd": 1}});
            let answer = gateway
                .discard(&queue, "limit=100000&timeout=20", Some(filter))
                .await;
            let status = answer.status().as_u16();
            (status, answer.json::<Value>().await.unwrap_or_default())
        })
    };
    // Once the scan holds some of the messages, every connection of the vhost is cut.
    let until = Instant::now() + DEADLINE;
    while amqp.count(&queue).await == MESSAGES {
        assert!(Instant::now() < until, "the scan never started");
    }
    rabbitmqctl(&["close_all_connections", "-p", &vhost.0, "test cut"]).await;
    let (status, answer) = tokio::time::timeout(DEADLINE, discard)
        .await
        .expect("the discard answers")
        .expect("discard task");

    let checker = Amqp::connect_to(&vhost.url()).await;
    let expected = match status {
        200 => MESSAGES - answer["discarded"].as_u64().expect("discarded") as u32,
        // Cut before it was done: nothing is discarded, all it held goes back.
        503 | 504 => MESSAGES,
        other => panic!("a cut scan answered {other}: {answer}"),
    };
    checker.wait_count(&queue, expected).await;
}
