//! A delivered message's AMQP fields as HTTP header names and values (`Amqp-*`), for raw
//! responses and webhooks; each caller builds its own header map from them.

use serde_json::Value;

use super::envelope::Envelope;

/// `content-type` from the message, and every other field of the envelope as an `amqp-*`
/// header: lowercase names, values made safe for HTTP.
pub fn amqp_headers(envelope: &Envelope) -> Vec<(&'static str, String)> {
    let mut headers = Vec::with_capacity(8);
    let content_type = envelope.properties["content_type"]
        .as_str()
        .unwrap_or("application/octet-stream");
    headers.push(("content-type", header_safe(content_type)));
    let mut add = |name: &'static str, value: String| headers.push((name, header_safe(&value)));
    add("amqp-exchange", envelope.exchange.clone());
    add("amqp-routing-key", envelope.routing_key.clone());
    add("amqp-redelivered", envelope.redelivered.to_string());
    if let Some(queue) = &envelope.queue {
        add("amqp-queue", queue.clone());
    }
    if let Some(count) = envelope.message_count {
        add("amqp-message-count", count.to_string());
    }
    if let Some(receipt) = &envelope.receipt {
        add("amqp-receipt", receipt.clone());
    }
    if let Some(expires) = &envelope.lease_expires_at {
        add("amqp-lease-expires-at", expires.clone());
    }
    for (property, name) in [
        ("content_encoding", "amqp-content-encoding"),
        ("delivery_mode", "amqp-delivery-mode"),
        ("priority", "amqp-priority"),
        ("correlation_id", "amqp-correlation-id"),
        ("reply_to", "amqp-reply-to"),
        ("expiration", "amqp-expiration"),
        ("message_id", "amqp-message-id"),
        ("timestamp", "amqp-timestamp"),
        ("type", "amqp-type"),
        ("user_id", "amqp-user-id"),
        ("app_id", "amqp-app-id"),
        ("cluster_id", "amqp-cluster-id"),
    ] {
        match &envelope.properties[property] {
            Value::Null => {}
            Value::String(text) => add(name, text.clone()),
            other => add(name, other.to_string()),
        }
    }
    if let Some(table) = envelope.properties["headers"].as_object()
        && !table.is_empty()
    {
        add("amqp-headers", Value::Object(table.clone()).to_string());
        // W3C trace context, under its own names, so tracing middleware picks it up.
        for name in ["traceparent", "tracestate", "baggage"] {
            if let Some(Value::String(value)) = table.get(name) {
                add(name, value.clone());
            }
        }
    }
    headers
}

/// Values the broker holds may contain bytes HTTP forbids (controls); then every byte but
/// visible ASCII and space is percent-encoded.
pub fn header_safe(value: &str) -> String {
    if value
        .bytes()
        .all(|b| b == b'\t' || (b >= b' ' && b != 0x7f))
    {
        return value.to_owned();
    }
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_graphic() || b == b' ' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
