//! Consumer sets (carrot's ConsumerSet): one consumer over several queues, held between requests.
//!
//! A set keeps up to `prefetch` messages delivered and unacknowledged while nobody asks; that is
//! the contract a client opts into by creating one. Sets nobody used for a while are reaped and
//! their messages returned. Named sets come from the config file and live as long as the gateway.

use crate::cluster::tokens::Tokens;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use serde::Deserialize;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use super::consume::AckPolicy;
use super::lease_scope::LeaseScope;
use super::leases::Leases;
use crate::broker::{self, Broker, Consumed, QueueConsumers};
use crate::model::{Invalid, check_name};

/// A consumer set as requested (`POST /consumers` or the config file), before validation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumerSetRequest {
    /// Queues to consume, at least one.
    #[schema(min_items = 1)]
    pub queues: Vec<String>,
    /// basic.qos: messages the set may hold unacknowledged (default 10).
    #[schema(minimum = 1, maximum = 65535)]
    pub prefetch: Option<u16>,
    /// `lease` (default) or `auto`.
    pub ack: Option<AckPolicy>,
}

pub const DEFAULT_PREFETCH: u16 = 10;

impl ConsumerSetRequest {
    pub fn validate(self) -> Result<ConsumerSetSpec, Invalid> {
        if self.queues.is_empty() {
            return Err(Invalid(
                "queues is empty; name at least one queue to consume".into(),
            ));
        }
        for (index, queue) in self.queues.iter().enumerate() {
            check_name("queue", queue)?;
            if self.queues[..index].contains(queue) {
                return Err(Invalid(format!("queue {queue:?} is listed twice")));
            }
        }
        let prefetch = self.prefetch.unwrap_or(DEFAULT_PREFETCH);
        if prefetch == 0 {
            return Err(Invalid("prefetch must be between 1 and 65535".into()));
        }
        Ok(ConsumerSetSpec {
            queues: self.queues,
            prefetch,
            ack: self.ack.unwrap_or_default(),
        })
    }
}

/// What a set consumes and how.
#[derive(Debug, Clone)]
pub struct ConsumerSetSpec {
    pub queues: Vec<String>,
    pub prefetch: u16,
    pub ack: AckPolicy,
}

#[derive(Debug, thiserror::Error)]
pub enum ConsumerSetError {
    /// Becomes 404 `consumer_not_found`.
    #[error("no consumer set {0:?}: it was deleted, reaped after being idle, or never existed")]
    NotFound(String),
    /// Becomes 404 `queue_not_found`.
    #[error("consumer set {set:?} does not consume queue {queue:?}")]
    QueueNotInSet { set: String, queue: String },
    /// Becomes 409 `consumer_busy`.
    #[error(
        "consumer set {0:?} is being read by an event stream, which keeps it until it closes; \
         close that stream first, or create another set for this reader"
    )]
    Busy(String),
    #[error(transparent)]
    Broker(#[from] broker::Error),
}

pub struct ConsumerSet {
    pub id: String,
    pub named: bool,
    /// The token that created it; other tokens cannot see it.
    pub owner: Option<String>,
    pub prefetch: u16,
    pub ack: AckPolicy,
    queues: Mutex<Vec<String>>,
    /// The live consumers; rebuilt after the broker connection was lost.
    subscription: Arc<AsyncMutex<Option<QueueConsumers>>>,
    last_used: Mutex<Instant>,
    /// Leases handed out by this set, returned when the set goes away.
    leases_held: LeaseScope,
    /// An event stream holds the consumers; other readers are refused rather than kept waiting.
    streaming: AtomicBool,
    /// Cancelled when the set is deleted or reaped: an open stream ends.
    closed: CancellationToken,
}

/// The consumers, held by one event stream until it ends.
pub struct StreamingConsumers {
    guard: OwnedMutexGuard<Option<QueueConsumers>>,
    set: Arc<ConsumerSet>,
}

impl StreamingConsumers {
    /// The next delivery; `None` when the consumers ended or the set was deleted.
    pub async fn next(&mut self) -> Option<Result<Consumed, broker::Error>> {
        let consumers = self.guard.as_mut()?;
        let next = tokio::select! {
            next = consumers.next() => next,
            () = self.set.closed.cancelled() => None,
        };
        self.set.touch();
        next
    }
}

