//! Prefetch windows: while several requests take from one queue at once, its ready messages come
//! from one consumer that the broker keeps filled, instead of a basic.get round trip each.
//!
//! A window opens only on a busy queue, and only after a basic.get on it succeeded, so a queue
//! the gateway may not consume (a stream, another connection's exclusive queue) never gets one.
//! Deliveries wait in the consumer's buffer until a request takes them; when the buffer is empty
//! the request falls back to basic.get on the window's own channel, so nothing the broker had
//! pushed before its answer is left behind. A window closes once no request asked for a while,
//! when its consumer ends (deleted queue, lost connection) and when the gateway stops: it cancels
//! its consumer and rejects what it still holds back into the queue. Leased messages keep its
//! channel open until they are settled; they also hold its credit, so a window whose messages are
//! all leased is empty and requests take by basic.get.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions};
use tokio::sync::{Notify, watch};

use super::delivery::{AckMode, DeliveryHandle, QueueChannel, Taken, unpack};
use super::{Broker, Error};
use crate::metrics;

/// A window nobody took from for this long gives its messages back.
const IDLE: Duration = Duration::from_millis(200);
/// After a window failed to open, requests use basic.get this long before another try.
const RETRY_OPEN: Duration = Duration::from_secs(1);
/// How long a delivery that crossed the cancel may take to arrive.
const CROSSING: Duration = Duration::from_millis(50);

/// The windows of every queue, and how many requests are taking from each.
#[derive(Default)]
pub(super) struct Windows {
    /// Messages each window holds at most (basic.qos); 0 never opens one.
    size: u16,
    by_queue: Mutex<HashMap<String, Demand>>,
}

#[derive(Default)]
struct Demand {
    taking: usize,
    auto: Slot,
    manual: Slot,
}

impl Demand {
    fn slot(&mut self, mode: AckMode) -> &mut Slot {
        match mode {
            AckMode::Auto => &mut self.auto,
            AckMode::Manual => &mut self.manual,
        }
    }
}

/// Auto and lease takes have windows of their own: an auto window acknowledges everything it
/// hands out, and a lease window's credit is held by its leases.
#[derive(Default)]
enum Slot {
    #[default]
    Closed,
    Opening,
    Open(Arc<Window>),
    Failed(Instant),
}

