//! A minimal keep-alive HTTP/1.1 client: one TCP connection per simulated client, one request
//! at a time on it, reconnecting only when the server closed it.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONNECTION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

pub struct HttpConn {
    addr: String,
    sender: Option<SendRequest<Full<Bytes>>>,
    connects: u64,
    timeout: Duration,
}

impl HttpConn {
    /// `addr` is `host:port` on loopback; nothing connects until the first request.
    pub fn new(addr: &str, timeout: Duration) -> Self {
        Self {
            addr: addr.to_owned(),
            sender: None,
            connects: 0,
            timeout,
        }
    }

    /// Connections opened after the first: the server closed a keep-alive connection.
    pub fn reconnects(&self) -> u64 {
        self.connects.saturating_sub(1)
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        RequestBuilder {
            inner: Request::builder()
                .method(method)
                .uri(path)
                .header(HOST, self.addr.as_str()),
        }
    }

    async fn connect(&mut self) -> Result<(), String> {
        let stream = TcpStream::connect(&self.addr)
            .await
            .map_err(|error| format!("connect {}: {error}", self.addr))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| format!("handshake: {error}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        self.connects += 1;
        self.sender = Some(sender);
        Ok(())
    }

    async fn ready(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, String> {
        let usable = match self.sender.as_mut() {
            Some(sender) => sender.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            self.sender = None;
            self.connect().await?;
        }
        self.sender
            .as_mut()
            .ok_or_else(|| "no connection".to_owned())
    }

    /// Sends one request and reads the whole answer, within the timeout.
    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<Answer, String> {
        let timeout = self.timeout;
        let exchange = async {
            let sender = self.ready().await?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|error| format!("request failed: {error}"))?;
            let close = closes(&response);
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|error| format!("reading the answer: {error}"))?
                .to_bytes();
            Ok::<_, String>((Answer { status, body }, close))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok((answer, close))) => {
                if close {
                    self.sender = None;
                }
                Ok(answer)
            }
            Ok(Err(error)) => {
                self.sender = None;
                Err(error)
            }
            Err(_) => {
                self.sender = None;
                Err(format!("no answer within {} s", timeout.as_secs()))
            }
        }
    }

    /// Sends a request whose answer is a stream: returns once the headers arrived.
    pub async fn open(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, String> {
        let timeout = self.timeout;
        let exchange = async {
            let sender = self.ready().await?;
            sender
                .send_request(request)
                .await
                .map_err(|error| format!("request failed: {error}"))
        };
        let response = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| format!("no answer within {} s", timeout.as_secs()))??;
        // The connection belongs to the stream now.
        self.sender = None;
        Ok(response)
    }
}

fn closes<B>(response: &Response<B>) -> bool {
    response
        .headers()
        .get(CONNECTION)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"close"))
}

pub struct RequestBuilder {
    inner: hyper::http::request::Builder,
}

impl RequestBuilder {
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.inner = self.inner.header(name, value);
        self
    }

    pub fn content_type(self, value: &str) -> Self {
        self.header(CONTENT_TYPE.as_str(), value)
    }

    pub fn body(self, body: Bytes) -> Request<Full<Bytes>> {
        self.inner
            .body(Full::new(body))
            .expect("requests are built from valid parts")
    }

    pub fn empty(self) -> Request<Full<Bytes>> {
        self.body(Bytes::new())
    }
}
