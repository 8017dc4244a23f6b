//! Handing out messages (carrot's Consumer.fetch, iterqueue and iterconsume): taken by
//! basic.get or a long poll, or from consumers, each becomes an envelope for its reader,
//! acknowledged at once or leased.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use super::consumer_sets::{ConsumerSet, ConsumerSetError};
use super::envelope::Envelope;
use super::lease_scope::LeaseScope;
use super::leases::Leases;
use crate::broker::{self, AckMode, Broker, Consumed, DeliveryHandle, StreamOffset, Taken};
use crate::model::Invalid;

/// Receipts an event stream holds before it forgets the settled ones.
const STREAM_RECEIPTS: usize = 256;

/// How a reader acknowledges what it takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = Ack)]
pub enum AckPolicy {
    /// Leased: settle it with its receipt before the lease ends, or it goes back.
    #[default]
    Lease,
    /// Removed from the queue on delivery (at most once).
    Auto,
}

impl AckPolicy {
    pub fn name(self) -> &'static str {
        match self {
            AckPolicy::Lease => "lease",
            AckPolicy::Auto => "auto",
        }
    }

    fn mode(self) -> AckMode {
        match self {
            AckPolicy::Lease => AckMode::Manual,
            AckPolicy::Auto => AckMode::Auto,
        }
    }
}

/// How long readers may hold and wait, from the gateway's settings.
#[derive(Debug, Clone, Copy)]
pub struct ConsumeLimits {
    pub lease_default: Duration,
    pub lease_max: Duration,
    pub wait_max: Duration,
}

impl ConsumeLimits {
    /// A lease of `seconds` (the default when absent), within `lease_max`.
    pub fn lease(&self, seconds: Option<u64>) -> Result<Duration, Invalid> {
        let lease = seconds.map_or(self.lease_default, Duration::from_secs);
        if lease.is_zero() || lease > self.lease_max {
            return Err(Invalid(format!(
                "lease={} must be between 1 and {} seconds (the gateway's lease_max, kept below \
                 the broker's consumer_timeout)",
                lease.as_secs(),
                self.lease_max.as_secs()
            )));
        }
        Ok(lease)
    }

    /// The time a request may spend on its work (a scan, a reply): `seconds`, else `default`,
    /// from 1 second up to `wait_max`.
    pub fn budget(
        &self,
        name: &str,
        seconds: Option<u64>,
        default: Duration,
    ) -> Result<Duration, Invalid> {
        let most = self.wait_max.max(Duration::from_secs(1));
        let budget = seconds.map_or(default.min(most), Duration::from_secs);
        if budget.is_zero() || budget > most {
            return Err(Invalid(format!(
                "{name}={} must be a whole number of seconds from 1 to {} (the gateway's \
                 wait_max)",
                budget.as_secs(),
                most.as_secs()
            )));
        }
        Ok(budget)
    }

    /// A long poll of `seconds` (none when absent), within `wait_max`.
    pub fn wait(&self, seconds: Option<u64>) -> Result<Duration, Invalid> {
        let wait = Duration::from_secs(seconds.unwrap_or(0));
        if wait > self.wait_max {
            return Err(Invalid(format!(
                "wait={} is longer than this gateway allows ({} s); poll again instead",
                wait.as_secs(),
                self.wait_max.as_secs()
            )));
        }
        Ok(wait)
    }
}

/// How each message reaches its reader.
#[derive(Debug, Clone, Copy)]
pub struct HandOut {
    pub ack: AckPolicy,
    pub lease: Duration,
    /// Turn YAML and msgpack bodies into JSON, as carrot's `message.decode()`.
    pub decode: bool,
}

/// A message handed out: its envelope, and its own bytes for raw answers.
#[derive(Debug)]
pub struct Handed {
    pub envelope: Envelope,
    pub body: Bytes,
}

/// Envelopes as consumers deliver them; ends after the first error.
pub type Envelopes = BoxStream<'static, Result<Envelope, broker::Error>>;

#[derive(Clone)]
pub struct Consumption {
    broker: Broker,
    leases: Leases,
    limits: ConsumeLimits,
    /// Cancelled on SIGTERM: long polls answer at once and streams end.
    shutdown: CancellationToken,
}

