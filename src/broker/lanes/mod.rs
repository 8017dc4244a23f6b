//! Shared publishing channels: concurrent single-message publishes coalesce on a few channels
//! with many confirms in flight each, which the broker confirms far faster than one publish at a
//! time on many channels.
//!
//! A message goes through a lane only when nothing in it can make the broker close the channel
//! (which fails every publish in flight on it): its exchange was seen to take a publish, it sets
//! no `user_id` (the broker checks it against the connection's user), and its body is small
//! enough not to hold up the messages behind it. Everything else takes a channel of its own, and
//! so does a publish while no other is in flight (alone, the hop through a lane only adds to its
//! latency), and a reply to a direct reply-to address, which is published without `mandatory`.

mod known_exchanges;
mod lane;
mod ledger;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use lapin::BasicProperties;
use lapin::types::ShortString;
use tokio::sync::{mpsc, oneshot};

pub use known_exchanges::KnownExchanges;
use lane::{Job, Lane, WINDOW};

use super::Error;
use super::connector::ConnectionPool;
use crate::model::{OutgoingMessage, PublishOutcome};

/// Larger bodies take a channel of their own rather than delay a lane.
const MAX_BODY: usize = 64 * 1024;

pub struct Lanes {
    count: usize,
    connections: ConnectionPool,
    timeout: Duration,
    /// Started on first use, inside the runtime.
    senders: OnceLock<Vec<mpsc::Sender<Job>>>,
    next: AtomicUsize,
    /// Single-message publishes in flight, on either path.
    publishing: AtomicUsize,
    pub known: KnownExchanges,
}

/// One single-message publish in flight, counted until dropped.
pub struct Publishing<'a> {
    lanes: &'a Lanes,
    others: usize,
}

impl Drop for Publishing<'_> {
    fn drop(&mut self) {
        self.lanes.publishing.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Lanes {
    /// `count` lanes, none with 0; each opens its channel when it first publishes.
    pub fn new(count: usize, connections: ConnectionPool, timeout: Duration) -> Self {
        Self {
            count,
            connections,
            timeout,
            senders: OnceLock::new(),
            next: AtomicUsize::new(0),
            publishing: AtomicUsize::new(0),
            known: KnownExchanges::default(),
        }
    }

    /// Counts a publish as in flight until the guard drops.
    pub fn enter(&self) -> Publishing<'_> {
        Publishing {
            lanes: self,
            others: self.publishing.fetch_add(1, Ordering::AcqRel),
        }
    }

    /// Whether this message goes through a lane, sharing its channel with others.
    pub fn takes(
        &self,
        publishing: &Publishing<'_>,
        exchange: &str,
        message: &OutgoingMessage,
    ) -> bool {
        self.count > 0
            && publishing.others > 0
            && !crate::broker::publish::is_reply(exchange, &message.routing_key)
            && message.properties.user_id.is_none()
            && message.body.len() <= MAX_BODY
            && self.known.contains(exchange)
    }

    /// Publishes through the next lane and waits for this message's own confirm.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: Bytes,
        properties: BasicProperties,
    ) -> Result<PublishOutcome, Error> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            exchange: ShortString::from(exchange),
            routing_key: ShortString::from(routing_key),
            body,
            properties,
            reply,
        };
        let stopped = || Error::Unavailable("the publishing lane stopped".to_owned());
        let answered = tokio::time::timeout(self.timeout, async {
            self.sender().send(job).await.map_err(|_| stopped())?;
            answer.await.map_err(|_| stopped())?
        })
        .await;
        answered.unwrap_or(Err(Error::Timeout(self.timeout)))
    }

    fn sender(&self) -> &mpsc::Sender<Job> {
        let senders = self.senders.get_or_init(|| {
            (0..self.count)
                .map(|_| {
                    let (sender, jobs) = mpsc::channel(WINDOW);
                    tokio::spawn(Lane::new(self.connections.clone(), self.timeout, jobs).run());
                    sender
                })
                .collect()
        });
        &senders[self.next.fetch_add(1, Ordering::Relaxed) % senders.len()]
    }
}
