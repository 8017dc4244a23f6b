//! A scripted webhook receiver: a real HTTP server on an ephemeral port that records each request.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use carrot_gateway::config::HttpConfig;
use carrot_gateway::net::tls::ListenerTls;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::support::DEADLINE;

/// How the receiver answers one request; once the script is used up it answers 200.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    /// The status with a `Retry-After` of that many seconds.
    RetryAfter(u16, u64),
    /// Waits this long, then answers 200.
    Slow(Duration),
    /// Never answers.
    Hang,
}

pub struct Hit {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Hit {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    }
}

struct Shared {
    script: Mutex<VecDeque<Reply>>,
    hits: mpsc::UnboundedSender<Hit>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

pub struct Receiver {
    pub url: String,
    hits: mpsc::UnboundedReceiver<Hit>,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start(script: Vec<Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        Self::start_on(listener, script)
    }

    /// The same over HTTPS, with the test CA's certificate for 127.0.0.1.
    pub async fn start_https(script: Vec<Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let pki = crate::pki::pki();
        let tls = ListenerTls::from_files(&pki.server_cert, &pki.server_key)
            .expect("the test server certificate");
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config());
        let mut receiver = Self::serve(listener, Some(acceptor), script);
        receiver.url = receiver.url.replacen("http://", "https://", 1);
        receiver
    }

    pub fn start_on(listener: TcpListener, script: Vec<Reply>) -> Self {
        Self::serve(listener, None, script)
    }

    /// Serves with the gateway's own HTTP server, as a plain axum app would be served.
    fn serve(
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        script: Vec<Reply>,
    ) -> Self {
        let address = listener.local_addr().expect("bound address");
        let (sender, hits) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            script: Mutex::new(script.into()),
            hits: sender,
            in_flight: AtomicUsize::new(0),
            most_in_flight: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/hook", post(answer))
            .with_state(shared.clone());
        let limits = HttpConfig::default().connection_limits();
        let server = tokio::spawn(async move {
            let forever = tokio_util::sync::CancellationToken::new();
            let _ = carrot_gateway::net::serve(listener, app, tls, limits, forever, Duration::ZERO)
                .await;
        });
        Self {
            url: format!("http://{address}/hook"),
            hits,
            shared,
            server,
        }
    }

    /// The next request the gateway made; fails the test if none comes in time.
    pub async fn next_hit(&mut self) -> Hit {
        tokio::time::timeout(DEADLINE, self.hits.recv())
            .await
            .expect("the gateway POSTs in time")
            .expect("the receiver is running")
    }

    /// A request that has already arrived, if any.
    pub fn try_hit(&mut self) -> Option<Hit> {
        self.hits.try_recv().ok()
    }

    /// The most requests the receiver held at once.
    pub fn most_in_flight(&self) -> usize {
        self.shared.most_in_flight.load(Ordering::Acquire)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

struct InFlight<'a>(&'a Shared);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn answer(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let now = shared.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
    let _in_flight = InFlight(&shared);
    shared.most_in_flight.fetch_max(now, Ordering::AcqRel);
    let _ = shared.hits.send(Hit {
        headers,
        body,
        at: Instant::now(),
    });
    let reply = shared
        .script
        .lock()
        .expect("script lock")
        .pop_front()
        .unwrap_or(Reply::Status(200));
    let status = |code: u16| StatusCode::from_u16(code).expect("scripted status");
    match reply {
        Reply::Status(code) => (status(code), "scripted answer").into_response(),
        Reply::RetryAfter(code, seconds) => (
            status(code),
            [("retry-after", seconds.to_string())],
            "come back later",
        )
            .into_response(),
        Reply::Slow(wait) => {
            tokio::time::sleep(wait).await;
            StatusCode::OK.into_response()
        }
        Reply::Hang => std::future::pending().await,
    }
}
