//! W3C trace context end to end: request headers on publish become AMQP headers, and a message
//! that carries them hands them back on `/next`.

use lapin::types::AMQPValue;
use serde_json::json;

use crate::support::{Amqp, json, ready_gateway};

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const OWN: &str = "00-11111111111111111111111111111111-2222222222222222-00";

fn header(message: &lapin::message::BasicGetMessage, name: &str) -> Option<String> {
    let headers = message.delivery.properties.headers().clone()?;
    match headers.inner().get(name)? {
        AMQPValue::LongString(text) => Some(text.to_string()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_headers_travel_with_the_message_and_come_back() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    let publish = |body: &'static str, traceparent: &'static str| {
        gateway
            .http
            .post(gateway.url(&format!(
                "/exchanges/amq.default/messages?routing_key={queue}"
            )))
            .header("content-type", "text/plain")
            .header("traceparent", traceparent)
            .header("tracestate", "congo=t61rcWkgMzE")
            .header("baggage", "user=ada")
            .body(body)
            .send()
    };

    json(publish("seen by AMQP", PARENT).await.expect("answers"), 200).await;
    let message = amqp.get(&queue).await.expect("the message");
    assert_eq!(header(&message, "traceparent").as_deref(), Some(PARENT));
    assert_eq!(
        header(&message, "tracestate").as_deref(),
        Some("congo=t61rcWkgMzE")
    );
    assert_eq!(header(&message, "baggage").as_deref(), Some("user=ada"));

    json(publish("read raw", PARENT).await.expect("answers"), 200).await;
    let raw = gateway
        .get(&format!("/queues/{queue}/next/raw?ack=auto"))
        .await;
    assert_eq!(raw.status(), 200);
    assert_eq!(raw.headers()["traceparent"], PARENT);
    assert_eq!(raw.headers()["tracestate"], "congo=t61rcWkgMzE");
    assert_eq!(raw.headers()["baggage"], "user=ada");

    // A malformed traceparent starts no trace: it is dropped with its tracestate.
    let broken = "00-4bf92f3577b34da6a3ce929d0e0e4736-01";
    json(publish("broken", broken).await.expect("answers"), 200).await;
    let envelope = json(
        gateway.get(&format!("/queues/{queue}/next?ack=auto")).await,
        200,
    )
    .await;
    assert_eq!(
        envelope["properties"]["headers"],
        json!({"baggage": "user=ada"})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_message_with_its_own_traceparent_keeps_it() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    let batch = json!({"messages": [
        {"routing_key": queue, "body": 1},
        {"routing_key": queue, "body": 2, "properties": {"headers": {"traceparent": OWN}}},
    ]});
    let answer = gateway
        .http
        .post(gateway.url("/exchanges/amq.default/messages"))
        .header("content-type", "application/vnd.carrot.batch+json")
        .header("traceparent", PARENT)
        .body(batch.to_string())
        .send()
        .await
        .expect("answers");
    json(answer, 200).await;
    let first = amqp.get(&queue).await.expect("the first");
    let second = amqp.get(&queue).await.expect("the second");
    assert_eq!(header(&first, "traceparent").as_deref(), Some(PARENT));
    assert_eq!(header(&second, "traceparent").as_deref(), Some(OWN));
}
