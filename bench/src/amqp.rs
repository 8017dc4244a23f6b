//! Raw AMQP with lapin: the physical limit, plus queue set-up and pre-filling for every scenario.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::join_all;
use futures_util::stream::FuturesUnordered;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use crate::stats::{Tally, Window};

/// Per AMQP operation: a broker that does not answer in this time fails the operation.
const OP_TIMEOUT: Duration = Duration::from_secs(15);

pub fn properties() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(ShortString::from("text/plain"))
}

pub struct Amqp {
    connections: Vec<Connection>,
}

async fn timed<T, E: std::fmt::Display>(
    what: &str,
    future: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(OP_TIMEOUT, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(format!("{what}: {error}")),
        Err(_) => Err(format!(
            "{what}: no answer within {} s",
            OP_TIMEOUT.as_secs()
        )),
    }
}

impl Amqp {
    pub async fn connect(url: &str, count: usize) -> Result<Self, String> {
        let mut connections = Vec::with_capacity(count);
        for index in 0..count.max(1) {
            let properties = ConnectionProperties::default()
                .with_connection_name(format!("carrot-bench-{index}").into());
            connections.push(timed("AMQP connect", Connection::connect(url, properties)).await?);
        }
        Ok(Self { connections })
    }

    /// A channel on the connections in turn; `confirm` puts it in publisher-confirm mode.
    pub async fn channel(&self, index: usize, confirm: bool) -> Result<Channel, String> {
        let connection = &self.connections[index % self.connections.len()];
        let channel = timed("channel.open", connection.create_channel()).await?;
        if confirm {
            timed(
                "confirm.select",
                channel.confirm_select(ConfirmSelectOptions::default()),
            )
            .await?;
        }
        Ok(channel)
    }

    pub async fn declare(&self, queue: &str) -> Result<(), String> {
        let channel = self.channel(0, false).await?;
        timed(
            "queue.declare",
            channel.queue_declare(
                ShortString::from(queue),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            ),
        )
        .await?;
        close(channel).await;
        Ok(())
    }

    /// Deletes the queue with whatever it holds; a missing queue is fine.
    pub async fn delete(&self, queue: &str) -> Result<u32, String> {
        let channel = self.channel(0, false).await?;
        let deleted = timed(
            "queue.delete",
            channel.queue_delete(ShortString::from(queue), QueueDeleteOptions::default()),
        )
        .await;
        close(channel).await;
        deleted
    }

    /// Publishes `count` persistent messages to `queue` (default exchange), confirmed, on a few
    /// channels with windows of confirms in flight.
    pub async fn prefill(&self, queue: &str, count: u64, body: &Bytes) -> Result<(), String> {
        const CHANNELS: u64 = 8;
        const WINDOW: u64 = 200;
        let mut tasks = Vec::new();
        for index in 0..CHANNELS {
            let share = count / CHANNELS + u64::from(index < count % CHANNELS);
            let channel = self.channel(index as usize, true).await?;
            let queue = queue.to_owned();
            let body = body.clone();
            tasks.push(tokio::spawn(async move {
                let mut left = share;
                while left > 0 {
                    let batch = left.min(WINDOW);
                    publish_window(&channel, &queue, &body, batch).await?;
                    left -= batch;
                }
                close(channel).await;
                Ok::<_, String>(())
            }));
        }
        for task in tasks {
            task.await.map_err(|error| error.to_string())??;
        }
        Ok(())
    }

    pub async fn close(&self) {
        for connection in &self.connections {
            let _ = connection.close(200, ShortString::from("bye")).await;
        }
    }
}

async fn close(channel: Channel) {
    let _ = tokio::time::timeout(OP_TIMEOUT, channel.close(200, ShortString::from("done"))).await;
}

/// Publishes `count` messages back to back, then waits for all their confirms.
async fn publish_window(
    channel: &Channel,
    queue: &str,
    body: &[u8],
    count: u64,
) -> Result<(), String> {
    let mut confirms = Vec::with_capacity(count as usize);
    for _ in 0..count {
        confirms.push(
            timed(
                "basic.publish",
                channel.basic_publish(
                    ShortString::from(""),
                    ShortString::from(queue),
                    BasicPublishOptions::default(),
                    body,
                    properties(),
                ),
            )
            .await?,
        );
    }
    let confirmed = timed("confirms", async {
        Ok::<_, String>(join_all(confirms).await)
    })
    .await?;
    let mut nacked = 0;
    for confirmation in confirmed {
        match confirmation {
            Ok(confirmation) if confirmation.is_ack() => {}
            Ok(_) => nacked += 1,
            Err(error) => return Err(format!("confirm: {error}")),
        }
    }
    if nacked > 0 {
        return Err(format!("{nacked} of {count} publishes nacked"));
    }
    Ok(())
}

