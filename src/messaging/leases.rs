//! Leases: a message handed out over HTTP stays in its queue, unacknowledged, until the client
//! settles it with the receipt or the lease runs out and the message goes back.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::broker::{self, DeliveryHandle};
use crate::cluster::tokens::Tokens;

/// What a client does with a leased message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Done: remove it from the queue.
    Ack,
    /// Refuse it: not requeued, dead-lettered if the queue has a DLX.
    Reject,
    /// Put it back for another consumer (redelivered).
    Requeue,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Unknown, settled, expired, or for another queue: becomes 404 `receipt_not_found`.
    #[error(
        "no open lease has this receipt on this queue: it was settled, expired (and the message went back to the queue), or never existed"
    )]
    NotFound,
    #[error(transparent)]
    Broker(#[from] broker::Error),
}

/// How a leased message reaches its broker: a seam, so that leases can be tested without one.
pub trait Settlement: Send + 'static {
    /// Removes the message from its queue.
    fn ack(self) -> impl Future<Output = Result<(), broker::Error>> + Send;
    /// Puts the message back (`requeue`), or drops it, dead-lettering it if the queue has a DLX.
    fn reject(self, requeue: bool) -> impl Future<Output = Result<(), broker::Error>> + Send;
}

impl Settlement for DeliveryHandle {
    fn ack(self) -> impl Future<Output = Result<(), broker::Error>> + Send {
        DeliveryHandle::ack(self)
    }

    fn reject(self, requeue: bool) -> impl Future<Output = Result<(), broker::Error>> + Send {
        DeliveryHandle::reject(self, requeue)
    }
}

/// How often the sweeper looks for leases that ran out: a lease ends at most this late.
const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// Longer than any lease needs to be; a longer one would overflow the clocks and panic.
const LONGEST: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

struct Lease<H> {
    queue: String,
    handle: H,
    expires_at: Instant,
}

/// The open leases by receipt; cheap to clone, every clone shares them.
///
/// `H` is what settles a message with the broker; only tests need another than the default.
pub struct Leases<H = DeliveryHandle> {
    open: Arc<Mutex<HashMap<String, Lease<H>>>>,
    /// Mints receipts, which name this replica when there are several.
    tokens: Arc<Tokens>,
}

impl<H> Clone for Leases<H> {
    fn clone(&self) -> Self {
        Self {
            open: self.open.clone(),
            tokens: self.tokens.clone(),
        }
    }
}

/// What a client needs to settle its lease.
#[derive(Debug, Clone)]
pub struct Granted {
    pub receipt: String,
    pub expires_at: SystemTime,
}

impl<H> Default for Leases<H> {
    fn default() -> Self {
        Self::minted_by(Arc::new(Tokens::alone()))
    }
}

impl<H> Leases<H> {
    pub fn minted_by(tokens: Arc<Tokens>) -> Self {
        Self {
            open: Arc::new(Mutex::new(HashMap::new())),
            tokens,
        }
    }
}

impl Leases {
    pub fn new() -> Self {
        Self::default()
    }
}

/// The deadline on the runtime's clock, which the sweeper follows, and on the wall clock, which
/// the client is told.
fn deadline(duration: Duration) -> (Instant, SystemTime) {
    let duration = duration.min(LONGEST);
    (Instant::now() + duration, SystemTime::now() + duration)
}

impl<H> Leases<H> {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Lease<H>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn count(&self) -> usize {
        self.lock().len()
    }

    pub fn is_open(&self, receipt: &str) -> bool {
        self.lock().contains_key(receipt)
    }
}

impl<H: Settlement> Leases<H> {
    /// Holds `handle` for `duration`, then puts the message back unless it was settled.
    pub fn grant(&self, queue: &str, handle: H, duration: Duration) -> Granted {
        // 122 random bits: a receipt cannot be guessed or derived from another.
        let receipt = self.tokens.mint();
        let (expires_at, wall_clock) = deadline(duration);
        self.lock().insert(
            receipt.clone(),
            Lease {
                queue: queue.to_owned(),
                handle,
                expires_at,
            },
        );
        Granted {
            receipt,
            expires_at: wall_clock,
        }
    }

