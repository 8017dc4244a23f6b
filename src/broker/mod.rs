//! The only module that speaks AMQP: pooled connections and channels, readiness, publishing.

mod channels;
mod consume;
mod error;
pub mod fields;
mod health;
mod publish;
mod topology;

use std::sync::Arc;
use std::time::Duration;

use deadpool_lapin::{PoolConfig, Runtime, Timeouts};
use lapin::ConnectionProperties;
use tokio_util::sync::CancellationToken;

pub use consume::{AckMode, Delivered, DeliveryHandle, Taken};
pub use error::Error;

use channels::{ChannelPool, PooledChannel};
use consume::QueueChannels;
use health::Health;

/// How the gateway reaches its broker.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    pub url: String,
    pub connections: usize,
    pub channels: usize,
    pub timeout: Duration,
}

/// Cheap to clone: every clone shares the same pools and health.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    connections: deadpool_lapin::Pool,
    channels: ChannelPool,
    /// Channels that hand out messages, one per queue.
    queue_channels: QueueChannels,
    health: Health,
    timeout: Duration,
    /// For the short-lived connections that declare plugin exchange types.
    url: String,
}

impl Broker {
    /// Builds the pools without connecting; `supervise` connects and keeps reconnecting.
    pub fn new(settings: &BrokerSettings) -> Result<Self, Error> {
        let config = deadpool_lapin::Config {
            url: Some(settings.url.clone()),
            pool: Some(PoolConfig {
                max_size: settings.connections,
                timeouts: Timeouts {
                    wait: Some(settings.timeout),
                    create: Some(settings.timeout),
                    recycle: Some(settings.timeout),
                },
                ..PoolConfig::default()
            }),
        };
        let connections = config
            .create_pool(connection_properties, Runtime::Tokio1)
            .map_err(|error| Error::Unavailable(error.to_string()))?;
        let channels =
            channels::channel_pool(connections.clone(), settings.channels, settings.timeout);
        Ok(Self {
            inner: Arc::new(Inner {
                connections,
                channels,
                queue_channels: QueueChannels::default(),
                health: Health::default(),
                timeout: settings.timeout,
                url: settings.url.clone(),
            }),
        })
    }

    /// Connects, then watches the connection and reconnects with backoff, until `shutdown`.
    pub async fn supervise(&self, shutdown: CancellationToken) {
        let connections = &self.inner.connections;
        self.inner
            .health
            .supervise(shutdown, || async {
                let connection = connections
                    .get()
                    .await
                    .map_err(|error| channels::connection_error(error).to_string())?;
                if connection.status().connected() {
                    Ok(())
                } else {
                    Err("the broker connection is closed".to_owned())
                }
            })
            .await;
    }

    pub fn is_ready(&self) -> bool {
        self.inner.health.is_ready()
    }

    pub fn retry_after(&self) -> Duration {
        self.inner.health.retry_after()
    }

    pub fn last_error(&self) -> Option<String> {
        self.inner.health.last_error()
    }

    /// Closes every pooled channel and connection; used once serving has stopped.
    pub fn close(&self) {
        self.drop_queue_channels();
        self.inner.channels.close();
        self.inner.connections.close();
    }

    async fn checkout(&self) -> Result<PooledChannel, Error> {
        if !self.is_ready() {
            return Err(Error::Unavailable(
                self.last_error()
                    .unwrap_or_else(|| "not connected to the broker yet".to_owned()),
            ));
        }
        self.inner
            .channels
            .get()
            .await
            .map_err(|error| self.observe(channels::pool_error(error, self.inner.timeout)))
    }

    /// Lets the supervisor know at once when a request saw the connection die.
    fn observe(&self, error: Error) -> Error {
        if error.is_unavailable() {
            self.inner.health.report_outage(&error.to_string());
        }
        error
    }
}

fn connection_properties() -> ConnectionProperties {
    // No lapin auto-recovery: deadpool replaces dead connections, and the two together leak.
    ConnectionProperties::default().with_connection_name("carrot-gateway".into())
}
