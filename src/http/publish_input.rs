//! Turns a publish request (raw body + query, or a batch document) into validated messages.

use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::error::ApiError;
use crate::model::{
    DeliveryMode, Invalid, OutgoingMessage, Properties, Serializer, check_shortstr,
};

pub const BATCH_CONTENT_TYPE: &str = "application/vnd.carrot.batch+json";

/// Query parameters of a raw-mode publish; all optional.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PublishParams {
    /// Routing key (default empty).
    #[param(max_length = 255)]
    pub routing_key: Option<String>,
    /// `1`/`transient` or `2`/`persistent` (default).
    #[param(value_type = Option<DeliveryModeParam>)]
    pub delivery_mode: Option<String>,
    /// Message priority; queues honour it up to their `x-max-priority`.
    #[param(value_type = Option<u8>, minimum = 0, maximum = 255)]
    pub priority: Option<String>,
    /// `true`: an unroutable message is a 422 instead of `{"routed": false}` (default false).
    #[param(value_type = Option<bool>)]
    pub mandatory: Option<String>,
    /// Only `false`: RabbitMQ 3.0+ has no immediate flag (`true` is a 400 that says so).
    #[param(value_type = Option<bool>)]
    pub immediate: Option<String>,
    /// Per-message TTL in milliseconds, at most 4294967295.
    #[param(pattern = "^[0-9]{1,10}$")]
    pub expiration: Option<String>,
    #[param(max_length = 255)]
    pub message_id: Option<String>,
    #[param(max_length = 255)]
    pub correlation_id: Option<String>,
    #[param(max_length = 255)]
    pub reply_to: Option<String>,
    #[serde(rename = "type")]
    #[param(rename = "type", max_length = 255)]
    pub kind: Option<String>,
    #[param(max_length = 255)]
    pub app_id: Option<String>,
    /// RabbitMQ checks it is the gateway's broker user.
    #[param(max_length = 255)]
    pub user_id: Option<String>,
    #[param(max_length = 255)]
    pub cluster_id: Option<String>,
    /// Unix seconds.
    #[param(value_type = Option<u64>, minimum = 0, maximum = 9223372036854775807_u64)]
    pub timestamp: Option<String>,
    /// Overrides the charset of the Content-Type.
    #[param(max_length = 255)]
    pub content_encoding: Option<String>,
    /// `json`, `raw`, `yaml` or `msgpack`; yaml and msgpack re-encode a JSON body (`pickle` is
    /// refused, 415).
    #[param(value_type = Option<SerializerParam>)]
    pub serializer: Option<String>,
}

/// `delivery_mode` as a query parameter.
#[derive(ToSchema)]
#[allow(dead_code)]
pub enum DeliveryModeParam {
    #[schema(rename = "1")]
    One,
    #[schema(rename = "2")]
    Two,
    #[schema(rename = "transient")]
    Transient,
    #[schema(rename = "persistent")]
    Persistent,
}

/// `serializer` as a query parameter or batch field.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum SerializerParam {
    Json,
    Raw,
    Yaml,
    Msgpack,
}