impl Drop for StreamingConsumers {
    fn drop(&mut self) {
        self.set.streaming.store(false, Ordering::Release);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ConsumerSet {
    pub fn queues(&self) -> Vec<String> {
        lock(&self.queues).clone()
    }

    pub fn touch(&self) {
        *lock(&self.last_used) = Instant::now();
    }

    pub fn leases_held(&self) -> &LeaseScope {
        &self.leases_held
    }

    fn refuse_if_streaming(&self) -> Result<(), ConsumerSetError> {
        if self.streaming.load(Ordering::Acquire) {
            return Err(ConsumerSetError::Busy(self.id.clone()));
        }
        Ok(())
    }

    /// The consumers, (re)subscribing if there are none or they died.
    async fn subscribed(
        &self,
        mut guard: OwnedMutexGuard<Option<QueueConsumers>>,
        broker: &Broker,
    ) -> Result<OwnedMutexGuard<Option<QueueConsumers>>, ConsumerSetError> {
        self.touch();
        if !guard.as_ref().is_some_and(QueueConsumers::is_alive) {
            *guard = None;
            let queues = self.queues();
            *guard = Some(broker.consume_queues(&queues, self.prefetch).await?);
        }
        Ok(guard)
    }

    /// The consumers for an event stream, which keeps them until it ends.
    pub async fn stream(
        self: &Arc<Self>,
        broker: &Broker,
    ) -> Result<StreamingConsumers, ConsumerSetError> {
        self.refuse_if_streaming()?;
        // A `/next` holds the consumers at most for its `wait`.
        let guard = self.subscription.clone().lock_owned().await;
        let guard = self.subscribed(guard, broker).await?;
        self.streaming.store(true, Ordering::Release);
        Ok(StreamingConsumers {
            guard,
            set: self.clone(),
        })
    }

    /// Waits up to `wait` for the next message of any queue of the set; readers take turns.
    pub async fn next(
        &self,
        broker: &Broker,
        wait: Duration,
    ) -> Result<Option<Consumed>, ConsumerSetError> {
        self.refuse_if_streaming()?;
        let started = Instant::now();
        let Ok(guard) = tokio::time::timeout(wait, self.subscription.clone().lock_owned()).await
        else {
            return Ok(None);
        };
        let mut guard = self.subscribed(guard, broker).await?;
        let Some(subscription) = guard.as_mut() else {
            return Ok(None);
        };
        let left = wait.saturating_sub(started.elapsed());
        let next = match tokio::time::timeout(left, subscription.next()).await {
            Err(_elapsed) => return Ok(None),
            Ok(next) => next,
        };
        self.touch();
        match next {
            None => Ok(None),
            Some(Ok(message)) => Ok(Some(message)),
            Some(Err(error)) => {
                *guard = None;
                Err(error.into())
            }
        }
    }
}

#[derive(Clone)]
pub struct ConsumerSets {
    sets: Arc<Mutex<HashMap<String, Arc<ConsumerSet>>>>,
    broker: Broker,
    leases: Leases,
    /// Mints the ids of created sets, which name this replica when there are several.
    tokens: Arc<Tokens>,
}

impl ConsumerSets {
    pub fn new(broker: Broker, leases: Leases, tokens: Arc<Tokens>) -> Self {
        Self {
            sets: Arc::default(),
            broker,
            leases,
            tokens,
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<ConsumerSet>>> {
        lock(&self.sets)
    }

    /// Creates a set and starts consuming at once, so a missing queue fails the request.
    pub async fn create(
        &self,
        spec: ConsumerSetSpec,
        owner: Option<String>,
    ) -> Result<Arc<ConsumerSet>, ConsumerSetError> {
        let subscription = self
            .broker
            .consume_queues(&spec.queues, spec.prefetch)
            .await?;
        let id = self.tokens.mint();
        let set = Arc::new(self.build(id, owner, spec, Some(subscription)));
        self.map().insert(set.id.clone(), set.clone());
        Ok(set)
    }

    /// A set from the config file; it subscribes when first used, the broker may be down now.
    pub fn declare_named(&self, name: &str, spec: ConsumerSetSpec) {
        let mut set = self.build(name.to_owned(), None, spec, None);
        set.named = true;
        let set = Arc::new(set);
        self.map().insert(name.to_owned(), set);
    }

    fn build(
        &self,
        id: String,
        owner: Option<String>,
        spec: ConsumerSetSpec,
        subscription: Option<QueueConsumers>,
    ) -> ConsumerSet {
        // Settled receipts are forgotten once the set holds a few more than it can have open.
        let prune_at = 2 * usize::from(spec.prefetch) + 16;
        ConsumerSet {
            id,
            named: false,
            owner,
            prefetch: spec.prefetch,
            ack: spec.ack,
            queues: Mutex::new(spec.queues),
            subscription: Arc::new(AsyncMutex::new(subscription)),
            last_used: Mutex::new(Instant::now()),
            leases_held: LeaseScope::new(self.leases.clone(), prune_at),
            streaming: AtomicBool::new(false),
            closed: CancellationToken::new(),
        }
    }

    pub fn get(&self, id: &str) -> Result<Arc<ConsumerSet>, ConsumerSetError> {
        self.map()
            .get(id)
            .cloned()
            .ok_or_else(|| ConsumerSetError::NotFound(id.to_owned()))
    }

    pub fn count(&self) -> usize {
        self.map().len()
    }

    /// carrot's cancel_by_queue: the set stops taking messages from `queue`.
    pub async fn cancel_queue(&self, id: &str, queue: &str) -> Result<(), ConsumerSetError> {
        let set = self.get(id)?;
        set.refuse_if_streaming()?;
        let not_in_set = || ConsumerSetError::QueueNotInSet {
            set: id.to_owned(),
            queue: queue.to_owned(),
        };
        let mut guard = set.subscription.clone().lock_owned().await;
        {
            let mut queues = lock(&set.queues);
            let before = queues.len();
            queues.retain(|consumed| consumed != queue);
            if queues.len() == before {
                return Err(not_in_set());
            }
        }
        set.touch();
        if let Some(subscription) = guard.as_mut()
            && let Err(error) = subscription.cancel_queue(queue).await
        {
            // The next use subscribes again, without the cancelled queue.
            *guard = None;
            tracing::debug!(%error, "cancel failed; consumers will be rebuilt");
        }
        Ok(())
    }

    /// Cancels the set's consumers and puts every unsettled message back.
    pub async fn delete(&self, id: &str) -> Result<(), ConsumerSetError> {
        let set = self
            .map()
            .remove(id)
            .ok_or_else(|| ConsumerSetError::NotFound(id.to_owned()))?;
        self.close(&set).await;
        Ok(())
    }

    async fn close(&self, set: &ConsumerSet) {
        set.closed.cancel();
        set.subscription.lock().await.take();
        set.leases_held.release().await;
    }

    /// Deletes the unnamed sets idle for longer than `idle`.
    pub async fn reap(&self, idle: Duration) {
        let now = Instant::now();
        let stale: Vec<Arc<ConsumerSet>> = {
            let mut sets = self.map();
            let ids: Vec<String> = sets
                .values()
                .filter(|set| !set.named && now.duration_since(*lock(&set.last_used)) > idle)
                // A set being read right now is not idle, however long the read takes.
                .filter(|set| set.subscription.try_lock().is_ok())
                .map(|set| set.id.clone())
                .collect();
            ids.iter().filter_map(|id| sets.remove(id)).collect()
        };
        for set in stale {
            tracing::info!(id = %set.id, "reaping an idle consumer set");
            self.close(&set).await;
        }
    }

    /// Reaps idle sets every second until `stop`.
    pub fn spawn_reaper(&self, idle: Duration, stop: CancellationToken) -> JoinHandle<()> {
        let sets = self.clone();
        crate::upkeep::spawn_every(Duration::from_secs(1), stop, move || {
            let sets = sets.clone();
            async move { sets.reap(idle).await }
        })
    }

    /// Closes every set (shutdown).
    pub async fn close_all(&self) {
        let all: Vec<Arc<ConsumerSet>> = self.map().drain().map(|(_, set)| set).collect();
        for set in all {
            self.close(&set).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::BrokerSettings;

    /// Sets over a broker that is never reached: nothing here subscribes.
    fn sets() -> ConsumerSets {
        let broker = Broker::new(&BrokerSettings {
            urls: vec!["amqp://guest:guest@127.0.0.1:1/%2f".into()],
            connections: 1,
            channels: 1,
            lanes: 0,
            window: 0,
            timeout: Duration::from_secs(1),
            tls: Default::default(),
        });
        ConsumerSets::new(broker, Leases::new(), Arc::new(Tokens::alone()))
    }

    fn spec(queues: &[&str]) -> ConsumerSetSpec {
        ConsumerSetSpec {
            queues: queues.iter().map(|queue| (*queue).to_owned()).collect(),
            prefetch: 10,
            ack: AckPolicy::Lease,
        }
    }

    /// An unnamed set as `create` makes it, without its consumers.
    fn unnamed(sets: &ConsumerSets, id: &str, queues: &[&str]) -> Arc<ConsumerSet> {
        let set = Arc::new(sets.build(id.to_owned(), Some("token".into()), spec(queues), None));
        sets.map().insert(id.to_owned(), set.clone());
        set
    }

    fn request(json: &str) -> Result<ConsumerSetSpec, Invalid> {
        serde_json::from_str::<ConsumerSetRequest>(json)
            .expect("a request document")
            .validate()
    }

    #[test]
    fn requests_are_checked_before_anything_is_consumed() {
        let valid = request(r#"{"queues": ["a", "b"]}"#).expect("valid");
        assert_eq!(valid.prefetch, DEFAULT_PREFETCH);
        assert_eq!(valid.ack, AckPolicy::Lease);
        let auto = request(r#"{"queues": ["a"], "ack": "auto", "prefetch": 1}"#).expect("valid");
        assert_eq!((auto.ack, auto.prefetch), (AckPolicy::Auto, 1));

        let refused = |json: &str, says: &str| {
            let Invalid(text) = request(json).expect_err(json);
            assert!(text.contains(says), "{json}: {text}");
        };
        refused(r#"{"queues": []}"#, "at least one queue");
        refused(r#"{"queues": ["a", "a"]}"#, "listed twice");
        refused(r#"{"queues": ["a"], "prefetch": 0}"#, "between 1 and 65535");
        let long = format!(r#"{{"queues": ["{}"]}}"#, "q".repeat(256));
        refused(&long, "at most 255");
    }

    #[tokio::test(start_paused = true)]
    async fn only_unnamed_sets_idle_past_the_limit_are_reaped() {
        let sets = sets();
        let idle = Duration::from_secs(60);
        sets.declare_named("configured", spec(&["q"]));
        unnamed(&sets, "idle", &["q"]);
        let busy = unnamed(&sets, "busy", &["q"]);

        tokio::time::advance(Duration::from_secs(59)).await;
        busy.touch();
        sets.reap(idle).await;
        assert_eq!(sets.count(), 3, "nothing is idle for longer than 60 s yet");

        tokio::time::advance(Duration::from_secs(2)).await;
        sets.reap(idle).await;
        assert!(matches!(
            sets.get("idle"),
            Err(ConsumerSetError::NotFound(_))
        ));
        assert!(sets.get("busy").is_ok(), "used 2 s ago");
        assert!(
            sets.get("configured").is_ok(),
            "named sets live as long as the gateway"
        );

        tokio::time::advance(idle).await;
        sets.reap(idle).await;
        assert_eq!(sets.count(), 1);
        assert!(sets.get("configured").is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn the_reaper_task_reaps_and_stops_when_told() {
        let sets = sets();
        unnamed(&sets, "idle", &["q"]);
        let stop = CancellationToken::new();
        let reaper = sets.spawn_reaper(Duration::from_secs(5), stop.clone());
        tokio::time::sleep(Duration::from_secs(7)).await;
        assert_eq!(sets.count(), 0, "reaped within a second of going idle");
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(1), reaper)
            .await
            .expect("the reaper stops")
            .expect("the reaper did not panic");
    }

    #[tokio::test]
    async fn cancelling_a_queue_keeps_the_others_and_deleting_is_once() {
        let sets = sets();
        let set = unnamed(&sets, "s", &["a", "b"]);
        let missing = sets.cancel_queue("s", "c").await;
        assert!(matches!(
            missing,
            Err(ConsumerSetError::QueueNotInSet { .. })
        ));
        sets.cancel_queue("s", "a").await.expect("a is consumed");
        assert_eq!(set.queues(), ["b"]);
        let again = sets.cancel_queue("s", "a").await;
        assert!(matches!(again, Err(ConsumerSetError::QueueNotInSet { .. })));

        sets.delete("s").await.expect("the set exists");
        assert!(set.closed.is_cancelled(), "an open stream of the set ends");
        assert!(matches!(
            sets.delete("s").await,
            Err(ConsumerSetError::NotFound(_))
        ));
        assert!(matches!(
            sets.cancel_queue("s", "b").await,
            Err(ConsumerSetError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn a_set_being_streamed_refuses_other_readers() {
        let sets = sets();
        let set = unnamed(&sets, "s", &["a", "b"]);
        set.streaming.store(true, Ordering::Release);
        let next = set.next(&sets.broker, Duration::from_millis(10)).await;
        assert!(matches!(next, Err(ConsumerSetError::Busy(_))));
        let cancel = sets.cancel_queue("s", "a").await;
        assert!(matches!(cancel, Err(ConsumerSetError::Busy(_))));
        assert_eq!(set.queues(), ["a", "b"], "a refused cancel changes nothing");
    }
}
