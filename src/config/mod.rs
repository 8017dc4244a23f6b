//! Settings: command-line flags, then `CARROT_*` variables, then the optional YAML file, then defaults.

mod file;
mod http;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

pub use file::{AmqpTlsConfig, AuthConfig, FileConfig, ListenerTlsConfig, TokenConfig};
use file::{file_topology, read_auth, read_file};
pub use http::{HttpArgs, HttpSettings};

use crate::auth::Auth;
use crate::messaging::consumer_sets::ConsumerSetSpec;
use crate::messaging::push::SubscriptionSpec;
use crate::model::topology::Declarations;
use crate::net::tls::{BrokerTls, ListenerTls};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// HTTP/REST gateway that puts carrot's Publisher and Consumer in front of RabbitMQ.
#[derive(Debug, Parser)]
#[command(name = "carrot-gateway", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// YAML (or JSON) config file; flags and CARROT_* variables override its keys.
    #[arg(long, env = "CARROT_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// Address the HTTP listener binds [default: 127.0.0.1:8080].
    #[arg(long, env = "CARROT_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// Broker URL; its path selects the vhost [default: amqp://guest:guest@127.0.0.1:5672/%2f].
    #[arg(long, env = "CARROT_AMQP_URL", hide_env_values = true)]
    pub amqp_url: Option<String>,

    /// PEM file of CA certificates that amqps:// trusts on top of the system's roots.
    #[arg(long, env = "CARROT_AMQP_CA_FILE")]
    pub amqp_ca_file: Option<PathBuf>,

    /// PEM certificate (chain) presented to the broker over amqps://; needs --amqp-client-key.
    #[arg(long, env = "CARROT_AMQP_CLIENT_CERT")]
    pub amqp_client_cert: Option<PathBuf>,

    /// PEM private key of --amqp-client-cert (unencrypted PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "CARROT_AMQP_CLIENT_KEY")]
    pub amqp_client_key: Option<PathBuf>,

    /// PEM certificate (chain) of the listener; with --tls-key the gateway serves HTTPS only.
    #[arg(long, env = "CARROT_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert (unencrypted PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "CARROT_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// Largest accepted request body in bytes; larger bodies get 413 [default: 8388608].
    #[arg(long, env = "CARROT_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,

    /// Seconds to wait for a publisher confirm or a broker reply before answering 504 [default: 10].
    #[arg(long, env = "CARROT_BROKER_TIMEOUT")]
    pub broker_timeout: Option<u64>,

    /// AMQP connections shared by all requests [default: 2].
    #[arg(long, env = "CARROT_AMQP_CONNECTIONS")]
    pub amqp_connections: Option<usize>,

    /// Most publishing channels open at once; a request waits for a free one [default: 256].
    #[arg(long, env = "CARROT_CHANNEL_POOL_SIZE")]
    pub channel_pool_size: Option<usize>,

    /// Serve without any token even on a non-loopback address.
    #[arg(long, env = "CARROT_ALLOW_ANONYMOUS", num_args = 0..=1, default_missing_value = "true")]
    pub allow_anonymous: Option<bool>,

    /// Seconds in-flight requests get to finish after SIGTERM [default: 25].
    #[arg(long, env = "CARROT_SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<u64>,

    /// Seconds a leased message stays out of its queue unless the request says [default: 30].
    #[arg(long, env = "CARROT_LEASE_DEFAULT")]
    pub lease_default: Option<u64>,

    /// Longest lease a client may ask for; keep it below RabbitMQ's consumer_timeout [default: 900].
    #[arg(long, env = "CARROT_LEASE_MAX")]
    pub lease_max: Option<u64>,

    /// Longest long poll (`wait=`) a client may ask for, in seconds [default: 20].
    #[arg(long, env = "CARROT_WAIT_MAX")]
    pub wait_max: Option<u64>,

    /// Seconds after which an unused consumer set is deleted and its messages returned [default: 300].
    #[arg(long, env = "CARROT_CONSUMER_IDLE")]
    pub consumer_idle: Option<u64>,

    /// Log line format.
    #[arg(long, env = "CARROT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub http: HttpArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve HTTP (the default).
    Serve,
    /// Print the OpenAPI document and exit.
    Openapi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Everything the gateway needs to run, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub amqp_url: String,
    /// CA and client certificate for `amqps://`, read at start.
    pub amqp_tls: BrokerTls,
    /// Certificate and key of the HTTPS listener; `None` serves plain HTTP.
    pub tls: Option<ListenerTls>,
    pub max_body_bytes: usize,
    /// Timeouts and sizes that bound what one client connection costs.
    pub http: HttpSettings,
    pub broker_timeout: Duration,
    pub amqp_connections: usize,
    pub channel_pool_size: usize,
    pub allow_anonymous: bool,
    pub shutdown_grace: Duration,
    pub lease_default: Duration,
    pub lease_max: Duration,
    pub wait_max: Duration,
    pub consumer_idle: Duration,
    pub declarations: Declarations,
    pub consumer_sets: Vec<(String, ConsumerSetSpec)>,
    pub subscriptions: Vec<SubscriptionSpec>,
    pub auth: Arc<Auth>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN
                .parse()
                .expect("the default listen address parses"),
            amqp_url: DEFAULT_AMQP_URL.to_owned(),
            amqp_tls: BrokerTls::default(),
            tls: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            http: HttpSettings::default(),
            broker_timeout: Duration::from_secs(10),
            amqp_connections: 2,
            channel_pool_size: 256,
            allow_anonymous: false,
            shutdown_grace: Duration::from_secs(25),
            lease_default: Duration::from_secs(30),
            // RabbitMQ's default consumer_timeout is 30 minutes; stay well below it.
            lease_max: Duration::from_secs(900),
            wait_max: Duration::from_secs(20),
            consumer_idle: Duration::from_secs(300),
            declarations: Declarations::default(),
            consumer_sets: Vec::new(),
            subscriptions: Vec::new(),
            auth: Arc::new(Auth::default()),
        }
    }
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
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let defaults = Config::default();
        let topology = file_topology(&file)?;
        let auth = Arc::new(read_auth(file.auth.as_ref())?);
        let amqp_tls = tls::broker_tls(cli, file.amqp_tls.as_ref())?;
        let listener_tls = tls::listener_tls(cli, file.tls.as_ref())?;
        let config = Config {
            listen: cli.listen.or(file.listen).unwrap_or(defaults.listen),
            amqp_url: cli
                .amqp_url
                .clone()
                .or(file.amqp_url)
                .unwrap_or(defaults.amqp_url),
            amqp_tls,
            tls: listener_tls,
            max_body_bytes: cli
                .max_body_bytes
                .or(file.max_body_bytes)
                .unwrap_or(defaults.max_body_bytes),
            http: HttpSettings::resolve(&cli.http.clone().or(file.http))?,
            broker_timeout: cli
                .broker_timeout
                .or(file.broker_timeout)
                .map_or(defaults.broker_timeout, Duration::from_secs),
            amqp_connections: cli
                .amqp_connections
                .or(file.amqp_connections)
                .unwrap_or(defaults.amqp_connections),
            channel_pool_size: cli
                .channel_pool_size
                .or(file.channel_pool_size)
                .unwrap_or(defaults.channel_pool_size),
            allow_anonymous: cli
                .allow_anonymous
                .or(file.auth.as_ref().map(|auth| auth.allow_anonymous))
                .unwrap_or(defaults.allow_anonymous),
            shutdown_grace: cli
                .shutdown_grace
                .or(file.shutdown_grace)
                .map_or(defaults.shutdown_grace, Duration::from_secs),
            lease_default: cli
                .lease_default
                .or(file.lease_default)
                .map_or(defaults.lease_default, Duration::from_secs),
            lease_max: cli
                .lease_max
                .or(file.lease_max)
                .map_or(defaults.lease_max, Duration::from_secs),
            wait_max: cli
                .wait_max
                .or(file.wait_max)
                .map_or(defaults.wait_max, Duration::from_secs),
            consumer_idle: cli
                .consumer_idle
                .or(file.consumer_idle)
                .map_or(defaults.consumer_idle, Duration::from_secs),
            declarations: topology.declarations,
            consumer_sets: topology.consumer_sets,
            subscriptions: topology.subscriptions,
            auth,
        };
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = |key, value: usize| {
            if value == 0 {
                Err(ConfigError::Invalid {
                    key,
                    message: "must be at least 1".into(),
                })
            } else {
                Ok(())
            }
        };
        positive("max_body_bytes", self.max_body_bytes)?;
        positive("amqp_connections", self.amqp_connections)?;
        positive("channel_pool_size", self.channel_pool_size)?;
        if self.broker_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                key: "broker_timeout",
                message: "must be at least 1 second".into(),
            });
        }
        if self.lease_default.is_zero() || self.lease_default > self.lease_max {
            return Err(ConfigError::Invalid {
                key: "lease_default",
                message: format!(
                    "must be between 1 and lease_max ({} s)",
                    self.lease_max.as_secs()
                ),
            });
        }
        if !(self.amqp_url.starts_with("amqp://") || self.amqp_url.starts_with("amqps://")) {
            return Err(ConfigError::Invalid {
                key: "amqp_url",
                message: "must start with amqp:// or amqps://".into(),
            });
        }
        crate::broker::check_url(&self.amqp_url).map_err(|message| ConfigError::Invalid {
            key: "amqp_url",
            message,
        })?;
        if self.amqp_tls.is_set() && !self.amqp_url.starts_with("amqps://") {
            return Err(ConfigError::Invalid {
                key: "amqp_tls",
                message: "a CA file or client certificate is set, but amqp_url is not amqps://; \
                          use amqps:// (RabbitMQ's TLS port is 5671 by default) or drop them"
                    .into(),
            });
        }
        if !self.listen.ip().is_loopback() && !self.allow_anonymous && !self.auth.has_tokens() {
            return Err(ConfigError::Invalid {
                key: "listen",
                message: format!(
                    "{} is not a loopback address and no auth tokens are configured; \
                     listen on 127.0.0.1 or set --allow-anonymous / CARROT_ALLOW_ANONYMOUS=true \
                     to serve anyone who can reach the port",
                    self.listen
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::parse_from(std::iter::once("carrot-gateway").chain(args.iter().copied()))
    }

    fn write_config(text: &str) -> tempfile_path::TempPath {
        tempfile_path::TempPath::with(text)
    }

    /// A file removed on drop, enough for these tests without another dependency.
    mod tempfile_path {
        pub struct TempPath(pub std::path::PathBuf);
        impl TempPath {
            pub fn with(text: &str) -> Self {
                let path = std::env::temp_dir().join(format!(
                    "carrot-config-{}.yaml",
                    uuid::Uuid::new_v4().simple()
                ));
                std::fs::write(&path, text).expect("temp dir is writable");
                Self(path)
            }
        }
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn defaults_match_the_contract() {
        let config = Config::load(&cli(&[])).expect("defaults are valid");
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.amqp_url, "amqp://guest:guest@127.0.0.1:5672/%2f");
        assert_eq!(config.max_body_bytes, 8 * 1024 * 1024);
    }

    #[test]
    fn flags_win_over_the_file() {
        let file = write_config("listen: 127.0.0.1:9000\nmax_body_bytes: 1024\n");
        let path = file.0.to_str().expect("utf-8 temp path");
        let config = Config::load(&cli(&["--config", path, "--listen", "127.0.0.1:9001"]))
            .expect("valid config");
        assert_eq!(config.listen.port(), 9001);
        assert_eq!(config.max_body_bytes, 1024);
    }

    #[test]
    fn unknown_file_keys_are_named() {
        let file = write_config("lisen: 127.0.0.1:9000\n");
        let path = file.0.to_str().expect("utf-8 temp path");
        let error = Config::load(&cli(&["--config", path])).expect_err("typo is refused");
        assert!(error.to_string().contains("lisen"), "{error}");
    }

    #[test]
    fn file_topology_is_read_with_carrot_defaults() {
        let file = write_config(
            "exchanges:\n  - {name: links, type: topic}\n\
             queues:\n  - name: webshot\n    arguments: {x-max-priority: 9}\n    \
             bindings: [{exchange: links, routing_key: links.webshot}]\n\
             consumers:\n  - {name: set, queues: [webshot], prefetch: 5, ack: auto}\n",
        );
        let path = file.0.to_str().expect("utf-8 temp path");
        let config = Config::load(&cli(&["--config", path])).expect("valid config");
        let (name, exchange) = &config.declarations.exchanges[0];
        assert_eq!(
            (name.as_str(), exchange.kind.as_str(), exchange.durable),
            ("links", "topic", true)
        );
        let (name, queue) = &config.declarations.queues[0];
        assert_eq!(name, "webshot");
        assert_eq!(queue.arguments["x-max-priority"], 9);
        assert_eq!(queue.bindings[0].routing_key, "links.webshot");
        assert_eq!(config.consumer_sets[0].1.prefetch, 5);
    }

    #[test]
    fn bad_topology_entries_are_named() {
        for (text, needle) in [
            (
                "exchanges:\n  - {name: x, type: nonsense}\n",
                "exchanges: entry 0 (\"x\")",
            ),
            ("queues:\n  - {name: q, durabel: true}\n", "durabel"),
            ("queues:\n  - {durable: true}\n", "needs a string `name`"),
            (
                "consumers:\n  - {name: c, queues: []}\n",
                "consumers: entry 0",
            ),
            ("subscriptions:\n  - {name: s}\n", "missing field `queue`"),
            (
                "subscriptions:\n  - {name: s, queue: q, url: \"ftp://x\"}\n",
                "subscriptions: entry 0 (\"s\"): url",
            ),
            ("queues:\n  - {name: amq.q}\n", "reserved"),
            (
                "consumers:\n  - {name: x, queues: [q], prefetch: \"ten\"}\n",
                "consumers: entry 0 (\"x\"): prefetch: invalid type",
            ),
            (
                "subscriptions:\n  - {name: s, queue: q, url: \"http://h/\", concurrency: many}\n",
                "subscriptions: entry 0 (\"s\"): concurrency: invalid type",
            ),
            (
                "queues:\n  - {name: q, arguments: {x-queue-type: stream}}\n",
                "arguments.x-queue-type",
            ),
        ] {
            let file = write_config(text);
            let path = file.0.to_str().expect("utf-8 temp path");
            let error = Config::load(&cli(&["--config", path])).expect_err(text);
            assert!(error.to_string().contains(needle), "{error} lacks {needle}");
        }
    }

    #[test]
    fn tokens_come_from_the_file_or_a_secret_file() {
        let secret = write_config("from-a-file\n");
        let file = write_config(&format!(
            "auth:\n  tokens:\n    - {{name: a, token: s3cret, write: \"^a\\\\.\"}}\n    \
             - {{name: b, token_file: {}, read: \".*\"}}\n",
            secret.0.display()
        ));
        let path = file.0.to_str().expect("utf-8 temp path");
        let config = Config::load(&cli(&["--config", path, "--listen", "0.0.0.0:8080"]))
            .expect("tokens allow a public listen address");
        let principal = config
            .auth
            .authenticate(Some("Bearer from-a-file"))
            .expect("file token");
        assert_eq!(principal.name(), Some("b"));
        assert!(config.auth.authenticate(Some("Bearer s3cret")).is_ok());
    }

    #[test]
    fn a_vhost_the_broker_could_not_quote_safely_is_refused() {
        let error = Config::load(&cli(&[
            "--amqp-url",
            "amqp://guest:guest@127.0.0.1/caf%C3%A9",
        ]))
        .expect_err("refused");
        assert!(
            error
                .to_string()
                .starts_with("amqp_url: the vhost \"café\""),
            "{error}"
        );
        Config::load(&cli(&["--amqp-url", "amqp://guest:guest@127.0.0.1/prod"]))
            .expect("an ASCII vhost is fine");
    }

    #[test]
    fn anonymous_public_listen_is_refused_unless_allowed() {
        let error = Config::load(&cli(&["--listen", "0.0.0.0:8080"])).expect_err("refused");
        assert!(error.to_string().contains("--allow-anonymous"), "{error}");
        let config = Config::load(&cli(&["--listen", "0.0.0.0:8080", "--allow-anonymous"]))
            .expect("allowed explicitly");
        assert!(config.allow_anonymous);
    }
}
