//! Settings: command-line flags, then `CARROT_*` variables, then the optional YAML file, then
//! defaults; one section per owner (server, broker, consume, http, auth) and the file's topology.

mod auth;
mod broker;
mod cluster;
mod consume;
mod duration;
mod file;
mod http;
mod server;
mod settings;
mod tls;
mod topology;
mod urls;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

pub use auth::{AuthArgs, AuthConfig, TokenConfig};
pub use broker::{BrokerArgs, BrokerConfig};
pub use cluster::{ClusterArgs, ClusterConfig};
pub use consume::{ConsumeArgs, ConsumeConfig};
pub use duration::Seconds;
pub use http::{HttpArgs, HttpConfig};
pub use server::{LogFormat, ServerArgs, ServerConfig};
pub use tls::{AmqpTlsArgs, AmqpTlsFiles, ListenerTlsArgs, ListenerTlsFiles};
pub use urls::AmqpUrls;

use crate::messaging::consumer_sets::ConsumerSetSpec;
use crate::messaging::push::SubscriptionSpec;
use crate::model::topology::Declarations;

/// HTTP/REST gateway that puts carrot's Publisher and Consumer in front of RabbitMQ.
#[derive(Debug, Parser)]
#[command(
    name = "carrot-gateway",
    version,
    after_help = "Durations take 30s, 15m, 1h, a combination such as 1h 30m, or a number of seconds."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// YAML (or JSON) config file; flags and CARROT_* variables override its keys.
    #[arg(long, env = "CARROT_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub server: ServerArgs,

    #[command(flatten)]
    pub tls: ListenerTlsArgs,

    #[command(flatten)]
    pub broker: BrokerArgs,

    #[command(flatten)]
    pub amqp_tls: AmqpTlsArgs,

    #[command(flatten)]
    pub consume: ConsumeArgs,

    #[command(flatten)]
    pub http: HttpArgs,

    #[command(flatten)]
    pub auth: AuthArgs,

    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve HTTP (the default).
    Serve,
    /// Print the OpenAPI document and exit.
    Openapi,
}

/// Everything the gateway needs to run, validated. Tests build it directly:
/// `Config { broker: BrokerConfig { amqp_url, ..Default::default() }, ..Config::default() }`.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub server: ServerConfig,
    pub broker: BrokerConfig,
    pub consume: ConsumeConfig,
    pub http: HttpConfig,
    pub auth: AuthConfig,
    pub cluster: ClusterConfig,
    pub declarations: Declarations,
    pub consumer_sets: Vec<(String, ConsumerSetSpec)>,
    pub subscriptions: Vec<SubscriptionSpec>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
}

impl Config {
    /// Merges flags and variables (already in `cli`) over the file over the defaults.
    pub fn load(cli: &Cli) -> Result<Self, ConfigError> {
        let file = match &cli.config {
            Some(path) => file::read(path)?,
            None => file::FileConfig::default(),
        };
        let topology = topology::read(&file.topology)?;
        let tokens = file.auth.read_tokens()?;
        let broker_tls = cli.amqp_tls.clone().or(file.amqp_tls).resolve().read()?;
        let listener_tls = cli.tls.clone().or(file.tls).resolve().read()?;
        let config = Config {
            server: ServerConfig {
                tls: listener_tls,
                ..cli.server.clone().or(file.server).resolve()
            },
            broker: BrokerConfig {
                tls: broker_tls,
                ..cli.broker.clone().or(file.broker).resolve()
            },
            consume: cli.consume.clone().or(file.consume).resolve(),
            http: cli.http.clone().or(file.http).resolve(),
            auth: AuthConfig {
                tokens: tokens.into(),
                ..cli.auth.clone().or(file.auth.args).resolve()
            },
            cluster: cli.cluster.clone().or(file.cluster).resolve(),
            declarations: topology.declarations,
            consumer_sets: topology.consumer_sets,
            subscriptions: topology.subscriptions,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks each section, then what one section needs of another.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.http.validate()?;
        self.broker.validate()?;
        self.consume.validate()?;
        self.cluster.validate()?;
        if let Some(endpoint) = &self.server.otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(ConfigError::Invalid {
                key: "otlp_endpoint",
                message: format!(
                    "{endpoint:?} must be an http:// or https:// base URL, e.g. \
                     http://collector:4318"
                ),
            });
        }
        let listen = self.server.listen;
        if !listen.ip().is_loopback()
            && !self.auth.allow_anonymous
            && !self.auth.tokens.has_tokens()
        {
            return Err(ConfigError::Invalid {
                key: "listen",
                message: format!(
                    "{listen} is not a loopback address and no auth tokens are configured; \
                     listen on 127.0.0.1 or set --allow-anonymous / CARROT_ALLOW_ANONYMOUS=true \
                     to serve anyone who can reach the port",
                ),
            });
        }
        Ok(())
    }
}

fn at_least(key: &'static str, value: usize, min: usize) -> Result<(), ConfigError> {
    if value < min {
        return Err(ConfigError::Invalid {
            key,
            message: format!("must be at least {min}"),
        });
    }
    Ok(())
}

fn at_least_a_second(key: &'static str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(ConfigError::Invalid {
            key,
            message: "must be at least 1 second".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