/// Batch mode body (`Content-Type: application/vnd.carrot.batch+json`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    #[schema(min_items = 1)]
    pub messages: Vec<BatchMessage>,
    /// Report unroutable messages with `status: 422` in their result.
    #[serde(default)]
    pub mandatory: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchMessage {
    #[serde(default)]
    #[schema(max_length = 255)]
    pub routing_key: String,
    /// Any JSON value with `json`; a string with `utf8` or `base64`.
    #[schema(value_type = Value)]
    pub body: Value,
    #[serde(default)]
    pub body_encoding: BodyEncoding,
    #[serde(default)]
    pub properties: Properties,
    /// `json` (default), `yaml` or `msgpack`; only with `body_encoding: json`.
    #[schema(value_type = Option<SerializerParam>)]
    pub serializer: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BodyEncoding {
    #[default]
    Json,
    Utf8,
    Base64,
}

/// A raw-mode request, ready to publish.
#[derive(Debug)]
pub struct RawPublish {
    pub message: OutgoingMessage,
    pub mandatory: bool,
}

pub fn raw_message(
    params: PublishParams,
    content_type: Option<&str>,
    body: Bytes,
) -> Result<RawPublish, ApiError> {
    if let Some(immediate) = &params.immediate
        && parse_bool("immediate", immediate)?
    {
        return Err(Invalid(
            "immediate=true is not supported: RabbitMQ removed the immediate flag in 3.0; \
                 use mandatory=true to learn that no queue took the message, and a message TTL \
                 to drop it when no consumer takes it in time"
                .into(),
        )
        .into());
    }
    let mandatory = params
        .mandatory
        .as_deref()
        .map(|value| parse_bool("mandatory", value))
        .transpose()?
        .unwrap_or(false);
    let media = parse_content_type(content_type)?;
    let serializer = params
        .serializer
        .as_deref()
        .map(Serializer::parse)
        .transpose()?;

    let (body, content_type, content_encoding) = match serializer {
        Some(Serializer::Raw) => (body, media.essence, media.charset),
        None if !media.is_json => (body, media.essence, media.charset),
        Some(serializer) => {
            if !media.is_json {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "serializer={} encodes a JSON request body; send Content-Type: \
                     application/json, or use serializer=raw to publish the bytes as they are",
                    params.serializer.as_deref().unwrap_or("json")
                )));
            }
            let value: Value = super::extract::parse_json(&body)?;
            if serializer == Serializer::Json {
                // Valid JSON is published byte for byte, as sent.
                (body, media.essence, media.charset)
            } else {
                let (kind, encoding) = serializer.content_type();
                (
                    serializer.encode(&value)?,
                    kind.to_owned(),
                    Some(encoding.to_owned()),
                )
            }
        }
        None => {
            super::extract::parse_json::<serde::de::IgnoredAny>(&body)?;
            (body, media.essence, media.charset)
        }
    };

    let properties = Properties {
        content_type: Some(content_type),
        content_encoding: params.content_encoding.or(content_encoding),
        headers: None,
        delivery_mode: params
            .delivery_mode
            .as_deref()
            .map(DeliveryMode::parse)
            .transpose()?,
        priority: params
            .priority
            .as_deref()
            .map(|value| parse_number::<u8>("priority", value, "an integer from 0 to 255"))
            .transpose()?,
        correlation_id: params.correlation_id,
        reply_to: params.reply_to,
        expiration: params.expiration,
        message_id: params.message_id,
        timestamp: params
            .timestamp
            .as_deref()
            .map(|value| parse_number::<u64>("timestamp", value, "unix seconds"))
            .transpose()?,
        kind: params.kind,
        user_id: params.user_id,
        app_id: params.app_id,
        cluster_id: params.cluster_id,
    };
    properties.validate()?;
    let routing_key = params.routing_key.unwrap_or_default();
    check_shortstr("routing_key", &routing_key)?;
    Ok(RawPublish {
        message: OutgoingMessage {
            routing_key,
            body,
            properties,
        },
        mandatory,
    })
}

