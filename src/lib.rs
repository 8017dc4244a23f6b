//! carrot-gateway: carrot's messaging model (Publisher, Consumer) as REST resources over RabbitMQ.

pub mod broker;
pub mod config;
pub mod http;
pub mod message;
pub mod telemetry;
pub mod topology;

use std::future::IntoFuture;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, BrokerSettings};
use crate::config::Config;

/// Serves until `shutdown` is cancelled, then drains in-flight requests within the grace period.
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
    })
    .map_err(std::io::Error::other)?;

    let background = CancellationToken::new();
    let supervisor = tokio::spawn({
        let (broker, background) = (broker.clone(), background.clone());
        async move { broker.supervise(background).await }
    });

    let app = http::app(
        http::AppState {
            broker: broker.clone(),
        },
        config.max_body_bytes,
    );
    tracing::info!(listen = %listener.local_addr()?, "serving");
    let serve = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
    let grace_over = async {
        shutdown.cancelled().await;
        tokio::time::sleep(config.shutdown_grace).await;
    };
    let result = tokio::select! {
        result = serve => result,
        () = grace_over => {
            tracing::warn!(grace = ?config.shutdown_grace, "grace period over; dropping requests still in flight");
            Ok(())
        }
    };

    background.cancel();
    let _ = supervisor.await;
    broker.close();
    result
}
