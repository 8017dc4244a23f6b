//! Opens AMQP connections, over TLS with the configured CA and client certificate for `amqps://`.
//!
//! deadpool-lapin's manager connects with lapin's default TLS settings only, so the pool is
//! built here on deadpool directly, and the one-off connections use the same connector.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use deadpool::managed::{self, Metrics, Pool, RecycleError, RecycleResult};
use futures_util::StreamExt;
use lapin::protocol::AMQPErrorKind;
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::{Channel, Connection, ConnectionProperties, ErrorKind, Event};
use tokio_rustls::rustls::{self, AlertDescription, CertificateError};

use crate::net::tls::BrokerTls;

/// Where and how to connect: the nodes' URLs and the TLS settings used for `amqps://`.
pub struct Connector {
    nodes: Vec<Node>,
    /// Where the next connection starts looking, so connections are spread over the nodes.
    next: AtomicUsize,
    tls: OwnedTLSConfig,
}

/// One broker node: its URL and how `/readyz` and metrics name it (host:port, no password).
struct Node {
    url: String,
    name: String,
}

impl Connector {
    pub fn new(urls: &[String], tls: &BrokerTls) -> Self {
        Self {
            nodes: urls
                .iter()
                .map(|url| Node {
                    url: url.clone(),
                    name: node_name(url),
                })
                .collect(),
            next: AtomicUsize::new(0),
            tls: OwnedTLSConfig {
                cert_chain: tls.ca_pem.clone(),
                // lapin's "PKCS8" identity takes PEM certificates and any PEM private key.
                identity: tls.client.as_ref().map(|client| OwnedIdentity::PKCS8 {
                    pem: client.cert_pem.clone(),
                    key: client.key_pem.clone(),
                }),
            },
        }
    }

    /// The nodes' names, in the order they were given.
    pub fn node_names(&self) -> impl Iterator<Item = &str> {
        self.nodes.iter().map(|node| node.name.as_str())
    }

    /// Connects to the first node that answers, starting one further along at each call;
    /// answers with the connection and the node's name, or the last node's error.
    pub async fn connect(&self) -> lapin::Result<(Connection, &str)> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut last_error = None;
        for offset in 0..self.nodes.len() {
            let node = &self.nodes[(start + offset) % self.nodes.len()];
            match self.connect_to(&node.url).await {
                Ok(connection) => return Ok((connection, &node.name)),
                Err(error) => {
                    if self.nodes.len() > 1 {
                        tracing::warn!(node = %node.name, %error, "broker node unreachable; trying the next");
                    }
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| {
            lapin::Error::from(ErrorKind::InvalidConnectionState(
                lapin::ConnectionState::Closed,
            ))
        }))
    }

    async fn connect_to(&self, url: &str) -> lapin::Result<Connection> {
        let runtime = lapin::runtime::default_runtime()?;
        Connection::connect_with_config(url, properties(), self.tls.clone(), runtime).await
    }
}

/// `host:port` of an AMQP URL, without its credentials or vhost.
fn node_name(url: &str) -> String {
    match url.parse::<lapin::uri::AMQPUri>() {
        Ok(uri) => format!("{}:{}", uri.authority.host, uri.authority.port),
        Err(_) => "unknown".to_owned(),
    }
}

fn properties() -> ConnectionProperties {
    // No lapin auto-recovery: the pool replaces dead connections, and the two together leak.
    ConnectionProperties::default().with_connection_name("carrot-gateway".into())
}

/// What to change when the TLS handshake with the broker failed for a reason the settings fix.
pub fn tls_hint(error: &lapin::Error) -> Option<&'static str> {
    let ErrorKind::IOError(io) = error.kind() else {
        return None;
    };
    // rustls' error travels inside an io::Error, sometimes wrapped in a second one.
    let mut inner = io.get_ref()?;
    while let Some(io) = inner.downcast_ref::<std::io::Error>() {
        inner = io.get_ref()?;
    }
    match inner.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => Some(
            "the broker's certificate is not signed by a CA the gateway trusts: give that CA \
             with --amqp-ca-file / CARROT_AMQP_CA_FILE / amqp_tls.ca_file",
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => Some(
            "the broker's certificate does not name the host of the AMQP URL: \
             connect by a name or address the certificate lists",
        ),
        rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => Some(
            "the broker requires a client certificate: set --amqp-client-cert and \
             --amqp-client-key (CARROT_AMQP_CLIENT_CERT/KEY, amqp_tls.client_cert/client_key)",
        ),
        rustls::Error::AlertReceived(
            AlertDescription::UnknownCA | AlertDescription::BadCertificate,
        ) => Some("the broker does not accept the gateway's client certificate"),
        _ => None,
    }
}

