//! A subscription's live state: what `GET /subscriptions/{name}` shows beside its settings.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use serde::Serialize;
use utoipa::ToSchema;

use crate::messaging::envelope::rfc3339;

#[derive(Debug, Default)]
pub struct Live {
    consuming: AtomicBool,
    in_flight: AtomicUsize,
    delivered: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    last_error: Mutex<Option<(SystemTime, String)>>,
}

/// A snapshot of the counters since the subscription started.
#[derive(Debug, Serialize, ToSchema)]
pub struct LiveState {
    /// `consuming`, or `waiting` while the queue cannot be consumed (broker down, queue missing).
    pub status: &'static str,
    /// Messages taken from the queue and not settled yet.
    pub in_flight: usize,
    /// Messages the app answered 2xx for, acknowledged.
    pub delivered: u64,
    /// Attempts after a failed one.
    pub retried: u64,
    /// Messages rejected after a 4xx or `max_attempts` (dead-lettered if the queue has a DLX).
    pub dead_lettered: u64,
    pub last_error: Option<String>,
    /// RFC 3339 UTC.
    pub last_error_at: Option<String>,
}

impl Live {
    pub fn set_consuming(&self, consuming: bool) {
        self.consuming.store(consuming, Ordering::Release);
    }

    pub fn record_error(&self, error: String) {
        tracing::warn!(%error, "push subscription");
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((SystemTime::now(), error));
    }

    /// Counts a message in flight until the guard drops.
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self)
    }

    pub fn delivered(&self) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }

    pub fn retried(&self) {
        self.retried.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dead_lettered(&self) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    pub fn snapshot(&self) -> LiveState {
        let last_error = self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        LiveState {
            status: if self.consuming.load(Ordering::Acquire) {
                "consuming"
            } else {
                "waiting"
            },
            in_flight: self.in_flight(),
            delivered: self.delivered.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            last_error_at: last_error.as_ref().map(|(at, _)| rfc3339(*at)),
            last_error: last_error.map(|(_, error)| error),
        }
    }
}

pub struct InFlight<'a>(&'a Live);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}
