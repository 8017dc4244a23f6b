//! HTTP scenarios: the gateway's endpoints and RabbitMQ's management API. Each worker is one
//! keep-alive client that waits for every answer before it sends the next request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Method;

use crate::http::{Answer, HttpConn};
use crate::stats::{Tally, Window, contains, excerpt, occurrences};

/// Base64 of `guest:guest`, the broker's default user, for the management API.
const GUEST_AUTH: &str = "Basic Z3Vlc3Q6Z3Vlc3Q=";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `POST /exchanges/amq.default/messages?routing_key=q`, one message in the body.
    GatewayPublish,
    /// The same in batch mode: `batch` messages per request.
    GatewayBatch,
    /// `GET /queues/q/next?ack=auto` until 204.
    GatewayNextAuto,
    /// `GET /queues/q/next` (lease), then `POST /queues/q/messages/{receipt}/ack`.
    GatewayLeaseAck,
    /// `POST /api/exchanges/%2F/amq.default/publish`.
    ManagementPublish,
    /// `POST /api/queues/%2F/q/get`, ack_requeue_false, until it answers `[]`.
    ManagementGet,
}

/// What every worker of one scenario shares.
pub struct Job {
    pub kind: Kind,
    pub addr: String,
    pub queue: String,
    /// The prepared request body (the message, the batch, or the management JSON).
    pub payload: Bytes,
    /// Messages per request (batch size), 1 otherwise.
    pub per_request: u64,
    pub timeout: Duration,
}

impl Job {
    pub fn new(
        kind: Kind,
        addr: &str,
        queue: &str,
        body: &Bytes,
        batch: u64,
        timeout: Duration,
    ) -> Self {
        let text = String::from_utf8_lossy(body);
        let payload = match kind {
            Kind::GatewayPublish => body.clone(),
            Kind::GatewayBatch => {
                let message = serde_json::json!({
                    "routing_key": queue,
                    "body": text,
                    "body_encoding": "utf8",
                    "properties": {"delivery_mode": 2},
                });
                let messages = vec![message; batch as usize];
                Bytes::from(
                    serde_json::to_vec(&serde_json::json!({"messages": messages}))
                        .unwrap_or_default(),
                )
            }
            Kind::ManagementPublish => Bytes::from(
                serde_json::to_vec(&serde_json::json!({
                    "properties": {"delivery_mode": 2, "content_type": "text/plain"},
                    "routing_key": queue,
                    "payload": text,
                    "payload_encoding": "string",
                }))
                .unwrap_or_default(),
            ),
            Kind::ManagementGet => Bytes::from_static(
                br#"{"count":1,"ackmode":"ack_requeue_false","encoding":"auto"}"#,
            ),
            Kind::GatewayNextAuto | Kind::GatewayLeaseAck => Bytes::new(),
        };
        Self {
            kind,
            addr: addr.to_owned(),
            queue: queue.to_owned(),
            payload,
            per_request: if kind == Kind::GatewayBatch { batch } else { 1 },
            timeout,
        }
    }
}

/// The queue name as one path segment.
pub fn segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

enum Step {
    /// `n` messages went through.
    Done(u64),
    /// The queue is empty.
    Empty,
    /// Counted in the tally already; go on.
    Failed,
}

