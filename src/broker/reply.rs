//! Request/reply (carrot's Messaging: a publisher and a consumer together) over RabbitMQ's
//! direct reply-to: a request goes out with `reply_to: amq.rabbitmq.reply-to` on a channel that
//! consumes that pseudo-queue, and the responder's reply comes back on the same channel without
//! any queue. Replies find their request by correlation id, so many requests share a channel.
//!
//! A request is published alone on its channel, each confirm awaited before the next publish:
//! lapin pairs a basic.return with whichever confirm resolves next, so only then does a request
//! that no queue took learn it at once. Waiting for the reply holds nothing but its entry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::BasicConsumeOptions;
use lapin::types::{FieldTable, ShortString};
use tokio::sync::oneshot;

use super::channels::{PublishChannel, open_confirm_channel};
use super::delivery::{Delivered, unpack};
use super::fields::to_basic_properties;
use super::{Broker, Error};
use crate::metrics;
use crate::model::{OutgoingMessage, PublishOutcome};

/// The pseudo-queue of direct reply-to.
pub const REPLY_TO: &str = "amq.rabbitmq.reply-to";
/// Channels requests are spread over.
const CHANNELS: usize = 4;

type Waiting = Arc<Mutex<HashMap<String, oneshot::Sender<Delivered>>>>;

/// What became of a request.
#[derive(Debug)]
pub enum Requested {
    Replied(Box<Delivered>),
    /// Confirmed, but no queue took the request, so nobody will answer it.
    Unroutable {
        reply_code: u16,
        reply_text: String,
    },
    /// The broker refused the request.
    Nacked,
    /// Published and confirmed; no reply within the wait.
    NoReply,
}

#[derive(Default)]
pub(super) struct ReplyChannels {
    slots: [tokio::sync::Mutex<Option<ReplyChannel>>; CHANNELS],
    next: AtomicUsize,
}

struct ReplyChannel {
    channel: PublishChannel,
    waiting: Waiting,
}

impl Broker {
    /// Publishes `message` as a request and waits up to `wait` for its reply; the message's
    /// `correlation_id` must be set and not in use by another request waiting here.
    pub async fn request(
        &self,
        exchange: &str,
        message: &OutgoingMessage,
        wait: Duration,
    ) -> Result<Requested, Error> {
        let correlation_id = message
            .properties
            .correlation_id
            .clone()
            .ok_or_else(|| Error::InvalidArgument("a request needs a correlation_id".into()))?;
        let mut properties = message.properties.clone();
        properties.reply_to = Some(REPLY_TO.to_owned());
        let properties = to_basic_properties(&properties);
        self.check_fits(None, &properties)?;
        self.check_ready()?;

        let replies = &self.inner.replies;
        let index = replies.next.fetch_add(1, Ordering::Relaxed) % CHANNELS;
        let mut slot = replies.slots[index].lock().await;
        let waiting = self.reply_channel(&mut slot).await?;
        let mut entry = Entry::register(&waiting, &correlation_id)?;
        metrics::count(metrics::PUBLISHED, 1);
        let published = self
            .publish_request(&mut slot, exchange, message, properties)
            .await;
        drop(slot);
        match published? {
            PublishOutcome::Routed => {}
            PublishOutcome::Unroutable {
                reply_code,
                reply_text,
            } => {
                return Ok(Requested::Unroutable {
                    reply_code,
                    reply_text,
                });
            }
            PublishOutcome::Nacked => return Ok(Requested::Nacked),
        }
        match entry.reply(wait).await {
            Some(Ok(delivered)) => Ok(Requested::Replied(Box::new(delivered))),
            Some(Err(_)) => Err(Error::Unavailable(
                "the channel the reply was to come back on closed; the request was delivered \
                 and may have been handled"
                    .into(),
            )),
            None => Ok(Requested::NoReply),
        }
    }

