//! One message as a webhook request, one attempt to POST it, and what the app's answer means.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value, json};

use super::retry::parse_retry_after;
use super::spec::Format;
use crate::broker::Delivered;
use crate::messaging::amqp_headers::{amqp_headers, header_safe};
use crate::messaging::envelope::{Envelope, rfc3339};

/// Counts attempts from 1, so the app can tell a retry from a first delivery.
pub const ATTEMPT_HEADER: &str = "amqp-attempt";
/// How much of a failed answer's body is kept for `last_error`.
const EXCERPT_BYTES: usize = 256;
/// Bodies of answers are read this far, so the connection can be reused, then dropped.
const DRAIN_BYTES: usize = 64 * 1024;

/// What does not change between attempts of one message.
pub struct Payload {
    headers: HeaderMap,
    body: Bytes,
}

impl Payload {
    pub fn new(format: Format, queue: &str, delivered: &Delivered) -> Self {
        let envelope = Envelope::new(delivered, format == Format::Envelope).from_queue(queue);
        match format {
            Format::Raw => Self {
                headers: header_map(&envelope),
                body: delivered.body.clone(),
            },
            Format::Envelope => {
                let mut headers = header_map(&envelope);
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                Self {
                    headers,
                    body: serde_json::to_vec(&envelope).unwrap_or_default().into(),
                }
            }
            Format::Cloudevents => {
                let mut headers = header_map(&envelope);
                for (attribute, value) in cloud_event_attributes(&envelope, queue) {
                    if let Value::String(text) = value
                        && let Ok(name) = HeaderName::try_from(format!("ce-{attribute}"))
                    {
                        insert(&mut headers, name, &text);
                    }
                }
                Self {
                    headers,
                    body: delivered.body.clone(),
                }
            }
            Format::CloudeventsStructured => {
                let mut event = cloud_event_attributes(&envelope, queue);
                event.insert(
                    "datacontenttype".into(),
                    envelope.properties["content_type"].clone(),
                );
                let data_key = if envelope.body_encoding == "base64" {
                    "data_base64"
                } else {
                    "data"
                };
                event.insert(data_key.into(), envelope.body.clone());
                event.retain(|_, value| !value.is_null());
                let mut headers = header_map(&envelope);
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/cloudevents+json"),
                );
                Self {
                    headers,
                    body: serde_json::to_vec(&Value::Object(event))
                        .unwrap_or_default()
                        .into(),
                }
            }
        }
    }
}

/// The message's `Amqp-*` headers as a request's header map.
fn header_map(envelope: &Envelope) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in amqp_headers(envelope) {
        insert(&mut headers, HeaderName::from_static(name), &value);
    }
    headers
}

fn insert(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(&header_safe(value)) {
        headers.insert(name, value);
    }
}

/// The CloudEvents 1.0 context attributes of a message; absent ones are null.
///
/// The id is the AMQP message_id, so a redelivered message keeps its id; without one the
/// gateway makes one up per delivery, and the app cannot tell redeliveries apart by id.
fn cloud_event_attributes(envelope: &Envelope, queue: &str) -> Map<String, Value> {
    let property = |name: &str| envelope.properties[name].as_str().map(str::to_owned);
    let id =
        property("message_id").unwrap_or_else(|| uuid::Uuid::new_v4().hyphenated().to_string());
    let time = envelope.properties["timestamp"]
        .as_u64()
        .map(|seconds| rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)));
    let subject = Some(envelope.routing_key.clone()).filter(|key| !key.is_empty());
    let mut attributes = Map::new();
    attributes.insert("specversion".into(), json!("1.0"));
    attributes.insert("id".into(), json!(id));
    attributes.insert("source".into(), json!(source_of(queue)));
    attributes.insert(
        "type".into(),
        json!(property("type").unwrap_or_else(|| "carrot.message".to_owned())),
    );
    attributes.insert("subject".into(), json!(subject));
    attributes.insert("time".into(), json!(time));
    attributes
}

/// `/queues/{queue}`, with what a URI reference may not hold percent-encoded.
fn source_of(queue: &str) -> String {
    let mut source = String::from("/queues/");
    for byte in queue.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            source.push(char::from(byte));
        } else {
            source.push_str(&format!("%{byte:02X}"));
        }
    }
    source
}

/// What one attempt came to.
#[derive(Debug, PartialEq)]
pub enum Attempt {
    /// 2xx: the app has the message.
    Delivered,
    /// 4xx other than 408 and 429: the app will never take this message.
    Refused(String),
    /// Anything else: worth another try, not before `after` if the app said so.
    Failed {
        reason: String,
        after: Option<Duration>,
    },
}

