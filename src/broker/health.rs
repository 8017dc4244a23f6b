//! Broker readiness, and the supervisor that reconnects with backoff when the broker goes away.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often a healthy connection is looked at; lapin marks a dead one without any traffic.
const PROBE_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Health {
    ready: AtomicBool,
    /// When the supervisor tries again; tells clients how long to wait (`Retry-After`).
    next_attempt: Mutex<Option<Instant>>,
    last_error: Mutex<Option<String>>,
    wake: Notify,
}

impl Health {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }

    /// Seconds a client should wait before trying again, at least one.
    pub fn retry_after(&self) -> Duration {
        let wait = lock(&self.next_attempt)
            .map(|at| at.saturating_duration_since(Instant::now()))
            .unwrap_or_default();
        wait.max(Duration::from_secs(1))
    }

    /// A request saw the connection fail: stop sending requests to it and reconnect now.
    pub fn report_outage(&self, error: &str) {
        self.ready.store(false, Ordering::Release);
        *lock(&self.last_error) = Some(error.to_owned());
        self.wake.notify_one();
    }

    /// Checks the broker until shutdown: `probe` connects (or confirms the connection is alive).
    pub async fn supervise<F, Fut>(&self, shutdown: CancellationToken, probe: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let mut backoff = FIRST_BACKOFF;
        let mut connected_once = false;
        loop {
            let wait = match probe().await {
                Ok(()) => {
                    if !self.ready.swap(true, Ordering::AcqRel) {
                        tracing::info!("broker connected");
                        if connected_once {
                            crate::metrics::count(crate::metrics::RECONNECTS, 1);
                        }
                        connected_once = true;
                    }
                    *lock(&self.next_attempt) = None;
                    backoff = FIRST_BACKOFF;
                    PROBE_EVERY
                }
                Err(error) => {
                    if self.ready.swap(false, Ordering::AcqRel) || backoff == FIRST_BACKOFF {
                        tracing::warn!(%error, "broker unavailable; reconnecting with backoff");
                    }
                    *lock(&self.last_error) = Some(error);
                    let wait = backoff;
                    *lock(&self.next_attempt) = Some(Instant::now() + wait);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    wait
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
                () = self.wake.notified(), if self.is_ready() => {}
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded values are plain data; a panic elsewhere cannot leave them inconsistent.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test(start_paused = true)]
    async fn backs_off_then_becomes_ready() {
        let health = Arc::new(Health::default());
        let attempts = Arc::new(AtomicUsize::new(0));
        let shutdown = CancellationToken::new();
        let task = {
            let (health, attempts, shutdown) = (health.clone(), attempts.clone(), shutdown.clone());
            tokio::spawn(async move {
                health
                    .supervise(shutdown, || {
                        let n = attempts.fetch_add(1, Ordering::SeqCst);
                        async move {
                            if n < 3 {
                                Err("down".to_owned())
                            } else {
                                Ok(())
                            }
                        }
                    })
                    .await;
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!health.is_ready());
        assert!(health.retry_after() >= Duration::from_secs(1));
        // 200 + 400 + 800 ms of backoff before the fourth attempt succeeds.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(health.is_ready());
        assert_eq!(attempts.load(Ordering::SeqCst), 4);
        shutdown.cancel();
        task.await.expect("supervisor ends on shutdown");
    }
}
