//! Request/reply over HTTP (`reply=wait`): requests go out with direct reply-to, and each client
//! gets its own reply, whether the responder is an HTTP client or an AMQP one.

use std::sync::Arc;

use futures_util::StreamExt;
use lapin::BasicProperties;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};

use crate::support::{Amqp, DEADLINE, Gateway, json, problem, ready_gateway};

async fn request(gateway: &Gateway, queue: &str, query: &str, body: Value) -> reqwest::Response {
    gateway
        .publish(
            "amq.default",
            &format!("routing_key={queue}&reply=wait&{query}"),
            Some("application/json"),
            body.to_string(),
        )
        .await
}

/// Answers every request on `queue` over HTTP: takes it with `/next`, publishes the reply to
/// its `reply_to` with its `correlation_id`, then acks it.
async fn http_responder(gateway: Arc<Gateway>, queue: String, requests: usize) {
    for _ in 0..requests {
        let taken = gateway.get(&format!("/queues/{queue}/next?wait=10")).await;
        let taken = json(taken, 200).await;
        let properties = &taken["properties"];
        let reply_to = properties["reply_to"].as_str().expect("reply_to");
        let correlation_id = properties["correlation_id"]
            .as_str()
            .expect("correlation_id");
        let n = taken["body"]["n"].as_i64().expect("n");
        // Direct reply-to addresses are base64: `+` and `/` must be escaped in a query.
        let query = serde_urlencoded::to_string([
            ("routing_key", reply_to),
            ("correlation_id", correlation_id),
        ])
        .expect("a query");
        let replied = gateway
            .publish(
                "amq.default",
                &query,
                Some("application/json"),
                json!({"doubled": n * 2}).to_string(),
            )
            .await;
        assert_eq!(
            json(replied, 200).await["routed"],
            true,
            "the reply reached its requester"
        );
        let receipt = taken["receipt"].as_str().expect("receipt");
        let acked = gateway
            .post(&format!("/queues/{queue}/messages/{receipt}/ack"))
            .await;
        assert_eq!(acked.status(), 204);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http_responder_answers_concurrent_requests_each_with_its_own_reply() {
    let gateway = Arc::new(ready_gateway().await);
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    let responder = tokio::spawn(http_responder(gateway.clone(), queue.clone(), 24));

    let requests = (0..24).map(|n| {
        let (gateway, queue) = (gateway.clone(), queue.clone());
        async move {
            let answer = request(&gateway, &queue, "timeout=15", json!({"n": n})).await;
            (n, json(answer, 200).await)
        }
    });
    for (n, reply) in futures_util::future::join_all(requests).await {
        assert_eq!(reply["body"], json!({"doubled": n * 2}), "request {n}");
        assert!(
            reply["properties"]["correlation_id"].is_string(),
            "the gateway made one"
        );
    }
    tokio::time::timeout(DEADLINE, responder)
        .await
        .expect("the responder finished")
        .expect("responder task");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_amqp_responder_sees_the_request_and_its_raw_reply_comes_back() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    let mut requests = amqp
        .channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume requests");
    let channel = amqp.channel.clone();
    let responder = tokio::spawn(async move {
        let delivery = requests
            .next()
            .await
            .expect("a request")
            .expect("a delivery");
        let properties = delivery.properties.clone();
        let reply_to = properties.reply_to().clone().expect("reply_to");
        channel
            .basic_publish(
                "".into(),
                reply_to.as_str().into(),
                BasicPublishOptions::default(),
                b"pong",
                BasicProperties::default()
                    .with_content_type("text/plain".into())
                    .with_correlation_id(properties.correlation_id().clone().expect("id")),
            )
            .await
            .expect("reply");
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
        properties
    });

    let answer = request(
        &gateway,
        &queue,
        "timeout=10&format=raw&correlation_id=ping-1&type=ping",
        json!({"n": 1}),
    )
    .await;
    assert_eq!(answer.status(), 200);
    let headers = answer.headers().clone();
    assert_eq!(headers["content-type"], "text/plain");
    assert_eq!(headers["amqp-correlation-id"], "ping-1");
    assert_eq!(answer.bytes().await.expect("body").as_ref(), b"pong");

    let seen = tokio::time::timeout(DEADLINE, responder)
        .await
        .expect("the responder answered")
        .expect("responder task");
    let reply_to = seen.reply_to().as_ref().expect("reply_to").to_string();
    assert!(reply_to.starts_with("amq.rabbitmq.reply-to"), "{reply_to}");
    assert_eq!(
        seen.correlation_id().as_ref().map(ToString::to_string),
        Some("ping-1".to_owned())
    );
    assert_eq!(
        seen.kind().as_ref().map(ToString::to_string),
        Some("ping".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unanswered_unroutable_and_bad_requests_say_so() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;

    let unanswered = request(&gateway, &queue, "timeout=1&correlation_id=c-9", json!({})).await;
    let detail = problem(unanswered, 504, "reply_timeout").await;
    assert!(
        detail["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("c-9")
    );
    let delivered = amqp.get(&queue).await.expect("the request was delivered");
    let reply_to = delivered.delivery.properties.reply_to().clone();
    assert!(
        reply_to.is_some_and(|to| to.as_str().starts_with("amq.rabbitmq.reply-to")),
        "sent with direct reply-to"
    );

    let nobody = request(&gateway, "test.no-such-queue", "", json!({})).await;
    problem(nobody, 422, "unroutable").await;

    for (query, says) in [
        ("reply=soon", "must be wait"),
        ("reply=wait&timeout=0", "from 1 to"),
        ("reply=wait&timeout=21", "from 1 to"),
        ("reply=wait&format=xml", "json or raw"),
        ("reply=wait&reply_to=mine", "leave reply_to out"),
        ("timeout=5", "are for reply=wait"),
    ] {
        let answer = gateway
            .publish(
                "amq.default",
                &format!("routing_key={queue}&{query}"),
                Some("application/json"),
                "{}",
            )
            .await;
        let refused = problem(answer, 400, "invalid_request").await;
        let detail = refused["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(says), "{query}: {detail}");
    }
    assert_eq!(amqp.count(&queue).await, 0, "nothing refused was published");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_correlation_id_waiting_already_is_refused() {
    let gateway = Arc::new(ready_gateway().await);
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;

    let first = {
        let (gateway, queue) = (gateway.clone(), queue.clone());
        tokio::spawn(async move {
            request(&gateway, &queue, "timeout=8&correlation_id=same", json!({})).await
        })
    };
    // Once the first request is in the queue it is waiting for its reply.
    let until = tokio::time::Instant::now() + DEADLINE;
    while amqp.count(&queue).await == 0 {
        assert!(
            tokio::time::Instant::now() < until,
            "the first request never arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Requests take the gateway's reply channels in turn, and replies come back to the channel
    // their request went out on: the same id is ambiguous, and refused, only on the first's.
    let mut refused = 0;
    for _ in 0..4 {
        let second = request(&gateway, &queue, "timeout=1&correlation_id=same", json!({})).await;
        if second.status() == 409 {
            problem(second, 409, "precondition_failed").await;
            refused += 1;
        }
    }
    assert_eq!(
        refused, 1,
        "a second request with a waiting correlation_id was taken"
    );
    problem(first.await.expect("first request"), 504, "reply_timeout").await;
    // A request that ended gave its place up: the id is free on every channel again.
    for _ in 0..4 {
        let later = request(&gateway, &queue, "timeout=1&correlation_id=same", json!({})).await;
        problem(later, 504, "reply_timeout").await;
    }
}
