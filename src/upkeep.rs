//! Background upkeep: a task that repeats one job at a fixed period until stopped.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub fn spawn_every<F, Fut>(period: Duration, stop: CancellationToken, mut job: F) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut every = tokio::time::interval(period);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = every.tick() => job().await,
            }
        }
    })
}
