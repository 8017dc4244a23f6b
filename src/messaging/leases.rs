//! Leases: a message handed out over HTTP stays in its queue, unacknowledged, until the client
//! settles it with the receipt or the lease runs out and the message goes back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::broker::{self, DeliveryHandle};

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

struct Lease {
    queue: String,
    handle: DeliveryHandle,
    expires_at: Instant,
}

#[derive(Clone)]
pub struct Leases {
    open: Arc<Mutex<HashMap<String, Lease>>>,
}

/// What a client needs to settle its lease.
#[derive(Debug, Clone)]
pub struct Granted {
    pub receipt: String,
    pub expires_at: SystemTime,
}

impl Default for Leases {
    fn default() -> Self {
        Self::new()
    }
}

impl Leases {
    pub fn new() -> Self {
        Self {
            open: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Lease>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Holds `handle` for `duration`, then puts the message back unless it was settled.
    pub fn grant(&self, queue: &str, handle: DeliveryHandle, duration: Duration) -> Granted {
        // 122 random bits: a receipt cannot be guessed or derived from another.
        let receipt = uuid::Uuid::new_v4().simple().to_string();
        self.lock().insert(
            receipt.clone(),
            Lease {
                queue: queue.to_owned(),
                handle,
                expires_at: Instant::now() + duration,
            },
        );
        Granted {
            receipt,
            expires_at: SystemTime::now() + duration,
        }
    }

    /// Puts back every message whose lease ran out; called a few times a second.
    ///
    /// One sweep for all leases costs less than a timer task per lease, and a lease ends at
    /// most one sweep interval late.
    pub async fn expire_due(&self) {
        let now = Instant::now();
        let expired: Vec<Lease> = {
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
                lease.expires_at = Instant::now() + duration;
                Ok(SystemTime::now() + duration)
            }
            _ => Err(LeaseError::NotFound),
        }
    }

    /// Puts every leased message back in its queue (graceful shutdown).
    pub async fn release_all(&self) {
        let all: Vec<Lease> = self.lock().drain().map(|(_, lease)| lease).collect();
        let count = all.len();
        futures_util::future::join_all(all.into_iter().map(|lease| lease.handle.reject(true)))
            .await;
        if count > 0 {
            tracing::info!(count, "returned leased messages to their queues");
        }
    }

    pub fn is_open(&self, receipt: &str) -> bool {
        self.lock().contains_key(receipt)
    }

    /// Puts these leased messages back (their stream or consumer set went away).
    pub async fn release(&self, receipts: Vec<String>) {
        let released: Vec<Lease> = {
            let mut open = self.lock();
            receipts
                .iter()
                .filter_map(|receipt| open.remove(receipt))
                .collect()
        };
        futures_util::future::join_all(released.into_iter().map(|lease| lease.handle.reject(true)))
            .await;
    }

    fn take(&self, queue: &str, receipt: &str) -> Result<Lease, LeaseError> {
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