/// Validates every message of a batch before any is published.
pub fn batch_messages(
    params: &PublishParams,
    body: &[u8],
) -> Result<(Vec<OutgoingMessage>, bool), ApiError> {
    if let Some(name) = first_query_param(params) {
        return Err(ApiError::InvalidRequest(format!(
            "query parameter {name} does not apply in batch mode; set it per message in the body \
             (routing_key, properties, serializer) or as the body's \"mandatory\""
        )));
    }
    let batch: BatchRequest = super::extract::parse_object(body)?;
    if batch.messages.is_empty() {
        return Err(ApiError::InvalidRequest(
            "messages is empty; a batch needs at least one message".into(),
        ));
    }
    let messages = batch
        .messages
        .into_iter()
        .enumerate()
        .map(|(index, message)| {
            batch_message(message).map_err(|error| match error {
                ApiError::InvalidRequest(text) => {
                    ApiError::InvalidRequest(format!("messages[{index}]: {text}"))
                }
                ApiError::UnsupportedSerializer(text) => {
                    ApiError::UnsupportedSerializer(format!("messages[{index}]: {text}"))
                }
                other => other,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((messages, batch.mandatory))
}

fn batch_message(message: BatchMessage) -> Result<OutgoingMessage, ApiError> {
    check_shortstr("routing_key", &message.routing_key)?;
    let serializer = message
        .serializer
        .as_deref()
        .map(Serializer::parse)
        .transpose()?;
    let text = |encoding: &str| match &message.body {
        Value::String(text) => Ok(text.as_str()),
        _ => Err(Invalid(format!(
            "body must be a string with body_encoding {encoding}"
        ))),
    };
    let (body, default_type, default_encoding) = match (message.body_encoding, serializer) {
        (BodyEncoding::Json, None | Some(Serializer::Json)) => (
            Bytes::from(serde_json::to_vec(&message.body).unwrap_or_default()),
            "application/json",
            Some("utf-8"),
        ),
        (BodyEncoding::Json, Some(Serializer::Raw)) => {
            return Err(Invalid(
                "serializer raw needs body_encoding utf8 or base64 to carry the bytes".into(),
            )
            .into());
        }
        (BodyEncoding::Json, Some(serializer)) => {
            let (kind, encoding) = serializer.content_type();
            (serializer.encode(&message.body)?, kind, Some(encoding))
        }
        (_, Some(serializer)) if serializer != Serializer::Raw => {
            return Err(Invalid(
                "serializer applies to body_encoding json only; a utf8 or base64 body is \
                 published as it is"
                    .into(),
            )
            .into());
        }
        (BodyEncoding::Utf8, _) => (
            Bytes::copy_from_slice(text("utf8")?.as_bytes()),
            "text/plain",
            Some("utf-8"),
        ),
        (BodyEncoding::Base64, _) => (
            Bytes::from(decode_base64(text("base64")?)?),
            "application/octet-stream",
            None,
        ),
    };
    let mut properties = message.properties;
    if properties.content_type.is_none() {
        properties.content_type = Some(default_type.to_owned());
        if properties.content_encoding.is_none() {
            properties.content_encoding = default_encoding.map(str::to_owned);
        }
    }
    properties
        .validate()
        .map_err(|Invalid(text)| Invalid(format!("properties.{text}")))?;
    Ok(OutgoingMessage {
        routing_key: message.routing_key,
        body,
        properties,
    })
}

fn decode_base64(text: &str) -> Result<Vec<u8>, Invalid> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    STANDARD
        .decode(text)
        .or_else(|_| URL_SAFE.decode(text))
        .map_err(|error| Invalid(format!("body is not valid base64: {error}")))
}

struct Media {
    essence: String,
    charset: Option<String>,
    is_json: bool,
}

fn parse_content_type(header: Option<&str>) -> Result<Media, ApiError> {
    let Some(header) = header else {
        return Ok(Media {
            essence: "application/octet-stream".into(),
            charset: None,
            is_json: false,
        });
    };
    let mime: mime::Mime = header.parse().map_err(|_| {
        ApiError::UnsupportedMediaType(format!(
            "Content-Type {header:?} is not a media type such as application/json"
        ))
    })?;
    let is_json = mime.subtype() == mime::JSON || mime.suffix() == Some(mime::JSON);
    let charset = mime
        .get_param(mime::CHARSET)
        .map(|charset| charset.as_str().to_ascii_lowercase())
        .or_else(|| (is_json || mime.type_() == mime::TEXT).then(|| "utf-8".to_owned()));
    let essence = mime.essence_str().to_owned();
    check_shortstr("Content-Type", &essence)?;
    Ok(Media {
        essence,
        charset,
        is_json,
    })
}

pub fn is_batch(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|value| value.parse::<mime::Mime>().ok())
        .is_some_and(|mime| mime.essence_str() == BATCH_CONTENT_TYPE)
}

fn parse_bool(name: &str, value: &str) -> Result<bool, Invalid> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(Invalid(format!("{name}={other} must be true or false"))),
    }
}

fn parse_number<T: std::str::FromStr>(name: &str, value: &str, what: &str) -> Result<T, Invalid> {
    value
        .parse()
        .map_err(|_| Invalid(format!("{name}={value} must be {what}")))
}

fn first_query_param(params: &PublishParams) -> Option<&'static str> {
    let PublishParams {
        routing_key,
        delivery_mode,
        priority,
        mandatory,
        immediate,
        expiration,
        message_id,
        correlation_id,
        reply_to,
        kind,
        app_id,
        user_id,
        cluster_id,
        timestamp,
        content_encoding,
        serializer,
    } = params;
    [
        ("routing_key", routing_key),
        ("delivery_mode", delivery_mode),
        ("priority", priority),
        ("mandatory", mandatory),
        ("immediate", immediate),
        ("expiration", expiration),
        ("message_id", message_id),
        ("correlation_id", correlation_id),
        ("reply_to", reply_to),
        ("type", kind),
        ("app_id", app_id),
        ("user_id", user_id),
        ("cluster_id", cluster_id),
        ("timestamp", timestamp),
        ("content_encoding", content_encoding),
        ("serializer", serializer),
    ]
    .into_iter()
    .find_map(|(name, value)| value.is_some().then_some(name))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    use super::*;
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
        prop::collection::vec(prop::option::of(value()), 16).prop_map(|mut v| {
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
