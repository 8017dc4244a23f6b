//! A subscription's consumer: takes messages as slots free up and hands each to a delivery.
//!
//! The slots, not only the prefetch, bound what is in flight: after a reconnect the old
//! channel's deliveries may still be finishing while the new channel delivers.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::delivery::{Context, deliver};
use crate::broker::{Broker, QueueConsumers};

/// Waits between attempts to consume the queue again, doubling up to the cap.
const FIRST_PAUSE: Duration = Duration::from_millis(200);
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// Runs until `stop`; then waits for the deliveries in flight, which end when settled or when
/// `context.requeue` sends their messages back.
///
/// `started`: consumers already opened by the caller, who wanted to report errors at once.
pub async fn run(
    broker: Broker,
    context: Arc<Context>,
    stop: CancellationToken,
    mut started: Option<QueueConsumers>,
) {
    let spec = &context.spec;
    let live = &context.live;
    let slots = Arc::new(Semaphore::new(usize::from(spec.concurrency)));
    let mut deliveries = JoinSet::new();
    let mut pause = FIRST_PAUSE;
    let queues = [spec.queue.clone()];
    let mut current: Option<QueueConsumers> = None;
    'consume: while !stop.is_cancelled() {
        let consumed = match started.take() {
            Some(consumers) => Ok(consumers),
            None => tokio::select! {
                biased;
                () = stop.cancelled() => break,
                consumed = broker.consume_queues(&queues, spec.concurrency) => consumed,
            },
        };
        match consumed {
            // Not an error of this subscription: /readyz tells why, and it resumes by itself.
            Err(crate::broker::Error::Unavailable(_)) if !broker.is_ready() => {}
            Err(error) => live.record_error(format!(
                "cannot consume queue {:?}: {error}; trying again",
                spec.queue
            )),
            Ok(consumers) => {
                let consumers = current.insert(consumers);
                live.set_consuming(true);
                pause = FIRST_PAUSE;
                loop {
                    while deliveries.try_join_next().is_some() {}
                    let slot = tokio::select! {
                        biased;
                        () = stop.cancelled() => break 'consume,
                        slot = slots.clone().acquire_owned() => slot,
                    };
                    let Ok(slot) = slot else { break 'consume };
                    let next = tokio::select! {
                        biased;
                        () = stop.cancelled() => break 'consume,
                        next = consumers.next() => next,
                    };
                    match next {
                        Some(Ok(consumed)) => {
                            let (delivered, handle) = (consumed.delivered, consumed.handle);
                            deliveries.spawn(deliver(context.clone(), delivered, handle, slot));
                        }
                        Some(Err(error)) => {
                            live.record_error(format!(
                                "consuming queue {:?} stopped: {error}; consuming again",
                                spec.queue
                            ));
                            break;
                        }
                        None => {
                            live.record_error(format!(
                                "the broker cancelled the consumer of queue {:?} (deleted?); \
                                 consuming again",
                                spec.queue
                            ));
                            break;
                        }
                    }
                }
                current = None;
            }
        }
        live.set_consuming(false);
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(MAX_PAUSE);
    }
    live.set_consuming(false);
    // In this order, so that nothing requeued comes back to this channel and nothing is left
    // in flight: stop consuming, let the deliveries end (settled, or requeued once told to),
    // close the channel.
    if let Some(consumers) = current.as_mut() {
        let _ = consumers.cancel_all().await;
    }
    while deliveries.join_next().await.is_some() {}
    if let Some(consumers) = current
        && let Err(error) = consumers.close().await
    {
        tracing::debug!(%error, "closing a stopped subscription's channel");
    }
}
