//! Turns a publish request (raw body + query, or a batch document) into validated messages.

mod batch;
mod params;
mod raw;
mod trace;

pub use batch::{BatchRequest, batch_messages};
pub use params::{DeliveryModeParam, FormatParam, PublishParams, ReplyParam, SerializerParam};
pub use raw::{RawPublish, raw_message};
pub use trace::TraceContext;

pub const BATCH_CONTENT_TYPE: &str = "application/vnd.carrot.batch+json";

pub fn is_batch(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|value| value.parse::<mime::Mime>().ok())
        .is_some_and(|mime| mime.essence_str() == BATCH_CONTENT_TYPE)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::http::error::ApiError;

    fn raw(query: &str, content_type: Option<&str>, body: &str) -> Result<RawPublish, ApiError> {
        let params: PublishParams = serde_urlencoded::from_str(query).expect("query parses");
        raw_message(
            params,
            content_type,
            Bytes::copy_from_slice(body.as_bytes()),
        )
    }

    #[test]
    fn charset_becomes_content_encoding() {
        let publish = raw("", Some("text/plain; charset=ISO-8859-1"), "hi").expect("valid");
        let props = &publish.message.properties;
        assert_eq!(props.content_type.as_deref(), Some("text/plain"));
        assert_eq!(props.content_encoding.as_deref(), Some("iso-8859-1"));
    }

    #[test]
    fn no_content_type_is_octet_stream() {
        let publish = raw("", None, "\u{1}").expect("valid");
        let props = &publish.message.properties;
        assert_eq!(
            props.content_type.as_deref(),
            Some("application/octet-stream")
        );
        assert_eq!(props.content_encoding, None);
    }

    #[test]
    fn immediate_true_explains_itself() {
        let error = raw("immediate=true", None, "").expect_err("refused");
        assert!(error.to_string().contains("RabbitMQ removed"), "{error}");
    }

    #[test]
    fn invalid_json_is_refused_unless_raw() {
        assert!(raw("", Some("application/json"), "{nope").is_err());
        assert!(raw("serializer=raw", Some("application/json"), "{nope").is_ok());
    }

    #[test]
    fn yaml_needs_a_json_request() {
        let error = raw("serializer=yaml", Some("text/plain"), "x").expect_err("refused");
        assert_eq!(error.parts().1, "unsupported_media_type");
        let publish = raw("serializer=yaml", Some("application/json"), r#"{"a":1}"#).expect("ok");
        assert_eq!(&publish.message.body[..], b"{\"a\":1}\n");
        assert_eq!(
            publish.message.properties.content_type.as_deref(),
            Some("application/x-yaml")
        );
    }

    #[test]
    fn batch_errors_name_the_message() {
        let body = br#"{"messages": [{"body": 1}, {"body": 2, "properties": {"priority": 300}}]}"#;
        let error = batch_messages(&PublishParams::default(), body).expect_err("refused");
        assert!(error.to_string().contains("messages[1]"), "{error}");
    }

    #[test]
    fn batch_body_encodings() {
        let body = br#"{"messages": [
            {"body": "aGVsbG8=", "body_encoding": "base64"},
            {"body": "h\u00e9", "body_encoding": "utf8"},
            {"body": {"px": 1}, "serializer": "msgpack"}]}"#;
        let (messages, _) = batch_messages(&PublishParams::default(), body).expect("valid");
        assert_eq!(&messages[0].body[..], b"hello");
        assert_eq!(&messages[1].body[..], "hé".as_bytes());
        assert_eq!(
            messages[2].properties.content_type.as_deref(),
            Some("application/x-msgpack")
        );
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use bytes::Bytes;

    use super::*;
    use crate::http::error::ApiError;
    use crate::model::fuzzed::{json_table, json_value};

    /// A query parameter value as clients send it: a plausible one, or anything.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "0",
                "1",
                "2",
                "255",
                "256",
                "-1",
                "true",
                "false",
                "transient",
                "persistent",
                "json",
                "raw",
                "yaml",
                "msgpack",
                "pickle",
                ""
            ])
            .prop_map(str::to_owned),
            "\\PC{0,300}",
        ]
    }

    fn params() -> impl Strategy<Value = PublishParams> {
        prop::collection::vec(prop::option::of(value()), 19).prop_map(|mut v| {
            let mut next = || v.pop().flatten();
            PublishParams {
                routing_key: next(),
                delivery_mode: next(),
                priority: next(),
                mandatory: next(),
                immediate: next(),
                expiration: next(),
                message_id: next(),
                correlation_id: next(),
                reply_to: next(),
                kind: next(),
                app_id: next(),
                user_id: next(),
                cluster_id: next(),
                timestamp: next(),
                content_encoding: next(),
                serializer: next(),
                reply: next(),
                timeout: next(),
                format: next(),
            }
        })
    }

    /// Every refusal of a request is the client's to fix: a 4xx.
    fn a_clients_problem(error: &ApiError) -> bool {
        error.code().status().is_client_error()
    }

    proptest! {
        #[test]
        fn a_raw_publish_is_valid_or_refused_as_the_clients_problem(
            params in params(),
            content_type in prop::option::of(prop_oneof![
                Just("application/json".to_owned()), Just("text/plain; charset=latin1".to_owned()),
                "\\PC{0,40}",
            ]),
            body in prop_oneof![json_value(2).prop_map(|v| v.to_string()), "\\PC{0,40}"],
        ) {
            match raw_message(params, content_type.as_deref(), Bytes::from(body)) {
                Ok(publish) => {
                    prop_assert!(publish.message.routing_key.len() <= 255);
                    prop_assert!(publish.message.properties.validate().is_ok());
                }
                Err(error) => prop_assert!(a_clients_problem(&error), "{error:?}"),
            }
        }

        #[test]
        fn a_batch_is_valid_or_refused_whole_as_the_clients_problem(
            messages in prop::collection::vec((json_value(2), json_table(2), "\\PC{0,20}"), 0..4),
            encoding in prop::sample::select(vec!["json", "utf8", "base64", "hex"]),
        ) {
            let batch = json!({"messages": messages.iter().map(|(body, headers, key)| json!({
                "routing_key": key, "body": body, "body_encoding": encoding,
                "properties": {"headers": headers},
            })).collect::<Vec<Value>>()});
            match batch_messages(&PublishParams::default(), batch.to_string().as_bytes()) {
                Ok((published, _)) => prop_assert_eq!(published.len(), messages.len()),
                Err(error) => prop_assert!(a_clients_problem(&error), "{error:?}"),
            }
        }
    }
}