/// What the gateway knows of one AMQP connection, shown by `/readyz`.
#[derive(Debug)]
pub struct ConnectionState {
    pub id: u64,
    /// The broker node it is connected to, `host:port`.
    pub node: String,
    /// Channel ids lapin hands out before it starts over at 1 (the negotiated channel_max).
    channel_ids: u32,
    channels_opened: AtomicU32,
    channels_closed_by_broker: AtomicU64,
    /// The connection failed; channels that still hold this state are dead with it.
    lost: AtomicBool,
}

impl ConnectionState {
    pub fn channels_opened(&self) -> u32 {
        self.channels_opened.load(Ordering::Acquire)
    }

    pub fn channels_closed_by_broker(&self) -> u64 {
        self.channels_closed_by_broker.load(Ordering::Acquire)
    }

    /// No new channel may be opened on it: its next id would be one lapin already handed out.
    ///
    /// lapin remembers the error of every channel the broker closed under that channel's id and
    /// never forgets it, so a channel that reuses the id fails with an old request's error. The
    /// connection is therefore retired before its ids wrap; channels already open on it live on.
    pub fn is_retired(&self) -> bool {
        self.channels_opened() >= self.channel_ids
    }
}

/// A pooled connection; every channel is opened through it so that ids are counted.
pub struct AmqpConnection {
    connection: Connection,
    state: Arc<ConnectionState>,
}

impl AmqpConnection {
    pub async fn create_channel(&self) -> lapin::Result<(Channel, Arc<ConnectionState>)> {
        // Counted before the attempt: a failed open uses up its id too.
        self.state.channels_opened.fetch_add(1, Ordering::AcqRel);
        let channel = self.connection.create_channel().await?;
        Ok((channel, self.state.clone()))
    }

    pub fn status(&self) -> &lapin::ConnectionStatus {
        self.connection.status()
    }
}

/// RabbitMQ's default frame_max, assumed until a connection says otherwise.
const DEFAULT_FRAME_MAX: u32 = 131_072;

/// The connections opened so far that are still alive, for `/readyz`.
pub struct ConnectionRegistry {
    opened: AtomicU64,
    frame_max: AtomicU32,
    states: Mutex<Vec<Weak<ConnectionState>>>,
}

impl Default for ConnectionRegistry {
    fn default() -> Self {
        Self {
            opened: AtomicU64::new(0),
            frame_max: AtomicU32::new(DEFAULT_FRAME_MAX),
            states: Mutex::default(),
        }
    }
}

impl ConnectionRegistry {
    /// The largest frame the broker takes, as the newest connection negotiated it.
    pub fn frame_max(&self) -> u32 {
        self.frame_max.load(Ordering::Acquire)
    }