pub async fn worker(job: Arc<Job>, window: Window) -> Tally {
    let mut conn = HttpConn::new(&job.addr, job.timeout);
    let mut tally = Tally::default();
    let queue = segment(&job.queue);
    let publish_path = format!("/exchanges/amq.default/messages?routing_key={queue}");
    let next_path = match job.kind {
        Kind::GatewayNextAuto => format!("/queues/{queue}/next?ack=auto"),
        _ => format!("/queues/{queue}/next"),
    };
    let management_publish = "/api/exchanges/%2F/amq.default/publish".to_owned();
    let management_get = format!("/api/queues/%2F/{queue}/get");
    while !window.over() {
        let started = Instant::now();
        let step = match job.kind {
            Kind::GatewayPublish => {
                let request = conn
                    .request(Method::POST, &publish_path)
                    .content_type("text/plain")
                    .body(job.payload.clone());
                expect_routed(conn.send(request).await, 1, &mut tally)
            }
            Kind::GatewayBatch => {
                let request = conn
                    .request(Method::POST, "/exchanges/amq.default/messages")
                    .content_type("application/vnd.carrot.batch+json")
                    .body(job.payload.clone());
                expect_routed(conn.send(request).await, job.per_request, &mut tally)
            }
            Kind::ManagementPublish => {
                let request = conn
                    .request(Method::POST, &management_publish)
                    .header("authorization", GUEST_AUTH)
                    .content_type("application/json")
                    .body(job.payload.clone());
                expect_routed(conn.send(request).await, 1, &mut tally)
            }
            Kind::GatewayNextAuto => {
                let request = conn.request(Method::GET, &next_path).empty();
                match conn.send(request).await {
                    Ok(Answer { status: 200, body }) if contains(&body, b"\"body\"") => {
                        Step::Done(1)
                    }
                    Ok(Answer { status: 204, .. }) => Step::Empty,
                    other => unexpected(other, &mut tally),
                }
            }
            Kind::GatewayLeaseAck => {
                let request = conn.request(Method::GET, &next_path).empty();
                match conn.send(request).await {
                    Ok(Answer { status: 200, body }) => match receipt(&body) {
                        Some(receipt) => {
                            let path =
                                format!("/queues/{queue}/messages/{}/ack", segment(&receipt));
                            let request = conn.request(Method::POST, &path).empty();
                            match conn.send(request).await {
                                Ok(Answer {
                                    status: 204 | 200, ..
                                }) => Step::Done(1),
                                other => unexpected(other, &mut tally),
                            }
                        }
                        None => {
                            tally.failure(format!("200 without a receipt: {}", excerpt(&body)));
                            Step::Failed
                        }
                    },
                    Ok(Answer { status: 204, .. }) => Step::Empty,
                    other => unexpected(other, &mut tally),
                }
            }
            Kind::ManagementGet => {
                let request = conn
                    .request(Method::POST, &management_get)
                    .header("authorization", GUEST_AUTH)
                    .content_type("application/json")
                    .body(job.payload.clone());
                match conn.send(request).await {
                    Ok(Answer { status: 200, body }) if body.as_ref() == b"[]" => Step::Empty,
                    Ok(Answer { status: 200, body }) if contains(&body, b"\"payload\"") => {
                        Step::Done(1)
                    }
                    other => unexpected(other, &mut tally),
                }
            }
        };
        match step {
            Step::Done(msgs) => tally.ok(&window, started, msgs),
            Step::Empty => {
                tally.drained = true;
                break;
            }
            // Do not spin on a failing server.
            Step::Failed => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
    tally.reconnects = conn.reconnects();
    tally
}

/// A publish answer: 200 and `"routed":true` once per message.
fn expect_routed(answer: Result<Answer, String>, messages: u64, tally: &mut Tally) -> Step {
    match answer {
        Ok(Answer { status: 200, body }) => {
            let routed = occurrences(&body, b"\"routed\":true") as u64;
            if routed == messages {
                Step::Done(messages)
            } else {
                tally.failure(format!(
                    "200 but {routed} of {messages} routed: {}",
                    excerpt(&body)
                ));
                Step::Failed
            }
        }
        other => unexpected(other, tally),
    }
}

fn unexpected(answer: Result<Answer, String>, tally: &mut Tally) -> Step {
    match answer {
        Ok(Answer { status, body }) if (200..300).contains(&status) => {
            tally.failure(format!("unexpected {status} answer: {}", excerpt(&body)));
        }
        Ok(Answer { status, body }) => tally.status(status, &body),
        Err(error) => tally.failure(error),
    }
    Step::Failed
}

/// The `receipt` of a lease envelope.
fn receipt(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value.get("receipt")?.as_str().map(str::to_owned)
}

pub enum StreamOutcome {
    Ran(Tally),
    /// The gateway has no such endpoint yet.
    Missing(String),
}

/// One SSE client on `GET /queues/q/stream?ack=auto&prefetch=N`, counting `message` events
/// until `expected` arrived or the stream stayed quiet for `idle`.
pub async fn stream(
    addr: &str,
    queue: &str,
    prefetch: u16,
    expected: u64,
    idle: Duration,
    timeout: Duration,
    window: Window,
) -> StreamOutcome {
    let mut tally = Tally::default();
    let mut conn = HttpConn::new(addr, timeout);
    let path = format!(
        "/queues/{}/stream?ack=auto&prefetch={prefetch}",
        segment(queue)
    );
    let request = conn
        .request(Method::GET, &path)
        .header("accept", "text/event-stream")
        .empty();
    let response = match conn.open(request).await {
        Ok(response) => response,
        Err(error) => {
            tally.failure(error);
            return StreamOutcome::Ran(tally);
        }
    };
    let status = response.status().as_u16();
    if status != 200 {
        let body = tokio::time::timeout(timeout, response.into_body().collect())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|collected| collected.to_bytes())
            .unwrap_or_default();
        if status == 404 && !contains(&body, b"queue_not_found") {
            return StreamOutcome::Missing(format!("HTTP 404: {}", excerpt(&body)));
        }
        tally.status(status, &body);
        return StreamOutcome::Ran(tally);
    }
    let mut body = response.into_body();
    let mut buffer: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut received = 0u64;
    let mut checked_first = false;
    'read: while !window.over() {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => {
                tally.drained = true;
                break;
            }
            Ok(None) => {
                tally.failure(format!(
                    "the gateway ended the stream after {received} events"
                ));
                break;
            }
            Ok(Some(Err(error))) => {
                tally.failure(format!("stream: {error}"));
                break;
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buffer.extend_from_slice(&data);
        // Events end with a blank line.
        let mut consumed = 0;
        while let Some(end) = find_event_end(&buffer[consumed..]) {
            let event = &buffer[consumed..consumed + end.0];
            consumed += end.1;
            if let Some(data) = message_data(event) {
                if !checked_first {
                    checked_first = true;
                    if !contains(data, b"\"body\"") {
                        tally.failure(format!("unexpected event data: {}", excerpt(data)));
                    }
                }
                received += 1;
                tally.arrived(&window, 1);
                if received >= expected {
                    tally.drained = true;
                    break 'read;
                }
            }
        }
        buffer.drain(..consumed);
    }
    // Dropping the body closes the connection: the gateway cancels its consumer.
    StreamOutcome::Ran(tally)
}

/// (length of the event, length including its terminating blank line)
fn find_event_end(buffer: &[u8]) -> Option<(usize, usize)> {
    let lf = buffer
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|at| (at, at + 2));
    let crlf = buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| (at, at + 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// The data of a `message` event (the default event type); None for comments and others.
fn message_data(event: &[u8]) -> Option<&[u8]> {
    let mut name: &[u8] = b"message";
    let mut data = None;
    for line in event.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.starts_with(b":") {
            continue;
        }
        if let Some(value) = line.strip_prefix(b"event:") {
            name = value.strip_prefix(b" ").unwrap_or(value);
        } else if let Some(value) = line.strip_prefix(b"data:") {
            data = Some(value.strip_prefix(b" ").unwrap_or(value));
        }
    }
    if name == b"message" { data } else { None }
}
