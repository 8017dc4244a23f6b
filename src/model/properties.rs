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
    #[schema(maximum = 9223372036854775807_u64)]
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
        if let Some(timestamp) = self.timestamp
            && i64::try_from(timestamp).is_err()
        {
            return Err(Invalid(format!(
                "timestamp {timestamp} is not a time: unix seconds up to {}",
                i64::MAX
            )));
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

#[cfg(test)]
pub(crate) mod fuzzed {
    use proptest::prelude::*;
    use serde_json::{Map, Number, Value};

    use super::*;

    /// Keys as clients send them, now and then longer than AMQP's 255 bytes.
    fn key() -> impl Strategy<Value = String> {
        prop_oneof![8 => "\\PC{0,16}", 1 => "[a-z]{250,260}"]
    }

    /// Any JSON value, nested up to `depth` containers.
    pub fn json_value(depth: u32) -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
            "\\PC{0,40}".prop_map(Value::String),
        ];
        leaf.prop_recursive(depth, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(key(), inner, 0..4)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    pub fn json_table(depth: u32) -> impl Strategy<Value = Map<String, Value>> {
        prop::collection::btree_map(key(), json_value(depth), 0..5)
            .prop_map(|map| map.into_iter().collect())
    }

    /// A table whose first entry nests `levels` tables and arrays, around any value.
    fn deep_table() -> impl Strategy<Value = Map<String, Value>> {
        (
            0..45usize,
            prop::collection::vec(any::<bool>(), 45),
            json_value(1),
        )
            .prop_map(|(levels, arrays, leaf)| {
                let nested = arrays[..levels].iter().fold(leaf, |inner, &array| {
                    if array {
                        Value::Array(vec![inner])
                    } else {
                        Value::Object(Map::from_iter([("k".to_owned(), inner)]))
                    }
                });
                Map::from_iter([("deep".to_owned(), nested)])
            })
    }

    fn depth(value: &Value) -> usize {
        match value {
            Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
            Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    fn keys_and_integers_fit(value: &Value) -> bool {
        match value {
            Value::Number(n) => !n.is_u64() || n.as_i64().is_some(),
            Value::Array(items) => items.iter().all(keys_and_integers_fit),
            Value::Object(map) => map
                .iter()
                .all(|(key, value)| key.len() <= 255 && keys_and_integers_fit(value)),
            _ => true,
        }
    }

    proptest! {
        #[test]
        fn an_accepted_header_table_is_one_amqp_can_carry(
            table in prop_oneof![json_table(4), deep_table()],
        ) {
            let accepted = check_table("headers", &table).is_ok();
            let value = Value::Object(table);
            prop_assert_eq!(
                accepted,
                depth(&value) <= MAX_TABLE_DEPTH && keys_and_integers_fit(&value)
            );
        }

        #[test]
        fn any_properties_document_is_accepted_or_refused_by_name(
            document in json_table(3),
        ) {
            if let Ok(properties) = serde_json::from_value::<Properties>(Value::Object(document))
                && let Err(Invalid(text)) = properties.validate()
            {
                let field = text.split([' ', '.', ':']).next().unwrap_or_default();
                prop_assert!(
                    ["headers", "content_type", "content_encoding", "correlation_id",
                     "reply_to", "expiration", "message_id", "timestamp", "type", "user_id",
                     "app_id", "cluster_id", "the"].contains(&field),
                    "{text}"
                );
            }
        }
    }
}
