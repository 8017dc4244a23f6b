//! How message bodies are encoded: kombu's serializers, the default content type and
//! encoding each implies, and the body encodings a JSON batch can carry bytes in.

use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{Invalid, Serializer, SerializerError, check_shortstr};

#[derive(Debug, thiserror::Error)]
pub enum EncodingError {
    /// Becomes 400 `invalid_request`.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// Becomes 415 `unsupported_serializer` or 400.
    #[error(transparent)]
    Serializer(#[from] SerializerError),
    /// Becomes 415 `unsupported_media_type`.
    #[error("{0}")]
    MediaType(String),
}

impl EncodingError {
    /// The same error, said of the field at `path` (`messages[2]`).
    pub fn at(self, path: &str) -> Self {
        match self {
            EncodingError::Invalid(Invalid(text)) => Invalid(format!("{path}: {text}")).into(),
            EncodingError::Serializer(SerializerError::Unsupported(text)) => {
                SerializerError::Unsupported(format!("{path}: {text}")).into()
            }
            EncodingError::Serializer(SerializerError::Encode(text)) => {
                SerializerError::Encode(format!("{path}: {text}")).into()
            }
            EncodingError::MediaType(text) => EncodingError::MediaType(format!("{path}: {text}")),
        }
    }
}

/// A body ready for the broker, with the content type and encoding it defaults to.
pub struct Encoded {
    pub body: Bytes,
    pub content_type: &'static str,
    pub content_encoding: Option<&'static str>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
/// How a JSON batch carries a message's body.
pub enum BodyEncoding {
    #[default]
    Json,
    Utf8,
    Base64,
}

/// A batch message's body as bytes: JSON (through `serializer`), UTF-8 text or base64.
pub fn encode_batch_body(
    body: &Value,
    encoding: BodyEncoding,
    serializer: Option<Serializer>,
) -> Result<Encoded, EncodingError> {
    let text = |name: &str| match body {
        Value::String(text) => Ok(text.as_str()),
        _ => Err(Invalid(format!(
            "body must be a string with body_encoding {name}"
        ))),
    };
    let encoded = |body, content_type, content_encoding| Encoded {
        body,
        content_type,
        content_encoding,
    };
    Ok(match (encoding, serializer) {
        (BodyEncoding::Json, None | Some(Serializer::Json)) => encoded(
            Bytes::from(serde_json::to_vec(body).unwrap_or_default()),
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
            let (kind, charset) = serializer.content_type();
            encoded(serializer.encode(body)?, kind, Some(charset))
        }
        (_, Some(serializer)) if serializer != Serializer::Raw => {
            return Err(Invalid(
                "serializer applies to body_encoding json only; a utf8 or base64 body is \
                 published as it is"
                    .into(),
            )
            .into());
        }
        (BodyEncoding::Utf8, _) => encoded(
            Bytes::copy_from_slice(text("utf8")?.as_bytes()),
            "text/plain",
            Some("utf-8"),
        ),
        (BodyEncoding::Base64, _) => encoded(
            Bytes::from(decode_base64(text("base64")?)?),
            "application/octet-stream",
            None,
        ),
    })
}

fn decode_base64(text: &str) -> Result<Vec<u8>, Invalid> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    STANDARD
        .decode(text)
        .or_else(|_| URL_SAFE.decode(text))
        .map_err(|error| Invalid(format!("body is not valid base64: {error}")))
}

/// A body's media type as a message's content_type and content_encoding.
pub struct Media {
    pub essence: String,
    pub charset: Option<String>,
    pub is_json: bool,
}

/// The media type of a request body, with the charset it implies.
pub fn parse_content_type(header: Option<&str>) -> Result<Media, EncodingError> {
    let Some(header) = header else {
        return Ok(Media {
            essence: "application/octet-stream".into(),
            charset: None,
            is_json: false,
        });
    };
    let mime: mime::Mime = header.parse().map_err(|_| {
        EncodingError::MediaType(format!(
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
