//! Taking messages from queues: basic.get, and a one-message consumer for long polls.
//!
//! Each queue gets a channel of its own for the messages it hands out. Delivery tags belong
//! to the channel, so every unsettled message keeps its channel alive and is settled on it.
//! Keeping queues apart also means a basic.get that the broker refuses (a deleted queue closes
//! the channel) can only disturb messages of that same queue.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicQosOptions};
use lapin::types::{FieldTable, ShortString};
use tokio::sync::oneshot;

use super::channels::connection_error;
use super::delivery::{AckMode, DeliveryHandle, QueueChannel, Taken, unpack};
use super::{Broker, Error};

/// A channel idle this long, holding no unsettled message, is closed.
const IDLE_CHANNEL: Duration = Duration::from_secs(30);

#[derive(Default)]
pub(super) struct QueueChannels {
    by_queue: Mutex<HashMap<String, Arc<QueueChannel>>>,
}

impl QueueChannels {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<QueueChannel>>> {
        self.by_queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Broker {
    async fn queue_channel(&self, queue: &str) -> Result<Arc<QueueChannel>, Error> {
        if let Some(existing) = self.inner.queue_channels.lock().get(queue)
            && existing.is_usable()
        {
            *existing
                .last_used
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
            return Ok(existing.clone());
        }
        // One unacknowledged message per long-poll consumer: it takes exactly one.
        let fresh = self.open_consuming_channel(1).await?;
        let mut channels = self.inner.queue_channels.lock();
        match channels.get(queue) {
            // Another request opened one meanwhile: use it, ours closes when dropped.
            Some(raced) if raced.is_usable() => Ok(raced.clone()),
            _ => {
                channels.insert(queue.to_owned(), fresh.clone());
                Ok(fresh)
            }
        }
    }

    /// Opens a channel for taking messages; `prefetch` bounds each consumer's unacked messages.
    pub(super) async fn open_consuming_channel(
        &self,
        prefetch: u16,
    ) -> Result<Arc<QueueChannel>, Error> {
        if !self.ignore_readiness && !self.is_ready() {
            return Err(Error::Unavailable(
                self.last_error()
                    .unwrap_or_else(|| "not connected to the broker yet".to_owned()),
            ));
        }
        let opened = async {
            let connection = self
                .inner
                .connections
                .get()
                .await
                .map_err(connection_error)?;
            let (channel, state) = connection.create_channel().await?;
            drop(connection);
            channel
                .basic_qos(prefetch, BasicQosOptions { global: false })
                .await?;
            Ok::<_, Error>((channel, state))
        };
        let (channel, connection) = tokio::time::timeout(self.inner.timeout, opened)
            .await
            .map_err(|_| Error::Timeout(self.inner.timeout))?
            .map_err(|error| self.observe(error))?;
        Ok(Arc::new(QueueChannel {
            channel,
            connection,
            unsettled: AtomicUsize::new(0),
            last_used: Mutex::new(Instant::now()),
        }))
    }

    /// basic.consume with manual acknowledgements, limited by the channel's prefetch.
    pub(super) async fn start_consumer(
        &self,
        slot: &QueueChannel,
        queue: &str,
        arguments: FieldTable,
    ) -> Result<lapin::Consumer, Error> {
        tokio::time::timeout(
            self.inner.timeout,
            slot.channel.basic_consume(
                ShortString::from(queue),
                ShortString::from(""),
                BasicConsumeOptions::default(),
                arguments,
            ),
        )
        .await
        .map_err(|_| Error::Timeout(self.inner.timeout))?
        .map_err(|error| self.observe(error.into()))
    }

    /// basic.get: the next message, or `None` when the queue is empty.
    pub async fn get(&self, queue: &str, mode: AckMode) -> Result<Option<Taken>, Error> {
        self.refuse_if_stream(queue)?;
        let slot = self.queue_channel(queue).await?;
        match self.get_on(slot, queue, mode).await {
            // Another request's refusal (a deleted queue, say) closed the shared channel under
            // this one; nothing was taken, so a fresh channel gets the queue's own answer.
            Err(Error::ChannelClosed(_)) => {
                let slot = self.queue_channel(queue).await?;
                self.get_on(slot, queue, mode).await
            }
            got => got,
        }
    }

    /// basic.get on `slot`, whose channel settles what it takes.
    pub(super) async fn get_on(
        &self,
        slot: Arc<QueueChannel>,
        queue: &str,
        mode: AckMode,
    ) -> Result<Option<Taken>, Error> {
        let options = BasicGetOptions {
            no_ack: mode == AckMode::Auto,
        };
        let got = tokio::time::timeout(
            self.inner.timeout,
            slot.channel.basic_get(ShortString::from(queue), options),
        )
        .await
        .map_err(|_| Error::Timeout(self.inner.timeout))?
        .map_err(|error| self.learn_stream(queue, self.observe(error.into())))?;
        Ok(got.map(|message| {
            let (delivered, tag) = unpack(message.delivery, Some(message.message_count));
            match mode {
                AckMode::Auto => Taken::Acked(delivered),
                AckMode::Manual => Taken::Unacked(delivered, DeliveryHandle::new(slot, tag)),
            }
        }))
    }

    /// Waits up to `wait` for one message, returned as soon as the broker delivers it.
    ///
    /// Runs as a task of its own: if the waiting request goes away, the task still finishes
    /// cleanly and any message it received goes back to the queue.
    pub async fn wait_one(
        &self,
        queue: &str,
        mode: AckMode,
        wait: Duration,
    ) -> Result<Option<Taken>, Error> {
        let slot = self.queue_channel(queue).await?;
        let (sender, receiver) = oneshot::channel();
        let broker = self.clone();
        let queue = queue.to_owned();
        tokio::spawn(async move {
            let mut sender = sender;
            let result = broker
                .consume_one(&slot, &queue, mode, wait, &mut sender)
                .await;
            // A closed receiver drops the result: an unsettled message is requeued on drop.
            let _ = sender.send(result);
        });
        receiver
            .await
            .unwrap_or_else(|_| Err(Error::Unavailable("the wait was interrupted".into())))
    }

    async fn consume_one(
        &self,
        slot: &Arc<QueueChannel>,
        queue: &str,
        mode: AckMode,
        wait: Duration,
        requester: &mut oneshot::Sender<Result<Option<Taken>, Error>>,
    ) -> Result<Option<Taken>, Error> {
        let channel = &slot.channel;
        // Acked by hand even in auto mode, so a message is never taken for a gone client.
        let mut consumer = self
            .start_consumer(slot, queue, FieldTable::default())
            .await?;

        let first = tokio::select! {
            delivery = consumer.next() => delivery,
            () = tokio::time::sleep(wait) => None,
            () = requester.closed() => None,
        };
        // Cancel before settling: with prefetch 1 nothing else can arrive in between.
        let _ = channel
            .basic_cancel(consumer.tag(), BasicCancelOptions { nowait: false })
            .await;
        let delivery = match first {
            Some(delivery) => Some(delivery),
            // A delivery may have crossed the cancel; after cancel-ok it is buffered or never.
            None => tokio::time::timeout(Duration::from_millis(50), consumer.next())
                .await
                .ok()
                .flatten(),
        };
        let Some(delivery) = delivery else {
            return Ok(None);
        };
        let delivery = delivery.map_err(|error| self.observe(error.into()))?;
        let (delivered, tag) = unpack(delivery, None);
        let handle = DeliveryHandle::new(slot.clone(), tag).in_stream(delivered.offset.is_some());
        match mode {
            AckMode::Manual => Ok(Some(Taken::Unacked(delivered, handle))),
            AckMode::Auto if requester.is_closed() => Ok(None),
            AckMode::Auto => {
                handle.ack().await?;
                Ok(Some(Taken::Acked(delivered)))
            }
        }
    }

    /// Closes idle queue channels every second until `stop`.
    pub fn spawn_idle_channel_closer(
        &self,
        stop: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let broker = self.clone();
        crate::upkeep::spawn_every(Duration::from_secs(1), stop, move || {
            broker.close_idle_channels();
            std::future::ready(())
        })
    }

    /// Closes queue channels that hold nothing and were not used for a while.
    pub fn close_idle_channels(&self) {
        let now = Instant::now();
        self.inner.queue_channels.lock().retain(|_, slot| {
            let idle = now.duration_since(
                *slot
                    .last_used
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            slot.channel.status().connected()
                && (slot.unsettled.load(Ordering::Acquire) > 0 || idle < IDLE_CHANNEL)
        });
    }

    /// Forgets every queue channel; their unsettled messages go back when the channels close.
    pub(super) fn drop_queue_channels(&self) {
        self.inner.queue_channels.lock().clear();
    }
}