impl Consumption {
    pub fn new(
        broker: Broker,
        leases: Leases,
        limits: ConsumeLimits,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            broker,
            leases,
            limits,
            shutdown,
        }
    }

    pub fn limits(&self) -> &ConsumeLimits {
        &self.limits
    }

    /// Cancelled when the gateway shuts down; long reads end then.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    pub fn leases(&self) -> &Leases {
        &self.leases
    }

    /// Up to `limit` ready messages; if there are none, a long poll of `wait` for one.
    pub async fn take(
        &self,
        queue: &str,
        how: HandOut,
        wait: Duration,
        limit: u32,
    ) -> Result<Vec<Handed>, broker::Error> {
        let mode = how.ack.mode();
        let mut taken = Vec::new();
        let taking = self.broker.begin_taking(queue);
        for _ in 0..limit {
            match self.broker.next_ready(&taking, mode).await {
                Ok(Some(message)) => taken.push(message),
                Ok(None) => break,
                // Keep what was already taken: leased ones must reach the client.
                Err(_) if !taken.is_empty() => break,
                Err(error) => return Err(error),
            }
        }
        if taken.is_empty() && !wait.is_zero() {
            let waited = tokio::select! {
                waited = self.broker.wait_one(queue, mode, wait) => waited?,
                () = self.shutdown.cancelled() => None,
            };
            taken.extend(waited);
        }
        let mut handed = Vec::with_capacity(taken.len());
        for message in taken {
            handed.push(self.hand_out(queue, message, how, &[]).await?);
        }
        Ok(handed)
    }

    /// The next message of any queue of `set` within `wait`, as the set acknowledges.
    pub async fn next_from_set(
        &self,
        set: &ConsumerSet,
        lease: Duration,
        decode: bool,
        wait: Duration,
    ) -> Result<Option<Handed>, ConsumerSetError> {
        // A set holds delivered messages; without a wait, still give the broker a moment to push.
        let wait = wait.max(Duration::from_millis(20));
        let next = tokio::select! {
            next = set.next(&self.broker, wait) => next?,
            () = self.shutdown.cancelled() => None,
        };
        let Some(consumed) = next else {
            return Ok(None);
        };
        let how = HandOut {
            ack: set.ack,
            lease,
            decode,
        };
        let taken = Taken::Unacked(consumed.delivered, consumed.handle);
        let handed = self
            .hand_out(&consumed.queue, taken, how, &[set.leases_held()])
            .await?;
        Ok(Some(handed))
    }

    /// One queue's messages as they arrive, at most `prefetch` unsettled; the stream's leases
    /// go back when it is dropped.
    pub async fn stream_queue(
        &self,
        queue: &str,
        prefetch: u16,
        how: HandOut,
    ) -> Result<Envelopes, broker::Error> {
        let consumers = self
            .broker
            .consume_queues(std::slice::from_ref(&queue.to_owned()), prefetch)
            .await?;
        let deliveries = stream::unfold(consumers, |mut consumers| async move {
            let next = consumers.next().await?;
            Some((next, consumers))
        });
        Ok(self.envelopes(deliveries.boxed(), how, None))
    }

    /// A stream queue's messages from `offset` as they come, each acknowledged once handed on
    /// (a stream keeps them; the ack is credit). A queue that is not a stream is refused.
    pub async fn stream_from(
        &self,
        queue: &str,
        offset: &StreamOffset,
        prefetch: u16,
        decode: bool,
    ) -> Result<Envelopes, broker::Error> {
        let consumers = self.broker.consume_stream(queue, offset, prefetch).await?;
        let name = queue.to_owned();
        let deliveries = stream::unfold(consumers, |mut consumers| async move {
            let next = consumers.next().await?;
            Some((next, consumers))
        })
        // The broker refuses offsets on other queues; a delivery without one is not kept.
        .map(move |next| match next {
            Ok(consumed) if consumed.delivered.offset.is_none() => Err(broker::not_a_stream(&name)),
            other => other,
        });
        let how = HandOut {
            ack: AckPolicy::Auto,
            lease: self.limits.lease_default,
            decode,
        };
        Ok(self.envelopes(deliveries.boxed(), how, None))
    }

    /// A consumer set's messages as they arrive; the set is the stream's until it ends.
    pub async fn stream_set(
        &self,
        set: &Arc<ConsumerSet>,
        lease: Duration,
        decode: bool,
    ) -> Result<Envelopes, ConsumerSetError> {
        let consumers = set.stream(&self.broker).await?;
        let deliveries = stream::unfold(consumers, |mut consumers| async move {
            let next = consumers.next().await?;
            Some((next, consumers))
        });
        let how = HandOut {
            ack: set.ack,
            lease,
            decode,
        };
        Ok(self.envelopes(deliveries.boxed(), how, Some(set.clone())))
    }

    fn envelopes(
        &self,
        deliveries: BoxStream<'static, Result<Consumed, broker::Error>>,
        how: HandOut,
        set: Option<Arc<ConsumerSet>>,
    ) -> Envelopes {
        let reader = StreamReader {
            consumption: self.clone(),
            deliveries,
            scope: LeaseScope::new(self.leases.clone(), STREAM_RECEIPTS),
            set,
            how,
            failed: false,
        };
        stream::unfold(reader, |mut reader| async move {
            let envelope = reader.next().await?;
            Some((envelope, reader))
        })
        .boxed()
    }

    /// Leases an unacknowledged message, recording the receipt in `scopes`, or acknowledges it
    /// when the reader asked for `auto`.
    async fn hand_out(
        &self,
        queue: &str,
        taken: Taken,
        how: HandOut,
        scopes: &[&LeaseScope],
    ) -> Result<Handed, broker::Error> {
        let (handed, to_ack) = self.lease(queue, taken, how, scopes);
        if let Some(handle) = to_ack {
            handle.ack().await?;
        }
        Ok(handed)
    }

    /// The handed-out message, and the handle still to acknowledge in auto mode.
    fn lease(
        &self,
        queue: &str,
        taken: Taken,
        how: HandOut,
        scopes: &[&LeaseScope],
    ) -> (Handed, Option<DeliveryHandle>) {
        let envelope = Envelope::new(taken.delivered(), how.decode).from_queue(queue);
        let body = taken.delivered().body.clone();
        match (taken, how.ack) {
            (Taken::Acked(_), _) => (Handed { envelope, body }, None),
            (Taken::Unacked(_, handle), AckPolicy::Auto) => {
                (Handed { envelope, body }, Some(handle))
            }
            (Taken::Unacked(_, handle), AckPolicy::Lease) => {
                let granted = self.leases.grant(queue, handle, how.lease);
                for scope in scopes {
                    scope.record(&granted.receipt);
                }
                let envelope = envelope.with_lease(granted.receipt, granted.expires_at);
                (Handed { envelope, body }, None)
            }
        }
    }
}