impl Windows {
    pub(super) fn new(size: u16) -> Self {
        Self {
            size,
            by_queue: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Demand>> {
        self.by_queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn open(&self, queue: &str, mode: AckMode) -> Option<Arc<Window>> {
        match self.lock().get_mut(queue)?.slot(mode) {
            Slot::Open(window) => Some(window.clone()),
            _ => None,
        }
    }

    /// Marks the window as opening if the queue has none and may get one now.
    fn claim_opening(&self, queue: &str, mode: AckMode) -> bool {
        let mut by_queue = self.lock();
        let Some(demand) = by_queue.get_mut(queue) else {
            return false;
        };
        let slot = demand.slot(mode);
        let may_open = match slot {
            Slot::Closed => true,
            Slot::Failed(at) => at.elapsed() >= RETRY_OPEN,
            Slot::Opening | Slot::Open(_) => false,
        };
        if may_open {
            *slot = Slot::Opening;
        }
        may_open
    }

    fn settle_opening(&self, queue: &str, mode: AckMode, opened: Option<Arc<Window>>) {
        let mut by_queue = self.lock();
        let demand = by_queue.entry(queue.to_owned()).or_default();
        *demand.slot(mode) = match opened {
            Some(window) => Slot::Open(window),
            None => Slot::Failed(Instant::now()),
        };
    }

    /// Forgets `window` if it is still the queue's one.
    fn forget(&self, queue: &str, mode: AckMode, window: &Arc<Window>) {
        let mut by_queue = self.lock();
        let Some(demand) = by_queue.get_mut(queue) else {
            return;
        };
        let slot = demand.slot(mode);
        if matches!(slot, Slot::Open(current) if Arc::ptr_eq(current, window)) {
            *slot = Slot::Closed;
        }
        remove_if_unused(&mut by_queue, queue);
    }

    /// Gives back what every window holds; their tasks end as their channels close.
    pub(super) fn close_all(&self) {
        let windows: Vec<Arc<Window>> = self
            .lock()
            .drain()
            .flat_map(|(_, demand)| [demand.auto, demand.manual])
            .filter_map(|slot| match slot {
                Slot::Open(window) => Some(window),
                _ => None,
            })
            .collect();
        // Their watchers cancel the consumers and return what they hold.
        for window in windows {
            window.held().ended = true;
        }
    }
}

fn remove_if_unused(by_queue: &mut HashMap<String, Demand>, queue: &str) {
    if let Some(demand) = by_queue.get(queue)
        && demand.taking == 0
        && matches!(demand.auto, Slot::Closed | Slot::Failed(_))
        && matches!(demand.manual, Slot::Closed | Slot::Failed(_))
    {
        by_queue.remove(queue);
    }
}

/// One request taking from a queue, counted until dropped.
pub struct Taking {
    broker: Broker,
    queue: String,
    /// Requests already taking from the same queue when this one began.
    others: usize,
}

impl Drop for Taking {
    fn drop(&mut self) {
        let mut by_queue = self.broker.inner.windows.lock();
        if let Some(demand) = by_queue.get_mut(&self.queue) {
            demand.taking = demand.taking.saturating_sub(1);
        }
        remove_if_unused(&mut by_queue, &self.queue);
    }
}

/// A consumer whose deliveries wait in lapin's buffer until a request takes them.
pub(super) struct Window {
    slot: Arc<QueueChannel>,
    held: Mutex<Held>,
    /// An auto window's acknowledgements; a lease window settles each message by its handle.
    acks: Option<Arc<Acks>>,
}

/// Coalesced acknowledgements: each message an auto window hands out waits until one basic.ack
/// with `multiple` covers its tag, so concurrent requests share one frame and one hop to the
/// connection's I/O thread. Deliveries are handed out in tag order, so every tag below the
/// highest one handed out was handed out too.
struct Acks {
    /// Highest tag handed out.
    wanted: AtomicU64,
    wake: Notify,
    closing: AtomicBool,
    acked: watch::Sender<Acked>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Acked {
    through: u64,
    /// The channel refused an ack: nothing above `through` will be acknowledged on it, and the
    /// broker requeues those messages when it closes.
    failed: bool,
}

impl Acks {
    fn new() -> Self {
        Self {
            wanted: AtomicU64::new(0),
            wake: Notify::new(),
            closing: AtomicBool::new(false),
            acked: watch::Sender::new(Acked::default()),
        }
    }

    fn want(&self, tag: u64) {
        self.wanted.fetch_max(tag, Ordering::AcqRel);
        self.wake.notify_one();
    }

    /// Waits until `tag`, handed out already, is acknowledged; false if it never will be.
    async fn ack(&self, tag: u64, timeout: Duration) -> bool {
        let mut acked = self.acked.subscribe();
        let covered = acked.wait_for(|acked| acked.through >= tag || acked.failed);
        match tokio::time::timeout(timeout, covered).await {
            Ok(Ok(acked)) => acked.through >= tag,
            _ => false,
        }
    }

    /// Sends what is wanted, one ack at a time, until the window closed and all is sent.
    async fn send(self: Arc<Self>, slot: Arc<QueueChannel>) {
        let mut through = 0;
        loop {
            let wake = self.wake.notified();
            let wanted = self.wanted.load(Ordering::Acquire);
            if wanted <= through {
                if self.closing.load(Ordering::Acquire) {
                    return;
                }
                wake.await;
                continue;
            }
            let options = BasicAckOptions { multiple: true };
            let failed = slot.channel.basic_ack(wanted, options).await.is_err();
            if !failed {
                through = wanted;
            }
            self.acked.send_replace(Acked { through, failed });
            if failed {
                return;
            }
        }
    }

    fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.wake.notify_one();
    }
}

struct Held {
    /// `None` once the window closed.
    consumer: Option<lapin::Consumer>,
    /// The broker cancelled the consumer or its channel failed.
    ended: bool,
    last_demand: Instant,
}

impl Window {
    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A delivery the broker pushed already, if there is one; never waits.
    fn pop(&self) -> Option<Delivery> {
        let mut held = self.held();
        held.last_demand = Instant::now();
        if held.ended {
            return None;
        }
        match held.consumer.as_mut()?.next().now_or_never()? {
            Some(Ok(delivery)) => {
                if let Some(acks) = &self.acks {
                    // Under the lock: the sender sees it before it can learn the window closed.
                    acks.want(delivery.delivery_tag);
                }
                Some(delivery)
            }
            Some(Err(_)) | None => {
                held.ended = true;
                None
            }
        }
    }

    /// Whether the window should give its messages back now.
    fn is_done(&self) -> bool {
        let held = self.held();
        held.ended
            || held.consumer.is_none()
            || held.last_demand.elapsed() >= IDLE
            || !self.slot.is_usable()
    }

    /// Takes no more; the consumer is returned to the one who cancels it.
    fn close(&self) -> Option<lapin::Consumer> {
        self.held().consumer.take()
    }

    /// The next message pushed to the window: acknowledged in an auto window, leased otherwise.
    async fn take(&self, timeout: Duration) -> Option<Taken> {
        while let Some(delivery) = self.pop() {
            let (delivered, tag) = unpack(delivery, None);
            if !self.slot.channel.status().connected() {
                // The broker has put it back already.
                continue;
            }
            match &self.acks {
                Some(acks) => {
                    if acks.ack(tag, timeout).await {
                        metrics::count(metrics::ACKED, 1);
                        return Some(Taken::Acked(delivered));
                    }
                }
                None => {
                    let handle = DeliveryHandle::new(self.slot.clone(), tag);
                    return Some(Taken::Unacked(delivered, handle));
                }
            }
        }
        None
    }
}

impl Broker {
    /// Counts a request as taking from `queue` until the guard drops.
    pub fn begin_taking(&self, queue: &str) -> Taking {
        let mut by_queue = self.inner.windows.lock();
        let demand = by_queue.entry(queue.to_owned()).or_default();
        let others = demand.taking;
        demand.taking += 1;
        Taking {
            broker: self.clone(),
            queue: queue.to_owned(),
            others,
        }
    }

    /// The next ready message of the taking's queue: from its window when it has one, otherwise
    /// by basic.get, opening a window if other requests are taking from the queue too.
    pub async fn next_ready(&self, taking: &Taking, mode: AckMode) -> Result<Option<Taken>, Error> {
        let queue = taking.queue.as_str();
        self.refuse_if_stream(queue)?;
        if let Some(window) = self.inner.windows.open(queue, mode)
            && window.slot.is_usable()
        {
            // What the window holds is older than what basic.get would find.
            if let Some(taken) = window.take(self.inner.timeout).await {
                return Ok(Some(taken));
            }
            // On the window's own channel the broker answers the get after pushing what it
            // had already sent the consumer, so an empty get leaves nothing in transit.
            return match self.get_on(window.slot.clone(), queue, mode).await {
                Ok(Some(taken)) => Ok(Some(taken)),
                Ok(None) => Ok(window.take(self.inner.timeout).await),
                // Another request's refusal closed the window's channel: nothing was taken.
                Err(Error::ChannelClosed(_)) => self.get(queue, mode).await,
                Err(error) => Err(error),
            };
        }
        let got = self.get(queue, mode).await?;
        if taking.others > 0
            && self.inner.windows.size > 0
            && self.inner.windows.claim_opening(queue, mode)
        {
            let broker = self.clone();
            let queue = queue.to_owned();
            tokio::spawn(async move { broker.open_window(queue, mode).await });
        }
        Ok(got)
    }

    async fn open_window(self, queue: String, mode: AckMode) {
        let opened = async {
            let slot = self.open_consuming_channel(self.inner.windows.size).await?;
            let consumer = self
                .start_consumer(&slot, &queue, lapin::types::FieldTable::default())
                .await?;
            Ok::<_, Error>((slot, consumer))
        };
        let (slot, consumer) = match opened.await {
            Ok(opened) => opened,
            Err(error) => {
                tracing::debug!(%error, queue, "a prefetch window did not open; basic.get serves");
                self.inner.windows.settle_opening(&queue, mode, None);
                return;
            }
        };
        let acks = (mode == AckMode::Auto).then(|| Arc::new(Acks::new()));
        if let Some(acks) = &acks {
            tokio::spawn(acks.clone().send(slot.clone()));
        }
        let window = Arc::new(Window {
            slot,
            held: Mutex::new(Held {
                consumer: Some(consumer),
                ended: false,
                last_demand: Instant::now(),
            }),
            acks,
        });
        self.inner
            .windows
            .settle_opening(&queue, mode, Some(window.clone()));
        self.watch_window(&queue, mode, &window).await;
    }

    /// Waits until the window is idle or its consumer ended, then gives back what it holds.
    async fn watch_window(&self, queue: &str, mode: AckMode, window: &Arc<Window>) {
        let mut ticks = tokio::time::interval(IDLE / 2);
        while !window.is_done() {
            ticks.tick().await;
        }
        self.inner.windows.forget(queue, mode, window);
        let consumer = window.close();
        if let Some(acks) = &window.acks {
            acks.close();
        }
        let Some(mut consumer) = consumer else {
            return;
        };
        let channel = &window.slot.channel;
        if channel.status().connected() {
            let cancel = channel.basic_cancel(consumer.tag(), BasicCancelOptions { nowait: false });
            let _ = tokio::time::timeout(self.inner.timeout, cancel).await;
        }
        // What it still holds, and what crossed the cancel, is requeued as the handles drop.
        while let Ok(Some(Ok(delivery))) = tokio::time::timeout(CROSSING, consumer.next()).await {
            let (_, tag) = unpack(delivery, None);
            drop(DeliveryHandle::new(window.slot.clone(), tag));
        }
    }

    /// Gives back what every prefetch window holds.
    pub(super) fn close_windows(&self) {
        self.inner.windows.close_all();
    }
}
