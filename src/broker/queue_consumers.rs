//! A channel consuming one or more queues under basic.qos: carrot's iterconsume and ConsumerSet.
//!
//! Deliveries stay unacknowledged until their handle is settled, so the prefetch bounds what the
//! gateway holds: a slow reader stops the broker's deliveries. Dropping the subscription drops
//! its consumers; the channel closes once no handle needs it, and the broker requeues whatever
//! was still unacknowledged.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;

use futures_util::stream::{SelectAll, Stream, StreamExt};
use lapin::message::Delivery;
use lapin::options::BasicCancelOptions;
use lapin::types::{FieldTable, ShortString};

use super::delivery::{Delivered, DeliveryHandle, QueueChannel, unpack};
use super::{Broker, Error};

type Deliveries = Pin<Box<dyn Stream<Item = (String, lapin::Result<Delivery>)> + Send>>;

/// A delivery of a consumer: always unacknowledged until its handle is settled.
#[derive(Debug)]
pub struct Consumed {
    pub queue: String,
    pub delivered: Delivered,
    pub handle: DeliveryHandle,
}

pub struct QueueConsumers {
    slot: Arc<QueueChannel>,
    /// Consumer tag of each queue still consumed.
    tags: HashMap<String, ShortString>,
    cancelled: HashSet<String>,
    deliveries: SelectAll<Deliveries>,
}

impl Broker {
    /// Consumes every queue on one new channel; fails whole if any queue cannot be consumed.
    pub async fn consume_queues(
        &self,
        queues: &[String],
        prefetch: u16,
    ) -> Result<QueueConsumers, Error> {
        self.consume_with(queues, prefetch, FieldTable::default())
            .await
    }

    /// One queue, its consumer started with `arguments` (`x-stream-offset`, say).
    pub(super) async fn consume_queue_with(
        &self,
        queue: &str,
        prefetch: u16,
        arguments: FieldTable,
    ) -> Result<QueueConsumers, Error> {
        self.consume_with(&[queue.to_owned()], prefetch, arguments)
            .await
    }

    async fn consume_with(
        &self,
        queues: &[String],
        prefetch: u16,
        arguments: FieldTable,
    ) -> Result<QueueConsumers, Error> {
        let slot = self.open_consuming_channel(prefetch).await?;
        let mut tags = HashMap::new();
        let mut deliveries = SelectAll::new();
        for queue in queues {
            let consumer = self.start_consumer(&slot, queue, arguments.clone()).await?;
            tags.insert(queue.clone(), consumer.tag());
            let queue = queue.clone();
            let tagged: Deliveries =
                Box::pin(consumer.map(move |delivery| (queue.clone(), delivery)));
            deliveries.push(tagged);
        }
        Ok(QueueConsumers {
            slot,
            tags,
            cancelled: HashSet::new(),
            deliveries,
        })
    }
}

impl QueueConsumers {
    /// The next delivery; `None` when every consumer has ended. In auto mode the caller acks
    /// once it handed the message on, so a message is never taken for a reader that is gone.
    pub async fn next(&mut self) -> Option<Result<Consumed, Error>> {
        loop {
            let (queue, delivery) = self.deliveries.next().await?;
            let delivery = match delivery {
                Ok(delivery) => delivery,
                Err(error) => return Some(Err(error.into())),
            };
            let (delivered, tag) = unpack(delivery, None);
            let handle =
                DeliveryHandle::new(self.slot.clone(), tag).in_stream(delivered.offset.is_some());
            if self.cancelled.contains(&queue) {
                // Crossed the cancel: its handle, dropped here, puts it back in the queue.
                continue;
            }
            return Some(Ok(Consumed {
                queue,
                delivered,
                handle,
            }));
        }
    }

    pub fn queues(&self) -> impl Iterator<Item = &String> {
        self.tags.keys()
    }

    pub fn is_alive(&self) -> bool {
        self.slot.channel.status().connected()
    }

    /// Stops every consumer, so the broker delivers nothing more here, not even messages
    /// that are requeued from this channel afterwards.
    pub async fn cancel_all(&mut self) -> Result<(), Error> {
        let queues: Vec<String> = self.tags.keys().cloned().collect();
        for queue in queues {
            self.cancel_queue(&queue).await?;
        }
        Ok(())
    }

    /// Closes the channel now; the broker requeues what it delivered and nobody settled.
    pub async fn close(self) -> Result<(), Error> {
        if self.is_alive() {
            self.slot
                .channel
                .close(200, "consumer stopped".into())
                .await?;
        }
        Ok(())
    }

    /// carrot's cancel_by_queue; `Ok(false)` when the queue was not consumed here.
    pub async fn cancel_queue(&mut self, queue: &str) -> Result<bool, Error> {
        let Some(tag) = self.tags.remove(queue) else {
            return Ok(false);
        };
        self.cancelled.insert(queue.to_owned());
        self.slot
            .channel
            .basic_cancel(tag, BasicCancelOptions { nowait: false })
            .await?;
        Ok(true)
    }
}
