//! Exchanges, queues and bindings as the gateway accepts them: carrot's declare, in JSON.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::model::{Invalid, check_compared_value, check_shortstr, check_table};

/// Names the broker reserves for itself.
pub fn is_reserved(name: &str) -> bool {
    name.starts_with("amq.")
}

/// `PUT /exchanges/{exchange}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExchangeSpec {
    /// `direct` (default), `fanout`, `topic`, `headers`, or a plugin type `x-…`.
    #[serde(rename = "type", default = "direct")]
    #[schema(pattern = "^(direct|fanout|topic|headers|x-[A-Za-z0-9._-]{1,253})$")]
    pub kind: String,
    /// Survives a broker restart (carrot's default: true).
    #[serde(default = "yes")]
    pub durable: bool,
    #[serde(default)]
    pub auto_delete: bool,
    /// Only other exchanges may publish to it.
    #[serde(default)]
    pub internal: bool,
    /// e.g. `{"alternate-exchange": "unrouted"}`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub arguments: Map<String, Value>,
}

impl Default for ExchangeSpec {
    fn default() -> Self {
        Self {
            kind: direct(),
            durable: true,
            auto_delete: false,
            internal: false,
            arguments: Map::new(),
        }
    }
}

/// `PUT /queues/{queue}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueSpec {
    /// Survives a broker restart (carrot's default: true).
    #[serde(default = "yes")]
    pub durable: bool,
    /// Only `false`: an exclusive queue belongs to one AMQP connection, while the gateway spreads
    /// requests over several and replaces them. For a private, temporary queue use a unique
    /// name with `auto_delete` or an `x-expires` argument.
    #[serde(default)]
    pub exclusive: bool,
    #[serde(default)]
    pub auto_delete: bool,
    /// `x-message-ttl`, `x-dead-letter-exchange`, `x-max-priority`, `x-queue-type`, …
    #[serde(default)]
    #[schema(value_type = Object)]
    pub arguments: Map<String, Value>,
    /// Bindings declared with the queue, as carrot's Consumer.declare does.
    #[serde(default)]
    pub bindings: Vec<BindingSpec>,
}

impl QueueSpec {
    /// Declared as a stream queue (`x-queue-type: stream`).
    pub fn is_stream(&self) -> bool {
        self.arguments.get("x-queue-type") == Some(&Value::String("stream".into()))
    }
}

impl Default for QueueSpec {
    fn default() -> Self {
        Self {
            durable: true,
            exclusive: false,
            auto_delete: false,
            arguments: Map::new(),
            bindings: Vec::new(),
        }
    }
}

/// A binding of a queue to an exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BindingSpec {
    /// `amq.default` names the default exchange.
    #[schema(min_length = 1, max_length = 255)]
    pub exchange: String,
    #[serde(default)]
    #[schema(max_length = 255)]
    pub routing_key: String,
    /// Headers exchanges: `{"x-match": "all"|"any", "header": "value", …}`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub arguments: Map<String, Value>,
}

/// Topology declared at start and after every reconnect (the config file's, carrot's from_dict).
#[derive(Debug, Clone, Default)]
pub struct Declarations {
    pub exchanges: Vec<(String, ExchangeSpec)>,
    pub queues: Vec<(String, QueueSpec)>,
}

/// What the broker says of a queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct QueueInfo {
    pub name: String,
    pub message_count: u32,
    pub consumer_count: u32,
}

fn direct() -> String {
    "direct".to_owned()
}

fn yes() -> bool {
    true
}

impl ExchangeSpec {
    pub fn validate(&self) -> Result<(), Invalid> {
        match self.kind.as_str() {
            "direct" | "fanout" | "topic" | "headers" => {}
            plugin if is_plugin_type(plugin) => {}
            other => {
                return Err(Invalid(format!(
                    "exchange type {other:?} is unknown; use direct, fanout, topic, headers, \
                     or a plugin type starting with x-"
                )));
            }
        }
        check_declare_arguments(&self.arguments, &[])
    }
}

/// Plugin exchange types; an unknown one makes RabbitMQ close the whole connection.
pub fn is_plugin_type(kind: &str) -> bool {
    kind.len() > 2
        && kind.len() <= 255
        && kind.starts_with("x-")
        && kind
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl QueueSpec {
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.exclusive {
            return Err(Invalid(
                "exclusive=true is not supported: an exclusive queue belongs to one AMQP \
                 connection, and the gateway spreads requests over several and replaces them, so \
                 the queue would refuse the gateway's own next request; for a private, temporary \
                 queue use a unique name with auto_delete or an x-expires argument"
                    .into(),
            ));
        }
        check_declare_arguments(&self.arguments, QUEUE_ARGUMENT_VALUES)?;
        if self.is_stream() && (!self.durable || self.auto_delete) {
            return Err(Invalid(
                "a stream queue (x-queue-type: stream) must be durable and not auto_delete: \
                 set durable: true, auto_delete: false"
                    .into(),
            ));
        }
        for (index, binding) in self.bindings.iter().enumerate() {
            binding
                .validate()
                .map_err(|Invalid(text)| Invalid(format!("bindings[{index}]: {text}")))?;
        }
        Ok(())
    }
}

