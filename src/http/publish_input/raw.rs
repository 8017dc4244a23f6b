//! A raw-mode publish: the body as it is (or re-encoded from JSON by a serializer), its
//! properties from the query.

use bytes::Bytes;
use serde_json::Value;

use super::params::PublishParams;
use crate::http::error::ApiError;
use crate::http::extract::parse_json;
use crate::model::encoding::{Media, parse_content_type};
use crate::model::{
    DeliveryMode, Invalid, OutgoingMessage, Properties, Serializer, check_shortstr,
};

/// A raw-mode request, ready to publish.
#[derive(Debug)]
pub struct RawPublish {
    pub message: OutgoingMessage,
    pub mandatory: bool,
}

pub fn raw_message(
    mut params: PublishParams,
    content_type: Option<&str>,
    body: Bytes,
) -> Result<RawPublish, ApiError> {
    refuse_immediate(params.immediate.as_deref())?;
    let mandatory = params
        .mandatory
        .as_deref()
        .map(|value| parse_bool("mandatory", value))
        .transpose()?
        .unwrap_or(false);
    let media = parse_content_type(content_type)?;
    let (body, content_type, charset) = raw_body(body, media, params.serializer.as_deref())?;
    let routing_key = params.routing_key.take().unwrap_or_default();
    check_shortstr("routing_key", &routing_key)?;
    let properties = raw_properties(params, content_type, charset)?;
    Ok(RawPublish {
        message: OutgoingMessage {
            routing_key,
            body,
            properties,
        },
        mandatory,
    })
}

fn refuse_immediate(immediate: Option<&str>) -> Result<(), Invalid> {
    if let Some(immediate) = immediate
        && parse_bool("immediate", immediate)?
    {
        return Err(Invalid(
            "immediate=true is not supported: RabbitMQ removed the immediate flag in 3.0; \
                 use mandatory=true to learn that no queue took the message, and a message TTL \
                 to drop it when no consumer takes it in time"
                .into(),
        ));
    }
    Ok(())
}

/// The body, its content type and its charset: as sent, or re-encoded by `serializer`.
fn raw_body(
    body: Bytes,
    media: Media,
    serializer_name: Option<&str>,
) -> Result<(Bytes, String, Option<String>), ApiError> {
    let serializer = serializer_name.map(Serializer::parse).transpose()?;
    match serializer {
        Some(Serializer::Raw) => Ok((body, media.essence, media.charset)),
        None if !media.is_json => Ok((body, media.essence, media.charset)),
        None => {
            parse_json::<serde::de::IgnoredAny>(&body)?;
            Ok((body, media.essence, media.charset))
        }
        Some(_) if !media.is_json => Err(ApiError::UnsupportedMediaType(format!(
            "serializer={} encodes a JSON request body; send Content-Type: \
             application/json, or use serializer=raw to publish the bytes as they are",
            serializer_name.unwrap_or("json")
        ))),
        Some(serializer) => {
            let value: Value = parse_json(&body)?;
            if serializer == Serializer::Json {
                // Valid JSON is published byte for byte, as sent.
                return Ok((body, media.essence, media.charset));
            }
            let (kind, encoding) = serializer.content_type();
            Ok((
                serializer.encode(&value)?,
                kind.to_owned(),
                Some(encoding.to_owned()),
            ))
        }
    }
}

fn raw_properties(
    params: PublishParams,
    content_type: String,
    charset: Option<String>,
) -> Result<Properties, Invalid> {
    let properties = Properties {
        content_type: Some(content_type),
        content_encoding: params.content_encoding.or(charset),
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
    Ok(properties)
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
