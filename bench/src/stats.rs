//! Time windows and per-worker tallies: what one scenario measured.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A warm-up, then the measured window. Work that ends inside the window counts.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub warm_end: Instant,
    pub end: Instant,
}

impl Window {
    pub fn new(warmup: Duration, measure: Duration) -> Self {
        let now = Instant::now();
        Self {
            warm_end: now + warmup,
            end: now + warmup + measure,
        }
    }

    pub fn over(&self) -> bool {
        Instant::now() >= self.end
    }

    fn counts(&self, at: Instant) -> bool {
        at >= self.warm_end && at < self.end
    }
}

/// What one worker saw. Errors are counted over the whole run (warm-up too), successes only
/// inside the measured window.
#[derive(Debug, Default)]
pub struct Tally {
    /// Messages that went through inside the window.
    pub msgs: u64,
    /// Latency of each request (or publish/get) that ended inside the window, in microseconds.
    pub latencies_us: Vec<u32>,
    /// Non-2xx HTTP answers by status.
    pub non_2xx: BTreeMap<u16, u64>,
    /// Transport errors, timeouts, broker nacks, answers that say something went wrong.
    pub failures: u64,
    /// A few error answers, as evidence.
    pub samples: Vec<String>,
    /// The source ran empty (drain scenarios): the window ended early.
    pub drained: bool,
    /// When the last counted message went through.
    pub last_done: Option<Instant>,
    pub reconnects: u64,
}

const MAX_SAMPLES: usize = 3;

impl Tally {
    /// `msgs` went through in one request that started at `started`.
    pub fn ok(&mut self, window: &Window, started: Instant, msgs: u64) {
        let now = Instant::now();
        if window.counts(now) {
            self.msgs += msgs;
            self.latencies_us
                .push(u32::try_from(now.duration_since(started).as_micros()).unwrap_or(u32::MAX));
            self.last_done = Some(now);
        }
    }

    /// `msgs` arrived on a stream, where no request has a latency of its own.
    pub fn arrived(&mut self, window: &Window, msgs: u64) {
        let now = Instant::now();
        if window.counts(now) {
            self.msgs += msgs;
            self.last_done = Some(now);
        }
    }

    pub fn status(&mut self, status: u16, body: &[u8]) {
        *self.non_2xx.entry(status).or_default() += 1;
        self.sample(format!("HTTP {status}: {}", excerpt(body)));
    }

    pub fn failure(&mut self, what: impl Into<String>) {
        self.failures += 1;
        self.sample(what.into());
    }

    fn sample(&mut self, text: String) {
        if self.samples.len() < MAX_SAMPLES && !self.samples.contains(&text) {
            self.samples.push(text);
        }
    }

    pub fn merge(&mut self, other: Tally) {
        self.msgs += other.msgs;
        self.latencies_us.extend(other.latencies_us);
        for (status, count) in other.non_2xx {
            *self.non_2xx.entry(status).or_default() += count;
        }
        self.failures += other.failures;
        for sample in other.samples {
            self.sample(sample);
        }
        self.drained |= other.drained;
        self.last_done = self.last_done.max(other.last_done);
        self.reconnects += other.reconnects;
    }

    /// The measured time: the whole window, or up to the last message when the source ran dry.
    pub fn elapsed(&self, window: &Window) -> Duration {
        let full = window.end.duration_since(window.warm_end);
        if self.drained {
            match self.last_done {
                Some(last) => last.duration_since(window.warm_end).min(full),
                None => Duration::ZERO,
            }
        } else {
            full
        }
    }

    /// The q-quantile (0..=1) of the latencies, in milliseconds.
    pub fn quantile_ms(sorted: &[u32], q: f64) -> Option<f64> {
        if sorted.is_empty() {
            return None;
        }
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        Some(f64::from(sorted[rank - 1]) / 1000.0)
    }
}

/// The start of an answer body, on one line.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(240)]);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// How often `needle` occurs in `haystack`.
pub fn occurrences(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|window| *window == needle)
        .count()
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}