impl BindingSpec {
    pub fn validate(&self) -> Result<(), Invalid> {
        crate::model::check_name("exchange", &self.exchange)?;
        check_shortstr("routing_key", &self.routing_key)?;
        check_table("arguments", &self.arguments)?;
        match self.arguments.get("x-match") {
            None => Ok(()),
            Some(Value::String(mode))
                if ["all", "any", "all-with-x", "any-with-x"].contains(&mode.as_str()) =>
            {
                Ok(())
            }
            Some(other) => Err(Invalid(format!(
                "x-match {other} is not valid; use \"all\" or \"any\""
            ))),
        }
    }
}

/// Queue arguments whose values RabbitMQ knows, with those values.
const QUEUE_ARGUMENT_VALUES: &[(&str, &[&str])] = &[
    // A stream is read by offset: the gateway refuses basic.get, queue.purge and
    // basic.reject on one, which RabbitMQ answers by closing the whole connection.
    ("x-queue-type", &["classic", "quorum", "stream"]),
    (
        "x-overflow",
        &["drop-head", "reject-publish", "reject-publish-dlx"],
    ),
    ("x-queue-mode", &["default", "lazy"]),
];

/// Checks the arguments of a queue or exchange declaration: a field table whose string values
/// the broker compares on every later declaration, and quotes when they differ.
fn check_declare_arguments(
    arguments: &Map<String, Value>,
    known: &[(&str, &[&str])],
) -> Result<(), Invalid> {
    check_table("arguments", arguments)?;
    for (key, value) in arguments {
        let path = format!("arguments.{key}");
        if let Some((_, allowed)) = known.iter().find(|(name, _)| name == key) {
            match value.as_str() {
                Some(text) if allowed.contains(&text) => {}
                _ => {
                    return Err(Invalid(format!(
                        "{path} is {value}; use one of {}",
                        allowed.join(", ")
                    )));
                }
            }
        }
        check_strings(&path, value)?;
    }
    Ok(())
}

