//! carrot-gateway: carrot's messaging model (Publisher, Consumer) as REST resources over RabbitMQ.

pub mod auth;
pub mod broker;
pub mod config;
pub mod http;
pub mod memory;
pub mod messaging;
pub mod metrics;
pub mod model;
pub mod net;
pub mod telemetry;
pub mod upkeep;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, BrokerSettings};
use crate::config::Config;
use crate::messaging::consume::{ConsumeLimits, Consumption};
use crate::messaging::consumer_sets::ConsumerSets;
use crate::messaging::leases::Leases;
use crate::messaging::push::Subscriptions;

/// Serves until `shutdown` is cancelled, then drains in-flight requests within the grace period.
///
/// With `config.tls` set, `listener` serves HTTPS only.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let broker = Broker::new(&BrokerSettings {
        url: config.amqp_url.clone(),
        connections: config.amqp_connections,
        channels: config.channel_pool_size,
        timeout: config.broker_timeout,
        tls: config.amqp_tls.clone(),
    });

    let background = CancellationToken::new();
    let supervisor = tokio::spawn({
        let (broker, background) = (broker.clone(), background.clone());
        let declarations = config.declarations.clone();
        async move { broker.supervise(background, &declarations).await }
    });
    let leases = Leases::new();
    let consumers = ConsumerSets::new(broker.clone(), leases.clone());
    for (name, spec) in &config.consumer_sets {
        consumers.declare_named(name, spec.clone());
    }
    let subscriptions =
        Subscriptions::new(broker.clone(), config.lease_max).map_err(std::io::Error::other)?;
    for spec in &config.subscriptions {
        subscriptions.declare(spec.clone());
    }

    let lease_sweeper = leases.spawn_expiry(background.clone());
    let reaper = consumers.spawn_reaper(config.consumer_idle, background.clone());
    let channel_closer = broker.spawn_idle_channel_closer(background.clone());
    let metrics_upkeep = metrics::spawn_upkeep(background.clone());

    let consumption = Consumption::new(
        broker.clone(),
        leases.clone(),
        ConsumeLimits {
            lease_default: config.lease_default,
            lease_max: config.lease_max,
            wait_max: config.wait_max,
        },
        shutdown.clone(),
    );
    let app = http::app(
        http::AppState::new(http::Shared {
            broker: broker.clone(),
            auth: config.auth.clone(),
            consumption,
            consumers: consumers.clone(),
            subscriptions: subscriptions.clone(),
        }),
        http::limits::RequestLimits {
            max_body_bytes: config.max_body_bytes,
            max_headers: config.http.max_headers,
            max_header_bytes: config.http.max_header_bytes,
            body_timeout: config.http.body_timeout,
        },
    );
    tracing::info!(
        listen = %listener.local_addr()?,
        https = config.tls.is_some(),
        "serving"
    );
    let draining = tokio::spawn({
        let (subscriptions, shutdown) = (subscriptions.clone(), shutdown.clone());
        let grace = config.shutdown_grace;
        async move {
            shutdown.cancelled().await;
            // Webhook attempts in flight may finish within the grace period, like requests.
            subscriptions.close_all(grace).await;
        }
    });
    let tls = config
        .tls
        .as_ref()
        .map(|tls| tokio_rustls::TlsAcceptor::from(tls.server_config()));
    let result = net::serve(
        listener,
        app,
        tls,
        config.http.connections,
        shutdown.clone(),
        config.shutdown_grace,
    )
    .await;

    // Served: every message still held goes back to its queue before the channels close.
    shutdown.cancel();
    let _ = draining.await;
    consumers.close_all().await;
    leases.release_all().await;
    background.cancel();
    let _ = tokio::join!(
        supervisor,
        reaper,
        lease_sweeper,
        channel_closer,
        metrics_upkeep
    );
    broker.close();
    result
}
