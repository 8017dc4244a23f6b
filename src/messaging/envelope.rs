//! The JSON envelope of a delivered message, shared by `/next`, batches and streams.

use base64::Engine as _;
use serde::Serialize;
use serde_json::{Map, Value};
use std::time::SystemTime;
use utoipa::ToSchema;

use crate::broker::Delivered;
use crate::model::Properties;

/// A message as the gateway hands it out.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Envelope {
    /// JSON value, UTF-8 string or base64 string, as `body_encoding` says.
    #[schema(value_type = Value)]
    pub body: Value,
    /// `json`, `utf8` or `base64`.
    #[schema(pattern = "^(json|utf8|base64)$")]
    pub body_encoding: &'static str,
    pub exchange: String,
    pub routing_key: String,
    /// The queue it was taken from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// True when the broker delivered it before (requeued, expired lease, lost channel).
    pub redelivered: bool,
    /// Messages left in the queue, when known (null after a long poll, and for a message served
    /// from a busy queue's prefetch window).
    pub message_count: Option<u32>,
    /// The broker's delivery tag, for the gateway's spans; not part of the answer.
    #[serde(skip)]
    pub delivery_tag: u64,
    /// Its offset in a stream queue: resume after it with `offset=<this + 1>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Settles the lease (`ack=lease` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
    /// RFC 3339 UTC; after it the message goes back to the queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<String>,
    /// Every basic.properties field; absent ones are null, `headers` is `{}` when absent.
    #[schema(value_type = Properties)]
    pub properties: Map<String, Value>,
}

impl Envelope {
    /// `decode`: turn YAML and msgpack bodies into JSON, as carrot's `message.decode()`.
    pub fn new(delivered: &Delivered, decode: bool) -> Self {
        let (body, body_encoding) = encode_body(delivered, decode);
        Self {
            body,
            body_encoding,
            exchange: delivered.exchange.clone(),
            routing_key: delivered.routing_key.clone(),
            queue: None,
            redelivered: delivered.redelivered,
            message_count: delivered.message_count,
            delivery_tag: delivered.delivery_tag,
            offset: delivered.offset,
            receipt: None,
            lease_expires_at: None,
            properties: all_properties(&delivered.properties),
        }
    }

    pub fn from_queue(mut self, queue: &str) -> Self {
        self.queue = Some(queue.to_owned());
        self
    }

    pub fn with_lease(mut self, receipt: String, expires_at: SystemTime) -> Self {
        self.receipt = Some(receipt);
        self.lease_expires_at = Some(rfc3339(expires_at));
        self
    }
}

pub fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

fn encode_body(delivered: &Delivered, decode: bool) -> (Value, &'static str) {
    let body = &delivered.body[..];
    let content_type = delivered
        .properties
        .content_type
        .as_deref()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    let decoded = if essence == "application/json" || essence.ends_with("+json") {
        serde_json::from_slice::<Value>(body).ok()
    } else if decode && matches!(essence, "application/x-yaml" | "application/yaml") {
        std::str::from_utf8(body)
            .ok()
            .and_then(|text| yaml_serde::from_str::<Value>(text).ok())
    } else if decode && matches!(essence, "application/x-msgpack" | "application/msgpack") {
        rmp_serde::from_slice::<Value>(body).ok()
    } else {
        None
    };
    if let Some(value) = decoded {
        return (value, "json");
    }
    let texty = essence.starts_with("text/")
        || essence.is_empty() && delivered.properties.content_encoding.as_deref() == Some("utf-8")
        || matches!(
            essence,
            "application/json"
                | "application/x-yaml"
                | "application/xml"
                | "application/x-www-form-urlencoded"
        );
    match std::str::from_utf8(body) {
        Ok(text) if texty => (Value::String(text.to_owned()), "utf8"),
        _ => (
            Value::String(base64::engine::general_purpose::STANDARD.encode(body)),
            "base64",
        ),
    }
}

/// Every basic.properties field but `headers`, as the envelope names them.
pub const PROPERTY_NAMES: [&str; 13] = [
    "content_type",
    "content_encoding",
    "delivery_mode",
    "priority",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "timestamp",
    "type",
    "user_id",
    "app_id",
    "cluster_id",
];

fn all_properties(properties: &Properties) -> Map<String, Value> {
    let mut all = match serde_json::to_value(properties) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    for key in PROPERTY_NAMES {
        all.entry(key).or_insert(Value::Null);
    }
    all.entry("headers")
        .or_insert_with(|| Value::Object(Map::new()));
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::json;

    fn delivered(content_type: Option<&str>, body: &[u8]) -> Delivered {
        Delivered {
            body: Bytes::copy_from_slice(body),
            exchange: "x".into(),
            routing_key: "k".into(),
            redelivered: false,
            message_count: Some(0),
            offset: None,
            delivery_tag: 1,
            properties: Properties {
                content_type: content_type.map(str::to_owned),
                ..Properties::default()
            },
        }
    }

    #[test]
    fn bodies_pick_their_encoding() {
        let cases = [
            (
                Some("application/json"),
                &br#"{"a":1}"#[..],
                json!({"a": 1}),
                "json",
            ),
            (
                Some("application/json"),
                b"{broken",
                json!("{broken"),
                "utf8",
            ),
            (Some("text/plain"), b"hi", json!("hi"), "utf8"),
            (
                Some("application/x-yaml"),
                b"a: 1\n",
                json!({"a": 1}),
                "json",
            ),
            (None, b"\xff\x00", json!("/wA="), "base64"),
        ];
        for (content_type, body, want, encoding) in cases {
            let envelope = Envelope::new(&delivered(content_type, body), true);
            assert_eq!((envelope.body, envelope.body_encoding), (want, encoding));
        }
        let msgpack = rmp_serde::to_vec_named(&json!({"n": 42})).expect("encodes");
        let envelope = Envelope::new(&delivered(Some("application/x-msgpack"), &msgpack), true);
        assert_eq!(envelope.body, json!({"n": 42}));
        let envelope = Envelope::new(&delivered(Some("application/x-msgpack"), &msgpack), false);
        assert_eq!(envelope.body_encoding, "base64");
    }

    #[test]
    fn every_property_is_present() {
        let envelope = Envelope::new(&delivered(None, b""), true);
        assert_eq!(envelope.properties["message_id"], Value::Null);
        assert_eq!(envelope.properties["headers"], json!({}));
        assert_eq!(envelope.properties.len(), 14);
    }
}
