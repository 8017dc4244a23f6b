//! Server-Sent Events streams: order, prefetch, backpressure, disconnects, heartbeats.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;

use crate::support::{Amqp, DEADLINE, Gateway, problem, ready_gateway, unique};

/// Reads `text/event-stream` from a response, one event at a time.
pub struct EventReader {
    chunks:
        std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

#[derive(Debug)]
pub struct SseEvent {
    pub event: Option<String>,
    pub id: Option<String>,
    pub data: String,
    pub comment: bool,
}

impl EventReader {
    pub async fn open(gateway: &Gateway, path: &str) -> Self {
        Self::open_with(gateway, path, &[]).await
    }

    /// Opens the stream with extra request headers (`Last-Event-ID`, say).
    pub async fn open_with(gateway: &Gateway, path: &str, headers: &[(&str, &str)]) -> Self {
        let mut request = gateway.http.get(gateway.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("gateway answers");
        assert_eq!(
            response.status(),
            200,
            "stream refused: {}",
            response.text().await.unwrap_or_default()
        );
        let media = response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(media.starts_with("text/event-stream"), "{media}");
        Self {
            chunks: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        }
    }

    /// Waits, at most the test deadline, until the gateway ends the stream.
    pub async fn ended(&mut self) {
        tokio::time::timeout(DEADLINE, async {
            while let Some(Ok(_)) = self.chunks.next().await {}
        })
        .await
        .expect("the gateway ends the stream in time");
    }

    /// The next event or comment block, waiting at most the test deadline.
    pub async fn next(&mut self) -> SseEvent {
        tokio::time::timeout(DEADLINE, async {
            loop {
                if let Some(end) = self.buffer.find("\n\n") {
                    let block: String = self.buffer.drain(..end + 2).collect();
                    let mut event = SseEvent {
                        event: None,
                        id: None,
                        data: String::new(),
                        comment: false,
                    };
                    for line in block.lines() {
                        if let Some(name) = line.strip_prefix("event:") {
                            event.event = Some(name.trim().to_owned());
                        } else if let Some(id) = line.strip_prefix("id:") {
                            event.id = Some(id.trim().to_owned());
                        } else if let Some(data) = line.strip_prefix("data:") {
                            event.data.push_str(data.trim_start());
                        } else if line.starts_with(':') {
                            event.comment = true;
                        }
                    }
                    return event;
                }
                let chunk = self
                    .chunks
                    .next()
                    .await
                    .expect("stream still open")
                    .expect("readable");
                self.buffer.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await
        .expect("an event within the deadline")
    }

    /// The next `message` event's JSON, skipping heartbeats.
    pub async fn message(&mut self) -> Value {
        loop {
            let event = self.next().await;
            if event.comment {
                continue;
            }
            assert_eq!(event.event.as_deref(), Some("message"), "{event:?}");
            return serde_json::from_str(&event.data).expect("JSON data");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_delivers_in_order_within_the_prefetch() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    let mut events =
        EventReader::open(&gateway, &format!("/queues/{queue}/stream?prefetch=3")).await;
    for i in 0..10 {
        amqp.send_text(&queue, &format!("m{i}")).await;
    }
    let mut receipts = Vec::new();
    for i in 0..3 {
        let message = events.message().await;
        assert_eq!(message["body"], format!("m{i}"));
        assert_eq!(message["queue"], queue.as_str());
        receipts.push(message["receipt"].as_str().expect("leased").to_owned());
    }
    // Three unacknowledged on the broker, the other seven still ready in the queue.
    amqp.wait_count(&queue, 7).await;
    let ack = gateway
        .http
        .post(gateway.url(&format!("/queues/{queue}/messages/{}/ack", receipts[0])))
        .send()
        .await
        .expect("answers");
    assert_eq!(ack.status(), 204);
    assert_eq!(events.message().await["body"], "m3");
    amqp.wait_count(&queue, 6).await;

    // Disconnecting returns every unsettled message: 2 leased + 1 delivered + 6 ready.
    drop(events);
    amqp.wait_count(&queue, 9).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_stream_consumes_and_heartbeats_while_idle() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    let mut events = EventReader::open(
        &gateway,
        &format!("/queues/{queue}/stream?ack=auto&prefetch=5&heartbeat=1"),
    )
    .await;
    for i in 0..20 {
        amqp.send_text(&queue, &format!("m{i}")).await;
    }
    for i in 0..20 {
        let message = events.message().await;
        assert_eq!(message["body"], format!("m{i}"));
        assert!(message.get("receipt").is_none());
    }
    let idle = events.next().await;
    assert!(idle.comment, "a heartbeat comment while idle: {idle:?}");
    drop(events);
    amqp.wait_count(&queue, 0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_reader_holds_back_the_broker() {
    let gateway = ready_gateway().await;
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    let body = "x".repeat(64 * 1024);
    for _ in 0..200 {
        amqp.send_text(&queue, &body).await;
    }
    // Open the stream and read nothing: the broker must stop delivering soon, not drain the queue.
    let response = gateway
        .http
        .get(gateway.url(&format!("/queues/{queue}/stream?ack=auto&prefetch=1")))
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 200);
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut last = amqp.count(&queue).await;
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
        last = amqp.count(&queue).await;
    }
    // Socket buffers hold a few MiB at most; 200 × 64 KiB = 12.5 MiB would mean no backpressure.
    assert!(
        last > 100,
        "only {last} of 200 left: the gateway read ahead without bound"
    );
    drop(response);
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_of_missing_queues_and_bad_parameters_are_refused() {
    let gateway = ready_gateway().await;
    let missing = gateway
        .http
        .get(gateway.url(&format!("/queues/{}/stream", unique("missing"))))
        .send()
        .await
        .expect("answers");
    problem(missing, 404, "queue_not_found").await;
    let amqp = Amqp::connect().await;
    let queue = amqp.queue_bound("amq.direct", &[]).await;
    for query in ["prefetch=0", "ack=later", "heartbeat=0", "lease=0"] {
        let answer = gateway
            .http
            .get(gateway.url(&format!("/queues/{queue}/stream?{query}")))
            .send()
            .await
            .expect("answers");
        problem(answer, 400, "invalid_request").await;
    }
}
