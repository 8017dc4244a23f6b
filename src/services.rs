//! The gateway's services and router, built from a `Config` in one place: `run` serves them, and
//! the in-process tests call the router without a listener.

use axum::Router;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::http;
use crate::messaging::consume::Consumption;
use crate::messaging::consumer_sets::ConsumerSets;
use crate::messaging::idempotency::IdempotencyKeys;
use crate::messaging::leases::Leases;
use crate::messaging::push::Subscriptions;
use crate::messaging::tasks::Tasks;

/// Every service, with the configured consumer sets and subscriptions declared, and the router
/// over them. Nothing talks to the broker until `spawn_background` starts its supervisor.
pub struct Services {
    pub broker: Broker,
    pub leases: Leases,
    pub consumers: ConsumerSets,
    pub subscriptions: Subscriptions,
    pub router: Router,
}

/// What runs beside the requests, stopped together once nothing holds a message any more.
pub struct Background {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Services {
    /// Long polls and streams end when `shutdown` is cancelled.
    pub fn new(config: &Config, shutdown: &CancellationToken) -> std::io::Result<Self> {
        let broker = Broker::new(&config.broker.settings());
        let cluster = Cluster::new(&config.cluster).map_err(std::io::Error::other)?;
        let leases = Leases::minted_by(cluster.tokens.clone());
        let consumers = ConsumerSets::new(broker.clone(), leases.clone(), cluster.tokens.clone());
        for (name, spec) in &config.consumer_sets {
            consumers.declare_named(name, spec.clone());
        }
        let subscriptions = Subscriptions::new(broker.clone(), config.consume.lease_max)
            .map_err(std::io::Error::other)?;
        for spec in &config.subscriptions {
            subscriptions.declare(spec.clone());
        }
        let idempotency = match &config.broker.idempotency_store {
            Some(url) => IdempotencyKeys::shared(config.broker.idempotency_ttl, url)
                .map_err(std::io::Error::other)?,
            None => IdempotencyKeys::new(
                config.broker.idempotency_ttl,
                config.broker.idempotency_keys,
            ),
        };
        let consumption = Consumption::new(
            broker.clone(),
            leases.clone(),
            config.consume.limits(),
            shutdown.clone(),
        );
        let router = http::app(
            http::AppState::new(http::Shared {
                broker: broker.clone(),
                auth: config.auth.tokens.clone(),
                consumption,
                consumers: consumers.clone(),
                subscriptions: subscriptions.clone(),
                tasks: Tasks::new(broker.clone(), shutdown.clone()),
                idempotency,
                cluster,
            }),
            config.http.request_limits(),
        );
        Ok(Self {
            broker,
            leases,
            consumers,
            subscriptions,
            router,
        })
    }

    /// Starts the broker's supervisor (it connects, declares the configured topology, and
    /// reconnects), lease expiry, the reaper of idle consumer sets, the closer of idle broker
    /// channels and the metrics upkeep.
    pub fn spawn_background(&self, config: &Config) -> Background {
        let stop = CancellationToken::new();
        let supervisor = tokio::spawn({
            let (broker, stop) = (self.broker.clone(), stop.clone());
            let declarations = config.declarations.clone();
            async move { broker.supervise(stop, &declarations).await }
        });
        let tasks = vec![
            supervisor,
            self.leases.spawn_expiry(stop.clone()),
            self.consumers
                .spawn_reaper(config.consume.consumer_idle, stop.clone()),
            self.broker.spawn_idle_channel_closer(stop.clone()),
            crate::metrics::spawn_upkeep(stop.clone()),
        ];
        Background { stop, tasks }
    }

    /// Once serving is over: every message still held goes back to its queue before the
    /// background stops and the broker's channels close.
    pub async fn close(&self, background: Background) {
        self.consumers.close_all().await;
        self.leases.release_all().await;
        background.stop.cancel();
        futures_util::future::join_all(background.tasks).await;
        self.broker.close();
    }
}
