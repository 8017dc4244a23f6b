//! Exchanges seen to take a publish, which may therefore use a shared channel.
//!
//! A publish to a missing exchange, or one the broker user may not write to, closes its channel;
//! on a shared one that would fail every other publish in flight. So the first publish to an
//! exchange goes on a channel of its own, and only exchanges that took one are shared.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Names kept at most; past it the set starts over, costing one unshared publish per exchange.
const CAPACITY: usize = 4096;

#[derive(Default)]
pub struct KnownExchanges(Mutex<HashSet<String>>);

impl KnownExchanges {
    pub fn contains(&self, exchange: &str) -> bool {
        // The default exchange always exists and takes every publish.
        exchange.is_empty() || self.lock().contains(exchange)
    }

    pub fn learn(&self, exchange: &str) {
        if self.contains(exchange) {
            return;
        }
        let mut known = self.lock();
        if known.len() >= CAPACITY {
            known.clear();
        }
        known.insert(exchange.to_owned());
    }

    pub fn forget(&self, exchange: &str) {
        self.lock().remove(exchange);
    }

    fn lock(&self) -> MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchanges_are_shared_once_they_took_a_publish() {
        let known = KnownExchanges::default();
        assert!(known.contains(""));
        assert!(!known.contains("orders"));
        known.learn("orders");
        assert!(known.contains("orders"));
        known.forget("orders");
        assert!(!known.contains("orders"));
    }

    #[test]
    fn a_full_set_starts_over() {
        let known = KnownExchanges::default();
        for n in 0..CAPACITY {
            known.learn(&n.to_string());
        }
        known.learn("one more");
        assert!(known.contains("one more"));
        assert!(!known.contains("0"));
    }
}
