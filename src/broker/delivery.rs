//! What a taken message is: its content in the gateway's terms, and the handle that settles
//! it on the channel it came on.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use futures_util::FutureExt;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicRejectOptions};

use super::Error;
use super::connector::ConnectionState;
use super::fields::from_basic_properties;
use crate::metrics;
use crate::model::Properties;

/// A message taken from a queue, in the gateway's terms.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub body: Bytes,
    pub exchange: String,
    pub routing_key: String,
    pub redelivered: bool,
    /// Messages left in the queue, when the broker said (basic.get does, consumers don't).
    pub message_count: Option<u32>,
    /// Its place in a stream queue (the broker's `x-stream-offset` header); none elsewhere.
    pub offset: Option<u64>,
    /// The broker's tag for it on the channel it came on.
    pub delivery_tag: u64,
    pub properties: Properties,
}

/// How a taken message is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// Removed from the queue on delivery (at most once).
    Auto,
    /// Stays unacknowledged until settled through its `DeliveryHandle` (at least once).
    Manual,
}

pub(super) struct QueueChannel {
    pub(super) channel: Channel,
    pub(super) connection: Arc<ConnectionState>,
    /// Handles not settled yet: the channel must stay open for them.
    pub(super) unsettled: AtomicUsize,
    pub(super) last_used: Mutex<Instant>,
}

impl QueueChannel {
    /// Open, and on a connection that may still open channels: a queue channel on a retired one
    /// only serves the messages it already handed out, so that the connection can close.
    pub(super) fn is_usable(&self) -> bool {
        self.channel.status().connected() && !self.connection.is_retired()
    }
}

/// An unsettled message: settle it once, or dropping it puts the message back in its queue.
pub struct DeliveryHandle {
    channel: Arc<QueueChannel>,
    tag: u64,
    settled: bool,
    /// From a stream queue, which keeps every message and answers a reject by closing the
    /// whole connection: settling it any way acks it, which only gives the consumer credit.
    stream: bool,
}

impl std::fmt::Debug for DeliveryHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryHandle")
            .field("tag", &self.tag)
            .finish()
    }
}

impl DeliveryHandle {
    pub(super) fn new(channel: Arc<QueueChannel>, tag: u64) -> Self {
        channel.unsettled.fetch_add(1, Ordering::AcqRel);
        Self {
            channel,
            tag,
            settled: false,
            stream: false,
        }
    }

    /// Marks a delivery of a stream queue (see `stream`).
    pub(super) fn in_stream(mut self, stream: bool) -> Self {
        self.stream = stream;
        self
    }

    /// False once the channel it came on is gone: the broker has put the message back itself.
    pub fn is_live(&self) -> bool {
        self.channel.channel.status().connected()
    }

    /// Removes the message from its queue.
    pub async fn ack(mut self) -> Result<(), Error> {
        self.settled = true;
        let channel = &self.channel.channel;
        ensure_open(channel)?;
        queue_frame(channel.basic_ack(self.tag, BasicAckOptions { multiple: false }))?;
        metrics::count(metrics::ACKED, 1);
        Ok(())
    }

    /// Puts the message back (`requeue`), or drops it, dead-lettering it if the queue has a DLX.
    pub async fn reject(mut self, requeue: bool) -> Result<(), Error> {
        if self.stream {
            return self.ack().await;
        }
        self.settled = true;
        let channel = &self.channel.channel;
        ensure_open(channel)?;
        queue_frame(channel.basic_reject(self.tag, BasicRejectOptions { requeue }))?;
        metrics::count(
            if requeue {
                metrics::REQUEUED
            } else {
                metrics::REJECTED
            },
            1,
        );
        Ok(())
    }
}

impl Drop for DeliveryHandle {
    fn drop(&mut self) {
        self.channel.unsettled.fetch_sub(1, Ordering::AcqRel);
        if self.settled {
            return;
        }
        let channel = self.channel.channel.clone();
        let tag = self.tag;
        if self.stream {
            let _ = queue_frame(channel.basic_ack(tag, BasicAckOptions { multiple: false }));
            return;
        }
        // Nobody will settle it: hand it back to the queue rather than leave it invisible.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if channel
                    .basic_reject(tag, BasicRejectOptions { requeue: true })
                    .await
                    .is_ok()
                {
                    metrics::count(metrics::REQUEUED, 1);
                }
            });
        }
    }
}

/// Hands a settling frame to the channel without waiting for the connection's I/O thread to
/// write it. The broker confirms no ack or reject, so a written frame promises no more than a
/// queued one (a connection lost right after either requeues the message), and not waiting saves
/// each settle a hop back from that thread. Refusals the channel knows of come back at once.
pub(super) fn queue_frame(settle: impl Future<Output = lapin::Result<()>>) -> Result<(), Error> {
    match settle.now_or_never() {
        Some(Err(error)) => Err(error.into()),
        Some(Ok(())) | None => Ok(()),
    }
}

/// After the broker closed the channel it requeued the message itself; lapin would not say so.
fn ensure_open(channel: &Channel) -> Result<(), Error> {
    if channel.status().connected() {
        Ok(())
    } else {
        Err(Error::LeaseLost)
    }
}

/// A message taken from a queue.
#[derive(Debug)]
pub enum Taken {
    /// Removed from the queue already (auto acknowledgement).
    Acked(Delivered),
    /// Still in the queue, unacknowledged, until its handle is settled.
    Unacked(Delivered, DeliveryHandle),
}

impl Taken {
    pub fn delivered(&self) -> &Delivered {
        match self {
            Taken::Acked(delivered) | Taken::Unacked(delivered, _) => delivered,
        }
    }
}

/// The message in the gateway's terms, and the delivery tag that settles it on its channel.
pub(super) fn unpack(delivery: Delivery, message_count: Option<u32>) -> (Delivered, u64) {
    metrics::count(metrics::DELIVERED, 1);
    let delivered = Delivered {
        body: Bytes::from(delivery.data),
        exchange: delivery.exchange.to_string(),
        routing_key: delivery.routing_key.to_string(),
        redelivered: delivery.redelivered,
        message_count,
        offset: stream_offset(&delivery.properties),
        delivery_tag: delivery.delivery_tag,
        properties: from_basic_properties(&delivery.properties),
    };
    (delivered, delivery.delivery_tag)
}

fn stream_offset(properties: &lapin::BasicProperties) -> Option<u64> {
    use lapin::types::AMQPValue;
    let headers = properties.headers().as_ref()?;
    let value = headers.inner().get(super::streams::OFFSET_HEADER)?;
    match value {
        AMQPValue::LongLongInt(offset) => u64::try_from(*offset).ok(),
        AMQPValue::LongInt(offset) => u64::try_from(*offset).ok(),
        AMQPValue::LongUInt(offset) => Some(u64::from(*offset)),
        _ => None,
    }
}