    /// Counts every connection opened; a new one may face a broker that lost its topology.
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Acquire)
    }

    pub fn live(&self) -> Vec<Arc<ConnectionState>> {
        let mut states = self.lock();
        states.retain(|state| state.strong_count() > 0);
        states
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|state| !state.lost.load(Ordering::Acquire))
            .collect()
    }

    fn register(&self, node: &str, channel_ids: u32) -> Arc<ConnectionState> {
        let id = self.opened.fetch_add(1, Ordering::AcqRel) + 1;
        let state = Arc::new(ConnectionState {
            id,
            node: node.to_owned(),
            channel_ids,
            channels_opened: AtomicU32::new(0),
            channels_closed_by_broker: AtomicU64::new(0),
            lost: AtomicBool::new(false),
        });
        let mut states = self.lock();
        states.retain(|state| state.strong_count() > 0);
        states.push(Arc::downgrade(&state));
        state
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Weak<ConnectionState>>> {
        self.states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Counts what the broker closed, from the connection's own events, until the connection ends.
fn watch_events(connection: &Connection, state: Arc<ConnectionState>) {
    let mut events = connection.events_listener();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let Event::Error(error) = event else {
                continue;
            };
            match error.kind() {
                ErrorKind::ProtocolError(amqp) if matches!(amqp.kind(), AMQPErrorKind::Soft(_)) => {
                    state
                        .channels_closed_by_broker
                        .fetch_add(1, Ordering::AcqRel);
                    let reason = reply_name(amqp.kind());
                    metrics::counter!(crate::metrics::CHANNELS_CLOSED, "reason" => reason)
                        .increment(1);
                }
                other => {
                    let reason = match other {
                        ErrorKind::ProtocolError(amqp) => reply_name(amqp.kind()),
                        ErrorKind::ParsingError(_) => "PARSE_ERROR".to_owned(),
                        ErrorKind::IOError(_) => "IO_ERROR".to_owned(),
                        _ => "OTHER".to_owned(),
                    };
                    state.lost.store(true, Ordering::Release);
                    tracing::warn!(connection = state.id, node = %state.node, %error, "broker connection lost");
                    metrics::counter!(crate::metrics::CONNECTIONS_LOST, "reason" => reason)
                        .increment(1);
                }
            }
        }
    });
}

/// The reply's name as RabbitMQ spells it in its texts, e.g. `NOT_FOUND`.
fn reply_name(kind: &AMQPErrorKind) -> String {
    let name = match kind {
        AMQPErrorKind::Soft(soft) => soft.to_string(),
        AMQPErrorKind::Hard(hard) => hard.to_string(),
    };
    name.replace('-', "_")
}

pub struct ConnectionManager {
    connector: Arc<Connector>,
    registry: Arc<ConnectionRegistry>,
}

impl managed::Manager for ConnectionManager {
    type Type = AmqpConnection;
    type Error = lapin::Error;

    async fn create(&self) -> Result<AmqpConnection, lapin::Error> {
        let (connection, node) = self.connector.connect().await?;
        let channel_ids = match connection.configuration().channel_max() {
            0 => u32::from(u16::MAX),
            max => u32::from(max),
        };
        let state = self.registry.register(node, channel_ids);
        tracing::info!(connection = state.id, node, "broker connection opened");
        if let Some(frame_max) = std::num::NonZeroU32::new(connection.configuration().frame_max()) {
            self.registry
                .frame_max
                .store(frame_max.get(), Ordering::Release);
        }
        watch_events(&connection, state.clone());
        Ok(AmqpConnection { connection, state })
    }

    async fn recycle(
        &self,
        connection: &mut AmqpConnection,
        _: &Metrics,
    ) -> RecycleResult<lapin::Error> {
        // Only checked at checkout: the supervisor's probe is what notices a dead idle connection.
        if !connection.status().connected() {
            return Err(RecycleError::message(format!(
                "the connection is not connected: {:?}",
                connection.status()
            )));
        }
        if connection.state.is_retired() {
            crate::metrics::count(crate::metrics::CONNECTIONS_RETIRED, 1);
            tracing::info!(
                connection = connection.state.id,
                channels = connection.state.channels_opened(),
                "retiring a connection before lapin reuses its channel ids"
            );
            return Err(RecycleError::message(
                "retired: its channel ids are used up",
            ));
        }
        Ok(())
    }
}

pub type ConnectionPool = Pool<ConnectionManager>;
pub type ConnectionPoolError = managed::PoolError<lapin::Error>;

/// A pool of at most `max_size` connections, each registered in `registry`.
pub fn connection_pool(
    connector: Arc<Connector>,
    max_size: usize,
    timeout: Duration,
    registry: Arc<ConnectionRegistry>,
) -> ConnectionPool {
    bounded_pool(
        ConnectionManager {
            connector,
            registry,
        },
        max_size,
        timeout,
    )
}

/// A pool of at most `max_size` objects, where waiting, creating and recycling each take at
/// most `timeout`.
pub fn bounded_pool<M: managed::Manager>(
    manager: M,
    max_size: usize,
    timeout: Duration,
) -> Pool<M> {
    Pool::builder(manager)
        .max_size(max_size)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .expect("a runtime is set, so building the pool cannot fail")
}
