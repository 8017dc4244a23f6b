//! The only module that speaks AMQP: pooled connections and channels, readiness, publishing.

mod channels;
mod connector;
mod consume;
mod delivery;
mod discard;
mod error;
pub mod fields;
mod health;
mod lanes;
mod publish;
mod queue_consumers;
mod reply;
mod streams;
mod topology;
mod window;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use delivery::{AckMode, Delivered, DeliveryHandle, Taken};
pub use discard::Sifted;
pub use error::Error;
pub use queue_consumers::{Consumed, QueueConsumers};
pub use reply::{REPLY_TO, Requested};
pub use streams::{StreamOffset, not_a_stream};
pub use window::Taking;

use channels::{ChannelPool, PooledChannel};
use connector::{ConnectionPool, ConnectionRegistry, Connector};
use consume::QueueChannels;
use health::Health;

use crate::model::topology::Declarations;
use crate::net::tls::BrokerTls;

/// How the gateway reaches its broker.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// One URL per node of the broker's cluster (often just one).
    pub urls: Vec<String>,
    pub connections: usize,
    pub channels: usize,
    /// Shared channels for single-message publishes; 0 gives each its own.
    pub lanes: usize,
    /// Messages a busy queue's prefetch window holds; 0 takes every message by basic.get.
    pub window: u16,
    pub timeout: Duration,
    /// CA and client certificate for `amqps://` URLs.
    pub tls: BrokerTls,
}

/// Checks an AMQP URL before the first connection: it parses, and RabbitMQ's error replies can
/// quote its vhost and user safely (see `message::quoted`), which needs them ASCII.
pub fn check_url(url: &str) -> Result<(), String> {
    let uri: lapin::uri::AMQPUri = url.parse()?;
    if !uri.vhost.is_ascii() {
        return Err(format!(
            "the vhost {:?} must be ASCII: RabbitMQ quotes it in error replies, which it cuts \
             at 255 bytes, and a cut inside a character breaks the connection",
            uri.vhost
        ));
    }
    if !uri.authority.userinfo.username.is_ascii() {
        return Err(
            "the user name must be ASCII: RabbitMQ quotes it in error replies, which it cuts \
             at 255 bytes, and a cut inside a character breaks the connection"
                .to_owned(),
        );
    }
    Ok(())
}

/// One AMQP connection as `/readyz` shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ConnectionReport {
    /// Counts connections since the gateway started, from 1.
    pub id: u64,
    /// The broker node it is connected to, as `host:port` of its URL.
    pub node: String,
    pub channels_opened: u32,
    /// Channels the broker closed because it refused a request on them.
    pub channels_closed_by_broker: u64,
    /// Opens no more channels (its channel ids are used up); closes with its last channel.
    pub retired: bool,
}

/// Cheap to clone: every clone shares the same pools and health.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
    /// The supervisor declares topology before the gateway reports ready.
    ignore_readiness: bool,
}

struct Inner {
    connections: ConnectionPool,
    channels: ChannelPool,
    /// Channels that hand out messages, one per queue.
    queue_channels: QueueChannels,
    health: Health,
    timeout: Duration,
    /// For the short-lived connections that declare plugin exchange types.
    connector: Arc<Connector>,
    /// Queues found to be streams, on which basic.get and purge would close a connection.
    streams: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Every connection opened, and the ones still alive.
    registry: Arc<ConnectionRegistry>,
    /// How many connections had been opened when the topology was last declared.
    declared_for: AtomicU64,
    /// Shared channels that single-message publishes coalesce on.
    lanes: lanes::Lanes,
    /// Consumers that serve busy queues' takes.
    windows: window::Windows,
    /// Channels that publish requests and receive their replies (direct reply-to).
    replies: reply::ReplyChannels,
}

impl Broker {
    /// Builds the pools without connecting; `supervise` connects and keeps reconnecting.
    pub fn new(settings: &BrokerSettings) -> Self {
        let connector = Arc::new(Connector::new(&settings.urls, &settings.tls));
        let registry = Arc::new(ConnectionRegistry::default());
        let connections = connector::connection_pool(
            connector.clone(),
            settings.connections,
            settings.timeout,
            registry.clone(),
        );
        let channels =
            channels::channel_pool(connections.clone(), settings.channels, settings.timeout);
        let lanes = lanes::Lanes::new(settings.lanes, connections.clone(), settings.timeout);
        Self {
            inner: Arc::new(Inner {
                connections,
                channels,
                queue_channels: QueueChannels::default(),
                health: Health::default(),
                timeout: settings.timeout,
                connector,
                streams: std::sync::Mutex::default(),
                registry,
                declared_for: AtomicU64::new(0),
                lanes,
                windows: window::Windows::new(settings.window),
                replies: reply::ReplyChannels::default(),
            }),
            ignore_readiness: false,
        }
    }

