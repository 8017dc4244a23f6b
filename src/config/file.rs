//! The optional config file: its keys, and how its tokens, topology and consumer sets are read.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::ConfigError;
use crate::auth::{Auth, Token};
use crate::messaging::consumer_sets::{ConsumerSetRequest, ConsumerSetSpec};
use crate::messaging::push::{SubscriptionRequest, SubscriptionSpec};
use crate::model::topology::{Declarations, ExchangeSpec, QueueSpec, is_reserved};
use crate::model::{Invalid, check_name};

/// The config file. Unknown keys are errors, so a typo never passes silently.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub amqp_url: Option<String>,
    /// Files for `amqps://`; flags and `CARROT_AMQP_*` variables win key by key.
    pub amqp_tls: Option<AmqpTlsConfig>,
    /// HTTPS on the listener; flags and `CARROT_TLS_*` variables win key by key.
    pub tls: Option<ListenerTlsConfig>,
    pub max_body_bytes: Option<usize>,
    /// The HTTP listener's timeouts and limits (`header_timeout`, `max_connections`, ...).
    pub http: Option<super::HttpArgs>,
    pub broker_timeout: Option<u64>,
    pub amqp_connections: Option<usize>,
    pub channel_pool_size: Option<usize>,
    pub shutdown_grace: Option<u64>,
    pub lease_default: Option<u64>,
    pub lease_max: Option<u64>,
    pub wait_max: Option<u64>,
    pub consumer_idle: Option<u64>,
    /// carrot's from_dict: declared at start and after every reconnect.
    #[serde(default)]
    pub exchanges: Vec<Map<String, Value>>,
    #[serde(default)]
    pub queues: Vec<Map<String, Value>>,
    /// Named consumer sets, addressable as `/consumers/{name}`.
    #[serde(default)]
    pub consumers: Vec<Map<String, Value>>,
    /// Push subscriptions, each as the body of `POST /subscriptions`.
    #[serde(default)]
    pub subscriptions: Vec<Value>,
    pub auth: Option<AuthConfig>,
}

/// PEM files for `amqps://`: a CA bundle, and a client certificate with its key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpTlsConfig {
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// PEM files of the HTTPS listener: its certificate (chain) and private key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsConfig {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Requests without a token are served with every permission.
    #[serde(default)]
    pub allow_anonymous: bool,
    /// `/metrics` needs a token too (any valid one).
    #[serde(default)]
    pub protect_metrics: bool,
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
}

/// A bearer token; the secret is given inline, by environment variable or by file (a mounted Secret).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    pub token: Option<String>,
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    /// Regexes over exchange and queue names, as in RabbitMQ; empty grants nothing.
    #[serde(default)]
    pub configure: String,
    #[serde(default)]
    pub write: String,
    #[serde(default)]
    pub read: String,
}

/// Resolves the tokens, reading secrets from the environment or files as configured.
pub(super) fn read_auth(config: Option<&AuthConfig>) -> Result<Auth, ConfigError> {
    let Some(config) = config else {
        return Ok(Auth::default());
    };
    let mut tokens = Vec::new();
    for (index, entry) in config.tokens.iter().enumerate() {
        let invalid = |message: String| ConfigError::Invalid {
            key: "auth.tokens",
            message: format!("entry {index} ({:?}): {message}", entry.name),
        };
        let secret = match (&entry.token, &entry.token_env, &entry.token_file) {
            (Some(token), None, None) => token.clone(),
            (None, Some(variable), None) => std::env::var(variable)
                .map_err(|_| invalid(format!("environment variable {variable} is not set")))?,
            (None, None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|error| invalid(format!("cannot read {}: {error}", path.display())))?
                .trim()
                .to_owned(),
            _ => {
                return Err(invalid(
                    "give exactly one of token, token_env, token_file".into(),
                ));
            }
        };
        let token = Token::new(
            &entry.name,
            &secret,
            &entry.configure,
            &entry.write,
            &entry.read,
        )
        .map_err(invalid)?;
        tokens.push(token);
    }
    Ok(Auth::new(
        tokens,
        config.allow_anonymous,
        config.protect_metrics,
    ))
}

/// What the file declares, for the broker, the consumer sets and the push subscriptions.
pub(super) struct FileTopology {
    pub declarations: Declarations,
    pub consumer_sets: Vec<(String, ConsumerSetSpec)>,
    pub subscriptions: Vec<SubscriptionSpec>,
}

/// Reads the file's exchanges, queues, consumer sets and subscriptions, naming the entry at fault.
pub(super) fn file_topology(file: &FileConfig) -> Result<FileTopology, ConfigError> {
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
    Ok(FileTopology {
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

pub(super) fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    yaml_serde::from_str(&text).map_err(|error| ConfigError::Parse {
        path: path.to_owned(),
        message: error.to_string(),
    })
}