    /// The slot's channel, opened (with its reply consumer) when it has none that works.
    async fn reply_channel(&self, slot: &mut Option<ReplyChannel>) -> Result<Waiting, Error> {
        if let Some(open) = slot.as_ref()
            && open.channel.status().connected()
        {
            // On a retired connection the channel is replaced once nobody waits on it: dropping
            // it earlier would cut off the replies still to come.
            let idle = open
                .waiting
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty();
            if open.channel.is_usable() || !idle {
                return Ok(open.waiting.clone());
            }
        }
        *slot = None;
        let opened = async {
            let channel = open_confirm_channel(&self.inner.connections).await?;
            // Direct reply-to takes no acknowledgements: its consumer must be no-ack.
            let options = BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            };
            let consumer = channel
                .basic_consume(
                    ShortString::from(REPLY_TO),
                    ShortString::from(""),
                    options,
                    FieldTable::default(),
                )
                .await?;
            Ok::<_, Error>((channel, consumer))
        };
        let (channel, consumer) = tokio::time::timeout(self.inner.timeout, opened)
            .await
            .map_err(|_| Error::Timeout(self.inner.timeout))?
            .map_err(|error| self.observe(error))?;
        let waiting = Waiting::default();
        tokio::spawn(hand_replies(consumer, waiting.clone()));
        *slot = Some(ReplyChannel {
            channel,
            waiting: waiting.clone(),
        });
        Ok(waiting)
    }

    async fn publish_request(
        &self,
        slot: &mut Option<ReplyChannel>,
        exchange: &str,
        message: &OutgoingMessage,
        properties: lapin::BasicProperties,
    ) -> Result<PublishOutcome, Error> {
        let Some(open) = slot.as_ref() else {
            return Err(Error::Unavailable("the reply channel is not open".into()));
        };
        let published = self
            .publish_one(&open.channel, exchange, message, properties)
            .await;
        if published.is_err() {
            // Whatever closed it, or a late confirm to come: the next request opens another.
            *slot = None;
        }
        published
    }
}

/// A request's place among those waiting on its channel, given up when the request ends however
/// it ends (answered, timed out, or dropped by a client that went away).
struct Entry {
    waiting: Waiting,
    correlation_id: String,
    replied: Option<oneshot::Receiver<Delivered>>,
}

impl Entry {
    fn register(waiting: &Waiting, correlation_id: &str) -> Result<Self, Error> {
        let mut table = waiting.lock().unwrap_or_else(PoisonError::into_inner);
        if table.contains_key(correlation_id) {
            return Err(Error::PreconditionFailed(format!(
                "correlation_id {correlation_id:?} is already waiting for its reply; give each \
                 request its own, or leave it out for one the gateway makes"
            )));
        }
        let (reply, replied) = oneshot::channel();
        table.insert(correlation_id.to_owned(), reply);
        Ok(Self {
            waiting: waiting.clone(),
            correlation_id: correlation_id.to_owned(),
            replied: Some(replied),
        })
    }

    /// The reply, or why none will come; `None` when `wait` passed first.
    async fn reply(
        &mut self,
        wait: Duration,
    ) -> Option<Result<Delivered, oneshot::error::RecvError>> {
        let replied = self.replied.as_mut()?;
        tokio::time::timeout(wait, replied).await.ok()
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        drop(self.replied.take());
        let mut table = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        // Only this request's own sender, whose receiver was just dropped: a later request with
        // the same id, registered after this one's reply came, keeps its place.
        if table
            .get(&self.correlation_id)
            .is_some_and(oneshot::Sender::is_closed)
        {
            table.remove(&self.correlation_id);
        }
    }
}

/// Hands each reply to the request waiting for its correlation id, until the consumer ends;
/// then every request still waiting learns that its channel is gone.
async fn hand_replies(mut consumer: lapin::Consumer, waiting: Waiting) {
    while let Some(Ok(delivery)) = consumer.next().await {
        let (delivered, _) = unpack(delivery, None);
        let Some(correlation_id) = delivered.properties.correlation_id.clone() else {
            tracing::debug!("a reply without correlation_id was dropped");
            continue;
        };
        let waiter = waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&correlation_id);
        match waiter {
            Some(waiter) => {
                let _ = waiter.send(delivered);
            }
            None => tracing::debug!(correlation_id, "a reply nobody waits for was dropped"),
        }
    }
    waiting
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
}
