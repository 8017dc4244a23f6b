//! Serves the app: one task per connection, each under the limits that protect the process.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::activity::{Activity, Watched, serve_tracked};
use super::slots::{Slot, Slots};
use super::tls_accept::handshake;
use crate::metrics;

/// What a client connection may cost, and how long it may wait.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// A request head must be complete this long after the connection opened or after the
    /// request's first byte.
    pub header_timeout: Duration,
    /// A keep-alive connection waiting for its next request is closed after this.
    pub idle_timeout: Duration,
    /// Open connections at most; past it the longest-waiting one makes room.
    pub max_connections: usize,
}

/// Heads larger than this are refused by the HTTP parser itself, before the app's own limits
/// (`http::limits`) can answer with a problem.
const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_HEAD_LINES: usize = 200;

/// Serves `app` until `shutdown`, then lets requests in flight finish for at most `grace`.
///
/// With `tls` set, the listener serves HTTPS only (HTTP/1.1).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    limits: HttpLimits,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    super::warn_if_over_files_limit(limits.max_connections);
    let slots = Slots::new(limits.max_connections);
    let connections = TaskTracker::new();
    let abandon = CancellationToken::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, or a connection reset before it was accepted.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let activity = Activity::new();
        let slot = tokio::select! {
            () = shutdown.cancelled() => break,
            slot = slots.acquire(&activity) => slot,
        };
        let connection = Connection {
            app: app.clone(),
            activity,
            slot,
            limits,
            shutdown: shutdown.clone(),
            abandon: abandon.clone(),
        };
        let tls = tls.clone();
        connections.spawn(async move {
            let _open = OpenConnection::count();
            match tls {
                None => connection.drive(stream).await,
                Some(acceptor) => {
                    let handshake = tokio::select! {
                        tls = handshake(&acceptor, stream, peer) => tls,
                        () = connection.abandon.cancelled() => None,
                    };
                    if let Some(tls) = handshake {
                        connection.drive(tls).await;
                    }
                }
            }
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "grace period over; dropping requests still in flight"
        );
        abandon.cancel();
        connections.wait().await;
    }
    Ok(())
}

struct Connection {
    app: Router,
    activity: Arc<Activity>,
    slot: Slot,
    limits: HttpLimits,
    shutdown: CancellationToken,
    /// Cancelled once the grace period is over: whatever is still served is dropped.
    abandon: CancellationToken,
}

impl Connection {
    async fn drive<S>(self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(Watched::new(stream, self.activity.clone()));
        let (app, activity) = (self.app.clone(), self.activity.clone());
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let served = serve_tracked(app.clone(), activity.clone(), request.map(Body::new));
            async move { Ok::<_, Infallible>(served.await) }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .max_buf_size(MAX_HEAD_BYTES)
            .max_headers(MAX_HEAD_LINES);
        let served = builder.serve_connection(io, service);
        tokio::pin!(served);

        let mut draining = false;
        loop {
            let due = self
                .activity
                .due(self.limits.header_timeout, self.limits.idle_timeout);
            let changed = self.activity.changed();
            tokio::select! {
                _ = served.as_mut() => return,
                () = self.abandon.cancelled() => return,
                () = self.shutdown.cancelled(), if !draining => {
                    draining = true;
                    served.as_mut().graceful_shutdown();
                }
                () = self.slot.evicted.cancelled(), if !draining => {
                    if self.activity.waiting_since().is_some() {
                        return;
                    }
                    // Serving again since it was chosen: it closes after this request.
                    draining = true;
                    served.as_mut().graceful_shutdown();
                }
                () = sleep_until(due), if due.is_some() => {
                    if let Some(reason) = self
                        .activity
                        .overdue(self.limits.header_timeout, self.limits.idle_timeout)
                    {
                        ::metrics::counter!(metrics::HTTP_CONNECTIONS_TIMED_OUT, "reason" => reason)
                            .increment(1);
                        return;
                    }
                }
                () = changed => {}
            }
        }
    }
}

async fn sleep_until(due: Option<tokio::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// Counts an open connection in `carrot_http_connections` for as long as it lives.
struct OpenConnection;

impl OpenConnection {
    fn count() -> Self {
        ::metrics::gauge!(metrics::HTTP_CONNECTIONS).increment(1.0);
        OpenConnection
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        ::metrics::gauge!(metrics::HTTP_CONNECTIONS).decrement(1.0);
    }
}
