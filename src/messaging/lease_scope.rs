//! The leases one reader handed out (an event stream, a consumer set): whatever is still open
//! goes back to its queue when the reader goes away.

use std::sync::{Mutex, PoisonError};

use super::leases::Leases;

pub struct LeaseScope {
    leases: Leases,
    receipts: Mutex<Vec<String>>,
    /// Settled receipts are forgotten once this many are held, so a long reader keeps only
    /// the open ones.
    prune_at: usize,
}

impl LeaseScope {
    pub fn new(leases: Leases, prune_at: usize) -> Self {
        Self {
            leases,
            receipts: Mutex::new(Vec::new()),
            prune_at,
        }
    }

    pub fn record(&self, receipt: &str) {
        let mut receipts = self.receipts.lock().unwrap_or_else(PoisonError::into_inner);
        if receipts.len() >= self.prune_at {
            receipts.retain(|receipt| self.leases.is_open(receipt));
        }
        receipts.push(receipt.to_owned());
    }

    fn take_receipts(&self) -> Vec<String> {
        std::mem::take(&mut *self.receipts.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts every message still leased in this scope back in its queue.
    pub async fn release(&self) {
        self.leases.release(self.take_receipts()).await;
    }
}

impl Drop for LeaseScope {
    fn drop(&mut self) {
        let receipts = self.take_receipts();
        if receipts.is_empty() {
            return;
        }
        // A dropped reader cannot wait for the broker; the returns go out on their own.
        let leases = self.leases.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { leases.release(receipts).await });
        }
    }
}