fn check_strings(path: &str, value: &Value) -> Result<(), Invalid> {
    match value {
        Value::String(text) => check_compared_value(path, text),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(index, item)| check_strings(&format!("{path}[{index}]"), item)),
        Value::Object(table) => table
            .iter()
            .try_for_each(|(key, item)| check_strings(&format!("{path}.{key}"), item)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn carrot_defaults_are_durable_direct() {
        let spec: ExchangeSpec = serde_json::from_value(json!({})).expect("defaults");
        assert_eq!(spec, ExchangeSpec::default());
        assert!(spec.durable);
        assert_eq!(spec.kind, "direct");
    }

    #[test]
    fn unknown_types_are_refused_before_the_broker_sees_them() {
        for kind in ["direct", "fanout", "topic", "headers", "x-delayed-message"] {
            let spec = ExchangeSpec {
                kind: kind.into(),
                ..Default::default()
            };
            assert!(spec.validate().is_ok(), "{kind}");
        }
        for kind in ["Direct", "fan out", "x-", "consistent-hash"] {
            let spec = ExchangeSpec {
                kind: kind.into(),
                ..Default::default()
            };
            assert!(spec.validate().is_err(), "{kind}");
        }
    }

    #[test]
    fn exclusive_queues_are_refused_with_what_to_use_instead() {
        let spec = QueueSpec {
            exclusive: true,
            ..QueueSpec::default()
        };
        let error = spec.validate().expect_err("refused");
        assert!(error.0.contains("auto_delete or an x-expires"), "{error}");
    }

    #[test]
    fn known_queue_arguments_take_known_values() {
        let spec = |arguments: Value| QueueSpec {
            arguments: serde_json::from_value(arguments).expect("an object"),
            ..QueueSpec::default()
        };
        assert!(
            spec(json!({"x-queue-type": "quorum", "x-overflow": "reject-publish"}))
                .validate()
                .is_ok()
        );
        assert!(spec(json!({"x-queue-type": "stream"})).validate().is_ok());
        let error = QueueSpec {
            durable: false,
            ..spec(json!({"x-queue-type": "stream"}))
        }
        .validate()
        .expect_err("refused");
        assert!(error.0.contains("must be durable"), "{error}");
        let error = spec(json!({"x-queue-type": "lazy"}))
            .validate()
            .expect_err("refused");
        assert!(error.0.starts_with("arguments.x-queue-type"), "{error}");
        let error = spec(json!({"x-queue-mode": 1}))
            .validate()
            .expect_err("refused");
        assert!(error.0.contains("default, lazy"), "{error}");
    }

    #[test]
    fn declare_arguments_are_ascii_but_binding_arguments_need_not_be() {
        let queue = QueueSpec {
            arguments: serde_json::from_value(json!({"x-dead-letter-exchange": "déad"}))
                .expect("object"),
            ..QueueSpec::default()
        };
        let error = queue.validate().expect_err("refused");
        assert!(
            error
                .0
                .starts_with("arguments.x-dead-letter-exchange must be ASCII"),
            "{error}"
        );
        let binding: BindingSpec = serde_json::from_value(
            json!({"exchange": "h", "arguments": {"x-match": "all", "city": "Zürich"}}),
        )
        .expect("parses");
        assert!(binding.validate().is_ok());
    }

    #[test]
    fn binding_errors_name_the_binding() {
        let spec: QueueSpec = serde_json::from_value(json!({
            "bindings": [{"exchange": "x"}, {"exchange": "h", "arguments": {"x-match": "most"}}]
        }))
        .expect("parses");
        let error = spec.validate().expect_err("refused");
        assert!(error.0.starts_with("bindings[1]"), "{error}");
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    use super::*;
    use crate::model::fuzzed::{json_table, json_value};

    fn strings_ascii(value: &Value) -> bool {
        match value {
            Value::String(text) => text.is_ascii(),
            Value::Array(items) => items.iter().all(strings_ascii),
            Value::Object(map) => map.values().all(strings_ascii),
            _ => true,
        }
    }

    /// Arguments as clients send them: known keys with any value, and anything else.
    fn arguments() -> impl Strategy<Value = Map<String, Value>> {
        let known = prop::sample::select(vec![
            "x-queue-type",
            "x-overflow",
            "x-queue-mode",
            "x-dead-letter-exchange",
            "x-message-ttl",
            "alternate-exchange",
        ]);
        let value = prop_oneof![
            prop::sample::select(vec![
                "classic",
                "quorum",
                "stream",
                "lazy",
                "drop-head",
                "é"
            ])
            .prop_map(|text| json!(text)),
            json_value(2),
        ];
        (prop::collection::vec((known, value), 0..4), json_table(2)).prop_map(|(known, rest)| {
            let mut arguments = rest;
            arguments.extend(
                known
                    .into_iter()
                    .map(|(key, value)| (key.to_owned(), value)),
            );
            arguments
        })
    }

    proptest! {
        #[test]
        fn an_accepted_queue_is_one_the_broker_can_quote_and_serve(
            arguments in arguments(),
            exclusive in any::<bool>(),
        ) {
            let spec = QueueSpec { exclusive, arguments, ..QueueSpec::default() };
            if spec.validate().is_ok() {
                prop_assert!(!spec.exclusive);
                prop_assert!(spec.arguments.values().all(strings_ascii));
                for (key, allowed) in QUEUE_ARGUMENT_VALUES {
                    if let Some(value) = spec.arguments.get(*key) {
                        prop_assert!(value.as_str().is_some_and(|v| allowed.contains(&v)));
                    }
                }
            }
        }

        #[test]
        fn an_accepted_exchange_has_a_type_the_broker_knows_or_a_plugin_may(
            kind in "\\PC{0,12}",
            arguments in arguments(),
        ) {
            let spec = ExchangeSpec { kind, arguments, ..ExchangeSpec::default() };
            if spec.validate().is_ok() {
                prop_assert!(
                    ["direct", "fanout", "topic", "headers"].contains(&spec.kind.as_str())
                        || is_plugin_type(&spec.kind)
                );
                prop_assert!(spec.arguments.values().all(strings_ascii));
            }
        }

        #[test]
        fn a_binding_is_accepted_only_with_names_amqp_can_carry(
            exchange in "\\PC{0,300}",
            routing_key in "\\PC{0,300}",
            arguments in json_table(2),
        ) {
            let binding = BindingSpec { exchange, routing_key, arguments };
            if binding.validate().is_ok() {
                prop_assert!(!binding.exchange.is_empty() && binding.exchange.len() <= 255);
                prop_assert!(binding.routing_key.len() <= 255);
            }
        }
    }
}
