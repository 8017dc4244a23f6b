//! The broker section: which RabbitMQ, over how many connections and channels, how long to wait
//! for it, and the files for `amqps://`. Top-level keys of the file, plus its `amqp_tls:`.

use std::time::Duration;

use super::settings::settings;
use super::urls::AmqpUrls;
use super::{ConfigError, at_least, at_least_a_second};
use crate::broker::BrokerSettings;
use crate::net::tls::BrokerTls;

settings! {
    /// The broker connection.
    #[command(next_help_heading = "Broker")]
    pub struct BrokerArgs;

    /// The broker connection, resolved.
    pub struct BrokerConfig {
        /// Broker URL; its path selects the vhost. For a cluster, each node's URL, separated
        /// by commas: connections are spread over them and move to another when one is lost.
        #[arg(long, env = "CARROT_AMQP_URL", hide_env_values = true, value_name = "URL[,URL...]")]
        pub amqp_url: AmqpUrls = "amqp://guest:guest@127.0.0.1:5672/%2f",

        /// AMQP connections shared by all requests.
        #[arg(long, env = "CARROT_AMQP_CONNECTIONS")]
        pub amqp_connections: usize = "2",

        /// Most publishing channels open at once; a request waits for a free one.
        #[arg(long, env = "CARROT_CHANNEL_POOL_SIZE")]
        pub channel_pool_size: usize = "256",

        /// Shared confirm channels that concurrent single-message publishes coalesce on; 0
        /// gives every publish a channel of its own.
        #[arg(long, env = "CARROT_PUBLISH_LANES")]
        pub publish_lanes: usize = "4",

        /// Messages a busy queue's prefetch window holds for concurrent `next` and `messages`
        /// requests; 0 takes every message by basic.get.
        #[arg(long, env = "CARROT_CONSUME_WINDOW")]
        pub consume_window: u16 = "128",

        /// How long a publish's answer is kept for retries with the same `Idempotency-Key`.
        #[arg(long, env = "CARROT_IDEMPOTENCY_TTL", value_name = "DURATION")]
        pub idempotency_ttl: Duration = "10m",

        /// Most `Idempotency-Key` answers kept; past it the oldest are forgotten first.
        #[arg(long, env = "CARROT_IDEMPOTENCY_KEYS")]
        pub idempotency_keys: usize = "100000",

        /// Keep `Idempotency-Key` answers in this Redis (redis://host:port/db) so that every
        /// replica sees them; unset: each process keeps its own.
        #[arg(long, env = "CARROT_IDEMPOTENCY_STORE", hide_env_values = true, value_name = "URL")]
        pub idempotency_store: String,

        /// Time to wait for a publisher confirm or a broker reply before answering 504.
        #[arg(long, env = "CARROT_BROKER_TIMEOUT", value_name = "DURATION")]
        pub broker_timeout: Duration = "10s",
    }
    also {
        /// CA and client certificate for `amqps://`, read at start.
        pub tls: BrokerTls,
    }
}

impl BrokerConfig {
    /// What `Broker::new` takes.
    pub fn settings(&self) -> BrokerSettings {
        BrokerSettings {
            urls: self.amqp_url.0.clone(),
            connections: self.amqp_connections,
            channels: self.channel_pool_size,
            lanes: self.publish_lanes,
            window: self.consume_window,
            timeout: self.broker_timeout,
            tls: self.tls.clone(),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        at_least("amqp_connections", self.amqp_connections, 1)?;
        at_least("channel_pool_size", self.channel_pool_size, 1)?;
        at_least("idempotency_keys", self.idempotency_keys, 1)?;
        at_least_a_second("broker_timeout", self.broker_timeout)?;
        if let Some(store) = &self.idempotency_store
            && !store.starts_with("redis://")
        {
            return Err(ConfigError::Invalid {
                key: "idempotency_store",
                message: "must be a redis:// URL, e.g. redis://redis:6379/0".into(),
            });
        }
        for url in &self.amqp_url.0 {
            check_url(url, self.tls.is_set())?;
        }
        let vhosts: std::collections::BTreeSet<String> = self
            .amqp_url
            .0
            .iter()
            .filter_map(|url| url.parse::<lapin::uri::AMQPUri>().ok())
            .map(|uri| uri.vhost)
            .collect();
        if vhosts.len() > 1 {
            return Err(ConfigError::Invalid {
                key: "amqp_url",
                message: format!(
                    "the URLs name different vhosts ({}); several URLs are the nodes of one \
                     cluster and must all name the same vhost",
                    vhosts.into_iter().collect::<Vec<_>>().join(", ")
                ),
            });
        }
        Ok(())
    }
}

fn check_url(url: &str, tls_set: bool) -> Result<(), ConfigError> {
    if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
        return Err(ConfigError::Invalid {
            key: "amqp_url",
            message: "must start with amqp:// or amqps://".into(),
        });
    }
    crate::broker::check_url(url).map_err(|message| ConfigError::Invalid {
        key: "amqp_url",
        message,
    })?;
    if tls_set && !url.starts_with("amqps://") {
        return Err(ConfigError::Invalid {
            key: "amqp_tls",
            message: "a CA file or client certificate is set, but amqp_url is not amqps://; \
                      use amqps:// (RabbitMQ's TLS port is 5671 by default) or drop them"
                .into(),
        });
    }
    Ok(())
}
