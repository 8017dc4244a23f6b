//! The gateway's own spans over OTLP/HTTP: a receiver of the test's own takes what the gateway
//! binary exports and checks the names, attributes and parents OpenTelemetry's messaging
//! conventions ask for; the independent AMQP client checks the message carries the span.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use serde_json::Value;

use crate::support::{Amqp, DEADLINE, spawn_gateway};

/// Every OTLP/HTTP JSON export request the receiver got.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Value>>>);

impl Received {
    fn spans(&self) -> Vec<Value> {
        let exports = self.0.lock().map(|held| held.clone()).unwrap_or_default();
        exports
            .iter()
            .flat_map(|export| as_list(&export["resourceSpans"]))
            .flat_map(|resource| as_list(&resource["scopeSpans"]))
            .flat_map(|scope| as_list(&scope["spans"]))
            .collect()
    }

    /// Waits until a span named `name` has arrived.
    async fn span(&self, name: &str) -> Value {
        tokio::time::timeout(DEADLINE, async {
            loop {
                if let Some(span) = self.spans().into_iter().find(|span| span["name"] == name) {
                    return span;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no span {name:?} within the deadline: {:?}", self.spans()))
    }
}

fn as_list(value: &Value) -> Vec<Value> {
    value.as_array().cloned().unwrap_or_default()
}

/// The span's attributes as key → value (the OTLP JSON `AnyValue`'s one field).
fn attribute(span: &Value, key: &str) -> Value {
    as_list(&span["attributes"])
        .into_iter()
        .find(|attribute| attribute["key"] == key)
        .and_then(|attribute| attribute["value"].as_object()?.values().next().cloned())
        .unwrap_or(Value::Null)
}

async fn receiver() -> (Received, String) {
    let received = Received::default();
    let kept = received.clone();
    let app = Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                if let Ok(export) = serde_json::from_slice::<Value>(&body)
                    && let Ok(mut held) = kept.0.lock()
                {
                    held.push(export);
                }
                "{}"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (received, format!("http://{address}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_and_receive_spans_follow_the_messaging_conventions() {
    let (received, endpoint) = receiver().await;
    let (_gateway, base) = spawn_gateway(&["--otlp-endpoint", &endpoint]).await;
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    let http = reqwest::Client::new();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let published = http
        .post(format!(
            "{base}/exchanges/amq.default/messages?routing_key={queue}&message_id=m-1"
        ))
        .header("content-type", "text/plain")
        .header("traceparent", format!("00-{trace_id}-{client_span}-01"))
        .header("tracestate", "vendor=kept")
        .body("traced")
        .send()
        .await
        .expect("answers");
    assert_eq!(published.status(), 200);

    let publish = received.span("publish amq.default").await;
    assert_eq!(publish["traceId"], trace_id, "{publish}");
    assert_eq!(publish["parentSpanId"], client_span, "{publish}");
    assert_eq!(publish["kind"], 4, "PRODUCER: {publish}");
    assert_eq!(attribute(&publish, "messaging.system"), "rabbitmq");
    assert_eq!(attribute(&publish, "messaging.operation.type"), "send");
    assert_eq!(
        attribute(&publish, "messaging.destination.name"),
        "amq.default"
    );
    assert_eq!(
        attribute(&publish, "messaging.rabbitmq.destination.routing_key"),
        queue.as_str()
    );
    for noise in ["code.file.path", "thread.id", "busy_ns"] {
        assert!(attribute(&publish, noise).is_null(), "{noise}: {publish}");
    }

    // The message names the gateway's publish span as its parent, in the same trace.
    let taken = http
        .get(format!("{base}/queues/{queue}/next?ack=auto"))
        .header("traceparent", format!("00-{trace_id}-{client_span}-01"))
        .send()
        .await
        .expect("answers");
    let envelope: Value = taken.json().await.expect("JSON");
    let headers = &envelope["properties"]["headers"];
    let publish_span = publish["spanId"].as_str().expect("span id");
    assert_eq!(
        headers["traceparent"],
        format!("00-{trace_id}-{publish_span}-01")
    );
    assert_eq!(headers["tracestate"], "vendor=kept");

    let receive = received.span(&format!("receive {queue}")).await;
    assert_eq!(receive["traceId"], trace_id);
    assert_eq!(receive["kind"], 5, "CONSUMER: {receive}");
    assert_eq!(attribute(&receive, "messaging.system"), "rabbitmq");
    assert_eq!(
        attribute(&receive, "messaging.destination.name"),
        queue.as_str()
    );
    assert_eq!(attribute(&receive, "messaging.message.id"), "m-1");
    assert!(
        attribute(&receive, "messaging.rabbitmq.message.delivery_tag").is_string()
            || attribute(&receive, "messaging.rabbitmq.message.delivery_tag").is_number(),
        "{receive}"
    );
    let links = as_list(&receive["links"]);
    assert!(
        links.iter().any(|link| link["spanId"] == publish_span),
        "the receive span links the message's publish span: {receive}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_an_endpoint_messages_keep_the_clients_own_context() {
    let (_gateway, base) = spawn_gateway(&[]).await;
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let published = reqwest::Client::new()
        .post(format!(
            "{base}/exchanges/amq.default/messages?routing_key={queue}"
        ))
        .header("content-type", "text/plain")
        .header("traceparent", traceparent)
        .body("plain")
        .send()
        .await
        .expect("answers");
    assert_eq!(published.status(), 200);
    let message = amqp.get(&queue).await.expect("published");
    let headers = message.properties.headers().clone().expect("headers");
    let value = headers.inner().get("traceparent").expect("traceparent");
    assert_eq!(
        value,
        &lapin::types::AMQPValue::LongString(traceparent.into())
    );
}