    /// Puts back every message whose lease ran out; called a few times a second.
    ///
    /// One sweep for all leases costs less than a timer task per lease, and a lease ends at
    /// most one sweep interval late.
    pub async fn expire_due(&self) {
        let now = Instant::now();
        let expired: Vec<Lease<H>> = {
            let mut open = self.lock();
            let due: Vec<String> = open
                .iter()
                .filter(|(_, lease)| lease.expires_at <= now)
                .map(|(receipt, _)| receipt.clone())
                .collect();
            due.iter()
                .filter_map(|receipt| open.remove(receipt))
                .collect()
        };
        for lease in expired {
            tracing::debug!(queue = %lease.queue, "lease expired; message requeued");
            crate::metrics::count(crate::metrics::LEASES_EXPIRED, 1);
            let _ = lease.handle.reject(true).await;
        }
    }

    /// Sweeps out expired leases until `stop` is cancelled.
    pub fn spawn_expiry(&self, stop: CancellationToken) -> JoinHandle<()> {
        let leases = self.clone();
        crate::upkeep::spawn_every(SWEEP_EVERY, stop, move || {
            let leases = leases.clone();
            async move { leases.expire_due().await }
        })
    }

    /// Settles a lease once: the receipt is spent whatever the broker answers.
    pub async fn settle(&self, queue: &str, receipt: &str, how: Settle) -> Result<(), LeaseError> {
        let lease = self.take(queue, receipt)?;
        match how {
            Settle::Ack => lease.handle.ack().await?,
            Settle::Reject => lease.handle.reject(false).await?,
            Settle::Requeue => lease.handle.reject(true).await?,
        }
        Ok(())
    }

    /// Moves the deadline to `duration` from now.
    pub fn extend(
        &self,
        queue: &str,
        receipt: &str,
        duration: Duration,
    ) -> Result<SystemTime, LeaseError> {
        let mut open = self.lock();
        match open.get_mut(receipt) {
            Some(lease) if lease.queue == queue && lease.expires_at > Instant::now() => {
                let (expires_at, wall_clock) = deadline(duration);
                lease.expires_at = expires_at;
                Ok(wall_clock)
            }
            _ => Err(LeaseError::NotFound),
        }
    }

    /// Puts every leased message back in its queue (graceful shutdown).
    pub async fn release_all(&self) {
        let all: Vec<Lease<H>> = self.lock().drain().map(|(_, lease)| lease).collect();
        let count = all.len();
        futures_util::future::join_all(all.into_iter().map(|lease| lease.handle.reject(true)))
            .await;
        if count > 0 {
            tracing::info!(count, "returned leased messages to their queues");
        }
    }

    /// Puts these leased messages back (their stream or consumer set went away).
    pub async fn release(&self, receipts: Vec<String>) {
        let released: Vec<Lease<H>> = {
            let mut open = self.lock();
            receipts
                .iter()
                .filter_map(|receipt| open.remove(receipt))
                .collect()
        };
        futures_util::future::join_all(released.into_iter().map(|lease| lease.handle.reject(true)))
            .await;
    }

