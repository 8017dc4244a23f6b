//! W3C trace context on publish: a request's `traceparent`, `tracestate` and `baggage` headers
//! travel with its messages as AMQP headers of the same names, where OpenTelemetry's RabbitMQ
//! instrumentations put and look for them.

use axum::http::HeaderMap;
use serde_json::Value;

use crate::model::Properties;

/// The trace headers a publish request carried, ready to add to its messages.
#[derive(Debug, Default, Clone)]
pub struct TraceContext(Vec<(&'static str, String)>);

impl TraceContext {
    /// The request's trace context. A malformed `traceparent` is dropped with its
    /// `tracestate`, as the W3C recommendation has a receiver do: the message then starts no
    /// trace rather than a broken one.
    pub fn of(headers: &HeaderMap) -> Self {
        let value = |name: &str| {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::trim)
                .filter(|value| !value.is_empty())
                .map(str::to_owned)
        };
        let mut fields = Vec::new();
        if let Some(parent) = value("traceparent").filter(|parent| is_traceparent(parent)) {
            fields.push(("traceparent", parent));
            if let Some(state) = value("tracestate") {
                fields.push(("tracestate", state));
            }
        }
        if let Some(baggage) = value("baggage") {
            fields.push(("baggage", baggage));
        }
        Self(fields)
    }

    /// The same context under the gateway's own `publish` span, when there is one: the message
    /// then names that span as its parent, as OpenTelemetry's instrumentations do.
    pub fn continued_by(mut self, traceparent: Option<String>) -> Self {
        let Some(traceparent) = traceparent else {
            return self;
        };
        self.0.retain(|(name, _)| *name != "traceparent");
        self.0.insert(0, ("traceparent", traceparent));
        self
    }

    /// Adds the context to a message's headers; a message that carries a trace context of its
    /// own (a batch message's `traceparent`) keeps it whole.
    pub fn apply(&self, properties: &mut Properties) {
        if self.0.is_empty() {
            return;
        }
        let headers = properties.headers.get_or_insert_with(Default::default);
        if headers.contains_key("traceparent") {
            return;
        }
        for (name, value) in &self.0 {
            headers
                .entry(*name)
                .or_insert_with(|| Value::String(value.clone()));
        }
    }
}

/// `version-trace_id-parent_id-flags` in lowercase hex, with neither id all zeros; a version
/// above 00 may append fields, and `ff` is invalid.
fn is_traceparent(value: &str) -> bool {
    let mut fields = value.split('-');
    let (Some(version), Some(trace_id), Some(parent_id), Some(flags)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return false;
    };
    let hex = |field: &str, len: usize| {
        field.len() == len
            && field
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let zeros = |field: &str| field.bytes().all(|b| b == b'0');
    hex(version, 2)
        && version != "ff"
        && (version != "00" || fields.next().is_none())
        && hex(trace_id, 32)
        && !zeros(trace_id)
        && hex(parent_id, 16)
        && !zeros(parent_id)
        && hex(flags, 2)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use serde_json::json;

    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn context(pairs: &[(&'static str, &str)]) -> TraceContext {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_str(value).expect("a header value"));
        }
        TraceContext::of(&headers)
    }

    #[test]
    fn a_valid_context_reaches_the_message_headers() {
        let trace = context(&[
            ("traceparent", PARENT),
            ("tracestate", "congo=t61rcWkgMzE"),
            ("baggage", "user=ada"),
        ]);
        let mut properties = Properties::default();
        trace.apply(&mut properties);
        assert_eq!(
            Value::Object(properties.headers.expect("headers")),
            json!({"traceparent": PARENT, "tracestate": "congo=t61rcWkgMzE", "baggage": "user=ada"})
        );
    }

    #[test]
    fn a_malformed_traceparent_is_dropped_with_its_tracestate() {
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            let trace = context(&[
                ("traceparent", bad),
                ("tracestate", "a=b"),
                ("baggage", "k=v"),
            ]);
            let mut properties = Properties::default();
            trace.apply(&mut properties);
            assert_eq!(
                Value::Object(properties.headers.expect("headers")),
                json!({"baggage": "k=v"}),
                "{bad}"
            );
        }
        let later_version = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
        assert!(is_traceparent(later_version));
    }

    #[test]
    fn a_message_with_its_own_traceparent_keeps_it() {
        let trace = context(&[("traceparent", PARENT), ("baggage", "user=ada")]);
        let own = "00-11111111111111111111111111111111-2222222222222222-00";
        let mut properties = Properties {
            headers: json!({"traceparent": own}).as_object().cloned(),
            ..Properties::default()
        };
        trace.apply(&mut properties);
        assert_eq!(
            Value::Object(properties.headers.expect("headers")),
            json!({"traceparent": own})
        );
        let mut untouched = Properties::default();
        TraceContext::default().apply(&mut untouched);
        assert!(untouched.headers.is_none());
    }
}
