//! carrot's serializers: the content types Python kombu registers, so its consumers decode our bodies.

use bytes::Bytes;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serializer {
    Json,
    Raw,
    Yaml,
    Msgpack,
}

#[derive(Debug, thiserror::Error)]
pub enum SerializerError {
    /// Becomes 415 `unsupported_serializer`.
    #[error("{0}")]
    Unsupported(String),
    /// Becomes 400 `invalid_request`.
    #[error("{0}")]
    Encode(String),
}

impl Serializer {
    pub fn parse(name: &str) -> Result<Self, SerializerError> {
        match name {
            "json" => Ok(Self::Json),
            "raw" => Ok(Self::Raw),
            "yaml" => Ok(Self::Yaml),
            "msgpack" => Ok(Self::Msgpack),
            "pickle" => Err(SerializerError::Unsupported(
                "serializer=pickle is refused: pickle is unsafe to produce or to decode; \
                 use json, yaml, msgpack or raw"
                    .into(),
            )),
            other => Err(SerializerError::Unsupported(format!(
                "unknown serializer {other:?}; use json, yaml, msgpack or raw"
            ))),
        }
    }

    /// kombu's content type and content encoding for this serializer.
    pub fn content_type(self) -> (&'static str, &'static str) {
        match self {
            Self::Json => ("application/json", "utf-8"),
            Self::Yaml => ("application/x-yaml", "utf-8"),
            Self::Msgpack => ("application/x-msgpack", "binary"),
            Self::Raw => ("application/data", "binary"),
        }
    }

    /// Encodes a JSON value the way kombu's serializer of the same name would.
    pub fn encode(self, value: &Value) -> Result<Bytes, SerializerError> {
        let bytes = match self {
            Self::Json | Self::Raw => serde_json::to_vec(value).map_err(encode_error)?,
            Self::Yaml => yaml_serde::to_string(value)
                .map_err(encode_error)?
                .into_bytes(),
            Self::Msgpack => rmp_serde::to_vec_named(value).map_err(encode_error)?,
        };
        Ok(Bytes::from(bytes))
    }
}

fn encode_error(error: impl std::fmt::Display) -> SerializerError {
    SerializerError::Encode(format!("body cannot be encoded: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pickle_is_refused_with_a_reason() {
        let error = Serializer::parse("pickle").expect_err("refused");
        assert!(matches!(error, SerializerError::Unsupported(ref m) if m.contains("unsafe")));
    }

    #[test]
    fn msgpack_round_trips_integers_as_integers() {
        let body = Serializer::Msgpack
            .encode(&json!({"n": 42, "x": 1.5, "s": "hi", "l": [1, null]}))
            .expect("encodes");
        let back: Value = rmp_serde::from_slice(&body).expect("decodes");
        assert_eq!(back, json!({"n": 42, "x": 1.5, "s": "hi", "l": [1, null]}));
        assert!(back["n"].is_i64() || back["n"].is_u64());
    }

    #[test]
    fn yaml_is_readable_yaml() {
        let body = Serializer::Yaml.encode(&json!({"id": 7})).expect("encodes");
        assert_eq!(std::str::from_utf8(&body).expect("utf-8"), "id: 7\n");
    }
}
