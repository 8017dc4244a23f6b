//! The gateway's own spans, named and described as OpenTelemetry's messaging conventions have
//! it (`publish {exchange}`, `receive {queue}`, `messaging.system = rabbitmq`, …). Made only
//! while spans are exported; otherwise each is `Span::none()`, which costs nothing.

use axum::http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use serde_json::{Map, Value};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The target of every span the exporter sends.
pub const TARGET: &str = "carrot_gateway::spans";

/// Reads W3C trace context from request headers.
struct RequestHeaders<'a>(&'a HeaderMap);

impl Extractor for RequestHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

/// Reads W3C trace context from a message's AMQP headers.
struct MessageHeaders<'a>(&'a Map<String, Value>);

impl Extractor for MessageHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// One messaging operation's span, under the request's own trace context if it sent one.
fn start(
    span: Span,
    request: &HeaderMap,
    operation: (&'static str, &'static str),
    destination: &str,
) -> Span {
    let parent = TraceContextPropagator::new().extract(&RequestHeaders(request));
    let _ = span.set_parent(parent);
    let (kind, name) = operation;
    span.set_attribute("messaging.system", "rabbitmq");
    span.set_attribute("messaging.operation.type", kind);
    span.set_attribute("messaging.operation.name", name);
    span.set_attribute("messaging.destination.name", destination.to_owned());
    span
}

/// Publishing to `exchange` (`amq.default` for the default exchange).
pub fn publish(exchange: &str, routing_key: Option<&str>, request: &HeaderMap) -> Span {
    if !super::exporting() {
        return Span::none();
    }
    let name = format!("publish {exchange}");
    let span = start(
        tracing::info_span!(target: TARGET, "publish", otel.name = %name, otel.kind = "producer"),
        request,
        ("send", "publish"),
        exchange,
    );
    if let Some(key) = routing_key {
        span.set_attribute("messaging.rabbitmq.destination.routing_key", key.to_owned());
    }
    span
}

/// Taking messages from `queue` (`/next`, `/messages`).
pub fn receive(queue: &str, request: &HeaderMap) -> Span {
    if !super::exporting() {
        return Span::none();
    }
    let name = format!("receive {queue}");
    start(
        tracing::info_span!(target: TARGET, "receive", otel.name = %name, otel.kind = "consumer"),
        request,
        ("receive", "get"),
        queue,
    )
}

/// What a receive span learns of the messages it took: how many, the first one's delivery tag
/// and id, and a link to each one's own trace (the publisher's span).
pub fn received(span: &Span, messages: &[(Option<u64>, &Map<String, Value>)]) {
    if span.is_none() {
        return;
    }
    span.set_attribute("messaging.batch.message_count", messages.len() as i64);
    if let Some((tag, properties)) = messages.first() {
        if let Some(tag) = tag {
            span.set_attribute(
                "messaging.rabbitmq.message.delivery_tag",
                i64::try_from(*tag).unwrap_or(i64::MAX),
            );
        }
        if let Some(id) = properties.get("message_id").and_then(Value::as_str) {
            span.set_attribute("messaging.message.id", id.to_owned());
        }
    }
    for (_, properties) in messages {
        let Some(headers) = properties.get("headers").and_then(Value::as_object) else {
            continue;
        };
        let cx = TraceContextPropagator::new().extract(&MessageHeaders(headers));
        let context = cx.span().span_context().clone();
        if context.is_valid() {
            span.add_link(context);
        }
    }
}

/// Marks the span failed with what the client was told.
pub fn failed(span: &Span, code: &str) {
    if span.is_none() {
        return;
    }
    span.set_attribute("error.type", code.to_owned());
    span.set_status(opentelemetry::trace::Status::error(code.to_owned()));
}

/// The span's own context as a W3C `traceparent`, for the messages it publishes.
pub fn traceparent(span: &Span) -> Option<String> {
    if span.is_none() {
        return None;
    }
    let cx = span.context();
    let context = cx.span().span_context().clone();
    context.is_valid().then(|| {
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            context.trace_id(),
            context.span_id(),
            context.trace_flags().to_u8()
        )
    })
}
