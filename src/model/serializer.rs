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
            Self::Yaml => yaml_for_pyyaml(value)?,
            Self::Msgpack => rmp_serde::to_vec_named(value).map_err(encode_error)?,
        };
        Ok(Bytes::from(bytes))
    }
}

/// YAML that Python's PyYAML (YAML 1.1, kombu's decoder) reads back as the same values.
///
/// A YAML 1.2 emitter writes `yes`, `1_000` or `2001-12-14` as plain strings, which YAML 1.1
/// reads as a boolean, a number and a date, and `1e20` as a float, which YAML 1.1 reads as a
/// string. JSON flow style is YAML in both versions: strings stay quoted, and floats are written
/// with a dot and a signed exponent, the only float form YAML 1.1 knows.
fn yaml_for_pyyaml(value: &Value) -> Result<Vec<u8>, SerializerError> {
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, Yaml11Floats);
    serde::Serialize::serialize(value, &mut serializer).map_err(encode_error)?;
    out.push(b'\n');
    Ok(out)
}

struct Yaml11Floats;

impl serde_json::ser::Formatter for Yaml11Floats {
    fn write_f64<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        value: f64,
    ) -> std::io::Result<()> {
        writer.write_all(yaml11_float(value).as_bytes())
    }
}

fn yaml11_float(value: f64) -> String {
    let text = format!("{value:?}");
    let (mantissa, exponent) = match text.split_once('e') {
        Some((mantissa, exponent)) => (mantissa, Some(exponent)),
        None => (text.as_str(), None),
    };
    let mut out = mantissa.to_owned();
    if !out.contains('.') {
        out.push_str(".0");
    }
    if let Some(exponent) = exponent {
        out.push('e');
        if !exponent.starts_with('-') {
            out.push('+');
        }
        out.push_str(exponent);
    }
    out
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
    fn yaml_keeps_yaml_1_1_readers_from_guessing() {
        let value = json!({"id": 7, "flag": "yes", "n": "1_000", "day": "2001-12-14",
                           "big": 1e20, "small": 1e-7, "one": 1.0});
        let body = Serializer::Yaml.encode(&value).expect("encodes");
        let text = std::str::from_utf8(&body).expect("utf-8");
        for expected in [
            r#""flag":"yes""#,
            r#""n":"1_000""#,
            r#""big":1.0e+20"#,
            r#""small":1.0e-7"#,
            r#""one":1.0"#,
        ] {
            assert!(text.contains(expected), "{text} lacks {expected}");
        }
        let back: Value = yaml_serde::from_slice(&body).expect("valid YAML");
        assert_eq!(back, value);
    }
}
