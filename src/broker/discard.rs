//! Discarding only some of a queue's messages: each ready message is taken by basic.get and held
//! unacknowledged, so the next get finds the one behind it; when the scan ends the matches are
//! acknowledged and the rest go back with one `multiple` nack. Until then nothing is settled, so a
//! scan that fails part-way discards nothing: closing its channel requeues all it held.

use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions};
use lapin::types::ShortString;
use tokio::time::Instant;

use super::delivery::{Delivered, queue_frame, unpack};
use super::{Broker, Error};

/// What a filtered discard did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sifted {
    pub discarded: u32,
    /// Looked at and returned to the queue.
    pub kept: u32,
    /// Every message that was ready was looked at: the scan did not stop at its limit or budget.
    pub complete: bool,
}

impl Broker {
    /// Looks at up to `limit` ready messages of `queue` for at most `budget`, discarding those
    /// `discard` accepts and returning the others.
    pub async fn discard_matching(
        &self,
        queue: &str,
        limit: u32,
        budget: Duration,
        discard: impl Fn(&Delivered) -> bool,
    ) -> Result<Sifted, Error> {
        self.refuse_if_stream(queue)?;
        let slot = self.open_consuming_channel(1).await?;
        let sifted = self
            .sift(&slot.channel, queue, limit, budget, discard)
            .await;
        // The close-ok says the broker has processed every settle sent before it; a scan that
        // failed closes the channel too, putting back everything it held.
        let closed = tokio::time::timeout(
            self.inner.timeout,
            slot.channel.close(200, "discard done".into()),
        )
        .await;
        let sifted = sifted?;
        match closed {
            Ok(Ok(())) => Ok(sifted),
            Ok(Err(error)) => Err(self.observe(Error::from(error))),
            Err(_) => Err(Error::Timeout(self.inner.timeout)),
        }
    }

    async fn sift(
        &self,
        channel: &lapin::Channel,
        queue: &str,
        limit: u32,
        budget: Duration,
        discard: impl Fn(&Delivered) -> bool,
    ) -> Result<Sifted, Error> {
        let deadline = Instant::now() + budget;
        let mut matched = Vec::new();
        let mut kept = 0;
        let mut last_kept = None;
        let mut complete = false;
        while matched.len() + (kept as usize) < limit as usize && Instant::now() < deadline {
            let get =
                channel.basic_get(ShortString::from(queue), BasicGetOptions { no_ack: false });
            let got = tokio::time::timeout(self.inner.timeout, get)
                .await
                .map_err(|_| Error::Timeout(self.inner.timeout))?
                .map_err(|error| self.learn_stream(queue, self.observe(error.into())))?;
            let Some(message) = got else {
                complete = true;
                break;
            };
            let left = message.message_count;
            let (delivered, tag) = unpack(message.delivery, Some(left));
            if discard(&delivered) {
                matched.push(tag);
            } else {
                kept += 1;
                last_kept = Some(tag);
            }
            if left == 0 {
                complete = true;
                break;
            }
        }
        // Matches first: the nack that follows on the same channel then covers only the rest.
        for tag in &matched {
            queue_frame(channel.basic_ack(*tag, BasicAckOptions { multiple: false }))?;
        }
        if let Some(tag) = last_kept {
            let options = BasicNackOptions {
                multiple: true,
                requeue: true,
            };
            queue_frame(channel.basic_nack(tag, options))?;
        }
        Ok(Sifted {
            discarded: u32::try_from(matched.len()).unwrap_or(u32::MAX),
            kept,
            complete,
        })
    }
}