/// An event stream's reading side: deliveries in, envelopes out.
struct StreamReader {
    consumption: Consumption,
    deliveries: BoxStream<'static, Result<Consumed, broker::Error>>,
    /// The stream's own leases, returned when it is dropped.
    scope: LeaseScope,
    /// The consumer set read, whose leases these also are.
    set: Option<Arc<ConsumerSet>>,
    how: HandOut,
    failed: bool,
}

impl StreamReader {
    async fn next(&mut self) -> Option<Result<Envelope, broker::Error>> {
        if self.failed {
            return None;
        }
        let next = tokio::select! {
            next = self.deliveries.next() => next,
            () = self.consumption.shutdown.cancelled() => None,
        }?;
        let consumed = match next {
            Ok(consumed) => consumed,
            Err(error) => {
                // The consumer is gone (lost connection, deleted queue): say why, then end.
                self.failed = true;
                return Some(Err(error));
            }
        };
        let mut scopes = vec![&self.scope];
        if let Some(set) = &self.set {
            scopes.push(set.leases_held());
        }
        let taken = Taken::Unacked(consumed.delivered, consumed.handle);
        let (handed, to_ack) = self
            .consumption
            .lease(&consumed.queue, taken, self.how, &scopes);
        if let Some(handle) = to_ack
            && let Err(error) = handle.ack().await
        {
            tracing::debug!(%error, "ack of a streamed message failed; the broker requeues it");
        }
        Some(Ok(handed.envelope))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ConsumeLimits = ConsumeLimits {
        lease_default: Duration::from_secs(30),
        lease_max: Duration::from_secs(900),
        wait_max: Duration::from_secs(20),
    };

    #[test]
    fn leases_default_and_stay_within_the_maximum() {
        assert_eq!(LIMITS.lease(None), Ok(Duration::from_secs(30)));
        assert_eq!(LIMITS.lease(Some(1)), Ok(Duration::from_secs(1)));
        assert_eq!(LIMITS.lease(Some(900)), Ok(Duration::from_secs(900)));
        for refused in [0, 901, u64::MAX] {
            let Err(Invalid(text)) = LIMITS.lease(Some(refused)) else {
                panic!("lease={refused} was accepted");
            };
            assert!(text.contains("between 1 and 900 seconds"), "{text}");
        }
    }

    #[test]
    fn waits_default_to_none_and_stay_within_the_maximum() {
        assert_eq!(LIMITS.wait(None), Ok(Duration::ZERO));
        assert_eq!(LIMITS.wait(Some(20)), Ok(Duration::from_secs(20)));
        let Err(Invalid(text)) = LIMITS.wait(Some(21)) else {
            panic!("wait=21 was accepted");
        };
        assert!(text.contains("(20 s)"), "{text}");
    }

    #[test]
    fn budgets_default_and_stay_from_a_second_to_the_wait_maximum() {
        let default = Duration::from_secs(5);
        assert_eq!(LIMITS.budget("timeout", None, default), Ok(default));
        assert_eq!(
            LIMITS.budget("timeout", Some(20), default),
            Ok(Duration::from_secs(20))
        );
        for refused in [0, 21] {
            let Err(Invalid(text)) = LIMITS.budget("timeout", Some(refused), default) else {
                panic!("timeout={refused} was accepted");
            };
            assert!(text.contains("from 1 to 20"), "{text}");
        }
    }

    #[test]
    fn ack_policies_read_as_the_api_names_them() {
        let parsed: Vec<AckPolicy> =
            serde_json::from_str(r#"["lease", "auto"]"#).expect("both names parse");
        assert_eq!(parsed, [AckPolicy::Lease, AckPolicy::Auto]);
        assert_eq!(AckPolicy::default(), AckPolicy::Lease);
        assert_eq!(AckPolicy::Auto.name(), "auto");
        assert_eq!(AckPolicy::Lease.mode(), AckMode::Manual);
        assert!(serde_json::from_str::<AckPolicy>(r#""manual""#).is_err());
    }
}
