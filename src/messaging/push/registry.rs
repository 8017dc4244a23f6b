//! The gateway's push subscriptions by name: started, looked up, stopped.
//!
//! Subscriptions made over HTTP live as long as the gateway process; the config file's are
//! started again with every start.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::delivery::Context;
use super::live::Live;
use super::runner::run;
use super::spec::SubscriptionSpec;
use crate::broker::{self, Broker, QueueConsumers};

/// How long stopping a subscription waits for its messages to go back to the queue.
const STOP_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// Becomes 404 `subscription_not_found`.
    #[error("no subscription {0:?}: it was deleted or never existed")]
    NotFound(String),
    /// Becomes 409 `precondition_failed`.
    #[error(
        "subscription {0:?} already exists with other settings; delete it first or use another name"
    )]
    Conflict(String),
    #[error(transparent)]
    Broker(#[from] broker::Error),
}

pub struct Subscription {
    pub spec: SubscriptionSpec,
    pub live: Arc<Live>,
    /// From the config file rather than the API.
    pub configured: bool,
    /// Stops taking messages.
    stop: CancellationToken,
    /// Sends the messages still in flight back to the queue.
    requeue: CancellationToken,
    runner: Mutex<Option<JoinHandle<()>>>,
}

impl Subscription {
    /// Stops taking messages, lets the ones in flight finish for up to `drain`, then puts the
    /// rest back in the queue.
    async fn stop(&self, drain: Duration) {
        self.stop.cancel();
        let Some(mut runner) = lock(&self.runner).take() else {
            return;
        };
        if tokio::time::timeout(drain, &mut runner).await.is_ok() {
            return;
        }
        self.requeue.cancel();
        if tokio::time::timeout(STOP_WAIT, runner).await.is_err() {
            tracing::warn!(name = %self.spec.name, "a subscription did not stop in time");
        }
    }
}

#[derive(Clone)]
pub struct Subscriptions {
    by_name: Arc<Mutex<BTreeMap<String, Arc<Subscription>>>>,
    broker: Broker,
    client: reqwest::Client,
    hold_max: Duration,
}

/// The same name again: the running one if the settings agree, else a conflict.
fn reuse(
    existing: &Arc<Subscription>,
    spec: SubscriptionSpec,
) -> Result<(Arc<Subscription>, bool), PushError> {
    if existing.spec == spec {
        Ok((existing.clone(), false))
    } else {
        Err(PushError::Conflict(spec.name))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Subscriptions {
    /// `hold_max`: the longest a message may stay with the app's retries.
    pub fn new(broker: Broker, hold_max: Duration) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("carrot-gateway/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .use_preconfigured_tls(crate::net::tls::webhook_client_config()?)
            .build()
            .map_err(|error| format!("the webhook HTTP client: {error}"))?;
        Ok(Self {
            by_name: Arc::default(),
            broker,
            client,
            hold_max,
        })
    }

    /// Starts a subscription, consuming at once so that a missing queue fails the request;
    /// `Ok((_, false))` when an equal one was already running.
    pub async fn create(
        &self,
        spec: SubscriptionSpec,
    ) -> Result<(Arc<Subscription>, bool), PushError> {
        if let Some(existing) = self.get(&spec.name) {
            return reuse(&existing, spec);
        }
        let consumers = self
            .broker
            .consume_queues(std::slice::from_ref(&spec.queue), spec.concurrency)
            .await?;
        let mut by_name = lock(&self.by_name);
        // Another request may have created it while the queue was checked.
        if let Some(existing) = by_name.get(&spec.name) {
            return reuse(existing, spec);
        }
        let subscription = self.start(spec, false, Some(consumers));
        by_name.insert(subscription.spec.name.clone(), subscription.clone());
        Ok((subscription, true))
    }

    /// A subscription from the config file: it waits for its queue if the broker is not ready.
    pub fn declare(&self, spec: SubscriptionSpec) {
        let subscription = self.start(spec, true, None);
        lock(&self.by_name).insert(subscription.spec.name.clone(), subscription);
    }

    fn start(
        &self,
        spec: SubscriptionSpec,
        configured: bool,
        consumers: Option<QueueConsumers>,
    ) -> Arc<Subscription> {
        let live = Arc::new(Live::default());
        live.set_consuming(consumers.is_some());
        let (stop, requeue) = (CancellationToken::new(), CancellationToken::new());
        let context = Arc::new(Context {
            spec: spec.clone(),
            client: self.client.clone(),
            live: live.clone(),
            hold_max: self.hold_max,
            requeue: requeue.clone(),
        });
        let runner = tokio::spawn(run(self.broker.clone(), context, stop.clone(), consumers));
        tracing::info!(name = %spec.name, queue = %spec.queue, url = %spec.url, "push subscription started");
        Arc::new(Subscription {
            spec,
            live,
            configured,
            stop,
            requeue,
            runner: Mutex::new(Some(runner)),
        })
    }

    pub fn get(&self, name: &str) -> Option<Arc<Subscription>> {
        lock(&self.by_name).get(name).cloned()
    }

    /// Every subscription, by name.
    pub fn list(&self) -> Vec<Arc<Subscription>> {
        lock(&self.by_name).values().cloned().collect()
    }

    /// Stops the subscription; the messages it held are back in the queue when this returns.
    pub async fn delete(&self, name: &str) -> Result<(), PushError> {
        let subscription = lock(&self.by_name)
            .remove(name)
            .ok_or_else(|| PushError::NotFound(name.to_owned()))?;
        subscription.stop(Duration::ZERO).await;
        tracing::info!(name, "push subscription deleted");
        Ok(())
    }

    /// Stops every subscription (shutdown), letting webhook attempts in flight finish for up
    /// to `drain`, so that a rolling restart does not hand the app the same messages twice.
    pub async fn close_all(&self, drain: Duration) {
        let all: Vec<Arc<Subscription>> = std::mem::take(&mut *lock(&self.by_name))
            .into_values()
            .collect();
        futures_util::future::join_all(all.iter().map(|subscription| subscription.stop(drain)))
            .await;
    }

    /// Sets the per-subscription gauges before a scrape.
    pub fn report_gauges(&self) {
        let all = self.list();
        metrics::gauge!(crate::metrics::SUBSCRIPTIONS).set(all.len() as f64);
        for subscription in all {
            metrics::gauge!(crate::metrics::PUSH_IN_FLIGHT, "subscription" => subscription.spec.name.clone())
                .set(subscription.live.in_flight() as f64);
        }
    }
}
