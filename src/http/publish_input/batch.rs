//! A batch document (`application/vnd.carrot.batch+json`): every message checked before any is
//! published.

use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::params::{PublishParams, SerializerParam, first_query_param};
use crate::http::error::ApiError;
use crate::http::extract::parse_object;
use crate::model::encoding::{BodyEncoding, EncodingError, encode_batch_body};
use crate::model::{Invalid, OutgoingMessage, Properties, Serializer, check_shortstr};

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
    let batch: BatchRequest = parse_object(body)?;
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
            batch_message(message).map_err(|error| error.at(&format!("messages[{index}]")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((messages, batch.mandatory))
}

fn batch_message(message: BatchMessage) -> Result<OutgoingMessage, EncodingError> {
    check_shortstr("routing_key", &message.routing_key)?;
    let serializer = message
        .serializer
        .as_deref()
        .map(Serializer::parse)
        .transpose()?;
    let encoded = encode_batch_body(&message.body, message.body_encoding, serializer)?;
    let mut properties = message.properties;
    if properties.content_type.is_none() {
        properties.content_type = Some(encoded.content_type.to_owned());
        if properties.content_encoding.is_none() {
            properties.content_encoding = encoded.content_encoding.map(str::to_owned);
        }
    }
    properties
        .validate()
        .map_err(|Invalid(text)| Invalid(format!("properties.{text}")))?;
    Ok(OutgoingMessage {
        routing_key: message.routing_key,
        body: encoded.body,
        properties,
    })
}
