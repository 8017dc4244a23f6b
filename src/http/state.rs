//! What every handler shares; cloned per request, so one reference count.

use std::sync::Arc;

use crate::auth::Auth;
use crate::broker::Broker;
use crate::cluster::Cluster;
use crate::messaging::consume::Consumption;
use crate::messaging::consumer_sets::ConsumerSets;
use crate::messaging::idempotency::IdempotencyKeys;
use crate::messaging::push::Subscriptions;
use crate::messaging::tasks::Tasks;

#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub broker: Broker,
    pub auth: Arc<Auth>,
    /// Taking messages, handing them out and their leases.
    pub consumption: Consumption,
    pub consumers: ConsumerSets,
    pub subscriptions: Subscriptions,
    /// Celery task calls and their results.
    pub tasks: Tasks,
    /// Answers kept for publishes retried with the same `Idempotency-Key`.
    pub idempotency: IdempotencyKeys,
    /// The other replicas, when there are several: receipts and consumer sets they hold.
    pub cluster: Cluster,
}
