//! JSON ↔ AMQP field tables and basic.properties, keeping integers integers.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use serde_json::{Map, Number, Value};

use crate::model::Properties;

/// Converts a JSON object to a field table. Callers validated key lengths and integer ranges.
pub fn table_from_json(map: &Map<String, Value>) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in map {
        table.insert(short(key), value_from_json(value));
    }
    table
}

pub fn value_from_json(value: &Value) -> AMQPValue {
    match value {
        Value::Null => AMQPValue::Void,
        Value::Bool(flag) => AMQPValue::Boolean(*flag),
        Value::Number(number) => match number.as_i64() {
            Some(integer) => AMQPValue::LongLongInt(integer),
            None => AMQPValue::Double(number.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(text) => AMQPValue::LongString(LongString::from(text.as_str())),
        Value::Array(items) => {
            let mut array = FieldArray::default();
            for item in items {
                array.push(value_from_json(item));
            }
            AMQPValue::FieldArray(array)
        }
        Value::Object(map) => AMQPValue::FieldTable(table_from_json(map)),
    }
}

pub fn table_to_json(table: &FieldTable) -> Map<String, Value> {
    table
        .inner()
        .iter()
        .map(|(key, value)| (key.to_string(), value_to_json(value)))
        .collect()
}

pub fn value_to_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(flag) => Value::Bool(*flag),
        AMQPValue::ShortShortInt(n) => Value::from(*n),
        AMQPValue::ShortShortUInt(n) => Value::from(*n),
        AMQPValue::ShortInt(n) => Value::from(*n),
        AMQPValue::ShortUInt(n) => Value::from(*n),
        AMQPValue::LongInt(n) => Value::from(*n),
        AMQPValue::LongUInt(n) => Value::from(*n),
        AMQPValue::LongLongInt(n) => Value::from(*n),
        AMQPValue::Timestamp(n) => Value::from(*n),
        AMQPValue::Float(n) => float(f64::from(*n)),
        AMQPValue::Double(n) => float(*n),
        AMQPValue::DecimalValue(decimal) => {
            float(f64::from(decimal.value) / 10f64.powi(i32::from(decimal.scale)))
        }
        AMQPValue::ShortString(text) => Value::String(text.to_string()),
        AMQPValue::LongString(text) => {
            Value::String(String::from_utf8_lossy(text.as_bytes()).into_owned())
        }
        AMQPValue::FieldArray(items) => {
            Value::Array(items.as_slice().iter().map(value_to_json).collect())
        }
        AMQPValue::FieldTable(table) => Value::Object(table_to_json(table)),
        AMQPValue::ByteArray(bytes) => {
            use base64::Engine as _;
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes.as_slice()))
        }
        AMQPValue::Void => Value::Null,
    }
}

/// The bytes basic.properties take in a content header frame, encoded as AMQP does.
pub fn encoded_len(properties: &BasicProperties) -> usize {
    let short = |value: &Option<ShortString>| value.as_ref().map_or(0, |s| 1 + s.as_str().len());
    let flags = 2;
    flags
        + short(properties.content_type())
        + short(properties.content_encoding())
        + properties.headers().as_ref().map_or(0, table_len)
        + properties.delivery_mode().map_or(0, |_| 1)
        + properties.priority().map_or(0, |_| 1)
        + short(properties.correlation_id())
        + short(properties.reply_to())
        + short(properties.expiration())
        + short(properties.message_id())
        + properties.timestamp().map_or(0, |_| 8)
        + short(properties.kind())
        + short(properties.user_id())
        + short(properties.app_id())
        + short(properties.cluster_id())
}

fn table_len(table: &FieldTable) -> usize {
    4 + table
        .inner()
        .iter()
        .map(|(key, value)| 1 + key.as_str().len() + 1 + value_len(value))
        .sum::<usize>()
}

fn value_len(value: &AMQPValue) -> usize {
    match value {
        AMQPValue::Void => 0,
        AMQPValue::Boolean(_) | AMQPValue::ShortShortInt(_) | AMQPValue::ShortShortUInt(_) => 1,
        AMQPValue::ShortInt(_) | AMQPValue::ShortUInt(_) => 2,
        AMQPValue::LongInt(_) | AMQPValue::LongUInt(_) | AMQPValue::Float(_) => 4,
        AMQPValue::DecimalValue(_) => 5,
        AMQPValue::LongLongInt(_) | AMQPValue::Double(_) | AMQPValue::Timestamp(_) => 8,
        AMQPValue::ShortString(text) => 1 + text.as_str().len(),
        AMQPValue::LongString(text) => 4 + text.as_bytes().len(),
        AMQPValue::ByteArray(bytes) => 4 + bytes.as_slice().len(),
        AMQPValue::FieldArray(items) => {
            4 + items
                .as_slice()
                .iter()
                .map(|item| 1 + value_len(item))
                .sum::<usize>()
        }
        AMQPValue::FieldTable(table) => table_len(table),
    }
}

fn float(value: f64) -> Value {
    Number::from_f64(value).map_or(Value::Null, Value::Number)
}

/// Callers checked the length (`Properties::validate`, `message::check_shortstr`).
fn short(text: &str) -> ShortString {
    ShortString::from(text)
}

