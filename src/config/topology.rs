//! The file's topology: exchanges and queues declared at start and after each reconnect, named
//! consumer sets and push subscriptions, each entry checked as the HTTP API checks its body.

use serde::de::DeserializeOwned;
use serde::de::MapAccess;
use serde_json::{Map, Value};

use super::ConfigError;
use super::settings::Keys;
use crate::messaging::consumer_sets::{ConsumerSetRequest, ConsumerSetSpec};
use crate::messaging::push::{SubscriptionRequest, SubscriptionSpec};
use crate::model::topology::{Declarations, ExchangeSpec, QueueSpec, is_reserved};
use crate::model::{Invalid, check_name};

/// The topology keys of the file, as written; each entry is read by `read`, naming it when bad.
#[derive(Debug, Default)]
pub(super) struct TopologyFile {
    /// carrot's from_dict: declared at start and after every reconnect.
    pub exchanges: Vec<Map<String, Value>>,
    pub queues: Vec<Map<String, Value>>,
    /// Named consumer sets, addressable as `/consumers/{name}`.
    pub consumers: Vec<Map<String, Value>>,
    /// Push subscriptions, each as the body of `POST /subscriptions`.
    pub subscriptions: Vec<Value>,
}

impl Keys for TopologyFile {
    fn keys() -> Vec<&'static str> {
        vec!["exchanges", "queues", "consumers", "subscriptions"]
    }

    fn read<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "exchanges" => self.exchanges = map.next_value()?,
            "queues" => self.queues = map.next_value()?,
            "consumers" => self.consumers = map.next_value()?,
            "subscriptions" => self.subscriptions = map.next_value()?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// What the file declares, for the broker, the consumer sets and the push subscriptions.
pub(super) struct Topology {
    pub declarations: Declarations,
    pub consumer_sets: Vec<(String, ConsumerSetSpec)>,
    pub subscriptions: Vec<SubscriptionSpec>,
}

/// Reads the file's exchanges, queues, consumer sets and subscriptions, naming the entry at fault.
pub(super) fn read(file: &TopologyFile) -> Result<Topology, ConfigError> {
    let mut declarations = Declarations::default();
    for (index, entry) in file.exchanges.iter().enumerate() {
        let (name, spec) = named::<ExchangeSpec>("exchanges", index, entry)?;
        spec.validate()
            .and_then(|()| check_name("exchange", &name))
            .and_then(|()| not_reserved(&name))
            .map_err(|error| entry_error("exchanges", index, &name, error))?;
        declarations.exchanges.push((name, spec));
    }
    for (index, entry) in file.queues.iter().enumerate() {
        let (name, mut spec) = named::<QueueSpec>("queues", index, entry)?;
        spec.validate()
            .and_then(|()| check_name("queue", &name))
            .and_then(|()| not_reserved(&name))
            .map_err(|error| entry_error("queues", index, &name, error))?;
        for binding in &mut spec.bindings {
            if binding.exchange == "amq.default" {
                binding.exchange.clear();
            }
        }
        declarations.queues.push((name, spec));
    }
    let mut consumer_sets: Vec<(String, ConsumerSetSpec)> = Vec::new();
    for (index, entry) in file.consumers.iter().enumerate() {
        let (name, request) = named::<ConsumerSetRequest>("consumers", index, entry)?;
        let spec = request
            .validate()
            .map_err(|error| entry_error("consumers", index, &name, error))?;
        if consumer_sets.iter().any(|(other, _)| *other == name) {
            return Err(entry_error(
                "consumers",
                index,
                &name,
                Invalid("the name is used twice".into()),
            ));
        }
        consumer_sets.push((name, spec));
    }
    Ok(Topology {
        declarations,
        consumer_sets,
        subscriptions: file_subscriptions(&file.subscriptions)?,
    })
}

fn file_subscriptions(entries: &[Value]) -> Result<Vec<SubscriptionSpec>, ConfigError> {
    let mut subscriptions: Vec<SubscriptionSpec> = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let name = entry.get("name").and_then(Value::as_str).unwrap_or("");
        let at_fault = |error: Invalid| entry_error("subscriptions", index, name, error);
        let spec = read_entry::<SubscriptionRequest>(entry.clone())
            .map_err(at_fault)?
            .validate()
            .map_err(at_fault)?;
        if subscriptions.iter().any(|other| other.name == spec.name) {
            return Err(at_fault(Invalid("the name is used twice".into())));
        }
        subscriptions.push(spec);
    }
    Ok(subscriptions)
}

/// Splits `name` off an entry and reads the rest as `T`.
fn named<T: DeserializeOwned>(
    section: &'static str,
    index: usize,
    entry: &Map<String, Value>,
) -> Result<(String, T), ConfigError> {
    let mut rest = entry.clone();
    let name = match rest.remove("name") {
        Some(Value::String(name)) => name,
        _ => {
            return Err(ConfigError::Invalid {
                key: section,
                message: format!("entry {index} needs a string `name`"),
            });
        }
    };
    let spec = read_entry(Value::Object(rest))
        .map_err(|error| entry_error(section, index, &name, error))?;
    Ok((name, spec))
}

/// Reads an entry as `T`, naming the key at fault (`prefetch: invalid type ...`).
fn read_entry<T: DeserializeOwned>(entry: Value) -> Result<T, Invalid> {
    serde_path_to_error::deserialize(entry).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if path == "." {
            Invalid(inner.to_string())
        } else {
            Invalid(format!("{path}: {inner}"))
        }
    })
}

fn entry_error(section: &'static str, index: usize, name: &str, error: Invalid) -> ConfigError {
    ConfigError::Invalid {
        key: section,
        message: format!("entry {index} ({name:?}): {}", error.0),
    }
}

fn not_reserved(name: &str) -> Result<(), Invalid> {
    if is_reserved(name) {
        return Err(Invalid("amq.* names are reserved by the broker".into()));
    }
    Ok(())
}
