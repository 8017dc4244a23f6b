//! What one connection is doing, so that its timeouts and eviction can be decided.
//!
//! A connection is *serving* while a handler runs or its response body is still being sent
//! (a long poll, an event stream): no timeout applies then. Otherwise it is *waiting*: for the
//! first byte of a request (the idle timeout) or for the rest of a request head once the first
//! byte came (the header timeout). Only a waiting connection may be closed to make room.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// Since the connection opened or the last response ended; `true` once bytes came.
    Since(Instant, bool),
    Serving,
}

/// One connection's state, shared by its stream, its service and its task.
pub struct Activity {
    in_flight: AtomicUsize,
    waiting: Mutex<Waiting>,
    /// Wakes the connection's task when its deadline may have moved earlier.
    changed: Notify,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            in_flight: AtomicUsize::new(0),
            // A new connection owes a request head at once: its header timeout runs.
            waiting: Mutex::new(Waiting::Since(Instant::now(), true)),
            changed: Notify::new(),
        })
    }

    /// When the connection must be closed unless something happens first; `None` while serving.
    pub fn due(&self, header: Duration, idle: Duration) -> Option<Instant> {
        self.deadline(header, idle).map(|(due, _)| due)
    }

    /// Which timeout has run out, if one has: `header` or `idle`.
    pub fn overdue(&self, header: Duration, idle: Duration) -> Option<&'static str> {
        self.deadline(header, idle)
            .filter(|(due, _)| *due <= Instant::now())
            .map(|(_, reason)| reason)
    }

    fn deadline(&self, header: Duration, idle: Duration) -> Option<(Instant, &'static str)> {
        match *self.lock() {
            Waiting::Serving => None,
            Waiting::Since(since, true) => Some((since + header, "header")),
            Waiting::Since(since, false) => Some((since + idle, "idle")),
        }
    }

    /// Waiting for a request, and since when: the longest waiting is the first to make room.
    pub fn waiting_since(&self) -> Option<Instant> {
        match *self.lock() {
            Waiting::Serving => None,
            Waiting::Since(since, _) => Some(since),
        }
    }

    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    fn bytes_arrived(&self) {
        let mut waiting = self.lock();
        if matches!(*waiting, Waiting::Since(_, false)) {
            // The first byte of a request: from now on the head must arrive in time.
            *waiting = Waiting::Since(Instant::now(), true);
            drop(waiting);
            self.changed.notify_one();
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        *self.lock() = Waiting::Serving;
        InFlight(self.clone())
    }

    fn end(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.lock() = Waiting::Since(Instant::now(), false);
            self.changed.notify_one();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A request being served; dropped when its response body is done (or abandoned).
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// The connection's byte stream, noting when a request's first bytes arrive.
pub struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Watched<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bytes_arrived();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Runs `app` for one request, counting it as in flight until its response body is done.
pub fn serve_tracked(
    app: axum::Router,
    activity: Arc<Activity>,
    request: Request,
) -> impl Future<Output = Response> + Send {
    let in_flight = activity.begin();
    async move {
        use tower::ServiceExt;
        let response = match app.oneshot(request).await {
            Ok(response) => response,
            Err(infallible) => match infallible {},
        };
        response.map(|body| {
            Body::new(Tracked {
                body,
                _in_flight: in_flight,
            })
        })
    }
}

/// A response body that keeps its request in flight until it is dropped.
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_owes_a_head_then_idles_between_requests() {
        let activity = Activity::new();
        let opened = Instant::now();
        assert_eq!(activity.due(HEADER, IDLE), Some(opened + HEADER));

        let in_flight = activity.begin();
        assert_eq!(activity.due(HEADER, IDLE), None, "serving: no timeout");
        assert_eq!(activity.waiting_since(), None);
        tokio::time::advance(Duration::from_secs(100)).await;
        drop(in_flight);
        let idle_from = Instant::now();
        assert_eq!(activity.due(HEADER, IDLE), Some(idle_from + IDLE));

        tokio::time::advance(Duration::from_secs(5)).await;
        activity.bytes_arrived();
        assert_eq!(
            activity.due(HEADER, IDLE),
            Some(idle_from + Duration::from_secs(5) + HEADER),
            "the head's first byte starts the header timeout"
        );
        activity.bytes_arrived();
        assert_eq!(
            activity.due(HEADER, IDLE),
            Some(idle_from + Duration::from_secs(5) + HEADER),
            "later bytes do not extend it"
        );
        assert_eq!(activity.overdue(HEADER, IDLE), None);
        tokio::time::advance(HEADER).await;
        assert_eq!(activity.overdue(HEADER, IDLE), Some("header"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_serves_until_its_last_request_ends() {
        let activity = Activity::new();
        let first = activity.begin();
        let second = activity.begin();
        drop(first);
        assert_eq!(activity.waiting_since(), None);
        drop(second);
        assert_eq!(activity.waiting_since(), Some(Instant::now()));
    }
}
