//! Stream queues read by offset: a consumer that starts at `x-stream-offset`, and the offsets of
//! named readers, kept on the broker itself because RabbitMQ keeps none for AMQP 0-9-1.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, BasicRejectOptions, QueueDeclareOptions,
    QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Confirmation};

use super::queue_consumers::QueueConsumers;
use super::{Broker, Error};

/// Where a stream consumer starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamOffset {
    /// The oldest message the stream still holds.
    First,
    /// The last chunk the stream wrote (RabbitMQ's `last`: a few of the newest messages).
    Last,
    /// Only messages published from now on.
    Next,
    /// This offset, or the first one kept if it was truncated away.
    At(u64),
    /// The first message stored at or after this time (second precision).
    Since(SystemTime),
}

impl StreamOffset {
    fn argument(&self) -> AMQPValue {
        let word = |text: &str| AMQPValue::LongString(LongString::from(text));
        match self {
            StreamOffset::First => word("first"),
            StreamOffset::Last => word("last"),
            StreamOffset::Next => word("next"),
            StreamOffset::At(offset) => {
                AMQPValue::LongLongInt(i64::try_from(*offset).unwrap_or(i64::MAX))
            }
            StreamOffset::Since(at) => AMQPValue::Timestamp(
                at.duration_since(UNIX_EPOCH)
                    .unwrap_or(Duration::ZERO)
                    .as_secs(),
            ),
        }
    }
}

/// The broker's header that carries a stream message's offset.
pub const OFFSET_HEADER: &str = "x-stream-offset";

/// Queues that keep the offset of each named reader of a stream: one message, the newest.
const OFFSETS_PREFIX: &str = "carrot-gateway.offsets.";

impl Broker {
    /// Consumes `queue` from `offset` with manual acks, at most `prefetch` unacknowledged: a
    /// stream delivers as acks give it credit. A queue that is not a stream is refused.
    pub async fn consume_stream(
        &self,
        queue: &str,
        offset: &StreamOffset,
        prefetch: u16,
    ) -> Result<QueueConsumers, Error> {
        let mut arguments = FieldTable::default();
        arguments.insert(ShortString::from(OFFSET_HEADER), offset.argument());
        match self.consume_queue_with(queue, prefetch, arguments).await {
            // Only a stream takes the argument: from now on basic.get and purge are refused.
            Ok(consumers) => {
                self.know_stream(queue);
                Ok(consumers)
            }
            // Classic and quorum queues refuse it: nothing was consumed.
            Err(Error::PreconditionFailed(text)) if text.contains(OFFSET_HEADER) => {
                Err(not_a_stream(queue))
            }
            Err(error) => Err(error),
        }
    }

    /// Remembers that `queue` is a stream, so that basic.get and purge are refused before they
    /// reach the broker (which answers them by closing the connection).
    pub(super) fn know_stream(&self, queue: &str) {
        self.streams().insert(queue.to_owned());
    }

    /// The offset last stored for `reader` of `stream`, if any.
    pub async fn stored_offset(&self, stream: &str, reader: &str) -> Result<Option<u64>, Error> {
        let store = offsets_queue(stream, reader);
        self.on_channel(async |channel| {
            declare_store(channel, &store).await?;
            let get = BasicGetOptions { no_ack: false };
            let Some(message) = channel.basic_get(store.as_str().into(), get).await? else {
                return Ok(None);
            };
            let offset = std::str::from_utf8(&message.delivery.data)
                .ok()
                .and_then(|text| text.parse::<u64>().ok());
            // Put back: the store is read, never consumed.
            let requeue = BasicRejectOptions { requeue: true };
            channel
                .basic_reject(message.delivery.delivery_tag, requeue)
                .await?;
            Ok(offset)
        })
        .await
    }

    /// Forgets the offset stored for `reader` of `stream`: its next read starts over.
    pub async fn forget_offset(&self, stream: &str, reader: &str) -> Result<(), Error> {
        let store = offsets_queue(stream, reader);
        self.on_channel(async |channel| {
            declare_store(channel, &store).await?;
            channel
                .queue_purge(store.as_str().into(), QueuePurgeOptions::default())
                .await?;
            Ok(())
        })
        .await
    }

    /// Stores `offset` as the last one `reader` of `stream` was given, once the broker confirms.
    pub async fn store_offset(&self, stream: &str, reader: &str, offset: u64) -> Result<(), Error> {
        let store = offsets_queue(stream, reader);
        let mut headers = FieldTable::default();
        headers.insert(
            ShortString::from("stream"),
            AMQPValue::LongString(LongString::from(stream)),
        );
        headers.insert(
            ShortString::from("reader"),
            AMQPValue::LongString(LongString::from(reader)),
        );
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_headers(headers);
        // Pooled channels are in confirm mode already.
        let confirmation = self
            .on_channel(async |channel| {
                declare_store(channel, &store).await?;
                channel
                    .basic_publish(
                        ShortString::from(""),
                        store.as_str().into(),
                        BasicPublishOptions::default(),
                        offset.to_string().as_bytes(),
                        properties,
                    )
                    .await?
                    .await
            })
            .await?;
        match confirmation {
            Confirmation::Nack(_) => Err(Error::Unavailable(
                "the broker did not confirm the stored offset".into(),
            )),
            _ => Ok(()),
        }
    }
}

/// Offsets were asked of `queue`, which is not a stream.
pub fn not_a_stream(queue: &str) -> Error {
    Error::NotAStream(format!(
        "queue '{queue}' is not a stream queue: offsets and consumer names apply to streams \
         (x-queue-type: stream); read it without them"
    ))
}

/// A queue name within 255 bytes whatever the stream and reader names: they are hashed, and
/// written in full into each stored message's headers.
fn offsets_queue(stream: &str, reader: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{stream}\0{reader}").as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{OFFSETS_PREFIX}{hex}")
}

/// Durable, and holding only the newest message: a new offset pushes the old one out.
async fn declare_store(channel: &lapin::Channel, store: &str) -> lapin::Result<()> {
    let mut arguments = FieldTable::default();
    arguments.insert(ShortString::from("x-max-length"), AMQPValue::LongInt(1));
    arguments.insert(
        ShortString::from("x-overflow"),
        AMQPValue::LongString(LongString::from("drop-head")),
    );
    channel
        .queue_declare(
            ShortString::from(store),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_the_broker_argument() {
        assert_eq!(
            StreamOffset::First.argument(),
            AMQPValue::LongString("first".into())
        );
        assert_eq!(StreamOffset::At(42).argument(), AMQPValue::LongLongInt(42));
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            StreamOffset::Since(at).argument(),
            AMQPValue::Timestamp(1_700_000_000)
        );
    }

    #[test]
    fn the_offsets_queue_name_is_short_whatever_the_names() {
        let long = "q".repeat(255);
        let name = offsets_queue(&long, &long);
        assert!(name.len() < 64, "{name}");
        assert_ne!(offsets_queue("a", "bc"), offsets_queue("ab", "c"));
    }
}
