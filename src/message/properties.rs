//! basic.properties as JSON: every field AMQP 0-9-1 defines, validated before anything is published.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::{Invalid, check_shortstr, quoted};

/// Field tables nest at most this deep (a table in a table counts one level).
pub const MAX_TABLE_DEPTH: usize = 32;

/// AMQP basic.properties. Absent fields are not sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Properties {
    /// MIME type of the body, e.g. `application/json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Body encoding, e.g. `utf-8` or `binary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    /// Application headers: an AMQP field table. Integers stay 64-bit integers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub headers: Option<Map<String, Value>>,
    /// 1 or `transient`, 2 or `persistent` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u8>)]
    pub delivery_mode: Option<DeliveryMode>,
    /// 0–255; queues honour it up to their `x-max-priority`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// Per-message TTL: a string of milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// RabbitMQ checks it equals the gateway's broker user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "u8")]
pub enum DeliveryMode {
    Transient,
    Persistent,
}

impl DeliveryMode {
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        match text {
            "1" | "transient" => Ok(Self::Transient),
            "2" | "persistent" => Ok(Self::Persistent),
            other => Err(Invalid(format!(
                "delivery_mode {other:?} is not valid; use 1/transient or 2/persistent"
            ))),
        }
    }
}

impl From<DeliveryMode> for u8 {
    fn from(mode: DeliveryMode) -> u8 {
        match mode {
            DeliveryMode::Transient => 1,
            DeliveryMode::Persistent => 2,
        }
    }
}

impl<'de> Deserialize<'de> for DeliveryMode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        let text = match &value {
            Value::String(text) => text.clone(),
            Value::Number(number) => number.to_string(),
            _ => String::new(),
        };
        DeliveryMode::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Properties {
    /// Checks what the broker would otherwise answer by closing the channel.
    pub fn validate(&self) -> Result<(), Invalid> {
        let shortstrs = [
            ("content_type", &self.content_type),
            ("content_encoding", &self.content_encoding),
            ("correlation_id", &self.correlation_id),
            ("reply_to", &self.reply_to),
            ("expiration", &self.expiration),
            ("message_id", &self.message_id),
            ("type", &self.kind),
            ("user_id", &self.user_id),
            ("app_id", &self.app_id),
            ("cluster_id", &self.cluster_id),
        ];
        for (name, value) in shortstrs {
            if let Some(value) = value {
                check_shortstr(name, value)?;
            }
        }
        if let Some(expiration) = &self.expiration {
            check_expiration(expiration)?;
        }
        if let Some(user_id) = &self.user_id {
            quoted::check_quoted_user_id(user_id)?;
        }
        if let Some(headers) = &self.headers {
            check_table("headers", headers)?;
        }
        Ok(())
    }

    /// The delivery mode actually published: carrot's default is persistent.
    pub fn delivery_mode_or_default(&self) -> DeliveryMode {
        self.delivery_mode.unwrap_or(DeliveryMode::Persistent)
    }
}

fn check_expiration(expiration: &str) -> Result<(), Invalid> {
    if expiration.is_empty() || !expiration.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Invalid(format!(
            "expiration {expiration:?} must be a whole number of milliseconds, e.g. \"60000\""
        )));
    }
    if expiration.parse::<u32>().is_err() {
        return Err(Invalid(format!(
            "expiration {expiration} is too large; RabbitMQ accepts at most {} ms",
            u32::MAX
        )));
    }
    Ok(())
}

/// Checks a JSON object that becomes an AMQP field table; `path` names it in errors.
pub fn check_table(path: &str, table: &Map<String, Value>) -> Result<(), Invalid> {
    check_entries(path, table, 1)
}

fn check_entries(path: &str, table: &Map<String, Value>, depth: usize) -> Result<(), Invalid> {
    if depth > MAX_TABLE_DEPTH {
        return Err(Invalid(format!(
            "{path} nests tables deeper than {MAX_TABLE_DEPTH} levels; flatten it"
        )));
    }
    table.iter().try_for_each(|(key, value)| {
        let path = format!("{path}.{key}");
        check_shortstr(&format!("the key of {path}"), key)?;
        check_value(&path, value, depth)
    })
}

fn check_value(path: &str, value: &Value, depth: usize) -> Result<(), Invalid> {
    match value {
        Value::Number(number) if number.is_u64() && number.as_i64().is_none() => Err(Invalid(
            format!("{path}: {number} does not fit a signed 64-bit AMQP integer"),
        )),
        Value::Array(items) => {
            if depth >= MAX_TABLE_DEPTH {
                return Err(Invalid(format!(
                    "{path} nests arrays and tables deeper than {MAX_TABLE_DEPTH} levels; flatten it"
                )));
            }
            items.iter().enumerate().try_for_each(|(index, item)| {
                check_value(&format!("{path}[{index}]"), item, depth + 1)
            })
        }
        Value::Object(table) => check_entries(path, table, depth + 1),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> Result<Properties, String> {
        serde_json::from_value::<Properties>(value)
            .map_err(|e| e.to_string())
            .and_then(|p| p.validate().map(|()| p).map_err(|e| e.0))
    }

    #[test]
    fn delivery_mode_accepts_numbers_and_words() {
        for (input, mode) in [
            (json!(1), DeliveryMode::Transient),
            (json!("persistent"), DeliveryMode::Persistent),
        ] {
            let props = parse(json!({"delivery_mode": input})).expect("valid");
            assert_eq!(props.delivery_mode, Some(mode));
        }
        assert!(parse(json!({"delivery_mode": 3})).is_err());
    }

    #[test]
    fn expiration_must_be_milliseconds() {
        assert!(parse(json!({"expiration": "60000"})).is_ok());
        let error = parse(json!({"expiration": "1m"})).expect_err("refused");
        assert!(error.contains("milliseconds"), "{error}");
    }

    #[test]
    fn unknown_property_is_named() {
        let error = parse(json!({"corelation_id": "x"})).expect_err("refused");
        assert!(error.contains("corelation_id"), "{error}");
    }

    #[test]
    fn huge_unsigned_header_is_refused() {
        let error = parse(json!({"headers": {"n": u64::MAX}})).expect_err("refused");
        assert!(error.contains("64-bit"), "{error}");
        assert!(error.starts_with("headers.n:"), "{error}");
    }

    #[test]
    fn nesting_is_bounded() {
        let mut deep = json!(1);
        for _ in 0..MAX_TABLE_DEPTH {
            deep = json!({ "k": deep });
        }
        // `deep` is 32 tables, the outermost being the headers table itself.
        assert!(parse(json!({ "headers": deep.clone() })).is_ok());
        let error = parse(json!({ "headers": { "k": deep } })).expect_err("refused");
        assert!(error.contains("deeper than 32"), "{error}");
        let mut arrays = json!(1);
        for _ in 0..MAX_TABLE_DEPTH {
            arrays = json!([arrays]);
        }
        let error = parse(json!({ "headers": { "a": arrays } })).expect_err("refused");
        assert!(error.contains("deeper than 32"), "{error}");
    }

    #[test]
    fn long_strings_are_refused() {
        let error = parse(json!({"message_id": "x".repeat(256)})).expect_err("refused");
        assert!(error.contains("message_id"), "{error}");
    }
}
