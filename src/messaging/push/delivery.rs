//! One message's way to the app: attempts, waits between them, and its settlement.
//!
//! The message stays unacknowledged in the broker the whole time, so nothing is lost if the
//! gateway dies half-way: the broker delivers it again. It is acked only after a 2xx.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::live::Live;
use super::retry::delay;
use super::spec::SubscriptionSpec;
use super::webhook::{Attempt, Payload, attempt};
use crate::broker::{Delivered, DeliveryHandle};
use crate::metrics as m;

/// What every delivery of one subscription shares.
pub struct Context {
    pub spec: SubscriptionSpec,
    pub client: reqwest::Client,
    pub live: Arc<Live>,
    /// The longest a message may be held; beyond it the broker's consumer timeout looms.
    pub hold_max: Duration,
    /// Cancelled when the messages in flight must go back to the queue: at once on DELETE,
    /// after the grace period at shutdown.
    pub requeue: CancellationToken,
}

enum Settlement {
    Ack,
    DeadLetter(String),
    Requeue,
}

/// Delivers one message, holding one of the subscription's concurrency slots until settled.
pub async fn deliver(
    context: Arc<Context>,
    delivered: Delivered,
    handle: DeliveryHandle,
    _slot: OwnedSemaphorePermit,
) {
    let live = &context.live;
    let _in_flight = live.start();
    let spec = &context.spec;
    let name = spec.name.clone();
    let payload = Payload::new(spec.format, &spec.queue, &delivered);
    let taken_at = Instant::now();
    let mut number = 1;
    let settlement = loop {
        let started = Instant::now();
        let outcome = tokio::select! {
            biased;
            () = context.requeue.cancelled() => break Settlement::Requeue,
            outcome = attempt(&context.client, &spec.endpoint, &payload, number, spec.timeout()) => outcome,
        };
        metrics::histogram!(m::PUSH_ATTEMPT_DURATION, "subscription" => name.clone())
            .record(started.elapsed().as_secs_f64());
        let result = match &outcome {
            Attempt::Delivered => "delivered",
            Attempt::Refused(_) => "refused",
            Attempt::Failed { .. } => "failed",
        };
        metrics::counter!(m::PUSH_ATTEMPTS, "subscription" => name.clone(), "result" => result)
            .increment(1);
        let (reason, after) = match outcome {
            Attempt::Delivered => break Settlement::Ack,
            Attempt::Refused(reason) => break Settlement::DeadLetter(reason),
            Attempt::Failed { reason, after } => (reason, after),
        };
        if number >= spec.max_attempts {
            break Settlement::DeadLetter(format!(
                "{reason} (attempt {number} of {}; giving up)",
                spec.max_attempts
            ));
        }
        let wait = delay(spec.backoff, number, after);
        if taken_at.elapsed() + wait + spec.timeout() > context.hold_max {
            break Settlement::DeadLetter(format!(
                "{reason} (another attempt would hold the message past {:?}; giving up)",
                context.hold_max
            ));
        }
        live.record_error(format!(
            "{reason} (attempt {number} of {}; next in {wait:?})",
            spec.max_attempts
        ));
        tokio::select! {
            biased;
            () = context.requeue.cancelled() => break Settlement::Requeue,
            () = tokio::time::sleep(wait) => {}
        }
        if !handle.is_live() {
            // The broker took the message back with its channel and delivers it again.
            live.record_error(format!(
                "the broker channel closed while retrying a message of {:?}; the broker \
                 delivers it again",
                spec.queue
            ));
            return;
        }
        live.retried();
        number += 1;
    };
    settle(&context, handle, settlement).await;
}

async fn settle(context: &Context, handle: DeliveryHandle, settlement: Settlement) {
    let live = &context.live;
    let settled = match &settlement {
        Settlement::Ack => handle.ack().await,
        Settlement::DeadLetter(reason) => {
            live.record_error(reason.clone());
            handle.reject(false).await
        }
        Settlement::Requeue => handle.reject(true).await,
    };
    if let Err(error) = settled {
        live.record_error(format!(
            "settling a message of {:?} failed ({error}); the broker delivers it again",
            context.spec.queue
        ));
        return;
    }
    let outcome = match settlement {
        Settlement::Ack => {
            live.delivered();
            "acked"
        }
        Settlement::DeadLetter(_) => {
            live.dead_lettered();
            "dead_lettered"
        }
        Settlement::Requeue => "requeued",
    };
    metrics::counter!(m::PUSH_MESSAGES, "subscription" => context.spec.name.clone(), "outcome" => outcome)
        .increment(1);
}