/// Builds basic.properties; `delivery_mode` falls back to persistent, as in carrot.
pub fn to_basic_properties(props: &Properties) -> BasicProperties {
    let mut basic =
        BasicProperties::default().with_delivery_mode(u8::from(props.delivery_mode_or_default()));
    let strings = [
        (
            &props.content_type,
            BasicProperties::with_content_type as fn(_, _) -> _,
        ),
        (
            &props.content_encoding,
            BasicProperties::with_content_encoding,
        ),
        (&props.correlation_id, BasicProperties::with_correlation_id),
        (&props.reply_to, BasicProperties::with_reply_to),
        (&props.expiration, BasicProperties::with_expiration),
        (&props.message_id, BasicProperties::with_message_id),
        (&props.kind, BasicProperties::with_type),
        (&props.user_id, BasicProperties::with_user_id),
        (&props.app_id, BasicProperties::with_app_id),
        (&props.cluster_id, BasicProperties::with_cluster_id),
    ];
    for (value, set) in strings {
        if let Some(value) = value {
            basic = set(basic, short(value));
        }
    }
    if let Some(headers) = &props.headers {
        basic = basic.with_headers(table_from_json(headers));
    }
    if let Some(priority) = props.priority {
        basic = basic.with_priority(priority);
    }
    if let Some(timestamp) = props.timestamp {
        basic = basic.with_timestamp(timestamp);
    }
    basic
}

/// Reads basic.properties back into the gateway's terms.
pub fn from_basic_properties(basic: &BasicProperties) -> Properties {
    let text = |value: &Option<ShortString>| value.as_ref().map(ShortString::to_string);
    Properties {
        content_type: text(basic.content_type()),
        content_encoding: text(basic.content_encoding()),
        headers: basic.headers().as_ref().map(table_to_json),
        delivery_mode: match basic.delivery_mode() {
            Some(1) => Some(crate::model::DeliveryMode::Transient),
            Some(2) => Some(crate::model::DeliveryMode::Persistent),
            _ => None,
        },
        priority: *basic.priority(),
        correlation_id: text(basic.correlation_id()),
        reply_to: text(basic.reply_to()),
        expiration: text(basic.expiration()),
        message_id: text(basic.message_id()),
        timestamp: *basic.timestamp(),
        kind: text(basic.kind()),
        user_id: text(basic.user_id()),
        app_id: text(basic.app_id()),
        cluster_id: text(basic.cluster_id()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integers_stay_integers_and_nesting_survives() {
        let input = json!({"n": 9, "neg": -3, "f": 1.5, "s": "x", "b": true, "z": null,
                           "a": [1, "two"], "t": {"k": 1}});
        let Value::Object(map) = input.clone() else {
            unreachable!("literal is an object")
        };
        let table = table_from_json(&map);
        assert_eq!(table.inner().get("n"), Some(&AMQPValue::LongLongInt(9)));
        assert_eq!(table.inner().get("f"), Some(&AMQPValue::Double(1.5)));
        assert_eq!(Value::Object(table_to_json(&table)), input);
    }

    #[test]
    fn properties_survive_the_round_trip() {
        let props: Properties = serde_json::from_value(json!({
            "content_type": "text/plain", "content_encoding": "utf-8", "delivery_mode": 1,
            "priority": 3, "correlation_id": "c", "reply_to": "r", "expiration": "10",
            "message_id": "m", "timestamp": 5, "type": "t", "user_id": "u", "app_id": "a",
            "cluster_id": "k", "headers": {"n": 1}
        }))
        .expect("valid");
        assert_eq!(from_basic_properties(&to_basic_properties(&props)), props);
    }

    #[test]
    fn encoded_len_counts_every_byte() {
        let props: Properties = serde_json::from_value(json!({
            "content_type": "text/plain", "priority": 3, "timestamp": 5,
            "headers": {"n": 1, "s": "ab", "a": [true, null], "t": {"k": 1.5}}
        }))
        .expect("valid");
        // flags 2, content_type 1+10, headers 4 + n (1+1+1+8) + s (1+1+1+4+2)
        // + a (1+1+1+4+(1+1)+(1+0)) + t (1+1+1+(4+1+1+1+8)), delivery mode 1, priority 1,
        // timestamp 8.
        let expected = 2 + 11 + (4 + 11 + 9 + 10 + 18) + 1 + 1 + 8;
        assert_eq!(encoded_len(&to_basic_properties(&props)), expected);
    }

    #[test]
    fn persistent_is_the_default_delivery_mode() {
        let basic = to_basic_properties(&Properties::default());
        assert_eq!(basic.delivery_mode(), &Some(2));
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;
    use crate::model::{Properties, check_table};

    proptest! {
        #[test]
        fn an_accepted_table_comes_back_from_amqp_as_it_went(
            table in crate::model::fuzzed::json_table(4),
        ) {
            prop_assume!(check_table("headers", &table).is_ok());
            let back = table_to_json(&table_from_json(&table));
            prop_assert_eq!(Value::Object(back), Value::Object(table));
        }

        #[test]
        fn encoded_len_grows_with_every_header(
            table in crate::model::fuzzed::json_table(3),
        ) {
            // Only validated tables reach the broker: a key over 255 bytes has no AMQP form.
            prop_assume!(check_table("headers", &table).is_ok());
            let bare = encoded_len(&to_basic_properties(&Properties::default()));
            let with = encoded_len(&to_basic_properties(&Properties {
                headers: Some(table.clone()),
                ..Properties::default()
            }));
            let entries: usize = table.keys().map(|key| 1 + key.len() + 1).sum();
            prop_assert!(with >= bare + 4 + entries);
        }
    }
}
