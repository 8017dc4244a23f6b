//! Consuming over HTTP: leases, settling, expiry, long polls, formats, shutdown and crash.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::support::{
    Amqp, DEADLINE, Gateway, json, problem, ready_gateway, spawn_gateway, unique,
};

impl Gateway {
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("gateway answers")
    }

    pub async fn post(&self, path: &str) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .send()
            .await
            .expect("gateway answers")
    }
}

impl Amqp {
    /// Publishes with our own client, as an independent producer would.
    pub async fn send(&self, queue: &str, body: &[u8], properties: BasicProperties) {
        self.channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
    }

    pub async fn send_text(&self, queue: &str, text: &str) {
        self.send(
            queue,
            text.as_bytes(),
            BasicProperties::default().with_content_type("text/plain".into()),
        )
        .await;
    }

    /// Waits until the queue holds `ready` messages ready for delivery.
    pub async fn wait_count(&self, queue: &str, ready: u32) {
        let until = Instant::now() + DEADLINE;
        loop {
            let count = self.count(queue).await;
            if count == ready {
                return;
            }
            assert!(
                Instant::now() < until,
                "queue {queue} holds {count}, never {ready}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn setup() -> (Gateway, Amqp, String) {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    (gateway, amqp, queue)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leased_message_is_invisible_until_acked() {
    let (gateway, amqp, queue) = setup().await;
    amqp.send_text(&queue, "one").await;

    let leased = json(gateway.get(&format!("/queues/{queue}/next")).await, 200).await;
    assert_eq!(leased["body"], "one");
    assert_eq!(leased["body_encoding"], "utf8");
    assert_eq!(leased["redelivered"], false);
    assert_eq!(leased["message_count"], 0);
    assert!(
        leased["lease_expires_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    let receipt = leased["receipt"].as_str().expect("receipt").to_owned();

    assert_eq!(
        gateway.get(&format!("/queues/{queue}/next")).await.status(),
        204
    );
    assert_eq!(amqp.count(&queue).await, 0, "leased, not ready");
    let ack = gateway
        .post(&format!("/queues/{queue}/messages/{receipt}/ack"))
        .await;
    assert_eq!(ack.status(), 204);
    problem(
        gateway
            .post(&format!("/queues/{queue}/messages/{receipt}/ack"))
            .await,
        404,
        "receipt_not_found",
    )
    .await;

    // Gone for good: not ready, and nothing unacked comes back when our channels close.
    gateway.stop().await;
    assert_eq!(amqp.count(&queue).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn requeue_returns_the_message_redelivered() {
    let (gateway, amqp, queue) = setup().await;
    amqp.send_text(&queue, "again").await;
    let leased = json(gateway.get(&format!("/queues/{queue}/next")).await, 200).await;
    let receipt = leased["receipt"].as_str().expect("receipt");
    assert_eq!(
        gateway
            .post(&format!("/queues/{queue}/messages/{receipt}/requeue"))
            .await
            .status(),
        204
    );
    let again = json(
        gateway.get(&format!("/queues/{queue}/next?ack=auto")).await,
        200,
    )
    .await;
    assert_eq!(again["body"], "again");
    assert_eq!(again["redelivered"], true);
    assert!(
        again.get("receipt").is_none(),
        "auto mode hands out no receipt"
    );
    assert_eq!(amqp.count(&queue).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn reject_dead_letters_into_the_dlx() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let dlx = amqp.exchange(lapin::ExchangeKind::Fanout).await;
    let dead = amqp.queue_bound(&dlx, &[""]).await;
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from(dlx.as_str())),
    );
    let queue = amqp.queue_with("amq.direct", &[], arguments).await;
    amqp.send_text(&queue, "bad").await;

    let leased = json(gateway.get(&format!("/queues/{queue}/next")).await, 200).await;
    let receipt = leased["receipt"].as_str().expect("receipt");
    assert_eq!(
        gateway
            .post(&format!("/queues/{queue}/messages/{receipt}/reject"))
            .await
            .status(),
        204
    );
    amqp.wait_count(&dead, 1).await;
    assert_eq!(
        amqp.get(&dead).await.expect("dead-lettered").delivery.data,
        b"bad"
    );
    assert_eq!(amqp.count(&queue).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_lease_requeues_and_kills_its_receipt() {
    let (gateway, amqp, queue) = setup().await;
    amqp.send_text(&queue, "slow").await;
    let leased = json(
        gateway.get(&format!("/queues/{queue}/next?lease=1")).await,
        200,
    )
    .await;
    let receipt = leased["receipt"].as_str().expect("receipt");

    amqp.wait_count(&queue, 1).await;
    problem(
        gateway
            .post(&format!("/queues/{queue}/messages/{receipt}/ack"))
            .await,
        404,
        "receipt_not_found",
    )
    .await;
    problem(
        gateway
            .post(&format!("/queues/{queue}/messages/{receipt}/extend"))
            .await,
        404,
        "receipt_not_found",
    )
    .await;
    let again = json(
        gateway.get(&format!("/queues/{queue}/next?ack=auto")).await,
        200,
    )
    .await;
    assert_eq!(again["redelivered"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn extend_keeps_the_lease() {
    let (gateway, amqp, queue) = setup().await;
    amqp.send_text(&queue, "keep").await;
    let leased = json(
        gateway.get(&format!("/queues/{queue}/next?lease=1")).await,
        200,
    )
    .await;
    let receipt = leased["receipt"].as_str().expect("receipt");
    let extended = gateway
        .post(&format!(
            "/queues/{queue}/messages/{receipt}/extend?lease=30"
        ))
        .await;
    assert_eq!(extended.status(), 204);
    assert!(extended.headers().contains_key("amqp-lease-expires-at"));

    // Past the first deadline the message is still leased; only time can show that.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(amqp.count(&queue).await, 0);
    assert_eq!(
        gateway
            .post(&format!("/queues/{queue}/messages/{receipt}/ack"))
            .await
            .status(),
        204
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn receipts_are_bound_to_their_queue() {
    let (gateway, amqp, queue) = setup().await;
    let other = amqp.queue_bound("amq.direct", &[]).await;
    amqp.send_text(&queue, "mine").await;
    amqp.send_text(&other, "theirs").await;
    let mine = json(gateway.get(&format!("/queues/{queue}/next")).await, 200).await;
    let theirs = json(gateway.get(&format!("/queues/{other}/next")).await, 200).await;
    let receipt = mine["receipt"].as_str().expect("receipt");

    problem(
        gateway
            .post(&format!("/queues/{other}/messages/{receipt}/ack"))
            .await,
        404,
        "receipt_not_found",
    )
    .await;
    problem(
        gateway
            .post(&format!("/queues/{queue}/messages/{}/ack", "0".repeat(32)))
            .await,
        404,
        "receipt_not_found",
    )
    .await;
    // Both leases are intact: each settles with its own receipt on its own queue.
    assert_eq!(
        gateway
            .post(&format!("/queues/{queue}/messages/{receipt}/ack"))
            .await
            .status(),
        204
    );
    let theirs_receipt = theirs["receipt"].as_str().expect("receipt");
    assert_eq!(
        gateway
            .post(&format!(
                "/queues/{other}/messages/{theirs_receipt}/requeue"
            ))
            .await
            .status(),
        204
    );
    // basic.reject has no reply: the broker requeues a moment after the 204.
    amqp.wait_count(&other, 1).await;
    assert_eq!(amqp.count(&queue).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn long_poll_answers_as_soon_as_a_message_arrives() {
    let (gateway, amqp, queue) = setup().await;
    let started = Instant::now();
    assert_eq!(
        gateway
            .get(&format!("/queues/{queue}/next?wait=1"))
            .await
            .status(),
        204
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );

    let gateway = Arc::new(gateway);
    let poll = tokio::spawn({
        let (gateway, queue) = (gateway.clone(), queue.clone());
        async move {
            let answer = gateway.get(&format!("/queues/{queue}/next?wait=10")).await;
            (Instant::now(), json(answer, 200).await)
        }
    });
    // The long poll is a consumer: once the queue has one, the poll is waiting.
    let until = Instant::now() + DEADLINE;
    while amqp.counts(&queue).await.1 == 0 {
        assert!(
            Instant::now() < until,
            "the long poll never started waiting"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    amqp.send_text(&queue, "now").await;
    let published = Instant::now();
    let (answered, message) = tokio::time::timeout(DEADLINE, poll)
        .await
        .expect("in time")
        .expect("poll task");
    assert_eq!(message["body"], "now");
    let latency = answered.saturating_duration_since(published);
    assert!(
        latency < Duration::from_millis(500),
        "answered {latency:?} after the publish"
    );
    let receipt = message["receipt"].as_str().expect("leased");
    assert_eq!(
        gateway
            .post(&format!("/queues/{queue}/messages/{receipt}/ack"))
            .await
            .status(),
        204
    );
    assert_eq!(amqp.count(&queue).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_consumers_never_share_a_message() {
    let (gateway, amqp, queue) = setup().await;
    for i in 0..200 {
        amqp.send_text(&queue, &format!("m{i}")).await;
    }
    let gateway = Arc::new(gateway);
    let consumers = (0..16).map(|_| {
        let (gateway, queue) = (gateway.clone(), queue.clone());
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let answer = gateway
                    .get(&format!("/queues/{queue}/next?lease=120"))
                    .await;
                if answer.status() == 204 {
                    return got;
                }
                let message = json(answer, 200).await;
                got.push((
                    message["body"].as_str().map(str::to_owned),
                    message["receipt"].as_str().map(str::to_owned),
                ));
            }
        })
    });
    let mut bodies = HashSet::new();
    let mut receipts = Vec::new();
    for consumer in futures_util::future::join_all(consumers).await {
        for (body, receipt) in consumer.expect("consumer task") {
            assert!(
                bodies.insert(body.expect("body")),
                "a message was handed out twice"
            );
            receipts.push(receipt.expect("receipt"));
        }
    }
    assert_eq!(bodies.len(), 200);
    for receipt in receipts {
        assert_eq!(
            gateway
                .post(&format!("/queues/{queue}/messages/{receipt}/ack"))
                .await
                .status(),
            204
        );
    }
    assert_eq!(amqp.count(&queue).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn kombu_yaml_and_msgpack_bodies_decode_to_json() {
    let (gateway, amqp, queue) = setup().await;
    let value = json!({"id": 42, "tags": ["a"], "ok": true});
    let yaml = yaml_serde::to_string(&value).expect("yaml");
    let msgpack = rmp_serde::to_vec_named(&value).expect("msgpack");
    let kombu = |content_type: &str, encoding: &str| {
        BasicProperties::default()
            .with_content_type(content_type.into())
            .with_content_encoding(encoding.into())
    };
    amqp.send(
        &queue,
        yaml.as_bytes(),
        kombu("application/x-yaml", "utf-8"),
    )
    .await;
    amqp.send(&queue, &msgpack, kombu("application/x-msgpack", "binary"))
        .await;
    amqp.send(&queue, &msgpack, kombu("application/x-msgpack", "binary"))
        .await;

    for _ in 0..2 {
        let message = json(
            gateway.get(&format!("/queues/{queue}/next?ack=auto")).await,
            200,
        )
        .await;
        assert_eq!(message["body"], value);
        assert_eq!(message["body_encoding"], "json");
    }
    let undecoded = json(
        gateway
            .get(&format!("/queues/{queue}/next?ack=auto&decode=false"))
            .await,
        200,
    )
    .await;
    assert_eq!(undecoded["body_encoding"], "base64");
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(undecoded["body"].as_str().expect("base64 string"))
        .expect("valid base64");
    assert_eq!(bytes, msgpack);
}

#[tokio::test(flavor = "multi_thread")]
async fn envelope_carries_every_property_and_typed_headers() {
    let (gateway, amqp, queue) = setup().await;
    let mut headers = FieldTable::default();
    headers.insert("n".into(), AMQPValue::LongLongInt(7));
    headers.insert("s".into(), AMQPValue::LongString("x".into()));
    headers.insert("i".into(), AMQPValue::LongInt(-3));
    let properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_headers(headers)
        .with_delivery_mode(1)
        .with_priority(4)
        .with_correlation_id("c".into())
        .with_reply_to("r".into())
        .with_expiration("60000".into())
        .with_message_id("m".into())
        .with_timestamp(1_700_000_000)
        .with_type("t".into())
        .with_user_id("guest".into())
        .with_app_id("a".into());
    amqp.send(&queue, br#"{"id": 42}"#, properties).await;
    let message = json(
        gateway.get(&format!("/queues/{queue}/next?ack=auto")).await,
        200,
    )
    .await;
    assert_eq!(message["body"], json!({"id": 42}));
    assert_eq!(message["exchange"], "");
    assert_eq!(message["routing_key"], queue.as_str());
    assert_eq!(
        message["properties"],
        json!({"content_type": "application/json", "content_encoding": "utf-8",
               "headers": {"n": 7, "s": "x", "i": -3}, "delivery_mode": 1, "priority": 4,
               "correlation_id": "c", "reply_to": "r", "expiration": "60000", "message_id": "m",
               "timestamp": 1_700_000_000, "type": "t", "user_id": "guest", "app_id": "a",
               "cluster_id": null})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_format_returns_the_exact_bytes() {
    let (gateway, amqp, queue) = setup().await;
    let bytes: Vec<u8> = (0..=255u8).rev().collect();
    let properties = BasicProperties::default()
        .with_content_type("image/png".into())
        .with_message_id("img-1".into());
    for _ in 0..3 {
        amqp.send(&queue, &bytes, properties.clone()).await;
    }

    let raw = gateway
        .get(&format!("/queues/{queue}/next?format=raw"))
        .await;
    assert_eq!(raw.status(), 200);
    let headers = raw.headers().clone();
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(headers["amqp-message-id"], "img-1");
    assert_eq!(headers["amqp-routing-key"], queue.as_str());
    assert_eq!(headers["amqp-redelivered"], "false");
    let receipt = headers["amqp-receipt"].to_str().expect("ascii").to_owned();
    assert_eq!(raw.bytes().await.expect("body").to_vec(), bytes);
    assert_eq!(
        gateway
            .post(&format!("/queues/{queue}/messages/{receipt}/ack"))
            .await
            .status(),
        204
    );

    let by_accept = gateway
        .http
        .get(gateway.url(&format!("/queues/{queue}/next?ack=auto")))
        .header("accept", "application/octet-stream")
        .send()
        .await
        .expect("answers");
    assert_eq!(by_accept.status(), 200);
    assert!(!by_accept.headers().contains_key("amqp-receipt"));
    assert_eq!(by_accept.bytes().await.expect("body").to_vec(), bytes);

    let by_path = gateway
        .get(&format!("/queues/{queue}/next/raw?ack=auto"))
        .await;
    assert_eq!(by_path.status(), 200);
    assert_eq!(by_path.headers()["content-type"], "image/png");
    assert_eq!(by_path.bytes().await.expect("body").to_vec(), bytes);
    assert_eq!(amqp.count(&queue).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_takes_up_to_limit() {
    let (gateway, amqp, queue) = setup().await;
    for i in 0..5 {
        amqp.send_text(&queue, &format!("m{i}")).await;
    }
    let batch = json(
        gateway
            .get(&format!("/queues/{queue}/messages?limit=3&ack=auto"))
            .await,
        200,
    )
    .await;
    let bodies: Vec<&str> = batch["messages"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|m| m["body"].as_str())
        .collect();
    assert_eq!(bodies, ["m0", "m1", "m2"]);
    let rest = json(
        gateway
            .get(&format!("/queues/{queue}/messages?limit=10"))
            .await,
        200,
    )
    .await;
    assert_eq!(rest["messages"].as_array().map(Vec::len), Some(2));
    let empty = json(gateway.get(&format!("/queues/{queue}/messages")).await, 200).await;
    assert_eq!(empty, json!({"messages": []}));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_consume_requests() {
    let (gateway, _amqp, queue) = setup().await;
    for query in [
        "ack=maybe",
        "lease=0",
        "lease=100000",
        "wait=3600",
        "format=xml",
        "limit=2",
        "colour=red",
    ] {
        problem(
            gateway.get(&format!("/queues/{queue}/next?{query}")).await,
            400,
            "invalid_request",
        )
        .await;
    }
    for query in ["limit=0", "limit=101", "format=raw"] {
        problem(
            gateway
                .get(&format!("/queues/{queue}/messages?{query}"))
                .await,
            400,
            "invalid_request",
        )
        .await;
    }
    problem(
        gateway
            .get(&format!("/queues/{}/next", unique("missing")))
            .await,
        404,
        "queue_not_found",
    )
    .await;
    // The refused get closed a channel; the gateway goes on.
    assert_eq!(
        gateway.get(&format!("/queues/{queue}/next")).await.status(),
        204
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown_returns_every_lease() {
    let (gateway, amqp, queue) = setup().await;
    for i in 0..5 {
        amqp.send_text(&queue, &format!("m{i}")).await;
    }
    for _ in 0..5 {
        json(
            gateway
                .get(&format!("/queues/{queue}/next?lease=600"))
                .await,
            200,
        )
        .await;
    }
    assert_eq!(amqp.count(&queue).await, 0);
    gateway.stop().await;
    // Requeued by the gateway before it closed its channels; our connection sees it shortly.
    amqp.wait_count(&queue, 5).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_loses_nothing() {
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    for i in 0..3 {
        amqp.send_text(&queue, &format!("m{i}")).await;
    }
    let (mut child, base) = spawn_gateway(&[]).await;
    let http = reqwest::Client::new();
    for _ in 0..3 {
        let answer = http
            .get(format!("{base}/queues/{queue}/next?lease=600"))
            .send()
            .await
            .expect("answers");
        let _: Value = json(answer, 200).await;
    }
    assert_eq!(amqp.count(&queue).await, 0);
    child.kill().await.expect("SIGKILL");
    amqp.wait_count(&queue, 3).await;
}