    fn take(&self, queue: &str, receipt: &str) -> Result<Lease<H>, LeaseError> {
        let mut open = self.lock();
        match open.get(receipt) {
            // An expired lease is being requeued by its timer; it is no longer the client's.
            Some(lease) if lease.queue == queue && lease.expires_at > Instant::now() => {
                open.remove(receipt).ok_or(LeaseError::NotFound)
            }
            _ => Err(LeaseError::NotFound),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a fake handle was asked to do, and which message it held.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum Seen {
        Ack(u32),
        Reject { message: u32, requeue: bool },
    }

    fn requeued(message: u32) -> Seen {
        Seen::Reject {
            message,
            requeue: true,
        }
    }

    type Log = Arc<Mutex<Vec<Seen>>>;

    struct Fake {
        message: u32,
        log: Log,
        fails: bool,
    }

    impl Fake {
        fn answer(&self, seen: Seen) -> Result<(), broker::Error> {
            self.log.lock().expect("log lock").push(seen);
            if self.fails {
                Err(broker::Error::LeaseLost)
            } else {
                Ok(())
            }
        }
    }

    impl Settlement for Fake {
        async fn ack(self) -> Result<(), broker::Error> {
            self.answer(Seen::Ack(self.message))
        }

        async fn reject(self, requeue: bool) -> Result<(), broker::Error> {
            self.answer(Seen::Reject {
                message: self.message,
                requeue,
            })
        }
    }

    struct Harness {
        leases: Leases<Fake>,
        log: Log,
    }

    impl Harness {
        fn new() -> Self {
            Self {
                leases: Leases::default(),
                log: Log::default(),
            }
        }

        fn grant(&self, queue: &str, message: u32, duration: Duration) -> String {
            self.grant_fake(queue, message, duration, false)
        }

        fn grant_fake(&self, queue: &str, message: u32, duration: Duration, fails: bool) -> String {
            let fake = Fake {
                message,
                log: self.log.clone(),
                fails,
            };
            self.leases.grant(queue, fake, duration).receipt
        }

        fn seen(&self) -> Vec<Seen> {
            self.log.lock().expect("log lock").clone()
        }
    }

    const LEASE: Duration = Duration::from_secs(30);
    const TICK: Duration = Duration::from_millis(1);

    fn assert_not_found(result: Result<impl std::fmt::Debug, LeaseError>) {
        assert!(
            matches!(result, Err(LeaseError::NotFound)),
            "expected NotFound, got {result:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_is_settled_once() {
        let h = Harness::new();
        let receipt = h.grant("q", 1, LEASE);
        assert!(h.leases.is_open(&receipt));

        h.leases
            .settle("q", &receipt, Settle::Ack)
            .await
            .expect("first settle");
        assert_not_found(h.leases.settle("q", &receipt, Settle::Ack).await);
        assert_not_found(h.leases.settle("q", &receipt, Settle::Requeue).await);

        assert_eq!(h.seen(), [Seen::Ack(1)]);
        assert!(!h.leases.is_open(&receipt));
        assert_eq!(h.leases.count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn reject_and_requeue_reach_the_handle_with_their_flag() {
        let h = Harness::new();
        let rejected = h.grant("q", 1, LEASE);
        let put_back = h.grant("q", 2, LEASE);

        h.leases
            .settle("q", &rejected, Settle::Reject)
            .await
            .expect("reject");
        h.leases
            .settle("q", &put_back, Settle::Requeue)
            .await
            .expect("requeue");

        assert_eq!(
            h.seen(),
            [
                Seen::Reject {
                    message: 1,
                    requeue: false
                },
                requeued(2),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_receipt_for_another_queue_is_not_found_and_leaves_the_lease_open() {
        let h = Harness::new();
        let receipt = h.grant("orders", 1, LEASE);

        assert_not_found(h.leases.settle("billing", &receipt, Settle::Ack).await);
        assert_not_found(h.leases.extend("billing", &receipt, LEASE));
        assert!(h.leases.is_open(&receipt));
        assert!(h.seen().is_empty(), "nothing reached the broker");

        h.leases
            .settle("orders", &receipt, Settle::Ack)
            .await
            .expect("the owner still settles it");
        assert_eq!(h.seen(), [Seen::Ack(1)]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unknown_receipt_is_not_found() {
        let h = Harness::new();
        h.grant("q", 1, LEASE);
        assert_not_found(h.leases.settle("q", "no-such-receipt", Settle::Ack).await);
        assert_not_found(h.leases.extend("q", "no-such-receipt", LEASE));
        assert!(h.seen().is_empty());
        assert_eq!(h.leases.count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn receipts_are_distinct_and_opaque() {
        let h = Harness::new();
        let first = h.grant("q", 1, LEASE);
        let second = h.grant("q", 2, LEASE);
        assert_ne!(first, second);
        for receipt in [&first, &second] {
            assert_eq!(receipt.len(), 32, "{receipt}");
            assert!(receipt.bytes().all(|b| b.is_ascii_hexdigit()), "{receipt}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_requeues_once_after_the_deadline_and_not_before() {
        let h = Harness::new();
        let receipt = h.grant("q", 1, LEASE);

        tokio::time::advance(LEASE - TICK).await;
        h.leases.expire_due().await;
        assert!(h.seen().is_empty(), "swept before its deadline");
        assert!(h.leases.is_open(&receipt));

        tokio::time::advance(2 * TICK).await;
        h.leases.expire_due().await;
        assert_eq!(h.seen(), [requeued(1)]);
        assert!(!h.leases.is_open(&receipt));

        h.leases.expire_due().await;
        assert_eq!(h.seen(), [requeued(1)], "requeued a second time");
    }

    #[tokio::test(start_paused = true)]
    async fn at_its_deadline_a_lease_belongs_to_the_sweeper() {
        let h = Harness::new();
        let receipt = h.grant("q", 1, LEASE);
        tokio::time::advance(LEASE).await;

        assert_not_found(h.leases.settle("q", &receipt, Settle::Ack).await);
        assert_not_found(h.leases.extend("q", &receipt, LEASE));
        h.leases.expire_due().await;
        assert_eq!(h.seen(), [requeued(1)]);
    }

    #[tokio::test(start_paused = true)]
    async fn only_the_leases_that_ran_out_are_swept() {
        let h = Harness::new();
        let short = h.grant("q", 1, Duration::from_secs(1));
        let long = h.grant("q", 2, LEASE);

        tokio::time::advance(Duration::from_secs(2)).await;
        h.leases.expire_due().await;

        assert_eq!(h.seen(), [requeued(1)]);
        assert!(!h.leases.is_open(&short));
        assert!(h.leases.is_open(&long));
    }

    #[tokio::test(start_paused = true)]
    async fn extend_moves_the_deadline() {
        let h = Harness::new();
        let receipt = h.grant("q", 1, Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(5)).await;

        let before = SystemTime::now();
        let expires_at = h
            .leases
            .extend("q", &receipt, Duration::from_secs(10))
            .expect("extend an open lease");
        let after = SystemTime::now();
        assert!(
            before + Duration::from_secs(10) <= expires_at
                && expires_at <= after + Duration::from_secs(10),
            "the wall-clock deadline is 10 s from now: {expires_at:?}"
        );

        // Past the old deadline (10 s), before the new one (15 s).
        tokio::time::advance(Duration::from_secs(5) + TICK).await;
        h.leases.expire_due().await;
        assert!(h.seen().is_empty(), "expired at the old deadline");
        assert!(h.leases.is_open(&receipt));

        tokio::time::advance(Duration::from_secs(5)).await;
        h.leases.expire_due().await;
        assert_eq!(h.seen(), [requeued(1)]);
    }

    #[tokio::test(start_paused = true)]
    async fn extend_can_also_shorten_a_lease() {
        let h = Harness::new();
        let receipt = h.grant("q", 1, LEASE);
        h.leases
            .extend("q", &receipt, Duration::from_secs(1))
            .expect("extend an open lease");

        tokio::time::advance(Duration::from_secs(1)).await;
        h.leases.expire_due().await;
        assert_eq!(h.seen(), [requeued(1)]);
    }

    #[tokio::test(start_paused = true)]
    async fn extending_an_expired_lease_is_not_found() {
        let h = Harness::new();
        let receipt = h.grant("q", 1, Duration::from_secs(1));
        tokio::time::advance(Duration::from_secs(1) + TICK).await;

        // Not swept yet: extending must not win it back from the sweeper.
        assert_not_found(h.leases.extend("q", &receipt, LEASE));
        h.leases.expire_due().await;
        assert_eq!(h.seen(), [requeued(1)]);

        assert_not_found(h.leases.extend("q", &receipt, LEASE));
        assert_eq!(h.seen(), [requeued(1)]);
    }

    #[tokio::test(start_paused = true)]
    async fn settling_after_expiry_is_not_found() {
        let h = Harness::new();
        let receipt = h.grant("q", 1, Duration::from_secs(1));
        tokio::time::advance(Duration::from_secs(1) + TICK).await;

        assert_not_found(h.leases.settle("q", &receipt, Settle::Ack).await);
        assert!(h.seen().is_empty(), "an expired lease was acked");

        h.leases.expire_due().await;
        assert_not_found(h.leases.settle("q", &receipt, Settle::Ack).await);
        assert_eq!(h.seen(), [requeued(1)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_broker_failure_still_spends_the_receipt() {
        let h = Harness::new();
        let receipt = h.grant_fake("q", 1, LEASE, true);

        let failed = h.leases.settle("q", &receipt, Settle::Ack).await;
        assert!(
            matches!(failed, Err(LeaseError::Broker(broker::Error::LeaseLost))),
            "{failed:?}"
        );
        assert_not_found(h.leases.settle("q", &receipt, Settle::Ack).await);
        h.leases.expire_due().await;
        assert_eq!(h.seen(), [Seen::Ack(1)]);
    }

    #[tokio::test(start_paused = true)]
    async fn release_requeues_the_named_leases_only() {
        let h = Harness::new();
        let first = h.grant("q", 1, LEASE);
        let second = h.grant("other", 2, LEASE);
        let kept = h.grant("q", 3, LEASE);

        h.leases
            .release(vec![first.clone(), second.clone(), "unknown".to_owned()])
            .await;

        let mut seen = h.seen();
        seen.sort();
        assert_eq!(seen, [requeued(1), requeued(2)]);
        assert!(h.leases.is_open(&kept));
        assert_eq!(h.leases.count(), 1);
        assert_not_found(h.leases.settle("q", &first, Settle::Ack).await);

        // Released leases are gone, so the sweeper cannot requeue them again.
        tokio::time::advance(LEASE).await;
        h.leases.expire_due().await;
        assert_eq!(h.seen().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn release_all_requeues_everything() {
        let h = Harness::new();
        for message in 1..=3 {
            h.grant(if message % 2 == 0 { "a" } else { "b" }, message, LEASE);
        }

        h.leases.release_all().await;

        let mut seen = h.seen();
        seen.sort();
        assert_eq!(seen, [requeued(1), requeued(2), requeued(3)]);
        assert_eq!(h.leases.count(), 0);
        tokio::time::advance(LEASE).await;
        h.leases.expire_due().await;
        assert_eq!(h.seen().len(), 3, "a released lease was requeued again");
    }

    #[tokio::test(start_paused = true)]
    async fn spawn_expiry_sweeps_until_cancelled() {
        let h = Harness::new();
        let stop = CancellationToken::new();
        let sweeper = h.leases.spawn_expiry(stop.clone());
        let receipt = h.grant("q", 1, Duration::from_secs(1));

        // Paused time jumps to each sweep; within one sweep interval of the deadline.
        tokio::time::sleep(Duration::from_secs(1) + SWEEP_EVERY).await;
        assert_eq!(h.seen(), [requeued(1)]);
        assert!(!h.leases.is_open(&receipt));

        stop.cancel();
        tokio::time::timeout(Duration::from_secs(1), sweeper)
            .await
            .expect("the sweeper stops when cancelled")
            .expect("the sweeper did not panic");

        let left = h.grant("q", 2, Duration::from_secs(1));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(h.seen(), [requeued(1)], "swept after it was cancelled");
        assert!(h.leases.is_open(&left));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_too_long_for_the_clock_does_not_panic() {
        let h = Harness::new();
        let leases = &h.leases;
        let granted = leases.grant(
            "q",
            Fake {
                message: 1,
                log: h.log.clone(),
                fails: false,
            },
            Duration::MAX,
        );
        assert!(granted.expires_at > SystemTime::now() + LEASE);
        leases
            .extend("q", &granted.receipt, Duration::MAX)
            .expect("extend an open lease");
        tokio::time::advance(Duration::from_secs(365 * 24 * 60 * 60)).await;
        leases.expire_due().await;
        assert!(leases.is_open(&granted.receipt));
    }
}
