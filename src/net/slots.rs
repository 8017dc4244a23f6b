//! A cap on open connections. When every slot is taken, the connection that has waited longest
//! for a request is closed to make room, so idle and silent clients can never lock out a client
//! with something to ask; when every connection is busy serving, new ones wait.

use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::activity::Activity;

/// How often a new connection that found every slot busy looks again for one to close.
const RETRY_EVICTION: std::time::Duration = std::time::Duration::from_millis(50);

/// A connection as the slots see it: what it does, and how to close it.
struct Held {
    activity: Weak<Activity>,
    close: CancellationToken,
}

pub struct Slots {
    free: Arc<Semaphore>,
    held: Mutex<Vec<Held>>,
}

/// One connection's slot; dropping it frees the slot.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    /// Cancelled when the connection must close to make room for a new one.
    pub evicted: CancellationToken,
}

impl Slots {
    pub fn new(max: usize) -> Self {
        Self {
            free: Arc::new(Semaphore::new(max)),
            held: Mutex::new(Vec::new()),
        }
    }

    /// A slot for a new connection, closing the longest-waiting one if none is free.
    pub async fn acquire(&self, activity: &Arc<Activity>) -> Slot {
        let permit = loop {
            if let Ok(permit) = self.free.clone().try_acquire_owned() {
                break permit;
            }
            if self.evict_longest_waiting() {
                crate::metrics::count(crate::metrics::HTTP_CONNECTIONS_EVICTED, 1);
            }
            // Every connection may be serving now; one of them may be waiting again soon.
            let acquired =
                tokio::time::timeout(RETRY_EVICTION, self.free.clone().acquire_owned()).await;
            if let Ok(permit) = acquired {
                break permit.expect("the semaphore is never closed");
            }
        };
        let evicted = CancellationToken::new();
        let mut held = self.lock();
        held.retain(|held| held.activity.strong_count() > 0);
        held.push(Held {
            activity: Arc::downgrade(activity),
            close: evicted.clone(),
        });
        Slot {
            _permit: permit,
            evicted,
        }
    }

    fn evict_longest_waiting(&self) -> bool {
        let held = self.lock();
        let longest = held
            .iter()
            .filter(|held| !held.close.is_cancelled())
            .filter_map(|held| Some((held.activity.upgrade()?.waiting_since()?, held)))
            .min_by_key(|(since, _)| *since);
        match longest {
            Some((_, held)) => {
                held.close.cancel();
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Held>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_full_house_closes_the_longest_waiting_connection() {
        let slots = Slots::new(2);
        let (older, newer) = (Activity::new(), Activity::new());
        let older_slot = slots.acquire(&older).await;
        tokio::time::advance(Duration::from_secs(1)).await;
        let newer_slot = slots.acquire(&newer).await;

        let third = Activity::new();
        let acquiring = slots.acquire(&third);
        tokio::pin!(acquiring);
        assert!(
            futures_util::poll!(acquiring.as_mut()).is_pending(),
            "waits for the evicted connection to go"
        );
        assert!(older_slot.evicted.is_cancelled());
        assert!(!newer_slot.evicted.is_cancelled());
        drop(older_slot);
        let third_slot = acquiring.await;
        assert!(!third_slot.evicted.is_cancelled());
    }
}
