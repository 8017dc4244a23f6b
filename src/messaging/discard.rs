//! Which messages a filtered discard takes (carrot's `discard_all(filterfunc)`), without running
//! any code of the caller's: equality on the envelope's fields, headers and JSON body.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::envelope::{Envelope, PROPERTY_NAMES};
use crate::broker::Delivered;
use crate::model::Invalid;

/// Messages a filtered discard looks at unless the request says.
const DEFAULT_LIMIT: u32 = 10_000;
/// Most a request may ask for: the broker holds each of them unacknowledged until the end.
const MAX_LIMIT: u32 = 100_000;
/// Time a filtered discard looks unless the request says.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(5);

/// Most messages to look at: `limit`, or the default.
pub fn limit(limit: Option<u32>) -> Result<u32, Invalid> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(Invalid(format!(
            "limit={limit} must be between 1 and {MAX_LIMIT}; discard the rest with another request"
        )));
    }
    Ok(limit)
}

/// The messages to discard: every condition given must hold; values compare as `/next` shows
/// them.
#[derive(Debug, Default, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscardFilter {
    /// The routing key it was published with.
    pub routing_key: Option<String>,
    /// The exchange it was published to (`""` for the default exchange).
    pub exchange: Option<String>,
    /// basic.properties values by name (`type`, `content_type`, `app_id`, `priority`, …);
    /// `null` matches a message without that property.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub properties: Map<String, Value>,
    /// AMQP header values by name; `null` matches a message without that header.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub headers: Map<String, Value>,
    /// JSON Pointers (RFC 6901, `""` for the whole body) into the body, each with the value
    /// found there; only bodies that are JSON (or YAML and msgpack, decoded) can match.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub body: Map<String, Value>,
}

impl DiscardFilter {
    /// Refuses names no message can have, so a typo never silently matches nothing.
    pub fn check(&self) -> Result<(), Invalid> {
        for name in self.properties.keys() {
            if name == "headers" {
                return Err(Invalid(
                    "filter.properties.headers: put header conditions in filter.headers".into(),
                ));
            }
            if !PROPERTY_NAMES.contains(&name.as_str()) {
                return Err(Invalid(format!(
                    "filter.properties.{name}: not a message property; use one of {}",
                    PROPERTY_NAMES.join(", ")
                )));
            }
        }
        for pointer in self.body.keys() {
            if !pointer.is_empty() && !pointer.starts_with('/') {
                return Err(Invalid(format!(
                    "filter.body: {pointer:?} is not a JSON Pointer; write \"/{pointer}\" for \
                     the body's field {pointer:?}, or \"\" for the whole body"
                )));
            }
        }
        Ok(())
    }

    /// Whether `delivered` is one to discard.
    pub fn matches(&self, delivered: &Delivered) -> bool {
        if self
            .routing_key
            .as_ref()
            .is_some_and(|key| *key != delivered.routing_key)
            || self
                .exchange
                .as_ref()
                .is_some_and(|exchange| *exchange != delivered.exchange)
        {
            return false;
        }
        if self.properties.is_empty() && self.headers.is_empty() && self.body.is_empty() {
            return true;
        }
        let envelope = Envelope::new(delivered, !self.body.is_empty());
        let properties = &envelope.properties;
        let headers = properties.get("headers").and_then(Value::as_object);
        let header = |name: &str| headers.and_then(|headers| headers.get(name));
        self.properties
            .iter()
            .all(|(name, wanted)| properties.get(name).unwrap_or(&Value::Null) == wanted)
            && self
                .headers
                .iter()
                .all(|(name, wanted)| header(name).unwrap_or(&Value::Null) == wanted)
            && self.body.iter().all(|(pointer, wanted)| {
                envelope.body_encoding == "json" && envelope.body.pointer(pointer) == Some(wanted)
            })
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde_json::json;

    use super::*;
    use crate::model::Properties;

    fn message(routing_key: &str, properties: Value, body: &str) -> Delivered {
        Delivered {
            body: Bytes::copy_from_slice(body.as_bytes()),
            exchange: "orders".into(),
            routing_key: routing_key.into(),
            redelivered: false,
            message_count: Some(0),
            offset: None,
            delivery_tag: 1,
            properties: serde_json::from_value::<Properties>(properties).expect("properties"),
        }
    }

    fn filter(value: Value) -> DiscardFilter {
        let filter: DiscardFilter = serde_json::from_value(value).expect("a filter");
        filter.check().expect("a valid filter");
        filter
    }

    #[test]
    fn conditions_all_hold() {
        let feed = message(
            "a.b",
            json!({"content_type": "application/json", "type": "feed",
                   "headers": {"kind": "x", "n": 3}}),
            r#"{"type": "feed", "items": [{"id": 7}]}"#,
        );
        for matching in [
            json!({}),
            json!({"routing_key": "a.b", "exchange": "orders"}),
            json!({"properties": {"type": "feed", "app_id": null}}),
            json!({"headers": {"kind": "x", "n": 3, "absent": null}}),
            json!({"body": {"/type": "feed", "/items/0/id": 7}}),
            json!({"properties": {"type": "feed"}, "body": {"/type": "feed"}}),
        ] {
            assert!(filter(matching.clone()).matches(&feed), "{matching}");
        }
        for other in [
            json!({"routing_key": "a.c"}),
            json!({"exchange": ""}),
            json!({"properties": {"type": "feed", "app_id": "svc"}}),
            json!({"headers": {"n": "3"}}),
            json!({"body": {"/type": "news"}}),
            json!({"body": {"/missing": null}}),
        ] {
            assert!(!filter(other.clone()).matches(&feed), "{other}");
        }
    }

    #[test]
    fn bodies_that_are_not_json_match_no_body_condition() {
        let text = message("k", json!({"content_type": "text/plain"}), "type=feed");
        assert!(!filter(json!({"body": {"": "type=feed"}})).matches(&text));
        assert!(filter(json!({"properties": {"content_type": "text/plain"}})).matches(&text));
    }

    #[test]
    fn names_no_message_can_have_are_refused() {
        for (bad, says) in [
            (
                json!({"properties": {"kind": "feed"}}),
                "not a message property",
            ),
            (json!({"properties": {"headers": {}}}), "filter.headers"),
            (json!({"body": {"type": "feed"}}), "\"/type\""),
        ] {
            let parsed: DiscardFilter = serde_json::from_value(bad.clone()).expect("parses");
            let Err(Invalid(text)) = parsed.check() else {
                panic!("{bad} was accepted");
            };
            assert!(text.contains(says), "{text}");
        }
        assert!(serde_json::from_value::<DiscardFilter>(json!({"where": {}})).is_err());
    }
}