    /// Connects, then watches the connection and reconnects with backoff, until `shutdown`.
    ///
    /// After every new connection the `declarations` are declared again before the gateway
    /// reports ready, so a broker that restarted without durable state is usable again.
    pub async fn supervise(&self, shutdown: CancellationToken, declarations: &Declarations) {
        let supervisor = Broker {
            inner: self.inner.clone(),
            ignore_readiness: true,
        };
        self.inner
            .health
            .supervise(shutdown, || supervisor.probe(declarations))
            .await;
    }

    async fn probe(&self, declarations: &Declarations) -> Result<(), String> {
        // Every connection at once: the pool then opens all of them, spread over the nodes, and
        // replaces one lost with a node at once, not when a request next needs it.
        let size = self.inner.connections.status().max_size;
        let held =
            futures_util::future::try_join_all((0..size).map(|_| self.inner.connections.get()))
                .await
                .map_err(|error| channels::connection_error(error).to_string())?;
        if held
            .iter()
            .any(|connection| !connection.status().connected())
        {
            return Err("the broker connection is closed".to_owned());
        }
        drop(held);
        // A new connection may face a broker that lost its topology.
        let opened = self.inner.registry.opened();
        if opened != self.inner.declared_for.load(Ordering::Acquire) {
            self.declare_all(declarations)
                .await
                .map_err(|error| format!("declaring the configured topology failed: {error}"))?;
            self.inner.declared_for.store(opened, Ordering::Release);
        }
        Ok(())
    }

    async fn declare_all(&self, declarations: &Declarations) -> Result<(), Error> {
        for (name, spec) in &declarations.exchanges {
            self.declare_exchange(name, spec).await?;
        }
        for (name, spec) in &declarations.queues {
            self.declare_queue(name, spec).await?;
        }
        if !declarations.exchanges.is_empty() || !declarations.queues.is_empty() {
            tracing::info!(
                exchanges = declarations.exchanges.len(),
                queues = declarations.queues.len(),
                "declared the configured topology"
            );
        }
        Ok(())
    }

    /// Sets the gauges that describe the broker side, just before a scrape.
    pub fn report_gauges(&self) {
        use crate::metrics as m;
        let channels = self.inner.channels.status();
        ::metrics::gauge!(m::CHANNELS).set(channels.size as f64);
        ::metrics::gauge!(m::CHANNELS_IN_USE)
            .set(channels.size.saturating_sub(channels.available) as f64);
        ::metrics::gauge!(m::CONNECTIONS).set(self.inner.connections.status().size as f64);
        let live = self.inner.registry.live();
        for node in self.inner.connector.node_names() {
            let on_node = live.iter().filter(|state| state.node == node).count();
            ::metrics::gauge!(m::CONNECTIONS_BY_NODE, "node" => node.to_owned())
                .set(on_node as f64);
        }
        ::metrics::gauge!(m::BROKER_CONNECTED).set(if self.is_ready() { 1.0 } else { 0.0 });
    }

    /// The live AMQP connections, newest last.
    pub fn connections(&self) -> Vec<ConnectionReport> {
        self.inner
            .registry
            .live()
            .iter()
            .map(|state| ConnectionReport {
                id: state.id,
                node: state.node.clone(),
                channels_opened: state.channels_opened(),
                channels_closed_by_broker: state.channels_closed_by_broker(),
                retired: state.is_retired(),
            })
            .collect()
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
        self.close_windows();
        self.drop_queue_channels();
        self.inner.channels.close();
        self.inner.connections.close();
    }

    fn check_ready(&self) -> Result<(), Error> {
        if !self.ignore_readiness && !self.is_ready() {
            return Err(Error::Unavailable(
                self.last_error()
                    .unwrap_or_else(|| "not connected to the broker yet".to_owned()),
            ));
        }
        Ok(())
    }

    async fn checkout(&self) -> Result<PooledChannel, Error> {
        self.check_ready()?;
        self.inner
            .channels
            .get()
            .await
            .map_err(|error| self.observe(channels::pool_error(error, self.inner.timeout)))
    }

    /// Refuses what a stream queue answers by closing the connection, once it is known to be one.
    fn refuse_if_stream(&self, queue: &str) -> Result<(), Error> {
        if self.streams().contains(queue) {
            return Err(Error::StreamQueue(format!(
                "queue '{queue}' is a stream queue, which RabbitMQ does not let the gateway take \
                 single messages from or purge"
            )));
        }
        Ok(())
    }

    /// Remembers a queue that the broker said is a stream, so it is never asked again.
    fn learn_stream(&self, queue: &str, error: Error) -> Error {
        if matches!(error, Error::StreamQueue(_)) {
            self.streams().insert(queue.to_owned());
        }
        error
    }

    fn streams(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.inner
            .streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Lets the supervisor know at once when a request saw the connection die.
    fn observe(&self, error: Error) -> Error {
        if error.is_unavailable() {
            self.inner.health.report_outage(&error.to_string());
        }
        error
    }
}