/// POSTs the message once; `number` counts attempts from 1.
pub async fn attempt(
    client: &reqwest::Client,
    url: &reqwest::Url,
    payload: &Payload,
    number: u32,
    timeout: Duration,
) -> Attempt {
    let sent = client
        .post(url.clone())
        .headers(payload.headers.clone())
        .header(ATTEMPT_HEADER, number)
        .body(payload.body.clone())
        .timeout(timeout)
        .send()
        .await;
    let mut response = match sent {
        Ok(response) => response,
        Err(error) => {
            let reason = if error.is_timeout() {
                format!("{url} did not answer within {timeout:?}")
            } else {
                format!("POST {url} failed: {}", causes(&error))
            };
            return Attempt::Failed {
                reason,
                after: None,
            };
        }
    };
    let status = response.status();
    let after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|value| parse_retry_after(value, SystemTime::now()));
    let body = drain(&mut response).await;
    judge(status, after, &body, url)
}

fn judge(status: StatusCode, after: Option<Duration>, body: &[u8], url: &reqwest::Url) -> Attempt {
    if status.is_success() {
        return Attempt::Delivered;
    }
    let excerpt = String::from_utf8_lossy(&body[..body.len().min(EXCERPT_BYTES)]);
    let excerpt = excerpt.trim();
    let mut reason = format!("{url} answered {status}");
    if status.is_redirection() {
        reason.push_str(" (redirects are not followed)");
    }
    if !excerpt.is_empty() {
        reason.push_str(": ");
        reason.push_str(excerpt);
    }
    let transient = matches!(
        status,
        StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS
    );
    if status.is_client_error() && !transient {
        Attempt::Refused(reason)
    } else {
        Attempt::Failed { reason, after }
    }
}

/// Reads the answer's body up to a bound; a body that fails half-way is kept as far as it came.
async fn drain(response: &mut reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < DRAIN_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    body
}

/// reqwest hides the useful part ("connection refused") in the error's sources.
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Properties;

    fn delivered() -> Delivered {
        Delivered {
            body: Bytes::from_static(br#"{"id": 7}"#),
            exchange: "shop".into(),
            routing_key: "order.created".into(),
            redelivered: false,
            message_count: None,
            offset: None,
            delivery_tag: 1,
            properties: Properties {
                content_type: Some("application/json".into()),
                message_id: Some("m-1".into()),
                kind: Some("order.created".into()),
                timestamp: Some(1_700_000_000),
                ..Properties::default()
            },
        }
    }

    fn header<'a>(payload: &'a Payload, name: &str) -> &'a str {
        payload
            .headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    }

    #[test]
    fn every_format_hands_the_trace_context_on_as_headers() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut traced = delivered();
        traced.properties.headers = serde_json::json!({"traceparent": parent, "baggage": "k=v"})
            .as_object()
            .cloned();
        for format in [
            Format::Raw,
            Format::Envelope,
            Format::Cloudevents,
            Format::CloudeventsStructured,
        ] {
            let payload = Payload::new(format, "orders", &traced);
            assert_eq!(header(&payload, "traceparent"), parent, "{format:?}");
            assert_eq!(header(&payload, "baggage"), "k=v", "{format:?}");
        }
    }

    #[test]
    fn cloudevents_binary_mode_carries_the_attributes_in_headers() {
        let payload = Payload::new(Format::Cloudevents, "orders q", &delivered());
        assert_eq!(header(&payload, "ce-specversion"), "1.0");
        assert_eq!(header(&payload, "ce-id"), "m-1");
        assert_eq!(header(&payload, "ce-source"), "/queues/orders%20q");
        assert_eq!(header(&payload, "ce-type"), "order.created");
        assert_eq!(header(&payload, "ce-subject"), "order.created");
        assert_eq!(header(&payload, "ce-time"), "2023-11-14T22:13:20Z");
        assert_eq!(header(&payload, "content-type"), "application/json");
        assert_eq!(&payload.body[..], br#"{"id": 7}"#);
    }

    #[test]
    fn cloudevents_structured_mode_is_one_json_document() {
        let payload = Payload::new(Format::CloudeventsStructured, "orders", &delivered());
        let event: Value = serde_json::from_slice(&payload.body).expect("json");
        assert_eq!(event["data"], json!({"id": 7}));
        assert_eq!(event["datacontenttype"], "application/json");
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(
            header(&payload, "content-type"),
            "application/cloudevents+json"
        );
    }

    #[test]
    fn answers_map_to_outcomes() {
        let url = reqwest::Url::parse("http://app/hook").expect("url");
        let judged = |code: u16| {
            judge(
                StatusCode::from_u16(code).expect("status"),
                None,
                b"nope",
                &url,
            )
        };
        assert_eq!(judged(204), Attempt::Delivered);
        assert!(matches!(judged(400), Attempt::Refused(reason) if reason.ends_with("nope")));
        assert!(matches!(judged(404), Attempt::Refused(_)));
        for transient in [408, 429, 500, 503, 302] {
            assert!(
                matches!(judged(transient), Attempt::Failed { .. }),
                "{transient}"
            );
        }
    }
}
