//! One shared publishing channel, driven by one task that owns every publish on it.
//!
//! One task keeps the publish order, which fixes each message's delivery tag, and sees every
//! confirm on the channel: only then can a return that lapin attached to the wrong confirm be
//! given back to its own message (see `ledger`). A client that goes away cannot cancel a publish
//! half-sent, because the client's request never holds it.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel};
use tokio::sync::mpsc;

use super::ledger::{Content, Failure, Fate, Ledger, Reply};
use crate::broker::Error;
use crate::broker::channels::{PublishChannel, open_confirm_channel};
use crate::broker::connector::ConnectionPool;
use crate::broker::publish::OPTIONS;

/// Publishes in flight on one channel; more wait in the lane's queue.
pub const WINDOW: usize = 256;

pub struct Job {
    pub exchange: ShortString,
    pub routing_key: ShortString,
    pub body: Bytes,
    pub properties: BasicProperties,
    pub reply: Reply,
}

type Publishing = Pin<Box<dyn Future<Output = Fate> + Send>>;

pub struct Lane {
    connections: ConnectionPool,
    timeout: Duration,
    jobs: mpsc::Receiver<Job>,
    channel: Option<PublishChannel>,
    /// The channel failed: finish what is in flight, then open another.
    broken: bool,
    publishing: Vec<(u64, Publishing)>,
    ledger: Ledger,
}

enum Event {
    Job(Box<Job>),
    Answered,
    Stopped,
}

impl Lane {
    pub fn new(connections: ConnectionPool, timeout: Duration, jobs: mpsc::Receiver<Job>) -> Self {
        Self {
            connections,
            timeout,
            jobs,
            channel: None,
            broken: false,
            publishing: Vec::new(),
            ledger: Ledger::default(),
        }
    }

    /// Runs until every sender of jobs is gone.
    pub async fn run(mut self) {
        loop {
            match poll_fn(|cx| self.poll_event(cx)).await {
                Event::Job(job) => self.start(job).await,
                Event::Answered => {}
                Event::Stopped => break,
            }
        }
        self.ledger.abandon(&Error::Unavailable(
            "the gateway is shutting down".to_owned(),
        ));
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        self.poll_publishing(cx);
        if self.ledger.seal() {
            // lapin resolves a `multiple` ack's confirms one by one while holding the channel's
            // confirm lock, handing out returns as it goes: taking that lock once waits for a
            // batch seen in part to finish, and the second pass collects the rest of it.
            if let Some(channel) = &self.channel {
                barrier(channel, cx);
            }
            self.poll_publishing(cx);
            if self.ledger.settle() {
                self.broken = true;
            }
            if self.broken && self.publishing.is_empty() {
                self.channel = None;
                self.broken = false;
            }
            // Publishes resolved in the second pass are sealed on the next call, which comes
            // at once.
            return Poll::Ready(Event::Answered);
        }
        if self.broken || self.publishing.len() >= WINDOW {
            return Poll::Pending;
        }
        match self.jobs.poll_recv(cx) {
            Poll::Ready(Some(job)) => Poll::Ready(Event::Job(Box::new(job))),
            Poll::Ready(None) => Poll::Ready(Event::Stopped),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Polls every publish in flight: a wake names no one, and a pass is cheap at this size.
    fn poll_publishing(&mut self, cx: &mut Context<'_>) {
        let ledger = &mut self.ledger;
        self.publishing
            .retain_mut(|(id, publishing)| match publishing.as_mut().poll(cx) {
                Poll::Ready(fate) => {
                    ledger.resolve(*id, fate);
                    false
                }
                Poll::Pending => true,
            });
    }

    async fn start(&mut self, job: Box<Job>) {
        // Timed out or disconnected while queued: never sent, so never published.
        if job.reply.is_closed() {
            return;
        }
        let channel = match self.usable_channel().await {
            Ok(channel) => channel,
            Err(error) => {
                let _ = job.reply.send(Err(error));
                return;
            }
        };
        let Job {
            exchange,
            routing_key,
            body,
            properties,
            reply,
        } = *job;
        // The ledger keeps the content to match returns against; the publish sends a copy.
        let sending = (
            exchange.clone(),
            routing_key.clone(),
            body.clone(),
            properties.clone(),
        );
        let id = self.ledger.open(
            Content {
                exchange,
                routing_key,
                body,
                properties,
            },
            reply,
        );
        let (exchange, routing_key, body, properties) = sending;
        let mut publishing: Publishing = Box::pin(async move {
            match channel
                .basic_publish(exchange, routing_key, OPTIONS, &body, properties)
                .await
            {
                Err(error) => Err(Failure { sent: false, error }),
                Ok(confirm) => confirm.await.map_err(|error| Failure { sent: true, error }),
            }
        });
        // The first poll takes the delivery tag and queues the frames; doing it here, before
        // the next job, keeps tags in the ledger's order.
        match poll_fn(|cx| Poll::Ready(publishing.as_mut().poll(cx))).await {
            Poll::Ready(fate) => self.ledger.resolve(id, fate),
            Poll::Pending => self.publishing.push((id, publishing)),
        }
    }

    /// The lane's channel, opened again after a failure or when its connection retired.
    async fn usable_channel(&mut self) -> Result<Channel, Error> {
        let keep = self
            .channel
            .as_ref()
            .is_some_and(|channel| channel.is_usable() || !self.publishing.is_empty());
        if !keep {
            self.channel = None;
            let opened =
                tokio::time::timeout(self.timeout, open_confirm_channel(&self.connections))
                    .await
                    .map_err(|_elapsed| Error::Timeout(self.timeout))??;
            self.channel = Some(opened);
        }
        match &self.channel {
            Some(channel) => Ok(Channel::clone(channel)),
            None => Err(Error::Unavailable("no publishing channel".to_owned())),
        }
    }
}

/// Waits for lapin to finish resolving the confirms of the ack it is handling, if any.
fn barrier(channel: &Channel, cx: &mut Context<'_>) {
    // The first poll takes the confirm lock and, with confirms pending, stops there; nothing
    // else in it matters to the lane, which uses no other `wait_for_confirms`.
    let mut wait = std::pin::pin!(channel.wait_for_confirms());
    let _ = wait.as_mut().poll(cx);
}
