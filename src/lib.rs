//! carrot-gateway: carrot's messaging model (Publisher, Consumer) as REST resources over RabbitMQ.

pub mod auth;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod http;
pub mod memory;
pub mod messaging;
pub mod metrics;
pub mod model;
pub mod net;
pub mod services;
pub mod telemetry;
pub mod upkeep;

pub use services::Services;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Serves until `shutdown` is cancelled, then drains in-flight requests within the grace period.
///
/// With `config.server.tls` set, `listener` serves HTTPS only.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let services = Services::new(&config, &shutdown)?;
    let background = services.spawn_background(&config);
    tracing::info!(
        listen = %listener.local_addr()?,
        https = config.server.tls.is_some(),
        "serving"
    );
    let grace = config.server.shutdown_grace;
    let draining = tokio::spawn({
        let (subscriptions, shutdown) = (services.subscriptions.clone(), shutdown.clone());
        async move {
            shutdown.cancelled().await;
            // Webhook attempts in flight may finish within the grace period, like requests.
            subscriptions.close_all(grace).await;
        }
    });
    let tls = config
        .server
        .tls
        .as_ref()
        .map(|tls| tokio_rustls::TlsAcceptor::from(tls.server_config()));
    let result = net::serve(
        listener,
        services.router.clone(),
        tls,
        config.http.connection_limits(),
        shutdown.clone(),
        grace,
    )
    .await;

    shutdown.cancel();
    let _ = draining.await;
    services.close(background).await;
    result
}