/// One publisher: publish, wait for the confirm, repeat.
pub async fn publish_one_at_a_time(
    channel: Channel,
    queue: Arc<str>,
    body: Bytes,
    window: Window,
) -> Tally {
    let mut tally = Tally::default();
    while !window.over() {
        let started = Instant::now();
        match publish_window(&channel, &queue, &body, 1).await {
            Ok(()) => tally.ok(&window, started, 1),
            Err(error) => {
                tally.failure(error);
                break; // the channel is closed or stuck
            }
        }
    }
    close(channel).await;
    tally
}

/// One publisher with `size` publishes in flight: publish them all, wait for every confirm.
pub async fn publish_pipelined(
    channel: Channel,
    queue: Arc<str>,
    body: Bytes,
    size: u64,
    window: Window,
) -> Tally {
    let mut tally = Tally::default();
    while !window.over() {
        let started = Instant::now();
        match publish_window(&channel, &queue, &body, size).await {
            Ok(()) => tally.ok(&window, started, size),
            Err(error) => {
                tally.failure(error);
                break;
            }
        }
    }
    close(channel).await;
    tally
}

/// One getter: basic.get (with `no_ack`, or followed by basic.ack), until the queue is empty.
pub async fn get(channel: Channel, queue: Arc<str>, no_ack: bool, window: Window) -> Tally {
    let mut tally = Tally::default();
    while !window.over() {
        let started = Instant::now();
        let got = timed(
            "basic.get",
            channel.basic_get(ShortString::from(&*queue), BasicGetOptions { no_ack }),
        )
        .await;
        match got {
            Ok(Some(message)) => {
                if !no_ack {
                    let acked = timed(
                        "basic.ack",
                        channel
                            .basic_ack(message.delivery.delivery_tag, BasicAckOptions::default()),
                    )
                    .await;
                    if let Err(error) = acked {
                        tally.failure(error);
                        break;
                    }
                }
                tally.ok(&window, started, 1);
            }
            Ok(None) => {
                tally.drained = true;
                break;
            }
            Err(error) => {
                tally.failure(error);
                break;
            }
        }
    }
    close(channel).await;
    tally
}

/// One consumer with `prefetch`, acking each delivery (acks pipelined), until `expected` arrived or the queue
/// stayed quiet for `idle`.
pub async fn consume(
    channel: Channel,
    queue: Arc<str>,
    prefetch: u16,
    expected: u64,
    idle: Duration,
    window: Window,
) -> Tally {
    let mut tally = Tally::default();
    let started = async {
        timed(
            "basic.qos",
            channel.basic_qos(prefetch, BasicQosOptions::default()),
        )
        .await?;
        timed(
            "basic.consume",
            channel.basic_consume(
                ShortString::from(&*queue),
                ShortString::from(""),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
    }
    .await;
    let mut consumer = match started {
        Ok(consumer) => consumer,
        Err(error) => {
            tally.failure(error);
            return tally;
        }
    };
    // Every delivery is acked on its own, as the gateway's stream does, but without waiting
    // for one ack to be written before taking the next delivery.
    let mut acks = FuturesUnordered::new();
    let mut received = 0;
    while !window.over() {
        tokio::select! {
            Some(acked) = acks.next(), if !acks.is_empty() => {
                if let Err(error) = acked {
                    tally.failure(format!("basic.ack: {error}"));
                    break;
                }
            }
            next = tokio::time::timeout(idle, consumer.next()) => match next {
                Err(_) => {
                    tally.drained = true;
                    break;
                }
                Ok(None) => {
                    tally.failure("the broker cancelled the consumer");
                    break;
                }
                Ok(Some(Err(error))) => {
                    tally.failure(format!("delivery: {error}"));
                    break;
                }
                Ok(Some(Ok(delivery))) => {
                    let acker = delivery.acker;
                    acks.push(async move { acker.ack(BasicAckOptions::default()).await });
                    received += 1;
                    tally.arrived(&window, 1);
                    if received >= expected {
                        tally.drained = true;
                        break;
                    }
                }
            },
        }
    }
    let pending = async {
        while let Some(acked) = acks.next().await {
            if let Err(error) = acked {
                return Err(format!("basic.ack: {error}"));
            }
        }
        Ok(())
    };
    if let Err(error) = timed("acks", pending).await {
        tally.failure(error);
    }
    // Closing the channel cancels the consumer; anything unacked goes back to the queue.
    close(channel).await;
    tally
}
